//! Full-text search over the documents' plain text (`collab.texts`, GIN-indexed tsvector).
//!
//! Freshness: a write takes the document's plain text (the document is decoded and in the cache
//! at that moment) and stores it in the same transaction, so by default the index is current
//! at commit. Re-indexing costs about one `to_tsvector` of the document and a GIN insertion of
//! its words per write, so a session that writes a lot (collab-bridge's lanes) sets
//! `collab.search_lag`: a document this backend indexed less than that long ago is left stale
//! (`texts.seq < head_seq`), and so is one due while the backend has spent its share of time
//! for indexing; the next write after that, or `collab.refresh_search()` (the
//! bridge calls it every `--search-lag-ms`, no cron needed), brings it up to date. Documents written
//! before 0.3.0 are indexed by `collab.refresh_search()`, which the upgrade script runs once.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgrx::prelude::*;

use super::{doc_name, guarded};
use crate::error::{required, CollabError, OrRaise, Result};
use crate::rights::{self, Right};
use crate::storage::{self, DocRow};
use crate::{cache, guc, plaintext};

fn spi_err(e: pgrx::spi::SpiError) -> CollabError {
    CollabError::Internal(format!("SPI: {e}"))
}

/// Stores the plain text of `doc` (the document of `row`, at its head) for search.
pub(super) fn refresh(row: &DocRow, doc: &yrs::Doc) -> Result<()> {
    let body = plaintext::of(doc)?;
    storage::save_text(row, &body)
}

thread_local! {
    /// When this backend last indexed each document (for `collab.search_lag`). A rolled-back
    /// refresh may leave an entry: that document is then stale for at most the lag, and found
    /// by `collab.refresh_search()` like any other.
    static INDEXED: RefCell<HashMap<i64, Instant>> = RefCell::new(HashMap::new());
}

/// Most documents remembered in `INDEXED` before it is cleared (bounds its memory).
const MAX_REMEMBERED: usize = 65_536;

/// Share of a lagging writer's time that re-indexing may take. Re-indexing a document costs
/// its whole text (`to_tsvector` and a GIN entry per distinct word): 20–50 ms for 256 kB of
/// text with many distinct words. Documents that started being written together fall due
/// together, and a writer that re-indexed every due document of a group commit held that
/// commit, and every update queued behind it, for all of them (at 50k updates/s over 100
/// documents: p99 0.7 s, then a backlog that never cleared). So a lagging writer earns
/// indexing time at this share of the time that passes, spends it, and indexes a due document
/// only while it has some left: writes keep at least 90 % of the backend, and under overload
/// the search text lags longer, not the writes.
const INDEX_SHARE: f64 = 0.10;

/// Most indexing time a lagging writer can save up (so an idle backend indexes a burst of
/// small documents at once, but never a long run of large ones).
const INDEX_CREDIT_MAX: Duration = Duration::from_millis(5);

thread_local! {
    /// This backend's indexing credit in seconds (may go below zero: one document is indexed
    /// whatever it costs), and when it was last brought up to date.
    static CREDIT: Cell<(f64, Option<Instant>)> = const { Cell::new((0.0, None)) };
}

/// Whether a lagging writer may index a due document now (see `INDEX_SHARE`).
fn has_credit(now: Instant) -> bool {
    let (credit, at) = CREDIT.with(Cell::get);
    let max = INDEX_CREDIT_MAX.as_secs_f64();
    let credit = match at {
        None => max,
        Some(at) => (credit + now.duration_since(at).as_secs_f64() * INDEX_SHARE).min(max),
    };
    CREDIT.with(|c| c.set((credit, Some(now))));
    credit > 0.0
}

/// Spends `took` of indexing credit.
fn spend(took: Duration) {
    CREDIT.with(|c| {
        let (credit, at) = c.get();
        c.set((credit - took.as_secs_f64(), at));
    });
}

thread_local! {
    /// Due documents a lagging writer left for lack of credit: when it first left each, and
    /// when it last saw it written. They are indexed oldest first, so that under overload every
    /// document's turn comes (group commits take documents in name order: without a queue, the
    /// first names would take all the credit every lag).
    static WAITING: RefCell<HashMap<i64, (Instant, Instant)>> = RefCell::new(HashMap::new());
}

/// Whether `doc_id` is next in line: no other document it shares the queue with has waited
/// longer. Documents not written for a lag leave the queue (`refresh_search` takes idle ones).
fn next_in_line(doc_id: i64, now: Instant, lag: Duration) -> bool {
    WAITING.with(|w| {
        let mut w = w.borrow_mut();
        w.retain(|_, (_, seen)| now.duration_since(*seen) < lag);
        let oldest = w.values().map(|(since, _)| *since).min();
        match (w.get(&doc_id), oldest) {
            (_, None) => true,
            (Some((mine, _)), Some(oldest)) => *mine <= oldest,
            (None, Some(_)) => false,
        }
    })
}

/// Puts `doc_id` in the queue of due documents (or notes that it was written again).
fn wait(doc_id: i64, now: Instant) {
    WAITING.with(|w| {
        let mut w = w.borrow_mut();
        if w.len() >= MAX_REMEMBERED && !w.contains_key(&doc_id) {
            return;
        }
        w.entry(doc_id)
            .and_modify(|(_, seen)| *seen = now)
            .or_insert((now, now));
    });
}

/// After a write of `row`: its text indexed now, or left for later under `collab.search_lag`
/// (this backend indexed it less than the lag ago, or has no indexing credit left, or another
/// due document waited longer).
pub(super) fn after_write(row: &DocRow, doc: &yrs::Doc) -> Result<()> {
    let lag = guc::search_lag();
    if lag.is_zero() {
        return refresh(row, doc);
    }
    let now = Instant::now();
    let fresh = INDEXED.with(|m| {
        m.borrow()
            .get(&row.id)
            .is_some_and(|t| now.duration_since(*t) < lag)
    });
    if fresh {
        return Ok(());
    }
    if !has_credit(now) || !next_in_line(row.id, now, lag) {
        wait(row.id, now);
        return Ok(());
    }
    refresh(row, doc)?;
    spend(now.elapsed());
    WAITING.with(|w| w.borrow_mut().remove(&row.id));
    INDEXED.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= MAX_REMEMBERED {
            m.clear();
        }
        m.insert(row.id, now);
    });
    Ok(())
}

/// Most results one search returns.
const MAX_RESULTS: i32 = 1000;

/// A matching document before its snippet is made.
struct Hit {
    doc_id: i64,
    name: String,
    rank: f32,
    seq: i64,
}

/// Matches of `query` among the documents indexed in `config`, best first, `page` rows from
/// `offset`. Run as the table owner; the caller's rights are applied by the caller.
fn matches(query: &str, config: &str, offset: i64, page: i64) -> Result<Vec<Hit>> {
    Spi::connect(|c| {
        let t = c.select(
            "SELECT t.doc_id, d.name, ts_rank_cd(t.tsv, q)::float4, t.seq \
             FROM collab.texts t JOIN collab.documents d ON d.id = t.doc_id, \
                  websearch_to_tsquery($2::regconfig, $1) q \
             WHERE t.tsv @@ q AND t.language = $2::regconfig AND d.deleted_at IS NULL \
             ORDER BY 3 DESC, d.name OFFSET $3 LIMIT $4",
            None,
            &[query.into(), config.into(), offset.into(), page.into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push(Hit {
                doc_id: r.get::<i64>(1)?.unwrap_or(0),
                name: r.get::<String>(2)?.unwrap_or_default(),
                rank: r.get::<f32>(3)?.unwrap_or(0.0),
                seq: r.get::<i64>(4)?.unwrap_or(0),
            });
        }
        Ok(out)
    })
    .map_err(spi_err)
}

/// The highlighted passages of one document: matches between `<mark>` and `</mark>`.
fn snippet(doc_id: i64, query: &str, config: &str) -> Result<String> {
    Spi::connect(|c| {
        let t = c.select(
            "SELECT ts_headline(t.language, t.body, websearch_to_tsquery($3::regconfig, $2), \
               'StartSel=<mark>, StopSel=</mark>, MaxWords=24, MinWords=8, MaxFragments=2, \
                FragmentDelimiter=\" … \"') \
             FROM collab.texts t WHERE t.doc_id = $1",
            None,
            &[doc_id.into(), query.into(), config.into()],
        )?;
        Ok(t.first().get::<String>(1)?.unwrap_or_default())
    })
    .map_err(spi_err)
}

/// Documents whose text matches `query` (web search syntax: words, "phrases", or, -not), among
/// those indexed in text search configuration `config`, that the caller may read: best rank
/// first, at most `lim`, with a highlighted snippet.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn search(
    query: Option<&str>,
    config: default!(Option<&str>, "'simple'"),
    lim: default!(Option<i32>, "20"),
) -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(rank, f32),
        name!(snippet, String),
        name!(seq, i64),
    ),
> {
    let rows = (|| {
        let query = required(query, "query")?;
        let config = required(config, "config")?;
        let lim = required(lim, "lim")?;
        if !(1..=MAX_RESULTS).contains(&lim) {
            return Err(CollabError::OutOfRange(format!(
                "lim must be between 1 and {MAX_RESULTS}, got {lim}"
            )));
        }
        // Rights are the caller's, so they are checked outside the owner's context; matches
        // the caller may not read are skipped, page after page, until `lim` are found.
        let page = i64::from(lim) * 4;
        let mut found = Vec::new();
        let mut offset = 0i64;
        loop {
            let hits = rights::as_owner(|| matches(query, config, offset, page))?;
            let last_page = (hits.len() as i64) < page;
            for hit in hits {
                if found.len() < lim as usize && rights::may_read(&hit.name)? {
                    found.push(hit);
                }
            }
            offset += page;
            if last_page || found.len() >= lim as usize {
                break;
            }
            pgrx::check_for_interrupts!();
        }
        let mut out = Vec::with_capacity(found.len());
        for hit in found {
            let text = rights::as_owner(|| snippet(hit.doc_id, query, config))?;
            out.push((hit.name, hit.rank, text, hit.seq));
        }
        Ok(out)
    })()
    .or_raise();
    TableIterator::new(rows)
}

/// Sets the text search configuration `doc` is indexed in (`simple` until set). Needs the
/// write right. Returns whether the document exists (a document is indexed at its first write).
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn set_search_language(doc: Option<&str>, config: Option<&str>) -> bool {
    (|| {
        let name = doc_name(doc)?;
        let config = required(config, "config")?;
        guarded(name, Right::Write, || {
            Spi::connect_mut(|c| {
                let t = c.update(
                    "UPDATE collab.texts t SET language = $2::regconfig, indexed_at = now(), \
                            tsv = pg_catalog.to_tsvector($2::regconfig, t.body) \
                     FROM collab.documents d \
                     WHERE d.id = t.doc_id AND d.name = $1 AND d.deleted_at IS NULL \
                     RETURNING t.doc_id",
                    None,
                    &[name.into(), config.into()],
                )?;
                Ok(!t.is_empty())
            })
            .map_err(spi_err)
        })
    })()
    .or_raise()
}

/// Indexes the documents whose searchable text is missing (written before 0.3.0, or restored
/// from such a dump) or stale (left by a writer's `collab.search_lag`), least recently edited
/// first, at most `lim` of them (NULL: all). Under a `collab.search_lag` of the caller, only
/// documents nobody wrote for that long (those still written are re-indexed by their writers).
/// For collab_admin and collab_bridge (which calls it every `--search-lag-ms` with the lanes' lag).
/// Returns how many were indexed.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn refresh_search(lim: default!(Option<i64>, "NULL")) -> i64 {
    (|| {
        let lim = lim.unwrap_or(i64::MAX);
        if lim < 0 {
            return Err(CollabError::OutOfRange(format!(
                "lim must not be negative, got {lim}"
            )));
        }
        let names: Vec<String> = rights::as_owner(|| {
            Spi::connect(|c| {
                // Under a `collab.search_lag`, only documents idle for that long: a document
                // still being written is re-indexed by its writers, and taking it here would
                // load it into this backend and hold its text row while writers wait for it.
                let idle_secs = guc::search_lag().as_secs_f64();
                let t = c.select(
                    "SELECT d.name FROM collab.documents d \
                     LEFT JOIN collab.texts t ON t.doc_id = d.id \
                     WHERE d.deleted_at IS NULL AND d.head_seq > 0 \
                       AND (t.seq IS NULL OR t.seq < d.head_seq) \
                       AND d.updated_at <= now() - make_interval(secs => $2) \
                     ORDER BY d.updated_at LIMIT $1",
                    None,
                    &[lim.into(), idle_secs.into()],
                )?;
                let mut out = Vec::new();
                for r in t {
                    out.push(r.get::<String>(1)?.unwrap_or_default());
                }
                Ok(out)
            })
            .map_err(spi_err)
        })?;
        let mut done = 0;
        for name in names {
            pgrx::check_for_interrupts!();
            // The caller's role was checked by EXECUTE (collab_admin, collab_bridge); the
            // document may have been deleted since the list was read.
            rights::as_owner(|| {
                let row = match storage::find(&name) {
                    Ok(Some(row)) => row,
                    Ok(None) | Err(CollabError::Deleted(_)) => return Ok(()),
                    Err(e) => return Err(e),
                };
                let entry = storage::open(&row)?;
                let indexed = refresh(&row, &entry.doc);
                cache::put(entry);
                indexed
            })?;
            done += 1;
        }
        Ok(done)
    })()
    .or_raise()
}

/// How far search is behind the writes: the documents whose searchable text is stale or
/// missing, and when the oldest write not yet searchable was made (NULL when none is stale).
/// Under overload a lagging writer indexes within its share of time only, so this is what an
/// operator watches (collab-bridge exports it as metrics). For collab_admin and collab_bridge.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn search_backlog() -> TableIterator<
    'static,
    (
        name!(documents, i64),
        name!(oldest_write, Option<pgrx::datum::TimestampWithTimeZone>),
    ),
> {
    let row = rights::as_owner(|| {
        Spi::connect(|c| {
            // The first write after the indexed head is in the log row holding seq + 1; pruned
            // history leaves the time of the last indexing as the bound.
            let t = c.select(
                "SELECT count(*)::int8, \
                        min(coalesce((SELECT u.created_at FROM collab.updates u \
                                      WHERE u.doc_id = d.id AND u.seq <= coalesce(t.seq, 0) + 1 \
                                      ORDER BY u.seq DESC LIMIT 1), \
                                     t.indexed_at, d.created_at)) \
                 FROM collab.documents d LEFT JOIN collab.texts t ON t.doc_id = d.id \
                 WHERE d.deleted_at IS NULL AND d.head_seq > 0 \
                   AND (t.seq IS NULL OR t.seq < d.head_seq)",
                None,
                &[],
            )?;
            let r = t.first();
            Ok((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<pgrx::datum::TimestampWithTimeZone>(2)?,
            ))
        })
        .map_err(spi_err)
    })
    .or_raise();
    TableIterator::once(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexed(doc_id: i64) {
        WAITING.with(|w| w.borrow_mut().remove(&doc_id));
    }

    #[test]
    fn due_documents_left_for_lack_of_credit_are_indexed_oldest_first() {
        let lag = Duration::from_secs(60);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // Documents 3, 1, 2 fall due in that order while the writer has no credit.
        wait(3, at(0));
        wait(1, at(1));
        wait(2, at(2));
        // Credit again: group commits bring them in id order, and only the oldest is taken.
        assert!(!next_in_line(1, at(3), lag));
        assert!(!next_in_line(2, at(3), lag));
        assert!(next_in_line(3, at(3), lag));
        indexed(3);
        assert!(next_in_line(1, at(4), lag));
        indexed(1);
        // A document falling due now queues behind the one still waiting.
        assert!(!next_in_line(4, at(5), lag));
        assert!(next_in_line(2, at(5), lag));
    }

    #[test]
    fn a_waiting_document_not_written_for_a_lag_leaves_the_queue() {
        let lag = Duration::from_secs(5);
        let t0 = Instant::now();
        wait(7, t0);
        wait(8, t0 + Duration::from_secs(1));
        assert!(!next_in_line(8, t0 + Duration::from_secs(2), lag));
        // Document 7 went idle (refresh_search will take it): 8 no longer waits behind it.
        wait(8, t0 + Duration::from_secs(4));
        assert!(next_in_line(8, t0 + Duration::from_secs(6), lag));
    }
}
