//! The one error type of the extension and its mapping to SQLSTATEs (documented in the README).
//!
//! Pure modules return `CollabError`; only the SQL surface turns it into an `ERROR` with
//! [`CollabError::raise`], so every failure a user can provoke has a stable, meaningful code.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CollabError {
    #[error("{0} must not be NULL")]
    Null(&'static str),
    #[error("invalid document name: {0}")]
    InvalidName(String),
    #[error("invalid field name: {0}")]
    InvalidField(String),
    #[error("empty update: a Yjs update has at least two bytes")]
    EmptyUpdate,
    #[error("update of {size} bytes exceeds collab.max_update_bytes ({limit})")]
    UpdateTooLarge { size: usize, limit: usize },
    #[error("malformed Yjs update: {0}")]
    MalformedUpdate(String),
    #[error("Yjs update could not be integrated into document \"{doc}\": {reason}")]
    Unintegrable { doc: String, reason: String },
    #[error("malformed state vector: {0}")]
    MalformedStateVector(String),
    /// Nesting deeper than `collab.max_nesting`, or an update too costly to integrate.
    #[error("{0}")]
    TooComplex(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("field \"{field}\" of document \"{doc}\" is a {actual}, not text")]
    WrongType {
        doc: String,
        field: String,
        actual: &'static str,
    },
    #[error("history of document \"{doc}\" before sequence {floor} has been pruned")]
    Pruned { doc: String, floor: i64 },
    #[error("broadcast payload of {size} bytes does not fit in a notification (limit {limit})")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("stored data of document \"{doc}\" is unreadable: {reason}")]
    Corrupt { doc: String, reason: String },
    #[error(
        "collab.updates is written only through collab.apply_update(s) and the edit functions"
    )]
    DirectWrite,
    #[error("permission denied: role \"{role}\" may not {right} document \"{doc}\"")]
    Denied {
        role: String,
        right: &'static str,
        doc: String,
    },
    #[error("document \"{0}\" was deleted (collab.recreate_document brings the name back)")]
    Deleted(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    UnknownRole(String),
    /// A write on a hot standby or in a read-only transaction (#14: read replicas).
    #[error("cannot write document \"{0}\" in a read-only transaction: writes go to the primary")]
    ReadOnly(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CollabError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            CollabError::Null(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            CollabError::InvalidName(_) | CollabError::InvalidField(_) => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            CollabError::EmptyUpdate
            | CollabError::MalformedUpdate(_)
            | CollabError::MalformedStateVector(_) => ERRCODE_INVALID_BINARY_REPRESENTATION,
            CollabError::Unintegrable { .. } => ERRCODE_DATA_EXCEPTION,
            CollabError::TooComplex(_) => ERRCODE_STATEMENT_TOO_COMPLEX,
            CollabError::UpdateTooLarge { .. } | CollabError::PayloadTooLarge { .. } => {
                ERRCODE_PROGRAM_LIMIT_EXCEEDED
            }
            CollabError::OutOfRange(_) => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            CollabError::WrongType { .. } => ERRCODE_WRONG_OBJECT_TYPE,
            CollabError::Pruned { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            CollabError::Corrupt { .. } => ERRCODE_DATA_CORRUPTED,
            CollabError::DirectWrite | CollabError::Denied { .. } => ERRCODE_INSUFFICIENT_PRIVILEGE,
            CollabError::Deleted(_) | CollabError::UnknownRole(_) => ERRCODE_UNDEFINED_OBJECT,
            CollabError::InvalidArgument(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            CollabError::ReadOnly(_) => ERRCODE_READ_ONLY_SQL_TRANSACTION,
            CollabError::Internal(_) => ERRCODE_INTERNAL_ERROR,
        }
    }

    /// Raises the error as a PostgreSQL `ERROR`; the transaction aborts, nothing is stored.
    pub fn raise(self) -> ! {
        let code = self.sqlstate();
        let report = pgrx::pg_sys::panic::ErrorReport::new(code, self.to_string(), "pg_collab");
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

pub type Result<T> = std::result::Result<T, CollabError>;

/// Unwraps a result at the SQL boundary, raising the error with its SQLSTATE.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.raise(),
        }
    }
}

/// `Some(v)` or a `null_value_not_allowed` error naming the argument.
pub fn required<T>(value: Option<T>, what: &'static str) -> Result<T> {
    value.ok_or(CollabError::Null(what))
}
