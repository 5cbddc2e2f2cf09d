//! WebSocket connections speaking the y-websocket protocol: upgrade checks, then one task per
//! connection (reader loop here, writer task fed by a bounded queue).
//!
//! On connect the bridge sends its sync step 1 (`collab.state_vector`) and everyone's awareness;
//! a client's sync step 1 is answered with step 2 from `collab.diff`. Client updates (sync step
//! 2 and update messages) go to the group-commit batcher; read-only tokens get an auth message
//! (permission denied) and nothing is stored. Awareness goes through `collab.broadcast` so that
//! other bridges relay it too; when a connection ends, its awareness clients are removed for
//! everyone. Close codes: see `error.rs` (4001 token expired or invalid, 1012 restart, 1013 over
//! the connection limit, 1002 malformed message, 1007 update refused, 1008 too slow).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::auth::{now_secs, Access, Principal};
use crate::db;
use crate::error::{Error, Result};
use crate::fanout::{lock, ConnHandle, Frame, Room};
use crate::metrics::Metrics;
use crate::protocol::{self, Incoming};
use crate::{AppState, ConnSlot};

const PING_EVERY: Duration = Duration::from_secs(30);
/// A client that sends nothing (not even a pong to our pings) for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(95);
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// Awareness client ids one connection may announce (y-websocket uses one).
const MAX_AWARENESS_CLIENTS: usize = 64;
/// Updates larger than this are checked on a blocking thread.
const BLOCKING_CHECK_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    pub token: Option<String>,
}

/// `GET /ws/{doc}`: checks name, Origin, token and right before upgrading.
pub async fn upgrade(
    State(st): State<AppState>,
    Path(doc): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response> {
    db::validate_doc_name(&doc)?;
    st.auth.check_origin(&headers)?;
    let principal = st.auth.authenticate(&headers, q.token.as_deref())?;
    let access = principal.require(&doc, Access::Read)?;
    if st.cancel.is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    let slot = st.try_conn_slot();
    let limit = st.cfg.max_message_bytes;
    let tracker = st.tracker.clone();
    Ok(ws
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                match slot {
                    Some(slot) => run(socket, st, doc, principal, access, slot).await,
                    None => {
                        refuse(
                            socket,
                            Error::Busy("too many connections, try again later".into()),
                        )
                        .await
                    }
                }
            })
        }))
}

async fn refuse(mut socket: WebSocket, e: Error) {
    let frame = CloseFrame {
        code: e.close_code(),
        reason: e.close_reason().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
    // Give the client a moment to answer the close before the socket is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.next()).await;
}

struct Conn {
    st: AppState,
    doc: String,
    origin: String,
    access: Access,
    room: Arc<Room>,
    handle: ConnHandle,
    pending: FuturesUnordered<oneshot::Receiver<Result<i64>>>,
    /// Awareness clients announced here: client id → (last clock, whether it has a state).
    aw_clients: HashMap<u64, (u32, bool)>,
    aw_tx: watch::Sender<Option<Bytes>>,
}

async fn run(
    socket: WebSocket,
    st: AppState,
    doc: String,
    principal: Principal,
    access: Access,
    _slot: ConnSlot,
) {
    let id = st.next_conn_id();
    let origin = format!("{}/{}", st.bridge_id, id);
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel(st.cfg.send_queue.max(1));
    let (close_tx, close_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_loop(sink, rx, close_rx, st.metrics.clone()));
    let handle = ConnHandle {
        id,
        origin: origin.clone(),
        tx,
        kick: CancellationToken::new(),
        kick_reason: Default::default(),
    };
    let room = st.hub.join(&doc, handle.clone());
    let (aw_tx, aw_rx) = watch::channel(None);
    let relay = tokio::spawn(relay_awareness(
        st.clone(),
        room.clone(),
        origin.clone(),
        aw_rx,
    ));
    tracing::debug!(doc, conn = id, subject = %principal.subject, ?access, "connected");
    let mut conn = Conn {
        st: st.clone(),
        doc,
        origin,
        access,
        room,
        handle,
        pending: FuturesUnordered::new(),
        aw_clients: HashMap::new(),
        aw_tx,
    };
    let end = conn.serve(&mut stream, principal.expires_at).await;
    let Conn {
        doc,
        origin,
        room,
        handle,
        aw_clients,
        aw_tx,
        ..
    } = conn;
    st.hub.leave(&room, id);
    drop(aw_tx);
    let gone: Vec<_> = aw_clients
        .into_iter()
        .filter(|(_, (_, alive))| *alive)
        .map(|(client, (clock, _))| (client, clock.wrapping_add(1), Arc::<str>::from("null")))
        .collect();
    if gone.is_empty() || matches!(end, Some(Error::ShuttingDown)) {
        relay.abort();
    } else {
        let st2 = st.clone();
        st.tracker.spawn(async move {
            // After this connection's last awareness message, so it cannot overtake it.
            let _ = tokio::time::timeout(WRITER_GRACE, relay).await;
            publish_awareness(&st2, &room, &origin, &protocol::awareness(gone)).await;
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

fn read_error(e: axum::Error) -> Option<Error> {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("too long") || lower.contains("too big") || lower.contains("capacity") {
        Some(Error::TooLarge(text))
    } else if lower.contains("reset")
        || lower.contains("broken pipe")
        || lower.contains("closed")
        || lower.contains("without closing handshake")
    {
        None
    } else {
        Some(Error::Malformed(text))
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
        match db::state_vector(&self.st.pool, &self.doc)
            .await
            .and_then(|sv| protocol::sync_step1(&sv))
        {
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
                Some(done) = self.pending.next(), if !self.pending.is_empty() => match done {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Some(e),
                    Err(_) => return Some(Error::Internal("update lost".into())),
                },
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
                    Some(Ok(Message::Text(_))) => {
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

    async fn handle_frame(&mut self, frame: &[u8]) -> Result<()> {
        match protocol::decode(frame)? {
            Incoming::SyncStep1(sv) => {
                let diff = db::diff(&self.st.pool, &self.doc, &sv).await?;
                self.send(protocol::sync_step2(diff));
            }
            Incoming::SyncStep2(update) | Incoming::Update(update) => {
                self.handle_update(update).await?
            }
            Incoming::Awareness(update) => {
                self.st.metrics.awareness_in.fetch_add(1, Relaxed);
                for (client, clock, json) in protocol::awareness_entries(&update) {
                    self.aw_clients.insert(client, (clock, &*json != "null"));
                }
                if self.aw_clients.len() > MAX_AWARENESS_CLIENTS {
                    return Err(Error::Malformed(format!(
                        "more than {MAX_AWARENESS_CLIENTS} awareness clients on one connection"
                    )));
                }
                self.aw_tx
                    .send_replace(Some(protocol::awareness_frame(update)));
            }
            Incoming::AwarenessQuery => {
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
        let done = self
            .st
            .batcher
            .submit(&self.doc, update, self.origin.clone());
        self.pending.push(done);
        Ok(())
    }
}

/// Frames written before one flush at most (what is queued is written together: one system
/// call and, with TCP_NODELAY, as few packets as the sizes allow).
const WRITE_BATCH: usize = 64;

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Frame>,
    mut close_rx: oneshot::Receiver<(u16, String)>,
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
                if write_frames(&mut sink, &mut batch, &metrics).await.is_err() {
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
    if write_frames(&mut sink, &mut batch, &metrics).await.is_err() {
        return;
    }
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

/// Writes and flushes `batch` (emptied), then records how long the update frames took from
/// their notification to the socket.
async fn write_frames(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut Vec<Frame>,
    metrics: &Metrics,
) -> std::result::Result<(), axum::Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut since = Vec::new();
    for f in batch.drain(..) {
        since.extend(f.since);
        sink.feed(Message::Binary(f.bytes)).await?;
    }
    sink.flush().await?;
    let now = std::time::Instant::now();
    for t in since {
        metrics
            .fanout_seconds
            .observe_duration(now.saturating_duration_since(t));
    }
    Ok(())
}

/// Sends this connection's awareness to all bridges, newest state only (coalesced while a
/// broadcast is in flight).
async fn relay_awareness(
    st: AppState,
    room: Arc<Room>,
    origin: String,
    mut rx: watch::Receiver<Option<Bytes>>,
) {
    while rx.changed().await.is_ok() {
        let frame = rx.borrow_and_update().clone();
        if let Some(frame) = frame {
            publish_awareness(&st, &room, &origin, &frame).await;
        }
    }
}

async fn publish_awareness(st: &AppState, room: &Arc<Room>, origin: &str, frame: &[u8]) {
    match db::broadcast(&st.pool, &room.name, frame, origin).await {
        Ok(()) => {}
        // Too big for a notification: at least this bridge's clients get it.
        Err(Error::TooLarge(_)) => room.deliver_broadcast(frame, &st.metrics),
        Err(e) => tracing::debug!(doc = %room.name, "awareness not relayed: {e}"),
    }
}
