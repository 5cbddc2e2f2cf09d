//! Rooms: the connections following each open document, and the per-room task that turns
//! notifications into ordered, gap-free update messages for them.
//!
//! Each room tracks the last sequence it delivered. An update notification that follows on
//! directly and carries its update inline is sent as is; anything else (a gap, a batch too large
//! to inline, a listener reconnect, a dropped event) makes the room fetch
//! `collab.updates_since(last)`. The updates this bridge writes reach its own rooms when their
//! transaction has committed ([`RoomEvent::Committed`], from the write lanes), through the same
//! queue and the same checks, so their notification only serves other bridges (and is ignored
//! here as a duplicate). Each connection has a send queue bounded in bytes; one that is
//! over its budget gets the connection closed (too slow). Nothing is echoed to the connection
//! that wrote it: its origin (`<bridge-id>/<conn-id>`) is skipped. Awareness, unlike updates,
//! goes to everyone.
//!
//! A room also shares work between its connections: expensive reads (the whole-document diff
//! answering a sync step 1, the state vector) run once for every connection that asks for the
//! same thing at the same time (single flight), and the awareness changes of this bridge's
//! connections are coalesced into one `collab.broadcast` per short interval. Awareness client
//! ids belong to the connection that introduced them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use axum::body::Bytes;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::db;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::protocol::{self, Incoming};
use yrs::sync::awareness::AwarenessUpdate;

pub type ConnId = u64;

/// Catch-up fetches (`collab.updates_since`) running at once across the bridge.
const CATCHUP_SLOTS: usize = 4;
/// Events queued for one room before the listener starts dropping (and the room catches up).
const ROOM_QUEUE: usize = 1024;
/// Awareness states not renewed for this long are not handed to new connections (y-protocols
/// clients renew every 15 s and drop silent peers after 30 s).
const AWARENESS_TTL: Duration = Duration::from_secs(30);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A message for one connection's writer; `since` is when its notification arrived (for the
/// fan-out latency), if it came from one.
pub struct Frame {
    pub bytes: Bytes,
    pub since: Option<Instant>,
}

/// What a room knows about one connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    /// `<bridge-id>/<conn-id>`: the origin of this connection's writes and broadcasts.
    pub origin: String,
    /// The token's `sub`.
    pub subject: Arc<str>,
    pub tx: mpsc::Sender<Frame>,
    /// Bytes queued for the writer and not yet written.
    pub queued: Arc<AtomicUsize>,
    /// Most bytes `queued` may hold (a single larger frame passes when nothing is queued).
    pub budget: usize,
    pub kick: CancellationToken,
    pub kick_reason: Arc<Mutex<Option<Error>>>,
    /// Hocuspocus connections (one per document on a multi-document socket): the document's
    /// address (varString) that goes before every message. None for y-websocket connections.
    /// Those sharing a socket share `tx`, `queued` and the budget: one socket, one queue.
    pub prefix: Option<Bytes>,
}

impl ConnHandle {
    /// Ends the connection with `reason` (the first reason given wins).
    pub fn kick(&self, reason: Error) {
        let mut r = lock(&self.kick_reason);
        if r.is_none() {
            *r = Some(reason);
        }
        self.kick.cancel();
    }

    /// Queues a frame; a full queue means the client cannot keep up.
    pub fn send(&self, frame: Bytes, metrics: &Metrics) -> bool {
        self.send_since(frame, None, metrics)
    }

    fn send_since(&self, bytes: Bytes, since: Option<Instant>, metrics: &Metrics) -> bool {
        if self.kick.is_cancelled() {
            return false;
        }
        let bytes = match &self.prefix {
            Some(p) => {
                let mut b = Vec::with_capacity(p.len() + bytes.len());
                b.extend_from_slice(p);
                b.extend_from_slice(&bytes);
                Bytes::from(b)
            }
            None => bytes,
        };
        let len = bytes.len();
        // Reserve the bytes first: the budget holds however many tasks send at once.
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q == 0 || q.saturating_add(len) <= self.budget).then(|| q.saturating_add(len))
            })
            .is_ok();
        if !reserved {
            self.too_slow(metrics);
            return false;
        }
        match self.tx.try_send(Frame { bytes, since }) {
            Ok(()) => true,
            Err(e) => {
                self.queued.fetch_sub(len, Ordering::AcqRel);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    self.too_slow(metrics);
                }
                false
            }
        }
    }

    fn too_slow(&self, metrics: &Metrics) {
        if !self.kick.is_cancelled() {
            metrics
                .slow_clients
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.kick(Error::TooSlow);
    }
}

#[derive(Debug)]
pub enum RoomEvent {
    Update {
        seq_from: i64,
        seq_to: i64,
        origin: Option<String>,
        update: Option<Vec<u8>>,
    },
    Broadcast {
        origin: Option<String>,
        payload: Vec<u8>,
    },
    Deleted,
    /// Updates this bridge has just committed, handed over when `COMMIT` returned instead of
    /// when their notification comes back (which then arrives as a duplicate and is ignored):
    /// one part per stored update, sequences `seq_from..` in order, each with the origin of
    /// the connection that wrote it (so that no writer gets its own update back).
    Committed {
        seq_from: i64,
        parts: Vec<(String, Vec<u8>)>,
    },
}

struct AwarenessState {
    clock: u32,
    json: Arc<str>,
    seen: Instant,
}

/// A shared read in progress: when it started and the last sequence the room had delivered
/// then. A connection may use a read that started after it joined, or one that started when
/// the room had delivered just what it had when the connection joined (nothing was delivered
/// in between, so nothing the connection missed can be missing from the read); otherwise it
/// could miss an update delivered before it was listening.
struct Flight {
    started: Instant,
    delivered: i64,
    result: Shared<BoxFuture<'static, Result<Bytes>>>,
}

/// When a connection joined its room: the instant and the room's last delivered sequence.
#[derive(Debug, Clone, Copy)]
pub struct Joined {
    pub at: Instant,
    pub delivered: i64,
}

/// Which local connection introduced an awareness client id.
struct AwarenessOwner {
    conn: ConnId,
    subject: Arc<str>,
}

pub struct Room {
    pub name: String,
    conns: Mutex<HashMap<ConnId, ConnHandle>>,
    /// Events with the instant their notification arrived.
    events: mpsc::Sender<(Instant, RoomEvent)>,
    catchup: Notify,
    /// Spaces out the retries of a failing catch-up (reset when one succeeds).
    catchup_backoff: Mutex<Backoff>,
    ready: watch::Receiver<bool>,
    stop: CancellationToken,
    awareness: Mutex<HashMap<u64, AwarenessState>>,
    owners: Mutex<HashMap<u64, AwarenessOwner>>,
    /// Awareness entries of this bridge's connections not yet broadcast.
    outbox: Mutex<HashMap<u64, (u32, Arc<str>)>>,
    outbox_ready: Notify,
    flights: Mutex<HashMap<Vec<u8>, Flight>>,
    /// The last sequence handed to the connections (-1 until the room is ready), stored before
    /// it is delivered, so that a connection joining concurrently either gets the update or
    /// sees the new value.
    delivered: AtomicI64,
}

impl Room {
    /// The result of `read` for `key`, shared with every connection that asks for the same key
    /// while it runs, provided it started after `joined` (when the asking connection joined).
    pub async fn single_flight<F>(&self, key: Vec<u8>, joined: Joined, read: F) -> Result<Bytes>
    where
        F: FnOnce() -> BoxFuture<'static, Result<Bytes>>,
    {
        let (started, result) = {
            let mut flights = lock(&self.flights);
            match flights.get(&key) {
                Some(f)
                    if f.started >= joined.at
                        || (joined.delivered >= 0 && f.delivered == joined.delivered) =>
                {
                    (f.started, f.result.clone())
                }
                _ => {
                    let started = Instant::now();
                    let delivered = self.delivered.load(Ordering::Acquire);
                    let result = read().shared();
                    flights.insert(
                        key.clone(),
                        Flight {
                            started,
                            delivered,
                            result: result.clone(),
                        },
                    );
                    (started, result)
                }
            }
        };
        let out = result.await;
        let mut flights = lock(&self.flights);
        if flights.get(&key).is_some_and(|f| f.started == started) {
            flights.remove(&key);
        }
        out
    }

    /// Whether connection `conn` (of `subject`) may set or remove awareness client `client`,
    /// claiming it if nobody here holds it. Another subject's live claim is refused; the same
    /// subject may take a client id over (a page that reconnects keeps its Yjs client id, and
    /// its old connection may not be gone yet).
    pub fn claim_awareness(&self, client: u64, conn: ConnId, subject: &Arc<str>) -> bool {
        let mut owners = lock(&self.owners);
        match owners.get(&client) {
            Some(o) if o.conn == conn => true,
            Some(o) if o.subject != *subject && lock(&self.conns).contains_key(&o.conn) => false,
            _ => {
                owners.insert(
                    client,
                    AwarenessOwner {
                        conn,
                        subject: subject.clone(),
                    },
                );
                true
            }
        }
    }

    /// Gives up a connection's awareness client ids and drops what of theirs is unsent.
    pub fn release_awareness(&self, conn: ConnId, clients: &[u64]) {
        let mut owners = lock(&self.owners);
        let mut outbox = lock(&self.outbox);
        for c in clients {
            if owners.get(c).is_some_and(|o| o.conn == conn) {
                owners.remove(c);
            }
            outbox.remove(c);
        }
    }

    /// Queues awareness entries for the room's next coalesced broadcast.
    pub fn queue_awareness(&self, entries: impl IntoIterator<Item = (u64, u32, Arc<str>)>) {
        let mut outbox = lock(&self.outbox);
        for (client, clock, json) in entries {
            match outbox.get(&client) {
                Some((c, _)) if *c > clock => {}
                _ => {
                    outbox.insert(client, (clock, json));
                }
            }
        }
        drop(outbox);
        self.outbox_ready.notify_one();
    }

    /// Waits until the room knows the document's head sequence (so that what a connection reads
    /// from the database afterwards and what the room delivers leave no gap between them).
    pub async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let mut ready = self.ready.clone();
        let outcome = tokio::time::timeout(limit, ready.wait_for(|r| *r))
            .await
            .map(|r| r.is_ok());
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::Unavailable(
                "document could not be opened in time".into(),
            )),
        }
    }

    /// Everyone's current awareness state as one message, if there is any.
    pub fn awareness_snapshot(&self) -> Option<Bytes> {
        let aw = lock(&self.awareness);
        let now = Instant::now();
        let entries: Vec<_> = aw
            .iter()
            .filter(|(_, s)| now.duration_since(s.seen) < AWARENESS_TTL)
            .map(|(id, s)| (*id, s.clock, s.json.clone()))
            .collect();
        (!entries.is_empty()).then(|| protocol::awareness(entries))
    }

    fn record_awareness(&self, update: &AwarenessUpdate) {
        let mut aw = lock(&self.awareness);
        let now = Instant::now();
        for (id, clock, json) in protocol::awareness_entries(update) {
            if &*json == "null" {
                aw.remove(&id);
            } else if aw.get(&id).is_none_or(|s| s.clock <= clock) {
                aw.insert(
                    id,
                    AwarenessState {
                        clock,
                        json,
                        seen: now,
                    },
                );
            }
        }
        aw.retain(|_, s| now.duration_since(s.seen) < AWARENESS_TTL * 4);
    }

    /// Sends `frame` to every connection but the one whose origin is `origin`; returns how many.
    pub fn deliver(&self, frame: &Bytes, origin: Option<&str>, metrics: &Metrics) -> u64 {
        self.deliver_since(frame, origin, None, metrics)
    }

    fn deliver_since(
        &self,
        frame: &Bytes,
        origin: Option<&str>,
        since: Option<Instant>,
        metrics: &Metrics,
    ) -> u64 {
        let conns = lock(&self.conns);
        let mut sent = 0;
        for c in conns.values() {
            if origin == Some(c.origin.as_str()) {
                continue;
            }
            if c.send_since(frame.clone(), since, metrics) {
                sent += 1;
            }
        }
        sent
    }

    /// Relays an ephemeral message (awareness) to every connection, its sender included (as
    /// the reference y-websocket server does: y-websocket clients count it as a sign of life
    /// and reconnect after 30 s without any message), and remembers the awareness states.
    /// Payloads that are not y-websocket messages (anyone may call `collab.broadcast`) are
    /// dropped rather than handed to clients. A stateless message goes only to the Hocuspocus
    /// connections other than its sender's (y-websocket clients do not know the type).
    pub fn deliver_broadcast(&self, payload: &[u8], origin: Option<&str>, metrics: &Metrics) {
        match protocol::decode(payload) {
            Ok(Incoming::Awareness(update)) => self.record_awareness(&update),
            Ok(Incoming::Custom(protocol::MSG_STATELESS, _)) => {
                let frame = Bytes::copy_from_slice(payload);
                for c in lock(&self.conns).values() {
                    if c.prefix.is_some() && origin != Some(c.origin.as_str()) {
                        c.send(frame.clone(), metrics);
                    }
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(doc = %self.name, "dropping broadcast: {e}");
                return;
            }
        }
        self.deliver(&Bytes::copy_from_slice(payload), None, metrics);
    }

    fn kick_all(&self, reason: Error) {
        for c in lock(&self.conns).values() {
            c.kick(reason.clone());
        }
    }
}

struct HubCtx {
    /// Where each room's document lives (its shard's pool: `shards.pool_for(&room.name)`).
    shards: Arc<crate::shards::Shards>,
    metrics: Arc<Metrics>,
    /// Origin of coalesced awareness broadcasts: the bridge id.
    bridge_origin: String,
    awareness_interval: Duration,
    catchup_slots: tokio::sync::Semaphore,
}

/// All open rooms of this bridge.
pub struct Hub {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    ctx: Arc<HubCtx>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Hub {
    pub fn new(
        shards: Arc<crate::shards::Shards>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        cancel: CancellationToken,
        bridge_id: &str,
        awareness_interval: Duration,
    ) -> Self {
        Hub {
            rooms: Mutex::new(HashMap::new()),
            ctx: Arc::new(HubCtx {
                shards,
                metrics,
                bridge_origin: bridge_id.to_string(),
                awareness_interval,
                catchup_slots: tokio::sync::Semaphore::new(CATCHUP_SLOTS),
            }),
            tracker,
            cancel,
        }
    }

    /// Adds a connection to the room of `doc`, opening the room if needed.
    pub fn join(&self, doc: &str, conn: ConnHandle) -> (Arc<Room>, Joined) {
        let mut rooms = lock(&self.rooms);
        let room = match rooms.get(doc) {
            Some(r) => r.clone(),
            None => {
                let (events, rx) = mpsc::channel(ROOM_QUEUE);
                let (ready_tx, ready) = watch::channel(false);
                let room = Arc::new(Room {
                    name: doc.to_string(),
                    conns: Mutex::new(HashMap::new()),
                    events,
                    catchup: Notify::new(),
                    catchup_backoff: Mutex::new(Backoff::new(
                        Duration::from_millis(250),
                        Duration::from_secs(10),
                    )),
                    ready,
                    stop: self.cancel.child_token(),
                    awareness: Mutex::new(HashMap::new()),
                    owners: Mutex::new(HashMap::new()),
                    outbox: Mutex::new(HashMap::new()),
                    outbox_ready: Notify::new(),
                    flights: Mutex::new(HashMap::new()),
                    delivered: AtomicI64::new(-1),
                });
                rooms.insert(doc.to_string(), room.clone());
                self.tracker
                    .spawn(run_room(room.clone(), rx, ready_tx, self.ctx.clone()));
                self.tracker
                    .spawn(flush_awareness(room.clone(), self.ctx.clone()));
                room
            }
        };
        let joined = {
            let mut conns = lock(&room.conns);
            conns.insert(conn.id, conn);
            Joined {
                at: Instant::now(),
                delivered: room.delivered.load(Ordering::Acquire),
            }
        };
        self.set_gauge(rooms.len());
        (room, joined)
    }

    /// Removes a connection; the last one out closes the room.
    pub fn leave(&self, room: &Arc<Room>, id: ConnId) {
        let mut rooms = lock(&self.rooms);
        let empty = {
            let mut conns = lock(&room.conns);
            conns.remove(&id);
            conns.is_empty()
        };
        if empty {
            if rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
                rooms.remove(&room.name);
            }
            room.stop.cancel();
        }
        self.set_gauge(rooms.len());
    }

    fn set_gauge(&self, n: usize) {
        self.ctx
            .metrics
            .open_documents
            .store(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn room(&self, doc: &str) -> Option<Arc<Room>> {
        lock(&self.rooms).get(doc).cloned()
    }

    /// Hands a notification to the room of its document, if this bridge has it open.
    pub fn route(&self, doc: &str, event: RoomEvent) {
        let Some(room) = self.room(doc) else {
            return;
        };
        match room.events.try_send((Instant::now(), event)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full((_, RoomEvent::Broadcast { .. }))) => {}
            Err(mpsc::error::TrySendError::Full(_)) => room.catchup.notify_one(),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Closes every connection whose subject is in `revoked` (4001).
    pub fn kick_subjects(&self, revoked: &std::collections::HashSet<String>) -> usize {
        let mut n = 0;
        for room in lock(&self.rooms).values() {
            for c in lock(&room.conns).values() {
                if revoked.contains(&*c.subject) {
                    c.kick(Error::InvalidToken("revoked".into()));
                    n += 1;
                }
            }
        }
        n
    }

    /// After the listener (re)connects: every room fetches what it may have missed.
    /// The rooms start at random moments spread over up to 2 s (5 ms per room), and fetch at
    /// most [`CATCHUP_SLOTS`] at a time, so that a reconnect does not empty the pool.
    pub fn catch_up_all(&self) {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        let spread = Duration::from_millis(5 * rooms.len() as u64).min(Duration::from_secs(2));
        for room in rooms {
            let delay = spread.mul_f64(rand::random::<f64>());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                room.catchup.notify_one();
            });
        }
    }
}

/// Sends the room's queued awareness as one `collab.broadcast` per interval (every bridge,
/// this one included, relays it to its connections from the notification). The room's own
/// departures (a closing connection's removals) are sent apart, right away.
async fn flush_awareness(room: Arc<Room>, ctx: Arc<HubCtx>) {
    loop {
        tokio::select! {
            _ = room.stop.cancelled() => return,
            _ = room.outbox_ready.notified() => {}
        }
        // Collect what else arrives meanwhile: one broadcast per interval at most.
        tokio::select! {
            _ = room.stop.cancelled() => return,
            _ = tokio::time::sleep(ctx.awareness_interval) => {}
        }
        let entries: Vec<(u64, u32, Arc<str>)> = lock(&room.outbox)
            .drain()
            .map(|(client, (clock, json))| (client, clock, json))
            .collect();
        if entries.is_empty() {
            continue;
        }
        let frame = protocol::awareness(entries);
        publish_awareness(
            ctx.shards.pool_for(&room.name),
            &room,
            &ctx.bridge_origin,
            &frame,
            &ctx.metrics,
        )
        .await;
    }
}

/// Broadcasts an awareness frame to every bridge of the room.
pub async fn publish_awareness(
    pool: &Pool,
    room: &Arc<Room>,
    origin: &str,
    frame: &[u8],
    metrics: &Metrics,
) {
    match db::broadcast(pool, &room.name, frame, origin).await {
        Ok(()) => {}
        // Too big for a notification: at least this bridge's clients get it.
        Err(Error::TooLarge(_)) => room.deliver_broadcast(frame, None, metrics),
        Err(e) => tracing::debug!(doc = %room.name, "awareness not relayed: {e}"),
    }
}

async fn run_room(
    room: Arc<Room>,
    mut rx: mpsc::Receiver<(Instant, RoomEvent)>,
    ready: watch::Sender<bool>,
    ctx: Arc<HubCtx>,
) {
    // At most 1 s between attempts to open the room (#14): after a failover the clients that
    // reconnected wait for this, and with 5 s they waited up to 5 s after the new primary was
    // up. A few rooms retrying every second cost a recovering server nothing.
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let mut last = loop {
        let attempt = tokio::select! {
            _ = room.stop.cancelled() => return,
            r = db::head_seq(ctx.shards.pool_for(&room.name), &room.name) => r,
        };
        match attempt {
            Ok(seq) => break seq,
            Err(e) => {
                tracing::warn!(doc = %room.name, "cannot open document: {e}");
                tokio::select! {
                    _ = room.stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    };
    room.delivered.store(last, Ordering::Release);
    let _ = ready.send(true);
    loop {
        tokio::select! {
            biased;
            _ = room.stop.cancelled() => return,
            _ = room.catchup.notified() => last = catch_up(&room, &ctx, last).await,
            ev = rx.recv() => {
                let Some((arrived, ev)) = ev else { return };
                last = handle_event(&room, &ctx, last, ev, arrived).await;
            }
        }
    }
}

async fn handle_event(
    room: &Arc<Room>,
    ctx: &Arc<HubCtx>,
    last: i64,
    ev: RoomEvent,
    arrived: Instant,
) -> i64 {
    match ev {
        RoomEvent::Update {
            seq_from,
            seq_to,
            origin,
            update,
        } => {
            if seq_to <= last {
                // Usually a notification from before the room opened, or of an update this
                // bridge delivered at commit.
                return already_delivered(room, ctx, last, seq_from).await;
            }
            match update {
                Some(update) if seq_from == last + 1 => {
                    room.delivered.store(seq_to, Ordering::Release);
                    send_update_since(room, ctx, update, origin.as_deref(), Some(arrived));
                    seq_to
                }
                _ => catch_up(room, ctx, last).await,
            }
        }
        RoomEvent::Broadcast { payload, origin } => {
            room.deliver_broadcast(&payload, origin.as_deref(), &ctx.metrics);
            last
        }
        RoomEvent::Deleted => {
            room.kick_all(Error::Deleted);
            0
        }
        RoomEvent::Committed { seq_from, parts } => {
            let seq_to = seq_from + parts.len() as i64 - 1;
            if seq_to <= last {
                // Its notification (or a catch-up) came first.
                return already_delivered(room, ctx, last, seq_from).await;
            }
            if seq_from > last + 1 {
                // Another bridge committed the sequences in between and their notification is
                // not here yet: fetch the gap (and these, committed as well) from the log.
                return catch_up(room, ctx, last).await;
            }
            room.delivered.store(seq_to, Ordering::Release);
            let mut sent = 0;
            for (seq, (origin, update)) in (seq_from..).zip(parts) {
                // A catch-up page may have ended inside this range.
                if seq > last {
                    send_update_since(room, ctx, update, Some(&origin), Some(arrived));
                    sent += 1;
                }
            }
            ctx.metrics
                .delivered_at_commit
                .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
            seq_to
        }
    }
}

/// An update event for sequences the room has delivered already: ignored, and `last` kept. But
/// if sequences start again at 1, the document may have been deleted and written anew with its
/// `deleted` notification lost: then the log ends before what the room delivered, and the
/// clients hold a document that is gone (closed; the room starts again from 0).
async fn already_delivered(room: &Arc<Room>, ctx: &Arc<HubCtx>, last: i64, seq_from: i64) -> i64 {
    if seq_from == 1 && closed_if_log_ends_before(room, ctx, last).await {
        return 0;
    }
    last
}

/// A log that ends before what this room delivered means that the document was deleted (and
/// maybe written anew) and its `deleted` notification was lost (a listener outage): the clients
/// hold a document that is gone, so they are closed. Whether they were.
async fn closed_if_log_ends_before(room: &Arc<Room>, ctx: &Arc<HubCtx>, last: i64) -> bool {
    match db::head_seq(ctx.shards.pool_for(&room.name), &room.name).await {
        Ok(head) if head < last => {
            tracing::info!(doc = %room.name, head, last, "document was deleted meanwhile");
            room.kick_all(Error::Deleted);
            true
        }
        _ => false,
    }
}

/// Catch-ups of more rows than this are sent as one merged update, so that a long listener
/// outage on a busy document does not overflow every client's send queue.
const MERGE_ABOVE_ROWS: usize = 4;

/// Rows fetched per catch-up query: a long log is caught up a page at a time.
const CATCH_UP_PAGE_ROWS: i64 = 1000;

/// Delivers every stored update after `last`, a page at a time; returns the new last sequence.
async fn catch_up(room: &Arc<Room>, ctx: &Arc<HubCtx>, mut last: i64) -> i64 {
    loop {
        match catch_up_page(room, ctx, last).await {
            Ok((new_last, full)) => {
                lock(&room.catchup_backoff).reset();
                if !full || new_last == last {
                    return new_last;
                }
                last = new_last;
            }
            Err(()) => return catch_up_retry(room, last),
        }
    }
}

/// One page of a catch-up: the new last sequence, and whether the page was full.
async fn catch_up_page(
    room: &Arc<Room>,
    ctx: &Arc<HubCtx>,
    last: i64,
) -> std::result::Result<(i64, bool), ()> {
    ctx.metrics
        .catchup_fetches
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fetched = {
        let _slot = ctx.catchup_slots.acquire().await;
        db::updates_since(
            ctx.shards.pool_for(&room.name),
            &room.name,
            last,
            CATCH_UP_PAGE_ROWS,
        )
        .await
    };
    match fetched {
        Ok(rows) => {
            let full = rows.len() as i64 == CATCH_UP_PAGE_ROWS;
            // A pruned history starts with the checkpoint row, whatever its sequence.
            let rows: Vec<db::LogRow> = rows
                .into_iter()
                .filter(|r| r.seq > last || r.origin.as_deref() == Some("checkpoint"))
                .collect();
            // Nothing new: perhaps because the document is gone.
            if rows.is_empty() && last > 0 && closed_if_log_ends_before(room, ctx, last).await {
                return Ok((0, false));
            }
            let new_last = rows.iter().map(|r| r.seq).fold(last, i64::max);
            // Before delivering (see `Room::delivered`); the rows are committed, so any read
            // that starts from here on includes them.
            room.delivered.store(new_last, Ordering::Release);
            let (origins, updates): (Vec<Option<String>>, Vec<Vec<u8>>) =
                rows.into_iter().map(|r| (r.origin, r.update)).unzip();
            let updates = if updates.len() > MERGE_ABOVE_ROWS {
                let merged =
                    tokio::task::spawn_blocking(move || (protocol::merge(&updates), updates)).await;
                match merged {
                    Ok((Some(update), merged_from)) => {
                        tracing::debug!(doc = %room.name, rows = merged_from.len(), "catch-up merged");
                        // Skip a writer only when every row is its own.
                        let origin = match origins.first() {
                            Some(first) if origins.iter().all(|o| o == first) => first.clone(),
                            _ => None,
                        };
                        send_update(room, ctx, update, origin.as_deref());
                        return Ok((new_last, full));
                    }
                    Ok((None, updates)) => updates,
                    Err(e) => {
                        tracing::warn!(doc = %room.name, "merging for catch-up failed: {e}");
                        return Err(());
                    }
                }
            } else {
                updates
            };
            for (update, origin) in updates.into_iter().zip(origins) {
                send_update(room, ctx, update, origin.as_deref());
            }
            Ok((new_last, full))
        }
        // The document was deleted and the `deleted` notification was lost (the tombstone
        // answers 42704). Retrying cannot help.
        Err(Error::Deleted) => {
            tracing::info!(doc = %room.name, "document was deleted meanwhile");
            room.kick_all(Error::Deleted);
            Ok((0, false))
        }
        Err(e) => {
            tracing::warn!(doc = %room.name, "catching up failed: {e}; retrying");
            Err(())
        }
    }
}

/// Schedules another catch-up attempt; returns `last` unchanged.
fn catch_up_retry(room: &Arc<Room>, last: i64) -> i64 {
    let delay = lock(&room.catchup_backoff).next_delay();
    let room = room.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        room.catchup.notify_one();
    });
    last
}

fn send_update(room: &Room, ctx: &HubCtx, update: Vec<u8>, origin: Option<&str>) {
    send_update_since(room, ctx, update, origin, None)
}

fn send_update_since(
    room: &Room,
    ctx: &HubCtx,
    update: Vec<u8>,
    origin: Option<&str>,
    since: Option<Instant>,
) {
    let n = room.deliver_since(&protocol::update(update), origin, since, &ctx.metrics);
    ctx.metrics
        .updates_out
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(budget: usize) -> (ConnHandle, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(1000);
        let h = ConnHandle {
            id: 1,
            origin: "b/1".into(),
            subject: Arc::from("ada"),
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            budget,
            kick: CancellationToken::new(),
            kick_reason: Default::default(),
            prefix: None,
        };
        (h, rx)
    }

    #[test]
    fn a_send_queue_never_holds_more_than_its_byte_budget() {
        let m = Metrics::default();
        let (h, _rx) = handle(100);
        assert!(h.send(Bytes::from(vec![0; 60]), &m));
        assert!(h.send(Bytes::from(vec![0; 40]), &m));
        assert_eq!(h.queued.load(Ordering::Acquire), 100);
        assert!(!h.send(Bytes::from(vec![0; 1]), &m), "over the budget");
        assert!(h.kick.is_cancelled(), "and closed as too slow");
        assert_eq!(h.queued.load(Ordering::Acquire), 100);
        assert!(matches!(*lock(&h.kick_reason), Some(Error::TooSlow)));
    }

    /// A room with connections `b/1` and `b/2` and the context to run its events, with a pool
    /// that is never used (the paths tested here do not touch the database).
    fn room_with_two() -> (
        Arc<Room>,
        Arc<HubCtx>,
        mpsc::Receiver<Frame>,
        mpsc::Receiver<Frame>,
    ) {
        let target = crate::pgconn::pg_config("postgres://nobody@127.0.0.1:1/none", None, "test")
            .expect("config");
        let ctx = Arc::new(HubCtx {
            shards: Arc::new(
                crate::shards::Shards::new(vec![crate::shards::Shard {
                    pool: crate::pgconn::pool(target.clone(), 1).expect("pool"),
                    replica: None,
                    listener: target,
                }])
                .expect("shards"),
            ),
            metrics: Arc::new(Metrics::default()),
            bridge_origin: "b".into(),
            awareness_interval: Duration::from_millis(10),
            catchup_slots: tokio::sync::Semaphore::new(1),
        });
        let (h1, rx1) = handle(1 << 20);
        let (mut h2, rx2) = handle(1 << 20);
        h2.id = 2;
        h2.origin = "b/2".into();
        let (events, _) = mpsc::channel(1);
        let room = Arc::new(Room {
            name: "d".into(),
            conns: Mutex::new(HashMap::from([(1, h1), (2, h2)])),
            events,
            catchup: Notify::new(),
            catchup_backoff: Mutex::new(Backoff::new(
                Duration::from_millis(1),
                Duration::from_millis(1),
            )),
            ready: watch::channel(true).1,
            stop: CancellationToken::new(),
            awareness: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            outbox: Mutex::new(HashMap::new()),
            outbox_ready: Notify::new(),
            flights: Mutex::new(HashMap::new()),
            delivered: AtomicI64::new(5),
        });
        (room, ctx, rx1, rx2)
    }

    fn drain(rx: &mut mpsc::Receiver<Frame>) -> Vec<Bytes> {
        std::iter::from_fn(|| rx.try_recv().ok().map(|f| f.bytes)).collect()
    }

    #[tokio::test]
    async fn committed_updates_are_delivered_after_what_the_room_has_skipping_each_writer() {
        let (room, ctx, mut rx1, mut rx2) = room_with_two();
        let ev = |seq_from, parts: &[(&str, u8)]| RoomEvent::Committed {
            seq_from,
            parts: parts
                .iter()
                .map(|(o, u)| (o.to_string(), vec![*u]))
                .collect(),
        };
        let now = Instant::now();
        // The room has 5: of 4..=7 only 6 and 7 go out, each to the connection that did not
        // write it.
        let last = handle_event(
            &room,
            &ctx,
            5,
            ev(4, &[("b/1", 4), ("b/1", 5), ("b/1", 6), ("b/2", 7)]),
            now,
        )
        .await;
        assert_eq!(last, 7);
        assert_eq!(room.delivered.load(Ordering::Acquire), 7);
        assert_eq!(drain(&mut rx1), vec![protocol::update(vec![7])]);
        assert_eq!(drain(&mut rx2), vec![protocol::update(vec![6])]);
        // Delivered already (its notification came first): nothing again.
        let last = handle_event(&room, &ctx, last, ev(6, &[("b/1", 6), ("b/2", 7)]), now).await;
        assert_eq!(last, 7);
        assert!(drain(&mut rx1).is_empty() && drain(&mut rx2).is_empty());
        assert_eq!(ctx.metrics.delivered_at_commit.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn one_frame_larger_than_the_budget_passes_an_empty_queue() {
        let m = Metrics::default();
        let (h, _rx) = handle(100);
        assert!(h.send(Bytes::from(vec![0; 500]), &m), "a big first sync");
        assert!(!h.send(Bytes::from(vec![0; 1]), &m));
    }
}
