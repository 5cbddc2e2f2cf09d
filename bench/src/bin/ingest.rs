//! Replays the automerge-paper trace (259,778 single-character edits) three ways and prints the
//! ratios: in-process yrs (the limit), batched SQL ingest (`collab.apply_updates`), and one
//! update per SQL call; then times reads and an SQL edit on the final document.
//!
//! Run: `cargo run --release -p collab-bench --bin ingest` (scripts/bench.sh does the set-up).
//! It starts its own throwaway PostgreSQL cluster with the installed extension.

use std::time::{Duration, Instant};

use collab_tests::Cluster;
use tokio_postgres::Client;
use yrs::updates::decoder::Decode;
use yrs::{GetString, ReadTxn, StateVector, Transact};

const BATCH: usize = 1000;

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// CPU time (user + system) a process has used: figures that hold up when other work shares
/// the machine's two cores.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at index 2 (state).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median of `runs` timings of `sql` on `db`, after one untimed call.
async fn warm(
    db: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    runs: usize,
) -> Duration {
    let stmt = db.prepare(sql).await.expect("prepare");
    db.query(&stmt, params).await.expect("warm-up");
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        db.query(&stmt, params).await.expect("query");
        t.push(start.elapsed());
    }
    median(t)
}

/// Median over fresh connections of the first call: the backend has no decoded document yet.
async fn cold(
    cluster: &Cluster,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    runs: usize,
) -> Duration {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let db = cluster.connect().await;
        let stmt = db.prepare(sql).await.expect("prepare");
        let start = Instant::now();
        db.query(&stmt, params).await.expect("query");
        t.push(start.elapsed());
    }
    median(t)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let single_limit: usize = std::env::var("SINGLE_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let trace = collab_trace::load("automerge-paper").expect("trace");
    let updates = trace.to_updates(1);
    let n = updates.len();
    let bytes: usize = updates.iter().map(Vec::len).sum();
    println!(
        "trace automerge-paper: {n} updates, {bytes} bytes, final text {} chars",
        trace.end_content.chars().count()
    );

    // 1. In-process yrs: decode and apply each update, one transaction each.
    let cpu0 = cpu_time("self");
    let start = Instant::now();
    let doc = yrs::Doc::new();
    for u in &updates {
        let update = yrs::Update::decode_v1(u).expect("decodes");
        doc.transact_mut().apply_update(update).expect("applies");
    }
    let yrs_time = start.elapsed();
    let yrs_cpu = cpu_time("self").saturating_sub(cpu0);
    let text = doc.get_or_insert_text("content");
    assert_eq!(text.get_string(&doc.transact()), trace.end_content);
    let yrs_rate = per_sec(n, yrs_time);
    println!(
        "in-process yrs apply:          {:>9.0} updates/s  ({:.2} µs/update wall, {:.2} µs CPU)",
        yrs_rate,
        1e6 / yrs_rate,
        yrs_cpu.as_secs_f64() * 1e6 / n as f64
    );

    // In-process load-and-read of the final document: the reference for collab.text.
    let final_state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let mut t = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let d = yrs::Doc::new();
        d.transact_mut()
            .apply_update(yrs::Update::decode_v1(&final_state).expect("decodes"))
            .expect("applies");
        let s = d.get_or_insert_text("content").get_string(&d.transact());
        assert_eq!(s.len(), trace.end_content.len());
        t.push(start.elapsed());
    }
    let load_and_read = median(t);
    println!(
        "in-process load+read final:    {} (state {} bytes)",
        ms(load_and_read),
        final_state.len()
    );

    let cluster = Cluster::start();
    let db = cluster.connect().await;
    let backend: i32 = db
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let backend = backend.to_string();
    // `collab.search_lag` of the ingest session: 0 (SQL's default) re-indexes the document's
    // text at every call, as a plain SQL writer gets; the bridge's lanes run with a lag
    // (`--search-lag-ms`), which leaves the ingest path alone. SEARCH_LAG_MS=5000 is the bridge's.
    let search_lag: u32 = std::env::var("SEARCH_LAG_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    db.batch_execute(&format!("SET collab.search_lag = {search_lag}"))
        .await
        .expect("search_lag");
    println!("collab.search_lag = {search_lag} ms");

    // 2. Batched SQL ingest (default compaction policy: checkpoints as the log grows).
    let stmt = db
        .prepare("SELECT collab.apply_updates($1, $2)")
        .await
        .expect("prepare");
    let cpu0 = cpu_time(&backend);
    let start = Instant::now();
    for chunk in updates.chunks(BATCH) {
        let batch: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        db.query_one(&stmt, &[&"paper", &batch])
            .await
            .expect("apply_updates");
    }
    let batched_time = start.elapsed();
    let batched_cpu = cpu_time(&backend).saturating_sub(cpu0);
    let batched_rate = per_sec(n, batched_time);
    println!(
        "SQL apply_updates ({BATCH}/call):   {:>9.0} updates/s  ({:.2} µs/update wall, {:.2} µs backend CPU) = {:.0}% of in-process yrs (CPU: {:.0}%)",
        batched_rate,
        1e6 / batched_rate,
        batched_cpu.as_secs_f64() * 1e6 / n as f64,
        100.0 * batched_rate / yrs_rate,
        100.0 * yrs_cpu.as_secs_f64() / batched_cpu.as_secs_f64()
    );

    if std::env::var_os("INGEST_ONLY").is_some() {
        return; // for profiling the ingest path alone
    }

    // The same without checkpoints, for cold reads that must replay the whole log.
    db.batch_execute("SET collab.compact_threshold = 0")
        .await
        .expect("set");
    for chunk in updates.chunks(BATCH) {
        let batch: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        db.query_one(&stmt, &[&"paper-nockpt", &batch])
            .await
            .expect("apply_updates");
    }
    db.batch_execute("RESET collab.compact_threshold")
        .await
        .expect("reset");

    // 3. One update per SQL call (autocommit, one round trip each).
    let single_n = n.min(single_limit);
    let one = db
        .prepare("SELECT collab.apply_update($1, $2)")
        .await
        .expect("prepare");
    let cpu0 = cpu_time(&backend);
    let start = Instant::now();
    for u in &updates[..single_n] {
        db.query_one(&one, &[&"paper-single", &u.as_slice()])
            .await
            .expect("apply_update");
    }
    let single_time = start.elapsed();
    let single_cpu = cpu_time(&backend).saturating_sub(cpu0);
    let single_rate = per_sec(single_n, single_time);
    println!(
        "SQL apply_update (1/call):      {:>9.0} updates/s  ({:.2} µs/update wall, {:.2} µs backend CPU, {single_n} updates) = {:.1}% of in-process yrs",
        single_rate,
        1e6 / single_rate,
        single_cpu.as_secs_f64() * 1e6 / single_n as f64,
        100.0 * single_rate / yrs_rate
    );
    println!(
        "batched / single ratio:          {:.1}x",
        batched_rate / single_rate
    );

    let check: String = db
        .query_one("SELECT collab.text('paper')", &[])
        .await
        .expect("text")
        .get(0);
    assert_eq!(
        check, trace.end_content,
        "SQL result equals the trace's endContent"
    );
    let info = db
        .query_one(
            "SELECT checkpoint_seq, state_bytes, log_bytes, (SELECT count(*) FROM collab.checkpoints c WHERE c.doc_id = d.id) \
             FROM collab.documents d WHERE name = 'paper'",
            &[],
        )
        .await
        .expect("info");
    println!(
        "document 'paper': head checkpoint at seq {}, {} checkpoints, state {} bytes, log {} bytes",
        info.get::<_, i64>(0),
        info.get::<_, i64>(3),
        info.get::<_, i64>(1),
        info.get::<_, i64>(2)
    );

    // 4. Reads and an edit on the final document (105k characters).
    let empty_sv: Vec<u8> = vec![0];
    // A client that has everything but the last 100 updates.
    let recent = yrs::Doc::new();
    {
        let mut txn = recent.transact_mut();
        for u in &updates[..n - 100] {
            txn.apply_update(yrs::Update::decode_v1(u).expect("decodes"))
                .expect("applies");
        }
    }
    use yrs::updates::encoder::Encode;
    let recent_sv = recent.transact().state_vector().encode_v1();
    println!();
    println!(
        "{:<44} {:>12} {:>12}",
        "on the final document (median)", "warm", "cold"
    );
    for doc in ["paper", "paper-nockpt"] {
        let label = if doc == "paper" {
            "checkpointed"
        } else {
            "no checkpoint"
        };
        let rows: Vec<(
            String,
            &str,
            Vec<&(dyn tokio_postgres::types::ToSql + Sync)>,
        )> = vec![
            (
                format!("collab.text ({label})"),
                "SELECT collab.text($1)",
                vec![&doc],
            ),
            (
                format!("collab.state ({label})"),
                "SELECT collab.state($1)",
                vec![&doc],
            ),
            (
                format!("collab.diff empty sv ({label})"),
                "SELECT collab.diff($1, $2)",
                vec![&doc, &empty_sv],
            ),
            (
                format!("collab.diff recent sv ({label})"),
                "SELECT collab.diff($1, $2)",
                vec![&doc, &recent_sv],
            ),
        ];
        for (name, sql, params) in rows {
            let w = warm(&db, sql, &params, 20).await;
            let c = cold(&cluster, sql, &params, 3).await;
            println!("{name:<44} {:>12} {:>12}", ms(w), ms(c));
        }
        // An SQL edit: insert then delete the same character so the document stays the same.
        let edit = "SELECT collab.insert_text($1, 'content', 50000, 'x'), collab.delete_text($1, 'content', 50000, 1)";
        let w = warm(&db, edit, &[&doc], 20).await;
        let c = cold(&cluster, edit, &[&doc], 3).await;
        println!(
            "{:<44} {:>12} {:>12}",
            format!("insert_text+delete_text ({label})"),
            ms(w / 2),
            ms(c)
        );
    }
    println!();
    println!("targets: batched ingest >= 50% of in-process yrs; collab.text warm <= 2x in-process load+read ({}); SQL edit <= 2 ms once read", ms(load_and_read * 2));
}
