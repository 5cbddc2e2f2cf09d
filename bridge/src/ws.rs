//! WebSocket connections speaking the y-websocket protocol: upgrade checks, then one task per
//! connection (reader loop here, writer task fed by a queue bounded in bytes; the writer is
//! shared with the Hocuspocus endpoint).
//!
//! What a connection does with its document (sync, rationed diffs, the group commit, awareness
//! checks) is its `session::DocSession`. Here: read-only tokens get an auth message (permission
//! denied) for an update, and a client that connected with `?saved=1` is told when each of its
//! update messages is committed (`protocol::saved`); others never see that message type.
//!
//! Refusals happen after the upgrade, as close codes a stock client understands (y-websocket
//! turns an HTTP refusal into 1006 and retries forever): 4001 token missing, invalid, expired or
//! revoked; 4003 no access or a foreign Origin; 1013 over a connection limit or backing off
//! after refused updates. Other close codes: see `error.rs`.

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
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::auth::{now_secs, Access, Principal};
use crate::db;
use crate::error::{Error, Result};
use crate::fanout::{ConnHandle, Frame};
use crate::limits::{client_ip, SubjectSlot};
use crate::metrics::Metrics;
use crate::protocol::{self, Incoming};
use crate::session::{DocSession, UpdateOutcome};
use crate::upgrade::{Socket as WebSocket, Upgrade};
use crate::{AppState, ConnSlot};

const PING_EVERY: Duration = Duration::from_secs(30);
/// A client that sends nothing (not even a pong to our pings) for this long is gone.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(95);
const WRITER_GRACE: Duration = Duration::from_secs(2);
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
    /// `?saved=1`: the client wants the saved message (see `protocol::saved`).
    pub saved: Option<String>,
}

/// Why a connection is turned away after the upgrade.
pub(crate) fn busy(why: &str) -> Error {
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
    let saved = q.saved.as_deref().is_some_and(|v| v == "1" || v == "true");
    let tracker = st.tracker.clone();
    Ok(ws.on_upgrade(socket_config(&st), move |socket| {
        tracker.track_future(async move {
            match admitted {
                Ok(a) => run(socket, st, doc, a, saved).await,
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

/// Limits and buffers of every WebSocket this bridge accepts.
pub(crate) fn socket_config(st: &AppState) -> WebSocketConfig {
    let limit = st.cfg.max_message_bytes;
    WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
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

pub(crate) async fn refuse(mut socket: WebSocket, e: Error) {
    let frame = close_frame(e.close_code(), e.close_reason());
    let _ = socket.send(Message::Close(Some(frame))).await;
    // Give the client a moment to answer the close before the socket is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.next()).await;
}

/// The y-websocket connection: one document session, plus what is this protocol's own (the
/// permission-denied auth message for a read-only write, the opt-in saved message).
struct Conn {
    st: AppState,
    session: DocSession,
    /// `?saved=1`: tell the client when each of its update messages is stored.
    saved: bool,
    pending: FuturesUnordered<Tagged>,
}

/// A pending update and the kind of saved message it earns (see `protocol::saved`).
type Tagged = std::pin::Pin<Box<dyn std::future::Future<Output = (u8, Result<i64>)> + Send + Sync>>;

/// Starts the writer task of a socket: its queue, its byte counter and the channel that closes
/// it with a code and reason.
pub(crate) struct Writer {
    pub tx: mpsc::Sender<Frame>,
    pub queued: Arc<AtomicUsize>,
    pub close: oneshot::Sender<(u16, String)>,
    pub task: tokio::task::JoinHandle<()>,
}

pub(crate) fn spawn_writer(st: &AppState, sink: SplitSink<WebSocket, Message>) -> Writer {
    let (tx, rx) = mpsc::channel(st.cfg.send_queue.max(1));
    let (close, close_rx) = oneshot::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(write_loop(
        sink,
        rx,
        close_rx,
        queued.clone(),
        st.metrics.clone(),
    ));
    Writer {
        tx,
        queued,
        close,
        task,
    }
}

impl Writer {
    /// Sends the close frame after what is queued, and waits (bounded) for the writer.
    pub async fn finish(mut self, code: u16, reason: String) {
        let _ = self.close.send((code, reason));
        if tokio::time::timeout(WRITER_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }

    /// A room handle for a new session on this socket (`prefix`: Hocuspocus framing).
    pub fn handle(&self, st: &AppState, subject: Arc<str>, prefix: Option<Bytes>) -> ConnHandle {
        let id = st.next_conn_id();
        ConnHandle {
            id,
            origin: format!("{}/{}", st.bridge_id, id),
            subject,
            tx: self.tx.clone(),
            queued: self.queued.clone(),
            budget: st.cfg.send_queue_bytes.max(1),
            kick: CancellationToken::new(),
            kick_reason: Default::default(),
            prefix,
        }
    }
}

/// Logs why a connection ends and gives its close code and reason.
pub(crate) fn close_for(end: &Option<Error>, what: &str, conn: u64) -> (u16, String) {
    match end {
        None => tracing::debug!(what, conn, "disconnected"),
        Some(e) if e.status().is_server_error() && !matches!(e, Error::ShuttingDown) => {
            tracing::warn!(what, conn, code = e.close_code(), "closing: {e}")
        }
        Some(e) => tracing::info!(what, conn, code = e.close_code(), "closing: {e}"),
    }
    match end {
        None => (1000, String::new()),
        Some(e) => (e.close_code(), e.close_reason()),
    }
}

async fn run(socket: WebSocket, st: AppState, doc: String, admitted: Admitted, saved: bool) {
    let Admitted {
        principal,
        access,
        _slot,
        _subject_slot,
    } = admitted;
    let subject: Arc<str> = Arc::from(principal.subject.as_str());
    let (sink, mut stream) = socket.split();
    let writer = spawn_writer(&st, sink);
    let handle = writer.handle(&st, subject.clone(), None);
    let id = handle.id;
    tracing::debug!(doc, conn = id, subject = %principal.subject, ?access, "connected");
    let session = DocSession::join(&st, doc.clone(), subject, access, handle);
    let mut conn = Conn {
        st: st.clone(),
        session,
        saved,
        pending: FuturesUnordered::new(),
    };
    let expires_at = principal.expires_at.saturating_add(st.auth.leeway_secs());
    let end = conn.serve(&mut stream, expires_at).await;
    let Conn { session, .. } = conn;
    session.leave(matches!(end, Some(Error::ShuttingDown)));
    let (code, reason) = close_for(&end, &doc, id);
    writer.finish(code, reason).await;
}

pub(crate) fn secs_until(unix: u64) -> Duration {
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

/// What one read from a client's socket means to either endpoint.
pub(crate) enum Read {
    /// A binary message: a protocol frame.
    Frame(Bytes),
    /// Nothing to do (ping, pong).
    Skip,
    /// The connection ends: why (None: the client left).
    End(Option<Error>),
}

/// Sorts one read from the socket; `protocol` names what text frames are not.
pub(crate) fn read(
    msg: Option<std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>,
    protocol: &str,
) -> Read {
    match msg {
        None | Some(Ok(Message::Close(_))) => Read::End(None),
        Some(Err(e)) => Read::End(read_error(e)),
        Some(Ok(Message::Binary(frame))) => Read::Frame(frame),
        Some(Ok(Message::Text(_) | Message::Frame(_))) => Read::End(Some(Error::Malformed(
            format!("text frames are not {protocol} messages"),
        ))),
        Some(Ok(_)) => Read::Skip,
    }
}

impl Conn {
    /// Runs the connection until it ends; returns why (None: the client left).
    async fn serve(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        expires_at: u64,
    ) -> Option<Error> {
        if let Err(e) = self.session.open().await {
            return Some(e);
        }
        let expiry = tokio::time::sleep(secs_until(expires_at));
        tokio::pin!(expiry);
        let idle = tokio::time::sleep(IDLE_TIMEOUT);
        tokio::pin!(idle);
        let kick = self.session.handle.kick.clone();
        let cancel = self.st.cancel.clone();
        let max_pending = self.st.cfg.max_pending_updates.max(1);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.flush().await;
                    return Some(Error::ShuttingDown);
                }
                _ = kick.cancelled() => return Some(self.session.kicked()),
                _ = &mut expiry => return Some(Error::TokenExpired),
                _ = &mut idle => return Some(Error::Idle(IDLE_TIMEOUT.as_secs())),
                Some((kind, done)) = self.pending.next(), if !self.pending.is_empty() => {
                    match done {
                        Ok(seq) => {
                            if self.saved {
                                self.session.send(protocol::saved(kind, seq));
                            }
                        }
                        Err(e) => {
                            // The database refused this subject's data: its next connections
                            // wait, longer each time, instead of resending it in a tight loop.
                            if e.is_client_data() {
                                self.st.refusals.refused(&self.session.subject);
                            }
                            return Some(e);
                        }
                    }
                }
                msg = stream.next(), if self.pending.len() < max_pending => {
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                    match read(msg, "y-websocket") {
                        Read::End(why) => return why,
                        Read::Frame(frame) => {
                            if let Err(e) = self.handle_frame(&frame).await {
                                return Some(e);
                            }
                        }
                        Read::Skip => {}
                    }
                }
            }
        }
    }

    /// Waits (bounded) for this connection's updates to be stored.
    async fn flush(&mut self) {
        let grace = self.st.cfg.shutdown_grace();
        let _ = tokio::time::timeout(grace, async {
            while self.pending.next().await.is_some() {}
        })
        .await;
    }

    async fn handle_frame(&mut self, frame: &[u8]) -> Result<()> {
        let msg = protocol::decode(frame)?;
        // Saved messages say which kind of message they settle: a client counts its sync
        // step 2 (sent on every connect) apart from its edits.
        let kind = u8::from(matches!(msg, Incoming::SyncStep2(_)));
        match self.session.handle(msg).await? {
            None => {}
            Some(UpdateOutcome::Unchanged) if self.saved => {
                self.session.send(protocol::saved(kind, 0));
            }
            Some(UpdateOutcome::Unchanged) => {}
            Some(UpdateOutcome::ReadOnly) => {
                let reason = format!(
                    "read-only access to \"{}\": update not stored",
                    self.session.doc
                );
                self.session.send(protocol::permission_denied(&reason));
                if self.saved {
                    self.session.send(protocol::saved(2, 0));
                }
            }
            Some(UpdateOutcome::Queued(p)) => {
                self.pending.push(Box::pin(p.map(move |r| (kind, r))));
            }
        }
        Ok(())
    }
}

/// Frames written before one flush at most (what is queued is written together: one system
/// call and, with TCP_NODELAY, as few packets as the sizes allow).
const WRITE_BATCH: usize = 64;

pub(crate) async fn write_loop(
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
