//! What applications and bridges need to know about documents without reading the tables:
//! a document's counters, the list of documents the caller may read, the log's metadata.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::{doc_name, guarded};
use crate::error::{required, CollabError, OrRaise};
use crate::rights::{self, Right};
use crate::storage;

fn spi_err(e: pgrx::spi::SpiError) -> CollabError {
    CollabError::Internal(format!("SPI: {e}"))
}

type Ts = Option<TimestampWithTimeZone>;

/// One row for a document that was ever written (a deleted one included, with `deleted_at`);
/// none for a name never written.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn document_info(
    doc: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(head_seq, i64),
        name!(checkpoint_seq, i64),
        name!(history_from, i64),
        name!(update_count, i64),
        name!(log_bytes, i64),
        name!(created_at, Ts),
        name!(updated_at, Ts),
        name!(deleted_at, Ts),
    ),
> {
    let rows = (|| {
        let name = doc_name(doc)?;
        guarded(name, Right::Read, || {
            Spi::connect(|c| {
                let t = c.select(
                    "SELECT head_seq, checkpoint_seq, history_from, update_count, log_bytes, \
                     created_at, updated_at, deleted_at FROM collab.documents WHERE name = $1",
                    None,
                    &[name.into()],
                )?;
                let mut out = Vec::new();
                for r in t {
                    out.push((
                        r.get::<i64>(1)?.unwrap_or(0),
                        r.get::<i64>(2)?.unwrap_or(0),
                        r.get::<i64>(3)?.unwrap_or(0),
                        r.get::<i64>(4)?.unwrap_or(0),
                        r.get::<i64>(5)?.unwrap_or(0),
                        r.get::<TimestampWithTimeZone>(6)?,
                        r.get::<TimestampWithTimeZone>(7)?,
                        r.get::<TimestampWithTimeZone>(8)?,
                    ));
                }
                Ok(out)
            })
            .map_err(spi_err)
        })
    })()
    .or_raise();
    TableIterator::new(rows)
}

/// The most recently edited documents the caller may read (deleted ones left out), newest
/// first, at most `lim`.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn list_documents(
    lim: default!(Option<i64>, "100"),
) -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(head_seq, i64),
        name!(updated_at, Ts),
    ),
> {
    let rows = (|| {
        let lim = required(lim, "lim")?.max(0);
        let mut out = Vec::new();
        // Pages of the newest documents, each kept only if the caller may read it: a role
        // with rights on a few documents never sees the others' names.
        const PAGE: i64 = 1000;
        let mut offset = 0i64;
        while (out.len() as i64) < lim {
            let page: Vec<(String, i64, Ts)> = rights::as_owner(|| {
                Spi::connect(|c| {
                    let t = c.select(
                        "SELECT name, head_seq, updated_at FROM collab.documents \
                         WHERE deleted_at IS NULL ORDER BY updated_at DESC, name \
                         LIMIT $1 OFFSET $2",
                        None,
                        &[PAGE.into(), offset.into()],
                    )?;
                    let mut rows = Vec::new();
                    for r in t {
                        rows.push((
                            r.get::<String>(1)?.unwrap_or_default(),
                            r.get::<i64>(2)?.unwrap_or(0),
                            r.get::<TimestampWithTimeZone>(3)?,
                        ));
                    }
                    Ok(rows)
                })
                .map_err(spi_err)
            })?;
            let n = page.len() as i64;
            for row in page {
                if (out.len() as i64) < lim && rights::may_read(&row.0)? {
                    out.push(row);
                }
            }
            if n < PAGE {
                break;
            }
            offset += PAGE;
        }
        Ok::<_, CollabError>(out)
    })()
    .or_raise();
    TableIterator::new(rows)
}

/// The log's metadata after sequence `after` (no update bytes): who wrote when, for history
/// views. Pruned history has no rows.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn log_entries(
    doc: Option<&str>,
    after: default!(Option<i64>, "0"),
) -> TableIterator<
    'static,
    (
        name!(seq, i64),
        name!(origin, Option<String>),
        name!(created_at, Ts),
        name!(bytes, i64),
    ),
> {
    let rows = (|| {
        let name = doc_name(doc)?;
        let after = required(after, "after")?;
        guarded(name, Right::Read, || {
            Ok(storage::updates_after(name, after)?
                .into_iter()
                .map(|r| (r.seq, r.origin, r.created_at, r.update.len() as i64))
                .collect::<Vec<_>>())
        })
    })()
    .or_raise();
    TableIterator::new(rows)
}
