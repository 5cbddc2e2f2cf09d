//! Who wrote what: the log with its authors, and the author of each run of a text.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::{doc_name, field_name, guarded, read};
use crate::authorship::{self, Authorship};
use crate::error::{required, OrRaise, Result};
use crate::rights::Right;
use crate::{guc, storage};

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
            Ok(storage::updates_after(name, after)?
                .into_iter()
                .map(|r| {
                    let bytes = r.update.len() as i64;
                    (r.seq, r.author, r.origin, r.created_at, bytes)
                })
                .collect::<Vec<_>>())
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
    storage::each_page(&row, row.history_from, row.head_seq, 1024, |updates| {
        for u in updates {
            who.add(&u.update, u.author, nesting)?;
        }
        Ok(())
    })?;
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
