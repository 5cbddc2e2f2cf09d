//! Writes: Yjs updates from clients, and text edits made in SQL.

use std::borrow::Cow;

use pgrx::prelude::*;

use super::{check_author, doc_name, field_name, guarded, write, Batch};
use crate::error::{required, CollabError, OrRaise, Result};
use crate::rights::Right;
use crate::{edit, guc, merge, storage};

/// Validates, integrates and appends a batch under one lock, one sequence range and one
/// notification. Returns the last sequence assigned.
fn apply<'a>(
    name: &str,
    updates: Vec<&'a [u8]>,
    origin: Option<&str>,
    authors: Vec<Option<&'a str>>,
) -> Result<i64> {
    let limit = guc::max_update_bytes();
    let nesting = guc::max_nesting();
    // Before the lock: malformed or oversized input costs no lock and no document load.
    let decoded = merge::decode_batch(&updates, limit, nesting)?;
    write(name, origin, |doc, depths| {
        // The update must integrate into the current document before it is stored: one that
        // makes yrs fail, or nests too deep in it, would make the document unreadable.
        let combined = merge::integrate(doc, depths, &updates, decoded, name, nesting)?;
        Ok(Some(Batch {
            updates: updates.into_iter().map(Cow::Borrowed).collect(),
            combined,
            local: false,
            authors,
        }))
    })
}

/// Appends one Yjs v1 update to document `doc` (created on first write); returns its sequence.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn apply_update(
    doc: Option<&str>,
    update: Option<&[u8]>,
    origin: default!(Option<&str>, "NULL"),
) -> i64 {
    (|| {
        let name = doc_name(doc)?;
        let update = required(update, "update")?;
        apply(name, vec![update], origin, Vec::new())
    })()
    .or_raise()
}

/// Appends a batch of updates with one lock, one sequence range and one notification; returns
/// the last sequence assigned (the first is that minus the batch length, plus one).
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn apply_updates(
    doc: Option<&str>,
    updates: Option<Array<&[u8]>>,
    origin: default!(Option<&str>, "NULL"),
) -> i64 {
    (|| {
        let name = doc_name(doc)?;
        let updates = required(updates, "updates")?;
        let batch = batch_of(&updates)?;
        apply(name, batch, origin, Vec::new())
    })()
    .or_raise()
}

/// The elements of `updates`, borrowed from the argument (they live for the whole call).
fn batch_of<'a>(updates: &'a Array<'_, &[u8]>) -> Result<Vec<&'a [u8]>> {
    let mut batch = Vec::with_capacity(updates.len());
    for u in updates.iter() {
        batch.push(u.ok_or(CollabError::Null("an element of updates"))?);
    }
    if batch.is_empty() {
        return Err(CollabError::OutOfRange(
            "updates must hold at least one update".into(),
        ));
    }
    Ok(batch)
}

/// `apply_updates` with the author of each update (the bridge passes its clients' token
/// subjects): `authors[i]` is recorded with `updates[i]`; a NULL element, the writer's default
/// author (`collab.author`, else the SQL role). The three-argument form stays for older bridges.
#[pg_extern(name = "apply_updates")]
#[search_path(pg_catalog, pg_temp)]
fn apply_updates_by(
    doc: Option<&str>,
    updates: Option<Array<&[u8]>>,
    origin: Option<&str>,
    authors: Option<Array<&str>>,
) -> i64 {
    (|| {
        let name = doc_name(doc)?;
        let updates = required(updates, "updates")?;
        let batch = batch_of(&updates)?;
        let authors = required(authors, "authors")?;
        if authors.len() != batch.len() {
            return Err(CollabError::InvalidArgument(format!(
                "authors must have one element per update: {} updates, {} authors",
                batch.len(),
                authors.len()
            )));
        }
        let mut names = Vec::with_capacity(batch.len());
        for a in authors.iter() {
            if let Some(a) = a {
                check_author(a)?;
            }
            names.push(a);
        }
        apply(name, batch, origin, names)
    })()
    .or_raise()
}

/// Inserts `value` at character `position` (0-based, counted like `length()`) of text field
/// `field`. Returns the document's head sequence.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn insert_text(
    doc: Option<&str>,
    field: Option<&str>,
    position: Option<i32>,
    value: Option<&str>,
) -> i64 {
    (|| {
        let name = doc_name(doc)?;
        let field = field_name(field)?;
        let position = required(position, "position")?;
        let value = required(value, "text")?;
        write(name, None, |d, _| {
            Ok(edit::insert_text(d, name, field, i64::from(position), value)?.map(Batch::from))
        })
    })()
    .or_raise()
}

/// Deletes `length` characters from character `position` of text field `field`.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn delete_text(
    doc: Option<&str>,
    field: Option<&str>,
    position: Option<i32>,
    length: Option<i32>,
) -> i64 {
    (|| {
        let name = doc_name(doc)?;
        let field = field_name(field)?;
        let position = required(position, "position")?;
        let length = required(length, "length")?;
        write(name, None, |d, _| {
            Ok(
                edit::delete_text(d, name, field, i64::from(position), i64::from(length))?
                    .map(Batch::from),
            )
        })
    })()
    .or_raise()
}

/// Makes text field `field` read `new_text`, writing only the difference.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn set_text(doc: Option<&str>, field: Option<&str>, new_text: Option<&str>) -> i64 {
    (|| {
        let name = doc_name(doc)?;
        let field = field_name(field)?;
        let new_text = required(new_text, "new_text")?;
        write(name, None, |d, _| {
            Ok(edit::set_text(d, name, field, new_text)?.map(Batch::from))
        })
    })()
    .or_raise()
}

/// Deletes a document, its log and its checkpoints. Returns whether it existed.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn delete_document(doc: Option<&str>) -> bool {
    (|| {
        let name = doc_name(doc)?;
        guarded(name, Right::Admin, || storage::delete(name))
    })()
    .or_raise()
}
