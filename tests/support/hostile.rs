//! A corpus of hostile (and merely huge) Yjs byte strings, generated: nesting 10 … 1,000,000
//! deep through shared types (built with yrs, as Yjs would encode them) and through values
//! inside content (hand-built: Yjs itself cannot encode them), lying counts and ranges,
//! thousands of clients, strings near the size limit, a million tiny items.

use yrs::{
    Array, ArrayPrelim, Doc, Map, MapPrelim, ReadTxn, StateVector, Transact, XmlElementPrelim,
    XmlFragment,
};

/// One case: a name, and the updates to send in order (most cases are one update).
pub struct Case {
    pub name: String,
    pub updates: Vec<Vec<u8>>,
}

fn case(name: impl Into<String>, update: Vec<u8>) -> Case {
    Case {
        name: name.into(),
        updates: vec![update],
    }
}

/// lib0 encoders of hand-built updates: the scanner crate's own.
pub use collab_scan::build::{string, var};

/// Kinds of shared types that nest.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    Map,
    Array,
    Xml,
}

/// A chain of `depth` nested shared types of one kind, as yrs (and Yjs) encode it: one update
/// for the whole chain (`per_level == false`) or one update per level.
pub fn chain(shape: Shape, depth: usize, per_level: bool) -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(7);
    let mut out = Vec::new();
    match shape {
        Shape::Map => {
            let root = doc.get_or_insert_map("m");
            let mut cur = root;
            let mut txn = doc.transact_mut();
            for _ in 0..depth {
                cur = cur.insert(&mut txn, "k", MapPrelim::default());
                if per_level {
                    out.push(txn.encode_update_v1());
                    drop(txn);
                    txn = doc.transact_mut();
                }
            }
        }
        Shape::Array => {
            let root = doc.get_or_insert_array("a");
            let mut cur = root;
            let mut txn = doc.transact_mut();
            for _ in 0..depth {
                cur = cur.push_back(&mut txn, ArrayPrelim::default());
                if per_level {
                    out.push(txn.encode_update_v1());
                    drop(txn);
                    txn = doc.transact_mut();
                }
            }
        }
        Shape::Xml => {
            let root = doc.get_or_insert_xml_fragment("x");
            let mut txn = doc.transact_mut();
            let mut cur = root.push_back(&mut txn, XmlElementPrelim::empty("div"));
            if per_level {
                out.push(txn.encode_update_v1());
                drop(txn);
                txn = doc.transact_mut();
            }
            for _ in 1..depth {
                cur = cur.push_back(&mut txn, XmlElementPrelim::empty("div"));
                if per_level {
                    out.push(txn.encode_update_v1());
                    drop(txn);
                    txn = doc.transact_mut();
                }
            }
        }
    }
    if !per_level {
        out.push(
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default()),
        );
    }
    out
}

/// An update with one item under root `root` (a map key when `key` is given, else a sequence
/// element) whose content is `kind` followed by `content` bytes.
fn item(root: &str, key: Option<&str>, kind: u8, content: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    var(&mut u, 1);
    var(&mut u, 1);
    var(&mut u, 11);
    var(&mut u, 0);
    u.push(kind | if key.is_some() { 0b0010_0000 } else { 0 });
    var(&mut u, 1);
    string(&mut u, root);
    if let Some(k) = key {
        string(&mut u, k);
    }
    u.extend_from_slice(content);
    var(&mut u, 0);
    u
}

/// An `Any` value nested `depth` deep (arrays or maps) around a null, as item content.
pub fn nested_any(depth: usize, map: bool) -> Vec<u8> {
    use collab_scan::build;
    build::any_item("m", "k", &build::nested_any(depth, map))
}

fn nested_json(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// An embed in a text whose JSON nests `depth` deep.
pub fn nested_embed(depth: usize) -> Vec<u8> {
    let mut v = Vec::new();
    string(&mut v, &nested_json(depth));
    item("content", None, 5, &v)
}

/// A formatting attribute in a text whose JSON value nests `depth` deep.
pub fn nested_format(depth: usize) -> Vec<u8> {
    let mut v = Vec::new();
    string(&mut v, "bold");
    string(&mut v, &nested_json(depth));
    item("content", None, 6, &v)
}

/// `n` clients in one update, each inserting one character into the text.
pub fn many_clients(n: u64) -> Vec<u8> {
    let mut u = Vec::new();
    var(&mut u, n);
    for c in 0..n {
        var(&mut u, 1);
        var(&mut u, 1000 + c);
        var(&mut u, 0);
        u.push(4);
        var(&mut u, 1);
        string(&mut u, "content");
        string(&mut u, "x");
    }
    var(&mut u, 0);
    u
}

/// One string item of `len` bytes.
pub fn long_string(len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    string(&mut v, &"a".repeat(len));
    item("content", None, 4, &v)
}

/// `n` one-element array items (a list of a million small numbers), each after the one
/// before (`chained`: a run yrs would merge at commit, refused) or each before the one before.
pub fn tiny_items(n: u32, chained: bool) -> Vec<u8> {
    let client = 12;
    let mut u = Vec::new();
    var(&mut u, 1);
    var(&mut u, u64::from(n));
    var(&mut u, client);
    var(&mut u, 0);
    for i in 0..n {
        if i == 0 {
            u.push(8);
            var(&mut u, 1);
            string(&mut u, "list");
        } else {
            u.push(8 | if chained { 0b1000_0000 } else { 0b0100_0000 });
            var(&mut u, client);
            var(&mut u, u64::from(i - 1));
        }
        u.extend_from_slice(&[1, 125, u8::try_from(i % 64).unwrap_or(0)]);
    }
    var(&mut u, 0);
    u
}

/// An update with no structs whose delete set claims `ranges` ranges over `clients` clients,
/// each range `len` long.
pub fn delete_set(clients: u64, ranges: u64, len: u64, honest: bool) -> Vec<u8> {
    let mut u = vec![0];
    var(&mut u, clients);
    let shown = if honest { clients } else { 1 };
    for c in 0..shown {
        var(&mut u, 5000 + c);
        var(&mut u, ranges);
        let listed = if honest { ranges } else { 1 };
        for r in 0..listed {
            var(&mut u, r * len.saturating_add(1));
            var(&mut u, len);
        }
    }
    u
}

/// A state vector claiming `n` entries holding `shown` of them.
pub fn state_vector(n: u64, shown: u64) -> Vec<u8> {
    let mut v = Vec::new();
    var(&mut v, n);
    for c in 0..shown {
        var(&mut v, c + 1);
        var(&mut v, 1);
    }
    v
}

/// The whole corpus of updates (state vectors are separate: see [`state_vectors`]).
pub fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for depth in [10, 100, 1_000, 20_000, 100_000] {
        for shape in [Shape::Map, Shape::Array, Shape::Xml] {
            for u in chain(shape, depth, false) {
                cases.push(case(format!("{shape:?}-chain-{depth}"), u));
            }
        }
    }
    for depth in [10, 100, 1_000, 10_000, 100_000, 1_000_000] {
        cases.push(case(format!("any-array-{depth}"), nested_any(depth, false)));
        cases.push(case(format!("any-map-{depth}"), nested_any(depth, true)));
        cases.push(case(format!("embed-{depth}"), nested_embed(depth)));
        cases.push(case(format!("format-{depth}"), nested_format(depth)));
    }
    cases.push(case("clients-5000", many_clients(5000)));
    cases.push(case("tiny-items-chained-500000", tiny_items(500_000, true)));
    cases.push(case("string-near-limit", long_string(4 * 1024 * 1024 - 64)));
    cases.push(case("string-over-limit", long_string(4 * 1024 * 1024)));
    cases.push(case(
        "delete-set-huge-range",
        delete_set(1, 1, u64::from(u32::MAX) - 1, true),
    ));
    cases.push(case(
        "delete-set-many-ranges",
        delete_set(3, 20_000, 1, true),
    ));
    cases.push(case(
        "delete-set-lying-clients",
        delete_set(u64::from(u32::MAX), 1, 1, false),
    ));
    cases.push(case(
        "delete-set-lying-ranges",
        delete_set(1, u64::from(u32::MAX), 1, false),
    ));
    let mut overflow = vec![0, 1];
    var(&mut overflow, 5000);
    var(&mut overflow, 1);
    var(&mut overflow, 10);
    var(&mut overflow, u64::from(u32::MAX) - 5);
    cases.push(case("delete-set-overflowing-range", overflow));
    let mut lying = Vec::new();
    var(&mut lying, u64::from(u32::MAX));
    cases.push(case("clients-lying-count", lying));
    let mut structs = Vec::new();
    var(&mut structs, 1);
    var(&mut structs, u64::from(u32::MAX));
    var(&mut structs, 1);
    var(&mut structs, 0);
    cases.push(case("structs-lying-count", structs));
    cases
}

/// State vectors for `collab.diff`: honest ones with many entries, lying ones.
pub fn state_vectors() -> Vec<(String, Vec<u8>)> {
    vec![
        ("sv-100000".into(), state_vector(100_000, 100_000)),
        (
            "sv-lying-count".into(),
            state_vector(u64::from(u32::MAX), 1),
        ),
        ("sv-lying-huge".into(), state_vector(u64::MAX, 0)),
        ("sv-truncated".into(), state_vector(2, 1)),
    ]
}
