//! A Node.js script driven step by step: it prints one JSON line per step (`{"step": name, ...}`)
//! and reads one line from us where it waits for the test to act (SQL, killing a bridge...).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub struct Script {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
    /// How long one step may take.
    pub step_limit: Duration,
}

impl Script {
    /// Runs `node <script> <args...>`; `needs` is a path that must exist (the npm packages).
    pub fn start(script: &Path, args: &[String], needs: &Path) -> Script {
        assert!(
            needs.exists(),
            "{} missing: run scripts/setup.sh (it installs the npm packages)",
            needs.display()
        );
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Script {
            name: script.display().to_string(),
            child,
            stdin,
            lines,
            step_limit: Duration::from_secs(40),
        }
    }

    /// Waits for step `name` and returns its JSON. A `failed` step fails the test with the
    /// script's error.
    pub async fn step(&mut self, name: &str) -> serde_json::Value {
        let line = tokio::time::timeout(self.step_limit, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{}: step {name} timed out", self.name))
            .expect("stdout readable")
            .unwrap_or_else(|| panic!("{}: exited before step {name}", self.name));
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: not a JSON step line ({e}): {line}", self.name));
        if v["step"] == "failed" && name != "failed" {
            panic!("{}: failed before step {name}: {}", self.name, v["error"]);
        }
        assert_eq!(v["step"], name, "{}: unexpected step: {v}", self.name);
        v
    }

    /// Like `step`, for scripts that report one string under `text`.
    pub async fn step_text(&mut self, name: &str) -> String {
        let v = self.step(name).await;
        v["text"].as_str().expect("step has text").to_string()
    }

    pub async fn tell(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("script reads stdin");
    }

    pub async fn finish(mut self) {
        // End of input: a script still reading stdin may exit.
        drop(self.stdin);
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("script ends")
            .expect("script status");
        assert!(status.success(), "{} exited with {status}", self.name);
    }
}
