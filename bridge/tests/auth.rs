//! Access control against a real bridge: token checks, Origin allow-list, read-only tokens,
//! token expiry during a connection, development mode.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_foreign_origins_are_closed_with_4001_and_4003() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &["--allowed-origins", "https://app.example"]).await;
    let url = b.ws_url("secret-doc");
    let good = token(&[("secret-*", "write")]);
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("no token", None, 4001),
        (
            "forged signature",
            Some(token_with(
                "another secret that is also long enough!!",
                &[("*", "write")],
                3600,
                ISSUER,
                AUDIENCE,
            )),
            4001,
        ),
        (
            "expired",
            Some(token_with(
                SECRET,
                &[("*", "write")],
                -3600,
                ISSUER,
                AUDIENCE,
            )),
            4001,
        ),
        ("alg none", Some(alg_none_token()), 4001),
        (
            "wrong audience",
            Some(token_with(
                SECRET,
                &[("*", "write")],
                3600,
                ISSUER,
                "someone-else",
            )),
            4001,
        ),
        (
            "wrong issuer",
            Some(token_with(
                SECRET,
                &[("*", "write")],
                3600,
                "mallory",
                AUDIENCE,
            )),
            4001,
        ),
        ("garbage", Some("not.a.jwt".into()), 4001),
        (
            "no right on the doc",
            Some(token(&[("other", "write")])),
            4003,
        ),
        ("good", Some(good.clone()), 101),
    ];
    // Refusals come after the upgrade, as close codes: a stock client sees 4001/4003 (and can
    // stop or sign in again), not an HTTP error it can only report as 1006 and retry forever.
    for (what, tok, expected) in cases {
        let got = ws_outcome_token(&url, tok.as_deref(), None).await;
        assert_eq!(got, expected, "{what}");
    }
    // Origins: listed one accepted, foreign one refused even with a good token.
    let got = ws_outcome_token(&url, Some(&good), Some("https://app.example")).await;
    assert_eq!(got, 101, "allowed origin");
    let got = ws_outcome_token(&url, Some(&good), Some("https://evil.example")).await;
    assert_eq!(got, 4003, "foreign origin");
    let same = format!("http://{}", b.addr);
    let got = ws_outcome_token(&url, Some(&good), Some(&same)).await;
    assert_eq!(got, 101, "same origin");
    // ?token= is off unless enabled.
    let got = ws_outcome_token(&format!("{url}?token={good}"), None, None).await;
    assert_eq!(got, 4001, "query token disabled by default");
    // The cookie works.
    let got = ws_outcome(&url, Some(("cookie", format!("collab_token={good}"))), None).await;
    assert_eq!(got, 101, "cookie");
    // HTTP answers with the JSON error shape.
    let r = http(b.addr, "GET", "/api/docs/secret-doc", &[], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthenticated");
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_token_works_when_enabled() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &["--allow-query-token"]).await;
    let t = writer_token();
    let c = YClient::connect(&format!("{}?token={t}", b.ws_url("q")), None).await;
    c.wait_synced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_tokens_cannot_write() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &[]).await;
    let reader = YClient::connect(&b.ws_url("ro/doc"), Some(&token(&[("ro/*", "read")]))).await;
    reader.wait_synced().await;
    reader.insert(0, "sneaky");
    wait_for("permission denied", Duration::from_secs(10), || {
        !reader.log.lock().unwrap().denied.is_empty()
    })
    .await;
    assert!(reader.log.lock().unwrap().denied[0].contains("read-only"));
    assert_eq!(pg.update_rows("ro/doc").await.0, 0, "nothing stored");
    // Still connected, still receiving.
    pg.insert_text("ro/doc", 0, "server").await;
    wait_for("server edit", Duration::from_secs(10), || {
        reader.text().contains("server")
    })
    .await;
    assert!(!pg.text("ro/doc").await.contains("sneaky"));
    // Over HTTP too.
    let r = http(
        b.addr,
        "POST",
        "/api/docs/ro%2Fdoc/updates",
        &[(
            "authorization",
            &format!("Bearer {}", token(&[("ro/*", "read")])),
        )],
        &text_update("x"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_closes_its_connection_with_4001_after_the_leeway() {
    let pg = Pg::start();
    // The connection lives until exp + leeway, as a fresh connection would be accepted.
    let b = Bridge::start(&pg, "a", &["--jwt-leeway-secs", "1"]).await;
    let t = token_with(SECRET, &[("*", "write")], 2, ISSUER, AUDIENCE);
    let c = YClient::connect(&b.ws_url("exp"), Some(&t)).await;
    c.wait_synced().await;
    let (code, reason) = c.wait_close().await;
    assert_eq!(code, 4001);
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_logs_in_with_a_cookie_and_only_on_loopback() {
    let pg = Pg::start();
    let refused = Bridge::spawn(&pg, "x", &["--dev", "--listen", "0.0.0.0:0"]).await;
    match refused {
        Err(stderr) => assert!(stderr.contains("loopback"), "{stderr}"),
        Ok(_) => panic!("--dev on 0.0.0.0 must be refused"),
    }
    let b = Bridge::start(&pg, "d", &["--dev"]).await;
    let r = http(
        b.addr,
        "POST",
        "/api/dev/login",
        &[("content-type", "application/json")],
        br#"{"name": "Ada"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let c = YClient::connect_headers(&b.ws_url("devdoc"), Some(("cookie", pair)), None)
        .await
        .unwrap();
    c.wait_synced().await;
    c.insert(0, "hi");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg.text("devdoc").await != "hi" {
        assert!(std::time::Instant::now() < deadline, "dev write not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_public_key_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("key.pem");
    let public = dir.path().join("pub.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&private)
        .status()
        .unwrap()
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl could not make a key pair");
    let pg = Pg::start();
    let public_path = public.to_str().unwrap().to_string();
    // Bridge::start adds --jwt-secret unless --dev is given: spawn by hand with the key instead.
    let b = Bridge::start_with_key(&pg, "k", &public_path).await;
    let claims = serde_json::json!({
        "sub": "ed", "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE, "docs": {"*": "write"}
    });
    let pem = std::fs::read(&private).unwrap();
    let signed = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap(),
    )
    .unwrap();
    let c = YClient::connect(&b.ws_url("ed"), Some(&signed)).await;
    c.wait_synced().await;
    // Algorithm confusion: an HS256 token keyed with the public key's bytes is refused.
    let public_pem = std::fs::read(&public).unwrap();
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let got = ws_outcome_token(&b.ws_url("ed"), Some(&confused), None).await;
    assert_eq!(got, 4001, "HS256 token accepted by an EdDSA bridge");
}
