//! Group commit across documents (bridge/src/batch.rs): one refused update must fail only its
//! own connection, however the bridge grouped it with other documents' updates. Real parts: a
//! throwaway PostgreSQL cluster, the bridge (in process, one write lane so that every document
//! shares its transactions), WebSocket clients speaking y-websocket.

use std::time::Duration;

use clap::Parser;
use collab_bridge::auth::Auth;
use collab_bridge::config::Config;
use collab_tests::{Cluster, Peer};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::encoder::Encode;

const GOOD_DOCS: usize = 16;
const UPDATES_PER_DOC: usize = 20;

fn update_frame(update: Vec<u8>) -> WsMessage {
    WsMessage::Binary(
        Message::Sync(SyncMessage::Update(update))
            .encode_v1()
            .into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_fails_only_its_own_connection() {
    let cluster = Cluster::start();
    let db = cluster.connect().await;
    // Updates over 200 bytes are refused by the database (SQLSTATE 54000), not by the bridge.
    for sql in [
        "SELECT collab.text('load the library')",
        "ALTER SYSTEM SET collab.max_update_bytes = 200",
        "SELECT pg_reload_conf()",
    ] {
        db.batch_execute(sql).await.expect("limit set");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let cfg = Config::parse_from([
        "collab-bridge",
        "--dev",
        "--allow-query-token",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--database-url",
        &url,
        // One write lane: all documents go through the same transactions.
        "--write-lanes",
        "1",
        "--pool-size",
        "2",
        "--log",
        "warn",
    ]);
    let token = Auth::from_config(&cfg)
        .and_then(|a| a.dev_token("test").map_err(|e| e.to_string()))
        .expect("dev token");
    tokio::spawn(collab_bridge::run(cfg));
    let ws = |doc: String| {
        let url = format!("ws://127.0.0.1:{port}/ws/{doc}?token={token}");
        async move {
            for _ in 0..100 {
                if let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
                    return ws;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("bridge did not accept {url}");
        }
    };
    let mut good = Vec::new();
    for d in 0..GOOD_DOCS {
        good.push(ws(format!("good-{d}")).await);
    }
    let mut bad = ws("bad".into()).await;
    let mut blocker = ws("blocker".into()).await;
    let peers: Vec<Peer> = (0..GOOD_DOCS).map(|d| Peer::new(d as u64 + 1)).collect();
    let bad_update = Peer::new(999).insert(0, &"x".repeat(300));
    // Hold the lane: its transaction for "blocker" waits for this lock on the document row...
    db.execute(
        "SELECT collab.insert_text('blocker', 'content', 0, 'b')",
        &[],
    )
    .await
    .expect("blocker created");
    let locker = cluster.connect().await;
    locker
        .batch_execute("BEGIN; SELECT 1 FROM collab.documents WHERE name = 'blocker' FOR UPDATE")
        .await
        .expect("row locked");
    blocker
        .send(update_frame(Peer::new(1000).insert(0, "blocked;")))
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so that one update of every good document and the refused one queue up together and
    // go into one transaction, each good document with a single update.
    bad.send(update_frame(bad_update)).await.expect("sent");
    for (socket, peer) in good.iter_mut().zip(&peers) {
        let frame = update_frame(peer.insert(0, "0;"));
        socket.send(frame).await.expect("sent");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    locker.batch_execute("COMMIT").await.expect("unlocked");
    // The refused update closes its connection with 1009 (too large).
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(msg) = bad.next().await {
            if let Ok(WsMessage::Close(frame)) = msg {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("the refused connection is closed");
    assert_eq!(code, Some(1009));
    // Only then the rest (the good documents' first updates are settled by now).
    for i in 1..UPDATES_PER_DOC {
        for (socket, peer) in good.iter_mut().zip(&peers) {
            let frame = update_frame(peer.insert(0, &format!("{i};")));
            socket.send(frame).await.expect("sent");
        }
    }
    // Every good update is stored, in every document.
    let want = (GOOD_DOCS * UPDATES_PER_DOC) as i64;
    let mut stored = 0;
    for _ in 0..200 {
        stored = db
            .query_one(
                "SELECT coalesce(sum(u.span), 0)::int8 FROM collab.updates u \
                 JOIN collab.documents d ON d.id = u.doc_id WHERE d.name LIKE 'good-%'",
                &[],
            )
            .await
            .expect("count")
            .get::<_, i64>(0);
        if stored >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, want);
    let blocked: String = db
        .query_one("SELECT collab.text('blocker')", &[])
        .await
        .expect("text")
        .get(0);
    assert_eq!(blocked, "blocked;b");
    let bad_rows: i64 = db
        .query_one(
            "SELECT count(*) FROM collab.documents WHERE name = 'bad'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(bad_rows, 0);
    for d in 0..GOOD_DOCS {
        let text: String = db
            .query_one("SELECT collab.text($1)", &[&format!("good-{d}")])
            .await
            .expect("text")
            .get(0);
        assert_eq!(text.matches(';').count(), UPDATES_PER_DOC);
    }
    // The good connections are still open: one more update each is stored.
    for (socket, peer) in good.iter_mut().zip(&peers) {
        socket
            .send(update_frame(peer.insert(0, "more;")))
            .await
            .expect("still open");
    }
    for _ in 0..200 {
        stored = db
            .query_one(
                "SELECT coalesce(sum(head_seq), 0)::int8 FROM collab.documents \
                 WHERE name LIKE 'good-%'",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if stored >= want + GOOD_DOCS as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, want + GOOD_DOCS as i64);
}
