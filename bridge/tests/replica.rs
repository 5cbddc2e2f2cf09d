//! Read replicas: pg_collab's read functions on a real hot standby (the secondary of
//! scripts/ha.sh), and `--replica-url`, which sends the bridge's HTTP reads there and never its
//! WebSocket sync.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::ha::{connect, Ha};
use common::*;

/// Waits until the standby has replayed everything the primary wrote so far.
async fn wait_replayed(primary: &tokio_postgres::Client, standby: &tokio_postgres::Client) {
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    for _ in 0..600 {
        let done: bool = standby
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await
            .unwrap()
            .get(0);
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the standby never replayed {lsn}");
}

// state_at/text_at at sequence 3, or the head when shorter (0 for a document never written).
const READS: &str = "WITH at AS (SELECT coalesce((SELECT least(3, head_seq) \
     FROM collab.document_info($1)), 0) AS seq) \
     SELECT collab.text($1), collab.to_json($1)::text, collab.state($1), \
     collab.state_at($1, at.seq), collab.text_at($1, at.seq), collab.state_vector($1), \
     collab.diff($1, '\\x00'::bytea), coalesce((SELECT head_seq FROM collab.document_info($1)), 0), \
     (SELECT count(*) FROM collab.updates_since($1, 0)), \
     (SELECT count(*) FROM collab.list_documents(1000)) FROM at";

type Reads = (
    String,
    String,
    Vec<u8>,
    Vec<u8>,
    String,
    Vec<u8>,
    Vec<u8>,
    i64,
    i64,
    i64,
);

async fn reads(c: &tokio_postgres::Client, doc: &str) -> Reads {
    let r = c.query_one(READS, &[&doc]).await.unwrap();
    (
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
        r.get(7),
        r.get(8),
        r.get(9),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_work_on_a_hot_standby_and_the_bridge_sends_only_http_reads_there() {
    let ha = Ha::start();
    let p = ha.primary().unwrap();
    let s = *ha.node_ports.iter().find(|port| **port != p).unwrap();
    let primary = connect(&ha.url_of(p)).await.unwrap();
    let standby = connect(&ha.url_of(s)).await.unwrap();

    // A short document, and one whose log is past the checkpoint threshold (256 kB): reading
    // it on the standby must not try to write a checkpoint.
    for word in ["one ", "two ", "three ", "four "] {
        primary
            .execute("SELECT collab.insert_text('r', 'content', 0, $1)", &[&word])
            .await
            .unwrap();
    }
    let chunk = "x".repeat(2000);
    for _ in 0..200 {
        primary
            .execute(
                "SELECT collab.insert_text('big', 'content', 0, $1)",
                &[&chunk],
            )
            .await
            .unwrap();
    }
    wait_replayed(&primary, &standby).await;
    let in_recovery: bool = standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery, "the secondary is a hot standby");
    for doc in ["r", "big", "never-written"] {
        assert_eq!(
            reads(&standby, doc).await,
            reads(&primary, doc).await,
            "{doc}: every read function answers the same on the standby"
        );
    }
    // Twice: the second read comes from the backend's document cache.
    assert_eq!(reads(&standby, "big").await, reads(&primary, "big").await);
    let write = standby
        .query_one("SELECT collab.insert_text('r', 'content', 0, 'x')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        write.code().unwrap().code(),
        "25006",
        "writes are refused there: {:?}",
        write.as_db_error().map(|e| e.message())
    );

    // A bridge on the pair, with its HTTP reads on the standby.
    let replica_url = format!("postgres://{BRIDGE_USER}@127.0.0.1:{s}/postgres");
    let mut bridge = Bridge::spawn_with_url(
        &ha.bridge_url,
        "replica",
        &["--replica-url", &replica_url, "--allow-query-token"],
    )
    .await
    .unwrap();
    bridge.wait_healthy().await;
    let get = |b: &Bridge| {
        let addr = b.addr;
        async move {
            http(
                addr,
                "GET",
                &format!("/api/docs/r?token={}", writer_token()),
                &[],
                &[],
            )
            .await
            .unwrap()
        }
    };
    let r = get(&bridge).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-collab-read-from"), Some("replica"));
    let before = r.json()["text"].as_str().unwrap().to_string();
    assert_eq!(before, "four three two one ");

    // Replay paused: the replica is behind. HTTP reads show the old text; WebSocket sync (on
    // the primary) shows the new one.
    standby
        .execute("SELECT pg_wal_replay_pause()", &[])
        .await
        .unwrap();
    primary
        .execute("SELECT collab.insert_text('r', 'content', 0, 'NEW ')", &[])
        .await
        .unwrap();
    let client = YClient::connect(&bridge.ws_url("r"), Some(&writer_token())).await;
    client.wait_text("NEW four three two one ").await;
    assert_eq!(
        get(&bridge).await.json()["text"].as_str().unwrap(),
        before,
        "a replica read is as old as the replica's replay"
    );
    standby
        .execute("SELECT pg_wal_replay_resume()", &[])
        .await
        .unwrap();
    wait_replayed(&primary, &standby).await;
    assert_eq!(
        get(&bridge).await.json()["text"].as_str().unwrap(),
        "NEW four three two one ",
        "caught up once replay resumes"
    );
}
