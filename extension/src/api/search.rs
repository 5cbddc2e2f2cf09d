//! Full-text search over the documents' plain text (`collab.texts`, GIN-indexed tsvector).
//!
//! Freshness: a write takes the document's plain text (the document is decoded and in the cache
//! at that moment) and stores it in the same transaction, so by default the index is current
//! at commit. Re-indexing costs about one `to_tsvector` of the document and a GIN insertion of
//! its words per write, so a session that writes a lot (collab-bridge's lanes) sets
//! `collab.search_lag`: a document this backend indexed less than that long ago is left stale
//! (`texts.seq < head_seq`), and so is one due when its transaction has spent its indexing
//! budget; the next write after that, or `collab.refresh_search()` (the
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

/// Indexing one transaction of a lagging writer may do beyond its first document. A group
/// commit carries tens of documents, and documents that started being written together fall due
/// together: re-indexing all of them in one transaction held that transaction (and every
/// update queued behind it) for the sum of their `to_tsvector`s. With a budget, a transaction
/// indexes its first due document and then more only while it has spent less than this; the
/// rest stay due and are taken by the next transactions, which spreads the documents' due
/// times apart. Under overload the search text lags longer, not the writes.
const INDEX_BUDGET_PER_XACT: Duration = Duration::from_millis(1);

thread_local! {
    /// This backend's indexing in the current transaction (identified by its start
    /// timestamp): how long it took so far.
    static SPENT: Cell<(pg_sys::TimestampTz, Duration)> = const { Cell::new((0, Duration::ZERO)) };
}

/// Whether a lagging writer's transaction may still index a due document (see
/// `INDEX_BUDGET_PER_XACT`).
fn within_budget() -> bool {
    // SAFETY: reads the current transaction's start time, set whenever SQL runs.
    let xact = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let (at, spent) = SPENT.with(Cell::get);
    at != xact || spent < INDEX_BUDGET_PER_XACT
}

/// Adds `took` to the current transaction's indexing time.
fn charge(took: Duration) {
    // SAFETY: as in `within_budget`.
    let xact = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    SPENT.with(|c| {
        let (at, spent) = c.get();
        c.set((xact, if at == xact { spent + took } else { took }));
    });
}

/// After a write of `row`: its text indexed now, or left for later under `collab.search_lag`
/// (this backend indexed it less than the lag ago, or this transaction spent its budget).
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
    if fresh || !within_budget() {
        return Ok(());
    }
    refresh(row, doc)?;
    charge(now.elapsed());
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
