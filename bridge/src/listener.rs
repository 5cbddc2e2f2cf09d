//! The one `LISTEN collab` connection: parses notifications and routes them to rooms;
//! reconnects with exponential backoff and jitter, then has every open room catch up.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Notification};
use tokio_util::sync::CancellationToken;

use crate::fanout::{Hub, RoomEvent};
use crate::metrics::{LagTracker, Metrics};

pub const CHANNEL: &str = "collab";
const PING_EVERY: Duration = Duration::from_secs(15);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Exponential backoff with full jitter between `base` and `max`.
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // Between half and all of the ceiling: spreads bridges that lost the database together.
        ceiling.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Payload {
    Update {
        doc: String,
        seq_from: i64,
        seq_to: i64,
        #[serde(default)]
        origin: Option<String>,
        #[serde(default)]
        update: Option<String>,
    },
    Broadcast {
        doc: String,
        #[serde(default)]
        origin: Option<String>,
        payload: String,
    },
    Deleted {
        doc: String,
    },
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Turns a notification payload into a document name and room event.
fn parse(payload: &str) -> Option<(String, RoomEvent)> {
    match serde_json::from_str::<Payload>(payload) {
        Ok(Payload::Update {
            doc,
            seq_from,
            seq_to,
            origin,
            update,
        }) => Some((
            doc,
            RoomEvent::Update {
                seq_from,
                seq_to,
                origin,
                // An undecodable inline update is fetched instead.
                update: update.as_deref().and_then(b64),
            },
        )),
        Ok(Payload::Broadcast {
            doc,
            origin,
            payload,
        }) => Some((
            doc,
            RoomEvent::Broadcast {
                origin,
                payload: b64(&payload)?,
            },
        )),
        Ok(Payload::Deleted { doc }) => Some((doc, RoomEvent::Deleted)),
        Err(e) => {
            tracing::debug!("ignoring notification {payload:?}: {e}");
            None
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_payloads() {
        let (doc, ev) = parse(
            r#"{"type":"update","doc":"d","seq_from":3,"seq_to":4,"origin":null,"update":"AQID"}"#,
        )
        .expect("update");
        assert_eq!(doc, "d");
        match ev {
            RoomEvent::Update {
                seq_from: 3,
                seq_to: 4,
                origin: None,
                update: Some(u),
            } => assert_eq!(u, vec![1, 2, 3]),
            other => panic!("{other:?}"),
        }
        let (_, ev) =
            parse(r#"{"type":"update","doc":"d","seq_from":1,"seq_to":9,"origin":"b/1"}"#)
                .expect("update without inline");
        assert!(matches!(ev, RoomEvent::Update { update: None, .. }));
        let (_, ev) = parse(r#"{"type":"broadcast","doc":"d","origin":"x","payload":"AQ=="}"#)
            .expect("broadcast");
        assert!(matches!(ev, RoomEvent::Broadcast { .. }));
        assert!(matches!(
            parse(r#"{"type":"deleted","doc":"d"}"#),
            Some((_, RoomEvent::Deleted))
        ));
        assert!(parse("not json").is_none());
        assert!(parse(r#"{"type":"other"}"#).is_none());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
