//! Documents as data through the bridge: every update recorded under its token's subject (the
//! history API and "who wrote this"), restoring a version over HTTP while another client
//! edits, and search that only shows what the token may read.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, Text, Transact, Update};

/// A token for subject `sub` with rights `docs` (pattern → "read" | "write").
fn token_for(sub: &str, docs: &[(&str, &str)]) -> String {
    let docs: serde_json::Map<String, serde_json::Value> = docs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let claims = json!({
        "sub": sub, "exp": now() + 3600, "iat": now(), "iss": ISSUER, "aud": AUDIENCE,
        "docs": docs,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn get(b: &Bridge, path: &str, token: &str) -> HttpResponse {
    let auth = format!("Bearer {token}");
    http(b.addr, "GET", path, &[("authorization", &auth)], &[])
        .await
        .unwrap()
}

async fn wait_db_text(pg: &Pg, doc: &str, expected: &str) {
    for _ in 0..200 {
        if pg.text(doc).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{doc} never read {expected:?}: {:?}", pg.text(doc).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_recorded_under_their_token_subject_and_reported_per_version_and_span() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &[]).await;
    let ada = YClient::connect(
        &b.ws_url("story"),
        Some(&token_for("ada", &[("*", "write")])),
    )
    .await;
    ada.wait_synced().await;
    ada.insert(0, "Hello world");
    wait_db_text(&pg, "story", "Hello world").await;
    let grace_token = token_for("grace", &[("story", "write")]);
    let grace = YClient::connect(&b.ws_url("story"), Some(&grace_token)).await;
    grace.wait_text("Hello world").await;
    grace.insert(5, ", dear");
    wait_db_text(&pg, "story", "Hello, dear world").await;
    // And one SQL edit, under the SQL role (the tests' superuser).
    pg.insert_text("story", 17, "!").await;

    let db = pg.client().await;
    let authors: Vec<String> = db
        .query(
            "SELECT DISTINCT author FROM collab.history('story') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(authors, ["ada", "grace", "postgres"]);

    let r = get(&b, "/api/docs/story/authors", &grace_token).await;
    assert_eq!(r.status, 200);
    let spans: Vec<(String, String)> = r.json()["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["text"].as_str().unwrap().to_string(),
                s["author"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        spans,
        [
            ("Hello".to_string(), "ada".to_string()),
            (", dear".into(), "grace".into()),
            (" world".into(), "ada".into()),
            ("!".into(), "postgres".into()),
        ]
    );

    let r = get(&b, "/api/docs/story/history", &grace_token).await;
    assert_eq!(r.status, 200);
    let mut seen: Vec<String> = r.json()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["authors"].as_array().unwrap().clone())
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["ada", "grace", "postgres"]);

    // A token without the read right learns nothing.
    let other = token_for("eve", &[("elsewhere", "write")]);
    assert_eq!(get(&b, "/api/docs/story/authors", &other).await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_over_http_merges_with_a_concurrent_edit_and_both_clients_converge() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &[]).await;
    let writer = token_for("ada", &[("*", "write")]);
    let ada = YClient::connect(&b.ws_url("plan"), Some(&writer)).await;
    ada.wait_synced().await;
    ada.insert(0, "one two three");
    wait_db_text(&pg, "plan", "one two three").await;
    let version: i64 = pg
        .client()
        .await
        .query_one("SELECT head_seq FROM collab.document_info('plan')", &[])
        .await
        .unwrap()
        .get(0);
    ada.insert(13, " four five");
    wait_db_text(&pg, "plan", "one two three four five").await;

    let grace = YClient::connect(
        &b.ws_url("plan"),
        Some(&token_for("grace", &[("plan", "write")])),
    )
    .await;
    grace.wait_text("one two three four five").await;
    // Someone types in the unchanged part on the state before the restore: an edit the restore
    // cannot have seen (made concurrently), arriving once the restore is stored.
    let concurrent = {
        let peer = Doc::new();
        let text = peer.get_or_insert_text("content");
        let state = grace
            .doc
            .transact()
            .encode_state_as_update_v1(&Default::default());
        peer.transact_mut()
            .apply_update(Update::decode_v1(&state).unwrap())
            .unwrap();
        let mut txn = peer.transact_mut();
        text.insert(&mut txn, 3, " and a half");
        txn.encode_update_v1()
    };

    let auth = format!("Bearer {}", token_for("grace", &[("plan", "write")]));
    let path = format!("/api/docs/plan/restore?seq={version}");
    let r = http(b.addr, "POST", &path, &[("authorization", &auth)], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Sent by a third connection (its own view is not checked), so both pages receive it.
    let carol = YClient::connect(
        &b.ws_url("plan"),
        Some(&token_for("carol", &[("plan", "write")])),
    )
    .await;
    carol.wait_synced().await;
    carol.send_raw(Message::Sync(SyncMessage::Update(concurrent)).encode_v1());

    let expected = "one and a half two three";
    wait_db_text(&pg, "plan", expected).await;
    ada.wait_text(expected).await;
    grace.wait_text(expected).await;
    // Later typing goes on from the restored text.
    ada.insert(0, "Zero, ");
    let expected = "Zero, one and a half two three";
    wait_db_text(&pg, "plan", expected).await;
    grace.wait_text(expected).await;

    // The restore is a version of its own, by grace.
    let row = pg
        .client()
        .await
        .query_one(
            "SELECT author, origin FROM collab.history('plan') WHERE origin LIKE 'restore%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "grace");
    assert_eq!(row.get::<_, String>(1), format!("restore {version}"));

    // A read-only token may not restore; a version past the head is refused.
    let reader = format!("Bearer {}", token_for("bob", &[("plan", "read")]));
    let r = http(b.addr, "POST", &path, &[("authorization", &reader)], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let r = http(
        b.addr,
        "POST",
        "/api/docs/plan/restore?seq=999",
        &[("authorization", &auth)],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_over_http_finds_only_documents_the_token_may_read() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "a", &[]).await;
    pg.insert_text("team/cats", 0, "Cats purr and cats sleep")
        .await;
    pg.insert_text("team/dogs", 0, "Dogs chase cats").await;
    pg.insert_text("private/cats", 0, "Secret cats").await;

    let team = token_for("bob", &[("team/*", "read")]);
    let r = get(&b, "/api/search?q=cats", &team).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    let names: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["team/cats", "team/dogs"],
        "best first, private left out"
    );
    assert!(body["results"][0]["snippet"]
        .as_str()
        .unwrap()
        .contains("<mark>Cats</mark>"));

    // Kept current: a document changed after indexing is found by its new words.
    pg.insert_text("team/dogs", 0, "Wolves. ").await;
    let r = get(&b, "/api/search?q=wolves", &team).await;
    assert_eq!(r.json()["results"][0]["name"], "team/dogs");

    let all = token_for("admin", &[("*", "read")]);
    let r = get(&b, "/api/search?q=secret", &all).await;
    assert_eq!(r.json()["results"][0]["name"], "private/cats");
    let r = get(&b, "/api/search?q=secret", &team).await;
    assert_eq!(r.json()["results"].as_array().unwrap().len(), 0);

    assert_eq!(
        get(&b, "/api/search?q=x&lang=klingon", &team).await.status,
        400
    );
    assert_eq!(get(&b, "/api/search?q=x&limit=0", &team).await.status, 400);
    assert_eq!(get(&b, "/api/search", &team).await.status, 400);
    let r = http(b.addr, "GET", "/api/search?q=cats", &[], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 401);
}
