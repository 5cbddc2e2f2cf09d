//! A structure-aware fuzzer (proptest): a yrs peer makes valid updates of every shape (text,
//! nested maps, arrays and XML elements, nested values, deletions), the updates are then
//! mutated (bytes flipped, cut, inserted, spliced from another update, reordered), and each
//! goes through the same path as `collab.apply_update`: scan, decode, depth check, integrate,
//! then every reader. Properties: nothing escapes as a panic, whatever was accepted rebuilds
//! from the accepted bytes alone to the same JSON, and no document nests past the limit.
//!
//! `cargo test -p pg_collab --lib fuzz` runs 256 cases (as CI does); a longer run:
//! `PROPTEST_CASES=20000 cargo test -p pg_collab --lib fuzz --release`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, GetString, Map, MapPrelim, MapRef, Text, Transact,
    XmlElementPrelim, XmlFragment, XmlTextPrelim,
};

use crate::depth::Depths;
use crate::{content, merge};

const NESTING: u32 = 8;

#[derive(Debug, Clone)]
enum Op {
    Type {
        at: usize,
        text: String,
    },
    Delete {
        at: usize,
        len: usize,
    },
    /// A chain of `depth` maps (or arrays) under the root.
    Nest {
        depth: usize,
        arrays: bool,
    },
    /// An XML element chain `depth` deep.
    Xml {
        depth: usize,
    },
    /// A value nested `depth` deep in a map.
    Value {
        depth: usize,
        map: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..50usize, "[a-z ]{1,8}").prop_map(|(at, text)| Op::Type { at, text }),
        (0..50usize, 1..10usize).prop_map(|(at, len)| Op::Delete { at, len }),
        (1..12usize, any::<bool>()).prop_map(|(depth, arrays)| Op::Nest { depth, arrays }),
        (1..12usize).prop_map(|depth| Op::Xml { depth }),
        (0..12usize, any::<bool>()).prop_map(|(depth, map)| Op::Value { depth, map }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    None,
    Flip {
        at: prop::sample::Index,
        bits: u8,
    },
    Cut {
        at: prop::sample::Index,
    },
    Insert {
        at: prop::sample::Index,
        byte: u8,
    },
    Splice {
        from: prop::sample::Index,
        at: prop::sample::Index,
        len: usize,
    },
    Swap {
        with: prop::sample::Index,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::None),
        2 => (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        1 => any::<prop::sample::Index>().prop_map(|at| Mutation::Cut { at }),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        1 => (any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1..16usize)
            .prop_map(|(from, at, len)| Mutation::Splice { from, at, len }),
        1 => any::<prop::sample::Index>().prop_map(|with| Mutation::Swap { with }),
    ]
}

fn nested_any(depth: usize, map: bool) -> Any {
    let mut v = Any::from("leaf");
    for _ in 0..depth {
        v = if map {
            Any::from(std::collections::HashMap::from([("k".to_string(), v)]))
        } else {
            Any::from(vec![v])
        };
    }
    v
}

/// Runs `op` on the peer and returns the update it made.
fn run(peer: &Doc, op: &Op) -> Vec<u8> {
    let text = peer.get_or_insert_text("content");
    let root_map = peer.get_or_insert_map("m");
    let root_array = peer.get_or_insert_array("a");
    let xml = peer.get_or_insert_xml_fragment("x");
    let mut txn = peer.transact_mut();
    match op {
        Op::Type { at, text: s } => {
            let len = text.len(&txn);
            text.insert(&mut txn, (*at as u32).min(len), s);
        }
        Op::Delete { at, len } => {
            let total = text.len(&txn);
            let at = (*at as u32).min(total);
            let len = (*len as u32).min(total - at);
            if len > 0 {
                text.remove_range(&mut txn, at, len);
            }
        }
        Op::Nest { depth, arrays } => {
            if *arrays {
                let mut cur: ArrayRef = root_array.push_back(&mut txn, ArrayPrelim::default());
                for _ in 1..*depth {
                    cur = cur.push_back(&mut txn, ArrayPrelim::default());
                }
            } else {
                let mut cur: MapRef = root_map.insert(&mut txn, "k", MapPrelim::default());
                for _ in 1..*depth {
                    cur = cur.insert(&mut txn, "k", MapPrelim::default());
                }
            }
        }
        Op::Xml { depth } => {
            let mut cur = xml.push_back(&mut txn, XmlElementPrelim::empty("div"));
            cur.push_back(&mut txn, XmlTextPrelim::new("t"));
            for _ in 1..*depth {
                cur = cur.push_back(&mut txn, XmlElementPrelim::empty("div"));
            }
        }
        Op::Value { depth, map } => {
            root_map.insert(&mut txn, "v", nested_any(*depth, *map));
        }
    }
    txn.encode_update_v1()
}

fn mutate(updates: &mut [Vec<u8>], i: usize, m: &Mutation) {
    let len = updates[i].len();
    match m {
        Mutation::None => {}
        Mutation::Flip { at, bits } if len > 0 => updates[i][at.index(len)] ^= bits,
        Mutation::Cut { at } if len > 0 => updates[i].truncate(at.index(len)),
        Mutation::Insert { at, byte } => updates[i].insert(at.index(len + 1), *byte),
        Mutation::Splice { from, at, len: n } => {
            let src = updates[from.index(updates.len())].clone();
            if !src.is_empty() {
                let start = at.index(src.len());
                let piece = &src[start..(start + n).min(src.len())];
                let to = at.index(len + 1);
                updates[i].splice(to..to, piece.iter().copied());
            }
        }
        Mutation::Swap { with } => {
            let j = with.index(updates.len());
            updates.swap(i, j);
        }
        _ => {}
    }
}

/// Feeds one update to a "server" document as `collab.apply_update` does; true if accepted.
fn serve(doc: &Doc, depths: &mut Depths, bytes: &[u8]) -> bool {
    let Ok(update) = merge::decode_batch(&[bytes], 1 << 20, NESTING) else {
        return false;
    };
    merge::integrate(doc, depths, &[bytes], update, "fuzz", NESTING).is_ok()
}

/// Every reader, on whatever the document holds.
fn read_everything(doc: &Doc) -> serde_json::Value {
    // A forged document can make a yrs reader panic (an "element" without a tag read through
    // yrs's own XML text rendering): that is a clean error, never a crash.
    let json = match content::to_json(doc) {
        Ok(json) => json,
        Err(crate::error::CollabError::Internal(_)) => serde_json::Value::Null,
        Err(e) => panic!("to_json failed with {e}"),
    };
    let _ = content::read_text(doc, "fuzz", "content");
    let _ = content::read_text(doc, "fuzz", "x");
    let state = merge::state(doc);
    let sv = merge::state_vector(doc);
    merge::diff(doc, &sv).expect("diff against its own state vector");
    merge::diff(doc, &[0]).expect("diff against nothing");
    // What a checkpoint would hold loads again, or is never written as one (storage checks it
    // with the scanner first).
    if merge::reloadable(&state, NESTING) {
        merge::load("fuzz", Some(&state), [], NESTING).expect("a checkpoint loads");
    }
    json
}

#[test]
fn fuzz_valid_then_mutated_updates_never_break_a_document() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec((op(), mutation()), 1..24);
    let accepted_total = std::cell::Cell::new(0usize);
    let refused_total = std::cell::Cell::new(0usize);
    runner
        .run(&strategy, |steps| {
            let peer = Doc::with_client_id(1);
            let mut updates: Vec<Vec<u8>> = steps.iter().map(|(op, _)| run(&peer, op)).collect();
            for (i, (_, m)) in steps.iter().enumerate() {
                mutate(&mut updates, i, m);
            }
            let mut server = merge::new_doc();
            let mut depths = Depths::default();
            let mut accepted: Vec<Vec<u8>> = Vec::new();
            for u in &updates {
                if serve(&server, &mut depths, u) {
                    accepted.push(u.clone());
                } else {
                    // A refused update may leave the copy half-changed: rebuild, as the
                    // extension drops its cache entry and rebuilds from storage.
                    refused_total.set(refused_total.get() + 1);
                    (server, depths) =
                        merge::load("fuzz", None, accepted.iter().map(Vec::as_slice), NESTING)
                            .expect("what was accepted rebuilds");
                }
            }
            accepted_total.set(accepted_total.get() + accepted.len());
            let (rebuilt, rebuilt_depths) =
                merge::load("fuzz", None, accepted.iter().map(Vec::as_slice), NESTING)
                    .expect("what was accepted rebuilds");
            prop_assert!(rebuilt_depths.deepest() <= NESTING);
            let json = read_everything(&rebuilt);
            // Unmutated and all accepted: the text is the peer's.
            let untouched = steps.iter().all(|(_, m)| matches!(m, Mutation::None));
            if untouched && accepted.len() == updates.len() {
                let text = peer.get_or_insert_text("content");
                let peer_text = text.get_string(&peer.transact());
                prop_assert_eq!(
                    content::read_text(&rebuilt, "fuzz", "content").unwrap_or_default(),
                    peer_text
                );
            }
            let _ = json;
            let _ = read_everything(&server);
            Ok(())
        })
        .expect("fuzzing found a failure");
    eprintln!(
        "fuzz: {cases} cases, {} updates accepted, {} refused",
        accepted_total.get(),
        refused_total.get()
    );
}
