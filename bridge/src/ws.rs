//! WebSocket connections speaking the y-websocket protocol: upgrade checks, then one task per
//! connection (reader loop here, writer task fed by a queue bounded in bytes).
//!
//! On connect the bridge sends its sync step 1 (`collab.state_vector`) and everyone's awareness;
//! a client's sync step 1 is answered with step 2 from `collab.diff`. Both reads are shared
//! between the room's connections that ask at the same time, and the expensive ones (diffs,
//! awareness snapshots) are rationed per connection: one at a time, a burst, then a rate.
//! Client updates (sync step 2 and update messages) go to the group-commit batcher, within a
//! global byte budget; read-only tokens get an auth message (permission denied) and nothing is
//! stored. Awareness is capped in size and rate, may only touch the client ids the connection
//! introduced, and is coalesced per room into one `collab.broadcast` so other bridges relay it
//! too; when a connection ends, its awareness clients are removed for everyone.
//!
//! Refusals happen after the upgrade, as close codes a stock client understands (y-websocket
//! turns an HTTP refusal into 1006 and retries forever): 4001 token missing, invalid, expired or
//! revoked; 4003 no access or a foreign Origin; 1013 over a connection limit or backing off
//! after refused updates. Other close codes: see `error.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::auth::{now_secs, Access, Principal};
use crate::db;
use crate::error::{Error, Result};
use crate::fanout::{lock, publish_awareness, ConnHandle, Frame, Joined, Room};
use crate::limits::{client_ip, SubjectSlot, TokenBucket};
use crate::metrics::Metrics;
use crate::protocol::{self, Incoming};
use crate::upgrade::{Socket as WebSocket, Upgrade};
use crate::{AppState, ConnSlot};

const PING_EVERY: Duration = Duration::from_secs(30);
/// A client that sends nothing (not even a pong to our pings) for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(95);
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// Awareness client ids one connection may announce (y-websocket uses one).
const MAX_AWARENESS_CLIENTS: usize = 64;
/// Awareness messages a connection may send at once before `--awareness-per-sec` applies.
const AWARENESS_BURST: u32 = 20;
/// Updates larger than this are checked on a blocking thread.
const BLOCKING_CHECK_BYTES: usize = 64 * 1024;
/// tungstenite reads in chunks of this size; its default (128 KiB, allocated per connection
/// for as long as it is open) was most of an idle connection's memory.
const READ_BUFFER: usize = 4 * 1024;
/// Bytes tungstenite collects before writing them out (the writer flushes after each batch).
const WRITE_BUFFER: usize = 8 * 1024;
/// Messages larger than this go out as fragments of this size: tungstenite's send buffer grows
/// to the largest frame and never shrinks (see `upgrade.rs`).
const FRAGMENT: usize = 32 * 1024;

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    pub token: Option<String>,
}

/// Why a connection is turned away after the upgrade.
fn busy(why: &str) -> Error {
    Error::Busy(why.to_string())
}

/// `GET /ws/{doc}`: checks name, client address, Origin, token, right and limits; anything
/// but a bad name is refused with a close code after the upgrade.
pub async fn upgrade(
    State(st): State<AppState>,
    Path(doc): Path<String>,
    Query(q): Query<TokenQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Upgrade,
) -> Result<Response> {
    db::validate_doc_name(&doc)?;
    let admitted = admit(&st, &doc, peer, &headers, q.token.as_deref());
    let limit = st.cfg.max_message_bytes;
    let tracker = st.tracker.clone();
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER);
    Ok(ws.on_upgrade(config, move |socket| {
        tracker.track_future(async move {
            match admitted {
                Ok(a) => run(socket, st, doc, a).await,
                Err(e) => {
                    if let Error::Busy(_) = e {
                        st.metrics.connections_refused.fetch_add(1, Relaxed);
                    }
                    refuse(socket, e).await
                }
            }
        })
    }))
}

fn close_frame(code: u16, reason: String) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }
}

/// What lets a connection in: its principal, right and places under the limits.
struct Admitted {
    principal: Principal,
    access: Access,
    _slot: ConnSlot,
    _subject_slot: SubjectSlot,
}

fn admit(
    st: &AppState,
    doc: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Admitted> {
    if st.cancel.is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    let ip = client_ip(peer, headers, st.cfg.trusted_proxy_header.as_deref());
    if !st.connect_rate.try_take(&ip) {
        return Err(busy(
            "too many new connections from your address, try again later",
        ));
    }
    st.auth.check_origin(headers)?;
    let principal = st.auth.authenticate(headers, query_token)?;
    let access = principal.require(doc, Access::Read)?;
    if let Some(wait) = st.refusals.wait(&principal.subject) {
        return Err(busy(&format!(
            "recent updates were refused: try again in {} s",
            wait.as_secs().max(1)
        )));
    }
    let subject_slot = st
        .subjects
        .try_take(&principal.subject, st.cfg.max_connections_per_subject)
        .ok_or_else(|| busy("too many connections with this token's subject"))?;
    let slot = st
        .try_conn_slot()
        .ok_or_else(|| busy("too many connections, try again later"))?;
    Ok(Admitted {
        principal,
        access,
        _slot: slot,
        _subject_slot: subject_slot,
    })
}

async fn refuse(mut socket: WebSocket, e: Error) {
    let frame = close_frame(e.close_code(), e.close_reason());
    let _ = socket.send(Message::Close(Some(frame))).await;
    // Give the client a moment to answer the close before the socket is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.next()).await;
}

/// An update on its way to the database (Sync: the connection is borrowed across awaits).
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<i64>> + Send + Sync>>;

struct Conn {
    st: AppState,
    doc: String,
    origin: String,
    subject: Arc<str>,
    access: Access,
    room: Arc<Room>,
    handle: ConnHandle,
    /// When this connection joined its room: which shared reads it may use.
    joined: Joined,
    pending: FuturesUnordered<Pending>,
    /// Awareness clients announced here: client id → (last clock, whether it has a state).
    aw_clients: HashMap<u64, (u32, bool)>,
    aw_rate: TokenBucket,
    expensive: TokenBucket,
}

async fn run(socket: WebSocket, st: AppState, doc: String, admitted: Admitted) {
    let Admitted {
        principal,
        access,
        _slot,
        _subject_slot,
    } = admitted;
    let id = st.next_conn_id();
    let origin = format!("{}/{}", st.bridge_id, id);
    let subject: Arc<str> = Arc::from(principal.subject.as_str());
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel(st.cfg.send_queue.max(1));
    let (close_tx, close_rx) = oneshot::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let mut writer = tokio::spawn(write_loop(
        sink,
        rx,
        close_rx,
        queued.clone(),
        st.metrics.clone(),
    ));
    let handle = ConnHandle {
        id,
        origin: origin.clone(),
        subject: subject.clone(),
        tx,
        queued,
        budget: st.cfg.send_queue_bytes.max(1),
        kick: CancellationToken::new(),
        kick_reason: Default::default(),
    };
    let (room, joined) = st.hub.join(&doc, handle.clone());
    tracing::debug!(doc, conn = id, subject = %principal.subject, ?access, "connected");
    let mut conn = Conn {
        st: st.clone(),
        doc,
        origin,
        subject: subject.clone(),
        access,
        room,
        handle,
        joined,
        pending: FuturesUnordered::new(),
        aw_clients: HashMap::new(),
        aw_rate: TokenBucket::new(AWARENESS_BURST, st.cfg.awareness_per_sec),
        expensive: TokenBucket::new(st.cfg.expensive_burst, st.cfg.expensive_per_sec),
    };
    let expires_at = principal.expires_at.saturating_add(st.auth.leeway_secs());
    let end = conn.serve(&mut stream, expires_at).await;
    let Conn {
        doc,
        origin,
        room,
        handle,
        aw_clients,
        ..
    } = conn;
    st.hub.leave(&room, id);
    let ids: Vec<u64> = aw_clients.keys().copied().collect();
    room.release_awareness(id, &ids);
    let gone: Vec<_> = aw_clients
        .into_iter()
        .filter(|(_, (_, alive))| *alive)
        .map(|(client, (clock, _))| (client, clock.wrapping_add(1), Arc::<str>::from("null")))
        .collect();
    if !gone.is_empty() && !matches!(end, Some(Error::ShuttingDown)) {
        let st2 = st.clone();
        st.tracker.spawn(async move {
            let frame = protocol::awareness(gone);
            publish_awareness(
                st2.pool_for(&room.name),
                &room,
                &origin,
                &frame,
                &st2.metrics,
            )
            .await;
        });
    }
    let (code, reason) = match &end {
        None => (1000, String::new()),
        Some(e) => (e.close_code(), e.close_reason()),
    };
    match &end {
        None => tracing::debug!(doc, conn = id, "disconnected"),
        Some(e) if e.status().is_server_error() && !matches!(e, Error::ShuttingDown) => {
            tracing::warn!(doc, conn = id, code, "closing: {e}")
        }
        Some(e) => tracing::info!(doc, conn = id, code, "closing: {e}"),
    }
    let _ = close_tx.send((code, reason));
    drop(handle);
    if tokio::time::timeout(WRITER_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

fn secs_until(unix: u64) -> Duration {
    Duration::from_secs(unix.saturating_sub(now_secs()).min(366 * 24 * 3600))
}

fn read_error(e: tokio_tungstenite::tungstenite::Error) -> Option<Error> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        WsError::Capacity(e) => Some(Error::TooLarge(e.to_string())),
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_) => None,
        other => Some(Error::Malformed(other.to_string())),
    }
}

impl Conn {
    /// Runs the connection until it ends; returns why (None: the client left).
    async fn serve(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        expires_at: u64,
    ) -> Option<Error> {
        if let Err(e) = self.room.wait_ready(READY_TIMEOUT).await {
            return Some(e);
        }
        let (pool, doc) = (self.st.pool_for(&self.doc).clone(), self.doc.clone());
        let step1 = self
            .room
            .single_flight(b"v".to_vec(), self.joined, move || {
                async move { protocol::sync_step1(&db::state_vector(&pool, &doc).await?) }.boxed()
            });
        match step1.await {
            Ok(frame) => {
                if !self.send(frame) {
                    return Some(self.kicked());
                }
            }
            Err(e) => return Some(e),
        }
        if let Some(frame) = self.room.awareness_snapshot() {
            self.send(frame);
        }
        let expiry = tokio::time::sleep(secs_until(expires_at));
        tokio::pin!(expiry);
        let idle = tokio::time::sleep(IDLE_TIMEOUT);
        tokio::pin!(idle);
        let kick = self.handle.kick.clone();
        let cancel = self.st.cancel.clone();
        let max_pending = self.st.cfg.max_pending_updates.max(1);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.flush().await;
                    return Some(Error::ShuttingDown);
                }
                _ = kick.cancelled() => return Some(self.kicked()),
                _ = &mut expiry => return Some(Error::TokenExpired),
                _ = &mut idle => return Some(Error::Idle(IDLE_TIMEOUT.as_secs())),
                Some(done) = self.pending.next(), if !self.pending.is_empty() => {
                    if let Err(e) = done {
                        // The database refused this subject's data: its next connections wait,
                        // longer each time, instead of resending it in a tight loop.
                        if e.is_client_data() {
                            self.st.refusals.refused(&self.subject);
                        }
                        return Some(e);
                    }
                }
                msg = stream.next(), if self.pending.len() < max_pending => {
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                    match msg {
                    None | Some(Ok(Message::Close(_))) => return None,
                    Some(Err(e)) => return read_error(e),
                    Some(Ok(Message::Binary(frame))) => {
                        if let Err(e) = self.handle_frame(&frame).await {
                            return Some(e);
                        }
                    }
                    Some(Ok(Message::Text(_) | Message::Frame(_))) => {
                        return Some(Error::Malformed(
                            "text frames are not y-websocket messages".into(),
                        ))
                    }
                    Some(Ok(_)) => {}
                    }
                }
            }
        }
    }

    fn kicked(&self) -> Error {
        lock(&self.handle.kick_reason)
            .take()
            .unwrap_or(Error::TooSlow)
    }

    /// Waits (bounded) for this connection's updates to be stored.
    async fn flush(&mut self) {
        let grace = self.st.cfg.shutdown_grace();
        let _ = tokio::time::timeout(grace, async {
            while self.pending.next().await.is_some() {}
        })
        .await;
    }

    fn send(&self, frame: Bytes) -> bool {
        self.handle.send(frame, &self.st.metrics)
    }

    /// Waits for this connection's next expensive reply (its token bucket); ends early if the
    /// connection is kicked or the bridge stops. One at a time: the reader waits for the reply.
    async fn expensive_turn(&mut self) -> Result<()> {
        let wait = self.expensive.wait_time();
        if !wait.is_zero() {
            self.st.metrics.expensive_delayed.fetch_add(1, Relaxed);
            let kick = self.handle.kick.clone();
            let cancel = self.st.cancel.clone();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Error::ShuttingDown),
                _ = kick.cancelled() => return Err(self.kicked()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.expensive.try_take();
        Ok(())
    }

    async fn handle_frame(&mut self, frame: &[u8]) -> Result<()> {
        match protocol::decode(frame)? {
            Incoming::SyncStep1(sv) => {
                self.expensive_turn().await?;
                let (pool, doc) = (self.st.pool_for(&self.doc).clone(), self.doc.clone());
                let slots = self.st.expensive_slots.clone();
                let mut key = Vec::with_capacity(sv.len() + 1);
                key.push(b'd');
                key.extend_from_slice(&sv);
                // Joiners holding the same state (typically none) share one diff and one frame.
                let reply = self.room.single_flight(key, self.joined, move || {
                    async move {
                        // A place among the bridge's concurrent diffs, so that a storm of them
                        // leaves pool connections for everything else.
                        let _slot = slots
                            .acquire_owned()
                            .await
                            .map_err(|_| Error::ShuttingDown)?;
                        let diff = db::diff(&pool, &doc, &sv).await?;
                        Ok(protocol::sync_step2(diff))
                    }
                    .boxed()
                });
                let frame = reply.await?;
                self.send(frame);
            }
            Incoming::SyncStep2(update) | Incoming::Update(update) => {
                self.handle_update(update).await?
            }
            Incoming::Awareness(update) => self.handle_awareness(update)?,
            Incoming::AwarenessQuery => {
                self.expensive_turn().await?;
                if let Some(frame) = self.room.awareness_snapshot() {
                    self.send(frame);
                }
            }
            Incoming::Auth => {}
            Incoming::Custom(tag) => {
                tracing::debug!(doc = %self.doc, tag, "ignoring message of unknown type")
            }
        }
        Ok(())
    }

    /// Checks an awareness message (size, rate, whose client ids) and queues what passes for
    /// the room's next broadcast.
    fn handle_awareness(&mut self, update: yrs::sync::awareness::AwarenessUpdate) -> Result<()> {
        let m = &self.st.metrics;
        m.awareness_in.fetch_add(1, Relaxed);
        let max = self.st.cfg.max_awareness_bytes;
        let entries = protocol::awareness_entries(&update);
        if let Some((_, _, json)) = entries.iter().find(|(_, _, json)| json.len() > max) {
            return Err(Error::TooLarge(format!(
                "awareness state of {} bytes (at most {max})",
                json.len()
            )));
        }
        if !self.aw_rate.try_take() {
            m.awareness_dropped.fetch_add(1, Relaxed);
            return Ok(());
        }
        let mut accepted = Vec::with_capacity(entries.len());
        for (client, clock, json) in entries {
            let removal = &*json == "null";
            let known = self.aw_clients.contains_key(&client);
            // Removing is only for ids this connection introduced; setting claims the id
            // unless another user's live connection holds it.
            if (removal && !known)
                || !self
                    .room
                    .claim_awareness(client, self.handle.id, &self.subject)
            {
                m.awareness_dropped.fetch_add(1, Relaxed);
                continue;
            }
            self.aw_clients.insert(client, (clock, !removal));
            accepted.push((client, clock, json));
        }
        if self.aw_clients.len() > MAX_AWARENESS_CLIENTS {
            return Err(Error::Malformed(format!(
                "more than {MAX_AWARENESS_CLIENTS} awareness clients on one connection"
            )));
        }
        if !accepted.is_empty() {
            self.room.queue_awareness(accepted);
        }
        Ok(())
    }

    async fn handle_update(&mut self, update: Vec<u8>) -> Result<()> {
        let (changes, update) = if update.len() > BLOCKING_CHECK_BYTES {
            tokio::task::spawn_blocking(move || (protocol::check_update(&update), update))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
        } else {
            (protocol::check_update(&update), update)
        };
        if !changes? {
            return Ok(());
        }
        if self.access < Access::Write {
            self.st.metrics.updates_rejected.fetch_add(1, Relaxed);
            let reason = format!("read-only access to \"{}\": update not stored", self.doc);
            self.send(protocol::permission_denied(&reason));
            return Ok(());
        }
        let permit = self.write_budget(update.len()).await?;
        // #13: the token's subject is recorded as the update's author.
        let done = self.st.batcher_for(&self.doc).submit_as(
            &self.doc,
            update,
            self.origin.clone(),
            Some(self.subject.clone()),
        );
        self.pending.push(Box::pin(async move {
            let r = done
                .await
                .unwrap_or_else(|_| Err(Error::Internal("update lost".into())));
            drop(permit);
            r
        }));
        Ok(())
    }

    /// A share of the bridge's budget for updates waiting to be stored: while the database is
    /// behind, connections that send more wait here (and stop being read).
    async fn write_budget(&self, bytes: usize) -> Result<OwnedSemaphorePermit> {
        let sem = self.st.write_budget.clone();
        let n = bytes
            .clamp(1, self.st.cfg.write_budget_bytes.max(1))
            .min(u32::MAX as usize) as u32;
        if let Ok(p) = sem.clone().try_acquire_many_owned(n) {
            return Ok(p);
        }
        self.st.metrics.write_budget_waits.fetch_add(1, Relaxed);
        let kick = self.handle.kick.clone();
        let cancel = self.st.cancel.clone();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::ShuttingDown),
            _ = kick.cancelled() => Err(self.kicked()),
            p = sem.acquire_many_owned(n) => p.map_err(|_| Error::ShuttingDown),
        }
    }
}

/// Frames written before one flush at most (what is queued is written together: one system
/// call and, with TCP_NODELAY, as few packets as the sizes allow).
const WRITE_BATCH: usize = 64;

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Frame>,
    mut close_rx: oneshot::Receiver<(u16, String)>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut batch: Vec<Frame> = Vec::with_capacity(WRITE_BATCH);
    let (code, reason) = loop {
        tokio::select! {
            biased;
            c = &mut close_rx => break c.unwrap_or((1000, String::new())),
            n = rx.recv_many(&mut batch, WRITE_BATCH) => {
                if n == 0 {
                    break (&mut close_rx).await.unwrap_or((1000, String::new()));
                }
                if write_frames(&mut sink, &mut batch, &queued, &metrics).await.is_err() {
                    return;
                }
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    };
    // What was queued before the close still goes out (e.g. a permission-denied message).
    while let Ok(f) = rx.try_recv() {
        batch.push(f);
    }
    if write_frames(&mut sink, &mut batch, &queued, &metrics)
        .await
        .is_err()
    {
        return;
    }
    let _ = sink
        .send(Message::Close(Some(close_frame(code, reason))))
        .await;
    let _ = sink.close().await;
}

/// Writes and flushes `batch` (emptied), then records how long the update frames took from
/// their notification to the socket.
async fn write_frames(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut Vec<Frame>,
    queued: &AtomicUsize,
    metrics: &Metrics,
) -> std::result::Result<(), tokio_tungstenite::tungstenite::Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut since = Vec::new();
    let mut bytes = 0;
    for f in batch.drain(..) {
        since.extend(f.since);
        bytes += f.bytes.len();
        if f.bytes.len() <= FRAGMENT {
            sink.feed(Message::Binary(f.bytes)).await?;
            continue;
        }
        // A large message (a whole document): fragments, each a slice of the shared bytes.
        let total = f.bytes.len();
        let mut at = 0;
        while at < total {
            let end = (at + FRAGMENT).min(total);
            let opcode = if at == 0 {
                OpCode::Data(Data::Binary)
            } else {
                OpCode::Data(Data::Continue)
            };
            let frame = WsFrame::message(f.bytes.slice(at..end), opcode, end == total);
            sink.feed(Message::Frame(frame)).await?;
            at = end;
        }
    }
    sink.flush().await?;
    // Only now are the bytes off the budget: a reader that stops reading holds them.
    queued.fetch_sub(bytes, AcqRel);
    let now = std::time::Instant::now();
    for t in since {
        metrics
            .fanout_seconds
            .observe_duration(now.saturating_duration_since(t));
    }
    Ok(())
}
