//! The clients users bring: npm `yjs` + `y-websocket` (WebsocketProvider, unchanged), run by
//! Node.js against two real bridges on one database (tests/js/stock_clients.mjs).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;

fn js_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/js")
}

fn script(name: &str, a: &Bridge, b: &Bridge, doc: &str) -> Script {
    let js = js_dir();
    let base = |br: &Bridge| br.ws_url("").trim_end_matches('/').to_string();
    Script::start(
        &js.join(name),
        &[base(a), base(b), writer_token(), doc.to_string()],
        &js.join("node_modules/y-websocket"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_yjs_clients_on_two_bridges_converge_see_sql_edits_and_sync_offline_edits() {
    let pg = Pg::start();
    let a = Bridge::start(&pg, "a", &["--allow-query-token"]).await;
    let b = Bridge::start(&pg, "b", &["--allow-query-token"]).await;
    let mut node = script("stock_clients.mjs", &a, &b, "stock");

    let converged = node.step_text("converged").await;
    assert_eq!(
        pg.text("stock").await,
        converged,
        "the database holds what both clients show"
    );

    pg.insert_text("stock", 0, "FROM-SQL;").await;
    node.tell("FROM-SQL;").await;
    let with_sql = node.step_text("sql-seen").await;
    assert!(with_sql.starts_with("FROM-SQL;"));

    let after_offline = node.step_text("offline-synced").await;
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
    let mut node = script("failover.mjs", &a, &b, "failover");

    let typed = node.step_text("typed").await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    node.tell("killed").await;
    let recovered = node.step_text("recovered").await;
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
