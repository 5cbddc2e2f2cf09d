//! Several backends on one document: sequence numbers stay gapless and unique, every backend's
//! cached copy of the document stays exact, and a rollback in one backend misleads none.

use collab_tests::{Cluster, Peer};

async fn text(db: &impl tokio_postgres::GenericClient, doc: &str) -> String {
    db.query_one("SELECT collab.text($1)", &[&doc])
        .await
        .expect("text")
        .get(0)
}

#[tokio::test]
async fn backends_taking_turns_each_see_the_whole_document() {
    let cluster = Cluster::start();
    let a = cluster.connect().await;
    let b = cluster.connect().await;
    let mut expected = String::new();
    for i in 0..60 {
        let (db, word) = if i % 3 == 0 { (&b, "b") } else { (&a, "a") };
        let at = expected.chars().count() as i32;
        db.execute(
            "SELECT collab.insert_text('turns', 'content', $1, $2)",
            &[&at, &word],
        )
        .await
        .expect("edit");
        expected.push_str(word);
        assert_eq!(
            text(&a, "turns").await,
            expected,
            "backend a after edit {i}"
        );
        assert_eq!(
            text(&b, "turns").await,
            expected,
            "backend b after edit {i}"
        );
    }
}

#[tokio::test]
async fn concurrent_writers_get_gapless_unique_sequences() {
    let cluster = Cluster::start();
    let writers = 4;
    let per_writer = 50;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let db = cluster.connect().await;
        tasks.push(tokio::spawn(async move {
            let peer = Peer::new(100 + w);
            let mut seqs = Vec::new();
            for i in 0..per_writer {
                let u = peer.insert(i, "x");
                let seq: i64 = db
                    .query_one("SELECT collab.apply_update('shared', $1)", &[&u])
                    .await
                    .expect("apply")
                    .get(0);
                seqs.push(seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    all.sort_unstable();
    let total = (writers * per_writer as u64) as i64;
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    let db = cluster.connect().await;
    let row = db
        .query_one(
            "SELECT head_seq, (SELECT sum(span)::int8 FROM collab.updates) FROM collab.documents",
            &[],
        )
        .await
        .expect("row");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (total, total));
    assert_eq!(text(&db, "shared").await.len() as i64, total);
}

#[tokio::test]
async fn a_rollback_in_one_backend_misleads_neither() {
    let cluster = Cluster::start();
    let mut a = cluster.connect().await;
    let b = cluster.connect().await;
    a.execute("SELECT collab.insert_text('rb', 'content', 0, 'base')", &[])
        .await
        .expect("edit");
    let tx = a.transaction().await.expect("begin");
    tx.execute(
        "SELECT collab.insert_text('rb', 'content', 4, ' LOST')",
        &[],
    )
    .await
    .expect("edit");
    assert_eq!(
        text(&tx, "rb").await,
        "base LOST",
        "own write visible inside"
    );
    tx.rollback().await.expect("rollback");
    // b now takes the same sequence number the rolled-back write had.
    b.execute(
        "SELECT collab.insert_text('rb', 'content', 4, ' kept')",
        &[],
    )
    .await
    .expect("edit");
    assert_eq!(text(&a, "rb").await, "base kept");
    assert_eq!(text(&b, "rb").await, "base kept");
    a.execute("SELECT collab.insert_text('rb', 'content', 0, '>')", &[])
        .await
        .expect("edit");
    assert_eq!(text(&b, "rb").await, ">base kept");
}

#[tokio::test]
async fn reads_work_in_read_only_transactions_and_writes_are_refused() {
    let cluster = Cluster::start();
    let writer = cluster.connect().await;
    writer
        .execute(
            "SELECT collab.insert_text('ro', 'content', 0, 'readable')",
            &[],
        )
        .await
        .expect("edit");
    writer
        .execute("SELECT collab.compact('ro')", &[])
        .await
        .expect("compact");
    writer
        .execute("SELECT collab.insert_text('ro', 'content', 8, '!')", &[])
        .await
        .expect("edit");
    // Like a hot standby: reads must not need a transaction id.
    let reader = cluster.connect().await;
    reader
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .expect("set");
    assert_eq!(text(&reader, "ro").await, "readable!");
    for sql in [
        "SELECT collab.state('ro')::text",
        "SELECT collab.diff('ro', '\\x00')::text",
        "SELECT collab.text_at('ro', 1)",
        "SELECT count(*)::text FROM collab.updates_since('ro', 0)",
        "SELECT collab.to_json('ro')::text",
    ] {
        reader
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let err = reader
        .execute("SELECT collab.insert_text('ro', 'content', 0, 'x')", &[])
        .await
        .expect_err("read-only");
    assert_eq!(err.code().map(|c| c.code()), Some("25006"));
}
