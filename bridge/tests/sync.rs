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

/// The markers `<...>` in the bytes of an update (Yjs v1 stores inserted strings verbatim).
fn markers_in(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(open) = rest.iter().position(|b| *b == b'<') {
        rest = &rest[open + 1..];
        // A '<' may also be a byte of the binary encoding: only `<` alphanumerics `>` counts.
        let len = rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if len > 0 && rest.get(len) == Some(&b'>') {
            out.push(String::from_utf8_lossy(&rest[..len]).into_owned());
            rest = &rest[len + 1..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_from_two_bridges_reach_each_bridges_clients_in_sequence_order_exactly_once() {
    let pg = Pg::start();
    let a = Bridge::start(&pg, "a", &[]).await;
    let b = Bridge::start(&pg, "b", &[]).await;
    let t = writer_token();
    let doc = "order";
    // A writer and a watcher on each bridge: a watcher gets its own bridge's writes when they
    // commit and the other bridge's from their notifications, interleaved in one sequence.
    let wa = YClient::connect(&a.ws_url(doc), Some(&t)).await;
    let wb = YClient::connect(&b.ws_url(doc), Some(&t)).await;
    let va = YClient::connect(&a.ws_url(doc), Some(&t)).await;
    let vb = YClient::connect(&b.ws_url(doc), Some(&t)).await;
    for c in [&wa, &wb, &va, &vb] {
        c.wait_synced().await;
    }
    const N: usize = 60;
    tokio::join!(
        edit_tagged(&wa, "a", 0..N / 2),
        edit_tagged(&wb, "b", 0..N / 2)
    );
    // Bridge a stops hearing notifications: b's next update reaches a's room only from the
    // log, and a's own next one (the sequence after it) is handed to the room at commit, with
    // a gap before it that the room must fill first.
    let db = pg.client().await;
    let killed: i64 = db
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'collab-bridge-listener a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "listener backend not found");
    edit_tagged(&wb, "b", N / 2..N / 2 + 1).await;
    let b_seen = format!("<b{}>", N / 2);
    wait_for("b's update at its bridge", Duration::from_secs(10), || {
        vb.text().contains(&b_seen)
    })
    .await;
    edit_tagged(&wa, "a", N / 2..N / 2 + 1).await;
    tokio::join!(
        edit_tagged(&wa, "a", N / 2 + 1..N),
        edit_tagged(&wb, "b", N / 2 + 1..N)
    );

    let all = wait_until(Duration::from_secs(30), || {
        [&va, &vb]
            .iter()
            .all(|v| markers_in(v.text().as_bytes()).len() == 2 * N)
    })
    .await;
    assert!(all, "watchers did not get every update");

    // The log, in sequence order: which marker each sequence holds.
    let rows = db
        .query(
            "SELECT seq, update FROM collab.updates_since($1, 0) ORDER BY seq",
            &[&doc],
        )
        .await
        .unwrap();
    let mut seq_of = std::collections::HashMap::new();
    for r in &rows {
        let update: Vec<u8> = r.get(1);
        for m in markers_in(&update) {
            assert!(
                seq_of.insert(m, r.get::<_, i64>(0)).is_none(),
                "stored twice"
            );
        }
    }
    assert_eq!(seq_of.len(), 2 * N, "every update stored once");
    let mut all_seqs: Vec<i64> = seq_of.values().copied().collect();
    all_seqs.sort_unstable();

    for (name, v) in [("a", &va), ("b", &vb)] {
        let frames = v.log.lock().unwrap().update_frames.clone();
        let mut seen = Vec::new();
        let mut delivered_up_to = 0;
        for f in &frames {
            let seqs: Vec<i64> = markers_in(f).iter().map(|m| seq_of[m]).collect();
            let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) else {
                continue;
            };
            assert!(
                *lo > delivered_up_to,
                "watcher on bridge {name}: sequences {lo}..={hi} after {delivered_up_to}"
            );
            delivered_up_to = *hi;
            seen.extend(seqs);
        }
        seen.sort_unstable();
        assert_eq!(
            seen, all_seqs,
            "watcher on bridge {name}: every update once"
        );
    }
    // Each bridge delivered (some of) its own writes at commit, not from the notification.
    assert!(a.metric("collab_bridge_delivered_at_commit_total").await >= 1.0);
    assert!(b.metric("collab_bridge_delivered_at_commit_total").await >= 1.0);
}

async fn edit_tagged(c: &YClient, tag: &str, n: std::ops::Range<usize>) {
    for i in n {
        c.insert(0, &format!("<{tag}{i}>"));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
