//! Command-line and environment configuration of the bridge (every option has a `COLLAB_*` variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};

/// Signature algorithm the bridge accepts for access tokens; exactly one, pinned by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret (`--jwt-secret`).
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256; public key from `--jwt-public-key` (PEM).
    Rs256,
    /// Ed25519; public key from `--jwt-public-key` (PEM).
    Eddsa,
}

#[derive(Clone, Parser)]
#[command(
    name = "collab-bridge",
    version,
    about = "y-websocket bridge for pg_collab: Yjs clients sync through PostgreSQL"
)]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket (port 0 picks a free one; the bound address
    /// is printed on stdout as `collab-bridge listening on http://ADDR`).
    #[arg(long, env = "COLLAB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// PostgreSQL connection string (URL or key=value form) of the database with pg_collab.
    /// Keep the password out of it: --database-password-file or COLLAB_DATABASE_PASSWORD.
    /// For a failover pair give every node and `target_session_attrs=read-write`
    /// (`postgres://u@h1:5432,h2:5432/db?target_session_attrs=read-write` or `host=h1,h2 ...`):
    /// the pool, the write lanes and the listener then reconnect to whichever node is primary.
    #[arg(
        long,
        env = "COLLAB_DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5499/postgres"
    )]
    pub database_url: String,

    /// A shard (repeat once per shard, in the order of the PL/Proxy cluster's partitions; a
    /// power of two of them): documents live on the shard `collab.shard_hash(name)` picks, and
    /// the bridge keeps a pool, write lanes and a LISTEN connection per shard. Replaces
    /// --database-url (docs/operations.md).
    #[arg(
        long = "shard-url",
        env = "COLLAB_SHARD_URLS",
        value_delimiter = ' ',
        hide_env_values = true
    )]
    pub shard_urls: Vec<String>,

    /// A hot standby of --database-url for HTTP reads (GET /api/docs...): never WebSocket sync,
    /// never writes. Its reads may be behind the primary by its replay lag (docs/operations.md).
    #[arg(long, env = "COLLAB_REPLICA_URL", hide_env_values = true)]
    pub replica_url: Option<String>,

    /// File holding the database password (trailing newline ignored).
    #[arg(long, env = "COLLAB_DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,

    /// The database password (never printed).
    #[arg(
        long,
        env = "COLLAB_DATABASE_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    pub database_password: Option<String>,

    /// PEM file with the CA certificate(s) that sign the database server's certificate, for TLS
    /// with `sslmode=verify-ca|verify-full` in `--database-url` (default: the system roots).
    /// With `prefer` or `require` it turns on verification of the chain, as in libpq.
    #[arg(long, env = "COLLAB_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,

    /// Maximum number of pooled database connections (the LISTEN connection is extra).
    #[arg(long, env = "COLLAB_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,

    /// Connections that write (each commits one transaction at a time, grouping every document
    /// queued meanwhile); taken from the pool, so fewer than --pool-size. PostgreSQL commits
    /// notifying transactions one at a time, so more writers than two only queue on its lock.
    #[arg(long, env = "COLLAB_WRITE_LANES", default_value_t = 2)]
    pub write_lanes: usize,

    /// Decoded documents each writing connection's backend keeps (its collab.cache_documents):
    /// a write to a document it holds costs the change, anything else a reload.
    #[arg(long, env = "COLLAB_WRITE_CACHE_DOCUMENTS", default_value_t = 256)]
    pub write_cache_documents: u32,

    /// Memory each writing connection's backend may use for decoded documents, in MB (its
    /// collab.cache_bytes; the server's default is 64). When the documents a lane writes do not
    /// fit, every write reloads its document from the log. collab.cache_bytes is the DBA's to
    /// give: a role that is not a superuser needs `GRANT SET ON PARAMETER collab.cache_bytes`,
    /// otherwise the server's value stays (and the bridge says so once). 0: never set it.
    #[arg(long, env = "COLLAB_WRITE_CACHE_MB", default_value_t = 256)]
    pub write_cache_mb: u32,

    /// Identifier of this bridge in update origins (`<bridge-id>/<conn-id>`); random if unset.
    #[arg(long, env = "COLLAB_BRIDGE_ID")]
    pub bridge_id: Option<String>,

    /// Maximum simultaneous WebSocket connections; more are closed with 1013 (try again later).
    #[arg(long, env = "COLLAB_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Largest WebSocket message (and HTTP update body) accepted, in bytes.
    #[arg(long, env = "COLLAB_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Messages queued for one connection before it counts as too slow and is disconnected.
    #[arg(long, env = "COLLAB_SEND_QUEUE", default_value_t = 512)]
    pub send_queue: usize,

    /// Bytes queued for one connection before it counts as too slow and is disconnected (1008).
    /// A single message larger than this (a big document's first sync) is still sent when
    /// nothing else is queued.
    #[arg(long, env = "COLLAB_SEND_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub send_queue_bytes: usize,

    /// Bytes of client updates waiting to be stored, across all connections; above it the
    /// bridge stops reading from connections that send more until the database catches up.
    #[arg(long, env = "COLLAB_WRITE_BUDGET_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub write_budget_bytes: usize,

    /// Expensive replies (a sync step 1 answered with a diff of the document, an awareness
    /// query answered with a snapshot) one connection may ask for in a burst; one at a time.
    #[arg(long, env = "COLLAB_EXPENSIVE_BURST", default_value_t = 5)]
    pub expensive_burst: u32,

    /// Expensive replies per second one connection gets after its burst (the rest wait).
    #[arg(long, env = "COLLAB_EXPENSIVE_PER_SEC", default_value_t = 0.5)]
    pub expensive_per_sec: f64,

    /// Largest awareness state (the JSON of one client id) relayed, in bytes; a larger one
    /// closes the connection (1009).
    #[arg(long, env = "COLLAB_MAX_AWARENESS_BYTES", default_value_t = 32 * 1024)]
    pub max_awareness_bytes: usize,

    /// Awareness messages per second one connection may send after a burst of 20; more are
    /// dropped (y-protocols clients send one per change and renew every 15 s).
    #[arg(long, env = "COLLAB_AWARENESS_PER_SEC", default_value_t = 10.0)]
    pub awareness_per_sec: f64,

    /// Interval in milliseconds over which a room's awareness changes on this bridge are
    /// coalesced into one `collab.broadcast`.
    #[arg(long, env = "COLLAB_AWARENESS_INTERVAL_MS", default_value_t = 50)]
    pub awareness_interval_ms: u64,

    /// Simultaneous WebSocket connections of one token subject (`sub`); more are closed with
    /// 1013. 0: no limit.
    #[arg(
        long,
        env = "COLLAB_MAX_CONNECTIONS_PER_SUBJECT",
        default_value_t = 100
    )]
    pub max_connections_per_subject: usize,

    /// New WebSocket connections per second from one client address, after a burst of
    /// --connect-burst; more are closed with 1013. 0: no limit.
    #[arg(long, env = "COLLAB_CONNECT_RATE", default_value_t = 20.0)]
    pub connect_rate: f64,

    /// Connections one client address may open at once before --connect-rate applies.
    #[arg(long, env = "COLLAB_CONNECT_BURST", default_value_t = 100)]
    pub connect_burst: u32,

    /// Header set by a trusted reverse proxy with the client address (e.g. `x-forwarded-for`,
    /// whose last entry is taken: the one the proxy added). Unset: the TCP peer address.
    #[arg(long, env = "COLLAB_TRUSTED_PROXY_HEADER")]
    pub trusted_proxy_header: Option<String>,

    /// Separate address for `GET /metrics` (then not served on --listen).
    #[arg(long, env = "COLLAB_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Seconds an HTTP request (not a WebSocket) may take before it is answered 408.
    #[arg(long, env = "COLLAB_HTTP_TIMEOUT_SECS", default_value_t = 30)]
    pub http_timeout_secs: u64,

    /// `statement_timeout` of every database connection, in milliseconds.
    #[arg(long, env = "COLLAB_STATEMENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub statement_timeout_ms: u64,

    /// `lock_timeout` of pooled connections, in milliseconds.
    #[arg(long, env = "COLLAB_LOCK_TIMEOUT_MS", default_value_t = 10_000)]
    pub lock_timeout_ms: u64,

    /// `lock_timeout` of the write lanes, in milliseconds: a document whose row stays locked
    /// longer (an application transaction) is set aside and written apart, so the lane keeps
    /// committing the other documents.
    #[arg(long, env = "COLLAB_WRITE_LOCK_TIMEOUT_MS", default_value_t = 500)]
    pub write_lock_timeout_ms: u64,

    /// How long the search text of documents the write lanes write may lag, in milliseconds
    /// (`collab.search_lag` of the lanes; the bridge also indexes what they left stale this
    /// often). Longer costs less at high write rates; 1 to 60000.
    #[arg(long, env = "COLLAB_SEARCH_LAG_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub search_lag_ms: u64,

    /// `idle_in_transaction_session_timeout` of every database connection, in milliseconds.
    #[arg(
        long,
        env = "COLLAB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub idle_in_transaction_timeout_ms: u64,

    /// TCP keepalive idle time of database connections, in seconds (probes every 5 s; the
    /// connection is dropped after 3 unanswered, or when sent data stays unacknowledged as
    /// long: `tcp_user_timeout`).
    #[arg(long, env = "COLLAB_DB_KEEPALIVE_SECS", default_value_t = 10)]
    pub db_keepalive_secs: u64,

    /// Updates of one connection waiting to be stored before the bridge stops reading from it.
    #[arg(long, env = "COLLAB_MAX_PENDING_UPDATES", default_value_t = 64)]
    pub max_pending_updates: usize,

    /// Directory served at `/` (a demo page); ignored when it does not exist.
    #[arg(long, env = "COLLAB_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Shared secret for HS256 access tokens (prefer --jwt-secret-file: a command line is
    /// visible to every local user).
    #[arg(long, env = "COLLAB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// File holding the HS256 secret (trailing newline ignored).
    #[arg(long, env = "COLLAB_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// JWKS file (`{"keys": [...]}`: `oct`, `RSA` or `OKP` keys, each with a `kid`) with the
    /// verification keys; a token's `kid` picks one. Reloaded on SIGHUP and when it changes,
    /// so keys rotate without signing everyone out.
    #[arg(long, env = "COLLAB_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// File of revoked token subjects (`sub`), one a line (`#` comments). Reloaded on SIGHUP
    /// and when it changes; open connections of a revoked subject are closed with 4001.
    #[arg(long, env = "COLLAB_REVOKED_SUBJECTS_FILE")]
    pub revoked_subjects_file: Option<PathBuf>,

    /// PEM file with the public key for RS256 or EdDSA access tokens.
    #[arg(long, env = "COLLAB_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// The one accepted token algorithm (default: hs256 with a secret, required with a key).
    #[arg(long, env = "COLLAB_JWT_ALGORITHM", value_enum)]
    pub jwt_algorithm: Option<JwtAlgorithm>,

    /// Required `iss` claim, if set.
    #[arg(long, env = "COLLAB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, if set.
    #[arg(long, env = "COLLAB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Allowed clock skew for `exp` and `nbf`, in seconds.
    #[arg(long, env = "COLLAB_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,

    /// Name of the HttpOnly cookie that may carry the access token; empty: no cookies.
    #[arg(long, env = "COLLAB_AUTH_COOKIE", default_value = "collab_token")]
    pub auth_cookie: String,

    /// Also accept the token as `?token=` (it then shows up in logs and browser history).
    #[arg(long, env = "COLLAB_ALLOW_QUERY_TOKEN", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub allow_query_token: bool,

    /// Origins (scheme://host[:port]) allowed to open WebSockets and POST, comma-separated, on
    /// top of the same origin (Origin matching Host) and non-browser clients (no Origin).
    #[arg(long, env = "COLLAB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Development mode: fixed token secret and `POST /api/dev/login`. Refused unless the
    /// listen address is a loopback address.
    #[arg(long, env = "COLLAB_DEV", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub dev: bool,

    /// Lifetime of the tokens development mode's sign-in issues, in seconds.
    #[arg(long, env = "COLLAB_DEV_TOKEN_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(5..=86400))]
    pub dev_token_secs: u64,

    /// Seconds to wait at shutdown for pending updates to be stored and connections to close.
    #[arg(long, env = "COLLAB_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "COLLAB_LOG", default_value = "info")]
    pub log: String,
}

/// Secrets never reach logs through `{:?}`.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("bridge_id", &self.bridge_id)
            .field("database_url", &"<redacted>")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// Reads a secret from a file: the contents without the trailing line break.
pub fn read_secret_file(path: &std::path::Path, what: &str) -> Result<String, String> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {what} file {}: {e}", path.display()))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

impl Config {
    /// `--search-lag-ms` as a duration.
    pub fn search_lag(&self) -> Duration {
        Duration::from_millis(self.search_lag_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}
