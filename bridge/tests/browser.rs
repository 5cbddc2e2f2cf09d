//! The demo page in a real browser: Debian's Chromium driven by playwright-core
//! (web/tests/browser.mjs), the page built by Vite (web/dist) and served by a real bridge in
//! --dev mode, a real PostgreSQL with pg_collab. One scenario per test; the tests take turns,
//! since two Chromiums at once on a 2-core machine only make each other slow.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")
}

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/artifacts")
}

/// A bridge in development mode serving the built page, on a fixed port so it can be restarted
/// at the same address.
async fn dev_bridge(pg: &Pg, port: u16) -> Bridge {
    dev_bridge_with(pg, port, &[]).await
}

async fn dev_bridge_with(pg: &Pg, port: u16, extra: &[&str]) -> Bridge {
    let dist = web_dir().join("dist");
    assert!(
        dist.join("index.html").exists(),
        "web/dist missing: run scripts/setup.sh (it builds the page with Vite)"
    );
    let listen = format!("127.0.0.1:{port}");
    let dist = dist.display().to_string();
    let mut args = vec!["--dev", "--listen", &listen, "--static-dir", &dist];
    args.extend_from_slice(extra);
    Bridge::start(pg, "web", &args).await
}

fn browser(scenario: &str, bridge: &Bridge, doc: &str) -> Script {
    browser_with(scenario, bridge, doc, &[])
}

fn browser_with(scenario: &str, bridge: &Bridge, doc: &str, extra: &[String]) -> Script {
    let web = web_dir();
    let mut args = vec![
        scenario.to_string(),
        format!("http://{}", bridge.addr),
        doc.to_string(),
        artifacts().display().to_string(),
    ];
    args.extend_from_slice(extra);
    let mut s = Script::start(
        &web.join("tests/browser.mjs"),
        &args,
        &web.join("node_modules/playwright-core"),
    );
    s.step_limit = Duration::from_secs(90);
    s
}

async fn done(mut node: Script) {
    let end = node.step("done").await;
    assert_eq!(
        end["page_errors"],
        serde_json::json!([]),
        "no script errors in the pages"
    );
    node.finish().await;
}

fn count(s: &str, c: char) -> usize {
    s.chars().filter(|&x| x == c).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_typing_at_the_same_spot_converge_without_losing_a_character() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let bridge = dev_bridge(&pg, free_port()).await;
    let mut node = browser("concurrent_typing", &bridge, "race");

    let converged = node.step("converged").await;
    let text = converged["text"].as_str().unwrap();
    assert_eq!(count(text, 'a'), 40, "every 'a' Ada typed: {text:?}");
    assert_eq!(count(text, 'g'), 40, "every 'g' Grace typed: {text:?}");
    assert!(text.contains(&"a".repeat(40)), "Ada's run stays whole");
    assert!(text.contains(&"g".repeat(40)), "Grace's run stays whole");
    assert!(text.starts_with("Hello ") && text.ends_with(" world"));
    assert_eq!(
        converged["cookie_visible"], "",
        "the page cannot read the token cookie"
    );

    let rich = node.step("rich").await;
    for what in ["heading", "list", "bold"] {
        assert_eq!(
            rich[what],
            serde_json::json!([true, true]),
            "{what} in both pages: {rich}"
        );
    }
    let delta = rich["delta"].to_string();
    assert!(delta.contains(r#""header":1"#) && delta.contains(r#""list":"bullet""#));
    assert!(
        delta.contains(r#""bold":true"#),
        "formats are stored in the Y.Text: {delta}"
    );
    let stored = pg.text("race").await;
    assert_eq!(
        stored,
        rich["text"].as_str().unwrap(),
        "the database holds what both pages show"
    );
    assert!(stored.starts_with("Meeting notes\n") && stored.contains("first point in bold"));
    let cookies = node.step("cookies").await;
    let cookie = &cookies["cookies"][0];
    assert_eq!(cookie["name"], "collab_token");
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["sameSite"], "Strict");
    assert!(
        artifacts().join("two-pages.png").exists(),
        "screenshot saved"
    );
    done(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sql_insert_appears_in_both_pages_within_a_second() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let bridge = dev_bridge(&pg, free_port()).await;
    let mut node = browser("sql_insert", &bridge, "sql");

    node.step("ready").await;
    pg.insert_text("sql", 0, "[from SQL] ").await;
    node.tell("[from SQL] ").await;
    let seen = node.step("seen").await;
    let ms = seen["ms"].as_f64().unwrap();
    assert!(ms <= 1000.0, "both pages showed the SQL edit after {ms} ms");
    assert_eq!(
        seen["text"].as_str().unwrap(),
        "[from SQL] Typed in the browser."
    );
    done(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_sees_the_other_pages_caret_and_name() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let bridge = dev_bridge(&pg, free_port()).await;
    let mut node = browser("presence", &bridge, "presence");

    let seen = node.step("seen").await;
    assert_eq!(seen["name"], "Grace");
    let people: Vec<&str> = seen["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(people, ["Ada", "Grace"], "who is here, Ada first");
    assert_ne!(seen["caret_color"], "", "Grace's caret has her colour");
    let gone = node.step("gone").await;
    assert_eq!(gone["people"], serde_json::json!(["Ada"]), "Grace left");
    done(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_offline_keeps_its_edits_and_converges_when_back() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let bridge = dev_bridge(&pg, free_port()).await;
    let mut node = browser("offline", &bridge, "offline");

    let converged = node.step("converged").await;
    let text = converged["text"].as_str().unwrap();
    assert_eq!(text, "Offline edit. Shared line. Online edit.");
    let label = converged["offline_label"].as_str().unwrap();
    assert!(
        label.starts_with("Offline") && label.contains("unsent edit"),
        "the page says it is offline with unsent edits: {label:?}"
    );
    assert!(
        !converged["grace_meanwhile"]
            .as_str()
            .unwrap()
            .contains("Offline edit."),
        "nothing crossed while offline"
    );
    assert_eq!(pg.text("offline").await, text);
    done(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_survive_a_bridge_restart_and_lose_nothing_typed() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let port = free_port();
    let mut bridge = dev_bridge(&pg, port).await;
    let mut node = browser("restart", &bridge, "restart");

    node.step("ready").await;
    bridge.sigterm();
    assert!(
        bridge.wait_exit(Duration::from_secs(15)).await.is_some(),
        "the bridge stops on SIGTERM"
    );
    node.tell("down").await;
    let typed = node.step("typed").await;
    for label in typed["labels"].as_array().unwrap() {
        let label = label.as_str().unwrap();
        assert!(
            label.starts_with("Reconnecting") && label.contains("unsent edit"),
            "pages say they are reconnecting and hold unsent edits: {label:?}"
        );
    }
    let _bridge = dev_bridge(&pg, port).await;
    node.tell("up").await;
    let converged = node.step("converged").await;
    let text = converged["text"].as_str().unwrap();
    assert_eq!(text, "Typed while down. Before the restart. Grace too.");
    let states: Vec<&str> = converged["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"reconnecting") && states.last() == Some(&"connected"),
        "states shown: {states:?}"
    );
    // Each page only receives what was committed, so converged pages mean stored edits.
    assert_eq!(pg.text("restart").await, text, "everything typed is stored");
    done(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_session_is_renewed_without_losing_an_edit() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    // The connection ends at the token's exp plus the leeway: keep that short here.
    let bridge = dev_bridge_with(
        &pg,
        free_port(),
        &["--dev-token-secs", "12", "--jwt-leeway-secs", "1"],
    )
    .await;
    let mut node = browser("token_expiry", &bridge, "expiry");

    let renewed = node.step("renewed").await;
    let closes = renewed["closes"].as_array().unwrap();
    assert!(
        closes.contains(&serde_json::json!(4001)),
        "the bridge ended the connection with 4001 at expiry: {closes:?}"
    );
    let states = renewed["states"].as_array().unwrap();
    assert_eq!(states.last().unwrap(), "connected", "{states:?}");
    let text = renewed["text"].as_str().unwrap();
    assert_eq!(text, "Before expiry. After expiry.");
    assert_eq!(pg.text("expiry").await, text);
    done(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_user_s_page_stops_on_4001_instead_of_retrying() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let dir = tempfile::tempdir().unwrap();
    let revoked = dir.path().join("revoked");
    std::fs::write(&revoked, "").unwrap();
    let revoked_arg = revoked.display().to_string();
    let bridge =
        dev_bridge_with(&pg, free_port(), &["--revoked-subjects-file", &revoked_arg]).await;
    let mut node = browser("revoked", &bridge, "revoked");
    node.step("ready").await;
    std::fs::write(&revoked, "Ada\n").unwrap();
    node.tell("revoked").await;
    let stopped = node.step("stopped").await;
    let closes = stopped["closes"].as_array().unwrap();
    let refusals = closes
        .iter()
        .filter(|c| **c == serde_json::json!(4001))
        .count();
    assert_eq!(refusals, 1, "one 4001, then no retries: {closes:?}");
    assert_eq!(stopped["should_connect"], serde_json::json!(false));
    let label = stopped["label"].as_str().unwrap();
    assert!(label.contains("signed out"), "{label}");
    assert_eq!(pg.text("revoked").await, "Before revocation.");
    done(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_applications_cookie_a_read_only_token_gives_a_read_only_editor() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let dist = web_dir().join("dist").display().to_string();
    let bridge = Bridge::start(&pg, "app", &["--static-dir", &dist]).await;
    let tokens = [token(&[("shared", "write")]), token(&[("shared", "read")])];
    let mut node = browser_with("app_cookie", &bridge, "shared", &tokens);

    let seen = node.step("seen").await;
    assert_eq!(seen["signin_shown"], false, "no sign-in form outside --dev");
    assert_eq!(seen["text"], "Written by the writer.");
    assert_eq!(
        seen["reader_text"], "Written by the writer.",
        "the reader follows"
    );
    assert_eq!(seen["reader_editable"], "false");
    assert_eq!(seen["reader_status"], "Connected (read-only)");
    assert_eq!(pg.text("shared").await, "Written by the writer.");
    done(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_panel_previews_an_earlier_version_read_only() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let bridge = dev_bridge(&pg, free_port()).await;
    let mut node = browser("history", &bridge, "history");

    node.step("ready").await;
    let at = pg.text("history").await.chars().count() as i32;
    pg.insert_text("history", at, " Reviewed.").await;
    node.tell("go").await;
    let preview = node.step("preview").await;
    let versions = preview["versions"].as_array().unwrap();
    assert!(
        versions.len() >= 2,
        "the browser edit and the SQL edit are versions: {versions:?}"
    );
    assert!(versions[0].as_str().unwrap().contains("SQL"));
    assert_eq!(preview["preview"], "First draft.");
    assert_eq!(preview["editable"], "false", "the preview is read-only");
    assert_eq!(preview["live"], "First draft. Reviewed.");
    done(node).await;
}

/// #13: restoring a version from the history panel while another page types: both pages and the
/// database converge on the restored text plus the later typing, and the coloured "who wrote
/// this" view names both people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_a_version_while_another_page_types_converges_on_both() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let bridge = dev_bridge(&pg, free_port()).await;
    let mut node = browser("restore", &bridge, "restore");

    node.step("ready").await;
    pg.insert_text("restore", 12, " Reviewed.").await;
    node.tell("go").await;
    let seen = node.step("restored").await;
    let text = seen["text"].as_str().unwrap().to_string();
    // What Grace typed after the restore, then whatever of her concurrent typing the restore
    // did not take out (it removes what was stored after the version when it ran), then the
    // restored text; the SQL edit is gone.
    let rest = text.strip_prefix("XYZ ").expect("the later typing is kept");
    let typed = rest
        .strip_suffix("First draft.")
        .expect("the restored text");
    assert!(
        typed.chars().all(|c| "abcdefgh".contains(c)),
        "only Grace's typing besides the version: {text:?}"
    );
    assert!(!text.contains("Reviewed."));
    assert_eq!(
        pg.text("restore").await,
        text,
        "the database holds what both pages show"
    );
    let authors: Vec<&str> = seen["authors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        authors.contains(&"Ada") && authors.contains(&"Grace"),
        "{authors:?}"
    );
    assert!(
        seen["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_str().unwrap().contains("Ada")),
        "versions name their authors: {:?}",
        seen["versions"]
    );
    done(node).await;
}

/// `collab.text(doc, 'default')`: the Tiptap page's XML fragment as XML text.
async fn tiptap_text(pg: &Pg, doc: &str) -> String {
    pg.client()
        .await
        .query_one("SELECT collab.text($1, 'default')", &[&doc])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiptap_pages_share_a_document_and_its_notes_over_one_hocuspocus_socket_each() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let bridge = dev_bridge(&pg, free_port()).await;
    let mut node = browser("tiptap", &bridge, "tiptap");

    let seen = node.step("tiptap").await;
    let text = seen["text"].as_str().unwrap();
    assert!(
        text.contains("Hello from Ada.") && text.contains("And Grace."),
        "{seen}"
    );
    assert_eq!(seen["notes"], "A note from Grace.");
    assert_eq!(
        seen["caret"], "Grace",
        "Ada sees Grace's caret with her name"
    );
    assert_eq!(seen["people"], serde_json::json!(["Ada", "Grace"]));
    assert_eq!(
        seen["sockets"],
        serde_json::json!(["/hocuspocus"]),
        "the document and its notes share one socket"
    );
    assert!(seen["label"].as_str().unwrap().ends_with("Saved"), "{seen}");
    let stored = tiptap_text(&pg, "tiptap").await;
    assert!(
        stored.contains("Hello from Ada.") && stored.contains("And Grace."),
        "{stored}"
    );
    assert!(tiptap_text(&pg, "tiptap/notes")
        .await
        .contains("A note from Grace."));
    let history = node.step("history").await;
    assert!(
        history["preview"]
            .as_str()
            .unwrap()
            .contains("Hello from Ada."),
        "the history panel shows a version of the Tiptap document: {history}"
    );
    assert_eq!(history["editable"], "false", "read-only");
    done(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_is_shown_while_postgresql_is_stopped_and_saved_only_once_the_edit_is_committed() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let bridge = dev_bridge(&pg, free_port()).await;
    let mut node = browser("saving", &bridge, "saving");

    node.step("ready").await;
    pg.stop();
    node.tell("stopped").await;
    let down = node.step("down").await;
    for who in ["ada", "grace"] {
        assert_eq!(
            down[who],
            serde_json::json!(["saved", "saving"]),
            "{who}: Saving…, never Saved, while the database is down: {down}"
        );
    }
    assert!(down["ada_label"].as_str().unwrap().ends_with("Saving…"));
    pg.start_again();
    node.tell("started").await;
    let saved = node.step("saved").await;
    for who in ["ada", "grace"] {
        assert_eq!(
            saved[who],
            serde_json::json!(["saved", "saving", "saved"]),
            "{saved}"
        );
    }
    assert!(
        tiptap_text(&pg, "saving")
            .await
            .contains("Before. While down."),
        "the Tiptap edit is committed"
    );
    assert_eq!(pg.text("saving-quill").await, "Before. While down.");
    done(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_offline_survives_a_reload_and_is_stored_once_the_bridge_is_reachable() {
    let _turn = TURN.lock().await;
    let pg = Pg::start();
    let bridge = dev_bridge(&pg, free_port()).await;
    let mut node = browser("offline_reload", &bridge, "offline-reload");

    let typed = node.step("typed").await;
    assert!(
        typed["label"].as_str().unwrap().starts_with("Offline"),
        "{typed}"
    );
    assert!(!tiptap_text(&pg, "offline-reload")
        .await
        .contains("Offline edit."));
    node.tell("reload").await;
    let reloaded = node.step("reloaded").await;
    assert_eq!(
        reloaded["text"], "Online. Offline edit.",
        "kept in the page across the reload"
    );
    assert!(
        !tiptap_text(&pg, "offline-reload")
            .await
            .contains("Offline edit."),
        "not uploaded while the bridge is unreachable"
    );
    node.tell("online").await;
    node.step("online").await;
    assert!(tiptap_text(&pg, "offline-reload")
        .await
        .contains("Online. Offline edit."));
    done(node).await;
}
