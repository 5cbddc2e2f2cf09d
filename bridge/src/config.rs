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

#[derive(Debug, Clone, Parser)]
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
    #[arg(
        long,
        env = "COLLAB_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5499/postgres"
    )]
    pub database_url: String,

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

    /// Updates of one connection waiting to be stored before the bridge stops reading from it.
    #[arg(long, env = "COLLAB_MAX_PENDING_UPDATES", default_value_t = 64)]
    pub max_pending_updates: usize,

    /// Directory served at `/` (a demo page); ignored when it does not exist.
    #[arg(long, env = "COLLAB_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Shared secret for HS256 access tokens.
    #[arg(long, env = "COLLAB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

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

    /// Name of the HttpOnly cookie that may carry the access token.
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

impl Config {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}
