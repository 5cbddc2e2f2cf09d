//! The pg_auto_failover set-up of `scripts/ha.sh` (a monitor, a primary and its synchronous
//! standby on loopback), stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Ha {
    dir: tempfile::TempDir,
    pub node_ports: [u16; 2],
    /// What bridges connect with: both nodes, `target_session_attrs=read-write`.
    pub bridge_url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ha.sh")
}

fn ha(args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "scripts/ha.sh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Ha {
    pub fn start() -> Ha {
        let dir = tempfile::Builder::new()
            .prefix("bridge-ha.")
            .tempdir()
            .unwrap();
        let path = dir.path().to_string_lossy().into_owned();
        let out = ha(&["start", &path]).unwrap_or_else(|e| {
            let _ = ha(&["stop", &path]);
            panic!("{e}")
        });
        let value = |key: &str| -> String {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("scripts/ha.sh printed no {key}: {out}"))
                .to_string()
        };
        Ha {
            node_ports: [
                value("NODE1_PORT").parse().unwrap(),
                value("NODE2_PORT").parse().unwrap(),
            ],
            bridge_url: value("URL"),
            dir,
        }
    }

    fn path(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }

    /// The port of the node the monitor reports as primary, if any.
    pub fn primary(&self) -> Option<u16> {
        ha(&["primary", &self.path()]).ok()?.trim().parse().ok()
    }

    /// Waits until the monitor reports a primary other than `old`.
    pub async fn wait_new_primary(&self, old: u16, limit: Duration) -> u16 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(p) = self.primary().filter(|p| *p != old) {
                return p;
            }
            assert!(Instant::now() < deadline, "no new primary after {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs the keeper and the postmaster of the node on `port`: a lost machine.
    pub fn kill(&self, port: u16) {
        ha(&["kill", &self.path(), &port.to_string()]).unwrap();
    }

    /// The superuser on one node.
    pub fn url_of(&self, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    /// The superuser on whichever node is primary.
    pub fn primary_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
            self.node_ports[0], self.node_ports[1]
        )
    }

    /// The logs of the keepers and nodes (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in ["monitor", "node1", "node2"] {
            let log = std::fs::read_to_string(self.dir.path().join(format!("{n}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            out.push_str(&format!("--- {n}\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        let _ = ha(&["stop", &self.path()]);
    }
}

/// A connection to `url` (NoTls), or the error.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}
