//! collab-bridge: serves Yjs clients (y-websocket protocol) and an HTTP API, with PostgreSQL
//! (the pg_collab extension) as the only state: writes go through `collab.apply_updates`,
//! everything clients receive comes from notifications on channel `collab`.

pub mod auth;
pub mod backoff;
pub mod batch;
pub mod config;
pub mod db;
pub mod error;
pub mod fanout;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod ws;

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::{ServeDir, ServeFile};

use crate::auth::Auth;
use crate::batch::Batcher;
use crate::config::Config;
use crate::fanout::Hub;
use crate::metrics::{LagTracker, Metrics};

/// Everything the handlers and tasks share.
pub struct Shared {
    pub cfg: Config,
    pub bridge_id: String,
    pub pool: Pool,
    pub hub: Arc<Hub>,
    pub batcher: Batcher,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub listener_alive: Arc<AtomicBool>,
    /// Cancelled at shutdown.
    pub cancel: CancellationToken,
    /// Every connection, room, writer and the listener; waited for at shutdown.
    pub tracker: TaskTracker,
    listener_pg: db::PgTarget,
    lag: Arc<LagTracker>,
    next_conn_id: AtomicU64,
}

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// A place under `--max-connections`, given back on drop.
pub struct ConnSlot(AppState);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.metrics.connections.fetch_sub(1, Relaxed);
    }
}

fn random_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

impl AppState {
    /// Builds the state (no connection is made yet); fails on invalid configuration.
    pub fn new(cfg: Config) -> Result<Self, String> {
        let auth = Auth::from_config(&cfg)?;
        let bridge_id = cfg.bridge_id.clone().unwrap_or_else(random_id);
        if bridge_id.is_empty() || bridge_id.contains('/') || bridge_id.len() > 64 {
            return Err("--bridge-id must be 1 to 64 characters without '/'".into());
        }
        if cfg.write_lanes == 0 || cfg.write_lanes >= cfg.pool_size {
            return Err(format!(
                "--write-lanes must be at least 1 and less than --pool-size ({}), got {}",
                cfg.pool_size, cfg.write_lanes
            ));
        }
        let ca_file = cfg.database_ca_file.as_deref();
        let pool = db::pool(
            db::pg_config(
                &cfg.database_url,
                ca_file,
                &format!("collab-bridge {bridge_id}"),
            )?,
            cfg.pool_size,
        )?;
        let listener_pg = db::pg_config(
            &cfg.database_url,
            ca_file,
            &format!("collab-bridge-listener {bridge_id}"),
        )?;
        let metrics = Arc::new(Metrics::default());
        let lag = Arc::new(LagTracker::default());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let hub = Arc::new(Hub::new(
            pool.clone(),
            metrics.clone(),
            tracker.clone(),
            cancel.clone(),
        ));
        let batcher = Batcher::new(
            pool.clone(),
            cfg.write_lanes,
            cfg.write_cache_documents,
            metrics.clone(),
            lag.clone(),
            &bridge_id,
            tracker.clone(),
        );
        Ok(AppState(Arc::new(Shared {
            cfg,
            bridge_id,
            pool,
            hub,
            batcher,
            auth,
            metrics,
            listener_alive: Arc::new(AtomicBool::new(false)),
            cancel,
            tracker,
            listener_pg,
            lag,
            next_conn_id: AtomicU64::new(1),
        })))
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Relaxed)
    }

    /// A connection slot, or None above `--max-connections`.
    pub fn try_conn_slot(&self) -> Option<ConnSlot> {
        let before = self.metrics.connections.fetch_add(1, Relaxed);
        if before >= self.cfg.max_connections as u64 {
            self.metrics.connections.fetch_sub(1, Relaxed);
            self.metrics.connections_refused.fetch_add(1, Relaxed);
            return None;
        }
        self.metrics.connections_total.fetch_add(1, Relaxed);
        Some(ConnSlot(self.clone()))
    }

    /// Starts the LISTEN connection (on the task tracker).
    pub fn spawn_listener(&self) {
        let listener = listener::Listener {
            pg: self.listener_pg.clone(),
            hub: self.hub.clone(),
            metrics: self.metrics.clone(),
            lag: self.lag.clone(),
            own_prefix: format!("{}/", self.bridge_id),
            alive: self.listener_alive.clone(),
            cancel: self.cancel.clone(),
        };
        self.tracker.spawn(listener.run());
    }
}

/// The HTTP and WebSocket routes; `--static-dir` (if it exists) is served for everything else,
/// with its `index.html` for paths that are not files (the page routes `/d/<document>` itself).
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/ws/{*doc}", get(ws::upgrade))
        .merge(http::routes())
        .layer(DefaultBodyLimit::max(state.cfg.max_message_bytes));
    if let Some(dir) = state.cfg.static_dir.as_ref().filter(|d| d.is_dir()) {
        let files = ServeDir::new(dir)
            .append_index_html_on_directories(true)
            .fallback(ServeFile::new(dir.join("index.html")));
        router = router.fallback_service(
            Router::new()
                // A missing asset is a 404, never the page under an immutable name.
                .nest_service("/assets", ServeDir::new(dir.join("assets")))
                .fallback_service(files)
                .layer(axum::middleware::map_response(static_caching)),
        );
    }
    router.with_state(state)
}

/// Bundler output under `/assets/` has content-hashed names, so it never changes: cache it for a
/// year. Everything else (the HTML that names those assets) must be fetched fresh every time.
async fn static_caching(
    uri: axum::http::Uri,
    mut resp: axum::response::Response,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let immutable = uri.path().starts_with("/assets/") && resp.status().is_success();
    let value = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-store"
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    resp
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the bridge until SIGTERM or Ctrl-C: then stops accepting, lets connections store their
/// pending updates and closes them with 1012, and waits (bounded) for everything to finish.
pub async fn run(cfg: Config) -> Result<(), String> {
    let grace = cfg.shutdown_grace();
    let listen = cfg.listen;
    let state = AppState::new(cfg)?;
    // A setup that cannot work (untrusted certificate, no TLS on the server, a refused login)
    // stops here.
    state.listener_pg.check_at_startup().await?;
    if state.auth.is_dev() {
        tracing::warn!("development mode: fixed token secret, POST /api/dev/login enabled");
    }
    state.spawn_listener();
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = tcp.local_addr().map_err(|e| e.to_string())?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "collab-bridge listening on http://{addr}");
        let _ = out.flush();
    }
    tracing::info!(bridge_id = %state.bridge_id, "listening on http://{addr}");
    let cancel = state.cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    let tracker = state.tracker.clone();
    // No Nagle: small y-websocket frames must not wait for the peer's delayed ACK (40 ms).
    let tcp = axum::serve::ListenerExt::tap_io(tcp, |io| {
        let _ = io.set_nodelay(true);
    });
    let server = axum::serve(tcp, app(state.clone()))
        .with_graceful_shutdown(state.cancel.clone().cancelled_owned());
    let served = server.await.map_err(|e| e.to_string());
    state.cancel.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            "shutdown grace period over with {} tasks left",
            tracker.len()
        );
    }
    served
}
