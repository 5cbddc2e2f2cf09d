//! The one `LISTEN collab` connection: opens sealed notifications (keys fetched on this
//! connection) and routes them to rooms; reconnects with exponential backoff and jitter, then
//! has every open room catch up.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Notification};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::fanout::{Hub, RoomEvent};
use crate::metrics::{LagTracker, Metrics};
use crate::notify::{self, Keys, Opened, Reject};

pub const CHANNEL: &str = "collab";
const PING_EVERY: Duration = Duration::from_secs(15);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Broadcasts (awareness) older than this are replays or hopelessly late: dropped. Updates
/// that old lose their inline content and are fetched from the log instead.
const MAX_AGE_MS: i64 = 30_000;
/// At most one key refetch per this interval, however many unknown key ids arrive (anyone can
/// send those).
const REFETCH_EVERY: Duration = Duration::from_millis(100);
/// The longest pause between reconnection attempts. Short, because after a failover the
/// listener is what delivers edits between bridges again (and has every room catch up): with
/// 10 s the new primary waited up to 10 s for it (bridge/tests/failover.rs). One connection
/// attempt every 2 s per bridge costs a recovering server nothing.
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// What a session knows to open notifications.
struct Trust {
    keys: Keys,
    /// The database clock minus ours, in ms (payload ages are measured on its clock).
    offset_ms: i64,
    last_fetch: Instant,
    /// `deleted` payloads the database contradicted: replays.
    replayed: HashSet<String>,
    /// A payload under an unknown key was dropped without a refetch (rate limit): it may have
    /// been genuine, so the rooms catch up after the next refetch.
    missed: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The notification keys and the database clock's offset, fetched on the LISTEN connection.
async fn fetch_trust(client: &tokio_postgres::Client) -> Result<Trust, String> {
    let before = now_ms();
    let rows = client
        .query(
            "SELECT k.id, k.key, (extract(epoch FROM clock_timestamp()) * 1000)::int8 \
             FROM collab.notification_keys() k",
            &[],
        )
        .await
        .map_err(|e| format!("cannot fetch the notification keys: {}", describe(&e)))?;
    let after = now_ms();
    let db_now: i64 = match rows.first() {
        Some(r) => r.try_get(2).map_err(|e| e.to_string())?,
        None => return Err("the database has no notification key".into()),
    };
    let keys = Keys::new(
        rows.iter()
            .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?))),
    );
    Ok(Trust {
        keys,
        offset_ms: db_now - (before + after) / 2,
        last_fetch: Instant::now(),
        replayed: HashSet::new(),
        missed: false,
    })
}

pub struct Listener {
    /// Connection settings and TLS policy (shared with the pool).
    pub pg: crate::pgconn::PgTarget,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub lag: Arc<LagTracker>,
    /// `<bridge-id>/`: origins of this bridge's own writes (for the notification lag).
    pub own_prefix: String,
    pub alive: Arc<AtomicBool>,
    pub cancel: CancellationToken,
}

impl Listener {
    pub async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), RECONNECT_MAX);
        let mut connected_before = false;
        loop {
            let result = self.session(&mut backoff, &mut connected_before).await;
            // `collab_bridge_listener_up` follows `alive` of every shard's listener (lib.rs).
            self.alive.store(false, Relaxed);
            match result {
                Ok(()) => return,
                Err(e) => tracing::warn!("listener connection lost: {e}"),
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// One connection's life: Ok when shutting down, Err when it broke.
    async fn session(
        &self,
        backoff: &mut Backoff,
        connected_before: &mut bool,
    ) -> Result<(), String> {
        let (client, mut connection) = tokio::select! {
            _ = self.cancel.cancelled() => return Ok(()),
            // The causes too: why a TLS handshake failed is only there.
            r = self.pg.connect() => r.map_err(|e| match e.as_db_error() {
                Some(_) => describe(&e),
                None => crate::pgconn::error_chain(&e),
            })?,
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Notification>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(describe(&e)),
                }
            }
            Err("connection closed".to_string())
        });
        let _abort = AbortOnDrop(driver.abort_handle());
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| describe(&e))?;
        // After LISTEN: a key rotated in between is then seen as an unknown id and refetched.
        let mut trust = fetch_trust(&client).await?;
        tracing::info!("listening on channel {CHANNEL}");
        self.alive.store(true, Relaxed);
        if *connected_before {
            self.metrics.listener_reconnects.fetch_add(1, Relaxed);
        }
        *connected_before = true;
        backoff.reset();
        // Whatever was committed while nobody listened is fetched by the rooms.
        self.hub.catch_up_all();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                n = rx.recv() => match n {
                    Some(n) => self.handle(&client, &mut trust, &n).await,
                    None => {
                        return Err(match driver_result(driver).await {
                            Some(e) => e,
                            None => "connection closed".into(),
                        });
                    }
                },
                _ = ping.tick() => {
                    if trust.missed {
                        self.refetch(&client, &mut trust).await;
                    }
                    match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(describe(&e)),
                        Err(_) => return Err("ping timed out".into()),
                    }
                }
            }
        }
    }

    async fn handle(&self, client: &tokio_postgres::Client, trust: &mut Trust, n: &Notification) {
        if n.channel() != CHANNEL {
            return;
        }
        self.metrics.notifications.fetch_add(1, Relaxed);
        let mut opened = notify::open(&trust.keys, n.payload());
        if let Err(Reject::UnknownKey(id)) = opened {
            // A rotated key: fetch the keys again, at most once a second (forgers can name
            // any id).
            if trust.last_fetch.elapsed() >= REFETCH_EVERY {
                self.refetch(client, trust).await;
                opened = notify::open(&trust.keys, n.payload());
            } else {
                trust.missed = true;
            }
            if opened.is_err() {
                tracing::debug!("notification sealed with unknown key {id} dropped");
            }
        }
        let Ok(Opened { doc, mut event, ts }) = opened else {
            self.metrics.notifications_rejected.fetch_add(1, Relaxed);
            tracing::debug!("notification that does not open dropped");
            return;
        };
        let age = notify::age_ms(ts, now_ms(), trust.offset_ms);
        match &mut event {
            RoomEvent::Broadcast { .. } if age > MAX_AGE_MS => {
                self.metrics.notifications_rejected.fetch_add(1, Relaxed);
                return;
            }
            RoomEvent::Update { update, .. } if age > MAX_AGE_MS => {
                // Old: possibly a replay. The room fetches the log instead, which only ever
                // has what is really there.
                *update = None;
            }
            // Nobody here to close.
            RoomEvent::Deleted if self.hub.room(&doc).is_none() => return,
            // A replayed `deleted` must not close a document that lives (again).
            RoomEvent::Deleted if !self.confirm_deleted(client, trust, &doc, n.payload()).await => {
                self.metrics.notifications_rejected.fetch_add(1, Relaxed);
                return;
            }
            _ => {}
        }
        if let RoomEvent::Update {
            seq_to,
            origin: Some(origin),
            ..
        } = &event
        {
            if origin.starts_with(&self.own_prefix) {
                self.lag
                    .arrived(&doc, *seq_to, &self.metrics.notify_lag_seconds);
            }
        }
        self.hub.route(&doc, event);
    }

    /// Fetches the keys again; after a payload was dropped for want of a key, has every room
    /// catch up (what it said, if genuine, is in the log).
    async fn refetch(&self, client: &tokio_postgres::Client, trust: &mut Trust) {
        match fetch_trust(client).await {
            Ok(t) => {
                trust.keys = t.keys;
                trust.offset_ms = t.offset_ms;
                if std::mem::take(&mut trust.missed) {
                    self.hub.catch_up_all();
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
        trust.last_fetch = Instant::now();
    }

    /// Whether the database says `doc` is deleted. A payload found to be a replay (the
    /// document lives) is remembered, so replaying it in a loop costs one query, not one each.
    async fn confirm_deleted(
        &self,
        client: &tokio_postgres::Client,
        trust: &mut Trust,
        doc: &str,
        payload: &str,
    ) -> bool {
        if trust.replayed.contains(payload) {
            return false;
        }
        let deleted = match client
            .query_opt(
                "SELECT deleted_at IS NOT NULL FROM collab.document_info($1)",
                &[&doc],
            )
            .await
        {
            Ok(row) => row.and_then(|r| r.try_get::<_, bool>(0).ok()) == Some(true),
            Err(e) => {
                tracing::warn!(doc, "cannot confirm a deletion: {}", describe(&e));
                return false;
            }
        };
        if !deleted {
            if trust.replayed.len() >= 1024 {
                trust.replayed.clear();
            }
            trust.replayed.insert(payload.to_string());
        }
        deleted
    }
}

/// A readable description of a driver or query error (the Display of server errors is just
/// "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn driver_result(driver: tokio::task::JoinHandle<Result<(), String>>) -> Option<String> {
    match driver.await {
        Ok(Err(e)) => Some(e),
        _ => None,
    }
}
