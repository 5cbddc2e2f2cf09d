//! Test support: a throwaway PostgreSQL cluster with pg_collab installed (initdb into a temp
//! dir, a free port, stopped and deleted on drop), and a Yjs peer made with yrs.
//!
//! The extension must be installed into the system PostgreSQL (scripts/setup.sh does it).

pub mod hostile;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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
