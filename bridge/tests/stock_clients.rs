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

/// A Node.js script of tests/js driven step by step: it prints one JSON line per step
/// (`{"step", "text"}`) and reads a line from us where it waits.
struct Script {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Script {
    fn start(name: &str, a: &Bridge, b: &Bridge, doc: &str) -> Script {
        let js = js_dir();
        assert!(
            js.join("node_modules/y-websocket").exists(),
            "npm packages missing: run scripts/setup.sh (npm ci in tests/js)"
        );
        let base = |br: &Bridge| br.ws_url("").trim_end_matches('/').to_string();
        let mut child = Command::new("node")
            .arg(js.join(name))
            .args([base(a), base(b), writer_token(), doc.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Script {
            child,
            stdin,
            lines,
        }
    }

    /// Waits for step `name` and returns the text the script reported.
    async fn step(&mut self, name: &str) -> String {
        let line = tokio::time::timeout(Duration::from_secs(40), self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("node step {name} timed out"))
            .unwrap()
            .unwrap_or_else(|| panic!("node exited before step {name}"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["step"], name);
        v["text"].as_str().unwrap().to_string()
    }

    async fn tell(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    async fn finish(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_yjs_clients_on_two_bridges_converge_see_sql_edits_and_sync_offline_edits() {
    let pg = Pg::start();
    let a = Bridge::start(&pg, "a", &["--allow-query-token"]).await;
    let b = Bridge::start(&pg, "b", &["--allow-query-token"]).await;
    let mut node = Script::start("stock_clients.mjs", &a, &b, "stock");

    let converged = node.step("converged").await;
    assert_eq!(
        pg.text("stock").await,
        converged,
        "the database holds what both clients show"
    );

    pg.insert_text("stock", 0, "FROM-SQL;").await;
    node.tell("FROM-SQL;").await;
    let with_sql = node.step("sql-seen").await;
    assert!(with_sql.starts_with("FROM-SQL;"));

    let after_offline = node.step("offline-synced").await;
    assert!(after_offline.contains("offline-edit;"));
    assert_eq!(
        pg.text("stock").await,
        after_offline,
        "offline edits were stored"
    );
    node.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_bridge_loses_nothing_the_client_continues_through_another() {
    let pg = Pg::start();
    let a = Bridge::start(&pg, "doomed", &["--allow-query-token"]).await;
    let b = Bridge::start(&pg, "survivor", &["--allow-query-token"]).await;
    let mut node = Script::start("failover.mjs", &a, &b, "failover");

    let typed = node.step("typed").await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    node.tell("killed").await;
    let recovered = node.step("recovered").await;
    assert!(
        recovered.starts_with(&typed),
        "what was typed before the kill survived"
    );
    assert_eq!(
        pg.text("failover").await,
        recovered,
        "and all of it is stored"
    );
    node.finish().await;
}
