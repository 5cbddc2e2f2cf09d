//! The log as history: checkpoints, earlier versions, catching up, pruning; and the
//! notification helpers that go with the log.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::{doc_name, field_name, guarded};
use crate::error::{required, CollabError, OrRaise, Result};
use crate::rights::{self, Right};
use crate::storage::{self, DocRow};
use crate::{cache, content, merge, notify};

pub(super) fn seq_in_range(row: &DocRow, seq: i64) -> Result<()> {
    if seq < 0 || seq > row.head_seq {
        return Err(CollabError::OutOfRange(format!(
            "sequence {seq} is out of range: document \"{}\" is at {}",
            row.name, row.head_seq
        )));
    }
    Ok(())
}

/// The document as it was right after update `seq` (0: empty).
fn doc_at(name: &str, seq: i64) -> Result<yrs::Doc> {
    guarded(name, Right::Read, || doc_at_unchecked(name, seq))
}

pub(super) fn doc_at_unchecked(name: &str, seq: i64) -> Result<yrs::Doc> {
    let Some(row) = storage::find(name)? else {
        return if seq == 0 {
            Ok(merge::new_doc())
        } else {
            Err(CollabError::OutOfRange(format!(
                "sequence {seq} is out of range: document \"{name}\" has no updates"
            )))
        };
    };
    seq_in_range(&row, seq)?;
    storage::load_at(&row, seq)
}

/// Writes a checkpoint of the current document and returns its sequence.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn compact(doc: Option<&str>) -> i64 {
    (|| {
        let name = doc_name(doc)?;
        guarded(name, Right::Admin, || {
            let Some(mut row) = storage::lock(name, false)? else {
                return Ok(0);
            };
            if row.checkpoint_seq == row.head_seq {
                return Ok(row.head_seq);
            }
            let entry = storage::open(&row)?;
            let state = merge::state(&entry.doc);
            let head = row.head_seq;
            storage::write_checkpoint(&mut row, head, &state)?;
            cache::put(entry);
            Ok(head)
        })
    })()
    .or_raise()
}

/// The document as of sequence `seq`, as one Yjs v1 update.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn state_at(doc: Option<&str>, seq: Option<i64>) -> Vec<u8> {
    (|| {
        let name = doc_name(doc)?;
        let seq = required(seq, "seq")?;
        Ok(merge::state(&doc_at(name, seq)?))
    })()
    .or_raise()
}

/// The text of `field` as of sequence `seq`.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn text_at(
    doc: Option<&str>,
    seq: Option<i64>,
    field: default!(Option<&str>, "'content'"),
) -> String {
    (|| {
        let name = doc_name(doc)?;
        let seq = required(seq, "seq")?;
        let field = field_name(field)?;
        content::read_text(&doc_at(name, seq)?, name, field)
    })()
    .or_raise()
}

/// Log rows after sequence `seq`, for listeners catching up. If `seq` lies in pruned history
/// the first row is the checkpoint at the history floor (origin 'checkpoint').
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn updates_since(
    doc: Option<&str>,
    seq: Option<i64>,
) -> TableIterator<
    'static,
    (
        name!(seq, i64),
        name!(update, Vec<u8>),
        name!(origin, Option<String>),
        name!(created_at, Option<TimestampWithTimeZone>),
    ),
> {
    let rows = (|| {
        let name = doc_name(doc)?;
        let seq = required(seq, "seq")?;
        guarded(name, Right::Read, || match storage::find(name)? {
            None => Ok(storage::LogPages::empty()),
            Some(row) => storage::rows_since(&row, seq),
        })
    })()
    .or_raise();
    // Rows are read a page at a time as PostgreSQL asks for them (one per call).
    TableIterator::new(rows.map(|r| {
        let r = r.or_raise();
        (r.seq, r.update, r.origin, r.created_at)
    }))
}

/// Drops log rows and checkpoints older than `before`, keeping a checkpoint where history is
/// cut. Returns the number of log rows deleted.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn prune(doc: Option<&str>, before: Option<TimestampWithTimeZone>) -> i64 {
    (|| {
        let name = doc_name(doc)?;
        let before = required(before, "before")?;
        guarded(name, Right::Admin, || match storage::lock(name, false)? {
            None => Ok(0),
            Some(mut row) => storage::prune(&mut row, before),
        })
    })()
    .or_raise()
}

/// Sends an ephemeral message (e.g. awareness) to every listener of `doc`; stores nothing.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn broadcast(doc: Option<&str>, payload: Option<&[u8]>, origin: default!(Option<&str>, "NULL")) {
    (|| {
        let name = doc_name(doc)?;
        let payload = required(payload, "payload")?;
        guarded(name, Right::Write, || {
            notify::send(&notify::broadcast_payload(name, payload, origin)?)
        })
    })()
    .or_raise()
}

/// Internal, for the NOTIFY trigger: the sealed payload of the batch the current statement
/// inserted. Rows inserted by anything but the collab functions have none: from the owner of
/// the tables (a restore: pg_restore and psql load the log with COPY while the triggers are
/// on) they are accepted without a notification (NULL), from anyone else refused, since they
/// would bypass validation and the document's sequence.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn _take_notification() -> Option<String> {
    (|| match notify::take() {
        Some(payload) => payload.map(Some),
        None if rights::caller_is_owner()? => Ok(None),
        None => Err(CollabError::DirectWrite),
    })()
    .or_raise()
}
