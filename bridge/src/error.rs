//! The bridge's one error type, mapped once to HTTP status + JSON body and to WebSocket close codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// WebSocket close code for an invalid, missing or expired access token.
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
/// WebSocket close code for a token that does not grant access to the document.
pub const CLOSE_FORBIDDEN: u16 = 4003;
/// WebSocket close code sent when the document was deleted.
pub const CLOSE_DELETED: u16 = 4410;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("authentication required")]
    Unauthenticated,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("token expired")]
    TokenExpired,
    #[error("permission denied: {0}")]
    Forbidden(String),
    #[error("origin not allowed: {0}")]
    OriginNotAllowed(String),
    #[error("invalid document name: {0}")]
    InvalidDocName(String),
    #[error("not found")]
    NotFound,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("update rejected: {0}")]
    UpdateRejected(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("server busy: {0}")]
    Busy(String),
    #[error("client too slow: send queue full")]
    TooSlow,
    #[error("document deleted")]
    Deleted,
    #[error("history pruned: {0}")]
    HistoryPruned(String),
    #[error("no message from the client for {0} s")]
    Idle(u64),
    #[error("server shutting down")]
    ShuttingDown,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A document row stayed locked (by another transaction) past the lock timeout.
    #[error("document locked: {0}")]
    Locked(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Stable machine-readable code for JSON bodies and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated => "unauthenticated",
            Error::InvalidToken(_) => "invalid_token",
            Error::TokenExpired => "token_expired",
            Error::Forbidden(_) => "forbidden",
            Error::OriginNotAllowed(_) => "origin_not_allowed",
            Error::InvalidDocName(_) => "invalid_document_name",
            Error::NotFound => "not_found",
            Error::BadRequest(_) => "bad_request",
            Error::Malformed(_) => "malformed_message",
            Error::UpdateRejected(_) => "update_rejected",
            Error::TooLarge(_) => "too_large",
            Error::Busy(_) => "busy",
            Error::TooSlow => "too_slow",
            Error::Deleted => "deleted",
            Error::HistoryPruned(_) => "history_pruned",
            Error::Idle(_) => "idle",
            Error::ShuttingDown => "shutting_down",
            Error::Unavailable(_) => "unavailable",
            Error::Locked(_) => "locked",
            Error::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated | Error::InvalidToken(_) | Error::TokenExpired => {
                StatusCode::UNAUTHORIZED
            }
            Error::Forbidden(_) | Error::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            Error::InvalidDocName(_) | Error::BadRequest(_) | Error::Malformed(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::UpdateRejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Busy(_) | Error::TooSlow => StatusCode::TOO_MANY_REQUESTS,
            Error::Deleted | Error::HistoryPruned(_) => StatusCode::GONE,
            Error::Idle(_) => StatusCode::REQUEST_TIMEOUT,
            Error::ShuttingDown | Error::Unavailable(_) | Error::Locked(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Close code when this error ends a WebSocket connection.
    pub fn close_code(&self) -> u16 {
        match self {
            Error::Unauthenticated | Error::InvalidToken(_) | Error::TokenExpired => {
                CLOSE_UNAUTHORIZED
            }
            Error::Forbidden(_) | Error::OriginNotAllowed(_) => CLOSE_FORBIDDEN,
            Error::InvalidDocName(_) | Error::BadRequest(_) | Error::Malformed(_) => 1002,
            Error::NotFound => 1008,
            Error::UpdateRejected(_) => 1007,
            Error::TooLarge(_) => 1009,
            Error::TooSlow => 1008,
            Error::Busy(_) => 1013,
            Error::Deleted => CLOSE_DELETED,
            Error::HistoryPruned(_) => 1008,
            Error::Idle(_) => 1001,
            Error::ShuttingDown => 1012,
            Error::Unavailable(_) | Error::Internal(_) | Error::Locked(_) => 1011,
        }
    }

    /// Close reason: the public message, cut to the 123 bytes a close frame allows.
    pub fn close_reason(&self) -> String {
        truncate_utf8(&self.public_message(), 123)
    }

    /// What a client is told: server-side faults (database, internals) say only what kind of
    /// fault it was, never the database's text (it may carry SQL, names or settings); those
    /// details go to the log.
    pub fn public_message(&self) -> String {
        match self {
            Error::Unavailable(_) => "database unavailable".into(),
            Error::Internal(_) => "internal error".into(),
            Error::Locked(_) => "document locked, try again later".into(),
            other => other.to_string(),
        }
    }

    /// Whether the fault lies with a client's data (as opposed to the server or the database).
    pub fn is_client_data(&self) -> bool {
        matches!(
            self,
            Error::UpdateRejected(_)
                | Error::TooLarge(_)
                | Error::InvalidDocName(_)
                | Error::Malformed(_)
        )
    }
}

pub fn truncate_utf8(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            return Error::Unavailable(e.to_string());
        };
        let msg = db.message().to_string();
        match db.code().code() {
            "22P03" | "22000" | "22003" | "54001" => Error::UpdateRejected(msg),
            "54000" => Error::TooLarge(msg),
            "55000" => Error::HistoryPruned(msg),
            "22023" => Error::InvalidDocName(msg),
            // pg_collab: the bridge's role lacks the right / the document was deleted.
            "42501" => Error::Forbidden(msg),
            "42704" => Error::Deleted,
            "55P03" => Error::Locked(msg),
            // statement_timeout: nothing was stored, the client may try again.
            "57014" => Error::Unavailable(msg),
            // A write reached a standby (a failover under way): nothing was stored; the
            // connection is dropped and the next one goes to the primary.
            "25006" => Error::Unavailable(msg),
            code if code.starts_with("08") || code.starts_with("57P") || code == "53300" => {
                Error::Unavailable(msg)
            }
            code => Error::Internal(format!("{code}: {msg}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => Error::Unavailable(other.to_string()),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), "request failed: {self}");
        }
        let body = json!({"error": {"code": self.code(), "message": self.public_message()}});
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"collab\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_fits_a_close_frame() {
        let e = Error::Malformed("é".repeat(200));
        let r = e.close_reason();
        assert!(r.len() <= 123);
        assert!(r.starts_with("malformed message: "));
    }

    #[test]
    fn server_faults_keep_database_text_to_the_log() {
        let e = Error::Internal("42P01: relation \"collab.secret\" does not exist".into());
        assert_eq!(e.close_reason(), "internal error");
        assert!(!e.public_message().contains("collab"));
        let e = Error::Unavailable("FATAL: password authentication failed for user x".into());
        assert_eq!(e.public_message(), "database unavailable");
    }
}
