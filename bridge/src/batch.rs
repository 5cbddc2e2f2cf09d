//! Group commit, per document and across documents.
//!
//! Documents are spread over a few *lanes* (`--write-lanes`, by a hash of the name, so a
//! document always uses the same lane). Each lane commits one transaction at a time; while it is in flight, updates
//! arriving for any of its documents queue up, and the next transaction takes everything queued:
//! one statement making one `collab.apply_updates` call per document (sorted by name, so that
//! concurrent transactions of several bridges lock documents in the same order). No timer: an
//! idle lane writes its first update at once.
//!
//! Why across documents: PostgreSQL serialises the commits of notifying transactions on one
//! database-wide lock (held through the WAL flush), so one transaction per document and update
//! makes every writer queue behind every other; one transaction for many documents pays that lock,
//! the commit and the round trips once. Two lanes are enough: while one commits, the other runs
//! its statement, and more would only queue for that lock, each with fewer documents (see
//! bench/RESULTS.md). A lane keeps its pooled connection, so the backend's decoded-document cache
//! stays current for the lane's documents; the bridge sizes that cache (`collab.cache_documents`)
//! for the documents a lane serves.
//!
//! A batch takes the origin of its writers when they are all the same connection, otherwise
//! `<bridge-id>/*` (delivered to everyone, the writers included: re-applying is harmless in Yjs).
//!
//! When a transaction has committed (the statement's result, which tokio-postgres hands over
//! only after `ReadyForQuery`, i.e. after the commit), each of its documents' updates go to the
//! document's room on this bridge at once ([`RoomEvent::Committed`]: per update, with its own
//! writer's origin), so this bridge's clients do not wait for the notification to come back
//! from PostgreSQL; the room still delivers in sequence order and fetches any gap.
//! When a transaction fails for a reason other than the database being unavailable (one bad
//! update aborts all of it), its documents are retried one per transaction, and a refused batch
//! of one document one update at a time, so that only the bad update fails.
//!
//! Lanes wait at most `--write-lock-timeout-ms` for a document's row lock. A document whose row
//! an application keeps locked longer is *set aside*: a separate task keeps trying to write it
//! (and whatever arrives for it meanwhile, in order), while the lane goes on committing the
//! other documents without it.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;
use tokio_util::task::TaskTracker;

use crate::db;
use crate::error::{Error, Result};
use crate::fanout::{lock, Hub, RoomEvent};
use crate::metrics::{LagTracker, Metrics};

/// Updates and bytes one transaction takes at most (whole documents; at least one document).
const MAX_TXN_UPDATES: usize = 1024;
const MAX_TXN_BYTES: usize = 8 * 1024 * 1024;

/// With the author of each update (pg_collab 0.3.0; the extension must be upgraded before the
/// bridges, which it keeps the three-argument form for).
const APPLY: &str = "SELECT collab.apply_updates($1, $2::bytea[], $3, $4::text[])";

struct Item {
    update: Vec<u8>,
    origin: String,
    /// Who wrote it (the token's subject), recorded with the update; None: the bridge's role.
    author: Option<Arc<str>>,
    done: oneshot::Sender<Result<i64>>,
    queued: Instant,
}

/// What one lane has queued: per document, in arrival order.
#[derive(Default)]
struct LaneQueue {
    docs: HashMap<String, Vec<Item>>,
    /// Whether a writer task is running for this lane.
    running: bool,
    /// Documents whose row stayed locked: written apart, skipped by the lane.
    set_aside: HashSet<String>,
    /// The lane's connection while no writer runs: kept, so that its backend's cache of decoded
    /// documents stays current for the lane's documents (a pooled connection taken afresh would
    /// be any backend, one that has to catch up with the log or load the document again).
    conn: Option<Object>,
}

struct Inner {
    pool: Pool,
    metrics: Arc<Metrics>,
    lag: Arc<LagTracker>,
    mixed_origin: String,
    /// `SET` on each connection a lane takes.
    setup: String,
    /// `SET collab.cache_bytes` on each connection a lane takes, if wanted; the role may not
    /// be allowed to (see `connection`).
    cache_setup: Option<String>,
    /// Whether the refusal of `cache_setup` was already logged.
    cache_refused: AtomicBool,
    lanes: Vec<Mutex<LaneQueue>>,
    tracker: TaskTracker,
    /// Where committed updates are delivered to this bridge's clients.
    hub: Arc<Hub>,
}

/// How the write lanes work.
pub struct LaneConfig {
    pub lanes: usize,
    /// `collab.cache_documents` of each lane's backend.
    pub cache_documents: u32,
    /// `collab.cache_bytes` of each lane's backend, in MB (0: the server's).
    pub cache_mb: u32,
    /// `lock_timeout` of each lane's transactions.
    pub lock_timeout: Duration,
    /// `collab.search_lag` of each lane's backend (#13: a document is re-indexed for search at
    /// most that often per lane, not at every group commit).
    pub search_lag: Duration,
}

#[derive(Clone)]
pub struct Batcher {
    inner: Arc<Inner>,
}

impl Batcher {
    pub fn new(
        pool: Pool,
        lanes: LaneConfig,
        metrics: Arc<Metrics>,
        lag: Arc<LagTracker>,
        bridge_id: &str,
        tracker: TaskTracker,
        hub: Arc<Hub>,
    ) -> Self {
        Batcher {
            inner: Arc::new(Inner {
                pool,
                metrics,
                lag,
                mixed_origin: format!("{bridge_id}/*"),
                setup: format!(
                    "SET collab.cache_documents = {}; SET lock_timeout = {}; \
                     SET collab.search_lag = {}",
                    lanes.cache_documents,
                    lanes.lock_timeout.as_millis(),
                    lanes.search_lag.as_millis()
                ),
                // The call loads pg_collab's library first, so that the SET meets the real
                // (superuser-settable) setting and fails here if the role may not: a value set
                // before as a placeholder would be dropped with only a WARNING when it loads.
                cache_setup: (lanes.cache_mb > 0).then(|| {
                    format!(
                        "SELECT collab.has_access('pg_collab/lane'); \
                         SET collab.cache_bytes = '{}MB'",
                        lanes.cache_mb
                    )
                }),
                cache_refused: AtomicBool::new(false),
                lanes: (0..lanes.lanes.max(1)).map(|_| Mutex::default()).collect(),
                tracker,
                hub,
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
        self.submit_as(doc, update, origin, None)
    }

    /// [`Self::submit`] recording `author` (a token's subject) as the update's author.
    pub fn submit_as(
        &self,
        doc: &str,
        update: Vec<u8>,
        origin: String,
        author: Option<Arc<str>>,
    ) -> oneshot::Receiver<Result<i64>> {
        let (done, rx) = oneshot::channel();
        let item = Item {
            update,
            origin,
            author: author.filter(|a| recordable(a)),
            done,
            queued: Instant::now(),
        };
        let lane = lane_of(doc, self.inner.lanes.len());
        let mut queue = lock(&self.inner.lanes[lane]);
        match queue.docs.get_mut(doc) {
            Some(items) => items.push(item),
            None => {
                queue.docs.insert(doc.to_string(), vec![item]);
            }
        }
        if !queue.running && !queue.set_aside.contains(doc) {
            start_writer(&self.inner, &mut queue, lane);
        }
        rx
    }
}

/// Whether pg_collab records `author` as given (1-255 characters, no control characters): a
/// subject it would refuse must not fail its batch, so that update is recorded as the bridge's.
fn recordable(author: &str) -> bool {
    let n = author.chars().count();
    (1..=255).contains(&n) && !author.chars().any(char::is_control)
}

fn start_writer(inner: &Arc<Inner>, queue: &mut LaneQueue, lane: usize) {
    queue.running = true;
    let inner2 = inner.clone();
    inner
        .tracker
        .spawn(async move { writer(inner2, lane).await });
}

fn lane_of(doc: &str, lanes: usize) -> usize {
    let mut h = DefaultHasher::new();
    doc.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

/// A document's share of a transaction.
struct DocBatch {
    doc: String,
    items: Vec<Item>,
    origin: String,
}

/// The one writer of a lane: commits what is queued one transaction at a time, then goes away,
/// leaving the lane's connection for the next writer.
async fn writer(inner: Arc<Inner>, lane: usize) {
    let mut conn: Option<Object> = lock(&inner.lanes[lane]).conn.take();
    loop {
        let group = {
            let mut queue = lock(&inner.lanes[lane]);
            let queue = &mut *queue;
            let group = take_group(&mut queue.docs, &queue.set_aside, &inner.mixed_origin);
            if group.is_empty() {
                queue.running = false;
                queue.conn = conn;
                return;
            }
            group
        };
        for b in commit_group(&inner, &mut conn, group).await {
            set_aside(&inner, lane, b);
        }
    }
}

/// A document whose row stayed locked: written by its own task until the lock is gone, with
/// whatever arrives for it meanwhile; then it goes back to the lane.
fn set_aside(inner: &Arc<Inner>, lane: usize, b: DocBatch) {
    inner.metrics.lane_set_aside.fetch_add(1, Relaxed);
    tracing::info!(
        doc = b.doc,
        "document row locked elsewhere: writing it apart"
    );
    lock(&inner.lanes[lane]).set_aside.insert(b.doc.clone());
    let inner2 = inner.clone();
    inner
        .tracker
        .spawn(async move { write_apart(inner2, lane, b).await });
}

const APART_RETRY: Duration = Duration::from_millis(200);

async fn write_apart(inner: Arc<Inner>, lane: usize, mut b: DocBatch) {
    let mut conn: Option<Object> = None;
    let doc = b.doc.clone();
    loop {
        if let Some(back) = retry_doc(&inner, &mut conn, b, None).await {
            // Still locked: try again (each attempt waits the lane's lock timeout).
            b = back;
            if b.items.iter().all(|i| i.done.is_closed()) {
                // Every writer is gone: nobody waits for these; the client resends on reconnect.
                b.items.clear();
            } else {
                tokio::time::sleep(APART_RETRY).await;
                continue;
            }
        }
        let mut queue = lock(&inner.lanes[lane]);
        match queue.docs.remove(&doc) {
            Some(items) if !items.is_empty() => {
                let origin = batch_origin(&items, &inner.mixed_origin);
                b = DocBatch {
                    doc: doc.clone(),
                    items,
                    origin,
                };
            }
            _ => {
                queue.set_aside.remove(&doc);
                if !queue.docs.is_empty() && !queue.running {
                    start_writer(&inner, &mut queue, lane);
                }
                return;
            }
        }
    }
}

/// The origin of a document's batch: its writers' when they are one connection.
fn batch_origin(items: &[Item], mixed_origin: &str) -> String {
    match items.first() {
        Some(first) if items.iter().all(|i| i.origin == first.origin) => first.origin.clone(),
        _ => mixed_origin.to_string(),
    }
}

/// Takes whole documents off the queue, oldest waiting first, up to the transaction limits;
/// returns them sorted by name.
fn take_group(
    docs: &mut HashMap<String, Vec<Item>>,
    set_aside: &HashSet<String>,
    mixed_origin: &str,
) -> Vec<DocBatch> {
    let mut waiting: Vec<(Instant, String)> = docs
        .iter()
        .filter(|(doc, _)| !set_aside.contains(*doc))
        .filter_map(|(doc, items)| Some((items.first()?.queued, doc.clone())))
        .collect();
    waiting.sort_unstable();
    let (mut updates, mut bytes) = (0, 0);
    let mut group = Vec::new();
    for (_, doc) in waiting {
        let Some(items) = docs.get(&doc) else {
            continue;
        };
        let n = items.len();
        let b: usize = items.iter().map(|i| i.update.len()).sum();
        if !group.is_empty() && (updates + n > MAX_TXN_UPDATES || bytes + b > MAX_TXN_BYTES) {
            break;
        }
        updates += n;
        bytes += b;
        if let Some(items) = docs.remove(&doc) {
            let origin = batch_origin(&items, mixed_origin);
            group.push(DocBatch { doc, items, origin });
        }
    }
    // Empty queues (none are left behind) must not keep the writer alive.
    docs.retain(|_, items| !items.is_empty());
    group.sort_unstable_by(|a, b| a.doc.cmp(&b.doc));
    group
}

/// A pooled connection for a write. Acquisition is retried (nothing was sent yet, so that is
/// safe); a transaction that fails half-way is not, as it may have committed.
async fn connection<'a>(inner: &Inner, conn: &'a mut Option<Object>) -> Result<&'a Object> {
    if conn.as_ref().is_some_and(|c| c.is_closed()) {
        *conn = None;
    }
    if conn.is_none() {
        let c = db::client_retrying(&inner.pool).await?;
        c.batch_execute(&inner.setup).await?;
        if let Some(set) = &inner.cache_setup {
            match c.batch_execute(set).await {
                Ok(()) => {}
                // collab.cache_bytes is superuser-settable: without `GRANT SET ON PARAMETER`
                // the lane keeps the server's budget, and writes still work.
                Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                    if !inner.cache_refused.swap(true, Relaxed) {
                        tracing::warn!(
                            "the database role may not set collab.cache_bytes, so the write lanes \
                             keep the server's (64 MB by default): documents that do not fit are \
                             reloaded at every write. GRANT SET ON PARAMETER collab.cache_bytes \
                             TO <the bridge's role> to let --write-cache-mb apply"
                        );
                    }
                }
                Err(e) => return Err(e.into()),
            }
            // What the lane got (the metric says when the grant is missing).
            let kb: Option<i64> = c
                .query_opt(
                    "SELECT setting::bigint FROM pg_catalog.pg_settings \
                     WHERE name = 'collab.cache_bytes'",
                    &[],
                )
                .await?
                .map(|r| r.get(0));
            inner
                .metrics
                .write_cache_bytes
                .store(kb.unwrap_or(0).max(0) as u64 * 1024, Relaxed);
        }
        *conn = Some(c);
    }
    conn.as_ref()
        .ok_or_else(|| Error::Internal("no connection".into()))
}

/// Commits a group; returns the documents to set aside (their row stayed locked).
async fn commit_group(
    inner: &Inner,
    conn: &mut Option<Object>,
    group: Vec<DocBatch>,
) -> Vec<DocBatch> {
    let started = Instant::now();
    for b in &group {
        for i in &b.items {
            inner
                .metrics
                .queue_seconds
                .observe_duration(started.saturating_duration_since(i.queued));
        }
    }
    let result = match group.len() {
        1 => apply_one(inner, conn, &group[0])
            .await
            .map(|last| vec![Some(last)]),
        _ => apply_many(inner, conn, &group).await,
    };
    match result {
        Ok(lasts) => {
            let finished = note_transaction(inner, group.len(), started);
            for (b, last) in group.into_iter().zip(lasts) {
                let Some(last) = last else {
                    let e = Error::Internal("stored, but its sequence was not returned".into());
                    for item in b.items {
                        let _ = item.done.send(Err(e.clone()));
                    }
                    continue;
                };
                stored(inner, &b.doc, b.items, last, started, finished);
            }
            Vec::new()
        }
        Err(e @ Error::Unavailable(_)) => {
            tracing::warn!("write of {} documents failed: {e}", group.len());
            *conn = None;
            for b in group {
                for item in b.items {
                    let _ = item.done.send(Err(e.clone()));
                }
            }
            Vec::new()
        }
        Err(e) => {
            if group.len() > 1 {
                tracing::debug!(
                    "transaction of {} documents failed ({e}); one by one",
                    group.len()
                );
            }
            // Alone, a document's own error is known; in a group it may be another's.
            let known = (group.len() == 1).then_some(e);
            let mut aside = Vec::new();
            for b in group {
                aside.extend(retry_doc(inner, conn, b, known.clone()).await);
            }
            aside
        }
    }
}

/// After a failed transaction: the document's batch alone, then (if refused) update by update.
/// A batch whose row stayed locked comes back (nothing of it was stored).
async fn retry_doc(
    inner: &Inner,
    conn: &mut Option<Object>,
    b: DocBatch,
    known: Option<Error>,
) -> Option<DocBatch> {
    let started = Instant::now();
    let alone = match known {
        Some(e) => Err(e),
        None => apply_one(inner, conn, &b).await,
    };
    match alone {
        Ok(last) => {
            let finished = note_transaction(inner, 1, started);
            stored(inner, &b.doc, b.items, last, started, finished);
        }
        Err(Error::Locked(_)) => return Some(b),
        Err(e) if e.is_client_data() && b.items.len() > 1 => {
            tracing::debug!(
                doc = b.doc,
                "batch of {} refused ({e}); one by one",
                b.items.len()
            );
            for item in b.items {
                let started = Instant::now();
                let author = [item.author.as_deref()];
                match apply(inner, conn, &b.doc, &[&item.update], &item.origin, &author).await {
                    Ok(last) => {
                        let finished = note_transaction(inner, 1, started);
                        stored(inner, &b.doc, vec![item], last, started, finished);
                    }
                    Err(e) => {
                        if e.is_client_data() {
                            inner.metrics.updates_rejected.fetch_add(1, Relaxed);
                        } else {
                            tracing::warn!(doc = b.doc, "write failed: {e}");
                        }
                        let _ = item.done.send(Err(e));
                    }
                }
            }
        }
        Err(e) => {
            if e.is_client_data() {
                inner.metrics.updates_rejected.fetch_add(1, Relaxed);
            } else if matches!(e, Error::Unavailable(_)) {
                *conn = None;
                tracing::warn!(doc = b.doc, "write failed: {e}");
            }
            for item in b.items {
                let _ = item.done.send(Err(e.clone()));
            }
        }
    }
    None
}

/// Records a committed transaction of `docs` documents; returns when it was seen to end.
fn note_transaction(inner: &Inner, docs: usize, started: Instant) -> Instant {
    let m = &inner.metrics;
    m.commit_seconds.observe_duration(started.elapsed());
    m.txn_documents.observe(docs as f64);
    Instant::now()
}

/// `items` of `doc` were stored ending at sequence `last` (committed): counted, their commit
/// noted for the notification lag, each writer told its sequence, and the updates handed to the
/// document's room on this bridge.
fn stored(
    inner: &Inner,
    doc: &str,
    items: Vec<Item>,
    last: i64,
    started: Instant,
    finished: Instant,
) {
    let m = &inner.metrics;
    m.batch_size.observe(items.len() as f64);
    m.updates_in.fetch_add(items.len() as u64, Relaxed);
    inner.lag.committed(doc, last, started, finished, m);
    let first = last - items.len() as i64 + 1;
    let mut parts = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let _ = item.done.send(Ok(first + i as i64));
        parts.push((item.origin, item.update));
    }
    inner.hub.route(
        doc,
        RoomEvent::Committed {
            seq_from: first,
            parts,
        },
    );
}

/// One document's batch in one statement (its own transaction).
async fn apply_one(inner: &Inner, conn: &mut Option<Object>, b: &DocBatch) -> Result<i64> {
    let updates: Vec<&[u8]> = b.items.iter().map(|i| i.update.as_slice()).collect();
    let authors: Vec<Option<&str>> = b.items.iter().map(|i| i.author.as_deref()).collect();
    apply(inner, conn, &b.doc, &updates, &b.origin, &authors).await
}

async fn apply(
    inner: &Inner,
    conn: &mut Option<Object>,
    doc: &str,
    updates: &[&[u8]],
    origin: &str,
    authors: &[Option<&str>],
) -> Result<i64> {
    let c = connection(inner, conn).await?;
    let st = c.prepare_cached(APPLY).await?;
    let row = c
        .query_one(&st, &[&doc, &updates, &origin, &authors])
        .await?;
    Ok(row.try_get(0)?)
}

/// Several documents in one statement (so in one transaction): one `collab.apply_updates`
/// call per document, in the order given, each on its slice of one flat array of updates.
/// Any refused update fails (and rolls back) the whole statement.
const APPLY_MANY: &str =
    "SELECT t.ord, collab.apply_updates(t.doc, ($2::bytea[])[t.lo:t.hi], t.origin, \
                                        ($6::text[])[t.lo:t.hi]) \
     FROM unnest($1::text[], $3::int4[], $4::int4[], $5::text[]) WITH ORDINALITY \
          AS t(doc, lo, hi, origin, ord) \
     ORDER BY t.ord";

async fn apply_many(
    inner: &Inner,
    conn: &mut Option<Object>,
    group: &[DocBatch],
) -> Result<Vec<Option<i64>>> {
    let c = connection(inner, conn).await?;
    let st = c.prepare_cached(APPLY_MANY).await?;
    let docs: Vec<&str> = group.iter().map(|b| b.doc.as_str()).collect();
    let origins: Vec<&str> = group.iter().map(|b| b.origin.as_str()).collect();
    let mut updates: Vec<&[u8]> = Vec::new();
    let mut authors: Vec<Option<&str>> = Vec::new();
    let (mut lo, mut hi) = (Vec::new(), Vec::new());
    for b in group {
        lo.push(updates.len() as i32 + 1);
        updates.extend(b.items.iter().map(|i| i.update.as_slice()));
        authors.extend(b.items.iter().map(|i| i.author.as_deref()));
        hi.push(updates.len() as i32);
    }
    let rows = c
        .query(&st, &[&docs, &updates, &lo, &hi, &origins, &authors])
        .await?;
    // Committed: from here on nothing may be retried.
    let mut lasts = vec![None; group.len()];
    for row in rows {
        let (Ok(ord), Ok(last)) = (row.try_get::<_, i64>(0), row.try_get::<_, i64>(1)) else {
            continue;
        };
        if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| lasts.get_mut(i)) {
            *slot = Some(last);
        }
    }
    Ok(lasts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(update: &[u8], origin: &str) -> Item {
        Item {
            update: update.to_vec(),
            origin: origin.into(),
            author: None,
            done: oneshot::channel().0,
            queued: Instant::now(),
        }
    }

    #[test]
    fn groups_whole_documents_sorted_with_their_origin() {
        let mut docs = HashMap::new();
        docs.insert("b".to_string(), vec![item(b"1", "x/1"), item(b"2", "x/2")]);
        docs.insert("a".to_string(), vec![item(b"3", "x/1")]);
        docs.insert("c".to_string(), vec![]);
        let group = take_group(&mut docs, &HashSet::new(), "x/*");
        assert!(docs.is_empty());
        let names: Vec<_> = group
            .iter()
            .map(|b| (b.doc.as_str(), b.origin.as_str()))
            .collect();
        assert_eq!(names, vec![("a", "x/1"), ("b", "x/*")]);
    }

    #[test]
    fn a_transaction_stops_at_the_update_limit_but_takes_at_least_one_document() {
        let mut docs = HashMap::new();
        let many: Vec<Item> = (0..MAX_TXN_UPDATES + 1).map(|_| item(b"u", "o")).collect();
        docs.insert("a".to_string(), many);
        docs.insert("b".to_string(), vec![item(b"u", "o")]);
        let group = take_group(&mut docs, &HashSet::new(), "*");
        assert_eq!(group.len(), 1);
        assert_eq!(group[0].doc, "a");
        assert_eq!(docs.len(), 1);
        let group = take_group(&mut docs, &HashSet::new(), "*");
        assert_eq!(group[0].doc, "b");
    }

    #[test]
    fn documents_set_aside_are_left_in_the_queue() {
        let mut docs = HashMap::new();
        docs.insert("locked".to_string(), vec![item(b"1", "o")]);
        docs.insert("free".to_string(), vec![item(b"2", "o")]);
        let aside = HashSet::from(["locked".to_string()]);
        let group = take_group(&mut docs, &aside, "*");
        assert_eq!(group.len(), 1);
        assert_eq!(group[0].doc, "free");
        assert!(docs.contains_key("locked"));
        assert!(take_group(&mut docs, &aside, "*").is_empty());
    }

    #[test]
    fn lanes_are_stable_and_in_range() {
        for n in 1..6 {
            for doc in ["a", "team/notes", "é"] {
                assert!(lane_of(doc, n) < n);
                assert_eq!(lane_of(doc, n), lane_of(doc, n));
            }
        }
    }
}
