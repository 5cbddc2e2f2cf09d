//! The Hocuspocus provider users bring (npm `@hocuspocus/provider` 4.8.0 + `yjs`, unchanged),
//! run by Node.js against two real bridges' `/hocuspocus` endpoints on one database
//! (tests/js/hocuspocus.mjs, tests/js/hocuspocus_failover.mjs).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use serde_json::json;

fn js_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/js")
}

fn base(b: &Bridge) -> String {
    b.ws_url("")
        .trim_end_matches("/ws/")
        .replacen("ws://", "http://", 1)
}

fn script(name: &str, args: &[String]) -> Script {
    let js = js_dir();
    Script::start(
        &js.join(name),
        args,
        &js.join("node_modules/@hocuspocus/provider"),
    )
}

/// Rights of the test's tokens: no pattern matches "secret".
fn writer() -> String {
    token(&[
        ("multi/*", "write"),
        ("ro/*", "read"),
        ("stateless", "write"),
        ("refresh", "write"),
        ("mixed", "write"),
        ("saved", "write"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hocuspocus_providers_share_sockets_across_two_bridges_with_per_document_rights() {
    let pg = Pg::start();
    let a = Bridge::start(&pg, "a", &["--allow-query-token"]).await;
    let b = Bridge::start(&pg, "b", &["--allow-query-token"]).await;
    let tokens = json!({
        "write": writer(),
        "shortRead": token_with(SECRET, &[("refresh", "read")], 4, ISSUER, AUDIENCE),
    });
    let mut node = script("hocuspocus.mjs", &[base(&a), base(&b), tokens.to_string()]);

    // Two documents on each of two sockets, one per bridge; a refused third on one of them.
    let multi = node.step("multi").await;
    assert_eq!(pg.text("multi/one").await, multi["one"].as_str().unwrap());
    assert_eq!(pg.text("multi/two").await, multi["two"].as_str().unwrap());
    assert!(multi["one"].as_str().unwrap().contains("a19;"));
    assert!(
        multi["denied"].as_str().unwrap().contains("no access"),
        "the refused document got PermissionDenied: {multi}"
    );
    assert_eq!(multi["secretScopes"], json!([]));
    assert_eq!(multi["scopes"], json!(["read-write"]));
    assert_eq!(
        multi["disconnects"], 0,
        "the refusal closed neither socket nor the other documents"
    );
    node.tell("next").await;

    let ro = node.step("readonly").await;
    assert_eq!(ro["scopes"], json!(["readonly"]));
    assert!(
        ro["unsynced"].as_i64().unwrap() > 0,
        "never acknowledged as saved: {ro}"
    );
    assert!(
        !pg.text("ro/doc").await.contains("READONLY-EDIT"),
        "not stored"
    );
    node.tell("next").await;

    let reopened = node.step("reopened").await;
    assert!(reopened["text"]
        .as_str()
        .unwrap()
        .starts_with("after-reopen;"));
    assert_eq!(
        reopened["disconnects"], 0,
        "closed and reopened on the live socket"
    );

    let stateless = node.step("stateless").await;
    assert_eq!(
        stateless["a"],
        json!(["hello from b"]),
        "the sender does not get its own message back"
    );
    assert_eq!(stateless["b"], json!(["hello from a"]));

    let refreshed = node.step("refreshed").await;
    assert_eq!(refreshed["before"], json!(["readonly"]));
    assert_eq!(refreshed["after"], json!(["readonly", "read-write"]));
    assert_eq!(refreshed["disconnects"], 0, "renewed without reconnecting");
    assert_eq!(
        pg.text("refresh").await,
        refreshed["text"].as_str().unwrap()
    );
    node.tell("next").await;

    let mixed = node.step_text("mixed").await;
    assert_eq!(
        pg.text("mixed").await,
        mixed,
        "both protocols converge in the database"
    );
    node.tell("next").await;

    // Saved means committed: hold the row; the provider keeps counting the edit as unsynced.
    node.step("saved-ready").await;
    let holder = pg.client().await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .execute(
            "SELECT 1 FROM collab.documents WHERE name = 'saved' FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
    node.tell("locked").await;
    let locked = node.step("while-locked").await;
    assert!(
        locked["unsynced"].as_i64().unwrap() > 0,
        "not saved while it cannot commit: {locked}"
    );
    assert!(!pg.text("saved").await.contains("WHILE-LOCKED"));
    holder.batch_execute("COMMIT").await.unwrap();
    node.tell("released").await;
    let after = node.step("after-commit").await;
    assert_eq!(after["unsynced"], 0);
    assert!(
        pg.text("saved").await.contains("WHILE-LOCKED;"),
        "saved once committed"
    );
    node.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_killed_while_a_hocuspocus_client_types_loses_nothing() {
    let pg = Pg::start();
    let a = Bridge::start(&pg, "doomed", &[]).await;
    let b = Bridge::start(&pg, "survivor", &[]).await;
    let mut node = script(
        "hocuspocus_failover.mjs",
        &[base(&a), base(&b), writer_token(), "hp-failover".into()],
    );
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
    assert!(recovered.contains("k29;"));
    assert_eq!(
        pg.text("hp-failover").await,
        recovered,
        "and all of it is stored"
    );
    node.finish().await;
}
