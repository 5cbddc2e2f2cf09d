//! The update log, checkpoints and document rows, through SPI with plans prepared once per
//! backend. Also where a cached document is brought up to date with the log.
//!
//! Invariants kept here: sequence numbers of a document are assigned under its row lock, so the
//! rows visible to any snapshot are exactly 1..head_seq (minus pruned history, which a
//! checkpoint covers); a checkpoint at seq S holds the merged state of 1..S.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiTupleTable};
use pgrx::{PgBuiltInOids, PgOid};
use yrs::Doc;

mod log;

pub use log::{each_page, rows_since, updates_after, LogPages};

use crate::cache::{self, Entry};
use crate::depth::Depths;
use crate::error::{CollabError, Result};
use crate::{guc, merge, notify, pack};

/// A document row, as locked or read by the current statement.
#[derive(Debug, Clone)]
pub struct DocRow {
    pub id: i64,
    pub name: String,
    pub head_seq: i64,
    pub checkpoint_seq: i64,
    pub tail_bytes: i64,
    pub history_from: i64,
    pub created: i64,
    /// Size of the newest checkpoint (0 when there is none).
    pub state_bytes: i64,
}

const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
const INT8: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8OID);
const BYTEA: PgOid = PgOid::BuiltIn(PgBuiltInOids::BYTEAOID);
const BYTEA_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::BYTEAARRAYOID);
const TEXT_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID);
const INT4: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT4OID);
const INT4_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT4ARRAYOID);
const INT8_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8ARRAYOID);
const TIMESTAMPTZ: PgOid = PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID);

/// `SELECT <document row columns> <tail>`, built at compile time so plans can be cached by
/// their `&'static str`.
macro_rules! select_row {
    ($head:literal, $tail:literal) => {
        concat!(
            $head,
            "id, head_seq, checkpoint_seq, tail_bytes, history_from, \
             (extract(epoch FROM created_at) * 1000000)::int8, state_bytes, \
             deleted_at IS NOT NULL ",
            $tail
        )
    };
}

fn spi_err(e: pgrx::spi::SpiError) -> CollabError {
    CollabError::Internal(format!("SPI: {e}"))
}

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, Rc<OwnedPreparedStatement>>> =
        RefCell::new(HashMap::new());
}

/// Runs `sql` through a plan prepared on first use and kept for the backend's life. Reads
/// (`mutating == false`) take no transaction id, so they work in read-only transactions and on
/// standbys.
fn exec<'conn>(
    client: &mut SpiClient<'conn>,
    mutating: bool,
    sql: &'static str,
    types: &[PgOid],
    args: &[DatumWithOid],
) -> Result<SpiTupleTable<'conn>> {
    let cached = PLANS.with(|p| p.borrow().get(sql).cloned());
    let plan = match cached {
        Some(plan) => plan,
        None => {
            let prepared = if mutating {
                client.prepare_mut(sql, types)
            } else {
                client.prepare(sql, types)
            };
            let plan = Rc::new(prepared.map_err(spi_err)?.keep());
            PLANS.with(|p| p.borrow_mut().insert(sql, Rc::clone(&plan)));
            plan
        }
    };
    if mutating {
        client.update(&*plan, None, args).map_err(spi_err)
    } else {
        client.select(&*plan, None, args).map_err(spi_err)
    }
}

fn run<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    types: &[PgOid],
    args: &[DatumWithOid],
) -> Result<SpiTupleTable<'conn>> {
    exec(client, true, sql, types, args)
}

fn query<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    types: &[PgOid],
    args: &[DatumWithOid],
) -> Result<SpiTupleTable<'conn>> {
    exec(client, false, sql, types, args)
}

fn row_from(table: SpiTupleTable, name: &str) -> Result<Option<DocRow>> {
    let mut rows = table;
    if rows.is_empty() {
        return Ok(None);
    }
    rows = rows.first();
    let get = |i: usize| -> Result<i64> {
        rows.get::<i64>(i)
            .map_err(spi_err)?
            .ok_or_else(|| CollabError::Internal("NULL in collab.documents".into()))
    };
    // A tombstone: deletion is final for every read and write (see `delete`).
    if rows.get::<bool>(8).map_err(spi_err)?.unwrap_or(false) {
        return Err(CollabError::Deleted(name.to_string()));
    }
    Ok(Some(DocRow {
        id: get(1)?,
        name: name.to_string(),
        head_seq: get(2)?,
        checkpoint_seq: get(3)?,
        tail_bytes: get(4)?,
        history_from: get(5)?,
        created: get(6)?,
        state_bytes: get(7)?,
    }))
}

/// The document's row without a lock, or None if it was never written.
pub fn find(name: &str) -> Result<Option<DocRow>> {
    Spi::connect_mut(|client| {
        let t = query(
            client,
            select_row!("SELECT ", "FROM collab.documents WHERE name = $1"),
            &[TEXT],
            &[name.into()],
        )?;
        row_from(t, name)
    })
}

/// Locks the document's row (creating the document on first write) for the rest of the
/// transaction: writers of one document are serialised here, and only here.
/// Refuses a write on a hot standby (or in a read-only transaction) as PostgreSQL refuses its
/// own writes there, 25006, before anything else runs: without it the write fails deep inside
/// with XX000 "cannot assign TransactionIds during recovery". Clients (and the bridge, which
/// then reconnects) read 25006 as "this is not the primary" (#14, read replicas).
pub fn writable(name: &str) -> Result<()> {
    // SAFETY: reads a backend-local flag of the current transaction.
    if unsafe { pg_sys::XactReadOnly } {
        return Err(CollabError::ReadOnly(name.to_string()));
    }
    Ok(())
}

pub fn lock(name: &str, create: bool) -> Result<Option<DocRow>> {
    writable(name)?;
    Spi::connect_mut(|client| {
        const LOCK: &str = select_row!(
            "SELECT ",
            "FROM collab.documents WHERE name = $1 FOR UPDATE"
        );
        let t = run(client, LOCK, &[TEXT], &[name.into()])?;
        if let Some(row) = row_from(t, name)? {
            return Ok(Some(row));
        }
        if !create {
            return Ok(None);
        }
        run(
            client,
            "INSERT INTO collab.documents (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            &[TEXT],
            &[name.into()],
        )?;
        let t = run(client, LOCK, &[TEXT], &[name.into()])?;
        row_from(t, name)
    })
}

/// The newest checkpoint at or before `seq`: (its seq, its state).
fn checkpoint_at_or_before(
    client: &mut SpiClient,
    doc_id: i64,
    seq: i64,
) -> Result<Option<(i64, Vec<u8>)>> {
    let t = query(
        client,
        "SELECT seq, state FROM collab.checkpoints WHERE doc_id = $1 AND seq <= $2 \
         ORDER BY seq DESC LIMIT 1",
        &[INT8, INT8],
        &[doc_id.into(), seq.into()],
    )?;
    if t.is_empty() {
        return Ok(None);
    }
    let t = t.first();
    let s: Option<i64> = t.get(1).map_err(spi_err)?;
    let state: Option<Vec<u8>> = t.get(2).map_err(spi_err)?;
    Ok(s.zip(state))
}

/// Builds the document as of `seq` from the newest checkpoint before it and the log after it.
pub fn load_at(row: &DocRow, seq: i64) -> Result<Doc> {
    load_tracked(row, seq).map(|(doc, _, _)| doc)
}

/// The same, with the document's depth tracker and the encoded bytes it was built from.
fn load_tracked(row: &DocRow, seq: i64) -> Result<(Doc, Depths, usize)> {
    if seq < row.history_from {
        return Err(CollabError::Pruned {
            doc: row.name.clone(),
            floor: row.history_from,
        });
    }
    Spi::connect_mut(|client| {
        let checkpoint = checkpoint_at_or_before(client, row.id, seq)?;
        let from = checkpoint.as_ref().map_or(0, |(s, _)| *s);
        let rows = log::updates_between(client, row, from, seq)?;
        if rows.len() as i64 != seq - from {
            return Err(CollabError::Corrupt {
                doc: row.name.clone(),
                reason: format!(
                    "log rows {}..={} incomplete ({} of {})",
                    from + 1,
                    seq,
                    rows.len(),
                    seq - from
                ),
            });
        }
        let bytes = checkpoint.as_ref().map_or(0, |(_, s)| s.len())
            + rows.iter().map(Vec::len).sum::<usize>();
        let (doc, depths) = merge::load(
            &row.name,
            checkpoint.as_ref().map(|(_, s)| s.as_slice()),
            rows.iter().map(Vec::as_slice),
            guc::max_nesting(),
        )?;
        Ok((doc, depths, bytes))
    })
}

/// The cached document of `row`, brought up to `row.head_seq`: from the cache when it is
/// current, by applying the log tail when it is behind, else rebuilt from storage.
/// The caller owns the entry until it calls `cache::put`.
pub fn open(row: &DocRow) -> Result<Entry> {
    if let Some(mut entry) = cache::take(row.id, row.created) {
        if entry.seq == row.head_seq {
            return Ok(entry);
        }
        if !entry.dirty && entry.seq < row.head_seq && entry.seq >= row.history_from {
            let rows = Spi::connect_mut(|c| log::updates_between(c, row, entry.seq, row.head_seq))?;
            if rows.len() as i64 == row.head_seq - entry.seq {
                merge::apply_stored(
                    &entry.doc,
                    &mut entry.depths,
                    &row.name,
                    rows.iter().map(Vec::as_slice),
                    guc::max_nesting(),
                )?;
                entry.encoded_bytes += rows.iter().map(Vec::len).sum::<usize>();
                entry.seq = row.head_seq;
                return Ok(entry);
            }
        }
    }
    let (doc, depths, bytes) = load_tracked(row, row.head_seq)?;
    Ok(Entry::new(
        row.id,
        row.created,
        row.head_seq,
        doc,
        depths,
        bytes,
    ))
}

/// Appends validated updates after `row.head_seq` in one statement (so the NOTIFY trigger
/// fires once for the batch) and advances the row. `combined` is the batch as one update when
/// the caller already has it. `authors[i]` made `updates[i]`; `author` stands in for a missing
/// or `None` element. Consecutive updates by one author share log rows (see `pack`); the
/// document's byte counts are what the rows store. Returns the last sequence assigned.
pub fn append(
    row: &mut DocRow,
    updates: &[&[u8]],
    combined: Option<&[u8]>,
    origin: Option<&str>,
    author: &str,
    authors: &[Option<&str>],
) -> Result<i64> {
    let n = updates.len() as i64;
    let seq_from = row.head_seq + 1;
    let seq_to = row.head_seq + n;
    notify::stash(row, seq_from, seq_to, updates, combined, origin);
    let rows = pack::pack(updates, |i| {
        authors.get(i).copied().flatten().unwrap_or(author)
    });
    let bytes: i64 = rows.iter().map(|r| r.bytes.len() as i64).sum();
    Spi::connect_mut(|client| {
        if let [one] = rows.as_slice() {
            // One row (a lone update at light load, or a small batch by one author).
            run(
                client,
                "INSERT INTO collab.updates (doc_id, seq, span, update, origin, author) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[INT8, INT8, INT4, BYTEA, TEXT, TEXT],
                &[
                    row.id.into(),
                    seq_from.into(),
                    (one.span as i32).into(),
                    one.bytes.as_ref().into(),
                    origin.into(),
                    one.author.into(),
                ],
            )?;
        } else {
            // The rows come from set-returning functions in the select list (a ProjectSet,
            // evaluated in lockstep, one row at a time) rather than `FROM unnest(...)`, which
            // would materialise them in a tuplestore first.
            let seqs: Vec<i64> = rows.iter().map(|r| seq_from + r.first as i64).collect();
            let spans: Vec<i32> = rows.iter().map(|r| r.span as i32).collect();
            let blobs: Vec<&[u8]> = rows.iter().map(|r| r.bytes.as_ref()).collect();
            let who: Vec<&str> = rows.iter().map(|r| r.author).collect();
            run(
                client,
                "INSERT INTO collab.updates (doc_id, seq, span, update, origin, author) \
                 SELECT $1, pg_catalog.unnest($2), pg_catalog.unnest($3), \
                        pg_catalog.unnest($4), $5, pg_catalog.unnest($6)",
                &[INT8, INT8_ARRAY, INT4_ARRAY, BYTEA_ARRAY, TEXT, TEXT_ARRAY],
                &[
                    row.id.into(),
                    seqs.into(),
                    spans.into(),
                    blobs.into(),
                    origin.into(),
                    who.into(),
                ],
            )?;
        }
        run(
            client,
            "UPDATE collab.documents SET head_seq = $2, tail_bytes = tail_bytes + $3, \
             log_bytes = log_bytes + $3, update_count = update_count + $4, updated_at = now() \
             WHERE id = $1",
            &[INT8, INT8, INT8, INT8],
            &[row.id.into(), seq_to.into(), bytes.into(), n.into()],
        )?;
        Ok(())
    })?;
    notify::clear_stash();
    row.head_seq = seq_to;
    row.tail_bytes += bytes;
    Ok(seq_to)
}

/// Stores `body` as the searchable text of `row` at its head. The text and its tsvector are
/// only rewritten when the text changed (an edit of a map or of formatting costs a comparison
/// and a HOT update of `seq`); `seq` always records the head it was taken at, so text left
/// stale by `collab.search_lag` is found by `seq < head_seq`.
pub fn save_text(row: &DocRow, body: &str) -> Result<()> {
    Spi::connect_mut(|client| {
        run(
            client,
            "INSERT INTO collab.texts AS t (doc_id, seq, body, tsv) \
             VALUES ($1, $2, $3, pg_catalog.to_tsvector('pg_catalog.simple', $3)) \
             ON CONFLICT (doc_id) DO UPDATE SET seq = EXCLUDED.seq, indexed_at = now(), \
               body = CASE WHEN t.body = EXCLUDED.body THEN t.body ELSE EXCLUDED.body END, \
               tsv = CASE WHEN t.body = EXCLUDED.body THEN t.tsv \
                          ELSE pg_catalog.to_tsvector(t.language, EXCLUDED.body) END",
            &[INT8, INT8, TEXT],
            &[row.id.into(), row.head_seq.into(), body.into()],
        )?;
        Ok(())
    })
}

/// Whether `state` would load again (see `merge::reloadable`). Such a state is never written
/// as a checkpoint; the log stays the source.
fn reloadable(state: &[u8]) -> bool {
    merge::reloadable(state, guc::max_nesting())
}

/// Writes `state` as the checkpoint at `seq` (replacing one already there).
pub fn write_checkpoint(row: &mut DocRow, seq: i64, state: &[u8]) -> Result<()> {
    if !reloadable(state) {
        return Err(CollabError::Corrupt {
            doc: row.name.clone(),
            reason: "its state would not load again; no checkpoint written".into(),
        });
    }
    Spi::connect_mut(|client| {
        run(
            client,
            "INSERT INTO collab.checkpoints (doc_id, seq, state) VALUES ($1, $2, $3) \
             ON CONFLICT (doc_id, seq) DO UPDATE SET state = EXCLUDED.state, created_at = now()",
            &[INT8, INT8, BYTEA],
            &[row.id.into(), seq.into(), state.into()],
        )?;
        if seq >= row.checkpoint_seq {
            run(
                client,
                "UPDATE collab.documents SET checkpoint_seq = $2, state_bytes = $3, \
                 tail_bytes = coalesce((SELECT sum(octet_length(update)) FROM collab.updates \
                                        WHERE doc_id = $1 AND seq > $2), 0) \
                 WHERE id = $1",
                &[INT8, INT8, INT8],
                &[row.id.into(), seq.into(), (state.len() as i64).into()],
            )?;
        }
        Ok(())
    })?;
    if seq >= row.checkpoint_seq {
        row.state_bytes = state.len() as i64;
        row.tail_bytes = if seq == row.head_seq {
            0
        } else {
            row.tail_bytes
        };
        row.checkpoint_seq = seq;
    }
    Ok(())
}

/// Checkpoints the document at its head once the uncompacted tail passes
/// `collab.compact_threshold` **and** the size of the newest checkpoint. The document is
/// already decoded, so this costs one encoding of it: each write pays at most one merge, and a
/// cold read replays at most about one document's worth of log.
///
/// The second condition bounds write amplification: a checkpoint (the whole state) is written
/// at most once per state's worth of updates, so checkpoints add at most about one byte per
/// update byte. With the threshold alone a 5 MB document wrote 5 MB per 256 kB of edits (20×).
///
/// A transaction writes one such checkpoint, and more only for documents whose tail reached
/// twice what is due: a group commit carries tens of documents, and documents written at the
/// same pace fall due together (at 50k updates/s over 100 documents, all 100 in the same
/// second, which held those commits for all their encodings). The others wait for the next
/// transactions, which spreads them apart; a cold read then replays at most twice as much.
pub fn maybe_compact(row: &mut DocRow, entry: &Entry) -> Result<()> {
    let threshold = guc::compact_threshold();
    let due = threshold.max(row.state_bytes);
    if threshold > 0
        && row.tail_bytes >= due
        && row.checkpoint_seq < row.head_seq
        && (first_checkpoint_of_xact() || row.tail_bytes >= due.saturating_mul(2))
    {
        let state = merge::state(&entry.doc);
        let head = row.head_seq;
        match write_checkpoint(row, head, &state) {
            // Not reloadable: the write goes on, the log stays the source.
            Err(CollabError::Corrupt { .. }) => {}
            other => other?,
        }
    }
    Ok(())
}

thread_local! {
    /// Start time of the last transaction that wrote a checkpoint (see `maybe_compact`).
    static CHECKPOINTED_IN: Cell<pg_sys::TimestampTz> = const { Cell::new(0) };
}

/// Whether the current transaction has not written a checkpoint yet; notes that it will.
fn first_checkpoint_of_xact() -> bool {
    // SAFETY: reads the current transaction's start time, set whenever SQL runs.
    let xact = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    CHECKPOINTED_IN.with(|c| c.replace(xact) != xact)
}

/// Drops history older than `before`, keeping a checkpoint where it is cut so that every
/// later version stays readable. History is cut at the end of a log row (rows hold one or
/// more updates of one transaction: see `pack`). Returns the number of updates deleted.
pub fn prune(row: &mut DocRow, before: pgrx::datum::TimestampWithTimeZone) -> Result<i64> {
    let cut: Option<i64> = Spi::connect_mut(|client| {
        let t = run(
            client,
            "SELECT max(seq + span - 1) FROM collab.updates WHERE doc_id = $1 AND created_at < $2",
            &[INT8, TIMESTAMPTZ],
            &[row.id.into(), before.into()],
        )?;
        t.first().get::<i64>(1).map_err(spi_err)
    })?;
    let Some(cut) = cut.filter(|c| *c > row.history_from) else {
        return Ok(0);
    };
    let has_checkpoint = Spi::connect_mut(|client| {
        checkpoint_at_or_before(client, row.id, cut).map(|c| c.is_some_and(|(s, _)| s == cut))
    })?;
    if !has_checkpoint {
        let doc = load_at(row, cut)?;
        write_checkpoint(row, cut, &merge::state(&doc))?;
    }
    let deleted = Spi::connect_mut(|client| {
        let t = run(
            client,
            "WITH gone AS (DELETE FROM collab.updates WHERE doc_id = $1 AND seq <= $2 \
                           RETURNING span, octet_length(update) AS bytes) \
             SELECT coalesce(sum(span), 0)::int8, coalesce(sum(bytes), 0)::int8 FROM gone",
            &[INT8, INT8],
            &[row.id.into(), cut.into()],
        )?
        .first();
        let count: i64 = t.get(1).map_err(spi_err)?.unwrap_or(0);
        let bytes: i64 = t.get(2).map_err(spi_err)?.unwrap_or(0);
        run(
            client,
            "DELETE FROM collab.checkpoints WHERE doc_id = $1 AND seq < $2",
            &[INT8, INT8],
            &[row.id.into(), cut.into()],
        )?;
        run(
            client,
            "UPDATE collab.documents SET history_from = $2, update_count = update_count - $3, \
             log_bytes = log_bytes - $4 WHERE id = $1",
            &[INT8, INT8, INT8, INT8],
            &[row.id.into(), cut.into(), count.into(), bytes.into()],
        )?;
        Ok(count)
    })?;
    row.history_from = cut;
    Ok(deleted)
}

/// Deletes a document: its log and checkpoints go, its row stays as a tombstone (`deleted_at`)
/// so that no write, read or stale client's resync brings the name back until
/// `recreate_document`. Returns whether a live document was deleted.
pub fn delete(name: &str) -> Result<bool> {
    let gone = Spi::connect_mut(|client| {
        let t = run(
            client,
            "UPDATE collab.documents SET deleted_at = now(), updated_at = now(), head_seq = 0, \
             checkpoint_seq = 0, history_from = 0, update_count = 0, log_bytes = 0, \
             tail_bytes = 0, state_bytes = 0 \
             WHERE name = $1 AND deleted_at IS NULL RETURNING id",
            &[TEXT],
            &[name.into()],
        )?;
        if t.is_empty() {
            return Ok(false);
        }
        let id: i64 = t
            .first()
            .get(1)
            .map_err(spi_err)?
            .ok_or_else(|| CollabError::Internal("NULL id".into()))?;
        run(
            client,
            "DELETE FROM collab.updates WHERE doc_id = $1",
            &[INT8],
            &[id.into()],
        )?;
        run(
            client,
            "DELETE FROM collab.checkpoints WHERE doc_id = $1",
            &[INT8],
            &[id.into()],
        )?;
        run(
            client,
            "DELETE FROM collab.texts WHERE doc_id = $1",
            &[INT8],
            &[id.into()],
        )?;
        Ok(true)
    })?;
    if gone {
        notify::send(&notify::deleted_payload(name)?)?;
    }
    Ok(gone)
}

/// Removes the tombstone of a deleted document, so that its next write creates it afresh
/// (a new row id: nothing cached or notified about the old one applies). Returns whether
/// there was a tombstone.
pub fn recreate(name: &str) -> Result<bool> {
    Spi::connect_mut(|client| {
        let t = run(
            client,
            "DELETE FROM collab.documents WHERE name = $1 AND deleted_at IS NOT NULL RETURNING id",
            &[TEXT],
            &[name.into()],
        )?;
        Ok(!t.is_empty())
    })
}
