//! Deleting a document is final through the bridge too: its clients are closed with 4410, a
//! stale client that reconnects to resync is closed the same way and brings nothing back, and
//! only an administrator's `collab.recreate_document` lets the name start again, empty.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// Waits (at most 10 s) until the database's text of `doc` is `want`.
async fn stored(pg: &Pg, doc: &str, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pg.text(doc).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "{doc} never stored {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_client_cannot_bring_a_deleted_document_back() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &[]).await;
    let t = writer_token();
    let c = YClient::connect(&b.ws_url("doomed"), Some(&t)).await;
    c.wait_synced().await;
    c.insert(0, "precious");
    stored(&pg, "doomed", "precious").await;
    let admin = pg.client().await;
    admin
        .execute("SELECT collab.delete_document('doomed')", &[])
        .await
        .unwrap();
    assert_eq!(c.wait_close().await.0, 4410);

    // The same user comes back with its copy of the document, as y-websocket does.
    let stale = YClient::connect(&b.ws_url("doomed"), Some(&t)).await;
    stale.insert(0, "precious");
    assert_eq!(stale.wait_close().await.0, 4410);
    let row = admin
        .query_one(
            "SELECT head_seq, deleted_at IS NOT NULL FROM collab.document_info('doomed')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, bool>(1)), (0, true));
    let rows: i64 = admin
        .query_one(
            "SELECT count(*) FROM collab.updates u JOIN collab.documents d ON d.id = u.doc_id \
             WHERE d.name = 'doomed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "nothing came back");

    // On purpose, by an administrator: the name starts again, empty.
    admin
        .execute("SELECT collab.recreate_document('doomed')", &[])
        .await
        .unwrap();
    let fresh = YClient::connect(&b.ws_url("doomed"), Some(&t)).await;
    fresh.wait_synced().await;
    assert_eq!(fresh.text(), "");
    fresh.insert(0, "fresh");
    stored(&pg, "doomed", "fresh").await;
}
