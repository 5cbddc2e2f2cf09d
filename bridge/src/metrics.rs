//! Counters, gauges and histograms, rendered by hand in the Prometheus text exposition format.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A fixed-bucket histogram with atomic counts; the sum is kept in micro-units.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add((v.max(0.0) * 1e6).round() as u64, Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Relaxed));
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Finer, for the stages of one update's way that should take well under a millisecond.
const FINE_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

pub struct Metrics {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub slow_clients: AtomicU64,
    pub open_documents: AtomicU64,
    pub updates_in: AtomicU64,
    pub updates_rejected: AtomicU64,
    pub updates_out: AtomicU64,
    pub awareness_in: AtomicU64,
    pub awareness_dropped: AtomicU64,
    pub expensive_delayed: AtomicU64,
    pub write_budget_waits: AtomicU64,
    pub lane_set_aside: AtomicU64,
    pub notifications: AtomicU64,
    pub catchup_fetches: AtomicU64,
    pub listener_up: AtomicU64,
    pub listener_reconnects: AtomicU64,
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub notify_lag_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub txn_documents: Histogram,
    pub commit_to_notify_seconds: Histogram,
    pub fanout_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            slow_clients: AtomicU64::new(0),
            open_documents: AtomicU64::new(0),
            updates_in: AtomicU64::new(0),
            updates_rejected: AtomicU64::new(0),
            updates_out: AtomicU64::new(0),
            awareness_in: AtomicU64::new(0),
            awareness_dropped: AtomicU64::new(0),
            expensive_delayed: AtomicU64::new(0),
            write_budget_waits: AtomicU64::new(0),
            lane_set_aside: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
            catchup_fetches: AtomicU64::new(0),
            listener_up: AtomicU64::new(0),
            listener_reconnects: AtomicU64::new(0),
            batch_size: Histogram::new(SIZES),
            commit_seconds: Histogram::new(SECONDS),
            notify_lag_seconds: Histogram::new(SECONDS),
            queue_seconds: Histogram::new(FINE_SECONDS),
            txn_documents: Histogram::new(SIZES),
            commit_to_notify_seconds: Histogram::new(FINE_SECONDS),
            fanout_seconds: Histogram::new(FINE_SECONDS),
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut scalar = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        };
        scalar(
            "collab_bridge_connections",
            "gauge",
            "Open WebSocket connections.",
            &self.connections,
        );
        scalar(
            "collab_bridge_connections_total",
            "counter",
            "WebSocket connections accepted.",
            &self.connections_total,
        );
        scalar(
            "collab_bridge_connections_refused_total",
            "counter",
            "WebSocket connections refused by a limit (--max-connections, per subject, connect rate, refusal back-off).",
            &self.connections_refused,
        );
        scalar(
            "collab_bridge_slow_clients_total",
            "counter",
            "Connections closed because their send queue was over its byte budget.",
            &self.slow_clients,
        );
        scalar(
            "collab_bridge_open_documents",
            "gauge",
            "Documents with at least one connection on this bridge.",
            &self.open_documents,
        );
        scalar(
            "collab_bridge_updates_in_total",
            "counter",
            "Client updates stored.",
            &self.updates_in,
        );
        scalar(
            "collab_bridge_updates_rejected_total",
            "counter",
            "Client updates refused (malformed, not integrable, too large or read-only).",
            &self.updates_rejected,
        );
        scalar(
            "collab_bridge_updates_out_total",
            "counter",
            "Update messages sent to clients.",
            &self.updates_out,
        );
        scalar(
            "collab_bridge_awareness_in_total",
            "counter",
            "Awareness messages received from clients.",
            &self.awareness_in,
        );
        scalar(
            "collab_bridge_awareness_dropped_total",
            "counter",
            "Awareness messages or entries dropped (over the rate, or a client id of another user).",
            &self.awareness_dropped,
        );
        scalar(
            "collab_bridge_expensive_delayed_total",
            "counter",
            "Sync step 1 or awareness queries held back by their connection's rate.",
            &self.expensive_delayed,
        );
        scalar(
            "collab_bridge_write_budget_waits_total",
            "counter",
            "Updates that waited for room in the global budget of updates being stored.",
            &self.write_budget_waits,
        );
        scalar(
            "collab_bridge_lane_set_aside_total",
            "counter",
            "Documents a write lane set aside because their row stayed locked.",
            &self.lane_set_aside,
        );
        scalar(
            "collab_bridge_notifications_total",
            "counter",
            "Notifications received on channel collab.",
            &self.notifications,
        );
        scalar(
            "collab_bridge_catchup_fetches_total",
            "counter",
            "collab.updates_since calls (gaps, large batches, listener reconnects).",
            &self.catchup_fetches,
        );
        scalar(
            "collab_bridge_listener_up",
            "gauge",
            "1 while the LISTEN connection is established.",
            &self.listener_up,
        );
        scalar(
            "collab_bridge_listener_reconnects_total",
            "counter",
            "Times the LISTEN connection was re-established.",
            &self.listener_reconnects,
        );
        self.batch_size.render(
            &mut out,
            "collab_bridge_batch_size",
            "Updates per collab.apply_updates call (group commit).",
        );
        self.commit_seconds.render(
            &mut out,
            "collab_bridge_commit_seconds",
            "Duration of collab.apply_updates calls.",
        );
        self.notify_lag_seconds.render(
            &mut out,
            "collab_bridge_notify_lag_seconds",
            "From the start of this bridge's collab.apply_updates call to the arrival of its notification.",
        );
        self.queue_seconds.render(
            &mut out,
            "collab_bridge_queue_seconds",
            "Time a client update waits for its transaction to start (group commit).",
        );
        self.txn_documents.render(
            &mut out,
            "collab_bridge_transaction_documents",
            "Documents per write transaction (group commit across documents).",
        );
        self.commit_to_notify_seconds.render(
            &mut out,
            "collab_bridge_commit_to_notify_seconds",
            "From the end of this bridge's write transaction to the arrival of its notification.",
        );
        self.fanout_seconds.render(
            &mut out,
            "collab_bridge_fanout_seconds",
            "From the arrival of an update notification to its frame being written to a client socket.",
        );
        out
    }
}

enum LagMark {
    /// The write transaction started and finished at these instants.
    Committed(Instant, Instant),
    Arrived(Instant),
}

/// Pairs this bridge's commits with their notifications, whichever is seen first, to measure
/// notification lag (keyed by document and last sequence of the batch).
#[derive(Default)]
pub struct LagTracker {
    marks: Mutex<HashMap<(String, i64), LagMark>>,
    /// Commit-to-notification histogram, handed over with the first commit.
    after_commit: OnceLock<Arc<Metrics>>,
}

impl LagTracker {
    fn with_marks(&self, f: impl FnOnce(&mut HashMap<(String, i64), LagMark>)) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut marks);
        if marks.len() > 4096 {
            let now = Instant::now();
            marks.retain(|_, m| match m {
                LagMark::Committed(t, _) | LagMark::Arrived(t) => {
                    now.duration_since(*t) < Duration::from_secs(60)
                }
            });
        }
    }

    /// A batch whose transaction ran from `started` to `finished` was committed as `..=seq_to`.
    pub fn committed(
        &self,
        doc: &str,
        seq_to: i64,
        started: Instant,
        finished: Instant,
        metrics: &Arc<Metrics>,
    ) {
        let _ = self.after_commit.get_or_init(|| metrics.clone());
        self.with_marks(|m| match m.remove(&(doc.to_string(), seq_to)) {
            Some(LagMark::Arrived(t)) => {
                metrics
                    .notify_lag_seconds
                    .observe_duration(t.saturating_duration_since(started));
                metrics
                    .commit_to_notify_seconds
                    .observe_duration(t.saturating_duration_since(finished));
            }
            _ => {
                m.insert(
                    (doc.to_string(), seq_to),
                    LagMark::Committed(started, finished),
                );
            }
        });
    }

    /// The notification of a batch of this bridge ending at `seq_to` arrived.
    pub fn arrived(&self, doc: &str, seq_to: i64, hist: &Histogram) {
        let now = Instant::now();
        self.with_marks(|m| match m.remove(&(doc.to_string(), seq_to)) {
            Some(LagMark::Committed(started, finished)) => {
                hist.observe_duration(now.saturating_duration_since(started));
                if let Some(metrics) = self.after_commit.get() {
                    metrics
                        .commit_to_notify_seconds
                        .observe_duration(now.saturating_duration_since(finished));
                }
            }
            _ => {
                m.insert((doc.to_string(), seq_to), LagMark::Arrived(now));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histograms_cumulatively() {
        let m = Metrics::default();
        m.batch_size.observe(3.0);
        m.batch_size.observe(1.0);
        let text = m.render();
        assert!(text.contains("collab_bridge_batch_size_bucket{le=\"1\"} 1"));
        assert!(text.contains("collab_bridge_batch_size_bucket{le=\"4\"} 2"));
        assert!(text.contains("collab_bridge_batch_size_count 2"));
        assert!(text.contains("collab_bridge_batch_size_sum 4"));
    }
}
