//! `scripts/shards.sh`: N pg_collab shards and a PL/Proxy proxy on loopback, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Sharded {
    dir: tempfile::TempDir,
    pub shard_ports: Vec<u16>,
    pub proxy_port: u16,
    /// The `--shard-url` flags for a bridge.
    pub bridge_args: Vec<String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/shards.sh")
}

impl Sharded {
    pub fn start(n: usize) -> Sharded {
        let dir = tempfile::Builder::new()
            .prefix("bridge-shards.")
            .tempdir()
            .unwrap();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .arg(n.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "scripts/shards.sh start: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let value = |key: &str| -> String {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("scripts/shards.sh printed no {key}: {stdout}"))
                .trim_matches('"')
                .to_string()
        };
        Sharded {
            shard_ports: (0..n)
                .map(|i| value(&format!("SHARD{i}_PORT")).parse().unwrap())
                .collect(),
            proxy_port: value("PROXY_PORT").parse().unwrap(),
            bridge_args: value("BRIDGE_ARGS")
                .split(' ')
                .map(str::to_string)
                .collect(),
            dir,
        }
    }

    pub fn proxy_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.proxy_port)
    }

    pub fn shard_url(&self, i: usize) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.shard_ports[i]
        )
    }

    /// Stops shard `i` at once (`pg_ctl stop -m immediate`): a lost shard.
    pub fn stop_shard(&self, i: usize) {
        let data = self.dir.path().join(format!("shard{i}/data"));
        let pg_config = std::env::var("COLLAB_PG_CONFIG")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into());
        let bindir = String::from_utf8(
            Command::new(pg_config)
                .arg("--bindir")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let pg_ctl = Path::new(bindir.trim()).join("pg_ctl");
        let root = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
            .unwrap()
            .trim()
            == "0";
        let mut cmd = if root {
            let mut c = Command::new("sudo");
            c.args(["-u", "postgres"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        let status = cmd
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "shard {i} stops");
    }
}

impl Drop for Sharded {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
