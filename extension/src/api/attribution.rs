//! Who wrote what: the log with its authors, and the author of each run of a text.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::{doc_name, field_name, guarded, read};
use crate::authorship::{self, Authorship};
use crate::error::{required, CollabError, OrRaise, Result};
use crate::rights::Right;
use crate::{guc, storage};

fn spi_err(e: pgrx::spi::SpiError) -> CollabError {
    CollabError::Internal(format!("SPI: {e}"))
}

type Ts = Option<TimestampWithTimeZone>;

/// The log's metadata after sequence `after`, with the author of each update: the history of a
/// document, for history views. Pruned history has no rows. Needs the read right.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn history(
    doc: Option<&str>,
    after: default!(Option<i64>, "0"),
) -> TableIterator<
    'static,
    (
        name!(seq, i64),
        name!(author, Option<String>),
        name!(origin, Option<String>),
        name!(created_at, Ts),
        name!(bytes, i64),
    ),
> {
    let rows = (|| {
        let name = doc_name(doc)?;
        let after = required(after, "after")?;
        guarded(name, Right::Read, || {
            Spi::connect(|c| {
                let t = c.select(
                    "SELECT u.seq, u.author, u.origin, u.created_at, octet_length(u.update)::int8 \
                     FROM collab.updates u JOIN collab.documents d ON d.id = u.doc_id \
                     WHERE d.name = $1 AND d.deleted_at IS NULL AND u.seq > $2 ORDER BY u.seq",
                    None,
                    &[name.into(), after.into()],
                )?;
                let mut out = Vec::new();
                for r in t {
                    out.push((
                        r.get::<i64>(1)?.unwrap_or(0),
                        r.get::<String>(2)?,
                        r.get::<String>(3)?,
                        r.get::<TimestampWithTimeZone>(4)?,
                        r.get::<i64>(5)?.unwrap_or(0),
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

/// Reads the whole (unpruned) log with its authors, a page at a time, into an `Authorship`.
fn authorship_of(name: &str) -> Result<Authorship> {
    let mut who = Authorship::default();
    let Some(row) = storage::find(name)? else {
        return Ok(who);
    };
    let nesting = guc::max_nesting();
    let mut after = row.history_from;
    loop {
        let rows: Vec<(i64, Vec<u8>, Option<String>)> = Spi::connect(|c| {
            let t = c.select(
                "SELECT seq, update, author FROM collab.updates \
                 WHERE doc_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT 1024",
                None,
                &[row.id.into(), after.into(), row.head_seq.into()],
            )?;
            let mut out = Vec::new();
            for r in t {
                out.push((
                    r.get::<i64>(1)?.unwrap_or(0),
                    r.get::<Vec<u8>>(2)?.unwrap_or_default(),
                    r.get::<String>(3)?,
                ));
            }
            Ok(out)
        })
        .map_err(spi_err)?;
        let Some(last) = rows.last().map(|r| r.0) else {
            break;
        };
        for (_, update, author) in rows {
            who.add(&update, author, nesting)?;
        }
        after = last;
        pgrx::check_for_interrupts!();
    }
    Ok(who)
}

/// Who wrote the current text of root `field`: consecutive runs of characters by one author,
/// in order, with their character position (counted like `length()`). The author of a
/// character is the author of the update that inserted it; NULL for text written before
/// authors were recorded (0.3.0) or whose update was pruned. Needs the read right.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn text_authors(
    doc: Option<&str>,
    field: default!(Option<&str>, "'content'"),
) -> TableIterator<
    'static,
    (
        name!(position, i64),
        name!(length, i64),
        name!(author, Option<String>),
        name!(text, String),
    ),
> {
    let rows = (|| {
        let name = doc_name(doc)?;
        let field = field_name(field)?;
        let nesting = guc::max_nesting();
        let chunks = read(name, |d| authorship::chunks(d, name, field, nesting))?;
        let who = guarded(name, Right::Read, || authorship_of(name))?;
        Ok(authorship::spans(&chunks, &who)
            .into_iter()
            .map(|s| (s.start, s.length, s.author, s.text))
            .collect::<Vec<_>>())
    })()
    .or_raise();
    TableIterator::new(rows)
}
