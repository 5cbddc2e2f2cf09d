//! The hostile corpus (tests/support/hostile.rs) through the bridge: each case as a y-websocket
//! sync step 2 message and as `POST /api/docs/{doc}/updates`, then `GET /api/docs/{doc}` (the
//! read that crashed PostgreSQL in issue 9). The bridge answers every request, stays healthy,
//! a PostgreSQL session opened before the suite is still alive, and the server log has no
//! "terminated by signal".
#![allow(clippy::unwrap_used)]

mod common;

#[path = "../../tests/support/hostile.rs"]
#[allow(dead_code)]
mod hostile;

use std::time::Duration;

use common::*;

/// A y-websocket sync step 2 frame carrying `update`.
fn sync_step2(update: &[u8]) -> Vec<u8> {
    let mut frame = vec![0, 1];
    hostile::var(&mut frame, update.len() as u64);
    frame.extend_from_slice(update);
    frame
}

fn path_of(doc: &str) -> String {
    doc.replace('/', "%2F")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_updates_through_websocket_and_http_crash_nothing() {
    let pg = Pg::start();
    let sentinel = pg.client().await;
    let b = Bridge::start(&pg, "a", &[]).await;
    let t = writer_token();
    let auth = format!("Bearer {t}");
    let h = [("authorization", auth.as_str())];
    let mut docs = Vec::new();
    for (i, case) in hostile::corpus().into_iter().enumerate() {
        // Over WebSocket: one connection per case (a refused update closes it), each as a
        // subject of its own: a refusal turns the refused subject's next connections away for
        // a while (it costs the sender), which would refuse the next case.
        let ws_doc = format!("ws/{}", case.name);
        let attacker = token_for(&format!("attacker-{i}"), serde_json::json!({}));
        let c = YClient::connect(&b.ws_url(&ws_doc), Some(&attacker)).await;
        c.wait_synced().await;
        for u in &case.updates {
            c.send_raw(sync_step2(u));
        }
        // Over HTTP: every request gets an answer, whatever it is.
        let http_doc = format!("http/{}", case.name);
        for u in &case.updates {
            let r = http(
                b.addr,
                "POST",
                &format!("/api/docs/{}/updates", path_of(&http_doc)),
                &h,
                u,
            )
            .await
            .unwrap_or_else(|e| panic!("{}: POST got no answer: {e}", case.name));
            assert!(
                r.status == 200 || (400..500).contains(&r.status),
                "{}: POST {} {}",
                case.name,
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        docs.push(ws_doc);
        docs.push(http_doc);
        c.close();
    }
    // Whatever was stored reads back through the bridge.
    for doc in &docs {
        let r = http(
            b.addr,
            "GET",
            &format!("/api/docs/{}", path_of(doc)),
            &h,
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{doc}: GET got no answer: {e}"));
        assert!(
            r.status == 200 || r.status == 404,
            "{doc}: GET {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    // An honest document written over WebSocket after all that, by someone else.
    let honest = token_for("honest", serde_json::json!({}));
    let c = YClient::connect(&b.ws_url("after"), Some(&honest)).await;
    c.wait_synced().await;
    c.insert(0, "still serving");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg.text("after").await != "still serving" {
        assert!(
            std::time::Instant::now() < deadline,
            "bridge stopped writing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http(b.addr, "GET", "/healthz", &[], &[]).await.unwrap();
    assert_eq!(r.status, 200);
    let one: i32 = sentinel
        .query_one("SELECT 1", &[])
        .await
        .expect("the sentinel session survived: no backend crashed")
        .get(0);
    assert_eq!(one, 1);
    let log = pg.log();
    assert!(!log.contains("terminated by signal"), "{log}");
}
