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
pub mod hocuspocus;
pub mod http;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod pgconn;
pub mod protocol;
pub mod session;
pub mod shards;
pub mod upgrade;
pub mod ws;

use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use deadpool_postgres::Pool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::{ServeDir, ServeFile};

use crate::auth::Auth;
use crate::batch::Batcher;
use crate::config::Config;
use crate::fanout::Hub;
use crate::limits::{KeyedLimiter, Refusals, SubjectCounts};
use crate::metrics::{LagTracker, Metrics};
use crate::shards::{Shard, Shards};

/// Everything the handlers and tasks share.
pub struct Shared {
    pub cfg: Config,
    pub bridge_id: String,
    /// The first shard's pool (the only one unless `--shard-url`): for what concerns no
    /// document. A document's calls go to `pool_for(doc)`.
    pub pool: Pool,
    /// Where each document lives (one database, or N shards).
    pub shards: Arc<Shards>,
    pub hub: Arc<Hub>,
    /// The first shard's write lanes; a document's writes go to `batcher_for(doc)`.
    pub batcher: Batcher,
    /// One set of write lanes per shard, in shard order.
    batchers: Vec<Batcher>,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    /// Whether every shard's LISTEN connection is up.
    pub listener_alive: Arc<AtomicBool>,
    /// Per shard: whether its LISTEN connection is up.
    shard_listening: Vec<Arc<AtomicBool>>,
    /// Cancelled at shutdown.
    pub cancel: CancellationToken,
    /// Every connection, room, writer and the listener; waited for at shutdown.
    pub tracker: TaskTracker,
    /// New connections per client address.
    pub connect_rate: KeyedLimiter<IpAddr>,
    /// Connections per token subject.
    pub subjects: Arc<SubjectCounts>,
    /// Subjects whose updates the database refused, and how long they wait.
    pub refusals: Refusals,
    /// Concurrent whole-document diffs (sync step 1 answers) across the bridge.
    pub expensive_slots: Arc<Semaphore>,
    /// Bytes of client updates waiting to be stored, across the bridge.
    pub write_budget: Arc<Semaphore>,
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
        let password = database_password(&cfg)?;
        let target = |url: &str, name: String| -> Result<pgconn::PgTarget, String> {
            let mut t = pgconn::pg_config(url, ca_file, &name)?;
            session_settings(&mut t.config, &cfg, password.as_deref());
            Ok(t)
        };
        let urls: Vec<&str> = if cfg.shard_urls.is_empty() {
            vec![cfg.database_url.as_str()]
        } else {
            cfg.shard_urls.iter().map(String::as_str).collect()
        };
        if cfg.replica_url.is_some() && urls.len() > 1 {
            return Err("--replica-url is for an unsharded bridge (not with --shard-url)".into());
        }
        let mut shard_list = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            // Shard 0 keeps the names bridges always had, so dashboards need not change.
            let suffix = if i == 0 {
                String::new()
            } else {
                format!(" shard{i}")
            };
            let pool = pgconn::pool(
                target(url, format!("collab-bridge {bridge_id}{suffix}"))?,
                cfg.pool_size,
            )?;
            let replica = match &cfg.replica_url {
                Some(r) => Some(pgconn::pool(
                    target(r, format!("collab-bridge-replica {bridge_id}"))?,
                    cfg.pool_size,
                )?),
                None => None,
            };
            let listener = target(url, format!("collab-bridge-listener {bridge_id}{suffix}"))?;
            shard_list.push(Shard {
                pool,
                replica,
                listener,
            });
        }
        let shards = Arc::new(Shards::new(shard_list)?);
        let pool = shards.all()[0].pool.clone();
        let metrics = Arc::new(Metrics::default());
        let lag = Arc::new(LagTracker::default());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let hub = Arc::new(Hub::new(
            shards.clone(),
            metrics.clone(),
            tracker.clone(),
            cancel.clone(),
            &bridge_id,
            Duration::from_millis(cfg.awareness_interval_ms.max(1)),
        ));
        let batchers: Vec<Batcher> = shards
            .all()
            .iter()
            .map(|shard| {
                Batcher::new(
                    shard.pool.clone(),
                    batch::LaneConfig {
                        lanes: cfg.write_lanes,
                        cache_documents: cfg.write_cache_documents,
                        cache_mb: cfg.write_cache_mb,
                        lock_timeout: Duration::from_millis(cfg.write_lock_timeout_ms.max(1)),
                        search_lag: cfg.search_lag(),
                    },
                    metrics.clone(),
                    lag.clone(),
                    &bridge_id,
                    tracker.clone(),
                    hub.clone(),
                )
            })
            .collect();
        let batcher = batchers[0].clone();
        let shard_listening = (0..shards.len())
            .map(|_| Arc::new(AtomicBool::new(false)))
            .collect();
        // Diffs may use the pool but for the lanes and one connection for everything else.
        let diff_slots = cfg.pool_size.saturating_sub(cfg.write_lanes + 1).max(1);
        let write_budget = cfg.write_budget_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let connect_rate = KeyedLimiter::new(cfg.connect_burst, cfg.connect_rate);
        Ok(AppState(Arc::new(Shared {
            cfg,
            bridge_id,
            pool,
            shards,
            hub,
            batcher,
            batchers,
            auth,
            metrics,
            listener_alive: Arc::new(AtomicBool::new(false)),
            shard_listening,
            cancel,
            tracker,
            connect_rate,
            subjects: Arc::default(),
            refusals: Refusals::default(),
            expensive_slots: Arc::new(Semaphore::new(diff_slots)),
            write_budget: Arc::new(Semaphore::new(write_budget)),
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
            // Counted as refused where the connection is turned away (ws.rs).
            self.metrics.connections.fetch_sub(1, Relaxed);
            return None;
        }
        self.metrics.connections_total.fetch_add(1, Relaxed);
        Some(ConnSlot(self.clone()))
    }

    /// The pool of the database that owns `doc` (its shard).
    pub fn pool_for(&self, doc: &str) -> &Pool {
        self.shards.pool_for(doc)
    }

    /// Where HTTP reads of `doc` go (a replica if configured), and whether it is a replica.
    pub fn read_pool_for(&self, doc: &str) -> (&Pool, bool) {
        self.shards.read_pool_for(doc)
    }

    /// The write lanes of the shard that owns `doc`.
    pub fn batcher_for(&self, doc: &str) -> &Batcher {
        &self.batchers[self.shards.index_of(doc)]
    }

    /// Starts one LISTEN connection per shard (on the task tracker). Every shard announces its
    /// own documents' commits; all of them route into the one hub.
    pub fn spawn_listener(&self) {
        for (i, shard) in self.shards.all().iter().enumerate() {
            let alive = self.shard_listening[i].clone();
            let listener = listener::Listener {
                pg: shard.listener.clone(),
                hub: self.hub.clone(),
                metrics: self.metrics.clone(),
                lag: self.lag.clone(),
                own_prefix: format!("{}/", self.bridge_id),
                alive: alive.clone(),
                cancel: self.cancel.clone(),
            };
            self.tracker.spawn(listener.run());
        }
        // `listener_alive` (healthz) and the `listener_up` gauge are 1 while every shard listens.
        let (all, each, cancel, metrics) = (
            self.listener_alive.clone(),
            self.shard_listening.clone(),
            self.cancel.clone(),
            self.metrics.clone(),
        );
        self.tracker.spawn(async move {
            loop {
                let up = each.iter().all(|a| a.load(Relaxed));
                all.store(up, Relaxed);
                metrics.listener_up.store(u64::from(up), Relaxed);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
    }

    /// #13: every `--search-lag-ms`, indexes the documents whose search text the write lanes
    /// left stale (`collab.refresh_search`), so search lags writes by about that much at most
    /// with no job for the DBA to schedule. Several bridges may do it at once: harmless.
    pub fn spawn_search_refresher(&self) {
        // Every shard's lanes leave their own documents stale.
        let pools: Vec<Pool> = self.shards.all().iter().map(|s| s.pool.clone()).collect();
        let lag = self.cfg.search_lag();
        let cancel = self.cancel.clone();
        let metrics = self.metrics.clone();
        self.tracker.spawn(async move {
            let mut tick = tokio::time::interval(lag);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                for (i, pool) in pools.iter().enumerate() {
                    // At most 256 documents a tick, 16 per transaction.
                    for _ in 0..16 {
                        match db::refresh_search(pool, 16, lag).await {
                            Ok(16) => continue,
                            Ok(_) => break,
                            Err(e) => {
                                tracing::debug!(shard = i, "search refresh: {e}");
                                break;
                            }
                        }
                    }
                }
                // What is left stale after the refresh (a pg_collab before 0.4.0 has no
                // search_backlog: the gauges stay at 0).
                let (mut documents, mut oldest) = (0u64, Duration::ZERO);
                for (i, pool) in pools.iter().enumerate() {
                    match db::search_backlog(pool).await {
                        Ok((n, age)) => {
                            documents += n.max(0) as u64;
                            oldest = oldest.max(age.unwrap_or_default());
                        }
                        Err(e) => tracing::debug!(shard = i, "search backlog: {e}"),
                    }
                }
                metrics.search_stale_documents.store(documents, Relaxed);
                metrics
                    .search_stale_ms
                    .store(oldest.as_millis() as u64, Relaxed);
            }
        });
    }
}

/// The database password from `--database-password-file` or `COLLAB_DATABASE_PASSWORD`
/// (either overrides one in the URL).
fn database_password(cfg: &Config) -> Result<Option<String>, String> {
    match (&cfg.database_password, &cfg.database_password_file) {
        (Some(_), Some(_)) => Err(
            "give the database password either in COLLAB_DATABASE_PASSWORD or in \
             --database-password-file, not both"
                .into(),
        ),
        (Some(p), None) => Ok(Some(p.clone())),
        (None, Some(f)) => Ok(Some(config::read_secret_file(
            f,
            "--database-password-file",
        )?)),
        (None, None) => Ok(None),
    }
}

/// Settings of every database connection (pool, lanes, listener): timeouts so that no
/// statement, lock wait or forgotten transaction holds a connection (or a row) forever, and TCP
/// keepalive plus `tcp_user_timeout` so that a dead server or path is noticed within seconds.
fn session_settings(pg: &mut tokio_postgres::Config, cfg: &Config, password: Option<&str>) {
    if let Some(p) = password {
        pg.password(p);
    }
    let ours = format!(
        "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
        cfg.statement_timeout_ms, cfg.lock_timeout_ms, cfg.idle_in_transaction_timeout_ms
    );
    // Options given in the URL come after ours, so they win.
    let options = match pg.get_options() {
        Some(theirs) if !theirs.is_empty() => format!("{ours} {theirs}"),
        _ => ours,
    };
    pg.options(options);
    let idle = Duration::from_secs(cfg.db_keepalive_secs.max(1));
    pg.keepalives(true)
        .keepalives_idle(idle)
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(idle + Duration::from_secs(15));
}

/// The HTTP and WebSocket routes; `--static-dir` (if it exists) is served for everything else,
/// with its `index.html` for paths that are not files (the page routes `/d/<document>` itself).
pub fn app(state: AppState) -> Router {
    let mut api = http::routes();
    if state.cfg.admin_listen.is_none() {
        api = api.merge(http::admin_routes());
    }
    // Plain HTTP requests get a deadline; WebSocket upgrades answer at once and then live on.
    let timeout = tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        Duration::from_secs(state.cfg.http_timeout_secs.max(1)),
    );
    let mut router = Router::new()
        .route("/ws/{*doc}", get(ws::upgrade))
        // The Hocuspocus provider's protocol: many documents per socket, named in its messages.
        .route("/hocuspocus", get(hocuspocus::upgrade))
        .merge(api.layer(timeout))
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
    with_request_ids(router.with_state(state))
}

/// Every request gets an `x-request-id` (kept if the client or a proxy sent one), echoed in the
/// response and carried by the request's tracing span.
fn with_request_ids(router: Router) -> Router {
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::trace::TraceLayer;
    let trace = TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), id)
    });
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(trace)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The admin routes (`/metrics`) for `--admin-listen`.
pub fn admin_app(state: AppState) -> Router {
    http::admin_routes().with_state(state)
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

/// Re-reads the key and revocation files on SIGHUP and when one changes (checked every 2 s),
/// and closes the connections of subjects that are now revoked.
fn spawn_reloader(state: &AppState) {
    let files = state.auth.watched_files();
    if files.is_empty() {
        return;
    }
    let st = state.clone();
    let stamp = move || -> Vec<Option<SystemTime>> {
        files
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    };
    state.tracker.spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = stamp();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let forced = tokio::select! {
                _ = st.cancel.cancelled() => return,
                _ = hangup => true,
                _ = tokio::time::sleep(Duration::from_secs(2)) => false,
            };
            let now = stamp();
            if !forced && now == seen {
                continue;
            }
            seen = now;
            let revoked = st.auth.reload();
            let closed = st.hub.kick_subjects(&revoked);
            if closed > 0 {
                tracing::info!(closed, "closed connections of revoked subjects");
            }
        }
    });
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
    for shard in state.shards.all() {
        shard.listener.check_at_startup().await?;
    }
    if state.auth.is_dev() {
        tracing::warn!("development mode: fixed token secret, POST /api/dev/login enabled");
    }
    state.spawn_listener();
    state.spawn_search_refresher();
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
    if let Some(admin) = state.cfg.admin_listen {
        let admin_tcp = tokio::net::TcpListener::bind(admin)
            .await
            .map_err(|e| format!("cannot listen on {admin} (--admin-listen): {e}"))?;
        tracing::info!(
            "metrics on http://{}/metrics",
            admin_tcp.local_addr().map_err(|e| e.to_string())?
        );
        let admin_app = admin_app(state.clone());
        let stop = state.cancel.clone();
        state.tracker.spawn(async move {
            let _ = axum::serve(admin_tcp, admin_app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }
    spawn_reloader(&state);
    let server = axum::serve(
        tcp,
        app(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
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
