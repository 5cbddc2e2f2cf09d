//! A role that may only connect to the database (no grant at all) tries every forgery the
//! notification channel used to allow, while stock Yjs clients (npm yjs + y-websocket) edit
//! through two bridges: a `deleted` for the room, an update with foreign content, a `seq_to`
//! far ahead, a relayed awareness message, garbage shaped like a sealed payload, and replays
//! of genuine sealed payloads it captured with `LISTEN collab` (a `deleted` of an earlier
//! life of the document included). The clients see none of it and lose nothing, and what the
//! role heard on the channel never shows the text.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::*;
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

/// A LISTEN collab session as `user`, collecting every payload it hears.
async fn eavesdrop(
    pg: &Pg,
    user: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let url = format!("postgres://{user}@127.0.0.1:{}/postgres", pg.port);
    let (client, mut conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    client.batch_execute("LISTEN collab").await.unwrap();
    (client, rx)
}

fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(p) = rx.try_recv() {
        out.push(p);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_only_role_can_neither_forge_nor_replay_nor_read_notifications() {
    let pg = Pg::start();
    let admin = pg.client().await;
    admin
        .batch_execute("CREATE ROLE mallory LOGIN")
        .await
        .unwrap();
    let (mallory, mut heard) = eavesdrop(&pg, "mallory").await;

    // An earlier life of the document, deleted and recreated by an administrator: mallory
    // keeps the sealed `deleted` she heard.
    let doc = "victim";
    admin
        .batch_execute(
            "SELECT collab.insert_text('victim', 'content', 0, 'old life'); \
             SELECT collab.delete_document('victim'); \
             SELECT collab.recreate_document('victim');",
        )
        .await
        .unwrap();

    let a = Bridge::start(&pg, "a", &["--allow-query-token"]).await;
    let b = Bridge::start(&pg, "b", &["--allow-query-token"]).await;
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/js");
    let base = |br: &Bridge| br.ws_url("").trim_end_matches('/').to_string();
    let mut node = Script::start(
        &js.join("forgery.mjs"),
        &[base(&a), base(&b), writer_token(), doc.to_string()],
        &js.join("node_modules/y-websocket"),
    );
    node.step("editing").await;
    let rejected_before = a.metric("collab_bridge_notifications_rejected_total").await
        + b.metric("collab_bridge_notifications_rejected_total").await;

    // Forgeries in the format 0.1.0 bridges believed.
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let head: i64 = admin
        .query_one("SELECT head_seq FROM collab.document_info('victim')", &[])
        .await
        .unwrap()
        .get(0);
    let forged_update = text_update("FORGED");
    let awareness = {
        use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
        use yrs::sync::Message;
        use yrs::updates::encoder::Encode;
        let entry = AwarenessUpdateEntry {
            clock: 1,
            json: r#"{"user":{"name":"mallory"}}"#.into(),
        };
        Message::Awareness(AwarenessUpdate {
            clients: [(yrs::ClientID::new(424242), entry)].into_iter().collect(),
        })
        .encode_v1()
    };
    let forgeries = [
        r#"{"type":"deleted","doc":"victim"}"#.to_string(),
        format!(
            r#"{{"type":"update","doc":"victim","seq_from":{},"seq_to":{},"origin":null,"update":"{}"}}"#,
            head + 1,
            head + 1,
            b64(&forged_update)
        ),
        r#"{"type":"update","doc":"victim","seq_from":1,"seq_to":999999999,"origin":null}"#
            .to_string(),
        format!(
            r#"{{"type":"broadcast","doc":"victim","origin":"x","payload":"{}"}}"#,
            b64(&awareness)
        ),
        // Shaped like a sealed payload: the current key id, random bytes.
        format!("v1.1.{}", "A".repeat(200)),
        "v1.999.AAAA".to_string(),
    ];
    for f in &forgeries {
        mallory
            .execute("SELECT pg_notify('collab', $1)", &[f])
            .await
            .expect("any role may notify");
    }
    // Replays of everything genuine mallory heard, the old `deleted` included.
    let captured = drain(&mut heard);
    assert!(
        captured.iter().any(|p| p.starts_with("v1.")),
        "mallory heard the sealed traffic"
    );
    for p in &captured {
        mallory
            .execute("SELECT pg_notify('collab', $1)", &[p])
            .await
            .unwrap();
    }
    node.tell("forged").await;
    let end = node.step("final").await;
    node.finish().await;

    assert_eq!(end["closes"], serde_json::json!([]), "no client was closed");
    assert_eq!(
        end["strangers"],
        serde_json::json!([]),
        "no forged presence"
    );
    let text = end["text"].as_str().unwrap();
    assert!(!text.contains("FORGED"), "no forged content: {text}");
    assert_eq!(
        pg.text(doc).await,
        text,
        "the database holds what the clients show"
    );
    let typed = end["typed"].as_u64().unwrap();
    for i in 0..typed {
        assert!(text.contains(&format!("a{i};")) && text.contains(&format!("b{i};")));
    }

    // Both bridges dropped every forgery (the replays are harmless and may be accepted).
    let mut rejected = 0.0;
    for _ in 0..50 {
        rejected = a.metric("collab_bridge_notifications_rejected_total").await
            + b.metric("collab_bridge_notifications_rejected_total").await
            - rejected_before;
        if rejected >= 2.0 * forgeries.len() as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rejected >= 2.0 * forgeries.len() as f64,
        "each bridge rejected each forgery: {rejected}"
    );

    // What a connect-only role hears: sealed payloads, never the text.
    let heard_all = [captured, drain(&mut heard)].concat();
    for p in &heard_all {
        assert!(
            p.starts_with("v1.") || forgeries.contains(p) || p.is_empty(),
            "plaintext on the channel: {p}"
        );
        assert!(!p.contains("old life") && !p.contains("a1;"), "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_notification_key_is_picked_up_without_losing_an_update() {
    let pg = Pg::start();
    let bridge = Bridge::start(&pg, "a", &[]).await;
    let t = writer_token();
    let client = YClient::connect(&bridge.ws_url("rotating"), Some(&t)).await;
    client.wait_synced().await;
    pg.insert_text("rotating", 0, "before;").await;
    client.wait_text("before;").await;
    let admin = pg.client().await;
    for _ in 0..3 {
        admin
            .execute("SELECT collab.rotate_notification_key()", &[])
            .await
            .unwrap();
    }
    // Sealed with a key the bridge has never seen: fetched on first sight, nothing lost. If the
    // bridge fetched its keys less than 100 ms before (its refetch limit, which forgers naming
    // unknown ids cannot push), the payload is dropped, counted as rejected, and the room
    // catches up from the log after the next refetch: either way the text arrives.
    pg.insert_text("rotating", 7, "after;").await;
    client.wait_text("before;after;").await;
    assert!(
        bridge
            .metric("collab_bridge_notifications_rejected_total")
            .await
            <= 1.0,
        "at most the one payload that arrived inside the refetch limit"
    );
    let keys: i64 = admin
        .query_one("SELECT count(*) FROM collab.notification_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 2, "rotation keeps the previous key only");
}
