//! Load generator for y-websocket servers (collab-bridge or the y-websocket reference server):
//! N documents × M clients, each client typing at a fixed rate, every other client of the
//! document timing each edit's arrival (one process, one clock).
//!
//! A client is a yrs document on a tokio-tungstenite socket (TCP_NODELAY) speaking the
//! y-websocket sync protocol: sync step 1 on connect (the answer, sync step 2, marks it synced),
//! then update messages, each a marker `#<client>.<n>;` inserted at the start of text `content`
//! (like the Node.js harness, bench/js/propagation.mjs). Clients find the markers in the received
//! bytes (Yjs v1 stores strings verbatim) and integrate what they receive, as real clients do:
//! a client that did not would make every insert at 0 concurrent with all earlier ones of the
//! others, and the server's conflict resolution grow with the document (`--integrate no` does
//! that, cheaper for the generator but not what editors do). One task per client, one select
//! loop, no locks.
//!
//! Reports one JSON line: sent/s, delivered/s and expected deliveries, latency p50/p99/max from
//! insert to arrival at each other client, and with `--db` the updates committed in
//! `collab.updates` during the sending window (committed/s); with `--cpu NAME:PID` the CPU used
//! during the window by that process and its children (e.g. the postmaster and its backends).
//!
//! Usage: `load --url ws://127.0.0.1:8080/ws [--token T] --docs N --clients M --rate R
//!         --seconds S [--db postgres://...] [--cpu bridge:PID] [--cpu postgres:PID]
//!         [--integrate yes|no] [--metrics HOST:PORT]`
//! With `--metrics` (collab-bridge's address) it also reports the mean of each stage of an
//! update's way through the bridge during the run, from the bridge's histograms.
//! (URL as for `new WebsocketProvider(url, room)`: the room name is appended after a `/`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, StateVector, Text, Transact, Update};

struct Args {
    url: String,
    token: Option<String>,
    docs: usize,
    clients: usize,
    rate: f64,
    seconds: f64,
    db: Option<String>,
    cpu: Vec<(String, u32)>,
    integrate: bool,
    /// collab-bridge's `/metrics` address (host:port), for the stages of this run.
    metrics: Option<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: load --url WS_BASE [--token T] --docs N --clients M --rate PER_CLIENT_PER_S \
         --seconds S [--db POSTGRES_URL] [--cpu NAME:PID]... [--integrate yes|no] [--metrics HOST:PORT]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        url: String::new(),
        token: None,
        docs: 10,
        clients: 2,
        rate: 10.0,
        seconds: 10.0,
        db: None,
        cpu: Vec::new(),
        integrate: true,
        metrics: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(v) = it.next() else { usage() };
        let num = |v: &str| v.parse::<f64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--url" => a.url = v,
            "--token" => a.token = Some(v).filter(|t| t != "-"),
            "--docs" => a.docs = num(&v) as usize,
            "--clients" => a.clients = num(&v) as usize,
            "--rate" => a.rate = num(&v),
            "--seconds" => a.seconds = num(&v),
            "--db" => a.db = Some(v),
            "--integrate" => a.integrate = v != "no",
            "--metrics" => a.metrics = Some(v),
            "--cpu" => {
                let (name, pid) = v.split_once(':').unwrap_or_else(|| usage());
                a.cpu
                    .push((name.to_string(), pid.parse().unwrap_or_else(|_| usage())));
            }
            _ => usage(),
        }
    }
    if a.url.is_empty() || a.docs == 0 || a.clients < 2 || a.rate <= 0.0 || a.seconds <= 0.0 {
        usage()
    }
    a
}

/// Send instants (nanoseconds after `base`, 0: not sent) of every client's markers.
struct Sent {
    base: Instant,
    per_client: Vec<Vec<AtomicU64>>,
}

impl Sent {
    fn record(&self, client: usize, n: usize) {
        if let Some(slot) = self.per_client.get(client).and_then(|v| v.get(n)) {
            slot.store(self.base.elapsed().as_nanos().max(1) as u64, Relaxed);
        }
    }

    fn latency(&self, client: usize, n: usize, now: Instant) -> Option<Duration> {
        let t = self.per_client.get(client)?.get(n)?.load(Relaxed);
        (t != 0).then(|| now.saturating_duration_since(self.base + Duration::from_nanos(t)))
    }
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    delivered: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

/// Markers `#<client>.<n>;` in raw update bytes.
fn markers(bytes: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let start = i;
            i += 1;
            if bytes[start] != b'#' {
                continue;
            }
            let mut j = start + 1;
            let num = |j: &mut usize| {
                let from = *j;
                let mut v: usize = 0;
                while *j < bytes.len() && bytes[*j].is_ascii_digit() && *j - from < 9 {
                    v = v * 10 + (bytes[*j] - b'0') as usize;
                    *j += 1;
                }
                (*j > from).then_some(v)
            };
            let Some(c) = num(&mut j) else { continue };
            if bytes.get(j) != Some(&b'.') {
                continue;
            }
            j += 1;
            let Some(n) = num(&mut j) else { continue };
            if bytes.get(j) != Some(&b';') {
                continue;
            }
            i = j + 1;
            return Some((c, n));
        }
        None
    })
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// CPU ticks (1/100 s) of `pid` and its direct children.
fn tree_ticks(pid: u32) -> u64 {
    let mut total = cpu_ticks(pid);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            if after.split_whitespace().nth(1) == Some(&pid.to_string()) {
                total += cpu_ticks(child);
            }
        }
    }
    total
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn committed(db: &tokio_postgres::Client, prefix: &str) -> Option<i64> {
    let row = db
        .query_one(
            "SELECT coalesce(sum(head_seq), 0)::int8 FROM collab.documents WHERE name LIKE $1",
            &[&format!("{prefix}%")],
        )
        .await
        .ok()?;
    row.try_get(0).ok()
}

/// Updates of the run's documents in `collab.updates` (the log itself, not the head counters;
/// a row holds `span` of them).
async fn rows(db: &tokio_postgres::Client, prefix: &str) -> Option<i64> {
    let row = db
        .query_one(
            "SELECT coalesce(sum(u.span), 0)::int8 FROM collab.updates u JOIN collab.documents d ON d.id = u.doc_id \
             WHERE d.name LIKE $1",
            &[&format!("{prefix}%")],
        )
        .await
        .ok()?;
    row.try_get(0).ok()
}

/// The bridge's histogram sums and counts (`<name>_sum`, `<name>_count`).
async fn bridge_metrics(addr: &str) -> std::collections::HashMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = std::collections::HashMap::new();
    let Ok(mut c) = tokio::net::TcpStream::connect(addr).await else {
        return out;
    };
    let req = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut body = String::new();
    if c.write_all(req.as_bytes()).await.is_err() || c.read_to_string(&mut body).await.is_err() {
        return out;
    }
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, v)) = line.split_once(' ') {
            if name.ends_with("_sum") || name.ends_with("_count") || name.contains("_bucket{") {
                out.insert(name.to_string(), v.trim().parse().unwrap_or(0.0));
            }
        }
    }
    out
}

/// The upper bound of the histogram bucket that holds quantile `q` of what `name` observed
/// between two scrapes (so "at most this"; +Inf when beyond the last bound).
fn bucket_quantile(
    before: &std::collections::HashMap<String, f64>,
    after: &std::collections::HashMap<String, f64>,
    name: &str,
    q: f64,
) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v - before.get(k).copied().unwrap_or(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    (total > 0.0).then_some(())?;
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(le, _)| *le)
}

/// Means over the run of the bridge's stages: `"name":mean` pairs (ms for durations), and for
/// the durations the bucket bounds holding their p50 and p99 (`"name_p50_le"`, ms).
fn stage_means(
    before: &std::collections::HashMap<String, f64>,
    after: &std::collections::HashMap<String, f64>,
) -> String {
    let stages = [
        ("queue_ms", "collab_bridge_queue_seconds", 1e3),
        ("txn_ms", "collab_bridge_commit_seconds", 1e3),
        (
            "commit_to_notify_ms",
            "collab_bridge_commit_to_notify_seconds",
            1e3,
        ),
        ("fanout_ms", "collab_bridge_fanout_seconds", 1e3),
        ("docs_per_txn", "collab_bridge_transaction_documents", 1.0),
        ("updates_per_doc_call", "collab_bridge_batch_size", 1.0),
    ];
    let d = |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let parts: Vec<String> = stages
        .iter()
        .filter_map(|(label, name, scale)| {
            let n = d(&format!("{name}_count"));
            let mut part = format!("\"{label}\":{:.3}", scale * d(&format!("{name}_sum")) / n);
            if let Some(stem) = label.strip_suffix("_ms") {
                for (tag, q) in [("p50", 0.5), ("p99", 0.99)] {
                    if let Some(le) = bucket_quantile(before, after, name, q) {
                        let le = if le.is_finite() {
                            format!("{:.2}", le * 1e3)
                        } else {
                            "\"inf\"".into()
                        };
                        part.push_str(&format!(",\"{stem}_{tag}_le\":{le}"));
                    }
                }
            }
            (n > 0.0).then_some(part)
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

struct Client {
    id: usize,
    doc_name: String,
}

/// What a client does with a message from the server: times the markers of others in it (once
/// per marker) and integrates the update into its document. True for sync step 2.
struct Receiver {
    me: usize,
    sent: Arc<Sent>,
    stats: Arc<Stats>,
    seen: HashSet<(usize, usize)>,
    latencies: Vec<u32>,
    integrate: bool,
}

impl Receiver {
    fn handle(&mut self, doc: &Doc, msg: WsMessage) -> bool {
        let WsMessage::Binary(bytes) = msg else {
            return false;
        };
        let now = Instant::now();
        let (update, step2) = match Message::decode_v1(&bytes) {
            Ok(Message::Sync(SyncMessage::SyncStep2(u))) => (u, true),
            Ok(Message::Sync(SyncMessage::Update(u))) => (u, false),
            _ => return false,
        };
        for (client, n) in markers(&update) {
            if client == self.me || !self.seen.insert((client, n)) {
                continue;
            }
            if let Some(l) = self.sent.latency(client, n, now) {
                self.latencies
                    .push(l.as_micros().min(u32::MAX as u128) as u32);
                self.stats.delivered.fetch_add(1, Relaxed);
            }
        }
        if self.integrate {
            if let Ok(u) = Update::decode_v1(&update) {
                let _ = doc.transact_mut().apply_update(u);
            }
        }
        step2
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    c: Client,
    url: String,
    sent: Arc<Sent>,
    stats: Arc<Stats>,
    synced: Arc<tokio::sync::Barrier>,
    mut go: watch::Receiver<bool>,
    sending: Arc<AtomicBool>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
    integrate: bool,
) -> Result<(), String> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    let (mut sink, mut stream) = ws.split();
    let step1 = Message::Sync(SyncMessage::SyncStep1(StateVector::default())).encode_v1();
    sink.send(WsMessage::Binary(step1.into()))
        .await
        .map_err(|e| e.to_string())?;
    let me = c.id;
    let doc = Doc::with_client_id(me as u64 + 1_000_000);
    let text = doc.get_or_insert_text("content");
    let mut rx = Receiver {
        me,
        sent: sent.clone(),
        stats: stats.clone(),
        seen: HashSet::new(),
        latencies: Vec::new(),
        integrate,
    };
    // Synced once sync step 2 (the document so far) arrived.
    loop {
        match stream.next().await {
            Some(Ok(msg)) => {
                if rx.handle(&doc, msg) {
                    break;
                }
            }
            _ => return Err(format!("{}: closed before sync", c.doc_name)),
        }
    }
    synced.wait().await;
    let _ = go.wait_for(|g| *g).await;
    // Spread the clients' ticks over the period.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + period.mul_f64(rand_unit(me)),
        period,
    );
    let mut n = 0usize;
    let mut typing = true;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(msg)) => {
                    rx.handle(&doc, msg);
                }
                _ => break,
            },
            _ = tick.tick(), if typing => {
                if !sending.load(Relaxed) {
                    typing = false;
                    continue;
                }
                let update = {
                    let mut txn = doc.transact_mut();
                    text.insert(&mut txn, 0, &format!("#{me}.{n};"));
                    txn.encode_update_v1()
                };
                sent.record(me, n);
                n += 1;
                stats.sent.fetch_add(1, Relaxed);
                let frame = Message::Sync(SyncMessage::Update(update)).encode_v1();
                if sink.send(WsMessage::Binary(frame.into())).await.is_err() {
                    break;
                }
            },
            // Until told to close, everything sent is still awaited.
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
    stats
        .latencies_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(rx.latencies);
    Ok(())
}

/// A fixed pseudo-random fraction in [0, 1) per client.
fn rand_unit(i: usize) -> f64 {
    let x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn quantile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64) as usize).min(sorted.len() - 1);
    (sorted[i] as f64 / 10.0).round() / 100.0
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let run = format!("{:08x}", std::process::id() ^ nanos);
    let prefix = format!("load-{run}-");
    let n_clients = a.docs * a.clients;
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let per_client = (a.rate * (a.seconds + 2.0) * 1.5) as usize + 16;
    let sent = Arc::new(Sent {
        base: Instant::now(),
        per_client: (0..n_clients)
            .map(|_| (0..per_client).map(|_| AtomicU64::new(0)).collect())
            .collect(),
    });
    let stats = Arc::new(Stats::default());
    let synced = Arc::new(tokio::sync::Barrier::new(n_clients + 1));
    let (go_tx, go) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let sending = Arc::new(AtomicBool::new(true));
    let db = match &a.db {
        Some(url) => match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                Some(client)
            }
            Err(e) => {
                eprintln!("load: cannot connect to {url}: {e}");
                std::process::exit(1)
            }
        },
        None => None,
    };
    let mut tasks = Vec::new();
    for d in 0..a.docs {
        for m in 0..a.clients {
            let id = d * a.clients + m;
            let doc_name = format!("{prefix}{d}");
            let mut url = format!("{}/{doc_name}", a.url.trim_end_matches('/'));
            if let Some(t) = &a.token {
                url.push_str(&format!("?token={t}"));
            }
            tasks.push(tokio::spawn(run_client(
                Client { id, doc_name },
                url,
                sent.clone(),
                stats.clone(),
                synced.clone(),
                go.clone(),
                sending.clone(),
                period,
                stop.clone(),
                a.integrate,
            )));
            // Do not storm the accept queue.
            if id % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    if tokio::time::timeout(Duration::from_secs(60), synced.wait())
        .await
        .is_err()
    {
        eprintln!("load: clients did not sync within 60 s");
        for t in &tasks {
            if t.is_finished() {
                eprintln!("{:?}", t);
            }
        }
        std::process::exit(1)
    }
    let load_before = loadavg();
    let c0 = match &db {
        Some(db) => committed(db, &prefix).await,
        None => None,
    };
    let m0 = match &a.metrics {
        Some(addr) => Some(bridge_metrics(addr).await),
        None => None,
    };
    let cpu0: Vec<u64> = a.cpu.iter().map(|(_, pid)| tree_ticks(*pid)).collect();
    let self0 = cpu_ticks(std::process::id());
    let t0 = Instant::now();
    let _ = go_tx.send(true);
    tokio::time::sleep(Duration::from_secs_f64(a.seconds)).await;
    sending.store(false, Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let c1 = match &db {
        Some(db) => committed(db, &prefix).await,
        None => None,
    };
    let delivered_window = stats.delivered.load(Relaxed);
    let cpu1: Vec<u64> = a.cpu.iter().map(|(_, pid)| tree_ticks(*pid)).collect();
    let self1 = cpu_ticks(std::process::id());
    let load_after = loadavg();
    let sent_n = stats.sent.load(Relaxed);
    // Drain: wait until everything expected arrived, or 5 s of nothing new.
    let expected = sent_n * (a.clients as u64 - 1);
    let mut last = (stats.delivered.load(Relaxed), Instant::now());
    while stats.delivered.load(Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = stats.delivered.load(Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let stages = match (&a.metrics, &m0) {
        (Some(addr), Some(m0)) => Some(stage_means(m0, &bridge_metrics(addr).await)),
        _ => None,
    };
    let c_final = match &db {
        Some(db) => committed(db, &prefix).await,
        None => None,
    };
    let _ = stop_tx.send(true);
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(5), t).await {
            Ok(Ok(Err(e))) => eprintln!("load: {e}"),
            Ok(Err(e)) => eprintln!("load: client task: {e}"),
            _ => {}
        }
    }
    let mut lat =
        std::mem::take(&mut *stats.latencies_us.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    let secs = elapsed.max(1e-9);
    let cpu: Vec<String> = a
        .cpu
        .iter()
        .zip(cpu0.iter().zip(&cpu1))
        .map(|((name, _), (b, e))| {
            format!(
                "\"{name}_cpu_pct\":{:.0}",
                (e.saturating_sub(*b)) as f64 / secs
            )
        })
        .collect();
    let mut out = format!(
        "{{\"docs\":{},\"clients\":{},\"rate_per_client\":{},\"seconds\":{:.1},\
         \"sent_per_s\":{:.0},\"delivered\":{},\"expected\":{},\"delivered_per_s\":{:.0},\
         \"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{}",
        a.docs,
        n_clients,
        a.rate,
        elapsed,
        sent_n as f64 / secs,
        lat.len(),
        expected,
        delivered_window as f64 / secs,
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        quantile(&lat, 1.0),
    );
    if let (Some(c0), Some(c1), Some(cf)) = (c0, c1, c_final) {
        out.push_str(&format!(
            ",\"committed_per_s\":{:.0},\"committed_total\":{}",
            (c1 - c0) as f64 / secs,
            cf
        ));
    }
    if let Some(rows) = match &db {
        Some(db) => rows(db, &prefix).await,
        None => None,
    } {
        out.push_str(&format!(",\"rows_in_collab_updates\":{rows}"));
    }
    out.push_str(&format!(
        ",\"load_cpu_pct\":{:.0}",
        self1.saturating_sub(self0) as f64 / secs
    ));
    for c in cpu {
        out.push(',');
        out.push_str(&c);
    }
    if let Some(st) = stages {
        out.push_str(&format!(",\"bridge_stages\":{st}"));
    }
    out.push_str(&format!(
        ",\"loadavg_before\":\"{load_before}\",\"loadavg_after\":\"{load_after}\"}}"
    ));
    println!("{out}");
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_markers_in_bytes() {
        let b = b"\x01\x02#12.345;\x00#x.1;#7.8;#9.;#3.4";
        let found: Vec<_> = markers(b).collect();
        assert_eq!(found, vec![(12, 345), (7, 8)]);
    }

    #[test]
    fn markers_survive_yjs_encoding() {
        let doc = Doc::with_client_id(1);
        let text = doc.get_or_insert_text("content");
        let update = {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "#1.0;");
            text.insert(&mut txn, 0, "#1.1;");
            txn.encode_update_v1()
        };
        let mut found: Vec<_> = markers(&update).collect();
        found.sort();
        assert_eq!(found, vec![(1, 0), (1, 1)]);
    }
}
