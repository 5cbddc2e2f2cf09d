//! End to end through real PostgreSQL and real bridge processes: convergence across bridges,
//! SQL edits reaching clients, and catching up after the listener connection is killed.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

async fn edit(c: &YClient, tag: &str, n: usize) {
    for i in 0..n {
        c.insert(0, &format!("{tag}{i};"));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_bridges_converge_and_every_update_is_stored_once() {
    let pg = Pg::start();
    let a = Bridge::start(&pg, "a", &[]).await;
    let b = Bridge::start(&pg, "b", &[]).await;
    let t = writer_token();
    let c1 = YClient::connect(&a.ws_url("conv"), Some(&t)).await;
    let c2 = YClient::connect(&b.ws_url("conv"), Some(&t)).await;
    // A third client on bridge a sees both too (fan-out within one bridge).
    let c3 = YClient::connect(&a.ws_url("conv"), Some(&t)).await;
    c1.wait_synced().await;
    c2.wait_synced().await;
    c3.wait_synced().await;

    const N: usize = 40;
    tokio::join!(edit(&c1, "x", N), edit(&c2, "y", N));

    let expected_len: usize = (0..N).map(|i| format!("x{i};").len() * 2).sum();
    let converged = wait_until(Duration::from_secs(30), || {
        let (t1, t2, t3) = (c1.text(), c2.text(), c3.text());
        t1.len() == expected_len && t1 == t2 && t2 == t3
    })
    .await;
    assert!(
        converged,
        "no convergence:\n{}\n{}\n{}",
        c1.text(),
        c2.text(),
        c3.text()
    );
    assert_eq!(pg.text("conv").await, c1.text());
    let (rows, distinct) = pg.update_rows("conv").await;
    assert_eq!(
        rows,
        2 * N as i64,
        "every client update stored exactly once"
    );
    assert_eq!(distinct, rows);
    // Group commit and fan-out are visible in the metrics.
    assert!(a.metric("collab_bridge_updates_in_total").await >= N as f64);
    assert!(a.metric("collab_bridge_batch_size_count").await >= 1.0);
    assert!(b.metric("collab_bridge_updates_out_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_edits_reach_clients_on_both_bridges() {
    let pg = Pg::start();
    let a = Bridge::start(&pg, "a", &[]).await;
    let b = Bridge::start(&pg, "b", &[]).await;
    let t = writer_token();
    let c1 = YClient::connect(&a.ws_url("team/notes"), Some(&t)).await;
    let c2 = YClient::connect(&b.ws_url("team/notes"), Some(&t)).await;
    c1.wait_synced().await;
    c2.wait_synced().await;
    pg.insert_text("team/notes", 0, "hello from sql").await;
    c1.wait_text("hello from sql").await;
    c2.wait_text("hello from sql").await;
    // And a client joining later gets it through sync step 2.
    let c3 = YClient::connect(&b.ws_url("team/notes"), Some(&t)).await;
    c3.wait_text("hello from sql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_made_while_the_listener_is_down_still_arrive() {
    let pg = Pg::start();
    let a = Bridge::start(&pg, "a", &[]).await;
    let t = writer_token();
    let c1 = YClient::connect(&a.ws_url("lst"), Some(&t)).await;
    c1.wait_synced().await;
    pg.insert_text("lst", 0, "1").await;
    c1.wait_text("1").await;

    let db = pg.client().await;
    // Kill the LISTEN backend and write in the same round trip, before it can reconnect.
    let killed: i64 = db
        .query_one(
            "WITH k AS (SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity \
             WHERE application_name = 'collab-bridge-listener a') \
             SELECT count(*) FILTER (WHERE ok) FROM k",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "listener backend not found");
    // More rows than the bridge sends one by one: the catch-up merges them.
    for s in ["2", "3", "4", "5", "6", "7", "8", "9"] {
        db.query_one("SELECT collab.insert_text('lst', 'content', 1, $1)", &[&s])
            .await
            .unwrap();
    }
    // A large batch (too big to inline in the notification) is fetched too.
    let big = "z".repeat(20_000);
    db.query_one(
        "SELECT collab.insert_text('lst', 'content', 0, $1)",
        &[&big],
    )
    .await
    .unwrap();
    let expected = format!("{big}198765432");
    assert_eq!(pg.text("lst").await, expected);
    c1.wait_text(&expected).await;
    let mut a = a;
    a.wait_healthy().await;
    assert!(a.metric("collab_bridge_listener_reconnects_total").await >= 1.0);
    // And the next edit flows through the new listener.
    pg.insert_text("lst", 0, ">").await;
    c1.wait_text(&format!(">{expected}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_group_committed() {
    let pg = Pg::start();
    let a = Bridge::start(&pg, "a", &[]).await;
    let t = writer_token();
    let mut clients = Vec::new();
    for _ in 0..6 {
        let c = YClient::connect(&a.ws_url("group"), Some(&t)).await;
        c.wait_synced().await;
        clients.push(c);
    }
    const N: usize = 30;
    for i in 0..N {
        for (k, c) in clients.iter().enumerate() {
            c.insert(0, &format!("{k}.{i};"));
        }
    }
    let expected_rows = (clients.len() * N) as i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pg.update_rows("group").await.0 < expected_rows {
        assert!(
            std::time::Instant::now() < deadline,
            "not all updates stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        pg.update_rows("group").await,
        (expected_rows, expected_rows)
    );
    let calls = a.metric("collab_bridge_batch_size_count").await;
    let stored = a.metric("collab_bridge_batch_size_sum").await;
    assert_eq!(stored, expected_rows as f64);
    assert!(
        calls < stored,
        "no batching: {calls} calls for {stored} updates"
    );
    eprintln!("{stored} updates in {calls} collab.apply_updates calls");
    let text = pg.text("group").await;
    for c in &clients {
        c.wait_text(&text).await;
    }
}
