//! Test support: a throwaway PostgreSQL cluster with pg_collab installed (initdb into a temp
//! dir, a free port, stopped and deleted on drop), and a Yjs peer made with yrs.
//!
//! The extension must be installed into the system PostgreSQL (scripts/setup.sh does it).

pub mod hostile;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use tokio_postgres::{Client, NoTls};
use yrs::updates::decoder::Decode;
use yrs::{GetString, Text, Transact};

/// The PostgreSQL installation the tests run: `COLLAB_PG_CONFIG` (as in scripts/lib.sh), else
/// Debian's PostgreSQL 15.
pub fn pg_config() -> String {
    std::env::var("COLLAB_PG_CONFIG")
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".to_string())
}

/// Directory of that installation's programs (initdb, pg_ctl, psql).
pub fn pg_bin() -> String {
    let out = Command::new(pg_config())
        .arg("--bindir")
        .output()
        .expect("pg_config runs");
    assert!(out.status.success(), "pg_config --bindir failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool as the cluster owner (`postgres` when we are root: initdb refuses root).
fn pg_command(tool: &str) -> Command {
    let path = format!("{}/{tool}", pg_bin());
    if is_root() {
        let mut c = Command::new("sudo");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Cluster {
    /// initdb + start + `CREATE EXTENSION pg_collab`.
    pub fn start() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("pg_collab-test-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres", &dir.path().to_string_lossy()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown of the cluster dir to postgres");
        }
        let data = dir.path().join("data");
        let status = pg_command("initdb")
            .args([
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
            ])
            .args(["-E", "UTF8", "--locale=C.UTF-8"])
            .stdout(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        let status = pg_command("pg_ctl")
            .args(["-D", &data.to_string_lossy(), "-w", "-o", &opts])
            .args(["-l", &dir.path().join("log").to_string_lossy(), "start"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl start failed");
        let cluster = Cluster { dir, port };
        let out = Command::new(format!("{}/psql", pg_bin()))
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-c", "CREATE EXTENSION pg_collab"])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "CREATE EXTENSION failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    pub async fn connect(&self) -> Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), NoTls)
            .await
            .expect("connects");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// URL of database `db` as `user`.
    pub fn url_as(&self, user: &str, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} dbname={db}", self.port)
    }

    pub async fn connect_as(&self, user: &str, db: &str) -> Client {
        let (client, conn) = tokio_postgres::connect(&self.url_as(user, db), NoTls)
            .await
            .expect("connects");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// A client program of the installation (psql, pg_dump, pg_restore) aimed at this cluster
    /// as the superuser.
    pub fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(format!("{}/{name}", pg_bin()));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ]);
        c
    }

    /// Runs `sql` with psql in database `db` (stopping at the first error); returns stdout.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .tool("psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql -c {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .args([
                "-D",
                &self.data_dir().to_string_lossy(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A Yjs peer editing the `content` text, like a browser tab.
pub struct Peer {
    pub doc: yrs::Doc,
}

impl Peer {
    pub fn new(client: u64) -> Peer {
        Peer {
            doc: yrs::Doc::with_options(yrs::Options {
                client_id: yrs::block::ClientID::new(client),
                offset_kind: yrs::OffsetKind::Utf16,
                ..Default::default()
            }),
        }
    }

    pub fn insert(&self, at: u32, s: &str) -> Vec<u8> {
        let text = self.doc.get_or_insert_text("content");
        let mut txn = self.doc.transact_mut();
        text.insert(&mut txn, at, s);
        txn.encode_update_v1()
    }

    pub fn receive(&self, update: &[u8]) {
        let u = yrs::Update::decode_v1(update).expect("decodes");
        self.doc.transact_mut().apply_update(u).expect("applies");
    }

    pub fn text(&self) -> String {
        let text = self.doc.get_or_insert_text("content");
        let txn = self.doc.transact();
        text.get_string(&txn)
    }
}

/// The notification keys of a database (id, key), as a bridge fetches them.
pub async fn notification_keys(db: &Client) -> Vec<(i32, Vec<u8>)> {
    db.query("SELECT id, key FROM collab.notification_keys()", &[])
        .await
        .expect("keys")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Opens a sealed notification payload (`v1.<key id>.<base64url(nonce || ciphertext)>`) into
/// its JSON header, with the raw bytes after the NUL put back as base64 under `update`
/// (updates) or `payload` (broadcasts). None if it does not open with any of `keys`.
pub fn open_payload(keys: &[(i32, Vec<u8>)], payload: &str) -> Option<serde_json::Value> {
    let mut parts = payload.splitn(3, '.');
    if parts.next()? != "v1" {
        return None;
    }
    let id: i32 = parts.next()?.parse().ok()?;
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts.next()?)
        .ok()?;
    let key = &keys.iter().find(|(k, _)| *k == id)?.1;
    if body.len() < 24 || key.len() != 32 {
        return None;
    }
    let nonce: [u8; 24] = body[..24].try_into().ok()?;
    let cipher = XChaCha20Poly1305::new_from_slice(key).ok()?;
    let plain = cipher.decrypt(&XNonce::from(nonce), &body[24..]).ok()?;
    let (header, bytes) = match plain.iter().position(|b| *b == 0) {
        Some(i) => (&plain[..i], Some(&plain[i + 1..])),
        None => (&plain[..], None),
    };
    let mut v: serde_json::Value = serde_json::from_slice(header).ok()?;
    if let Some(bytes) = bytes {
        let field = if v["type"] == "broadcast" {
            "payload"
        } else {
            "update"
        };
        v[field] = base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into();
    }
    Some(v)
}
