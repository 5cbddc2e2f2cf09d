//! TLS from the bridge to PostgreSQL: with `sslmode=verify-full` and the test CA both the pooled
//! connections and the LISTEN connection are encrypted; `require` encrypts without a CA; a CA
//! that did not sign the server's certificate stops the bridge at startup with a clear message;
//! a client certificate (`sslcert`/`sslkey`) logs in where the server requires one.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn url(pg: &Pg, host: &str, sslmode: &str) -> String {
    format!(
        "postgres://postgres@{host}:{}/postgres?sslmode={sslmode}",
        pg.port
    )
}

/// (application_name, ssl) of every backend of the bridge `id` (pool and listener).
async fn bridge_backends(pg: &Pg, id: &str) -> Vec<(String, bool)> {
    let c = pg.client().await;
    c.query(
        "SELECT a.application_name, s.ssl FROM pg_stat_activity a \
         JOIN pg_stat_ssl s ON s.pid = a.pid \
         WHERE a.application_name LIKE 'collab-bridge%' AND a.application_name LIKE '% ' || $1 \
         ORDER BY 1",
        &[&id],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

async fn assert_encrypted(pg: &Pg, id: &str) {
    let rows = bridge_backends(pg, id).await;
    assert!(
        rows.iter()
            .any(|(app, _)| app == &format!("collab-bridge {id}")),
        "no pooled connection of bridge {id}: {rows:?}"
    );
    assert!(
        rows.iter()
            .any(|(app, _)| app == &format!("collab-bridge-listener {id}")),
        "no listener connection of bridge {id}: {rows:?}"
    );
    assert!(
        rows.iter().all(|(_, ssl)| *ssl),
        "unencrypted connection of bridge {id}: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_encrypts_the_pool_and_the_listener() {
    let pg = Pg::start();
    let certs = TestCerts::generate("pg_collab test CA");
    pg.enable_ssl(&certs.server_cert_pem, &certs.server_key_pem);
    let files = tempfile::tempdir().unwrap();
    let ca = files.path().join("ca.crt");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let ca = ca.to_str().unwrap();

    let mut b = Bridge::spawn_with_url(
        &url(&pg, "127.0.0.1", "verify-full"),
        "tls",
        &["--database-ca-file", ca],
    )
    .await
    .unwrap();
    b.wait_healthy().await;

    // A real edit: stored through the pool, delivered to the other client through LISTEN.
    let t = writer_token();
    let c1 = YClient::connect(&b.ws_url("tls-doc"), Some(&t)).await;
    let c2 = YClient::connect(&b.ws_url("tls-doc"), Some(&t)).await;
    c1.wait_synced().await;
    c2.wait_synced().await;
    c1.insert(0, "over TLS");
    c2.wait_text("over TLS").await;
    // c2 got it from a notification, which is sent at commit.
    assert_eq!(pg.text("tls-doc").await, "over TLS");
    // An SQL edit reaches the clients through the (encrypted) LISTEN connection.
    pg.insert_text("tls-doc", 8, "!").await;
    c1.wait_text("over TLS!").await;
    assert_encrypted(&pg, "tls").await;

    // The host name `localhost` is in the certificate too; the CA can also come from the URL.
    let mut by_name = Bridge::spawn_with_url(
        &format!("{}&sslrootcert={ca}", url(&pg, "localhost", "verify-full")),
        "tls-name",
        &[],
    )
    .await
    .unwrap();
    by_name.wait_healthy().await;
    assert_encrypted(&pg, "tls-name").await;

    // require without a CA: encrypted, certificate not checked (libpq semantics).
    let mut req = Bridge::spawn_with_url(&url(&pg, "127.0.0.1", "require"), "tls-req", &[])
        .await
        .unwrap();
    req.wait_healthy().await;
    let c3 = YClient::connect(&req.ws_url("tls-doc"), Some(&t)).await;
    c3.wait_synced().await;
    c3.wait_text("over TLS!").await;
    assert_encrypted(&pg, "tls-req").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_stops_the_bridge_at_startup() {
    let pg = Pg::start();
    let certs = TestCerts::generate("pg_collab test CA");
    pg.enable_ssl(&certs.server_cert_pem, &certs.server_key_pem);
    let other = TestCerts::generate("some other CA");
    let files = tempfile::tempdir().unwrap();
    let wrong_ca = files.path().join("wrong-ca.crt");
    std::fs::write(&wrong_ca, &other.ca_pem).unwrap();

    let err = Bridge::spawn_with_url(
        &url(&pg, "127.0.0.1", "verify-full"),
        "tls-wrong",
        &["--database-ca-file", wrong_ca.to_str().unwrap()],
    )
    .await
    .err()
    .expect("a bridge with the wrong CA must not start");
    assert!(err.starts_with("exited with"), "{err}");
    assert!(!err.contains("exit status: 0"), "{err}");
    assert!(
        err.contains("sslmode=verify-full") && err.contains("invalid peer certificate"),
        "unclear error: {err}"
    );

    // verify-ca checks the chain the same way.
    let err = Bridge::spawn_with_url(
        &url(&pg, "127.0.0.1", "verify-ca"),
        "tls-wrong-ca",
        &["--database-ca-file", wrong_ca.to_str().unwrap()],
    )
    .await
    .err()
    .expect("verify-ca with the wrong CA must not start");
    assert!(err.contains("invalid peer certificate"), "{err}");

    // A CA file that is not a certificate is refused before any connection.
    let junk = files.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = Bridge::spawn_with_url(
        &url(&pg, "127.0.0.1", "verify-full"),
        "tls-junk",
        &["--database-ca-file", junk.to_str().unwrap()],
    )
    .await
    .err()
    .expect("a junk CA file must be refused");
    assert!(err.contains("holds no PEM certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_server_without_tls_fails_clearly() {
    let pg = Pg::start();
    let err = Bridge::spawn_with_url(&url(&pg, "127.0.0.1", "require"), "no-tls", &[])
        .await
        .err()
        .expect("sslmode=require without TLS on the server must not start");
    assert!(err.contains("server does not support TLS"), "{err}");
    // prefer (the default) still connects without TLS.
    let mut b = Bridge::spawn_with_url(&url(&pg, "127.0.0.1", "prefer"), "plain", &[])
        .await
        .unwrap();
    b.wait_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let pg = Pg::start();
    // Signed by the right CA, but for another name than the one the bridge connects to.
    let certs = TestCerts::for_names("pg_collab test CA", &["db.example.internal"]);
    pg.enable_ssl(&certs.server_cert_pem, &certs.server_key_pem);
    let files = tempfile::tempdir().unwrap();
    let ca = files.path().join("ca.crt");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let ca = ca.to_str().unwrap();

    let err = Bridge::spawn_with_url(
        &url(&pg, "127.0.0.1", "verify-full"),
        "tls-name",
        &["--database-ca-file", ca],
    )
    .await
    .err()
    .expect("verify-full must refuse a certificate for another host");
    assert!(err.contains("not valid for name"), "{err}");

    let mut b = Bridge::spawn_with_url(
        &url(&pg, "127.0.0.1", "verify-ca"),
        "tls-ca",
        &["--database-ca-file", ca],
    )
    .await
    .unwrap();
    b.wait_healthy().await;
    assert_encrypted(&pg, "tls-ca").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_the_bridge_in_where_the_server_requires_one() {
    let pg = Pg::start();
    let certs = TestCerts::generate("pg_collab test CA");
    pg.enable_ssl(&certs.server_cert_pem, &certs.server_key_pem);
    pg.require_client_cert(&certs.ca_pem);
    let files = tempfile::tempdir().unwrap();
    let path = |name: &str, pem: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (ca, cert, key) = (
        path("ca.crt", &certs.ca_pem),
        path("client.crt", &certs.client_cert_pem),
        path("client.key", &certs.client_key_pem),
    );
    let base = format!(
        "postgres://{CLIENT_USER}@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
        pg.port
    );

    // Without a certificate the server turns the bridge away, and it says why at startup.
    let err = Bridge::spawn_with_url(&base, "no-cert", &[])
        .await
        .err()
        .expect("no client certificate: no connection");
    assert!(
        err.contains("refused the bridge's login") && err.contains("valid client certificate"),
        "unclear error: {err}"
    );

    // With it: logged in as the certificate's user, pool and listener both, and it works.
    let mut b = Bridge::spawn_with_url(&format!("{base}&sslcert={cert}&sslkey={key}"), "cert", &[])
        .await
        .unwrap();
    b.wait_healthy().await;
    let t = writer_token();
    let c1 = YClient::connect(&b.ws_url("cert-doc"), Some(&t)).await;
    let c2 = YClient::connect(&b.ws_url("cert-doc"), Some(&t)).await;
    c1.wait_synced().await;
    c2.wait_synced().await;
    c1.insert(0, "signed in by certificate");
    c2.wait_text("signed in by certificate").await;
    assert_eq!(pg.text("cert-doc").await, "signed in by certificate");
    assert_encrypted(&pg, "cert").await;
    let users: Vec<String> = pg
        .client()
        .await
        .query(
            "SELECT DISTINCT usename::text FROM pg_stat_activity \
             WHERE application_name LIKE 'collab-bridge% cert'",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(users, vec![CLIENT_USER.to_string()]);
}
