//! A byte-level scanner of Yjs v1 updates and state vectors, run on every byte string before
//! yrs decodes it, in the extension and in the bridge. No pgrx and no yrs here: plain
//! `#[test]`s cover it.
//!
//! yrs decodes recursively (`Any` values nest through `Any::decode`), reserves memory for
//! counts read from the input, and adds clocks without overflow checks. A stack overflow is a
//! SIGSEGV that `catch_unwind` cannot catch, and in PostgreSQL a crashed backend restarts the
//! whole server. So this scanner walks the same format iteratively (an explicit stack for
//! `Any` arrays and maps) and refuses, before anything is allocated:
//! - `Any` values, and the JSON of embeds and formatting attributes, nested deeper than the limit;
//! - lengths and counts larger than the bytes that remain;
//! - clock ranges that overflow 32 bits.
//!
//! It mirrors what yrs 0.28.1 reads (`Update::decode`, `Update::decode_block`,
//! `ItemContent::decode`, `Any::decode`, `IdSet::decode`, `StateVector::decode`), including
//! its quirks, so that both agree on where every struct starts and which ID it has. For each
//! struct it reports its ID, length and parent reference to a visitor, which the extension's
//! `depth` module uses to know how deep shared types nest in the document.

use std::fmt;

/// Why a byte string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Not a well-formed v1 update or state vector (or a count the bytes cannot hold).
    Malformed(String),
    /// Values nested deeper than the limit.
    TooDeep { what: &'static str, limit: u32 },
    /// Runs of consecutive items that yrs would merge at commit, costing more memory than
    /// [`MAX_MERGE_BYTES`] (see [`scan_update`]).
    TooCostly { bytes: u64 },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Malformed(m) => f.write_str(m),
            ScanError::TooDeep { what, limit } => {
                write!(f, "{what} nested deeper than collab.max_nesting ({limit})")
            }
            ScanError::TooCostly { bytes } => write!(
                f,
                "merging its runs of consecutive items would take about {} MB \
                 (limit {} MB): send them as fewer, longer items",
                bytes >> 20,
                MAX_MERGE_BYTES >> 20
            ),
        }
    }
}

type Result<T> = std::result::Result<T, ScanError>;

fn malformed<T>(what: impl Into<String>) -> Result<T> {
    Err(ScanError::Malformed(what.into()))
}

/// A struct ID: (client, clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    pub client: u64,
    pub clock: u32,
}

/// Where an item says it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentRef {
    /// A root type (by name; the name does not matter for depth).
    Root,
    /// The shared type created by the item with this ID.
    Type(Id),
    /// Not encoded: the same parent as the item's origin (else its right origin).
    Copied,
}

/// What kind of struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gc,
    Skip,
    Item { is_type: bool },
}

/// One struct of an update, as the visitor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Struct {
    pub id: Id,
    pub len: u32,
    pub kind: Kind,
    pub parent: ParentRef,
    pub origin: Option<Id>,
    pub right_origin: Option<Id>,
}

/// The most memory yrs may take to merge the items of one update (64 MB).
///
/// At commit yrs merges runs of consecutive items of one client (each the origin of the next),
/// walking each run right to left; every item appends a copy of the merged content to its
/// right, and all of them stay alive until the end, so a run costs the square of its length
/// (`ItemContent::try_squash` in yrs 0.28.1). A 7 MB update of a million one-value items asked
/// for terabytes and the kernel killed the backend. Yjs merges such runs itself before it
/// encodes, so honest updates have short runs.
pub const MAX_MERGE_BYTES: u64 = 64 << 20;

/// A run of items that yrs would merge: where it ends, what it is, and its cost so far.
struct Run {
    end: u64,
    right_origin: Option<Id>,
    kind: u8,
    len: u64,
    /// Bytes held when yrs merged the run so far: the sum over its items of their content
    /// times their position in the run.
    cost: u64,
}

/// What the scan found besides the structs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub structs: u64,
    pub clients: u64,
    pub deleted_ranges: u64,
    /// Deepest `Any` / JSON nesting met.
    pub max_value_depth: u32,
    /// Memory yrs would take to merge this update's runs of items (see [`MAX_MERGE_BYTES`]).
    pub merge_bytes: u64,
    /// Items yrs could merge (strings, values, JSON) and their memory: what a batch of updates
    /// integrated in one transaction could merge across updates is at most their product.
    pub mergeable_items: u64,
    pub mergeable_bytes: u64,
}

/// A lib0 v1 reader that never trusts a length.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8> {
        match self.buf.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(*b)
            }
            None => malformed("unexpected end of input"),
        }
    }

    fn skip(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return malformed(format!(
                "a length of {n} exceeds the {} bytes left",
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// lib0 unsigned varint, at most 64 bits.
    fn var_u64(&mut self) -> Result<u64> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift >= 64 || (shift == 63 && (b & 0x7f) > 1) {
                return malformed("variable-length integer too long");
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    fn var_u32(&mut self) -> Result<u32> {
        let v = self.var_u64()?;
        u32::try_from(v).or_else(|_| malformed(format!("{v} does not fit 32 bits")))
    }

    /// lib0 signed varint: skipped, its value never matters here.
    fn skip_var_signed(&mut self) -> Result<()> {
        for _ in 0..10 {
            if self.u8()? & 0x80 == 0 {
                return Ok(());
            }
        }
        malformed("variable-length integer too long")
    }

    fn buf(&mut self) -> Result<&'a [u8]> {
        let n = self.var_u32()? as usize;
        self.skip(n)
    }

    fn string(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.buf()?).or_else(|_| malformed("string is not UTF-8"))
    }

    /// A count of things each at least `min_bytes` long, refused if the input cannot hold them.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let n = self.var_u64()?;
        let need = n.saturating_mul(min_bytes as u64);
        if need > self.remaining() as u64 {
            return malformed(format!(
                "{what} count {n} exceeds what the {} bytes left can hold",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    fn id(&mut self) -> Result<Id> {
        let client = self.var_u64()?;
        let clock = self.var_u32()?;
        Ok(Id { client, clock })
    }
}

/// Skips one lib0 `Any` value without recursion; returns its nesting depth (0 for a scalar).
fn skip_any(c: &mut Cursor, limit: u32) -> Result<u32> {
    // Per open container: entries left, and whether it is a map (entries are key + value).
    let mut stack: Vec<(usize, bool)> = Vec::new();
    let mut deepest = 0u32;
    loop {
        match c.u8()? {
            127 | 126 | 121 | 120 => {}
            125 => c.skip_var_signed()?,
            124 => {
                c.skip(4)?;
            }
            123 | 122 => {
                c.skip(8)?;
            }
            119 => {
                c.string()?;
            }
            116 => {
                c.buf()?;
            }
            118 => {
                // A map entry is at least a one-byte key and a one-byte value.
                let n = c.count("map entry", 2)?;
                stack.push((n, true));
            }
            117 => {
                let n = c.count("array element", 1)?;
                stack.push((n, false));
            }
            other => return malformed(format!("unknown value tag {other}")),
        }
        let depth = stack.len() as u32;
        if depth > limit {
            return Err(ScanError::TooDeep {
                what: "values",
                limit,
            });
        }
        deepest = deepest.max(depth);
        // Move to the next slot: pop finished containers, read the key of a map entry.
        loop {
            match stack.last_mut() {
                None => return Ok(deepest),
                Some((0, _)) => {
                    stack.pop();
                }
                Some((left, is_map)) => {
                    *left -= 1;
                    if *is_map {
                        c.string()?;
                    }
                    break;
                }
            }
        }
    }
}

/// Nesting depth of a JSON text (brackets outside strings), without parsing it.
fn json_depth(s: &str, limit: u32) -> Result<u32> {
    let mut depth = 0u32;
    let mut deepest = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    for b in s.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(ScanError::TooDeep {
                        what: "JSON values",
                        limit,
                    });
                }
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(deepest)
}

/// UTF-16 length of a string, as yrs counts the clock length of string content.
fn utf16_len(s: &str) -> u64 {
    if s.is_ascii() {
        s.len() as u64
    } else {
        s.chars().map(|c| c.len_utf16() as u64).sum()
    }
}

/// Highest clock a struct or deleted range may reach. yrs adds clocks as `u32` without overflow
/// checks (in release builds they wrap); keeping every end below 2^31 keeps any sum of two
/// clocks in range. Honest peers never come near: it is two billion operations per client.
pub const MAX_CLOCK: u64 = i32::MAX as u64;

const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;

/// Reads an item's content; returns (clock length, is a shared type, value depth).
fn content(c: &mut Cursor, info: u8, limit: u32) -> Result<(u64, bool, u32)> {
    Ok(match info & 0b1111 {
        1 => (u64::from(c.var_u32()?), false, 0),
        2 => {
            // yrs reads one string more than the count says (`while remaining >= 0`).
            let n = c.count("JSON string", 1)? as u64 + 1;
            if n > c.remaining() as u64 {
                return malformed("JSON content longer than the input");
            }
            for _ in 0..n {
                c.string()?;
            }
            (n, false, 0)
        }
        3 => {
            c.buf()?;
            (1, false, 0)
        }
        4 => (utf16_len(c.string()?), false, 0),
        5 => (1, false, json_depth(c.string()?, limit)?),
        6 => {
            c.string()?;
            (1, false, json_depth(c.string()?, limit)?)
        }
        7 => {
            match c.u8()? {
                0 | 1 | 2 | 4 | 5 | 6 | 9 | 15 => {}
                3 => {
                    c.string()?;
                }
                other => return malformed(format!("unknown shared type {other}")),
            }
            (1, true, 0)
        }
        8 => {
            let n = c.count("value", 1)?;
            let mut deepest = 0;
            for _ in 0..n {
                deepest = deepest.max(skip_any(c, limit)?);
            }
            (n as u64, false, deepest)
        }
        9 => {
            c.string()?;
            (1, false, skip_any(c, limit)?)
        }
        other => return malformed(format!("unknown content kind {other}")),
    })
}

/// Scans a whole v1 update, calling `visit` for each struct in order. `limit` bounds the
/// nesting of values inside content (`collab.max_nesting`).
pub fn scan_update(bytes: &[u8], limit: u32, visit: impl FnMut(&Struct)) -> Result<Summary> {
    scan_update_with(bytes, limit, MAX_MERGE_BYTES, visit)
}

/// [`scan_update`] with another bound on merge memory: `u64::MAX` for bytes read back from
/// storage, which were checked on the way in (a checkpoint of a large document holds long runs
/// that yrs merges when it loads them, as it always has).
pub fn scan_update_with(
    bytes: &[u8],
    limit: u32,
    max_merge: u64,
    mut visit: impl FnMut(&Struct),
) -> Result<Summary> {
    let mut c = Cursor::new(bytes);
    let mut summary = Summary::default();
    // A client's section is at least three bytes (count, client, clock).
    let clients = c.count("client", 3)?;
    summary.clients = clients as u64;
    for _ in 0..clients {
        // A struct is at least two bytes (info, then a length or content).
        let blocks = c.count("struct", 2)?;
        let client = c.var_u64()?;
        let mut clock = u64::from(c.var_u32()?);
        let mut run: Option<Run> = None;
        for _ in 0..blocks {
            let info = c.u8()?;
            let struct_start = c.pos;
            let (len, kind, parent, origin, right_origin) = match info {
                10 | 0 => {
                    let len = c.var_u32()?;
                    if len == 0 {
                        return malformed("empty struct");
                    }
                    let kind = if info == 10 { Kind::Skip } else { Kind::Gc };
                    (u64::from(len), kind, ParentRef::Copied, None, None)
                }
                info => {
                    let origin = (info & HAS_ORIGIN != 0).then(|| c.id()).transpose()?;
                    let right_origin =
                        (info & HAS_RIGHT_ORIGIN != 0).then(|| c.id()).transpose()?;
                    let encoded_parent = origin.is_none() && right_origin.is_none();
                    let parent = if encoded_parent {
                        if c.var_u32()? == 1 {
                            c.string()?;
                            ParentRef::Root
                        } else {
                            ParentRef::Type(c.id()?)
                        }
                    } else {
                        ParentRef::Copied
                    };
                    if encoded_parent && info & HAS_PARENT_SUB != 0 {
                        c.string()?;
                    }
                    let (len, is_type, depth) = content(&mut c, info, limit)?;
                    summary.max_value_depth = summary.max_value_depth.max(depth);
                    (len, Kind::Item { is_type }, parent, origin, right_origin)
                }
            };
            if len == 0 {
                // yrs drops empty items without advancing the clock.
                continue;
            }
            let end = clock + len;
            if end > MAX_CLOCK {
                return malformed(format!(
                    "clock range of client {client} ends past {MAX_CLOCK}"
                ));
            }
            // Runs yrs merges at commit: strings, values and JSON, each item after the last
            // ID of the one before. Memory per item: its encoded bytes plus a word per element.
            let kind_bits = info & 0b1111;
            if matches!(kind, Kind::Item { .. }) && matches!(kind_bits, 2 | 4 | 8) {
                let per_element = match kind_bits {
                    8 => 16, // an `Any`
                    2 => 24, // a `String`
                    _ => 0,  // text: its bytes
                };
                let bytes = (c.pos - struct_start) as u64 + per_element * len;
                summary.mergeable_items += 1;
                summary.mergeable_bytes = summary.mergeable_bytes.saturating_add(bytes);
                let continues = run.as_ref().is_some_and(|r| {
                    r.end == clock
                        && r.kind == kind_bits
                        && r.right_origin == right_origin
                        && origin
                            == Some(Id {
                                client,
                                clock: (clock - 1) as u32,
                            })
                });
                match run.as_mut() {
                    Some(r) if continues => {
                        r.len += 1;
                        r.end = end;
                        r.cost = r.cost.saturating_add(bytes.saturating_mul(r.len));
                    }
                    _ => {
                        summary.merge_bytes = summary
                            .merge_bytes
                            .saturating_add(run.take().map_or(0, |r| r.cost));
                        run = Some(Run {
                            end,
                            right_origin,
                            kind: kind_bits,
                            len: 1,
                            cost: bytes,
                        });
                    }
                }
                let pending = run.as_ref().map_or(0, |r| r.cost);
                if summary.merge_bytes.saturating_add(pending) > max_merge {
                    return Err(ScanError::TooCostly {
                        bytes: summary.merge_bytes.saturating_add(pending),
                    });
                }
            } else if let Some(r) = run.take() {
                summary.merge_bytes = summary.merge_bytes.saturating_add(r.cost);
            }
            visit(&Struct {
                id: Id {
                    client,
                    clock: clock as u32,
                },
                len: len as u32,
                kind,
                parent,
                origin,
                right_origin,
            });
            summary.structs += 1;
            clock = end;
        }
        summary.merge_bytes = summary
            .merge_bytes
            .saturating_add(run.map_or(0, |r| r.cost));
    }
    summary.deleted_ranges = scan_delete_set(&mut c)?;
    Ok(summary)
}

fn scan_delete_set(c: &mut Cursor) -> Result<u64> {
    let mut ranges = 0u64;
    let clients = c.count("delete set client", 2)?;
    for _ in 0..clients {
        c.var_u64()?;
        let n = c.count("deleted range", 2)?;
        for _ in 0..n {
            let clock = u64::from(c.var_u32()?);
            let len = u64::from(c.var_u32()?);
            if clock + len > MAX_CLOCK {
                return malformed(format!("deleted range ends past {MAX_CLOCK}"));
            }
        }
        ranges += n as u64;
    }
    Ok(ranges)
}

/// Scans a v1 state vector: a count of (client, clock) pairs the bytes must hold.
pub fn scan_state_vector(bytes: &[u8]) -> Result<usize> {
    let mut c = Cursor::new(bytes);
    let n = c.count("state vector entry", 2)?;
    for _ in 0..n {
        c.var_u64()?;
        c.var_u32()?;
    }
    Ok(n)
}

/// Encoders for hand-built (hostile) updates, shared by the tests of this crate.
#[cfg(any(test, feature = "build"))]
pub mod build {
    pub fn var(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    pub fn string(out: &mut Vec<u8>, s: &str) {
        var(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }

    /// An update with one item on root map `root`, key `key`, content `Any` = `value_bytes`.
    pub fn any_item(root: &str, key: &str, value_bytes: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        var(&mut u, 1); // clients
        var(&mut u, 1); // structs
        var(&mut u, 7); // client
        var(&mut u, 0); // clock
        u.push(8 | super::HAS_PARENT_SUB);
        var(&mut u, 1); // parent is a root name
        string(&mut u, root);
        string(&mut u, key);
        var(&mut u, 1); // one value
        u.extend_from_slice(value_bytes);
        var(&mut u, 0); // empty delete set
        u
    }

    /// An `Any` array nested `depth` deep around a null.
    pub fn nested_any(depth: usize, map: bool) -> Vec<u8> {
        let mut v = Vec::with_capacity(depth * 3 + 1);
        for _ in 0..depth {
            if map {
                v.extend_from_slice(&[118, 1, 1, b'k']);
            } else {
                v.extend_from_slice(&[117, 1]);
            }
        }
        v.push(126);
        v
    }

    /// One update holding a chain of `depth` nested maps under root map `root`, each the value
    /// of key `k` of the one before, all by one client.
    pub fn nested_maps(root: &str, depth: u32) -> Vec<u8> {
        let client = 99;
        let mut u = Vec::new();
        var(&mut u, 1);
        var(&mut u, u64::from(depth));
        var(&mut u, client);
        var(&mut u, 0);
        for level in 0..depth {
            u.push(7 | super::HAS_PARENT_SUB);
            if level == 0 {
                var(&mut u, 1);
                string(&mut u, root);
            } else {
                var(&mut u, 0);
                var(&mut u, client);
                var(&mut u, u64::from(level - 1));
            }
            string(&mut u, "k");
            u.push(1); // Y.Map
        }
        var(&mut u, 0);
        u
    }

    /// Level `level` (0-based) of the same chain as its own update.
    pub fn nested_map_level(root: &str, level: u32) -> Vec<u8> {
        let client = 99;
        let mut u = Vec::new();
        var(&mut u, 1);
        var(&mut u, 1);
        var(&mut u, client);
        var(&mut u, u64::from(level));
        u.push(7 | super::HAS_PARENT_SUB);
        if level == 0 {
            var(&mut u, 1);
            string(&mut u, root);
        } else {
            var(&mut u, 0);
            var(&mut u, client);
            var(&mut u, u64::from(level - 1));
        }
        string(&mut u, "k");
        u.push(1);
        var(&mut u, 0);
        u
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Array, Doc, Map, ReadTxn, Text, Transact, Update, XmlFragment};

    fn real_update() -> Vec<u8> {
        let doc = Doc::with_client_id(5);
        let t = doc.get_or_insert_text("content");
        let m = doc.get_or_insert_map("meta");
        let a = doc.get_or_insert_array("list");
        let x = doc.get_or_insert_xml_fragment("pm");
        {
            let mut txn = doc.transact_mut();
            t.insert(&mut txn, 0, "héllo 😀 world");
            t.remove_range(&mut txn, 1, 3);
            m.insert(&mut txn, "title", "Hi");
            m.insert(&mut txn, "nested", yrs::MapPrelim::default());
            a.push_back(&mut txn, 1.5);
            a.push_back(&mut txn, yrs::any!({"a": [1, 2, {"b": null}], "c": true}));
            let p = x.push_back(&mut txn, yrs::XmlElementPrelim::empty("p"));
            p.push_back(&mut txn, yrs::XmlTextPrelim::new("para"));
        }
        let bytes = doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        bytes
    }

    #[test]
    fn real_updates_scan_with_the_ids_yrs_assigns() {
        let bytes = real_update();
        let mut structs = Vec::new();
        let summary = scan_update(&bytes, 64, |s| structs.push(*s)).expect("scans");
        assert_eq!(summary.structs as usize, structs.len());
        assert_eq!(summary.max_value_depth, 3);
        // Clocks of one client are contiguous from 0 up to the state vector's clock.
        let update = Update::decode_v1(&bytes).expect("yrs decodes");
        let sv = update.state_vector();
        let end = structs
            .iter()
            .map(|s| s.id.clock + s.len)
            .max()
            .expect("structs");
        assert_eq!(sv.get(&yrs::block::ClientID::new(5)), end);
        assert!(structs
            .iter()
            .any(|s| s.kind == Kind::Item { is_type: true }));
    }

    #[test]
    fn state_vectors_scan_and_bogus_counts_are_refused() {
        let doc = Doc::with_client_id(5);
        let t = doc.get_or_insert_text("content");
        t.insert(&mut doc.transact_mut(), 0, "x");
        let sv = yrs::updates::encoder::Encode::encode_v1(&doc.transact().state_vector());
        assert_eq!(scan_state_vector(&sv), Ok(1));
        let mut huge = Vec::new();
        var(&mut huge, u64::from(u32::MAX));
        assert!(matches!(
            scan_state_vector(&huge),
            Err(ScanError::Malformed(_))
        ));
    }

    #[test]
    fn deep_any_values_are_refused_without_recursion() {
        for map in [false, true] {
            let ok = any_item("m", "k", &nested_any(64, map));
            assert!(scan_update(&ok, 64, |_| {}).is_ok());
            assert!(Update::decode_v1(&ok).is_ok());
            for depth in [65, 10_000, 1_000_000] {
                let deep = any_item("m", "k", &nested_any(depth, map));
                assert_eq!(
                    scan_update(&deep, 64, |_| {}),
                    Err(ScanError::TooDeep {
                        what: "values",
                        limit: 64
                    })
                );
            }
        }
    }

    #[test]
    fn counts_and_lengths_beyond_the_input_are_refused() {
        // Four billion clients in five bytes.
        let mut u = Vec::new();
        var(&mut u, u64::from(u32::MAX));
        assert!(matches!(
            scan_update(&u, 64, |_| {}),
            Err(ScanError::Malformed(_))
        ));
        // A string claiming a gigabyte.
        let mut v = vec![119];
        var(&mut v, 1 << 30);
        assert!(matches!(
            scan_update(&any_item("m", "k", &v), 64, |_| {}),
            Err(ScanError::Malformed(_))
        ));
        // A deleted range whose end overflows the clock.
        let mut d = vec![0];
        var(&mut d, 1);
        var(&mut d, 3);
        var(&mut d, 1);
        var(&mut d, MAX_CLOCK - 1);
        var(&mut d, 10);
        assert!(matches!(
            scan_update(&d, 64, |_| {}),
            Err(ScanError::Malformed(_))
        ));
        // Truncations of a real update never pass.
        let real = real_update();
        for cut in 0..real.len() - 1 {
            assert!(scan_update(&real[..cut], 64, |_| {}).is_err(), "cut {cut}");
        }
    }

    /// `n` one-value items, each after the one before (`chained`) or each before the one
    /// before (so yrs has nothing to merge).
    fn tiny_items(n: u32, chained: bool) -> Vec<u8> {
        let mut u = Vec::new();
        var(&mut u, 1);
        var(&mut u, u64::from(n));
        var(&mut u, 12);
        var(&mut u, 0);
        for i in 0..n {
            if i == 0 {
                u.push(8);
                var(&mut u, 1);
                string(&mut u, "list");
            } else {
                u.push(
                    8 | if chained {
                        HAS_ORIGIN
                    } else {
                        HAS_RIGHT_ORIGIN
                    },
                );
                var(&mut u, 12);
                var(&mut u, u64::from(i - 1));
            }
            u.extend_from_slice(&[1, 125, 1]);
        }
        var(&mut u, 0);
        u
    }

    #[test]
    fn long_runs_of_items_yrs_would_merge_are_refused() {
        // A million chained one-value items: yrs's merge at commit would want terabytes.
        assert!(matches!(
            scan_update(&tiny_items(1_000_000, true), 64, |_| {}),
            Err(ScanError::TooCostly { .. })
        ));
        // The same items in reverse order merge nothing and cost their size.
        let s = scan_update(&tiny_items(1_000_000, false), 64, |_| {}).expect("accepted");
        assert!(s.merge_bytes < 64 << 20);
        // Short runs, as Yjs sends them, are cheap.
        let s = scan_update(&tiny_items(100, true), 64, |_| {}).expect("accepted");
        assert!(s.merge_bytes < 1 << 20);
    }

    #[test]
    fn deep_json_in_embeds_is_refused() {
        assert_eq!(json_depth(r#"{"a":[1,{"b":"]]]"}]}"#, 10), Ok(3));
        assert!(json_depth(&"[".repeat(100), 10).is_err());
    }

    #[test]
    fn hand_built_map_chain_is_what_yrs_decodes() {
        let bytes = nested_maps("root", 10);
        let mut n = 0;
        scan_update(&bytes, 64, |s| {
            assert_eq!(s.kind, Kind::Item { is_type: true });
            n += 1;
        })
        .expect("scans");
        assert_eq!(n, 10);
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&bytes).expect("decodes"))
            .expect("applies");
        let txn = doc.transact();
        let root = txn.get_map("root").expect("root");
        assert!(root.get(&txn, "k").is_some());
    }
}
