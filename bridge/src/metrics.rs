//! Counters, gauges and histograms, exposed with `prometheus-client` (OpenMetrics text).
//!
//! Counters and gauges stay plain atomics where they are counted (no registry handles threaded
//! through the code); a [`Collector`] reads them at each scrape. Histograms are the library's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// A fixed-bucket histogram (prometheus-client's).
#[derive(Debug)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram(prometheus_client::metrics::histogram::Histogram::new(
            bounds.iter().copied(),
        ))
    }

    pub fn observe(&self, v: f64) {
        self.0.observe(v);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }
}

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Finer, for the stages of one update's way that should take well under a millisecond (the
/// bounds between 0.5 and 3 ms tell a light-load p50 and p99 apart).
const FINE_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];
/// For write transactions: as fine as [`FINE_SECONDS`] below 3 ms, as long as [`SECONDS`].
const TXN_SECONDS: &[f64] = &[
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

#[derive(Debug)]
pub struct Metrics {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub slow_clients: AtomicU64,
    pub open_documents: AtomicU64,
    /// Documents open on Hocuspocus sockets, and those refused there (per document).
    pub hocuspocus_documents: AtomicU64,
    pub hocuspocus_refused: AtomicU64,
    pub updates_in: AtomicU64,
    pub updates_rejected: AtomicU64,
    pub updates_out: AtomicU64,
    pub delivered_at_commit: AtomicU64,
    pub awareness_in: AtomicU64,
    pub awareness_dropped: AtomicU64,
    pub expensive_delayed: AtomicU64,
    pub write_budget_waits: AtomicU64,
    pub lane_set_aside: AtomicU64,
    pub notifications: AtomicU64,
    pub notifications_rejected: AtomicU64,
    pub catchup_fetches: AtomicU64,
    pub listener_up: AtomicU64,
    pub listener_reconnects: AtomicU64,
    /// `collab.cache_bytes` of the last write-lane connection set up (what --write-cache-mb got).
    pub write_cache_bytes: AtomicU64,
    /// `collab.search_backlog()` at the refresher's last tick, summed over shards: documents
    /// whose search text is stale, and the age of the oldest write search does not have yet.
    pub search_stale_documents: AtomicU64,
    pub search_stale_ms: AtomicU64,
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
            hocuspocus_documents: AtomicU64::new(0),
            hocuspocus_refused: AtomicU64::new(0),
            updates_in: AtomicU64::new(0),
            updates_rejected: AtomicU64::new(0),
            updates_out: AtomicU64::new(0),
            delivered_at_commit: AtomicU64::new(0),
            awareness_in: AtomicU64::new(0),
            awareness_dropped: AtomicU64::new(0),
            expensive_delayed: AtomicU64::new(0),
            write_budget_waits: AtomicU64::new(0),
            lane_set_aside: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
            notifications_rejected: AtomicU64::new(0),
            catchup_fetches: AtomicU64::new(0),
            listener_up: AtomicU64::new(0),
            listener_reconnects: AtomicU64::new(0),
            write_cache_bytes: AtomicU64::new(0),
            search_stale_documents: AtomicU64::new(0),
            search_stale_ms: AtomicU64::new(0),
            batch_size: Histogram::new(SIZES),
            commit_seconds: Histogram::new(TXN_SECONDS),
            notify_lag_seconds: Histogram::new(SECONDS),
            queue_seconds: Histogram::new(FINE_SECONDS),
            txn_documents: Histogram::new(SIZES),
            commit_to_notify_seconds: Histogram::new(FINE_SECONDS),
            fanout_seconds: Histogram::new(FINE_SECONDS),
        }
    }
}

impl Metrics {
    /// The OpenMetrics text of every metric.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(self.clone())));
        let mut out = String::with_capacity(8192);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        out
    }
}

/// Reads the metrics at a scrape.
#[derive(Debug)]
struct Scrape(Arc<Metrics>);

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: &AtomicU64,
) -> std::fmt::Result {
    let c = ConstCounter::new(v.load(Relaxed));
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: &AtomicU64,
) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(v.load(Relaxed)).unwrap_or(i64::MAX));
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn histogram(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    h: &Histogram,
) -> std::fmt::Result {
    h.0.encode(enc.encode_descriptor(name, help, None, MetricType::Histogram)?)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = &self.0;
        gauge(
            &mut enc,
            "collab_bridge_connections",
            "Open WebSocket connections.",
            &m.connections,
        )?;
        // As collab_bridge_connections_accepted_total: OpenMetrics allows one family per name,
        // and collab_bridge_connections is the gauge.
        counter(
            &mut enc,
            "collab_bridge_connections_accepted",
            "WebSocket connections accepted.",
            &m.connections_total,
        )?;
        counter(&mut enc, "collab_bridge_connections_refused", "WebSocket connections refused by a limit (--max-connections, per subject, connect rate, refusal back-off).", &m.connections_refused)?;
        counter(
            &mut enc,
            "collab_bridge_slow_clients",
            "Connections closed because their send queue was over its byte budget.",
            &m.slow_clients,
        )?;
        gauge(
            &mut enc,
            "collab_bridge_open_documents",
            "Documents with at least one connection on this bridge.",
            &m.open_documents,
        )?;
        gauge(
            &mut enc,
            "collab_bridge_write_cache_bytes",
            "Memory a write lane's backend may use for decoded documents (its collab.cache_bytes): \
             below --write-cache-mb when the bridge's role may not set it.",
            &m.write_cache_bytes,
        )?;
        gauge(
            &mut enc,
            "collab_bridge_search_stale_documents",
            "Documents whose search text is behind their writes (collab.search_backlog, all \
             shards, at the search refresher's last tick).",
            &m.search_stale_documents,
        )?;
        let stale = ConstGauge::new(m.search_stale_ms.load(Relaxed) as f64 / 1000.0);
        stale.encode(enc.encode_descriptor(
            "collab_bridge_search_stale_seconds",
            "Age of the oldest write that search does not find yet (0: search is current).",
            None,
            stale.metric_type(),
        )?)?;
        gauge(
            &mut enc,
            "collab_bridge_hocuspocus_documents",
            "Documents open on Hocuspocus sockets (/hocuspocus), counted once per socket.",
            &m.hocuspocus_documents,
        )?;
        counter(
            &mut enc,
            "collab_bridge_hocuspocus_refused",
            "Documents refused on Hocuspocus sockets (PermissionDenied: rights, token, limits).",
            &m.hocuspocus_refused,
        )?;
        counter(
            &mut enc,
            "collab_bridge_updates_in",
            "Client updates stored.",
            &m.updates_in,
        )?;
        counter(
            &mut enc,
            "collab_bridge_updates_rejected",
            "Client updates refused (malformed, not integrable, too large or read-only).",
            &m.updates_rejected,
        )?;
        counter(
            &mut enc,
            "collab_bridge_updates_out",
            "Update messages sent to clients.",
            &m.updates_out,
        )?;
        counter(
            &mut enc,
            "collab_bridge_delivered_at_commit",
            "Updates written by this bridge that its rooms delivered when their transaction \
             committed (before their notification).",
            &m.delivered_at_commit,
        )?;
        counter(
            &mut enc,
            "collab_bridge_awareness_in",
            "Awareness messages received from clients.",
            &m.awareness_in,
        )?;
        counter(&mut enc, "collab_bridge_awareness_dropped", "Awareness messages or entries dropped (over the rate, or a client id of another user).", &m.awareness_dropped)?;
        counter(
            &mut enc,
            "collab_bridge_expensive_delayed",
            "Sync step 1 or awareness queries held back by their connection's rate.",
            &m.expensive_delayed,
        )?;
        counter(
            &mut enc,
            "collab_bridge_write_budget_waits",
            "Updates that waited for room in the global budget of updates being stored.",
            &m.write_budget_waits,
        )?;
        counter(
            &mut enc,
            "collab_bridge_lane_set_aside",
            "Documents a write lane set aside because their row stayed locked.",
            &m.lane_set_aside,
        )?;
        counter(
            &mut enc,
            "collab_bridge_notifications",
            "Notifications received on channel collab.",
            &m.notifications,
        )?;
        counter(
            &mut enc,
            "collab_bridge_notifications_rejected",
            "Notifications dropped: not sealed with a notification key (forged or damaged), \
             broadcasts too old, deletions the database does not confirm.",
            &m.notifications_rejected,
        )?;
        counter(
            &mut enc,
            "collab_bridge_catchup_fetches",
            "collab.updates_since calls (gaps, large batches, listener reconnects).",
            &m.catchup_fetches,
        )?;
        gauge(
            &mut enc,
            "collab_bridge_listener_up",
            "1 while the LISTEN connection is established.",
            &m.listener_up,
        )?;
        counter(
            &mut enc,
            "collab_bridge_listener_reconnects",
            "Times the LISTEN connection was re-established.",
            &m.listener_reconnects,
        )?;
        histogram(
            &mut enc,
            "collab_bridge_batch_size",
            "Updates per collab.apply_updates call (group commit).",
            &m.batch_size,
        )?;
        histogram(
            &mut enc,
            "collab_bridge_commit_seconds",
            "Duration of collab.apply_updates calls.",
            &m.commit_seconds,
        )?;
        histogram(&mut enc, "collab_bridge_notify_lag_seconds", "From the start of this bridge's collab.apply_updates call to the arrival of its notification.", &m.notify_lag_seconds)?;
        histogram(
            &mut enc,
            "collab_bridge_queue_seconds",
            "Time a client update waits for its transaction to start (group commit).",
            &m.queue_seconds,
        )?;
        histogram(
            &mut enc,
            "collab_bridge_transaction_documents",
            "Documents per write transaction (group commit across documents).",
            &m.txn_documents,
        )?;
        histogram(
            &mut enc,
            "collab_bridge_commit_to_notify_seconds",
            "From the end of this bridge's write transaction to the arrival of its notification.",
            &m.commit_to_notify_seconds,
        )?;
        histogram(&mut enc, "collab_bridge_fanout_seconds", "From the arrival of an update at its room (its notification, or the commit of this bridge's own write) to its frame being written to a client socket.", &m.fanout_seconds)?;
        Ok(())
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
    fn renders_counters_gauges_and_cumulative_histograms() {
        let m = Arc::new(Metrics::default());
        m.batch_size.observe(3.0);
        m.batch_size.observe(1.0);
        m.connections.store(7, Relaxed);
        m.updates_in.fetch_add(5, Relaxed);
        let text = m.render();
        assert!(
            text.contains("collab_bridge_batch_size_bucket{le=\"1.0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("collab_bridge_batch_size_bucket{le=\"4.0\"} 2"),
            "{text}"
        );
        assert!(text.contains("collab_bridge_batch_size_count 2"), "{text}");
        assert!(text.contains("collab_bridge_batch_size_sum 4.0"), "{text}");
        assert!(text.contains("\ncollab_bridge_connections 7\n"), "{text}");
        assert!(
            text.contains("\ncollab_bridge_updates_in_total 5\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE collab_bridge_updates_in counter"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        // One family per name: the gauge and the accepted-connections counter do not collide.
        assert_eq!(
            text.matches("# TYPE collab_bridge_connections ").count(),
            1,
            "{text}"
        );
    }
}
