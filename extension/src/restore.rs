//! Restoring an earlier version as one new update. Pure yrs.
//!
//! A CRDT cannot take items back, so a restore is an ordinary edit of the current document that
//! makes every root read as it did at the old version, changing as little as it can so that
//! concurrent editors' work in the unchanged parts survives the merge:
//! - text roots: a diff of characters *with their formatting* (and embeds): characters equal in
//!   both versions are kept (same items), the others deleted or inserted anew;
//! - XML roots (ProseMirror/Tiptap): a diff of the top-level blocks by their XML: unchanged
//!   blocks are kept, changed ones replaced by a copy of the old block;
//! - map roots: every key set back to a copy of its old value (only keys whose value differs),
//!   keys added since removed;
//! - array roots: a diff of the elements by value;
//! - roots absent or empty at the old version are emptied.
//!
//! Shared types embedded in a text (rare; y-quill embeds plain values) are not restored.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use similar::{Algorithm, DiffOp};
use yrs::types::text::YChange;
use yrs::types::xml::XmlIn;
use yrs::types::{AsPrelim, Attrs, ToJson};
use yrs::{
    Any, Array, ArrayRef, Doc, Map, MapRef, Out, ReadTxn, Text, Transact, TransactionMut, WriteTxn,
    XmlFragment, XmlFragmentRef, XmlOut,
};

use crate::content::{self, Root};
use crate::error::{CollabError, Result};
use crate::merge;

/// How long a diff may search for the smallest edit before settling for a larger one (the
/// result is still exact, only less minimal).
const DIFF_DEADLINE: Duration = Duration::from_millis(200);

fn hash_of(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn any_json(any: &Any) -> String {
    let mut s = String::new();
    any.to_json(&mut s);
    s
}

fn attrs_json(attrs: Option<&Attrs>) -> String {
    let Some(attrs) = attrs else {
        return String::new();
    };
    let sorted: BTreeSet<(&str, String)> = attrs.iter().map(|(k, v)| (&**k, any_json(v))).collect();
    format!("{sorted:?}")
}

/// One unit of a rich text: a character or an embed, with its formatting.
struct Unit {
    key: (u64, u64),
    utf16: u32,
    value: UnitValue,
    attrs: Option<Attrs>,
}

enum UnitValue {
    Char(char),
    Embed(Any),
    /// A shared type embedded in the text: kept if it stays, never re-created.
    Other,
}

fn units<T: Text, R: ReadTxn>(txn: &R, text: &T) -> Vec<Unit> {
    let mut out = Vec::new();
    for chunk in text.diff(txn, YChange::identity) {
        let attrs = chunk.attributes.map(|a| *a);
        let ak = hash_of(attrs_json(attrs.as_ref()));
        match chunk.insert {
            Out::Any(Any::String(s)) => {
                for c in s.chars() {
                    out.push(Unit {
                        key: (u64::from(c), ak),
                        utf16: c.len_utf16() as u32,
                        value: UnitValue::Char(c),
                        attrs: attrs.clone(),
                    });
                }
            }
            Out::Any(any) => out.push(Unit {
                key: (hash_of(any_json(&any)) | (1 << 63), ak),
                utf16: 1,
                value: UnitValue::Embed(any),
                attrs: attrs.clone(),
            }),
            other => out.push(Unit {
                key: (hash_of(format!("{other:?}")) | (1 << 62), ak),
                utf16: 1,
                value: UnitValue::Other,
                attrs: attrs.clone(),
            }),
        }
    }
    out
}

/// UTF-16 offset of every unit boundary.
fn offsets(units: &[Unit]) -> Vec<u32> {
    let mut out = Vec::with_capacity(units.len() + 1);
    let mut acc = 0u32;
    out.push(0);
    for u in units {
        acc += u.utf16;
        out.push(acc);
    }
    out
}

fn diff_ops<T: Eq + Hash + Ord>(cur: &[T], old: &[T]) -> Vec<DiffOp> {
    similar::capture_diff_slices_deadline(
        Algorithm::Myers,
        cur,
        old,
        Some(Instant::now() + DIFF_DEADLINE),
    )
}

fn restore_text<T: Text>(txn: &mut TransactionMut, cur: &T, old: Vec<Unit>) {
    let now = units(txn, cur);
    let at = offsets(&now);
    let now_keys: Vec<(u64, u64)> = now.iter().map(|u| u.key).collect();
    let old_keys: Vec<(u64, u64)> = old.iter().map(|u| u.key).collect();
    for op in diff_ops(&now_keys, &old_keys).iter().rev() {
        let (tag, cur_range, old_range) = op.as_tag_tuple();
        if tag == similar::DiffTag::Equal {
            continue;
        }
        let start = at[cur_range.start];
        let end = at[cur_range.end];
        if end > start {
            cur.remove_range(txn, start, end - start);
        }
        let mut pos = start;
        let mut run = String::new();
        let mut run_attrs: Option<&Option<Attrs>> = None;
        let flush = |txn: &mut TransactionMut,
                     pos: &mut u32,
                     run: &mut String,
                     a: Option<&Option<Attrs>>| {
            if !run.is_empty() {
                let attrs = a.and_then(|a| a.clone()).unwrap_or_default();
                cur.insert_with_attributes(txn, *pos, run, attrs);
                *pos += run.encode_utf16().count() as u32;
                run.clear();
            }
        };
        for unit in &old[old_range] {
            match &unit.value {
                UnitValue::Char(c) => {
                    if run_attrs.is_some_and(|a| a != &unit.attrs) {
                        flush(txn, &mut pos, &mut run, run_attrs);
                    }
                    run_attrs = Some(&unit.attrs);
                    run.push(*c);
                }
                UnitValue::Embed(any) => {
                    flush(txn, &mut pos, &mut run, run_attrs);
                    let attrs = unit.attrs.clone().unwrap_or_default();
                    cur.insert_embed_with_attributes(txn, pos, any.clone(), attrs);
                    pos += 1;
                }
                UnitValue::Other => {}
            }
        }
        flush(txn, &mut pos, &mut run, run_attrs);
    }
}

fn xml_children<R: ReadTxn>(txn: &R, frag: &XmlFragmentRef) -> Vec<XmlOut> {
    frag.children(txn).collect()
}

fn xml_in<R: ReadTxn>(txn: &R, node: &XmlOut) -> Option<XmlIn> {
    match node {
        XmlOut::Element(e) => Some(XmlIn::from(e.as_prelim(txn))),
        XmlOut::Text(t) => Some(XmlIn::from(t.as_prelim(txn))),
        XmlOut::Fragment(_) => None,
    }
}

fn restore_xml<R: ReadTxn>(
    txn: &mut TransactionMut,
    cur: &XmlFragmentRef,
    old_txn: &R,
    old: &XmlFragmentRef,
) {
    let old_nodes = xml_children(old_txn, old);
    let old_keys: Vec<u64> = old_nodes
        .iter()
        .map(|n| hash_of(content::xml_string(old_txn, n.clone())))
        .collect();
    let now_keys: Vec<u64> = xml_children(txn, cur)
        .into_iter()
        .map(|n| hash_of(content::xml_string(txn, n)))
        .collect();
    for op in diff_ops(&now_keys, &old_keys).iter().rev() {
        let (tag, cur_range, old_range) = op.as_tag_tuple();
        if tag == similar::DiffTag::Equal {
            continue;
        }
        let start = cur_range.start as u32;
        if !cur_range.is_empty() {
            cur.remove_range(txn, start, cur_range.len() as u32);
        }
        let mut pos = start;
        for node in &old_nodes[old_range] {
            if let Some(prelim) = xml_in(old_txn, node) {
                cur.insert(txn, pos, prelim);
                pos += 1;
            }
        }
    }
}

fn restore_map<R: ReadTxn>(txn: &mut TransactionMut, cur: &MapRef, old_txn: &R, old: &MapRef) {
    let old_entries: Vec<(String, Out)> =
        old.iter(old_txn).map(|(k, v)| (k.to_string(), v)).collect();
    let stale: Vec<String> = cur
        .keys(txn)
        .filter(|k| old.get(old_txn, k).is_none())
        .map(str::to_string)
        .collect();
    for k in stale {
        cur.remove(txn, &k);
    }
    for (k, v) in old_entries {
        let same = cur
            .get(txn, &k)
            .is_some_and(|c| c.to_json(txn) == v.to_json(old_txn));
        if !same {
            cur.insert(txn, k, v.as_prelim(old_txn));
        }
    }
}

fn restore_array<R: ReadTxn>(
    txn: &mut TransactionMut,
    cur: &ArrayRef,
    old_txn: &R,
    old: &ArrayRef,
) {
    let old_items: Vec<Out> = old.iter(old_txn).collect();
    let old_keys: Vec<u64> = old_items
        .iter()
        .map(|v| hash_of(any_json(&v.to_json(old_txn))))
        .collect();
    let now_keys: Vec<u64> = cur
        .iter(txn)
        .map(|v| hash_of(any_json(&v.to_json(txn))))
        .collect();
    for op in diff_ops(&now_keys, &old_keys).iter().rev() {
        let (tag, cur_range, old_range) = op.as_tag_tuple();
        if tag == similar::DiffTag::Equal {
            continue;
        }
        let start = cur_range.start as u32;
        if !cur_range.is_empty() {
            cur.remove_range(txn, start, cur_range.len() as u32);
        }
        for (i, v) in old_items[old_range].iter().enumerate() {
            cur.insert(txn, start + i as u32, v.as_prelim(old_txn));
        }
    }
}

/// Empties a root that was absent or empty at the old version.
fn clear(txn: &mut TransactionMut, root: Root) {
    match root {
        Root::Text(t) => {
            let n = t.len(txn);
            if n > 0 {
                t.remove_range(txn, 0, n);
            }
        }
        Root::XmlText(t) => {
            let n = t.len(txn);
            if n > 0 {
                t.remove_range(txn, 0, n);
            }
        }
        Root::Xml(x) => {
            let n = x.len(txn);
            if n > 0 {
                x.remove_range(txn, 0, n);
            }
        }
        Root::Map(m) => m.clear(txn),
        Root::Array(a) => {
            let n = a.len(txn);
            if n > 0 {
                a.remove_range(txn, 0, n);
            }
        }
        Root::Missing | Root::Empty | Root::Other(_) => {}
    }
}

fn mismatch(doc_name: &str, field: &str, then: &Root, now: &Root) -> CollabError {
    CollabError::WrongType {
        doc: doc_name.to_string(),
        field: field.to_string(),
        actual: if matches!(now, Root::Missing | Root::Empty) {
            then.kind()
        } else {
            now.kind()
        },
    }
}

/// The update that makes `cur` read like `old` in every root (None when they already do).
pub fn restore(cur: &Doc, old: &Doc, doc_name: &str) -> Result<Option<Vec<u8>>> {
    let outcome = merge::guarded(|| -> Result<Option<Vec<u8>>> {
        let old_txn = old.transact();
        let mut txn = cur.transact_mut();
        let mut names: BTreeSet<String> = old_txn.root_refs().map(|(n, _)| n.to_string()).collect();
        names.extend(txn.root_refs().map(|(n, _)| n.to_string()));
        for name in &names {
            let then = content::root(&old_txn, name);
            let now = content::root(&txn, name);
            let open = matches!(now, Root::Missing | Root::Empty);
            match then {
                Root::Missing | Root::Empty => clear(&mut txn, now),
                Root::Text(ref t) => {
                    let old_units = units(&old_txn, t);
                    match now {
                        Root::Text(c) => restore_text(&mut txn, &c, old_units),
                        _ if open => {
                            let c = txn.get_or_insert_text(name.as_str());
                            restore_text(&mut txn, &c, old_units)
                        }
                        _ => return Err(mismatch(doc_name, name, &then, &now)),
                    }
                }
                Root::XmlText(ref t) => match now {
                    Root::XmlText(c) => restore_text(&mut txn, &c, units(&old_txn, t)),
                    _ => return Err(mismatch(doc_name, name, &then, &now)),
                },
                Root::Xml(ref x) => match now {
                    Root::Xml(c) => restore_xml(&mut txn, &c, &old_txn, x),
                    _ if open => {
                        let c = txn.get_or_insert_xml_fragment(name.as_str());
                        restore_xml(&mut txn, &c, &old_txn, x)
                    }
                    _ => return Err(mismatch(doc_name, name, &then, &now)),
                },
                Root::Map(ref m) => match now {
                    Root::Map(c) => restore_map(&mut txn, &c, &old_txn, m),
                    _ if open => {
                        let c = txn.get_or_insert_map(name.as_str());
                        restore_map(&mut txn, &c, &old_txn, m)
                    }
                    _ => return Err(mismatch(doc_name, name, &then, &now)),
                },
                Root::Array(ref a) => match now {
                    Root::Array(c) => restore_array(&mut txn, &c, &old_txn, a),
                    _ if open => {
                        let c = txn.get_or_insert_array(name.as_str());
                        restore_array(&mut txn, &c, &old_txn, a)
                    }
                    _ => return Err(mismatch(doc_name, name, &then, &now)),
                },
                Root::Other(_) => {}
            }
        }
        let update = txn.encode_update_v1();
        Ok((update.len() > 2 || update.iter().any(|b| *b != 0)).then_some(update))
    });
    outcome.unwrap_or_else(|panic| Err(CollabError::Internal(panic)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Update, XmlElementPrelim, XmlTextPrelim};

    fn copy(doc: &Doc) -> Doc {
        let d = merge::new_doc();
        d.transact_mut()
            .apply_update(Update::decode_v1(&merge::state(doc)).unwrap())
            .unwrap();
        d
    }

    fn apply(doc: &Doc, update: &[u8]) {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }

    #[test]
    fn every_root_type_reads_as_at_the_old_version() {
        let doc = merge::new_doc();
        {
            let mut txn = doc.transact_mut();
            let t = txn.get_or_insert_text("content");
            t.insert(&mut txn, 0, "Hello world");
            let mut bold = Attrs::new();
            bold.insert("bold".into(), Any::Bool(true));
            t.format(&mut txn, 0, 5, bold);
            let m = txn.get_or_insert_map("meta");
            m.insert(&mut txn, "title", "first");
            m.insert(&mut txn, "n", 1);
            let a = txn.get_or_insert_array("list");
            a.insert(&mut txn, 0, "a");
            a.insert(&mut txn, 1, "b");
            let x = txn.get_or_insert_xml_fragment("prosemirror");
            let p = x.insert(&mut txn, 0, XmlElementPrelim::empty("paragraph"));
            p.insert(&mut txn, 0, XmlTextPrelim::new("one"));
        }
        let old = copy(&doc);
        let before = content::to_json(&doc).unwrap();
        {
            let mut txn = doc.transact_mut();
            let t = txn.get_or_insert_text("content");
            t.remove_range(&mut txn, 0, 6);
            t.insert(&mut txn, 0, "Bye ");
            let m = txn.get_or_insert_map("meta");
            m.insert(&mut txn, "title", "second");
            m.insert(&mut txn, "extra", true);
            let a = txn.get_or_insert_array("list");
            a.remove(&mut txn, 0);
            a.insert(&mut txn, 1, "c");
            let x = txn.get_or_insert_xml_fragment("prosemirror");
            x.insert(&mut txn, 1, XmlElementPrelim::empty("heading"));
            let n = txn.get_or_insert_text("notes");
            n.insert(&mut txn, 0, "new root");
        }
        // A peer that has the current document receives the restore like any update.
        let peer = copy(&doc);
        let update = restore(&doc, &old, "d").unwrap().unwrap();
        apply(&peer, &update);
        for d in [&doc, &peer] {
            let mut now = content::to_json(d).unwrap();
            now.as_object_mut().unwrap().remove("notes");
            assert_eq!(now, before);
            assert_eq!(content::read_text(d, "d", "notes").unwrap(), "");
        }
        // Formatting came back too: "Hello" is bold again.
        let txn = doc.transact();
        let t = txn.get_text("content").unwrap();
        let delta = t.diff(&txn, YChange::identity);
        assert_eq!(delta[0].insert, Out::Any(Any::from("Hello")));
        assert!(delta[0].attributes.is_some());
        drop(txn);
        assert!(
            restore(&doc, &old, "d").unwrap().is_none(),
            "nothing left to do"
        );
    }

    #[test]
    fn concurrent_typing_survives_a_restore_in_the_unchanged_part() {
        let doc = merge::new_doc();
        {
            let mut txn = doc.transact_mut();
            txn.get_or_insert_text("content")
                .insert(&mut txn, 0, "one two three");
        }
        let old = copy(&doc);
        {
            let mut txn = doc.transact_mut();
            txn.get_or_insert_text("content")
                .insert(&mut txn, 13, " four");
        }
        let other = copy(&doc);
        // Meanwhile another editor types in the unchanged part...
        let typed = {
            let mut txn = other.transact_mut();
            txn.get_or_insert_text("content").insert(&mut txn, 3, "!");
            txn.encode_update_v1()
        };
        // ...while the restore drops " four".
        let update = restore(&doc, &old, "d").unwrap().unwrap();
        apply(&doc, &typed);
        apply(&other, &update);
        for d in [&doc, &other] {
            let txn = d.transact();
            assert_eq!(
                txn.get_text("content").unwrap().get_string(&txn),
                "one! two three"
            );
        }
    }
}
