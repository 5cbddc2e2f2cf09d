//! How deep shared types nest in a document, tracked from the structs the scanner reports,
//! so that a chain of nested `Y.Map`s / `Y.Array`s / XML elements can be refused at
//! `collab.max_nesting` whether it arrives in one update or one level per update.
//!
//! yrs keeps an item's parent private, and reading, deleting and garbage-collecting nested
//! types in yrs recurse once per level. So the depth is computed here, from the bytes, before
//! yrs integrates anything: an item names its parent (a root, or the ID of the item that
//! created a shared type), or leaves it out, meaning "same parent as my origin (left
//! neighbour), else as my right origin" — exactly how yrs resolves it. Items whose references
//! are not known yet wait, as yrs keeps them pending, and are settled when what they wait for
//! arrives. Every struct of the document passes through here (stored rows on load, incoming
//! updates, SQL edits), so no item is ever unaccounted for.
//!
//! The depth counted is an upper bound of what yrs builds: items yrs would garbage-collect
//! (their parent was deleted and collected) may still count. Nothing here allocates more than
//! a few words per run of structs (consecutive structs of a client with one parent share a
//! range), plus one entry per shared type.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::scan::{Id, Kind, ParentRef, Struct};

/// A resolved parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parent {
    Root,
    Type(Id),
    /// A garbage-collected struct: what is inserted next to it is collected too.
    None,
}

/// A struct waiting for the struct that holds `awaited` (its origin or right origin).
#[derive(Debug, Clone, Copy)]
struct Waiting {
    id: Id,
    len: u32,
    is_type: bool,
    parent: Option<Id>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    pub limit: u32,
}

#[derive(Debug, Default)]
pub struct Depths {
    /// Per client: start clock → (end clock, parent) of runs of known structs.
    ranges: HashMap<u64, BTreeMap<u32, (u32, Parent)>>,
    /// Shared types (by the ID of the item that created them) and their depth once known:
    /// 1 for a type inside a root type.
    types: HashMap<Id, Option<u32>>,
    /// Structs whose parent is copied from a struct not known yet, by that struct's ID.
    by_origin: BTreeMap<Id, Vec<Waiting>>,
    /// IDs of the structs in `by_origin`.
    waiting_ids: HashSet<Id>,
    /// Shared types whose parent type's depth is not known yet, by the parent's ID.
    by_parent: HashMap<Id, Vec<Id>>,
    deepest: u32,
}

impl Depths {
    /// The deepest nesting of shared types seen so far.
    #[cfg(test)]
    pub fn deepest(&self) -> u32 {
        self.deepest
    }

    /// A rough count of the bytes this tracker holds (for the cache budget).
    pub fn approx_bytes(&self) -> usize {
        let runs: usize = self.ranges.values().map(BTreeMap::len).sum();
        let waiting: usize = self.by_origin.values().map(Vec::len).sum::<usize>()
            + self.by_parent.values().map(Vec::len).sum::<usize>();
        runs * 48 + self.types.len() * 40 + waiting * 48
    }

    /// The parent of the struct holding `id`, if that struct is known.
    fn parent_at(&self, id: Id) -> Option<Parent> {
        let runs = self.ranges.get(&id.client)?;
        let (_, (end, parent)) = runs.range(..=id.clock).next_back()?;
        (id.clock < *end).then_some(*parent)
    }

    fn is_known(&self, id: Id) -> bool {
        self.parent_at(id).is_some()
    }

    /// Whether a struct with this ID waits for its origin already.
    fn is_waiting(&self, id: Id) -> bool {
        self.waiting_ids.contains(&id)
    }

    /// Records a run and merges it with the run it continues, if they share a parent.
    fn insert_run(&mut self, id: Id, len: u32, parent: Parent) {
        let runs = self.ranges.entry(id.client).or_default();
        let end = id.clock.saturating_add(len);
        // A struct sent again (peers resend what they are unsure of) is already covered.
        if let Some((_, (prev_end, _))) = runs.range(..=id.clock).next_back() {
            if *prev_end >= end {
                return;
            }
        }
        if let Some((_, (prev_end, prev_parent))) = runs.range_mut(..id.clock).next_back() {
            if *prev_end == id.clock && *prev_parent == parent {
                *prev_end = end;
                return;
            }
        }
        runs.insert(id.clock, (end, parent));
    }

    /// Adds one struct of an update, in the order the update holds them.
    pub fn add(&mut self, s: &Struct, limit: u32) -> Result<(), TooDeep> {
        // A struct whose ID is known already is one yrs skips (peers resend, and a forged
        // update may reuse IDs with other parents): the first one seen stays, as in yrs.
        if self.is_known(s.id) || self.types.contains_key(&s.id) || self.is_waiting(s.id) {
            return Ok(());
        }
        let is_type = match s.kind {
            Kind::Skip => return Ok(()),
            Kind::Gc => {
                return self.place(
                    Waiting {
                        id: s.id,
                        len: s.len,
                        is_type: false,
                        parent: None,
                    },
                    Some(Parent::None),
                    limit,
                );
            }
            Kind::Item { is_type } => is_type,
        };
        let waiting = Waiting {
            id: s.id,
            len: s.len,
            is_type,
            parent: None,
        };
        match s.parent {
            ParentRef::Root => self.place(waiting, Some(Parent::Root), limit),
            ParentRef::Type(p) => self.place(
                Waiting {
                    parent: Some(p),
                    ..waiting
                },
                None,
                limit,
            ),
            ParentRef::Copied => {
                let Some(from) = s.origin.or(s.right_origin) else {
                    return self.place(waiting, Some(Parent::None), limit);
                };
                match self.parent_at(from) {
                    Some(parent) => self.place(waiting, Some(parent), limit),
                    None => {
                        self.waiting_ids.insert(waiting.id);
                        self.by_origin.entry(from).or_default().push(waiting);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Places a struct whose parent is known (`parent`), or named by ID (`w.parent`), then
    /// everything that waited for it, with an explicit work list.
    fn place(&mut self, w: Waiting, parent: Option<Parent>, limit: u32) -> Result<(), TooDeep> {
        let mut work = vec![(w, parent)];
        let mut typed: Vec<(Id, u32)> = Vec::new();
        while let Some((w, parent)) = work.pop() {
            let parent = match (parent, w.parent) {
                (Some(p), _) => p,
                // A named parent that is a known struct but not a shared type: yrs collects
                // the item instead of integrating it.
                (None, Some(p)) if self.is_known(p) && !self.types.contains_key(&p) => Parent::None,
                (None, Some(p)) => Parent::Type(p),
                (None, None) => Parent::None,
            };
            self.insert_run(w.id, w.len, parent);
            // Whatever waited for a struct in this run can now copy its parent.
            let end = Id {
                client: w.id.client,
                clock: w.id.clock.saturating_add(w.len),
            };
            let woken: Vec<Id> = self.by_origin.range(w.id..end).map(|(k, _)| *k).collect();
            for k in woken {
                if let Some(list) = self.by_origin.remove(&k) {
                    for x in &list {
                        self.waiting_ids.remove(&x.id);
                    }
                    work.extend(list.into_iter().map(|x| (x, Some(parent))));
                }
            }
            if w.is_type {
                match parent {
                    Parent::Root => typed.push((w.id, 1)),
                    // Collected: nothing nests under it in the document.
                    Parent::None => typed.push((w.id, 0)),
                    Parent::Type(p) => match self.types.get(&p) {
                        Some(Some(d)) => typed.push((w.id, d + 1)),
                        _ => {
                            self.types.insert(w.id, None);
                            self.by_parent.entry(p).or_default().push(w.id);
                        }
                    },
                }
            }
            // Depths propagate down chains of types that waited for their parent.
            while let Some((id, depth)) = typed.pop() {
                if depth > limit {
                    return Err(TooDeep { limit });
                }
                self.deepest = self.deepest.max(depth);
                self.types.insert(id, Some(depth));
                if let Some(children) = self.by_parent.remove(&id) {
                    typed.extend(children.into_iter().map(|c| (c, depth + 1)));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{build, scan_update};

    fn feed(d: &mut Depths, bytes: &[u8], limit: u32) -> Result<(), TooDeep> {
        let mut out = Ok(());
        scan_update(bytes, limit, |s| {
            if out.is_ok() {
                out = d.add(s, limit);
            }
        })
        .expect("scans");
        out
    }

    #[test]
    fn a_chain_in_one_update_is_refused_past_the_limit() {
        let mut d = Depths::default();
        assert!(feed(&mut d, &build::nested_maps("m", 100), 100).is_ok());
        assert_eq!(d.deepest(), 100);
        let mut d = Depths::default();
        assert_eq!(
            feed(&mut d, &build::nested_maps("m", 20_000), 100),
            Err(TooDeep { limit: 100 })
        );
    }

    #[test]
    fn a_chain_one_level_per_update_is_refused_at_the_limit() {
        let mut d = Depths::default();
        for level in 0..100 {
            feed(&mut d, &build::nested_map_level("m", level), 100).expect("within limit");
        }
        assert_eq!(
            feed(&mut d, &build::nested_map_level("m", 100), 100),
            Err(TooDeep { limit: 100 })
        );
    }

    #[test]
    fn a_chain_delivered_leaf_first_is_refused_when_it_connects() {
        let mut d = Depths::default();
        for level in (1..20_000).rev() {
            feed(&mut d, &build::nested_map_level("m", level), 100).expect("pending");
        }
        assert_eq!(d.deepest(), 0);
        assert_eq!(
            feed(&mut d, &build::nested_map_level("m", 0), 100),
            Err(TooDeep { limit: 100 })
        );
    }

    #[test]
    fn items_without_a_parent_copy_it_from_their_origin() {
        use yrs::{Doc, Map, ReadTxn, Text, Transact, XmlElementPrelim, XmlFragment};
        let doc = Doc::with_client_id(3);
        let x = doc.get_or_insert_xml_fragment("pm");
        let m = doc.get_or_insert_map("meta");
        let t = doc.get_or_insert_text("content");
        let mut expected = 0;
        {
            let mut txn = doc.transact_mut();
            let mut el = x.push_back(&mut txn, XmlElementPrelim::empty("div"));
            expected += 1;
            for _ in 0..9 {
                // A sibling first, so the next child has an origin and no encoded parent.
                el.push_back(&mut txn, yrs::XmlTextPrelim::new("t"));
                el = el.push_back(&mut txn, XmlElementPrelim::empty("div"));
                expected += 1;
            }
            m.insert(&mut txn, "a", "b");
            t.insert(&mut txn, 0, "hello");
        }
        let bytes = doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        let mut d = Depths::default();
        feed(&mut d, &bytes, 100).expect("fits");
        assert_eq!(d.deepest(), expected);
        // Typing keeps one run per client and parent.
        assert!(d.approx_bytes() < 4096);
    }
}

/// Measures the stack yrs needs per nesting level (`cargo test -p pg_collab --lib --release
/// -- --ignored stack_per_level --nocapture`): reads, deletes and drops a chain of nested maps
/// on threads with ever smaller stacks. A probe, not a check: figures are in the README.
#[cfg(test)]
#[test]
#[ignore]
fn stack_per_level() {
    use yrs::{Map, MapPrelim, ReadTxn, Transact};
    fn survives(depth: usize, stack: usize) -> bool {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(move || {
                let doc = yrs::Doc::with_client_id(1);
                let root = doc.get_or_insert_map("m");
                {
                    let mut txn = doc.transact_mut();
                    let mut cur = root.insert(&mut txn, "k", MapPrelim::default());
                    for _ in 1..depth {
                        cur = cur.insert(&mut txn, "k", MapPrelim::default());
                    }
                }
                let bytes = doc
                    .transact()
                    .encode_state_as_update_v1(&yrs::StateVector::default());
                let copy = crate::merge::new_doc();
                let mut d = Depths::default();
                crate::merge::apply_stored(&copy, &mut d, "p", [bytes.as_slice()], 100_000)
                    .expect("loads");
                let _ = crate::content::to_json(&copy);
                let _ = yrs::types::ToJson::to_json(&root, &doc.transact());
                root.remove(&mut doc.transact_mut(), "k");
            })
            .map(|h| h.join().is_ok())
            .unwrap_or(false)
    }
    // A stack overflow aborts the process, so probe from large to small and print as we go.
    let depth: usize = std::env::var("DEPTH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    {
        for kb in [8192usize, 4096, 2048, 1024, 512, 256, 192, 128, 64] {
            eprintln!("depth {depth}: trying {kb} kB");
            assert!(survives(depth, kb * 1024) || kb < 64);
            eprintln!("depth {depth}: {kb} kB ok");
        }
    }
}
