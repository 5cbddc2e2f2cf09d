//! A TCP proxy that holds every byte a client sends for a fixed time before passing it on:
//! an in-memory relay behind it behaves like a relay that pays a durable write's cost for each
//! update (issue #15: "within the price of durability of the fastest in-memory relay"), so
//! bench-latency.sh can measure the relay with and without that price in the same run and
//! through the same harnesses as collab-bridge.
//!
//! Client → server bytes wait `--delay-us` (measured from when the proxy read them, on a
//! thread that sleeps until they are due); server → client bytes are copied as they are read.
//! Each direction of each connection has its own threads, so one connection never waits for
//! another.
//! Usage: delay --listen 127.0.0.1:PORT --to 127.0.0.1:PORT --delay-us 1100

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

fn main() {
    let mut listen = None;
    let mut to = None;
    let mut delay = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--listen" => listen = Some(value()),
            "--to" => to = Some(value()),
            "--delay-us" => {
                let us = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--delay-us takes microseconds"));
                delay = Duration::from_micros(us);
            }
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let (Some(listen), Some(to)) = (listen, to) else {
        usage("--listen and --to are required")
    };
    let listener = TcpListener::bind(&listen).unwrap_or_else(|e| usage(&format!("{listen}: {e}")));
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let to = to.clone();
        thread::spawn(move || {
            if let Ok(server) = TcpStream::connect(&to) {
                proxy(client, server, delay);
            }
        });
    }
}

fn usage(why: &str) -> ! {
    eprintln!("delay: {why}\nusage: delay --listen ADDR --to ADDR --delay-us N");
    std::process::exit(2)
}

fn proxy(client: TcpStream, server: TcpStream, delay: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // Server → client: as it comes, with no queue and no second thread.
    thread::spawn(move || {
        let (mut from, mut to) = (s2, c2);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
    delayed_copy(client, server, delay);
}

/// Copies `from` to `to`, each read held until `delay` after it was read.
fn delayed_copy(mut from: TcpStream, to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = thread::spawn(move || {
        let mut to = to;
        for (due, bytes) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}
