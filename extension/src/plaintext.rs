//! The plain text of a document for full-text search: every text root, and the text inside
//! every XML root (ProseMirror/Tiptap), without formatting or tags. Pure yrs; walked with an
//! explicit stack and cut at a size, so a hostile document costs bounded time and memory.

use yrs::types::text::YChange;
use yrs::{Any, Doc, Out, ReadTxn, Text, Transact, XmlFragment, XmlOut};

use crate::content::{self, Root};
use crate::error::{CollabError, Result};
use crate::merge;

/// Most bytes of text indexed per document. PostgreSQL refuses a tsvector over 1 MB; 256 kB of
/// text stays well under it whatever the words, and is about 100 pages.
pub const MAX_BYTES: usize = 256 * 1024;

/// Appends the characters of a text (its string chunks, not embeds or formatting).
fn push_text<T: Text, R: ReadTxn>(out: &mut String, txn: &R, text: &T) {
    for chunk in text.diff(txn, YChange::identity) {
        if let Out::Any(Any::String(s)) = chunk.insert {
            out.push_str(&s);
        }
    }
}

/// Appends the text content of an XML node and its descendants; blocks end with a newline so
/// that words of two paragraphs do not run together.
fn push_xml<R: ReadTxn>(out: &mut String, txn: &R, node: XmlOut, limit: usize) {
    let mut stack = vec![(node, false)];
    let mut visited = 0usize;
    while let Some((node, closing)) = stack.pop() {
        if out.len() >= limit {
            return;
        }
        visited += 1;
        if visited.is_multiple_of(merge::INTERRUPT_EVERY) {
            merge::interrupt_point();
        }
        match node {
            XmlOut::Text(t) => push_text(out, txn, &t),
            XmlOut::Element(_) if closing => {
                if !out.ends_with('\n') && !out.is_empty() {
                    out.push('\n');
                }
            }
            XmlOut::Element(e) => {
                let children: Vec<XmlOut> = e.children(txn).collect();
                stack.push((XmlOut::Element(e), true));
                stack.extend(children.into_iter().rev().map(|c| (c, false)));
            }
            XmlOut::Fragment(f) => {
                let children: Vec<XmlOut> = f.children(txn).collect();
                stack.extend(children.into_iter().rev().map(|c| (c, false)));
            }
        }
    }
}

/// Cuts `s` to at most `limit` bytes at a character boundary.
fn truncate(s: &mut String, limit: usize) {
    if s.len() > limit {
        let mut cut = limit;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// The document's searchable text: its text and XML roots in name order, separated by blank
/// lines, at most [`MAX_BYTES`]. Map and array roots hold data, not prose, and are left out.
pub fn of(doc: &Doc) -> Result<String> {
    merge::guarded(|| {
        let txn = doc.transact();
        let mut names: Vec<String> = txn.root_refs().map(|(n, _)| n.to_string()).collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            if out.len() >= MAX_BYTES {
                break;
            }
            let before = out.len();
            if before > 0 {
                out.push_str("\n\n");
            }
            match content::root(&txn, &name) {
                Root::Text(t) => push_text(&mut out, &txn, &t),
                Root::XmlText(t) => push_text(&mut out, &txn, &t),
                Root::Xml(x) => push_xml(&mut out, &txn, XmlOut::Fragment(x), MAX_BYTES),
                _ => {}
            }
            if out.len() == before + 2 || (before == 0 && out.is_empty()) {
                out.truncate(before);
            }
        }
        truncate(&mut out, MAX_BYTES);
        out.trim_end().to_string()
    })
    .map_err(CollabError::Internal)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use yrs::{Map, WriteTxn, XmlElementPrelim, XmlTextPrelim};

    #[test]
    fn text_and_xml_roots_are_searchable_without_tags_or_maps() {
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            let t = txn.get_or_insert_text("content");
            t.insert(&mut txn, 0, "Hello world");
            let x = txn.get_or_insert_xml_fragment("prosemirror");
            let p = x.insert(&mut txn, 0, XmlElementPrelim::empty("paragraph"));
            p.insert(&mut txn, 0, XmlTextPrelim::new("first paragraph"));
            let p2 = x.insert(&mut txn, 1, XmlElementPrelim::empty("heading"));
            p2.insert(&mut txn, 0, XmlTextPrelim::new("second"));
            let m = txn.get_or_insert_map("meta");
            m.insert(&mut txn, "title", "not indexed");
        }
        let text = of(&doc).unwrap();
        assert_eq!(text, "Hello world\n\nfirst paragraph\nsecond");
        assert!(!text.contains("paragraph>"));
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            let t = txn.get_or_insert_text("content");
            t.insert(&mut txn, 0, &"é".repeat(MAX_BYTES));
        }
        let text = of(&doc).unwrap();
        assert!(text.len() <= MAX_BYTES && text.len() > MAX_BYTES - 4);
    }
}
