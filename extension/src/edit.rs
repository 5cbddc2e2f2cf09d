//! SQL text edits turned into Yjs updates: insert and delete at character positions (counted
//! like PostgreSQL's `length()`, stored as Yjs' UTF-16 offsets) and `set_text`, which writes
//! only the difference so that concurrent edits elsewhere survive. Pure yrs.

use yrs::{Doc, GetString, Text, TextRef, Transact, TransactionMut, WriteTxn};

use crate::content::{root, Root};
use crate::error::{CollabError, Result};
use crate::merge::guarded;

/// Finds (or creates) a text root for writing; other kinds are refused.
fn text_for_write(txn: &mut TransactionMut, doc_name: &str, field: &str) -> Result<TextRef> {
    match root(txn, field) {
        Root::Missing | Root::Empty | Root::Text(_) => Ok(txn.get_or_insert_text(field)),
        other => Err(CollabError::WrongType {
            doc: doc_name.to_string(),
            field: field.to_string(),
            actual: other.kind(),
        }),
    }
}

/// UTF-16 offset of character `pos` in `s`, or None when `pos` is past the end.
fn utf16_offset(s: &str, pos: usize) -> Option<u32> {
    if s.is_ascii() {
        return (pos <= s.len()).then_some(pos as u32);
    }
    let mut offset = 0usize;
    let mut chars = s.chars();
    for _ in 0..pos {
        offset += chars.next()?.len_utf16();
    }
    Some(offset as u32)
}

fn char_count(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

fn out_of_range(what: &str, value: i64, len: usize) -> CollabError {
    CollabError::OutOfRange(format!(
        "{what} {value} is out of range for a text of {len} characters"
    ))
}

/// Runs a local edit and returns the Yjs update it produced (None when nothing changed).
fn edit(
    doc: &Doc,
    doc_name: &str,
    field: &str,
    f: impl FnOnce(&mut TransactionMut, &TextRef) -> Result<()>,
) -> Result<Option<Vec<u8>>> {
    let outcome = guarded(|| -> Result<Option<Vec<u8>>> {
        let mut txn = doc.transact_mut();
        let text = text_for_write(&mut txn, doc_name, field)?;
        f(&mut txn, &text)?;
        let update = txn.encode_update_v1();
        // An update with no structs and no deletions is two zero bytes.
        Ok((update.len() > 2 || update.iter().any(|b| *b != 0)).then_some(update))
    });
    outcome.unwrap_or_else(|panic| Err(CollabError::Internal(panic)))
}

/// Inserts `value` at character `position` of text field `field`.
pub fn insert_text(
    doc: &Doc,
    doc_name: &str,
    field: &str,
    position: i64,
    value: &str,
) -> Result<Option<Vec<u8>>> {
    edit(doc, doc_name, field, |txn, text| {
        let current = text.get_string(txn);
        let len = char_count(&current);
        let at = usize::try_from(position)
            .ok()
            .and_then(|p| utf16_offset(&current, p))
            .ok_or_else(|| out_of_range("position", position, len))?;
        if !value.is_empty() {
            text.insert(txn, at, value);
        }
        Ok(())
    })
}

/// Deletes `length` characters from character `position` of text field `field`.
pub fn delete_text(
    doc: &Doc,
    doc_name: &str,
    field: &str,
    position: i64,
    length: i64,
) -> Result<Option<Vec<u8>>> {
    edit(doc, doc_name, field, |txn, text| {
        let current = text.get_string(txn);
        let len = char_count(&current);
        let start_chars = usize::try_from(position)
            .ok()
            .filter(|p| *p <= len)
            .ok_or_else(|| out_of_range("position", position, len))?;
        let count = usize::try_from(length)
            .ok()
            .filter(|n| start_chars + *n <= len)
            .ok_or_else(|| out_of_range("length", length, len - start_chars))?;
        if count > 0 {
            let start = utf16_offset(&current, start_chars)
                .ok_or_else(|| out_of_range("position", position, len))?;
            let end = utf16_offset(&current, start_chars + count)
                .ok_or_else(|| out_of_range("length", length, len))?;
            text.remove_range(txn, start, end - start);
        }
        Ok(())
    })
}

/// Replaces the text of `field` with `new_text` by writing only the difference, so concurrent
/// edits to the parts that did not change survive the merge.
pub fn set_text(doc: &Doc, doc_name: &str, field: &str, new_text: &str) -> Result<Option<Vec<u8>>> {
    edit(doc, doc_name, field, |txn, text| {
        let old = text.get_string(txn);
        if old == new_text {
            return Ok(());
        }
        // UTF-16 offset of every character boundary of the old text.
        let mut offsets = Vec::with_capacity(old.len() + 1);
        let mut acc = 0u32;
        offsets.push(0);
        for c in old.chars() {
            acc += c.len_utf16() as u32;
            offsets.push(acc);
        }
        let new_chars: Vec<char> = new_text.chars().collect();
        let diff = similar::TextDiff::configure()
            .algorithm(similar::Algorithm::Myers)
            .timeout(std::time::Duration::from_millis(200))
            .diff_chars(old.as_str(), new_text);
        // Apply from the end so earlier offsets stay valid.
        for op in diff.ops().iter().rev() {
            let (_, old_range, new_range) = op.as_tag_tuple();
            if old_range.is_empty() && new_range.is_empty() {
                continue;
            }
            let start = offsets[old_range.start];
            let end = offsets[old_range.end];
            match op.tag() {
                similar::DiffTag::Equal => {}
                _ => {
                    if end > start {
                        text.remove_range(txn, start, end - start);
                    }
                    if !new_range.is_empty() {
                        let inserted: String = new_chars[new_range].iter().collect();
                        text.insert(txn, start, &inserted);
                    }
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::read_text;
    use crate::merge::testing::*;
    use crate::merge::{new_doc, state};

    #[test]
    fn only_text_roots_are_edited() {
        let (_, bytes) = update_from(|d| {
            let a = d.get_or_insert_array("list");
            yrs::Array::push_back(&a, &mut d.transact_mut(), 1.0);
        });
        let doc = load("d", Some(&bytes), []).expect("loads");
        assert!(matches!(
            insert_text(&doc, "d", "list", 0, "x"),
            Err(CollabError::WrongType {
                actual: "array",
                ..
            })
        ));
    }

    #[test]
    fn text_edits_count_code_points_and_produce_updates() {
        let doc = new_doc();
        insert_text(&doc, "d", "content", 0, "a😀c").expect("insert");
        let u = insert_text(&doc, "d", "content", 2, "b").expect("insert");
        assert!(u.is_some());
        assert_eq!(read_text(&doc, "d", "content").expect("t"), "a😀bc");
        delete_text(&doc, "d", "content", 1, 1).expect("delete");
        assert_eq!(read_text(&doc, "d", "content").expect("t"), "abc");
        assert!(matches!(
            insert_text(&doc, "d", "content", 4, "x"),
            Err(CollabError::OutOfRange(_))
        ));
        assert!(insert_text(&doc, "d", "content", -1, "x").is_err());
        assert!(delete_text(&doc, "d", "content", 1, 3).is_err());
        assert!(delete_text(&doc, "d", "content", 3, 0)
            .expect("no-op")
            .is_none());
    }

    #[test]
    fn set_text_keeps_concurrent_edits_elsewhere() {
        let a = new_doc();
        insert_text(&a, "d", "content", 0, "The quick brown fox").expect("insert");
        let b = load("d", Some(&state(&a)), []).expect("copy");
        // a: SQL rewrites the first word; b: concurrently appends at the end.
        let ua = set_text(&a, "d", "content", "A quick brown fox")
            .expect("set")
            .expect("changed");
        let ub = insert_text(&b, "d", "content", 19, " jumps")
            .expect("ins")
            .expect("changed");
        apply_stored(&a, "d", [ub.as_slice()]).expect("merge");
        apply_stored(&b, "d", [ua.as_slice()]).expect("merge");
        let ta = read_text(&a, "d", "content").expect("t");
        assert_eq!(ta, "A quick brown fox jumps");
        assert_eq!(ta, read_text(&b, "d", "content").expect("t"));
        assert!(set_text(&a, "d", "content", &ta).expect("same").is_none());
    }

    #[test]
    fn cleared_text_stays_writable_after_reload() {
        let a = new_doc();
        insert_text(&a, "d", "content", 0, "gone").expect("insert");
        delete_text(&a, "d", "content", 0, 4).expect("delete");
        let b = load("d", Some(&state(&a)), []).expect("reload");
        assert_eq!(read_text(&b, "d", "content").expect("t"), "");
        insert_text(&b, "d", "content", 0, "back").expect("writable");
        assert_eq!(read_text(&b, "d", "content").expect("t"), "back");
    }
}
