//! LISTEN/NOTIFY as a program holding the notification key sees it: a tokio-postgres
//! connection doing `LISTEN collab` gets one sealed notification per committed batch, with the
//! right sequence range, and nothing for a transaction that rolled back.

use std::time::Duration;

use base64::Engine;
use collab_tests::{notification_keys, open_payload, Cluster, Peer};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

async fn listener(cluster: &Cluster) -> (tokio_postgres::Client, mpsc::UnboundedReceiver<Value>) {
    let (client, mut conn) = tokio_postgres::connect(&cluster.url(), NoTls)
        .await
        .expect("connects");
    let (tx, rx) = mpsc::unbounded_channel();
    let keys = notification_keys(&cluster.connect().await).await;
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                assert_eq!(n.channel(), "collab");
                let v = open_payload(&keys, n.payload()).expect("payload opens with the key");
                let _ = tx.send(v);
            }
        }
    });
    client.batch_execute("LISTEN collab").await.expect("LISTEN");
    (client, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a notification within 5 s")
        .expect("listener alive")
}

async fn nothing_within(rx: &mut mpsc::UnboundedReceiver<Value>, ms: u64) {
    if let Ok(Some(v)) = tokio::time::timeout(Duration::from_millis(ms), rx.recv()).await {
        panic!("unexpected notification {v}");
    }
}

fn inline_update(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v["update"].as_str().expect("update inline"))
        .expect("base64")
}

#[tokio::test]
async fn committed_batches_are_notified_once_and_rollbacks_never() {
    let cluster = Cluster::start();
    let (_l, mut rx) = listener(&cluster).await;
    let mut db = cluster.connect().await;
    let peer = Peer::new(1);

    // One update, committed.
    let u = peer.insert(0, "hello");
    db.execute("SELECT collab.apply_update('doc', $1, 'tab-1')", &[&u])
        .await
        .expect("apply");
    let v = next(&mut rx).await;
    assert_eq!(v["type"], "update");
    assert_eq!(v["doc"], "doc");
    assert_eq!(
        (v["seq_from"].as_i64(), v["seq_to"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["origin"], "tab-1");
    let follower = Peer::new(9);
    follower.receive(&inline_update(&v));
    assert_eq!(follower.text(), "hello");

    // Rolled back: nothing is sent, and the sequence number is not consumed.
    let tx = db.transaction().await.expect("begin");
    tx.execute(
        "SELECT collab.apply_update('doc', $1)",
        &[&peer.insert(5, " lost")],
    )
    .await
    .expect("apply");
    tx.rollback().await.expect("rollback");
    nothing_within(&mut rx, 300).await;

    // A batch: one notification for the whole range, with the merged update inline.
    let again = Peer::new(2);
    again.receive(&u);
    let batch: Vec<Vec<u8>> = (0..5).map(|i| again.insert(5 + i, "!")).collect();
    let last: i64 = db
        .query_one("SELECT collab.apply_updates('doc', $1)", &[&batch])
        .await
        .expect("batch")
        .get(0);
    assert_eq!(last, 6);
    let v = next(&mut rx).await;
    assert_eq!(
        (v["seq_from"].as_i64(), v["seq_to"].as_i64()),
        (Some(2), Some(6))
    );
    follower.receive(&inline_update(&v));
    assert_eq!(follower.text(), "hello!!!!!");
    nothing_within(&mut rx, 200).await;

    // An SQL edit is announced like any other update.
    db.execute("SELECT collab.insert_text('doc', 'content', 0, '> ')", &[])
        .await
        .expect("edit");
    let v = next(&mut rx).await;
    assert_eq!(v["seq_from"].as_i64(), Some(7));
    follower.receive(&inline_update(&v));
    assert_eq!(follower.text(), "> hello!!!!!");
}

#[tokio::test]
async fn large_updates_are_announced_without_inline_data_and_fetched() {
    let cluster = Cluster::start();
    let (_l, mut rx) = listener(&cluster).await;
    let db = cluster.connect().await;
    let big = Peer::new(1).insert(0, &"x".repeat(20_000));
    db.execute("SELECT collab.apply_update('big', $1)", &[&big])
        .await
        .expect("apply");
    let v = next(&mut rx).await;
    assert_eq!(v["seq_to"].as_i64(), Some(1));
    assert!(v.get("update").is_none(), "too large to inline");
    let rows = db
        .query(
            "SELECT seq, update FROM collab.updates_since('big', 0)",
            &[],
        )
        .await
        .expect("fetch");
    assert_eq!(rows.len(), 1);
    let fetched: Vec<u8> = rows[0].get(1);
    assert_eq!(fetched, big);
}

#[tokio::test]
async fn one_transaction_touching_two_documents_sends_one_notification_each() {
    let cluster = Cluster::start();
    let (_l, mut rx) = listener(&cluster).await;
    let mut db = cluster.connect().await;
    let tx = db.transaction().await.expect("begin");
    tx.execute("SELECT collab.insert_text('a', 'content', 0, 'A')", &[])
        .await
        .expect("a");
    tx.execute("SELECT collab.insert_text('b', 'content', 0, 'B')", &[])
        .await
        .expect("b");
    nothing_within(&mut rx, 200).await;
    tx.commit().await.expect("commit");
    let mut docs = vec![
        next(&mut rx).await["doc"].clone(),
        next(&mut rx).await["doc"].clone(),
    ];
    docs.sort_by_key(|d| d.to_string());
    assert_eq!(docs, vec![Value::from("a"), Value::from("b")]);
}

#[tokio::test]
async fn broadcasts_and_deletions_reach_listeners() {
    let cluster = Cluster::start();
    let (_l, mut rx) = listener(&cluster).await;
    let db = cluster.connect().await;
    db.execute(
        "SELECT collab.broadcast('room', '\\x0102'::bytea, 'bridge-a')",
        &[],
    )
    .await
    .expect("broadcast");
    let v = next(&mut rx).await;
    assert_eq!(v["type"], "broadcast");
    assert_eq!(v["payload"], "AQI=");
    assert_eq!(v["origin"], "bridge-a");
    assert_eq!(
        db.query_one("SELECT count(*) FROM collab.documents", &[])
            .await
            .expect("count")
            .get::<_, i64>(0),
        0,
        "a broadcast stores nothing"
    );
    db.execute("SELECT collab.insert_text('room', 'content', 0, 'x')", &[])
        .await
        .expect("edit");
    assert_eq!(next(&mut rx).await["type"], "update");
    db.execute("SELECT collab.delete_document('room')", &[])
        .await
        .expect("delete");
    let v = next(&mut rx).await;
    assert_eq!(
        (v["type"].as_str(), v["doc"].as_str()),
        (Some("deleted"), Some("room"))
    );
}
