//! Documents sharded with PL/Proxy (scripts/shards.sh: two pg_collab shards and a proxy): one
//! bridge with `--shard-url` per shard serves stock clients on documents of both shards, SQL
//! edits made through the proxy reach them live, each document is stored on the shard the
//! shared hash picks, and a stopped shard takes down only its own documents.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use collab_bridge::shards::{shard_hash, shard_of};
use common::ha::connect;
use common::shards::Sharded;
use common::*;

/// The first name `room-<i>` that lives on shard `shard` of `n`.
fn doc_on(shard: usize, n: usize) -> String {
    (0..)
        .map(|i| format!("room-{i}"))
        .find(|d| shard_of(d, n) == shard)
        .unwrap()
}

async fn proxy_insert(url: &str, doc: &str, text: &str) {
    let c = connect(url).await.unwrap();
    c.query_one(
        "SELECT collab.insert_text($1, 'content', 0, $2)",
        &[&doc, &text],
    )
    .await
    .unwrap();
}

/// Median of how long `n` SQL edits through the proxy took from the call to the client on
/// `doc` (the client starts its clock when told to wait, just before the call).
async fn sql_to_client_ms(node: &mut Script, proxy: &str, doc: &str, tag: &str) -> u64 {
    let c = connect(proxy).await.unwrap();
    let mut ms = Vec::new();
    for i in 0..5 {
        let token = format!("{tag}{i};");
        node.tell(&format!("wait {doc} {token}")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.query_one(
            "SELECT collab.insert_text($1, 'content', 0, $2)",
            &[&doc, &token],
        )
        .await
        .unwrap();
        ms.push(
            node.step("seen").await["ms"]
                .as_u64()
                .unwrap()
                .saturating_sub(20),
        );
    }
    ms.sort_unstable();
    ms[ms.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bridge_serves_two_shards_and_a_lost_shard_takes_only_its_documents() {
    let sh = Sharded::start(2);
    let proxy = sh.proxy_url();

    // The bridge and the proxy pick the same shard for every name.
    let db = connect(&proxy).await.unwrap();
    let names: Vec<String> = (0..500).map(|i| format!("doc/{i}/é")).collect();
    let hashes: Vec<i32> = db
        .query(
            "SELECT collab.shard_hash(n) FROM unnest($1::text[]) n",
            &[&names],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ours: Vec<i32> = names.iter().map(|n| shard_hash(n)).collect();
    assert_eq!(hashes, ours, "collab.shard_hash and the bridge agree");

    let (d0, d1) = (doc_on(0, 2), doc_on(1, 2));
    let mut extra: Vec<&str> = sh.bridge_args.iter().map(String::as_str).collect();
    extra.push("--allow-query-token");
    let mut bridge = Bridge::spawn_with_url(&sh.shard_url(0), "sharded", &extra)
        .await
        .unwrap();
    bridge.wait_healthy().await;
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/js");
    let mut node = Script::start(
        &js.join("rooms.mjs"),
        &[
            bridge.ws_url("").trim_end_matches('/').to_string(),
            writer_token(),
            d0.clone(),
            d1.clone(),
        ],
        &js.join("node_modules/y-websocket"),
    );
    node.step("synced").await;

    // SQL through the proxy reaches the clients of both shards live.
    for (doc, token) in [(&d0, "sql-zero;"), (&d1, "sql-one;")] {
        proxy_insert(&proxy, doc, token).await;
        node.tell(&format!("wait {doc} {token}")).await;
        node.step("seen").await;
    }
    // Typing is stored on the owning shard, and only there.
    node.tell(&format!("type {d0} typed-zero;")).await;
    node.step("typed").await;
    node.tell(&format!("type {d1} typed-one;")).await;
    node.step("typed").await;
    for (i, doc, other) in [(0, &d0, &d1), (1, &d1, &d0)] {
        let shard = connect(&sh.shard_url(i)).await.unwrap();
        let mut text = String::new();
        for _ in 0..200 {
            text = shard
                .query_one("SELECT collab.text($1)", &[doc])
                .await
                .unwrap()
                .get(0);
            if text.contains("typed-") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            text.contains("sql-") && text.contains("typed-"),
            "{doc} on shard {i}: {text}"
        );
        let elsewhere: i64 = shard
            .query_one(
                "SELECT count(*) FROM collab.list_documents(1000) WHERE name = $1",
                &[other],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(elsewhere, 0, "{other} is not on shard {i}");
    }
    // The document list gathers both shards, through the bridge and through the proxy.
    let list = http(
        bridge.addr,
        "GET",
        &format!("/api/docs?token={}", writer_token()),
        &[],
        &[],
    )
    .await
    .unwrap()
    .json();
    let listed: Vec<&str> = list["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&d0.as_str()) && listed.contains(&d1.as_str()),
        "{listed:?}"
    );
    let via_proxy: i64 = db
        .query_one(
            "SELECT count(*) FROM collab.list_documents() WHERE name IN ($1, $2)",
            &[&d0, &d1],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(via_proxy, 2);
    // Search gathers both shards too (SQL writes are indexed at commit), through the proxy and
    // through the bridge.
    let found: Vec<String> = db
        .query("SELECT name FROM collab.search('sql') ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .filter(|n: &String| *n == d0 || *n == d1)
        .collect();
    assert_eq!(found.len(), 2, "search through the proxy: {found:?}");
    let hits = http(
        bridge.addr,
        "GET",
        &format!("/api/search?q=sql&token={}", writer_token()),
        &[],
        &[],
    )
    .await
    .unwrap()
    .json();
    let hit_names: Vec<&str> = hits["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(
        hit_names.contains(&d0.as_str()) && hit_names.contains(&d1.as_str()),
        "search through the bridge: {hit_names:?}"
    );

    let before = sql_to_client_ms(&mut node, &proxy, &d0, "before-").await;

    // Shard 1 is lost: its documents fail, shard 0's go on as before.
    sh.stop_shard(1);
    let err = connect(&proxy)
        .await
        .unwrap()
        .query_one("SELECT collab.text($1)", &[&d1])
        .await;
    assert!(
        err.is_err(),
        "shard 1's document is unavailable through the proxy"
    );
    let after = sql_to_client_ms(&mut node, &proxy, &d0, "after-").await;
    node.tell(&format!("type {d0} still-typing;")).await;
    node.step("typed").await;
    let shard0 = connect(&sh.shard_url(0)).await.unwrap();
    let mut stored = String::new();
    for _ in 0..200 {
        stored = shard0
            .query_one("SELECT collab.text($1)", &[&d0])
            .await
            .unwrap()
            .get(0);
        if stored.contains("still-typing;") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stored.contains("still-typing;"),
        "shard 0 still stores typing: {stored}"
    );
    let list = http(
        bridge.addr,
        "GET",
        &format!("/api/docs?token={}", writer_token()),
        &[],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(list.status, 200, "the list answers without shard 1");
    let names: Vec<String> = list.json()["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&d0) && !names.contains(&d1), "{names:?}");
    // The bridge says a shard is missing: the gauge is down and /healthz answers 503.
    let mut down = false;
    for _ in 0..100 {
        if bridge.metric("collab_bridge_listener_up").await == 0.0 {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "collab_bridge_listener_up is 0 while shard 1 is down");
    let health = http(bridge.addr, "GET", "/healthz", &[], &[])
        .await
        .unwrap();
    assert_eq!(health.status, 503);
    println!(
        "SQL edit through the proxy to a client on shard 0, median of 5: {before} ms with both \
         shards up, {after} ms with shard 1 down"
    );
    node.finish().await;
}
