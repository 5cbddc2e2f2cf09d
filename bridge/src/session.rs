//! One client's view of one open document, whichever protocol carries it: a y-websocket
//! connection has one, a Hocuspocus socket one per document it opened.
//!
//! A session joins the document's room (fan-out from NOTIFY, catch-up, shared reads), sends the
//! bridge's sync step 1 and everyone's awareness when it opens, answers the client's sync
//! step 1 from `collab.diff` (rationed: one at a time, a burst, then a rate; shared between the
//! room's sessions that ask at the same time), hands client updates to the group-commit batcher
//! within the bridge's write budget, and checks awareness (size, rate, whose client ids). When
//! it ends, its awareness clients are removed for everyone. The transport adds what differs:
//! the framing (the room's handle prefixes Hocuspocus messages), and what to say once an update
//! is stored or refused.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Access;
use crate::db;
use crate::error::{Error, Result};
use crate::fanout::{lock, publish_awareness, ConnHandle, Joined, Room};
use crate::limits::TokenBucket;
use crate::protocol::{self, Incoming};
use crate::AppState;

const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Awareness client ids one session may announce (y-websocket uses one).
const MAX_AWARENESS_CLIENTS: usize = 64;
/// Awareness messages a session may send at once before `--awareness-per-sec` applies.
const AWARENESS_BURST: u32 = 20;
/// How often a whole-document reply checks for room in its send queue.
const QUEUE_POLL: Duration = Duration::from_millis(5);
/// Updates larger than this are checked on a blocking thread.
const BLOCKING_CHECK_BYTES: usize = 64 * 1024;

/// An update on its way to the database: its stored sequence once committed (Sync: the
/// connection is borrowed across awaits).
pub type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<i64>> + Send + Sync>>;

/// What became of a client's update message.
pub enum UpdateOutcome {
    /// It changed nothing: nothing to store (it is "saved" as it is).
    Unchanged,
    /// The session may only read: not stored.
    ReadOnly,
    /// Queued for the group commit; resolves once its transaction has committed.
    Queued(Pending),
}

pub struct DocSession {
    st: AppState,
    pub doc: String,
    pub origin: String,
    pub subject: Arc<str>,
    pub access: Access,
    pub room: Arc<Room>,
    pub handle: ConnHandle,
    /// When this session joined its room: which shared reads it may use.
    joined: Joined,
    /// Awareness clients announced here: client id → (last clock, whether it has a state).
    aw_clients: HashMap<u64, (u32, bool)>,
    aw_rate: TokenBucket,
    expensive: TokenBucket,
}

impl DocSession {
    /// Joins the room of `doc` (opening it if needed) with `handle`.
    pub fn join(
        st: &AppState,
        doc: String,
        subject: Arc<str>,
        access: Access,
        handle: ConnHandle,
    ) -> Self {
        let (room, joined) = st.hub.join(&doc, handle.clone());
        DocSession {
            st: st.clone(),
            origin: handle.origin.clone(),
            doc,
            subject,
            access,
            room,
            handle,
            joined,
            aw_clients: HashMap::new(),
            aw_rate: TokenBucket::new(AWARENESS_BURST, st.cfg.awareness_per_sec),
            expensive: TokenBucket::new(st.cfg.expensive_burst, st.cfg.expensive_per_sec),
        }
    }

    /// Waits for the room, then sends the bridge's sync step 1 and everyone's awareness.
    pub async fn open(&mut self) -> Result<()> {
        self.room.wait_ready(READY_TIMEOUT).await?;
        let (pool, doc) = (self.st.pool_for(&self.doc).clone(), self.doc.clone());
        let frame = self
            .room
            .single_flight(b"v".to_vec(), self.joined, move || {
                async move { protocol::sync_step1(&db::state_vector(&pool, &doc).await?) }.boxed()
            })
            .await?;
        if !self.send(frame) {
            return Err(self.kicked());
        }
        if let Some(frame) = self.room.awareness_snapshot() {
            self.send(frame);
        }
        Ok(())
    }

    /// Why the session was kicked (too slow unless said otherwise).
    pub fn kicked(&self) -> Error {
        lock(&self.handle.kick_reason)
            .take()
            .unwrap_or(Error::TooSlow)
    }

    pub fn send(&self, frame: axum::body::Bytes) -> bool {
        self.handle.send(frame, &self.st.metrics)
    }

    /// Leaves the room; unless the bridge is stopping, the session's awareness clients are
    /// removed for everyone.
    pub fn leave(self, shutting_down: bool) {
        let DocSession {
            st,
            room,
            handle,
            aw_clients,
            origin,
            ..
        } = self;
        let id = handle.id;
        st.hub.leave(&room, id);
        let ids: Vec<u64> = aw_clients.keys().copied().collect();
        room.release_awareness(id, &ids);
        let gone: Vec<_> = aw_clients
            .into_iter()
            .filter(|(_, (_, alive))| *alive)
            .map(|(client, (clock, _))| (client, clock.wrapping_add(1), Arc::<str>::from("null")))
            .collect();
        if !gone.is_empty() && !shutting_down {
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
    }

    /// Handles one decoded y-websocket message. Sync step 2 and update messages give what
    /// became of them; the transport says so to the client in its own way.
    pub async fn handle(&mut self, msg: Incoming) -> Result<Option<UpdateOutcome>> {
        match msg {
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
                self.wait_for_queue_room(frame.len()).await?;
                self.send(frame);
            }
            Incoming::SyncStep2(update) | Incoming::Update(update) => {
                return self.handle_update(update).await.map(Some)
            }
            Incoming::Awareness(update) => self.handle_awareness(update)?,
            Incoming::AwarenessQuery => {
                self.expensive_turn().await?;
                if let Some(frame) = self.room.awareness_snapshot() {
                    self.send(frame);
                }
            }
            Incoming::Auth => {}
            Incoming::Custom(tag, _) => {
                tracing::debug!(doc = %self.doc, tag, "ignoring message of unknown type")
            }
        }
        Ok(None)
    }

    /// Before a whole-document reply: waits (not reading the connection meanwhile) until the
    /// send queue has room for it, or is empty (one larger frame passes an empty queue). On a
    /// Hocuspocus socket the documents share one queue, so several large documents opened at
    /// once go out one after the other instead of overflowing it (which closes the socket).
    async fn wait_for_queue_room(&self, len: usize) -> Result<()> {
        let h = &self.handle;
        let fits = || {
            let q = h.queued.load(std::sync::atomic::Ordering::Acquire);
            q == 0 || q.saturating_add(len) <= h.budget
        };
        while !fits() {
            tokio::select! {
                biased;
                _ = self.st.cancel.cancelled() => return Err(Error::ShuttingDown),
                _ = h.kick.cancelled() => return Err(self.kicked()),
                _ = tokio::time::sleep(QUEUE_POLL) => {}
            }
        }
        Ok(())
    }

    /// Waits for this session's next expensive reply (its token bucket); ends early if the
    /// session is kicked or the bridge stops. One at a time: the reader waits for the reply.
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
            // Removing is only for ids this session introduced; setting claims the id
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

    async fn handle_update(&mut self, update: Vec<u8>) -> Result<UpdateOutcome> {
        let (changes, update) = if update.len() > BLOCKING_CHECK_BYTES {
            tokio::task::spawn_blocking(move || (protocol::check_update(&update), update))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
        } else {
            (protocol::check_update(&update), update)
        };
        if !changes? {
            return Ok(UpdateOutcome::Unchanged);
        }
        if self.access < Access::Write {
            self.st.metrics.updates_rejected.fetch_add(1, Relaxed);
            return Ok(UpdateOutcome::ReadOnly);
        }
        let permit = self.write_budget(update.len()).await?;
        // #13: the token's subject is recorded as the update's author.
        let done = self.st.batcher_for(&self.doc).submit_as(
            &self.doc,
            update,
            self.origin.clone(),
            Some(self.subject.clone()),
        );
        Ok(UpdateOutcome::Queued(Box::pin(async move {
            let r = done
                .await
                .unwrap_or_else(|_| Err(Error::Internal("update lost".into())));
            drop(permit);
            r
        })))
    }

    /// A share of the bridge's budget for updates waiting to be stored: while the database is
    /// behind, sessions that send more wait here (and their connection stops being read).
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
