//! The SQL surface: thin `#[pg_extern]` wrappers that check arguments, run the operation and
//! raise errors with their SQLSTATE. Each function is documented with `COMMENT ON` in
//! `sql/comments.sql`.

mod admin;
mod attribution;
mod history;
mod info;
mod read;
mod restore;
mod search;
mod write;

use std::borrow::Cow;

use yrs::Doc;

use crate::cache;
use crate::depth::Depths;
use crate::error::{required, CollabError, Result};
use crate::guc;
use crate::merge;
use crate::rights::{self, Right};
use crate::storage;

/// A non-NULL, valid document name.
fn doc_name(doc: Option<&str>) -> Result<&str> {
    let name = required(doc, "document name")?;
    merge::validate_name(name)?;
    Ok(name)
}

fn field_name(field: Option<&str>) -> Result<&str> {
    let field = required(field, "field")?;
    merge::validate_field(field)?;
    Ok(field)
}

/// Whether a cached document is still sound after an operation failed with `e`: argument
/// errors leave it untouched, anything that may have happened inside yrs does not.
fn still_sound(e: &CollabError) -> bool {
    matches!(
        e,
        CollabError::OutOfRange(_) | CollabError::WrongType { .. } | CollabError::InvalidField(_)
    )
}

/// Checks the caller's right on `name`, then runs `f` as the owner of the tables.
fn guarded<T>(name: &str, right: Right, f: impl FnOnce() -> Result<T>) -> Result<T> {
    rights::require(name, right)?;
    rights::as_owner(f)
}

/// Runs `f` on the current committed (or this transaction's) document. A document that was
/// never written reads as empty, as a fresh Yjs room does.
fn read<T>(name: &str, f: impl FnOnce(&Doc) -> Result<T>) -> Result<T> {
    guarded(name, Right::Read, || read_unchecked(name, f))
}

fn read_unchecked<T>(name: &str, f: impl FnOnce(&Doc) -> Result<T>) -> Result<T> {
    let Some(row) = storage::find(name)? else {
        return f(&merge::new_doc());
    };
    let entry = storage::open(&row)?;
    let out = f(&entry.doc);
    if out.as_ref().err().is_none_or(still_sound) {
        cache::put(entry);
    }
    out
}

/// What a write appends: the updates (one log row each) and, when the writer has it, the
/// same change as one update for the notification. Client updates are borrowed from the SQL
/// arguments (no copy on the ingest path); SQL edits own theirs.
struct Batch<'a> {
    updates: Vec<Cow<'a, [u8]>>,
    combined: Option<Vec<u8>>,
    /// Made by an SQL edit on the document: its structs are added to the depth tracker after
    /// the fact (an edit of a text never nests anything). Client updates are checked before.
    local: bool,
    /// Who made each update (`None`, or a shorter list: the writer's default author).
    authors: Vec<Option<&'a str>>,
}

impl From<Vec<u8>> for Batch<'_> {
    fn from(update: Vec<u8>) -> Self {
        Batch {
            updates: vec![Cow::Owned(update)],
            combined: None,
            local: true,
            authors: Vec::new(),
        }
    }
}

/// Longest author name accepted, in characters (token subjects, role names, app user ids).
const MAX_AUTHOR_CHARS: usize = 255;

/// An author name as recorded: 1-255 characters, no control characters.
fn check_author(author: &str) -> Result<()> {
    let n = author.chars().count();
    if n == 0 || n > MAX_AUTHOR_CHARS || author.chars().any(char::is_control) {
        return Err(CollabError::InvalidArgument(format!(
            "an author must be 1 to {MAX_AUTHOR_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

/// Who the current writer is when it names nobody: `collab.author` if the application set it,
/// else the SQL role. Taken before the switch to the table owner.
fn default_author() -> Result<String> {
    match guc::author() {
        Some(a) => {
            check_author(&a)?;
            Ok(a)
        }
        None => Ok(rights::caller_name()),
    }
}

/// Runs `f` on the locked (and, on first write, created) document; the batch it returns is
/// appended and notified. Returns the document's head sequence afterwards.
fn write<'a>(
    name: &str,
    origin: Option<&str>,
    f: impl FnOnce(&Doc, &mut Depths) -> Result<Option<Batch<'a>>>,
) -> Result<i64> {
    rights::require(name, Right::Write)?;
    let author = default_author()?;
    rights::as_owner(|| write_unchecked(name, origin, &author, f))
}

fn write_unchecked<'a>(
    name: &str,
    origin: Option<&str>,
    author: &str,
    f: impl FnOnce(&Doc, &mut Depths) -> Result<Option<Batch<'a>>>,
) -> Result<i64> {
    // Before the guard view check, which on a standby fails first with XX000 (#14).
    storage::writable(name)?;
    crate::guard::ensure()?;
    let mut row = storage::lock(name, true)?
        .ok_or_else(|| CollabError::Internal("document row vanished".into()))?;
    let mut entry = storage::open(&row)?;
    let batch = match f(&entry.doc, &mut entry.depths) {
        Ok(Some(batch)) => batch,
        Ok(None) => {
            cache::put(entry);
            return Ok(row.head_seq);
        }
        Err(e) => {
            if still_sound(&e) {
                cache::put(entry);
            }
            return Err(e);
        }
    };
    if batch.local {
        for u in &batch.updates {
            merge::track(&mut entry.depths, u, guc::max_nesting())?;
        }
    }
    entry.dirty = true;
    cache::mark_written(entry.doc_id);
    entry.encoded_bytes += batch.updates.iter().map(|u| u.len()).sum::<usize>();
    let updates: Vec<&[u8]> = batch.updates.iter().map(|u| &**u).collect();
    let seq = storage::append(
        &mut row,
        &updates,
        batch.combined.as_deref(),
        origin,
        author,
        &batch.authors,
    )?;
    entry.seq = seq;
    storage::maybe_compact(&mut row, &entry)?;
    // The searchable text follows every write, in the same transaction (see search.rs).
    let indexed = search::after_write(&row, &entry.doc);
    cache::put(entry);
    indexed?;
    Ok(seq)
}
