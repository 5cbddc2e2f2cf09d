//! The one `LISTEN collab` connection: parses notifications and routes them to rooms;
//! reconnects with exponential backoff and jitter, then has every open room catch up.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Notification};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::fanout::{Hub, RoomEvent};
use crate::metrics::{LagTracker, Metrics};
use crate::notify::parse;

pub const CHANNEL: &str = "collab";
const PING_EVERY: Duration = Duration::from_secs(15);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Listener {
    /// Connection settings and TLS policy (shared with the pool).
    pub pg: crate::db::PgTarget,
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
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut connected_before = false;
        loop {
            let result = self.session(&mut backoff, &mut connected_before).await;
            self.alive.store(false, Relaxed);
            self.metrics.listener_up.store(0, Relaxed);
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
                None => crate::db::error_chain(&e),
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
        tracing::info!("listening on channel {CHANNEL}");
        self.alive.store(true, Relaxed);
        self.metrics.listener_up.store(1, Relaxed);
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
                    Some(n) => self.handle(&n),
                    None => {
                        return Err(match driver_result(driver).await {
                            Some(e) => e,
                            None => "connection closed".into(),
                        });
                    }
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(describe(&e)),
                        Err(_) => return Err("ping timed out".into()),
                    }
                }
            }
        }
    }

    fn handle(&self, n: &Notification) {
        if n.channel() != CHANNEL {
            return;
        }
        self.metrics.notifications.fetch_add(1, Relaxed);
        let Some((doc, event)) = parse(n.payload()) else {
            return;
        };
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
