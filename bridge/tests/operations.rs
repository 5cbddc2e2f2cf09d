//! Running the bridge in production: a document row locked by an application, key rotation
//! with a JWKS file, revocation, secrets kept out of sight, and the admin address.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::json;

async fn wait_text_in_db(pg: &Pg, doc: &str, expected: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pg.text(doc).await == expected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_locked_by_an_application_does_not_hold_up_other_documents() {
    let pg = Pg::start();
    // One lane: both documents share it, so only setting the locked one aside lets the other
    // through.
    let b = Bridge::start(
        &pg,
        "a",
        &["--write-lanes", "1", "--write-lock-timeout-ms", "200"],
    )
    .await;
    pg.insert_text("held", 0, "h").await;
    pg.insert_text("free", 0, "f").await;
    let t = writer_token();
    let held = YClient::connect(&b.ws_url("held"), Some(&t)).await;
    let free = YClient::connect(&b.ws_url("free"), Some(&t)).await;
    held.wait_text("h").await;
    free.wait_text("f").await;
    // The application's transaction takes the document's row lock and keeps it.
    let mut app = pg.client().await;
    let txn = app.transaction().await.unwrap();
    txn.query(
        "SELECT 1 FROM collab.documents WHERE name = 'held' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    held.insert(1, "1");
    // Several rounds on the other document, while the lock is held.
    for (i, s) in ["a", "b", "c"].iter().enumerate() {
        free.insert(1 + i as u32, s);
        let expected = format!("f{}", &"abc"[..=i]);
        assert!(
            wait_text_in_db(&pg, "free", &expected, Duration::from_secs(10)).await,
            "the free document stalled behind the locked one"
        );
    }
    assert_eq!(pg.text("held").await, "h", "stored through a lock?");
    assert!(b.metric("collab_bridge_lane_set_aside_total").await >= 1.0);
    // Once the application lets go, the held edit is stored, and the lane takes it back.
    txn.rollback().await.unwrap();
    assert!(wait_text_in_db(&pg, "held", "h1", Duration::from_secs(10)).await);
    held.insert(2, "2");
    assert!(wait_text_in_db(&pg, "held", "h12", Duration::from_secs(10)).await);
    assert!(held.log.lock().unwrap().close.is_none());
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jwks(keys: &[(&str, &[u8])]) -> String {
    let keys: Vec<_> = keys
        .iter()
        .map(|(kid, k)| json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": b64(k)}))
        .collect();
    json!({ "keys": keys }).to_string()
}

fn signed(kid: &str, key: &[u8], claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap()
}

fn claims(sub: &str, aud: serde_json::Value) -> serde_json::Value {
    json!({"sub": sub, "exp": now() + 600, "iss": ISSUER, "aud": aud, "docs": {"*": "write"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_by_kid_and_revoked_subjects_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    let revoked_path = dir.path().join("revoked");
    let (k1, k2) = (
        b"first key, thirty-two bytes or more!!",
        b"second key, also thirty-two bytes long",
    );
    std::fs::write(&jwks_path, jwks(&[("k1", k1), ("k2", k2)])).unwrap();
    std::fs::write(&revoked_path, "# nobody yet\n").unwrap();
    let pg = Pg::start();
    let b = Bridge::start_bare(
        &pg,
        "k",
        &[
            "--jwt-jwks-file",
            jwks_path.to_str().unwrap(),
            "--revoked-subjects-file",
            revoked_path.to_str().unwrap(),
        ],
    )
    .await;
    let url = b.ws_url("rot");
    let old = signed("k1", k1, claims("ada", json!(AUDIENCE)));
    // `aud` may be an array (RFC 7519).
    let new = signed("k2", k2, claims("ada", json!(["elsewhere", AUDIENCE])));
    let eve = signed("k2", k2, claims("eve", json!(AUDIENCE)));
    assert_eq!(ws_outcome_token(&url, Some(&old), None).await, 101);
    assert_eq!(ws_outcome_token(&url, Some(&new), None).await, 101);
    let unknown = signed("k3", k1, claims("ada", json!(AUDIENCE)));
    assert_eq!(ws_outcome_token(&url, Some(&unknown), None).await, 4001);
    let wrong_key = signed("k2", k1, claims("ada", json!(AUDIENCE)));
    assert_eq!(ws_outcome_token(&url, Some(&wrong_key), None).await, 4001);

    // Rotation: k1 is retired; the file is re-read when it changes.
    let live = YClient::connect(&url, Some(&eve)).await;
    live.wait_synced().await;
    std::fs::write(&jwks_path, jwks(&[("k2", k2)])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut ok = false;
    while !ok && Instant::now() < deadline {
        ok = ws_outcome_token(&url, Some(&old), None).await == 4001;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "the retired key still works");
    assert_eq!(ws_outcome_token(&url, Some(&new), None).await, 101);
    assert!(
        live.log.lock().unwrap().close.is_none(),
        "rotation kept connections"
    );

    // Revocation closes eve's open connection and refuses new ones; ada stays.
    let ada = YClient::connect(&url, Some(&new)).await;
    ada.wait_synced().await;
    std::fs::write(&revoked_path, "eve\n").unwrap();
    let (code, reason) = live.wait_close().await;
    assert_eq!(code, 4001);
    assert!(reason.contains("revoked"), "{reason}");
    assert_eq!(ws_outcome_token(&url, Some(&eve), None).await, 4001);
    assert!(ada.log.lock().unwrap().close.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_files_and_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    // --help shows no secret given in the environment.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_collab-bridge"))
        .arg("--help")
        .env(
            "COLLAB_JWT_SECRET",
            "hunter2-hunter2-hunter2-hunter2-hunter2",
        )
        .env("COLLAB_DATABASE_URL", "postgres://u:sw0rdfish@db/x")
        .env("COLLAB_DATABASE_PASSWORD", "tr0ub4dor")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for secret in ["hunter2", "sw0rdfish", "tr0ub4dor"] {
        assert!(!help.contains(secret), "--help prints {secret}");
    }
    assert!(help.contains("--jwt-secret-file"));
    let pg = Pg::start();
    let b = Bridge::start_bare(
        &pg,
        "s",
        &["--jwt-secret-file", secret_file.to_str().unwrap()],
    )
    .await;
    let c = YClient::connect(&b.ws_url("sec"), Some(&writer_token())).await;
    c.wait_synced().await;
    // Any origin together with cookies would hand every site its visitors' sessions.
    match Bridge::spawn(&pg, "x", &["--allowed-origins", "*"]).await {
        Err(stderr) => assert!(stderr.contains("cookie"), "{stderr}"),
        Ok(_) => panic!("--allowed-origins '*' accepted with cookies"),
    }
    Bridge::start(&pg, "y", &["--allowed-origins", "*", "--auth-cookie", ""]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_live_on_a_separate_admin_address() {
    let pg = Pg::start();
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let b = Bridge::start(&pg, "m", &["--admin-listen", &admin]).await;
    let r = http(admin.parse().unwrap(), "GET", "/metrics", &[], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = http(b.addr, "GET", "/metrics", &[], &[]).await.unwrap();
    assert_ne!(r.status, 200, "metrics still on the public address");
    // Every answer carries a request id.
    let r = http(b.addr, "GET", "/healthz", &[], &[]).await.unwrap();
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_missed_while_the_listener_was_down_does_not_leave_the_room_stuck() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &[]).await;
    let t = writer_token();
    let c = YClient::connect(&b.ws_url("phoenix"), Some(&t)).await;
    c.wait_synced().await;
    for s in ["a", "b", "c", "d", "e"] {
        pg.insert_text("phoenix", 0, s).await;
    }
    c.wait_text("edcba").await;
    let db = pg.client().await;
    // Kill the LISTEN backend, then delete the document, recreate it on purpose (deletion is
    // final otherwise) and write it anew before the listener is back: the `deleted`
    // notification is lost, and the new log is shorter than what the room saw.
    db.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'collab-bridge-listener a'; \
         SELECT collab.delete_document('phoenix'); \
         SELECT collab.recreate_document('phoenix'); \
         SELECT collab.insert_text('phoenix', 'content', 0, 'new');",
    )
    .await
    .unwrap();
    // The client holds the old document: it is told the document was deleted.
    let (code, _) = c.wait_close().await;
    assert_eq!(code, 4410);
    // And a fresh connection gets the new document.
    let fresh = YClient::connect(&b.ws_url("phoenix"), Some(&t)).await;
    fresh.wait_text("new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_missed_while_the_listener_was_down_closes_the_room_when_not_recreated() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &[]).await;
    let t = writer_token();
    let c = YClient::connect(&b.ws_url("ashes"), Some(&t)).await;
    c.wait_synced().await;
    pg.insert_text("ashes", 0, "x").await;
    c.wait_text("x").await;
    // The `deleted` notification is lost with the LISTEN backend; the catch-up after the
    // listener is back finds a tombstone.
    pg.client()
        .await
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'collab-bridge-listener a'; \
             SELECT collab.delete_document('ashes');",
        )
        .await
        .unwrap();
    let (code, _) = c.wait_close().await;
    assert_eq!(code, 4410);
}

/// `--write-cache-mb` becomes the lanes' `collab.cache_bytes` (superuser-settable) only where
/// the DBA granted it: without the grant the server's budget stays, writes go on, and the
/// metric says which budget the lanes have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lanes_document_memory_follows_write_cache_mb_only_where_the_dba_granted_it() {
    let pg = Pg::start();
    let t = writer_token();
    let mb = |n: f64| n * 1024.0 * 1024.0;

    let without = Bridge::start(&pg, "a", &["--write-cache-mb", "200"]).await;
    let c = YClient::connect(&without.ws_url("mem"), Some(&t)).await;
    c.insert(0, "x");
    assert!(wait_text_in_db(&pg, "mem", "x", Duration::from_secs(10)).await);
    assert_eq!(
        without.metric("collab_bridge_write_cache_bytes").await,
        mb(64.0),
        "the server's default stays without the grant"
    );

    pg.client()
        .await
        .batch_execute(&format!(
            "GRANT SET ON PARAMETER collab.cache_bytes TO {BRIDGE_USER}"
        ))
        .await
        .unwrap();
    let with = Bridge::start(&pg, "b", &["--write-cache-mb", "200"]).await;
    let c2 = YClient::connect(&with.ws_url("mem"), Some(&t)).await;
    c2.wait_text("x").await;
    c2.insert(1, "y");
    assert!(wait_text_in_db(&pg, "mem", "xy", Duration::from_secs(10)).await);
    assert_eq!(
        with.metric("collab_bridge_write_cache_bytes").await,
        mb(200.0)
    );
}

/// Search that lags the writes (`--search-lag-ms`) says by how much: while a document is being
/// typed in, the refresher's reading of `collab.search_backlog()` shows it stale; once typing
/// stops, the refresher indexes it and the gauges go back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_backlog_metrics_show_a_document_being_typed_until_search_catches_up() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &["--search-lag-ms", "1000"]).await;
    let c = YClient::connect(&b.ws_url("typed"), Some(&writer_token())).await;
    c.wait_synced().await;
    let mut typed = 0u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        c.insert(typed, "x");
        typed += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if typed.is_multiple_of(10)
            && b.metric("collab_bridge_search_stale_documents").await >= 1.0
            && b.metric("collab_bridge_search_stale_seconds").await > 0.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the document being typed never showed as stale"
        );
    }
    assert!(
        wait_text_in_db(
            &pg,
            "typed",
            &"x".repeat(typed as usize),
            Duration::from_secs(10)
        )
        .await
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while b.metric("collab_bridge_search_stale_documents").await != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "search never caught up after typing stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(b.metric("collab_bridge_search_stale_seconds").await, 0.0);
}
