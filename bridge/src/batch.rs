//! Per-document group commit: while one `collab.apply_updates` call for a document is in flight,
//! updates arriving for it queue up and all go into the next single call. No timer: an idle
//! document's first update is written at once.
//!
//! A batch takes the origin of its writers when they are all the same connection, otherwise
//! `<bridge-id>/*` (delivered to everyone, the writers included: re-applying is harmless in Yjs).
//! When a batch is refused because of one bad update, its updates are retried one by one so
//! that only the bad one fails.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use deadpool_postgres::Pool;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use crate::db;
use crate::error::{Error, Result};
use crate::fanout::lock;
use crate::metrics::{LagTracker, Metrics};

struct Item {
    update: Vec<u8>,
    origin: String,
    done: oneshot::Sender<Result<i64>>,
}

struct Inner {
    pool: Pool,
    metrics: Arc<Metrics>,
    lag: Arc<LagTracker>,
    mixed_origin: String,
    /// Documents with a writer task; the queue holds what arrived since its last call.
    queues: Mutex<HashMap<String, Vec<Item>>>,
    tracker: TaskTracker,
}

#[derive(Clone)]
pub struct Batcher {
    inner: Arc<Inner>,
}

impl Batcher {
    pub fn new(
        pool: Pool,
        metrics: Arc<Metrics>,
        lag: Arc<LagTracker>,
        bridge_id: &str,
        tracker: TaskTracker,
    ) -> Self {
        Batcher {
            inner: Arc::new(Inner {
                pool,
                metrics,
                lag,
                mixed_origin: format!("{bridge_id}/*"),
                queues: Mutex::new(HashMap::new()),
                tracker,
            }),
        }
    }

    /// Queues one update for `doc`; the receiver gets its sequence once stored, or the error.
    pub fn submit(
        &self,
        doc: &str,
        update: Vec<u8>,
        origin: String,
    ) -> oneshot::Receiver<Result<i64>> {
        let (done, rx) = oneshot::channel();
        let item = Item {
            update,
            origin,
            done,
        };
        let mut queues = lock(&self.inner.queues);
        match queues.get_mut(doc) {
            Some(queue) => queue.push(item),
            None => {
                queues.insert(doc.to_string(), vec![item]);
                let inner = self.inner.clone();
                let doc = doc.to_string();
                self.inner
                    .tracker
                    .spawn(async move { writer(inner, doc).await });
            }
        }
        rx
    }
}

/// The one writer of a document: drains its queue one call at a time, then goes away.
async fn writer(inner: Arc<Inner>, doc: String) {
    loop {
        let items = {
            let mut queues = lock(&inner.queues);
            match queues.get_mut(&doc) {
                Some(q) if !q.is_empty() => std::mem::take(q),
                _ => {
                    queues.remove(&doc);
                    return;
                }
            }
        };
        commit(&inner, &doc, items).await;
    }
}

async fn commit(inner: &Inner, doc: &str, items: Vec<Item>) {
    let origin = match items.first() {
        Some(first) if items.iter().all(|i| i.origin == first.origin) => first.origin.clone(),
        _ => inner.mixed_origin.clone(),
    };
    let updates: Vec<&[u8]> = items.iter().map(|i| i.update.as_slice()).collect();
    match call(inner, doc, &updates, &origin).await {
        Ok(last) => {
            let first = last - items.len() as i64 + 1;
            for (i, item) in items.into_iter().enumerate() {
                let _ = item.done.send(Ok(first + i as i64));
            }
        }
        Err(e) if e.is_client_data() && items.len() > 1 => {
            tracing::debug!(doc, "batch of {} refused ({e}); one by one", items.len());
            for item in items {
                let r = call(inner, doc, &[item.update.as_slice()], &item.origin).await;
                let _ = item.done.send(r);
            }
        }
        Err(e) => {
            for item in items {
                let _ = item.done.send(Err(e.clone()));
            }
        }
    }
}

async fn call(inner: &Inner, doc: &str, updates: &[&[u8]], origin: &str) -> Result<i64> {
    let started = Instant::now();
    let r = db::apply_updates(&inner.pool, doc, updates, origin).await;
    let m = &inner.metrics;
    match &r {
        Ok(last) => {
            m.batch_size.observe(updates.len() as f64);
            m.commit_seconds.observe_duration(started.elapsed());
            m.updates_in.fetch_add(updates.len() as u64, Relaxed);
            inner
                .lag
                .committed(doc, *last, started, &m.notify_lag_seconds);
        }
        Err(e) if e.is_client_data() && updates.len() == 1 => {
            m.updates_rejected.fetch_add(updates.len() as u64, Relaxed);
        }
        Err(Error::Unavailable(e)) => tracing::warn!(doc, "write failed: {e}"),
        Err(_) => {}
    }
    r
}
