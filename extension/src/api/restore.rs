//! Restoring a version, and undoing one author's insertions, as new updates (see restore.rs and
//! authorship.rs for what exactly they change).

use pgrx::prelude::*;

use super::history::{doc_at_unchecked, seq_in_range};
use super::{doc_name, field_name, write, Batch};
use crate::error::{required, CollabError, OrRaise, Result};
use crate::rights::{self, Right};
use crate::{authorship, guc, restore as restoring, storage};

/// Makes the document read as it did right after update `seq`, with one new update (merged
/// by concurrent editors like any other, and a version of its own in the history). Needs the
/// write right. Returns the head sequence (unchanged when it already reads so).
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn restore(doc: Option<&str>, seq: Option<i64>) -> i64 {
    (|| {
        let name = doc_name(doc)?;
        let seq = required(seq, "seq")?;
        rights::require(name, Right::Write)?;
        let old = rights::as_owner(|| doc_at_unchecked(name, seq))?;
        let origin = format!("restore {seq}");
        write(name, Some(&origin), |cur, _| {
            Ok(restoring::restore(cur, &old, name)?.map(Batch::from))
        })
    })()
    .or_raise()
}

/// The updates `author` made after sequence `after` up to `upto`, as one set of inserted ids.
fn inserted_by(name: &str, author: &str, after: i64, upto: i64) -> Result<yrs::IdSet> {
    let Some(row) = storage::find(name)? else {
        return Err(CollabError::OutOfRange(format!(
            "document \"{name}\" has no updates"
        )));
    };
    seq_in_range(&row, after)?;
    seq_in_range(&row, upto)?;
    if after < row.history_from {
        return Err(CollabError::Pruned {
            doc: name.to_string(),
            floor: row.history_from,
        });
    }
    let nesting = guc::max_nesting();
    let mut ids = yrs::IdSet::new();
    // A page at a time: the author's updates in a long range need not fit in memory at once.
    storage::each_page(&row, after, upto, 1024, |updates| {
        for u in updates
            .iter()
            .filter(|u| u.author.as_deref() == Some(author))
        {
            ids.merge_with(authorship::insertions(&u.update, nesting)?);
        }
        Ok(())
    })?;
    Ok(ids)
}

/// Deletes the characters of text root `field` that `author` inserted in the updates after
/// sequence `after` up to `upto` (NULL: the head) and that are still there, with one new
/// update. What they deleted is not brought back (use `restore` for whole versions); text
/// others typed meanwhile, also inside what the author wrote, stays. Needs the write right.
/// Returns the head sequence.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn undo_author(
    doc: Option<&str>,
    author: Option<&str>,
    after: Option<i64>,
    upto: default!(Option<i64>, "NULL"),
    field: default!(Option<&str>, "'content'"),
) -> i64 {
    (|| {
        let name = doc_name(doc)?;
        let author = required(author, "author")?;
        let after = required(after, "after")?;
        let field = field_name(field)?;
        rights::require(name, Right::Write)?;
        let ids = rights::as_owner(|| {
            let upto = match upto {
                Some(u) => u,
                None => storage::find(name)?.map_or(0, |r| r.head_seq),
            };
            inserted_by(name, author, after, upto)
        })?;
        let origin = format!("undo {author}");
        let nesting = guc::max_nesting();
        write(name, Some(&origin), |cur, _| {
            let chunks = authorship::chunks(cur, name, field, nesting)?;
            let ranges = authorship::ranges_of(&chunks, &ids);
            Ok(authorship::delete_ranges(cur, field, &ranges)?.map(Batch::from))
        })
    })()
    .or_raise()
}
