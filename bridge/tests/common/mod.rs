//! Test harness: a throwaway PostgreSQL cluster with pg_collab, real bridge processes, a
//! y-websocket client built on yrs + tokio-tungstenite, tokens, and a tiny HTTP client.
#![allow(dead_code, clippy::unwrap_used)]

pub mod ha;
mod script;
pub mod shards;
#[allow(unused_imports)]
pub use script::Script;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::encoding::read::Cursor;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update};

pub const SECRET: &str = "test secret for collab-bridge, at least 32 bytes long";
pub const ISSUER: &str = "collab-tests";
pub const AUDIENCE: &str = "pg_collab";
/// The LOGIN role bridges use in the tests: a member of `collab_bridge`, nothing else.
pub const BRIDGE_USER: &str = "bridge_login";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL cluster in a temporary directory, stopped and removed on drop.
pub struct Pg {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

impl Pg {
    fn cmd(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        if self.as_postgres {
            let mut c = Command::new("sudo");
            c.args(["-u", "postgres"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    pub fn start() -> Pg {
        // COLLAB_PG_CONFIG picks the installation, as in scripts/lib.sh.
        let pg_config = std::env::var("COLLAB_PG_CONFIG")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into());
        let bindir = PathBuf::from(run(Command::new(pg_config).arg("--bindir")).trim());
        let dir = tempfile::Builder::new()
            .prefix("bridge-pg.")
            .tempdir()
            .unwrap();
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").arg("postgres").arg(dir.path()));
        }
        let mut pg = Pg {
            dir,
            bindir,
            as_postgres,
            port: 0,
        };
        let data = pg.dir.path().join("data");
        run(pg
            .cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-N", "-E", "UTF8"])
            .stdout(Stdio::null()));
        // A port can be taken between probing and binding: retry a few times.
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let opts = pg.server_options(port);
            let out = pg
                .cmd("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-o", &opts, "-l"])
                .arg(pg.dir.path().join("log"))
                .args(["-w", "-t", "60", "start"])
                .output()
                .unwrap();
            if out.status.success() {
                pg.port = port;
                break;
            }
            last_err = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(pg.port != 0, "PostgreSQL did not start: {last_err}");
        run(Command::new(pg.bindir.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-X", "-q", "-c", "CREATE EXTENSION pg_collab"])
            // The bridges log in as a least-privileged role, as in production (README).
            .args([
                "-c",
                &format!("CREATE ROLE {BRIDGE_USER} LOGIN IN ROLE collab_bridge"),
            ]));
        pg
    }

    fn server_options(&self, port: u16) -> String {
        format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.dir.path().display()
        )
    }

    /// Stops the server (fast shutdown: sessions are ended), keeping its data; `start_again`
    /// brings it back on the same port. (For tests of what clients see while it is down.)
    pub fn stop(&self) {
        run(self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null()));
    }

    pub fn start_again(&self) {
        run(self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-o", &self.server_options(self.port), "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null()));
    }

    /// The superuser, for the tests' own checks.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// What bridges connect as: a LOGIN role with only `collab_bridge`.
    pub fn bridge_url(&self) -> String {
        format!("postgres://{BRIDGE_USER}@127.0.0.1:{}/postgres", self.port)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    pub async fn text(&self, doc: &str) -> String {
        let c = self.client().await;
        c.query_one("SELECT collab.text($1)", &[&doc])
            .await
            .unwrap()
            .get(0)
    }

    pub async fn insert_text(&self, doc: &str, pos: i32, text: &str) -> i64 {
        let c = self.client().await;
        c.query_one(
            "SELECT collab.insert_text($1, 'content', $2, $3)",
            &[&doc, &pos, &text],
        )
        .await
        .unwrap()
        .get(0)
    }

    /// (updates, distinct update blobs) stored for `doc`, one per sequence as the log gives
    /// them back (a log row may hold several: `collab.updates.span`).
    pub async fn update_rows(&self, doc: &str) -> (i64, i64) {
        let c = self.client().await;
        let r = c
            .query_one(
                "SELECT count(*), count(DISTINCT update) FROM collab.updates_since($1, 0)",
                &[&doc],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A running collab-bridge process, killed on drop.
pub struct Bridge {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    pub id: String,
}

impl Bridge {
    /// Starts a bridge with the test secret, issuer and audience (unless `extra` has `--dev`).
    pub async fn start(pg: &Pg, id: &str, extra: &[&str]) -> Bridge {
        let mut b = Self::spawn(pg, id, extra).await.unwrap();
        b.wait_healthy().await;
        b
    }

    /// A bridge verifying EdDSA tokens with the public key in `public_pem`.
    pub async fn start_with_key(pg: &Pg, id: &str, public_pem: &str) -> Bridge {
        let args = ["--jwt-public-key", public_pem, "--jwt-algorithm", "eddsa"];
        let mut b = Self::spawn_inner(&pg.bridge_url(), id, &args, false)
            .await
            .unwrap();
        b.wait_healthy().await;
        b
    }

    /// Spawns a bridge; Err(stderr) if it exits before listening.
    pub async fn spawn(pg: &Pg, id: &str, extra: &[&str]) -> Result<Bridge, String> {
        Self::spawn_inner(&pg.bridge_url(), id, extra, !extra.contains(&"--dev")).await
    }

    /// Err(exit status and stderr) if the bridge stops before it listens.
    async fn spawn_inner(
        database_url: &str,
        id: &str,
        extra: &[&str],
        with_secret: bool,
    ) -> Result<Bridge, String> {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_collab-bridge"));
        cmd.args(["--database-url", database_url, "--bridge-id", id]);
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if with_secret {
            cmd.args(["--jwt-secret", SECRET]);
        }
        cmd.args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
            .args([
                "--log",
                "info,collab_bridge=debug",
                "--shutdown-grace-secs",
                "5",
            ])
            .args(extra)
            .env_remove("COLLAB_DEV")
            .env_remove("COLLAB_DATABASE_CA_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tag = id.to_string();
        let errors = Arc::new(Mutex::new(String::new()));
        let errors2 = errors.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[bridge {tag}] {line}");
                let mut e = errors2.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            _ => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let status = match status {
                    Ok(Ok(s)) => format!("exited with {s}"),
                    _ => "still running".to_string(),
                };
                return Err(format!("{status}: {}", errors.lock().unwrap()));
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = line
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Ok(Bridge {
            child,
            addr,
            id: id.to_string(),
        })
    }

    pub async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http(self.addr, "GET", "/healthz", &[], &[]).await {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "bridge {} never became healthy",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn ws_url(&self, doc: &str) -> String {
        format!("ws://{}/ws/{doc}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    pub fn sigterm(&self) {
        run(Command::new("kill").args(["-TERM", &self.pid().to_string()]));
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let r = http(self.addr, "GET", "/metrics", &[], &[]).await.unwrap();
        let text = String::from_utf8_lossy(&r.body).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signed HS256 token. `docs`: pattern → "read" | "write".
pub fn token_with(
    secret: &str,
    docs: &[(&str, &str)],
    exp_in: i64,
    iss: &str,
    aud: &str,
) -> String {
    let docs: serde_json::Map<String, serde_json::Value> = docs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let claims = json!({
        "sub": "tester",
        "exp": now() + exp_in,
        "iat": now(),
        "iss": iss,
        "aud": aud,
        "docs": docs,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn token(docs: &[(&str, &str)]) -> String {
    token_with(SECRET, docs, 3600, ISSUER, AUDIENCE)
}

pub fn writer_token() -> String {
    token(&[("*", "write")])
}

/// An unsigned token with `alg: none`.
pub fn alg_none_token() -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = e.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = e.encode(
        json!({"sub": "x", "exp": now() + 3600, "iss": ISSUER, "aud": AUDIENCE, "docs": {"*": "write"}})
            .to_string(),
    );
    format!("{header}.{claims}.")
}

#[derive(Debug, Default)]
pub struct ClientLog {
    pub synced: bool,
    pub updates_received: usize,
    /// The payload of every update message received (not sync step 2), in arrival order.
    pub update_frames: Vec<Vec<u8>>,
    pub denied: Vec<String>,
    pub awareness: Vec<Vec<(u64, u32, String)>>,
    pub close: Option<(u16, String)>,
    pub ended: bool,
}

/// A y-websocket client: a yrs document kept in sync over one WebSocket.
pub struct YClient {
    pub doc: Doc,
    text: TextRef,
    lock: Arc<Mutex<()>>,
    out: mpsc::UnboundedSender<WsMessage>,
    pub log: Arc<Mutex<ClientLog>>,
}

/// Why an upgrade was refused: the HTTP status.
#[derive(Debug)]
pub struct Refused(pub u16);

impl YClient {
    pub async fn connect(url: &str, token: Option<&str>) -> YClient {
        Self::connect_with(url, token, None).await.unwrap()
    }

    pub async fn connect_with(
        url: &str,
        token: Option<&str>,
        origin: Option<&str>,
    ) -> Result<YClient, Refused> {
        Self::connect_headers(
            url,
            token.map(|t| ("authorization", format!("Bearer {t}"))),
            origin,
        )
        .await
    }

    pub async fn connect_headers(
        url: &str,
        header: Option<(&str, String)>,
        origin: Option<&str>,
    ) -> Result<YClient, Refused> {
        let mut req = url.into_client_request().unwrap();
        if let Some((name, value)) = header {
            let name =
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap();
            req.headers_mut()
                .insert(name, HeaderValue::from_str(&value).unwrap());
        }
        if let Some(o) = origin {
            req.headers_mut()
                .insert("origin", HeaderValue::from_str(o).unwrap());
        }
        let (ws, _) = match tokio_tungstenite::connect_async(req).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                return Err(Refused(resp.status().as_u16()))
            }
            Err(e) => panic!("connect {url}: {e}"),
        };
        let (mut sink, mut stream) = ws.split();
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        let lock = Arc::new(Mutex::new(()));
        let log = Arc::new(Mutex::new(ClientLog::default()));
        let (out, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        // Like y-websocket: announce our state vector first.
        let sv = doc.transact().state_vector();
        let _ = out.send(WsMessage::Binary(
            Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1().into(),
        ));
        let (doc2, lock2, log2, out2) = (doc.clone(), lock.clone(), log.clone(), out.clone());
        tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                match m {
                    Ok(WsMessage::Binary(b)) => {
                        let mut dec = DecoderV1::new(Cursor::new(&b));
                        let msg = Message::decode(&mut dec).expect("server sent a bad message");
                        let is_step2 = matches!(msg, Message::Sync(SyncMessage::SyncStep2(_)));
                        match msg {
                            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                                let _g = lock2.lock().unwrap();
                                let u = doc2.transact().encode_state_as_update_v1(&sv);
                                let _ = out2.send(WsMessage::Binary(
                                    Message::Sync(SyncMessage::SyncStep2(u)).encode_v1().into(),
                                ));
                            }
                            Message::Sync(SyncMessage::SyncStep2(u))
                            | Message::Sync(SyncMessage::Update(u)) => {
                                {
                                    let _g = lock2.lock().unwrap();
                                    let update = Update::decode_v1(&u).unwrap();
                                    doc2.transact_mut().apply_update(update).unwrap();
                                }
                                let mut l = log2.lock().unwrap();
                                if is_step2 {
                                    l.synced = true;
                                } else {
                                    l.updates_received += 1;
                                    l.update_frames.push(u);
                                }
                            }
                            Message::Auth(Some(reason)) => log2.lock().unwrap().denied.push(reason),
                            Message::Awareness(a) => {
                                let entries = a
                                    .clients
                                    .iter()
                                    .map(|(id, e)| (id.get(), e.clock, e.json.to_string()))
                                    .collect();
                                log2.lock().unwrap().awareness.push(entries);
                            }
                            _ => {}
                        }
                    }
                    Ok(WsMessage::Close(frame)) => {
                        let mut l = log2.lock().unwrap();
                        l.close = Some(match frame {
                            Some(f) => (u16::from(f.code), f.reason.to_string()),
                            None => (u16::from(CloseCode::Status), String::new()),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            log2.lock().unwrap().ended = true;
        });
        Ok(YClient {
            doc,
            text,
            lock,
            out,
            log,
        })
    }

    pub async fn wait_synced(&self) {
        wait_for("sync", Duration::from_secs(20), || {
            self.log.lock().unwrap().synced
        })
        .await;
    }

    /// Whether any awareness entry received so far satisfies `pred(client, clock, json)`.
    pub fn saw_awareness(&self, pred: impl Fn(u64, u32, &str) -> bool) -> bool {
        self.log
            .lock()
            .unwrap()
            .awareness
            .iter()
            .flatten()
            .any(|(id, clock, json)| pred(*id, *clock, json))
    }

    pub fn text(&self) -> String {
        let _g = self.lock.lock().unwrap();
        self.text.get_string(&self.doc.transact())
    }

    /// A local edit, sent to the server as an update message.
    pub fn insert(&self, pos: u32, s: &str) {
        let update = {
            let _g = self.lock.lock().unwrap();
            let mut txn = self.doc.transact_mut();
            self.text.insert(&mut txn, pos, s);
            txn.encode_update_v1()
        };
        self.send_raw(Message::Sync(SyncMessage::Update(update)).encode_v1());
    }

    pub fn send_raw(&self, bytes: Vec<u8>) {
        let _ = self.out.send(WsMessage::Binary(bytes.into()));
    }

    pub fn send_awareness(&self, client: u64, clock: u32, json: &str) {
        use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
        let entry = AwarenessUpdateEntry {
            clock,
            json: json.into(),
        };
        let update = AwarenessUpdate {
            clients: [(yrs::ClientID::new(client), entry)].into_iter().collect(),
        };
        self.send_raw(Message::Awareness(update).encode_v1());
    }

    pub fn close(&self) {
        let _ = self.out.send(WsMessage::Close(None));
    }

    pub async fn wait_text(&self, expected: &str) {
        let ok = wait_until(Duration::from_secs(20), || self.text() == expected).await;
        assert!(
            ok,
            "client text {:?} never became {expected:?}",
            self.text()
        );
    }

    pub async fn wait_close(&self) -> (u16, String) {
        wait_for("close frame", Duration::from_secs(20), || {
            self.log.lock().unwrap().close.is_some()
        })
        .await;
        self.log.lock().unwrap().close.clone().unwrap()
    }

    pub fn state_vector(&self) -> StateVector {
        let _g = self.lock.lock().unwrap();
        self.doc.transact().state_vector()
    }
}

pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(wait_until(limit, f).await, "timed out waiting for {what}");
}

/// Inserts 50 kB chunks into `doc` through SQL (at most 600) until the bridge has closed a
/// client for being too slow; whether it did. For tests with a connection that never reads.
pub async fn insert_until_a_slow_client_is_closed(pg: &Pg, b: &Bridge, doc: &str) -> bool {
    let db = pg.client().await;
    let chunk = "s".repeat(50_000);
    for _ in 0..600 {
        db.query_one(
            "SELECT collab.insert_text($1, 'content', 0, $2)",
            &[&doc, &chunk],
        )
        .await
        .unwrap();
        if b.metric("collab_bridge_slow_clients_total").await >= 1.0 {
            return true;
        }
    }
    false
}

/// `watcher` (a client that reads) ends up with all of `doc` and was never closed.
pub async fn assert_caught_up_and_open(pg: &Pg, watcher: &YClient, doc: &str) {
    let expected = pg.text(doc).await.len();
    wait_for("watcher catches up", Duration::from_secs(30), || {
        watcher.text().len() == expected
    })
    .await;
    assert!(watcher.log.lock().unwrap().close.is_none());
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A one-shot HTTP/1.1 request (Connection: close).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}

/// A Yjs update inserting `s` into field `content` of a fresh document.
/// The text of field `content` in a document given as one v1 update.
pub fn content_of(update: &[u8]) -> String {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
    let s = text.get_string(&doc.transact());
    s
}

pub fn text_update(s: &str) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, s);
    txn.encode_update_v1()
}

/// Certificates for TLS tests: a CA (PEM) and a server certificate it signed, valid for
/// `127.0.0.1` and `localhost`, with the server's private key (PEM); and a client certificate
/// it signed for the database user [`CLIENT_USER`], with its key.
pub struct TestCerts {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

/// The database user the test client certificate is for (its common name).
pub const CLIENT_USER: &str = "bridge_cert";

impl TestCerts {
    pub fn generate(ca_name: &str) -> TestCerts {
        Self::for_names(ca_name, &["127.0.0.1", "localhost"])
    }

    /// A server certificate valid only for `names` (host names or IP addresses).
    pub fn for_names(ca_name: &str, names: &[&str]) -> TestCerts {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut server = CertificateParams::new(names.clone()).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, CLIENT_USER);
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();
        TestCerts {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }
}

impl Pg {
    /// The cluster's temporary directory (owned by the server's user).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Turns TLS on with this server certificate and key (a reload, no restart); returns once a
    /// `sslmode=require` connection succeeds. Clients may still connect without TLS.
    pub fn enable_ssl(&self, cert_pem: &str, key_pem: &str) {
        let cert = self.dir.path().join("server.crt");
        let key = self.dir.path().join("server.key");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if self.as_postgres {
            run(Command::new("chown").arg("postgres").arg(&cert).arg(&key));
        }
        let port = self.port.to_string();
        run(Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-X", "-q"])
            .arg("-c")
            .arg(format!(
                "ALTER SYSTEM SET ssl_cert_file = '{}'",
                cert.display()
            ))
            .arg("-c")
            .arg(format!(
                "ALTER SYSTEM SET ssl_key_file = '{}'",
                key.display()
            ))
            .args([
                "-c",
                "ALTER SYSTEM SET ssl = on",
                "-c",
                "SELECT pg_reload_conf()",
            ]));
        let conninfo = format!("host=127.0.0.1 port={port} user=postgres sslmode=require");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = Command::new("psql")
                .args([&conninfo, "-X", "-q", "-c", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "TLS never came up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Makes [`CLIENT_USER`] (a superuser) log in over TCP only with TLS and a client
    /// certificate signed by `ca_pem` (pg_hba `cert`); other users are unaffected.
    pub fn require_client_cert(&self, ca_pem: &str) {
        let ca = self.dir.path().join("client-ca.crt");
        std::fs::write(&ca, ca_pem).unwrap();
        if self.as_postgres {
            run(Command::new("chown").arg("postgres").arg(&ca));
        }
        let port = self.port.to_string();
        let psql = || {
            let mut c = Command::new("psql");
            c.args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-X",
                "-q",
                "-At",
            ]);
            c
        };
        let hba = run(psql().args(["-c", "SHOW hba_file"])).trim().to_string();
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!(
                "hostssl all {CLIENT_USER} 127.0.0.1/32 cert\n\
                 host all {CLIENT_USER} 127.0.0.1/32 reject\n{old}"
            ),
        )
        .unwrap();
        run(psql()
            .arg("-c")
            .arg(format!(
                "CREATE ROLE {CLIENT_USER} LOGIN IN ROLE collab_bridge"
            ))
            .arg("-c")
            .arg(format!("ALTER SYSTEM SET ssl_ca_file = '{}'", ca.display()))
            .args(["-c", "SELECT pg_reload_conf()"]));
        // The reload is asynchronous: wait until the user can no longer log in without TLS.
        let conninfo = format!(
            "host=127.0.0.1 port={port} user={CLIENT_USER} dbname=postgres sslmode=disable"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Command::new("psql")
            .args([&conninfo, "-X", "-q", "-c", "SELECT 1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "pg_hba never reloaded");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Bridge {
    /// Like [`Bridge::spawn`] but with this `--database-url` instead of the cluster's plain one.
    pub async fn spawn_with_url(
        database_url: &str,
        id: &str,
        extra: &[&str],
    ) -> Result<Bridge, String> {
        Self::spawn_inner(database_url, id, extra, true).await
    }
}

/// How a WebSocket connection attempt ends: 101 once synced, the close code if the bridge
/// closed it first, or the HTTP status if it refused the upgrade.
pub async fn ws_outcome(url: &str, header: Option<(&str, String)>, origin: Option<&str>) -> u16 {
    let c = match YClient::connect_headers(url, header, origin).await {
        Ok(c) => c,
        Err(Refused(status)) => return status,
    };
    wait_for("sync or close", Duration::from_secs(20), || {
        let l = c.log.lock().unwrap();
        l.synced || l.close.is_some()
    })
    .await;
    let l = c.log.lock().unwrap();
    match &l.close {
        Some((code, _)) => *code,
        None => 101,
    }
}

/// [`ws_outcome`] with a bearer token.
pub async fn ws_outcome_token(url: &str, token: Option<&str>, origin: Option<&str>) -> u16 {
    ws_outcome(
        url,
        token.map(|t| ("authorization", format!("Bearer {t}"))),
        origin,
    )
    .await
}

/// A signed HS256 token for subject `sub` with rights on every document, plus extra claims.
pub fn token_for(sub: &str, extra: serde_json::Value) -> String {
    let mut claims = json!({
        "sub": sub,
        "exp": now() + 3600,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "docs": {"*": "write"},
    });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

impl Bridge {
    /// Starts a bridge without the test secret (`extra` brings its own keys).
    pub async fn start_bare(pg: &Pg, id: &str, extra: &[&str]) -> Bridge {
        let mut b = Self::spawn_inner(&pg.url(), id, extra, false)
            .await
            .unwrap();
        b.wait_healthy().await;
        b
    }

    /// Spawns a bridge without the test secret; Err(stderr) if it stops before listening.
    pub async fn spawn_bare(pg: &Pg, id: &str, extra: &[&str]) -> Result<Bridge, String> {
        Self::spawn_inner(&pg.url(), id, extra, false).await
    }
}
