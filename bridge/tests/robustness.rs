//! Misbehaving clients and server lifecycle: malformed frames, the connection limit, awareness
//! relay and clean-up, SIGTERM, and the HTTP API.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_its_own_connection() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &[]).await;
    let t = writer_token();
    let bad = YClient::connect(&b.ws_url("mal"), Some(&t)).await;
    let good = YClient::connect(&b.ws_url("mal"), Some(&t)).await;
    bad.wait_synced().await;
    good.wait_synced().await;
    bad.send_raw(vec![0xff, 0xff, 0xff]);
    let (code, reason) = bad.wait_close().await;
    assert_eq!(code, 1002);
    assert!(reason.contains("malformed"), "{reason}");
    // A sync message whose update is garbage is refused the same way.
    let bad2 = YClient::connect(&b.ws_url("mal"), Some(&t)).await;
    bad2.wait_synced().await;
    bad2.send_raw(vec![0, 2, 5, 1, 2, 3, 4, 5]);
    let (code, _) = bad2.wait_close().await;
    assert_eq!(code, 1002);
    // The other connection is unaffected, both ways.
    pg.insert_text("mal", 0, "still here").await;
    good.wait_text("still here").await;
    good.insert(0, "> ");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg.text("mal").await != "> still here" {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(good.log.lock().unwrap().close.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_told_to_try_again_later() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &["--max-connections", "1"]).await;
    let t = writer_token();
    let first = YClient::connect(&b.ws_url("lim"), Some(&t)).await;
    first.wait_synced().await;
    let second = YClient::connect(&b.ws_url("lim"), Some(&t)).await;
    let (code, _) = second.wait_close().await;
    assert_eq!(code, 1013);
    assert!(b.metric("collab_bridge_connections_refused_total").await >= 1.0);
    first.close();
    // The slot comes back.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.metric("collab_bridge_connections").await != 0.0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = YClient::connect(&b.ws_url("lim"), Some(&t)).await;
    third.wait_synced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_is_relayed_across_bridges_and_removed_on_disconnect() {
    let pg = Pg::start();
    let a = Bridge::start(&pg, "a", &[]).await;
    let b = Bridge::start(&pg, "b", &[]).await;
    let t = writer_token();
    let c1 = YClient::connect(&a.ws_url("aw"), Some(&t)).await;
    let c2 = YClient::connect(&b.ws_url("aw"), Some(&t)).await;
    c1.wait_synced().await;
    c2.wait_synced().await;
    c1.send_awareness(777, 1, r#"{"user":{"name":"Ada"}}"#);
    wait_for(
        "awareness on the other bridge",
        Duration::from_secs(10),
        || c2.saw_awareness(|id, _, json| id == 777 && json.contains("Ada")),
    )
    .await;
    // Echoed to its sender too (y-websocket clients take it as a sign of life).
    wait_for("awareness echo", Duration::from_secs(10), || {
        c1.saw_awareness(|id, _, _| id == 777)
    })
    .await;
    // A late joiner gets the current states.
    let c3 = YClient::connect(&b.ws_url("aw"), Some(&t)).await;
    wait_for("awareness snapshot", Duration::from_secs(10), || {
        c3.saw_awareness(|id, _, _| id == 777)
    })
    .await;
    c1.close();
    wait_for("awareness removal", Duration::from_secs(10), || {
        c2.saw_awareness(|id, clock, json| id == 777 && clock == 2 && json == "null")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_pending_updates_and_closes_with_1012() {
    let pg = Pg::start();
    let mut b = Bridge::start(&pg, "a", &[]).await;
    let t = writer_token();
    let c = YClient::connect(&b.ws_url("term"), Some(&t)).await;
    c.wait_synced().await;
    for i in 0..20 {
        c.insert(0, &format!("{i},"));
    }
    // Stop while updates are on their way: after the first is stored (on a busy machine a fixed
    // pause could end before the bridge read any), usually with more still queued.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.metric("collab_bridge_updates_in_total").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "nothing stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.sigterm();
    let (code, _) = c.wait_close().await;
    assert_eq!(code, 1012);
    let status = b
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("bridge exits");
    assert!(status.success(), "{status:?}");
    // Whatever the bridge read before shutting down was stored.
    let stored = pg.text("term").await;
    assert!(!stored.is_empty());
    assert!(c.text().ends_with(&stored), "{stored} vs {}", c.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_reads_writes_and_caches_by_head_sequence() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &[]).await;
    let auth = format!("Bearer {}", writer_token());
    let h = [("authorization", auth.as_str())];
    let r = http(
        b.addr,
        "POST",
        "/api/docs/api%2Fdoc/updates",
        &h,
        &text_update("hello"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["seq"], 1);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Its notification comes back to this bridge: the lag is measured.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.metric("collab_bridge_notify_lag_seconds_count").await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no notification lag measured"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let r = http(b.addr, "GET", "/api/docs/api%2Fdoc", &h, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["name"], "api/doc");
    assert_eq!(v["head_seq"], 1);
    assert_eq!(v["text"], "hello");
    assert_eq!(v["json"]["content"], "hello");
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let h304 = [("authorization", auth.as_str()), ("if-none-match", "\"1\"")];
    let r = http(b.addr, "GET", "/api/docs/api%2Fdoc", &h304, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 304);
    pg.insert_text("api/doc", 5, "!").await;
    let r = http(b.addr, "GET", "/api/docs/api%2Fdoc", &h304, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["text"], "hello!");
    assert_eq!(r.header("etag"), Some("\"2\""));

    let r = http(b.addr, "GET", "/api/docs/api%2Fdoc/state", &h, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let text = content_of(&r.body);
    assert_eq!(text, "hello!");

    let r = http(
        b.addr,
        "POST",
        "/api/docs/api%2Fdoc/updates",
        &h,
        &[1, 2, 3],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "malformed_message");

    let r = http(b.addr, "GET", "/healthz", &[], &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["listener"], true);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = http(b.addr, "GET", "/metrics", &[], &[]).await.unwrap();
    let text = String::from_utf8_lossy(&r.body);
    for m in [
        "collab_bridge_connections ",
        "collab_bridge_open_documents ",
        "collab_bridge_updates_in_total ",
        "collab_bridge_commit_seconds_bucket",
        "collab_bridge_notify_lag_seconds_count",
        "collab_bridge_batch_size_sum",
    ] {
        assert!(text.contains(m), "{m} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_hashed_assets_cache_for_a_year_and_html_never() {
    let pg = Pg::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>demo</h1>").unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/index-AbC123.js"), "console.log(1)").unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let b = Bridge::start(&pg, "a", &["--static-dir", &d]).await;

    for path in ["/", "/d/some%2Fdoc", "/index.html"] {
        let r = http(b.addr, "GET", path, &[], &[]).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(String::from_utf8_lossy(&r.body).contains("demo"), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
    }
    let r = http(b.addr, "GET", "/assets/index-AbC123.js", &[], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    // A missing asset is a 404 (never the page under an immutable name).
    let r = http(b.addr, "GET", "/assets/index-gone.js", &[], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Unknown API paths answer JSON, not the page.
    let r = http(b.addr, "GET", "/api/nope", &[], &[]).await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_api_lists_documents_by_right_and_serves_history_and_old_versions() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &[]).await;
    pg.insert_text("team/plan", 0, "v1").await;
    pg.insert_text("team/plan", 2, " v2").await;
    pg.insert_text("private", 0, "secret").await;
    let team = format!("Bearer {}", token(&[("team/*", "read")]));
    let h = [("authorization", team.as_str())];

    let r = http(b.addr, "GET", "/api/session", &h, &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "tester");
    assert_eq!(r.json()["dev"], false);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = http(b.addr, "GET", "/api/session", &[], &[]).await.unwrap();
    assert_eq!(r.status, 401);

    let r = http(b.addr, "GET", "/api/docs", &h, &[]).await.unwrap();
    assert_eq!(r.status, 200);
    let docs = r.json()["docs"].as_array().unwrap().clone();
    assert_eq!(docs.len(), 1, "only documents the token may read: {docs:?}");
    assert_eq!(docs[0]["name"], "team/plan");
    assert_eq!(docs[0]["head_seq"], 2);
    assert_eq!(docs[0]["access"], "read");
    let r = http(b.addr, "GET", "/api/docs", &[], &[]).await.unwrap();
    assert_eq!(r.status, 401);

    let r = http(b.addr, "GET", "/api/docs/team%2Fplan/history", &h, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["head_seq"], 2);
    assert_eq!(v["versions"][0]["seq_to"], 2);
    assert_eq!(v["versions"][0]["via"], "sql");
    assert_eq!(r.header("etag"), Some("\"2\""));
    let r = http(b.addr, "GET", "/api/docs/private/history", &h, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 403);

    let r = http(b.addr, "GET", "/api/docs/team%2Fplan/state?at=1", &h, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let text = content_of(&r.body);
    assert_eq!(text, "v1", "the document as it was at sequence 1");
    for bad in ["at=3", "at=-1", "at=x"] {
        let r = http(
            b.addr,
            "GET",
            &format!("/api/docs/team%2Fplan/state?{bad}"),
            &h,
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 400, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_sign_in_sets_an_httponly_cookie_that_the_api_accepts_and_sign_out_removes() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "dev", &["--dev"]).await;
    let origin = format!("http://{}", b.addr);
    let r = http(
        b.addr,
        "POST",
        "/api/dev/login",
        &[("origin", &origin), ("content-type", "application/json")],
        br#"{"name": "Ada"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let set = r.header("set-cookie").unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(set.contains("Max-Age=900"), "short-lived: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let r = http(b.addr, "GET", "/api/session", &[("cookie", &cookie)], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "Ada");
    assert_eq!(r.json()["dev"], true);
    let exp = r.json()["expires_at"].as_i64().unwrap();
    assert!(exp > now() && exp <= now() + 900);

    let r = http(
        b.addr,
        "POST",
        "/api/dev/login",
        &[("origin", "http://evil.example")],
        br#"{"name": "Mallory"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403, "a foreign page cannot sign in");
    let r = http(
        b.addr,
        "POST",
        "/api/dev/login",
        &[("origin", &origin)],
        br#"{"name": ""}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);

    let r = http(
        b.addr,
        "POST",
        "/api/dev/logout",
        &[("origin", &origin), ("cookie", &cookie)],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_close_with_1009() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &["--max-message-bytes", "4096"]).await;
    let t = writer_token();
    let big = YClient::connect(&b.ws_url("big"), Some(&t)).await;
    let other = YClient::connect(&b.ws_url("big"), Some(&t)).await;
    big.wait_synced().await;
    other.wait_synced().await;
    big.insert(0, &"x".repeat(10_000));
    let (code, _) = big.wait_close().await;
    assert_eq!(code, 1009);
    assert_eq!(pg.update_rows("big").await.0, 0);
    other.insert(0, "ok");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg.text("big").await != "ok" {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_document_closes_its_connections_with_4410() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &[]).await;
    let t = writer_token();
    let c = YClient::connect(&b.ws_url("gone"), Some(&t)).await;
    c.wait_synced().await;
    pg.insert_text("gone", 0, "soon deleted").await;
    c.wait_text("soon deleted").await;
    let db = pg.client().await;
    db.query_one("SELECT collab.delete_document('gone')", &[])
        .await
        .unwrap();
    let (code, _) = c.wait_close().await;
    assert_eq!(code, 4410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_disconnected() {
    use futures_util::StreamExt;
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &["--send-queue", "32"]).await;
    let t = writer_token();
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        b.ws_url("slow"),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {t}").parse().unwrap());
    // Connected, but never reads a single message.
    let (stalled, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let watcher = YClient::connect(&b.ws_url("slow"), Some(&t)).await;
    watcher.wait_synced().await;
    let kicked = insert_until_a_slow_client_is_closed(&pg, &b, "slow").await;
    assert!(kicked, "the stalled client was never disconnected");
    // The reading client is still connected and up to date.
    assert_caught_up_and_open(&pg, &watcher, "slow").await;
    drop(stalled.split());
}
