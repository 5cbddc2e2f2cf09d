//! The clients users bring: npm `yjs` + `y-websocket` (WebsocketProvider, unchanged), run by
//! Node.js against two real bridges on one database (tests/js/stock_clients.mjs).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

fn js_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/js")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_yjs_clients_on_two_bridges_converge_see_sql_edits_and_sync_offline_edits() {
    let js = js_dir();
    assert!(
        js.join("node_modules/y-websocket").exists(),
        "npm packages missing: run scripts/setup.sh (npm ci in tests/js)"
    );
    let pg = Pg::start();
    let a = Bridge::start(&pg, "a", &["--allow-query-token"]).await;
    let b = Bridge::start(&pg, "b", &["--allow-query-token"]).await;
    let base = |br: &Bridge| br.ws_url("").trim_end_matches('/').to_string();
    let mut node = Command::new("node")
        .arg(js.join("stock_clients.mjs"))
        .args([base(&a), base(&b), writer_token(), "stock".to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut step = async |name: &str| -> String {
        let line = tokio::time::timeout(Duration::from_secs(40), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("node step {name} timed out"))
            .unwrap()
            .unwrap_or_else(|| panic!("node exited before step {name}"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["step"], name);
        v["text"].as_str().unwrap().to_string()
    };

    let converged = step("converged").await;
    assert_eq!(
        pg.text("stock").await,
        converged,
        "the database holds what both clients show"
    );

    pg.insert_text("stock", 0, "FROM-SQL;").await;
    stdin.write_all(b"FROM-SQL;\n").await.unwrap();
    let with_sql = step("sql-seen").await;
    assert!(with_sql.starts_with("FROM-SQL;"));

    let after_offline = step("offline-synced").await;
    assert!(after_offline.contains("offline-edit;"));
    let stored = async { pg.text("stock").await };
    assert_eq!(stored.await, after_offline, "offline edits were stored");
    let status = tokio::time::timeout(Duration::from_secs(10), node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_bridge_loses_nothing_the_client_continues_through_another() {
    let js = js_dir();
    let pg = Pg::start();
    let a = Bridge::start(&pg, "doomed", &["--allow-query-token"]).await;
    let b = Bridge::start(&pg, "survivor", &["--allow-query-token"]).await;
    let base = |br: &Bridge| br.ws_url("").trim_end_matches('/').to_string();
    let mut node = Command::new("node")
        .arg(js.join("failover.mjs"))
        .args([base(&a), base(&b), writer_token(), "failover".to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut step = async |name: &str| -> String {
        let line = tokio::time::timeout(Duration::from_secs(40), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("node step {name} timed out"))
            .unwrap()
            .unwrap_or_else(|| panic!("node exited before step {name}"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["step"], name);
        v["text"].as_str().unwrap().to_string()
    };

    let typed = step("typed").await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    stdin.write_all(b"killed\n").await.unwrap();
    let recovered = step("recovered").await;
    assert!(
        recovered.starts_with(&typed),
        "what was typed before the kill survived"
    );
    assert_eq!(
        pg.text("failover").await,
        recovered,
        "and all of it is stored"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
