//! `GET /hocuspocus`: the Hocuspocus provider's protocol (`@hocuspocus/provider` 4.x, which
//! Tiptap's collaboration extensions use), many documents over one socket.
//!
//! A second endpoint rather than negotiation on `/ws/{doc}`: the provider's messages start with
//! a document address where y-websocket's start with a message type, and a y-websocket socket
//! is for one document named in its path; keeping them apart leaves y-websocket untouched.
//!
//! The socket is checked at the upgrade like a y-websocket one (address rate, Origin, the
//! bridge's connection cap); the token comes in band, per document: each provider attached to
//! the socket sends `auth(token)` for its document, and the bridge answers `Authenticated`
//! (scope `read-write` or `readonly` from the token's right on that document) and opens a
//! `session::DocSession` (the same machinery as y-websocket: room, NOTIFY fan-out, catch-up,
//! group commit, rationing, awareness checks), or `PermissionDenied` for that document only:
//! the socket and its other documents go on. An empty token (a browser page whose token is an
//! HttpOnly cookie) means the upgrade request's own token (cookie or `Authorization`). A new
//! token on an open document replaces the old one (rights follow it); a minute before a token
//! expires (or halfway, for short ones) the bridge asks the provider for a fresh one, and a
//! document whose token expires is closed with `PermissionDenied`.
//!
//! "Saved" means committed: the sync-status acknowledgement of an update is sent once the
//! transaction that stored it has committed (the batcher's oneshot), at once for an update that
//! changes nothing, and as "not saved" for a read-only document. Stateless messages go through
//! `collab.broadcast` to the document's other Hocuspocus connections on every bridge.
//!
//! Counted sensibly for one socket with many documents: one connection (and one send queue with
//! one byte budget, one cap of pending updates), but each open document takes a place under the
//! subject's connection cap as a y-websocket connection would, and has its own rationing of
//! expensive replies; at most [`MAX_DOCUMENTS`] documents per socket.

pub mod codec;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, SplitStream};
use futures_util::{FutureExt, StreamExt};

use crate::auth::{now_secs, Access};
use crate::db;
use crate::error::{Error, Result};
use crate::fanout::{ConnHandle, ConnId};
use crate::limits::{client_ip, SubjectSlot, TokenBucket};
use crate::protocol;
use crate::session::{DocSession, UpdateOutcome};
use crate::upgrade::{Socket as WebSocket, Upgrade};
use crate::ws::{busy, read, refuse, socket_config, spawn_writer, Read, Writer, IDLE_TIMEOUT};
use crate::{AppState, ConnSlot};
use codec::{Body, Decoded};

/// Documents one socket may have open at once.
pub const MAX_DOCUMENTS: usize = 64;
/// Ask for a fresh token this long before the current one expires (at most).
const REFRESH_AHEAD_SECS: u64 = 60;
/// Stateless messages a socket may send at once before `--awareness-per-sec` applies.
const STATELESS_BURST: u32 = 20;

/// `GET /hocuspocus`: address rate, Origin and the connection cap; tokens come in band.
pub async fn upgrade(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Upgrade,
) -> Result<Response> {
    let admitted = admit(&st, peer, &headers);
    let tracker = st.tracker.clone();
    Ok(ws.on_upgrade(socket_config(&st), move |socket| {
        tracker.track_future(async move {
            match admitted {
                Ok(a) => run(socket, st, a).await,
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

struct Admitted {
    _slot: ConnSlot,
    /// The upgrade request's own token, for documents whose provider sends an empty one.
    header_token: Option<String>,
}

fn admit(st: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<Admitted> {
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
    let slot = st
        .try_conn_slot()
        .ok_or_else(|| busy("too many connections, try again later"))?;
    Ok(Admitted {
        _slot: slot,
        header_token: st.auth.token_from(headers, None),
    })
}

/// One document open on the socket.
struct Open {
    session: DocSession,
    /// The token's `exp`, and when it was last renewed (for when to ask for a fresh one).
    exp: u64,
    renewed: u64,
    asked: bool,
    _subject_slot: SubjectSlot,
}

type Settled = std::pin::Pin<
    Box<dyn std::future::Future<Output = (String, ConnId, Arc<str>, Result<i64>)> + Send + Sync>,
>;

struct Socket {
    st: AppState,
    writer: Writer,
    /// For messages that are not a session's (auth answers, sync status): already addressed.
    raw: ConnHandle,
    header_token: Option<String>,
    docs: HashMap<String, Open>,
    pending: FuturesUnordered<Settled>,
    kicks: FuturesUnordered<BoxFuture<'static, (String, ConnId)>>,
    stateless_rate: TokenBucket,
}

async fn run(socket: WebSocket, st: AppState, admitted: Admitted) {
    let (sink, mut stream) = socket.split();
    let writer = spawn_writer(&st, sink);
    let raw = writer.handle(&st, Arc::from(""), None);
    let id = raw.id;
    let mut s = Socket {
        st: st.clone(),
        writer,
        raw,
        header_token: admitted.header_token,
        docs: HashMap::new(),
        pending: FuturesUnordered::new(),
        kicks: FuturesUnordered::new(),
        stateless_rate: TokenBucket::new(STATELESS_BURST, st.cfg.awareness_per_sec),
    };
    let end = s.serve(&mut stream).await;
    let shutting_down = matches!(end, Some(Error::ShuttingDown));
    for (_, open) in s.docs.drain() {
        st.metrics.hocuspocus_documents.fetch_sub(1, Relaxed);
        open.session.leave(shutting_down);
    }
    let (code, reason) = crate::ws::close_for(&end, "hocuspocus", id);
    s.writer.finish(code, reason).await;
}

/// Errors that end one document of the socket (told to its provider), not the socket.
fn document_scoped(address: &str, e: &Error) -> Option<Bytes> {
    match e {
        Error::Deleted => Some(codec::close(address, &e.public_message())),
        Error::Unauthenticated
        | Error::InvalidToken(_)
        | Error::TokenExpired
        | Error::Forbidden(_)
        | Error::InvalidDocName(_)
        | Error::Busy(_) => Some(codec::permission_denied(address, &e.close_reason())),
        _ => None,
    }
}

impl Socket {
    async fn serve(&mut self, stream: &mut SplitStream<WebSocket>) -> Option<Error> {
        let idle = tokio::time::sleep(IDLE_TIMEOUT);
        tokio::pin!(idle);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let cancel = self.st.cancel.clone();
        let raw_kick = self.raw.kick.clone();
        let max_pending = self.st.cfg.max_pending_updates.max(1);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.flush().await;
                    return Some(Error::ShuttingDown);
                }
                _ = raw_kick.cancelled() => return Some(Error::TooSlow),
                Some((address, id)) = self.kicks.next(), if !self.kicks.is_empty() => {
                    if let Err(e) = self.kicked(&address, id) {
                        return Some(e);
                    }
                }
                _ = &mut idle => return Some(Error::Idle(IDLE_TIMEOUT.as_secs())),
                _ = tick.tick() => self.check_tokens(),
                Some(settled) = self.pending.next(), if !self.pending.is_empty() => {
                    if let Err(e) = self.settled(settled) {
                        return Some(e);
                    }
                }
                msg = stream.next(), if self.pending.len() < max_pending => {
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                    match read(msg, "Hocuspocus") {
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

    /// Waits (bounded) for this socket's updates to be stored.
    async fn flush(&mut self) {
        let grace = self.st.cfg.shutdown_grace();
        let _ = tokio::time::timeout(grace, async {
            while self.pending.next().await.is_some() {}
        })
        .await;
    }

    fn send(&self, frame: Bytes) {
        self.raw.send(frame, &self.st.metrics);
    }

    /// Closes one document, telling its provider `tell` (if anything).
    fn end_document(&mut self, address: &str, tell: Option<Bytes>) {
        if let Some(open) = self.docs.remove(address) {
            tracing::debug!(doc = %open.session.doc, conn = open.session.handle.id, "document closed");
            self.st.metrics.hocuspocus_documents.fetch_sub(1, Relaxed);
            // Ends its entry in `kicks` (found closed, ignored) instead of keeping it for the
            // socket's life.
            open.session.handle.kick.cancel();
            open.session.leave(false);
        }
        if let Some(frame) = tell {
            self.send(frame);
        }
    }

    /// A session was kicked: a document-scoped reason closes that document, anything else
    /// (too slow: the socket's queue is shared) the socket.
    fn kicked(&mut self, address: &str, id: ConnId) -> Result<()> {
        let Some(open) = self.docs.get(address) else {
            return Ok(());
        };
        if open.session.handle.id != id {
            return Ok(());
        }
        let e = open.session.kicked();
        match document_scoped(address, &e) {
            Some(tell) => {
                self.end_document(address, Some(tell));
                Ok(())
            }
            None => Err(e),
        }
    }

    /// An update's transaction ended: committed → sync status "saved"; refused data closes the
    /// socket (1007) and makes the subject wait, as for y-websocket; other faults close it too
    /// (the provider reconnects and syncs again).
    fn settled(
        &mut self,
        (address, id, subject, r): (String, ConnId, Arc<str>, Result<i64>),
    ) -> Result<()> {
        match r {
            Ok(_) => {
                if self
                    .docs
                    .get(&address)
                    .is_some_and(|o| o.session.handle.id == id)
                {
                    self.send(codec::sync_status(&address, true));
                }
                Ok(())
            }
            Err(e) => {
                if e.is_client_data() {
                    self.st.refusals.refused(&subject);
                }
                Err(e)
            }
        }
    }

    /// Once a second: asks for fresh tokens ahead of expiry, closes documents whose token has
    /// expired (plus the leeway).
    fn check_tokens(&mut self) {
        if self.docs.is_empty() {
            return;
        }
        let now = now_secs();
        let leeway = self.st.auth.leeway_secs();
        let mut expired = Vec::new();
        let mut ask = Vec::new();
        for (address, open) in self.docs.iter_mut() {
            if now >= open.exp.saturating_add(leeway) {
                expired.push(address.clone());
            } else if !open.asked {
                let ahead = REFRESH_AHEAD_SECS.min(open.exp.saturating_sub(open.renewed) / 2);
                if now.saturating_add(ahead) >= open.exp {
                    open.asked = true;
                    ask.push(address.clone());
                }
            }
        }
        for address in ask {
            self.send(codec::token_request(&address));
        }
        for address in expired {
            let tell = codec::permission_denied(&address, &Error::TokenExpired.close_reason());
            self.end_document(&address, Some(tell));
        }
    }

    async fn handle_frame(&mut self, frame: &[u8]) -> Result<()> {
        let f = match codec::decode(frame)? {
            Decoded::Pong => return Ok(()),
            Decoded::Message(f) => f,
        };
        match f.body {
            Body::Token(token) => {
                if self.docs.contains_key(&f.address) {
                    self.renew(&f.address, &token);
                    Ok(())
                } else {
                    self.open(f.address, f.doc, &token).await
                }
            }
            Body::Close => {
                self.end_document(&f.address, None);
                Ok(())
            }
            Body::Stateless(payload) => self.stateless(&f.address, &payload).await,
            Body::Yjs(msg) => self.yjs(&f.address, msg).await,
            Body::Other(kind) => {
                tracing::debug!(kind, "ignoring Hocuspocus message of unknown type");
                Ok(())
            }
        }
    }

    /// Who the token (or, when empty, the upgrade's token) names, and its right on `doc`.
    fn authorize(&self, doc: &str, token: &str) -> Result<(crate::auth::Principal, Access)> {
        let token = if token.is_empty() {
            self.header_token.clone().ok_or(Error::Unauthenticated)?
        } else {
            token.to_string()
        };
        let principal = self.st.auth.verify(&token)?;
        let access = principal.require(doc, Access::Read)?;
        Ok((principal, access))
    }

    /// A provider's first auth message for a document: open it, or refuse it alone.
    async fn open(&mut self, address: String, doc: String, token: &str) -> Result<()> {
        let admitted = (|| {
            if self.docs.len() >= MAX_DOCUMENTS {
                return Err(busy(&format!(
                    "at most {MAX_DOCUMENTS} documents on one connection"
                )));
            }
            db::validate_doc_name(&doc)?;
            let (principal, access) = self.authorize(&doc, token)?;
            if let Some(wait) = self.st.refusals.wait(&principal.subject) {
                return Err(busy(&format!(
                    "recent updates were refused: try again in {} s",
                    wait.as_secs().max(1)
                )));
            }
            let slot = self
                .st
                .subjects
                .try_take(&principal.subject, self.st.cfg.max_connections_per_subject)
                .ok_or_else(|| busy("too many connections with this token's subject"))?;
            Ok((principal, access, slot))
        })();
        let (principal, access, slot) = match admitted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(doc, "document refused: {e}");
                self.st.metrics.hocuspocus_refused.fetch_add(1, Relaxed);
                self.send(codec::permission_denied(&address, &e.close_reason()));
                return Ok(());
            }
        };
        let subject: Arc<str> = Arc::from(principal.subject.as_str());
        let handle = self
            .writer
            .handle(&self.st, subject.clone(), Some(codec::prefix(&address)));
        let id = handle.id;
        tracing::debug!(doc, conn = id, subject = %subject, ?access, "document opened");
        // Before the session's sync step 1: the provider learns its scope first.
        self.send(codec::authenticated(&address, access < Access::Write));
        let mut session = DocSession::join(&self.st, doc, subject, access, handle);
        if let Err(e) = session.open().await {
            session.leave(matches!(e, Error::ShuttingDown));
            return match document_scoped(&address, &e) {
                Some(tell) => {
                    self.send(tell);
                    Ok(())
                }
                None => Err(e),
            };
        }
        let kick = session.handle.kick.clone();
        let key = address.clone();
        self.kicks.push(
            async move {
                kick.cancelled_owned().await;
                (key, id)
            }
            .boxed(),
        );
        self.st.metrics.hocuspocus_documents.fetch_add(1, Relaxed);
        self.docs.insert(
            address,
            Open {
                session,
                exp: principal.expires_at,
                renewed: now_secs(),
                asked: false,
                _subject_slot: slot,
            },
        );
        Ok(())
    }

    /// A new token for an open document: rights follow it (a refused one closes the document).
    fn renew(&mut self, address: &str, token: &str) {
        let Some(open) = self.docs.get(address) else {
            return;
        };
        let renewed = self
            .authorize(&open.session.doc, token)
            .and_then(|(p, access)| {
                if *p.subject != *open.session.subject {
                    return Err(Error::Forbidden("a token for another subject".into()));
                }
                Ok((p, access))
            });
        match renewed {
            Ok((p, access)) => {
                if let Some(open) = self.docs.get_mut(address) {
                    open.session.access = access;
                    open.exp = p.expires_at;
                    open.renewed = now_secs();
                    open.asked = false;
                    tracing::debug!(doc = %open.session.doc, ?access, "token renewed");
                }
                self.send(codec::authenticated(address, access < Access::Write));
            }
            Err(e) => {
                let tell = codec::permission_denied(address, &e.close_reason());
                self.end_document(address, Some(tell));
            }
        }
    }

    async fn yjs(&mut self, address: &str, msg: protocol::Incoming) -> Result<()> {
        let Some(open) = self.docs.get_mut(address) else {
            // Not open (refused, or closed): its provider was told so.
            return Ok(());
        };
        let outcome = match open.session.handle(msg).await {
            Ok(o) => o,
            Err(e) => {
                return match document_scoped(address, &e) {
                    Some(tell) => {
                        self.end_document(address, Some(tell));
                        Ok(())
                    }
                    None => Err(e),
                }
            }
        };
        match outcome {
            None => {}
            Some(UpdateOutcome::Unchanged) => self.send(codec::sync_status(address, true)),
            Some(UpdateOutcome::ReadOnly) => self.send(codec::sync_status(address, false)),
            Some(UpdateOutcome::Queued(p)) => {
                let (key, id) = (address.to_string(), open.session.handle.id);
                let subject = open.session.subject.clone();
                self.pending
                    .push(Box::pin(p.map(move |r| (key, id, subject, r))));
            }
        }
        Ok(())
    }

    /// Relays a stateless message to the document's other Hocuspocus connections, on every
    /// bridge (`collab.broadcast`; this bridge too hears it from the notification).
    async fn stateless(&mut self, address: &str, payload: &str) -> Result<()> {
        let Some(open) = self.docs.get(address) else {
            return Ok(());
        };
        let max = self.st.cfg.max_awareness_bytes;
        if payload.len() > max {
            return Err(Error::TooLarge(format!(
                "stateless message of {} bytes (at most {max})",
                payload.len()
            )));
        }
        if !self.stateless_rate.try_take() {
            self.st.metrics.awareness_dropped.fetch_add(1, Relaxed);
            return Ok(());
        }
        let frame = protocol::stateless(payload.as_bytes());
        let (doc, origin) = (open.session.doc.clone(), open.session.origin.clone());
        if let Err(e) = db::broadcast(self.st.pool_for(&doc), &doc, &frame, &origin).await {
            tracing::debug!(doc, "stateless message not relayed: {e}");
        }
        Ok(())
    }
}
