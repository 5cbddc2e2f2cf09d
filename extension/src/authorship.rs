//! Who wrote what: which author inserted each character of a text root, and which characters
//! one author inserted (for undoing them). Pure yrs.
//!
//! Every Yjs item has an id (client, clock); each stored update inserts ranges of clocks of
//! some clients, and the log records the update's author. So the author of a character is the
//! author of the first update (lowest sequence) that carried its id. Ids, not client ids alone,
//! because one client id can write for several authors: a PostgreSQL backend's cached document
//! is one Yjs peer for every role that writes through that backend.

use std::collections::{BTreeMap, HashMap};

use yrs::types::text::{ChangeKind, YChange};
use yrs::{Any, Doc, IdSet, Out, ReadTxn, Snapshot, Text, Transact, ID};

use crate::content::{self, Root};
use crate::error::{CollabError, Result};
use crate::merge;

/// The authors of the clock ranges the log's updates inserted.
#[derive(Default)]
pub struct Authorship {
    authors: Vec<Option<String>>,
    /// Per client: range start → (range end, index in `authors`), first writer kept.
    ranges: HashMap<u64, BTreeMap<u32, (u32, usize)>>,
}

impl Authorship {
    /// Records that `update` (one stored log row) was written by `author`. Rows must come in
    /// sequence order: an id already recorded keeps its first author (re-sent updates repeat
    /// ids).
    pub fn add(&mut self, update: &[u8], author: Option<String>, nesting: u32) -> Result<()> {
        let decoded = merge::decode_update(update, usize::MAX, nesting)?;
        let index = self.authors.len();
        self.authors.push(author);
        for (client, ranges) in decoded.insertions(true).iter() {
            let map = self.ranges.entry(client.get()).or_default();
            for r in ranges.iter() {
                if lookup_in(map, r.start).is_none() {
                    map.insert(r.start, (r.end, index));
                }
            }
        }
        Ok(())
    }

    /// The author of id (client, clock) and the clock where that author's range ends.
    fn author_of(&self, client: u64, clock: u32) -> (Option<&str>, u32) {
        match self.ranges.get(&client).and_then(|m| lookup_in(m, clock)) {
            Some((end, i)) => (self.authors[i].as_deref(), end),
            None => (None, clock + 1),
        }
    }
}

/// The range (end, author index) of `map` holding `clock`.
fn lookup_in(map: &BTreeMap<u32, (u32, usize)>, clock: u32) -> Option<(u32, usize)> {
    map.range(..=clock)
        .next_back()
        .filter(|(_, (end, _))| *end > clock)
        .map(|(_, v)| *v)
}

/// A run of the current text written by one author.
#[derive(Debug, PartialEq)]
pub struct Span {
    /// Character position (counted like `length()`) and length.
    pub start: i64,
    pub length: i64,
    /// None: written before authors were recorded, or in pruned history.
    pub author: Option<String>,
    pub text: String,
}

/// A visible run of characters of a text root with the id of its first character.
pub struct Chunk {
    pub id: ID,
    pub text: String,
}

/// The text root `field` of `doc` as runs of characters with their ids (embeds skipped, as in
/// `collab.text`). Works on a copy: yrs splits items to report ids, which must not touch the
/// cached document.
pub fn chunks(doc: &Doc, doc_name: &str, field: &str, nesting: u32) -> Result<Vec<Chunk>> {
    let state = merge::state(doc);
    let (copy, _) = merge::load(doc_name, Some(&state), std::iter::empty(), nesting)?;
    merge::guarded(|| {
        let mut txn = copy.transact_mut();
        let hi = txn.snapshot();
        let lo = Snapshot::default();
        let diff = match content::root(&txn, field) {
            Root::Missing | Root::Empty => Vec::new(),
            Root::Text(t) => t.diff_range(&mut txn, Some(&hi), Some(&lo), YChange::identity),
            Root::XmlText(t) => t.diff_range(&mut txn, Some(&hi), Some(&lo), YChange::identity),
            other => {
                return Err(CollabError::WrongType {
                    doc: doc_name.to_string(),
                    field: field.to_string(),
                    actual: other.kind(),
                })
            }
        };
        Ok(diff
            .into_iter()
            .filter_map(|d| match (d.insert, d.ychange) {
                (
                    Out::Any(Any::String(s)),
                    Some(YChange {
                        kind: ChangeKind::Added,
                        id,
                    }),
                ) => Some(Chunk {
                    id,
                    text: s.to_string(),
                }),
                _ => None,
            })
            .collect())
    })
    .map_err(CollabError::Internal)?
}

/// Who wrote each run of the current text of `field`, adjacent runs of one author merged.
pub fn spans(chunks: &[Chunk], who: &Authorship) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    let mut pos = 0i64;
    for chunk in chunks {
        let client = chunk.id.client.get();
        let mut clock = chunk.id.clock;
        let (mut author, mut end) = who.author_of(client, clock);
        for c in chunk.text.chars() {
            if clock >= end {
                (author, end) = who.author_of(client, clock);
            }
            match out.last_mut() {
                Some(last) if last.author.as_deref() == author => {
                    last.length += 1;
                    last.text.push(c);
                }
                _ => out.push(Span {
                    start: pos,
                    length: 1,
                    author: author.map(str::to_string),
                    text: c.to_string(),
                }),
            }
            pos += 1;
            clock += c.len_utf16() as u32;
        }
    }
    out
}

/// The UTF-16 ranges (start, length) of the current text whose characters have ids in
/// `inserted`, from the end backwards (so they can be deleted in that order).
pub fn ranges_of(chunks: &[Chunk], inserted: &IdSet) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut offset = 0u32;
    for chunk in chunks {
        let mut clock = chunk.id.clock;
        for c in chunk.text.chars() {
            let n = c.len_utf16() as u32;
            if inserted.contains(&ID::new(chunk.id.client, clock)) {
                match out.last_mut() {
                    Some((start, len)) if *start + *len == offset => *len += n,
                    _ => out.push((offset, n)),
                }
            }
            offset += n;
            clock += n;
        }
    }
    out.reverse();
    out
}

/// The ids an update inserted (including ones deleted since).
pub fn insertions(update: &[u8], nesting: u32) -> Result<IdSet> {
    Ok(merge::decode_update(update, usize::MAX, nesting)?.insertions(true))
}

/// Deletes the UTF-16 `ranges` (from the end backwards) of text root `field`; the update.
pub fn delete_ranges(doc: &Doc, field: &str, ranges: &[(u32, u32)]) -> Result<Option<Vec<u8>>> {
    if ranges.is_empty() {
        return Ok(None);
    }
    merge::guarded(|| {
        let mut txn = doc.transact_mut();
        let text = match content::root(&txn, field) {
            Root::Text(t) => t,
            _ => return None,
        };
        for (start, len) in ranges {
            text.remove_range(&mut txn, *start, *len);
        }
        Some(txn.encode_update_v1())
    })
    .map_err(CollabError::Internal)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Update, WriteTxn};

    fn edit(doc: &Doc, f: impl FnOnce(&mut yrs::TransactionMut, &yrs::TextRef)) -> Vec<u8> {
        let mut txn = doc.transact_mut();
        let t = txn.get_or_insert_text("content");
        f(&mut txn, &t);
        txn.encode_update_v1()
    }

    #[test]
    fn each_character_is_attributed_to_the_update_that_inserted_it() {
        let ada = merge::new_doc();
        let u1 = edit(&ada, |txn, t| t.insert(txn, 0, "Hello world"));
        let grace = merge::new_doc();
        grace
            .transact_mut()
            .apply_update(Update::decode_v1(&u1).unwrap())
            .unwrap();
        let u2 = edit(&grace, |txn, t| t.insert(txn, 5, ", dear"));
        // The same client id (one backend's document) writing for someone else.
        let u3 = edit(&grace, |txn, t| t.insert(txn, 17, "!"));
        let mut who = Authorship::default();
        who.add(&u1, Some("ada".into()), 512).unwrap();
        who.add(&u2, Some("grace".into()), 512).unwrap();
        who.add(&u3, None, 512).unwrap();
        let chunks = chunks(&grace, "d", "content", 512).unwrap();
        let got: Vec<(String, Option<String>)> = spans(&chunks, &who)
            .into_iter()
            .map(|s| (s.text, s.author))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Hello".into(), Some("ada".into())),
                (", dear".into(), Some("grace".into())),
                (" world".into(), Some("ada".into())),
                ("!".into(), None),
            ]
        );
        // Undo grace's insertion only.
        let ranges = ranges_of(&chunks, &insertions(&u2, 512).unwrap());
        assert_eq!(ranges, vec![(5, 6)]);
        delete_ranges(&grace, "content", &ranges).unwrap().unwrap();
        let text = grace.transact().get_text("content").unwrap();
        assert_eq!(text.get_string(&grace.transact()), "Hello world!");
    }
}
