//! Connection benchmarks of a y-websocket server (collab-bridge or another): memory per idle
//! connection, the connection setup rate, memory after the connections close, and a join storm
//! (many clients asking at once for one big document) with the latency of an unrelated light
//! room meanwhile. Memory is the server's resident set (`VmRSS`/`VmHWM` in /proc/PID/status).
//!
//! Usage:
//!   conns idle  --url WS_BASE [--token T] --pid PID --conns N [--docs D]
//!   conns storm --url WS_BASE [--token T] --pid PID --doc NAME --clients N [--light NAME]
//!   conns light --url WS_BASE [--token T] --pid PID --light NAME --seconds S
//! (`light` alone: the light room from a process of its own, e.g. next to a storm.)
//! (WS_BASE as for `new WebsocketProvider(url, room)`; the room is appended after a `/`.)
//! Prints one JSON line per measurement.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::encoder::Encode;
use yrs::{Doc, StateVector, Text, Transact};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Args {
    mode: String,
    url: String,
    token: Option<String>,
    pid: u32,
    conns: usize,
    docs: usize,
    doc: String,
    light: String,
    seconds: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: conns idle --url WS_BASE [--token T] --pid PID --conns N [--docs D]\n       \
         conns storm --url WS_BASE [--token T] --pid PID --doc NAME --clients N [--light NAME]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage());
    let mut a = Args {
        mode,
        url: String::new(),
        token: None,
        pid: 0,
        conns: 1000,
        docs: 100,
        doc: "big".into(),
        light: "light".into(),
        seconds: 10,
    };
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        let num = || v.parse::<usize>().unwrap_or_else(|_| usage());
        match k.as_str() {
            "--url" => a.url = v.clone(),
            "--token" => a.token = Some(v.clone()),
            "--pid" => a.pid = num() as u32,
            "--conns" | "--clients" => a.conns = num(),
            "--docs" => a.docs = num().max(1),
            "--doc" => a.doc = v.clone(),
            "--light" => a.light = v.clone(),
            "--seconds" => a.seconds = num(),
            _ => usage(),
        }
    }
    if a.url.is_empty() || a.pid == 0 {
        usage()
    }
    a
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn connect(a: &Args, room: &str) -> Result<Ws, String> {
    let mut req = format!("{}/{room}", a.url)
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(t) = &a.token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().map_err(|_| "bad token")?,
        );
    }
    // Big documents are one message: allow it, as browsers do.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

fn step1() -> WsMessage {
    WsMessage::Binary(
        Message::Sync(SyncMessage::SyncStep1(StateVector::default()))
            .encode_v1()
            .into(),
    )
}

/// Reads until the server's sync step 2 (`0, 1, ...`); Err with the close code otherwise.
async fn until_step2(ws: &mut Ws) -> Result<usize, String> {
    while let Some(m) = ws.next().await {
        match m.map_err(|e| e.to_string())? {
            WsMessage::Binary(b) if b.len() >= 2 && b[0] == 0 && b[1] == 1 => return Ok(b.len()),
            WsMessage::Close(f) => {
                return Err(format!(
                    "closed {}",
                    f.map(|f| u16::from(f.code)).unwrap_or(1005)
                ))
            }
            _ => {}
        }
    }
    Err("ended".into())
}

fn kib_per(delta_kib: i64, n: usize) -> f64 {
    delta_kib as f64 / n.max(1) as f64
}

async fn idle(a: Args) {
    let a = Arc::new(a);
    let (rss0, _) = memory(a.pid);
    let started = Instant::now();
    // Open in waves of 200 so that the listen backlog is not the thing measured.
    let mut socks: Vec<Ws> = Vec::with_capacity(a.conns);
    let mut failed = 0usize;
    let mut i = 0;
    while i < a.conns {
        let wave: Vec<_> = (i..(i + 200).min(a.conns))
            .map(|k| {
                let a = a.clone();
                tokio::spawn(async move {
                    let mut ws = connect(&a, &format!("idle-{}", k % a.docs)).await?;
                    ws.send(step1()).await.map_err(|e| e.to_string())?;
                    until_step2(&mut ws).await?;
                    Ok::<Ws, String>(ws)
                })
            })
            .collect();
        for h in wave {
            match h.await {
                Ok(Ok(ws)) => socks.push(ws),
                Ok(Err(e)) => {
                    failed += 1;
                    if failed < 5 {
                        eprintln!("connection failed: {e}");
                    }
                }
                Err(_) => failed += 1,
            }
        }
        i += 200;
    }
    let setup = started.elapsed().as_secs_f64();
    // Let allocations settle (the first pings, the writers' queues).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss1, hwm1) = memory(a.pid);
    let open = socks.len();
    println!(
        "{{\"measure\":\"idle\",\"conns\":{open},\"failed\":{failed},\"docs\":{},\"setup_s\":{setup:.2},\
         \"setup_per_s\":{:.0},\"rss_before_kib\":{rss0},\"rss_open_kib\":{rss1},\"hwm_kib\":{hwm1},\
         \"kib_per_conn\":{:.1}}}",
        a.docs,
        open as f64 / setup,
        kib_per(rss1 as i64 - rss0 as i64, open),
    );
    for mut ws in socks {
        let _ = ws.close(None).await;
    }
    // Allocators give memory back after a delay (jemalloc: 10 s of decay by default).
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (rss2, hwm2) = memory(a.pid);
    println!(
        "{{\"measure\":\"after_close\",\"rss_kib\":{rss2},\"hwm_kib\":{hwm2},\"returned_kib\":{}}}",
        rss1 as i64 - rss2 as i64
    );
}

/// A light room's round trip during the storm: one client inserts a marker every 50 ms, another
/// times its arrival. Returns the latencies in ms.
async fn light_room(a: Arc<Args>, stop: Arc<AtomicBool>) -> Vec<f64> {
    let (Ok(mut w), Ok(mut r)) = (connect(&a, &a.light).await, connect(&a, &a.light).await) else {
        return Vec::new();
    };
    let _ = w.send(step1()).await;
    let _ = r.send(step1()).await;
    let _ = until_step2(&mut w).await;
    let _ = until_step2(&mut r).await;
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    let mut lat = Vec::new();
    let mut n = 0u64;
    while !stop.load(Relaxed) {
        n += 1;
        let marker = format!("#L{n};");
        let update = {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, &marker);
            txn.encode_update_v1()
        };
        let sent = Instant::now();
        let msg = Message::Sync(SyncMessage::Update(update)).encode_v1();
        if w.send(WsMessage::Binary(msg.into())).await.is_err() {
            break;
        }
        let deadline = sent + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, r.next()).await {
                Ok(Some(Ok(WsMessage::Binary(b))))
                    if b.windows(marker.len()).any(|x| x == marker.as_bytes()) =>
                {
                    lat.push(sent.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        // Drain what the writer got (its own echo is not sent; awareness, pings).
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), w.next()).await {}
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lat
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn storm(a: Args) {
    let a = Arc::new(a);
    let (rss0, _) = memory(a.pid);
    let stop = Arc::new(AtomicBool::new(false));
    let light = tokio::spawn(light_room(a.clone(), stop.clone()));
    // Peak memory while the storm lasts (VmHWM may hold an earlier peak: sample RSS too).
    let peak = Arc::new(AtomicU64::new(rss0));
    let sampler = {
        let (peak, stop, pid) = (peak.clone(), stop.clone(), a.pid);
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                peak.fetch_max(memory(pid).0, Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let joiners: Vec<_> = (0..a.conns)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move {
                let mut ws = connect(&a, &a.doc).await?;
                ws.send(step1()).await.map_err(|e| e.to_string())?;
                let bytes = until_step2(&mut ws).await?;
                Ok::<(f64, usize, Ws), String>((started.elapsed().as_secs_f64(), bytes, ws))
            })
        })
        .collect();
    let mut done = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut keep = Vec::new();
    for j in joiners {
        match j.await {
            Ok(Ok((t, bytes, ws))) => {
                done.push((t, bytes));
                keep.push(ws);
            }
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let all = started.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    let _ = sampler.await;
    let mut lat = light.await.unwrap_or_default();
    lat.sort_by(f64::total_cmp);
    let last = done.iter().map(|d| d.0).fold(0.0, f64::max);
    let bytes = done.first().map(|d| d.1).unwrap_or(0);
    failures.sort();
    failures.dedup();
    println!(
        "{{\"measure\":\"storm\",\"clients\":{},\"served\":{},\"failed\":{},\"failures\":{:?},\
         \"reply_bytes\":{bytes},\"last_served_s\":{last:.2},\"all_done_s\":{all:.2},\
         \"rss_before_kib\":{rss0},\"rss_peak_kib\":{},\"light_samples\":{},\"light_p50_ms\":{:.1},\
         \"light_p99_ms\":{:.1},\"light_max_ms\":{:.1}}}",
        a.conns,
        done.len(),
        a.conns - done.len(),
        failures,
        peak.load(Relaxed),
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0),
    );
    drop(keep);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (rss2, _) = memory(a.pid);
    println!("{{\"measure\":\"after_storm\",\"rss_kib\":{rss2}}}");
}

/// The light room alone for `--seconds`.
async fn light(a: Args) {
    let a = Arc::new(a);
    let stop = Arc::new(AtomicBool::new(false));
    let room = tokio::spawn(light_room(a.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(a.seconds as u64)).await;
    stop.store(true, Relaxed);
    let mut lat = room.await.unwrap_or_default();
    lat.sort_by(f64::total_cmp);
    println!(
        "{{\"measure\":\"light\",\"seconds\":{},\"samples\":{},\"p50_ms\":{:.1},\"p99_ms\":{:.1},\"max_ms\":{:.1}}}",
        a.seconds,
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0),
    );
}

#[tokio::main]
async fn main() {
    let a = args();
    match a.mode.as_str() {
        "idle" => idle(a).await,
        "storm" => storm(a).await,
        "light" => light(a).await,
        _ => usage(),
    }
}
