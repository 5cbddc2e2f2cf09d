//! Rooms: the connections following each open document, and the per-room task that turns
//! notifications into ordered, gap-free update messages for them.
//!
//! Each room tracks the last sequence it delivered. An update notification that follows on
//! directly and carries its update inline is sent as is; anything else (a gap, a batch too large
//! to inline, a listener reconnect, a dropped event) makes the room fetch
//! `collab.updates_since(last)`. Each connection has a bounded send queue; one that is full gets
//! the connection closed (too slow). Nothing is echoed to the connection that wrote it: its
//! origin (`<bridge-id>/<conn-id>`) is skipped. Awareness, unlike updates, goes to everyone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db;
use crate::error::{Error, Result};
use crate::listener::Backoff;
use crate::metrics::Metrics;
use crate::protocol::{self, Incoming};
use yrs::sync::awareness::AwarenessUpdate;

pub type ConnId = u64;

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
    pub tx: mpsc::Sender<Frame>,
    pub kick: CancellationToken,
    pub kick_reason: Arc<Mutex<Option<Error>>>,
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
        match self.tx.try_send(Frame { bytes, since }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.kick.is_cancelled() {
                    metrics
                        .slow_clients
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                self.kick(Error::TooSlow);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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
}

struct AwarenessState {
    clock: u32,
    json: Arc<str>,
    seen: Instant,
}

pub struct Room {
    pub name: String,
    conns: Mutex<HashMap<ConnId, ConnHandle>>,
    /// Events with the instant their notification arrived.
    events: mpsc::Sender<(Instant, RoomEvent)>,
    catchup: Notify,
    ready: watch::Receiver<bool>,
    stop: CancellationToken,
    awareness: Mutex<HashMap<u64, AwarenessState>>,
}

impl Room {
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
    /// dropped rather than handed to clients.
    pub fn deliver_broadcast(&self, payload: &[u8], metrics: &Metrics) {
        match protocol::decode(payload) {
            Ok(Incoming::Awareness(update)) => self.record_awareness(&update),
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
    pool: Pool,
    metrics: Arc<Metrics>,
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
        pool: Pool,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Hub {
            rooms: Mutex::new(HashMap::new()),
            ctx: Arc::new(HubCtx { pool, metrics }),
            tracker,
            cancel,
        }
    }

    /// Adds a connection to the room of `doc`, opening the room if needed.
    pub fn join(&self, doc: &str, conn: ConnHandle) -> Arc<Room> {
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
                    ready,
                    stop: self.cancel.child_token(),
                    awareness: Mutex::new(HashMap::new()),
                });
                rooms.insert(doc.to_string(), room.clone());
                self.tracker
                    .spawn(run_room(room.clone(), rx, ready_tx, self.ctx.clone()));
                room
            }
        };
        lock(&room.conns).insert(conn.id, conn);
        self.set_gauge(rooms.len());
        room
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

    /// After the listener (re)connects: every room fetches what it may have missed.
    pub fn catch_up_all(&self) {
        for room in lock(&self.rooms).values() {
            room.catchup.notify_one();
        }
    }
}

async fn run_room(
    room: Arc<Room>,
    mut rx: mpsc::Receiver<(Instant, RoomEvent)>,
    ready: watch::Sender<bool>,
    ctx: Arc<HubCtx>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut last = loop {
        let attempt = tokio::select! {
            _ = room.stop.cancelled() => return,
            r = db::head_seq(&ctx.pool, &room.name) => r,
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
                return last;
            }
            match update {
                Some(update) if seq_from == last + 1 => {
                    send_update_since(room, ctx, update, origin.as_deref(), Some(arrived));
                    seq_to
                }
                _ => catch_up(room, ctx, last).await,
            }
        }
        RoomEvent::Broadcast { payload, .. } => {
            room.deliver_broadcast(&payload, &ctx.metrics);
            last
        }
        RoomEvent::Deleted => {
            room.kick_all(Error::Deleted);
            0
        }
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
    match db::updates_since(&ctx.pool, &room.name, last, CATCH_UP_PAGE_ROWS).await {
        Ok(rows) => {
            let full = rows.len() as i64 == CATCH_UP_PAGE_ROWS;
            // A pruned history starts with the checkpoint row, whatever its sequence.
            let rows: Vec<db::LogRow> = rows
                .into_iter()
                .filter(|r| r.seq > last || r.origin.as_deref() == Some("checkpoint"))
                .collect();
            let new_last = rows.iter().map(|r| r.seq).fold(last, i64::max);
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
        Err(e) => {
            tracing::warn!(doc = %room.name, "catching up failed: {e}; retrying");
            Err(())
        }
    }
}

/// Schedules another catch-up attempt; returns `last` unchanged.
fn catch_up_retry(room: &Arc<Room>, last: i64) -> i64 {
    let room = room.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
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
