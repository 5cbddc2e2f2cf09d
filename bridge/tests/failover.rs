//! Failover with nothing committed lost: stock clients type through two bridges into a
//! pg_auto_failover pair (scripts/ha.sh: primary + synchronous standby); the primary's machine
//! is lost (keeper and postmaster SIGKILLed), the monitor promotes the standby, and the bridges
//! (multi-host `--database-url` with `target_session_attrs=read-write`) move their pool, lanes
//! and listener to it while the clients go on typing.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::ha::{connect, Ha};
use common::*;

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Writes `sql-<n>;` tokens with `collab.insert_text` through the multi-host URL until told to
/// stop; returns the tokens whose commit was acknowledged (a sequence came back).
fn spawn_sql_writer(
    url: String,
    stop: Arc<Mutex<bool>>,
) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    tokio::spawn(async move {
        let (mut acked, mut failed) = (Vec::new(), 0);
        let mut client = None;
        for n in 0.. {
            if *stop.lock().unwrap() {
                break;
            }
            if client.is_none() {
                client = connect(&url).await.ok();
            }
            let Some(c) = client.as_ref() else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let token = format!("sql-{n};");
            match c
                .query_one(
                    "SELECT collab.insert_text('acked', 'content', 0, $1)",
                    &[&token],
                )
                .await
            {
                Ok(_) => acked.push(token),
                Err(_) => {
                    failed += 1;
                    client = None;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (acked, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_continues_through_a_failover_and_nothing_committed_is_lost() {
    let ha = Ha::start();
    let a = Bridge::spawn_with_url(&ha.bridge_url, "a", &["--allow-query-token"])
        .await
        .unwrap();
    let b = Bridge::spawn_with_url(&ha.bridge_url, "b", &["--allow-query-token"])
        .await
        .unwrap();
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/js");
    let base = |br: &Bridge| br.ws_url("").trim_end_matches('/').to_string();
    let mut node = Script::start(
        &js.join("ha_typing.mjs"),
        &[base(&a), base(&b), writer_token(), "ha".to_string()],
        &js.join("node_modules/y-websocket"),
    );
    node.step_limit = Duration::from_secs(120);
    node.step("typing").await;
    let stop = Arc::new(Mutex::new(false));
    let sql_writer = spawn_sql_writer(ha.primary_url(), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let old = ha.primary().expect("a primary before the kill");
    let killed = Instant::now();
    ha.kill(old);
    node.tell(&format!("killed {}", epoch_ms())).await;
    let new = ha.wait_new_primary(old, Duration::from_secs(60)).await;
    let promoted = killed.elapsed();
    let flowing = node.step("flowing").await;
    println!(
        "failover: standby on port {new} promoted {:.2} s after the kill; edits flow again \
         (each client sees a token the other typed after the kill) after {} ms (a→b) and {} ms (b→a)",
        promoted.as_secs_f64(),
        flowing["a_to_b_ms"],
        flowing["b_to_a_ms"]
    );

    // Typing goes on on the new primary for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    *stop.lock().unwrap() = true;
    node.tell("stop").await;
    let last = node.step("final").await;
    let text = last["text"].as_str().unwrap().to_string();
    let tokens: Vec<String> = last["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    for t in &tokens {
        assert_eq!(
            text.matches(t.as_str()).count(),
            1,
            "token {t} once in {text}"
        );
    }
    let (acked, failed) = sql_writer.await.unwrap();
    node.finish().await;

    let db = connect(&ha.url_of(new)).await.unwrap();
    let read_only: bool = db
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!read_only, "the promoted node is a primary");
    let stored: String = db
        .query_one("SELECT collab.text('ha')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, text, "the new primary holds everything typed");
    let stored_sql: String = db
        .query_one("SELECT collab.text('acked')", &[])
        .await
        .unwrap()
        .get(0);
    let lost: Vec<&String> = acked
        .iter()
        .filter(|t| !stored_sql.contains(t.as_str()))
        .collect();
    println!(
        "{} SQL commits acknowledged ({failed} failed during the failover), {} typed tokens",
        acked.len(),
        tokens.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged commits missing on the new primary: {lost:?}\n{}",
        ha.logs()
    );
    // Both bridges reconnected their listener: the metric counts it.
    for br in [&a, &b] {
        assert!(br.metric("collab_bridge_listener_reconnects_total").await >= 1.0);
    }
}
