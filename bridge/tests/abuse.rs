//! Hostile and greedy clients against a real bridge, each test playing the abuser and showing
//! that everyone else is unharmed: readers that stop reading, floods of expensive requests,
//! awareness spoofing and oversize states, updates the database refuses, connection floods,
//! and a join storm on one document.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::encoder::Encode;
use yrs::StateVector;

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw_connect(url: &str, token: &str) -> RawWs {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

fn sync_step1_frame() -> Vec<u8> {
    Message::Sync(SyncMessage::SyncStep1(StateVector::default())).encode_v1()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_closed_at_its_byte_budget() {
    let pg = Pg::start();
    // Plenty of messages, few bytes: the byte budget is what trips.
    let b = Bridge::start(
        &pg,
        "a",
        &["--send-queue", "100000", "--send-queue-bytes", "300000"],
    )
    .await;
    let t = writer_token();
    // Connected, but never reads a single message.
    let stalled = raw_connect(&b.ws_url("bytes"), &t).await;
    let watcher = YClient::connect(&b.ws_url("bytes"), Some(&t)).await;
    watcher.wait_synced().await;
    let kicked = insert_until_a_slow_client_is_closed(&pg, &b, "bytes").await;
    assert!(kicked, "the stalled reader was never disconnected");
    assert_caught_up_and_open(&pg, &watcher, "bytes").await;
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sync_requests_is_rationed_and_others_are_unharmed() {
    let pg = Pg::start();
    let b = Bridge::start(
        &pg,
        "a",
        &["--expensive-burst", "2", "--expensive-per-sec", "0.2"],
    )
    .await;
    pg.insert_text("flood", 0, &"x".repeat(100_000)).await;
    let t = writer_token();
    let mut flooder = raw_connect(&b.ws_url("flood"), &t).await;
    for _ in 0..50 {
        flooder
            .send(WsMessage::Binary(sync_step1_frame().into()))
            .await
            .unwrap();
    }
    // Others on the same document and bridge are served as usual meanwhile.
    let other = YClient::connect(&b.ws_url("flood"), Some(&t)).await;
    other.wait_synced().await;
    pg.insert_text("flood", 0, "fresh ").await;
    wait_for(
        "update reaches the other client",
        Duration::from_secs(20),
        || other.text().starts_with("fresh "),
    )
    .await;
    assert!(b.metric("collab_bridge_expensive_delayed_total").await >= 1.0);
    // The flooder got its burst, not fifty whole-document diffs.
    let mut step2 = 0;
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(Duration::from_millis(500), flooder.next()).await
    {
        if let WsMessage::Binary(b) = m {
            if b.len() > 2 && b[0] == 0 && b[1] == 1 {
                step2 += 1;
            }
        }
    }
    assert!(step2 < 50, "every request was answered at once ({step2})");
    assert!(step2 >= 2, "the burst was answered ({step2})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_cannot_be_spoofed_or_oversized_and_is_coalesced() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &["--awareness-interval-ms", "1000"]).await;
    let ada = YClient::connect(
        &b.ws_url("aw"),
        Some(&token_for("ada", serde_json::json!({}))),
    )
    .await;
    let mallory = YClient::connect(
        &b.ws_url("aw"),
        Some(&token_for("mallory", serde_json::json!({}))),
    )
    .await;
    let carol = YClient::connect(
        &b.ws_url("aw"),
        Some(&token_for("carol", serde_json::json!({}))),
    )
    .await;
    for c in [&ada, &mallory, &carol] {
        c.wait_synced().await;
    }
    ada.send_awareness(100, 1, r#"{"user":"ada"}"#);
    wait_for("ada's cursor", Duration::from_secs(10), || {
        carol.saw_awareness(|id, _, json| id == 100 && json.contains("ada"))
    })
    .await;
    // Mallory tries to overwrite and then remove Ada's client id, then sets her own.
    mallory.send_awareness(100, 5, r#"{"user":"mallory"}"#);
    mallory.send_awareness(100, 6, "null");
    mallory.send_awareness(200, 1, r#"{"user":"mallory"}"#);
    wait_for("mallory's own cursor", Duration::from_secs(10), || {
        carol.saw_awareness(|id, _, json| id == 200 && json.contains("mallory"))
    })
    .await;
    assert!(!carol.saw_awareness(|id, _, json| id == 100 && json.contains("mallory")));
    assert!(!carol.saw_awareness(|id, _, json| id == 100 && json == "null"));
    assert!(b.metric("collab_bridge_awareness_dropped_total").await >= 2.0);
    // Twenty changes in a burst reach the others as far fewer messages, ending at the last.
    let before = carol.log.lock().unwrap().awareness.len();
    for clock in 2..22 {
        ada.send_awareness(100, clock, &format!(r#"{{"user":"ada","n":{clock}}}"#));
    }
    wait_for("ada's last state", Duration::from_secs(10), || {
        carol.saw_awareness(|id, clock, _| id == 100 && clock == 21)
    })
    .await;
    let relayed = carol.log.lock().unwrap().awareness.len() - before;
    assert!(relayed < 20, "{relayed} awareness messages for 20 changes");
    // A presence state is small; a huge one closes the connection that sent it.
    mallory.send_awareness(200, 2, &format!(r#"{{"junk":"{}"}}"#, "x".repeat(40_000)));
    let (code, _) = mallory.wait_close().await;
    assert_eq!(code, 1009);
    assert!(!carol.saw_awareness(|_, _, json| json.contains("junk")));
    assert!(carol.log.lock().unwrap().close.is_none());
    assert!(ada.log.lock().unwrap().close.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_the_database_refuses_close_the_connection_and_the_subject_backs_off() {
    let pg = Pg::start();
    let db = pg.client().await;
    db.batch_execute(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET collab.max_update_bytes = %L', \
         current_database(), '1kB'); END $$",
    )
    .await
    .unwrap();
    let b = Bridge::start(&pg, "a", &[]).await;
    let eve = token_for("eve", serde_json::json!({}));
    let c = YClient::connect(&b.ws_url("refused"), Some(&eve)).await;
    c.wait_synced().await;
    c.insert(0, &"y".repeat(5000));
    let (code, reason) = c.wait_close().await;
    assert_eq!(code, 1009, "{reason}");
    assert!(!reason.contains("SELECT"), "{reason}");
    // The same subject is turned away for a while instead of resending it at once...
    let again = ws_outcome_token(&b.ws_url("refused"), Some(&eve), None).await;
    assert_eq!(again, 1013);
    // ...while everyone else goes on.
    let bob = token_for("bob", serde_json::json!({}));
    let other = YClient::connect(&b.ws_url("refused"), Some(&bob)).await;
    other.wait_synced().await;
    other.insert(0, "small");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg.text("refused").await != "small" {
        assert!(
            std::time::Instant::now() < deadline,
            "bob's edit not stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_subject_and_per_client_address() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &["--max-connections-per-subject", "2"]).await;
    let ada = token_for("ada", serde_json::json!({}));
    let a1 = YClient::connect(&b.ws_url("cap"), Some(&ada)).await;
    let a2 = YClient::connect(&b.ws_url("cap"), Some(&ada)).await;
    a1.wait_synced().await;
    a2.wait_synced().await;
    assert_eq!(
        ws_outcome_token(&b.ws_url("cap"), Some(&ada), None).await,
        1013
    );
    let bob = token_for("bob", serde_json::json!({}));
    assert_eq!(
        ws_outcome_token(&b.ws_url("cap"), Some(&bob), None).await,
        101
    );

    // Connect rate per address, behind a trusted proxy header.
    let args = [
        "--connect-burst",
        "3",
        "--connect-rate",
        "0.01",
        "--trusted-proxy-header",
        "x-forwarded-for",
    ];
    let p = Bridge::start(&pg, "p", &args).await;
    let t = writer_token();
    let url = p.ws_url("rate");
    let outcome = |ip: &str| via_proxy(&url, &t, format!("10.9.9.9, {ip}"));
    for _ in 0..3 {
        assert_eq!(outcome("203.0.113.1").await, 101);
    }
    assert_eq!(
        outcome("203.0.113.1").await,
        1013,
        "over the address's rate"
    );
    assert_eq!(outcome("203.0.113.2").await, 101, "another address");
    assert!(a1.log.lock().unwrap().close.is_none());
}

/// Connects as if through a proxy that wrote `x-forwarded-for`; 101 or the close code.
async fn via_proxy(url: &str, token: &str, xff: String) -> u16 {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req.headers_mut()
        .insert("x-forwarded-for", xff.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        if let WsMessage::Close(f) = m {
            return f.map(|f| u16::from(f.code)).unwrap_or(1005);
        }
    }
    101
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_is_served_completely_with_a_small_pool() {
    let pg = Pg::start();
    // Three pooled connections, one of them a write lane: 40 joiners must share reads.
    let b = Bridge::start(&pg, "a", &["--pool-size", "3", "--write-lanes", "1"]).await;
    let body = "storm ".repeat(40_000);
    pg.insert_text("storm", 0, &body).await;
    let t = writer_token();
    let url = b.ws_url("storm");
    let joiners =
        futures_util::future::join_all((0..40).map(|_| YClient::connect(&url, Some(&t)))).await;
    for j in &joiners {
        j.wait_text(&body).await;
        assert!(j.log.lock().unwrap().close.is_none());
    }
}
