//! Pure Yjs logic on top of yrs: validating and integrating updates, reading documents as text
//! or JSON, and turning SQL text edits into Yjs updates. No pgrx here, so all of it is tested
//! with plain `#[test]`s.
//!
//! yrs has open reports of updates that decode but panic when integrated or re-encoded, so every
//! call into yrs with outside bytes runs under `catch_unwind`; a document that panicked half-way
//! is never used again (the caller drops it and rebuilds from storage).
//!
//! yrs also recurses once per nesting level when it decodes values, reads, deletes or collects
//! nested types, and a stack overflow cannot be caught. So every byte string goes through
//! [`crate::scan`] before yrs decodes it, the depth of shared types in the document is tracked
//! in [`crate::depth`] before yrs integrates anything, and the readers here (JSON, XML) walk
//! documents with an explicit stack.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use yrs::branch::BranchPtr;
use yrs::types::AsPrelim;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{
    Any, Array, ArrayRef, Doc, GetString, In, Map, MapRef, OffsetKind, Options, Out, ReadTxn,
    StateVector, Text, TextRef, Transact, TransactionMut, Update, WriteTxn, Xml, XmlFragment,
    XmlFragmentRef, XmlOut, XmlTextRef,
};

use crate::depth::{Depths, TooDeep};
use crate::error::{CollabError, Result};
use crate::scan::{self, ScanError};

/// How often (in nodes or updates) long loops give PostgreSQL a chance to cancel them.
pub(crate) const INTERRUPT_EVERY: usize = 1024;

static INTERRUPT_POINT: OnceLock<fn()> = OnceLock::new();

/// Installs the function long loops call to let PostgreSQL stop them (`statement_timeout`,
/// `pg_cancel_backend`): the extension passes one that runs `CHECK_FOR_INTERRUPTS`.
pub fn set_interrupt_point(f: fn()) {
    let _ = INTERRUPT_POINT.set(f);
}

/// May not return (PostgreSQL's ERROR unwinds from here). Never called while a yrs
/// `TransactionMut` is alive: its `Drop` commits, and yrs would run half-done work.
pub(crate) fn interrupt_point() {
    if let Some(f) = INTERRUPT_POINT.get() {
        f();
    }
}

/// Longest document name, in characters (a Yjs room name in a URL path).
pub const MAX_NAME_CHARS: usize = 255;

/// A fresh document. Offsets are UTF-16 like Yjs in the browser; the client id is random
/// because every backend that writes through SQL is its own Yjs peer.
pub fn new_doc() -> Doc {
    Doc::with_options(Options {
        client_id: yrs::block::ClientID::new(rand::random::<u32>() as u64),
        offset_kind: OffsetKind::Utf16,
        skip_gc: false,
        ..Options::default()
    })
}

pub fn validate_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(CollabError::InvalidName(format!(
            "must be 1 to {MAX_NAME_CHARS} characters, got {chars}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(CollabError::InvalidName(
            "must not contain control characters".into(),
        ));
    }
    Ok(())
}

pub fn validate_field(field: &str) -> Result<()> {
    if field.is_empty() || field.chars().count() > MAX_NAME_CHARS {
        return Err(CollabError::InvalidField(format!(
            "must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(())
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "yrs panicked".to_string()
    }
}

/// Runs yrs code on untrusted input, turning a panic into an error. Only yrs's own panics
/// (string messages) are caught: PostgreSQL's errors (a cancel, a timeout, out of memory)
/// travel through Rust as panics with pgrx's payload and must reach pgrx unchanged.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(payload) if payload.is::<&str>() || payload.is::<String>() => {
            Err(panic_message(payload))
        }
        Err(payload) => resume_unwind(payload),
    }
}

fn scan_error(e: ScanError) -> CollabError {
    match e {
        ScanError::Malformed(m) => CollabError::MalformedUpdate(m),
        other => CollabError::TooComplex(other.to_string()),
    }
}

fn too_deep(e: TooDeep) -> CollabError {
    CollabError::TooComplex(format!(
        "shared types nested deeper than collab.max_nesting ({})",
        e.limit
    ))
}

/// Size and syntax checks that need no document: the scanner first (so yrs never sees deep
/// values or lying counts), then yrs's decoder.
pub fn decode_update(bytes: &[u8], limit: usize, nesting: u32) -> Result<Update> {
    decode_with(bytes, limit, nesting, |_| {}).map(|(update, _)| update)
}

/// [`decode_update`], showing the scanned structs to `visit` (before yrs decodes anything).
fn decode_with(
    bytes: &[u8],
    limit: usize,
    nesting: u32,
    visit: impl FnMut(&scan::Struct),
) -> Result<(Update, scan::Summary)> {
    if bytes.is_empty() {
        return Err(CollabError::EmptyUpdate);
    }
    if bytes.len() > limit {
        return Err(CollabError::UpdateTooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let summary = scan::scan_update(bytes, nesting, visit).map_err(scan_error)?;
    match guarded(|| Update::decode_v1(bytes)) {
        Ok(Ok(update)) => Ok((update, summary)),
        Ok(Err(e)) => Err(CollabError::MalformedUpdate(e.to_string())),
        Err(panic) => Err(CollabError::MalformedUpdate(panic)),
    }
}

/// Most structs [`decode_batch`] keeps for the depth tracker (96 bytes each: 6 MB); past it
/// the batch is scanned a second time instead, so memory stays bounded whatever it holds.
const MAX_KEPT_STRUCTS: usize = 1 << 16;

/// A batch of client updates that passed the checks that need no document, for [`integrate`].
pub struct Decoded {
    updates: Vec<Update>,
    /// The structs the scanner reported, in order, kept so that each update is scanned once:
    /// the depth tracker takes them when the document is locked. `None` past
    /// [`MAX_KEPT_STRUCTS`]: then [`integrate`] scans the bytes again.
    structs: Option<Vec<scan::Struct>>,
    /// Mergeable items of the batch and their bytes (see [`integrate`]).
    items: u64,
    bytes: u64,
}

/// [`decode_update`] for each update of a batch (errors name the element when there are
/// several), keeping what the scanner reports for the depth tracker.
pub fn decode_batch(raw: &[&[u8]], limit: usize, nesting: u32) -> Result<Decoded> {
    let mut out = Decoded {
        updates: Vec::with_capacity(raw.len()),
        structs: Some(Vec::with_capacity(raw.len())),
        items: 0,
        bytes: 0,
    };
    for (i, bytes) in raw.iter().enumerate() {
        let decoded = decode_with(bytes, limit, nesting, |s| {
            if let Some(kept) = &mut out.structs {
                if kept.len() >= MAX_KEPT_STRUCTS {
                    out.structs = None;
                } else if s.kind != scan::Kind::Skip {
                    kept.push(*s);
                }
            }
        });
        let (update, summary) = decoded.map_err(|e| match e {
            CollabError::MalformedUpdate(m) if raw.len() > 1 => {
                CollabError::MalformedUpdate(format!("updates[{}]: {m}", i + 1))
            }
            other => other,
        })?;
        out.updates.push(update);
        out.items += summary.mergeable_items;
        out.bytes = out.bytes.saturating_add(summary.mergeable_bytes);
    }
    Ok(out)
}

/// Adds the structs of `bytes` to the document's depth tracker: refused (54001) when shared
/// types would nest deeper than `nesting` in the document, counting what it already holds.
pub fn track(depths: &mut Depths, bytes: &[u8], nesting: u32) -> Result<scan::Summary> {
    track_with(depths, bytes, nesting, scan::MAX_MERGE_BYTES)
}

/// [`track`] for bytes read back from storage: no bound on merge memory (see
/// `scan::scan_update_with`); nesting is still checked.
fn track_stored(depths: &mut Depths, bytes: &[u8], nesting: u32) -> Result<scan::Summary> {
    track_with(depths, bytes, nesting, u64::MAX)
}

fn track_with(
    depths: &mut Depths,
    bytes: &[u8],
    nesting: u32,
    max_merge: u64,
) -> Result<scan::Summary> {
    let mut deep = None;
    let summary = scan::scan_update_with(bytes, nesting, max_merge, |s| {
        if deep.is_none() {
            deep = depths.add(s, nesting).err();
        }
    })
    .map_err(scan_error)?;
    deep.map_or(Ok(summary), |e| Err(too_deep(e)))
}

/// Integrates already decoded updates into `doc`, in order, and re-encodes what changed: the
/// steps that have been seen to panic on hostile input. `raw` are the same updates as bytes:
/// their depth in the document is checked before yrs sees them, from the structs
/// [`decode_batch`] kept (each update is scanned once), or by scanning `raw` again.
///
/// Returns what the batch changed as one update (the notification carries it) unless some of
/// it still waits on missing dependencies, or the batch was integrated update by update: then
/// the caller merges the raw batch.
/// On error the document (and `depths`) may be half-modified and must be discarded.
pub fn integrate(
    doc: &Doc,
    depths: &mut Depths,
    raw: &[&[u8]],
    batch: Decoded,
    doc_name: &str,
    nesting: u32,
) -> Result<Option<Vec<u8>>> {
    let Decoded {
        updates,
        structs,
        items,
        bytes: bytes_total,
    } = batch;
    match structs {
        // What the scanner reported when the batch was decoded: the same structs in the same
        // order as scanning the bytes again would give.
        Some(structs) => {
            for (i, s) in structs.iter().enumerate() {
                if i % INTERRUPT_EVERY == INTERRUPT_EVERY - 1 {
                    interrupt_point();
                }
                depths.add(s, nesting).map_err(too_deep)?;
            }
        }
        None => {
            for (i, bytes) in raw.iter().enumerate() {
                if i % INTERRUPT_EVERY == INTERRUPT_EVERY - 1 {
                    interrupt_point();
                }
                track(depths, bytes, nesting)?;
            }
        }
    }
    // yrs merges the runs of items a transaction inserted at its commit, at a cost that grows
    // with the square of a run (see scan::MAX_MERGE_BYTES). Within one update the scanner
    // bounds it; across the updates of a batch, a run costs at most the batch's mergeable items
    // times their bytes. Under the bound (keystroke batches) the batch is one yrs transaction,
    // as fast as before; above it, one transaction per update, so no run spans two updates
    // (and PostgreSQL may cancel between them).
    if raw.len() > 1 && items.saturating_mul(bytes_total) > scan::MAX_MERGE_BYTES {
        return integrate_one_by_one(doc, updates, doc_name, nesting);
    }
    /// What changed, what waits (encoded), and whether nothing waits.
    type Outcome = (Vec<u8>, Option<Vec<u8>>, bool);
    let outcome = guarded(|| -> std::result::Result<Outcome, String> {
        let mut txn = doc.transact_mut();
        for update in updates {
            txn.apply_update(update).map_err(|e| e.to_string())?;
        }
        let changed = txn.encode_update_v1();
        let store = txn.store();
        let pending = store.pending_update().map(|p| p.update.encode_v1());
        let settled = pending.is_none() && store.pending_ds().is_none();
        Ok((changed, pending, settled))
    });
    match outcome {
        Ok(Ok((changed, pending, settled))) => {
            if let Some(pending) = pending {
                check_pending(&pending, nesting)?;
            }
            Ok(settled.then_some(changed))
        }
        Ok(Err(reason)) | Err(reason) => Err(CollabError::Unintegrable {
            doc: doc_name.to_string(),
            reason,
        }),
    }
}

/// [`integrate`] for a batch whose runs could cost too much in one transaction.
fn integrate_one_by_one(
    doc: &Doc,
    updates: Vec<Update>,
    doc_name: &str,
    nesting: u32,
) -> Result<Option<Vec<u8>>> {
    for (i, update) in updates.into_iter().enumerate() {
        if i % INTERRUPT_EVERY == INTERRUPT_EVERY - 1 {
            interrupt_point();
        }
        let outcome = guarded(|| -> std::result::Result<Option<Vec<u8>>, String> {
            let mut txn = doc.transact_mut();
            txn.apply_update(update).map_err(|e| e.to_string())?;
            Ok(txn.store().pending_update().map(|p| p.update.encode_v1()))
        });
        match outcome {
            Ok(Ok(pending)) => {
                if let Some(pending) = pending {
                    check_pending(&pending, nesting)?;
                }
            }
            Ok(Err(reason)) | Err(reason) => {
                return Err(CollabError::Unintegrable {
                    doc: doc_name.to_string(),
                    reason,
                })
            }
        }
    }
    // The notification merges the raw batch when it fits a payload.
    Ok(None)
}

/// Whether an encoded state loads again, as a checkpoint must: the fuzzer found forged
/// documents whose state does not (clocks yrs wrote past 2^31, waiting structs that nest past
/// the limit once read in one piece, parents yrs itself then refuses). Checking costs one
/// more load of the document, paid once per checkpoint (about once per state's worth of log).
pub fn reloadable(state: &[u8], nesting: u32) -> bool {
    load("checkpoint", Some(state), [], nesting).is_ok()
}

/// Most structs that may wait for missing updates. yrs re-merges what waits on every update
/// and integrates all of it in one transaction when the gap fills, in time (and, for runs of
/// items, memory) that grows faster than its size; honest peers leave few structs waiting.
pub const MAX_PENDING_STRUCTS: u64 = 10_000;

/// Refuses an update that leaves too much waiting (54001): see [`MAX_PENDING_STRUCTS`].
fn check_pending(pending: &[u8], nesting: u32) -> Result<()> {
    let summary = scan::scan_update(pending, nesting, |_| {}).map_err(scan_error)?;
    if summary.structs > MAX_PENDING_STRUCTS || summary.merge_bytes > scan::MAX_MERGE_BYTES / 2 {
        return Err(CollabError::TooComplex(format!(
            "{} structs would wait for missing updates (limit {MAX_PENDING_STRUCTS}): send \
             the missing updates first",
            summary.structs
        )));
    }
    Ok(())
}

/// Rebuilds a document (and its depth tracker) from stored bytes: a checkpoint, then log rows
/// in sequence order. Stored bytes were validated on the way in, so a failure here means
/// corruption, or a document stored by 0.1.0 beyond today's limits (a clean 54001).
pub fn load<'a>(
    doc_name: &str,
    checkpoint: Option<&'a [u8]>,
    updates: impl IntoIterator<Item = &'a [u8]>,
    nesting: u32,
) -> Result<(Doc, Depths)> {
    let doc = new_doc();
    let mut depths = Depths::default();
    apply_stored(
        &doc,
        &mut depths,
        doc_name,
        checkpoint.into_iter().chain(updates),
        nesting,
    )?;
    Ok((doc, depths))
}

/// Applies stored updates to `doc` (catching a cached document up with the log).
pub fn apply_stored<'a>(
    doc: &Doc,
    depths: &mut Depths,
    doc_name: &str,
    updates: impl IntoIterator<Item = &'a [u8]>,
    nesting: u32,
) -> Result<()> {
    let corrupt = |reason: String| CollabError::Corrupt {
        doc: doc_name.to_string(),
        reason,
    };
    // One yrs transaction per update: a transaction's commit work grows faster than its size,
    // so replaying a long tail in one transaction is several times slower. Between two
    // transactions PostgreSQL may cancel the replay.
    for (i, bytes) in updates.into_iter().enumerate() {
        if i % INTERRUPT_EVERY == INTERRUPT_EVERY - 1 {
            interrupt_point();
        }
        track_stored(depths, bytes, nesting).map_err(|e| match e {
            CollabError::TooComplex(m) => {
                CollabError::TooComplex(format!("stored document \"{doc_name}\": {m}"))
            }
            other => corrupt(other.to_string()),
        })?;
        let outcome = guarded(|| -> std::result::Result<(), String> {
            let update = Update::decode_v1(bytes).map_err(|e| e.to_string())?;
            doc.transact_mut()
                .apply_update(update)
                .map_err(|e| e.to_string())
        });
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(reason)) | Err(reason) => return Err(corrupt(reason)),
        }
    }
    Ok(())
}

/// The whole document as one v1 update, pending (not yet integrable) structs included.
pub fn state(doc: &Doc) -> Vec<u8> {
    encode(doc, &StateVector::default())
}

/// What a peer at `sv` lacks, with what waits for missing updates. yrs merges the waiting
/// structs into the encoding with an `unwrap` (`merge_pending_v1`), and the fuzzer found
/// waiting structs it cannot merge back: then the answer leaves them out (they are still in
/// the log, and were never part of the document) instead of failing every read.
fn encode(doc: &Doc, sv: &StateVector) -> Vec<u8> {
    let txn = doc.transact();
    match catch_unwind(AssertUnwindSafe(|| txn.encode_state_as_update_v1(sv))) {
        Ok(bytes) => bytes,
        Err(payload) if payload.is::<&str>() || payload.is::<String>() => txn.encode_diff_v1(sv),
        Err(payload) => resume_unwind(payload),
    }
}

pub fn state_vector(doc: &Doc) -> Vec<u8> {
    doc.transact().state_vector().encode_v1()
}

pub fn decode_state_vector(bytes: &[u8]) -> Result<StateVector> {
    scan::scan_state_vector(bytes).map_err(|e| CollabError::MalformedStateVector(e.to_string()))?;
    match guarded(|| StateVector::decode_v1(bytes)) {
        Ok(Ok(sv)) => Ok(sv),
        Ok(Err(e)) => Err(CollabError::MalformedStateVector(e.to_string())),
        Err(panic) => Err(CollabError::MalformedStateVector(panic)),
    }
}

/// What a peer holding `state_vector` lacks: the answer to y-protocols sync step 1. Pending
/// structs are included, as the reference server does, because the peer may hold their causes.
pub fn diff(doc: &Doc, state_vector: &[u8]) -> Result<Vec<u8>> {
    let sv = decode_state_vector(state_vector)?;
    Ok(encode(doc, &sv))
}

/// Merges updates into one without building a document (yrs::alt); used for notifications.
pub fn merge_updates(updates: &[&[u8]]) -> Option<Vec<u8>> {
    match updates {
        [] => None,
        [one] => Some(one.to_vec()),
        many => guarded(|| yrs::merge_updates_v1(many.iter().copied()))
            .ok()?
            .ok(),
    }
}

/// A root type as the document holds it. Yjs updates do not carry root types, so a document
/// rebuilt from storage has "undefined" roots whose kind is inferred from their content.
pub(crate) enum Root {
    Missing,
    /// Present but with no visible content: compatible with any kind.
    Empty,
    Text(TextRef),
    XmlText(XmlTextRef),
    Xml(XmlFragmentRef),
    Map(MapRef),
    Array(ArrayRef),
    Other(&'static str),
}

impl Root {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Root::Missing | Root::Empty => "missing field",
            Root::Text(_) => "text",
            Root::XmlText(_) => "XML text",
            Root::Xml(_) => "XML fragment",
            Root::Map(_) => "map",
            Root::Array(_) => "array",
            Root::Other(kind) => kind,
        }
    }
}

pub(crate) fn root<T: ReadTxn>(txn: &T, name: &str) -> Root {
    match txn.get(name) {
        None => Root::Missing,
        Some(Out::YText(t)) => Root::Text(t),
        Some(Out::YXmlText(t)) => Root::XmlText(t),
        Some(Out::YXmlFragment(x)) => Root::Xml(x),
        Some(Out::YXmlElement(_)) => Root::Other("XML element"),
        Some(Out::YMap(m)) => Root::Map(m),
        Some(Out::YArray(a)) => Root::Array(a),
        Some(Out::UndefinedRef(branch)) => infer(txn, branch),
        Some(Out::YDoc(_)) => Root::Other("subdocument"),
        Some(Out::Any(_)) => Root::Other("value"),
    }
}

fn infer<T: ReadTxn>(txn: &T, branch: BranchPtr) -> Root {
    match Out::UndefinedRef(branch).as_prelim(txn) {
        In::Text(_) => Root::Text(TextRef::from(branch)),
        In::XmlText(_) => Root::XmlText(XmlTextRef::from(branch)),
        In::XmlElement(_) | In::XmlFragment(_) => Root::Xml(XmlFragmentRef::from(branch)),
        In::Map(m) if m.is_empty() => Root::Empty,
        In::Map(_) => Root::Map(MapRef::from(branch)),
        In::Array(_) => {
            let array = ArrayRef::from(branch);
            match array.get(txn, 0) {
                // A text whose every character was deleted looks like an empty array.
                None => Root::Empty,
                Some(Out::YXmlElement(_)) | Some(Out::YXmlText(_)) => {
                    Root::Xml(XmlFragmentRef::from(branch))
                }
                Some(_) => Root::Array(array),
            }
        }
        _ => Root::Other("value"),
    }
}

/// A scalar `Any` as JSON; None for arrays and maps, which the walk expands.
fn scalar_to_json(any: &Any) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(yrs::any::Number::Int(n)) => Value::from(*n),
        Any::Number(yrs::any::Number::Float(n)) => serde_json::Number::from_f64(*n)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(b) => {
            use base64::Engine;
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Any::Array(_) | Any::Map(_) => return None,
    })
}

/// A node still to convert: a value inside content, or what a shared type holds.
enum Node {
    Any(Any),
    Out(Out),
}

type Children = Vec<(Option<String>, Node)>;

/// One step of the walk: a finished value, or a container and its children.
enum Expanded {
    Leaf(serde_json::Value),
    Object(Children),
    Array(Children),
}

fn expand<T: ReadTxn>(txn: &T, node: Node) -> Expanded {
    use serde_json::Value;
    let any = match node {
        Node::Any(any) | Node::Out(Out::Any(any)) => any,
        Node::Out(Out::YMap(m)) => {
            return Expanded::Object(
                m.iter(txn)
                    .map(|(k, v)| (Some(k.to_string()), Node::Out(v)))
                    .collect(),
            )
        }
        Node::Out(Out::YArray(a)) => {
            return Expanded::Array(a.iter(txn).map(|v| (None, Node::Out(v))).collect())
        }
        Node::Out(Out::YText(t)) => return Expanded::Leaf(Value::String(t.get_string(txn))),
        Node::Out(Out::YXmlText(t)) => return Expanded::Leaf(Value::String(t.get_string(txn))),
        Node::Out(Out::YXmlElement(e)) => {
            return Expanded::Leaf(Value::String(xml_string(txn, XmlOut::Element(e))))
        }
        Node::Out(Out::YXmlFragment(f)) => {
            return Expanded::Leaf(Value::String(xml_string(txn, XmlOut::Fragment(f))))
        }
        Node::Out(Out::YDoc(_)) | Node::Out(Out::UndefinedRef(_)) => {
            return Expanded::Leaf(Value::Null)
        }
    };
    match &any {
        Any::Array(items) => {
            Expanded::Array(items.iter().map(|v| (None, Node::Any(v.clone()))).collect())
        }
        Any::Map(map) => Expanded::Object(
            map.iter()
                .map(|(k, v)| (Some(k.clone()), Node::Any(v.clone())))
                .collect(),
        ),
        scalar => Expanded::Leaf(scalar_to_json(scalar).unwrap_or(Value::Null)),
    }
}

/// Converts a node to JSON with an explicit stack: no recursion however deep it nests (the
/// document's depth is bounded anyway; stored 0.1.0 documents may not be). Gives PostgreSQL a
/// chance to cancel every few thousand nodes.
fn node_to_json<T: ReadTxn>(txn: &T, root: Node, visited: &mut usize) -> serde_json::Value {
    use serde_json::{Map as JsonMap, Value};
    enum Container {
        Object(JsonMap<String, Value>),
        Array(Vec<Value>),
    }
    struct Frame {
        key: Option<String>,
        container: Container,
        todo: std::vec::IntoIter<(Option<String>, Node)>,
    }
    fn put(frame: &mut Frame, key: Option<String>, value: Value) {
        match &mut frame.container {
            Container::Object(o) => {
                o.insert(key.unwrap_or_default(), value);
            }
            Container::Array(a) => a.push(value),
        }
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut next = Some((None, root));
    loop {
        if let Some((key, node)) = next.take() {
            *visited += 1;
            if (*visited).is_multiple_of(INTERRUPT_EVERY) {
                interrupt_point();
            }
            let (container, children) = match expand(txn, node) {
                Expanded::Leaf(v) => match stack.last_mut() {
                    Some(top) => {
                        put(top, key, v);
                        continue;
                    }
                    None => return v,
                },
                Expanded::Object(c) => (Container::Object(JsonMap::new()), c),
                Expanded::Array(c) => (Container::Array(Vec::with_capacity(c.len())), c),
            };
            stack.push(Frame {
                key,
                container,
                todo: children.into_iter(),
            });
        }
        let Some(top) = stack.last_mut() else {
            return Value::Null;
        };
        if let Some(child) = top.todo.next() {
            next = Some(child);
            continue;
        }
        let Some(done) = stack.pop() else {
            return Value::Null;
        };
        let value = match done.container {
            Container::Object(o) => Value::Object(o),
            Container::Array(a) => Value::Array(a),
        };
        match stack.last_mut() {
            Some(parent) => put(parent, done.key, value),
            None => return value,
        }
    }
}

/// The XML string of a node (as yrs's `get_string`), walked with an explicit stack.
pub(crate) fn xml_string<T: ReadTxn>(txn: &T, node: XmlOut) -> String {
    use std::fmt::Write;
    enum Step {
        Open(XmlOut),
        Close(std::sync::Arc<str>),
    }
    let mut out = String::new();
    let mut stack = vec![Step::Open(node)];
    let mut visited = 0usize;
    while let Some(step) = stack.pop() {
        visited += 1;
        if visited.is_multiple_of(INTERRUPT_EVERY) {
            interrupt_point();
        }
        let children: Vec<XmlOut> = match step {
            Step::Close(tag) => {
                let _ = write!(out, "</{tag}>");
                continue;
            }
            Step::Open(XmlOut::Text(t)) => {
                out.push_str(&t.get_string(txn));
                continue;
            }
            Step::Open(XmlOut::Element(e)) => {
                // `tag()` panics on a node that is not really an element (the fuzzer
                // made one); such a node reads with an empty tag.
                let tag = e.try_tag().cloned().unwrap_or_else(|| "".into());
                let _ = write!(out, "<{tag}");
                for (k, v) in e.attributes(txn) {
                    let _ = write!(out, " {k}=\"{}\"", v.to_string(txn));
                }
                out.push('>');
                stack.push(Step::Close(tag));
                e.children(txn).collect()
            }
            Step::Open(XmlOut::Fragment(f)) => f.children(txn).collect(),
        };
        stack.extend(children.into_iter().rev().map(Step::Open));
    }
    out
}

fn read_root<T: ReadTxn>(txn: &T, root: &Root, visited: &mut usize) -> serde_json::Value {
    use serde_json::Value;
    match root {
        Root::Missing | Root::Empty | Root::Other(_) => Value::Null,
        Root::Text(t) => Value::String(t.get_string(txn)),
        Root::XmlText(t) => Value::String(t.get_string(txn)),
        Root::Xml(x) => Value::String(xml_string(txn, XmlOut::Fragment(x.clone()))),
        Root::Map(m) => node_to_json(txn, Node::Out(Out::YMap(m.clone())), visited),
        Root::Array(a) => node_to_json(txn, Node::Out(Out::YArray(a.clone())), visited),
    }
}

/// The text of a root field ('' when absent). XML fragments read as their XML string.
pub fn read_text(doc: &Doc, doc_name: &str, field: &str) -> Result<String> {
    let outcome = guarded(|| {
        let txn = doc.transact();
        match root(&txn, field) {
            Root::Missing | Root::Empty => Ok(String::new()),
            Root::Text(t) => Ok(t.get_string(&txn)),
            Root::XmlText(t) => Ok(t.get_string(&txn)),
            Root::Xml(x) => Ok(xml_string(&txn, XmlOut::Fragment(x))),
            other => Err(CollabError::WrongType {
                doc: doc_name.to_string(),
                field: field.to_string(),
                actual: other.kind(),
            }),
        }
    });
    outcome.unwrap_or_else(|panic| Err(CollabError::Internal(panic)))
}

/// Every root type as JSON: text and XML as strings, maps as objects, arrays as arrays.
pub fn to_json(doc: &Doc) -> Result<serde_json::Value> {
    guarded(|| {
        let txn = doc.transact();
        let mut names: Vec<String> = txn.root_refs().map(|(name, _)| name.to_string()).collect();
        names.sort();
        let mut object = serde_json::Map::new();
        let mut visited = 0usize;
        for name in names {
            let root = root(&txn, &name);
            if matches!(root, Root::Missing | Root::Empty) {
                continue;
            }
            object.insert(name, read_root(&txn, &root, &mut visited));
        }
        serde_json::Value::Object(object)
    })
    .map_err(CollabError::Internal)
}

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

    const NESTING: u32 = 64;

    fn load<'a>(
        name: &str,
        checkpoint: Option<&'a [u8]>,
        updates: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Doc> {
        super::load(name, checkpoint, updates, NESTING).map(|(doc, _)| doc)
    }

    fn apply_stored<'a>(
        doc: &Doc,
        name: &str,
        updates: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        super::apply_stored(doc, &mut Depths::default(), name, updates, NESTING)
    }

    fn integrate_bytes(doc: &Doc, bytes: &[u8]) -> Result<Option<Vec<u8>>> {
        let u = decode_batch(&[bytes], 1 << 20, NESTING)?;
        integrate(doc, &mut Depths::default(), &[bytes], u, "d", NESTING)
    }

    fn update_from(f: impl FnOnce(&Doc)) -> (Doc, Vec<u8>) {
        let doc = new_doc();
        f(&doc);
        let bytes = state(&doc);
        (doc, bytes)
    }

    fn typed(text: &str) -> Vec<u8> {
        update_from(|d| {
            let t = d.get_or_insert_text("content");
            t.insert(&mut d.transact_mut(), 0, text);
        })
        .1
    }

    #[test]
    fn names_are_one_to_255_characters_without_controls() {
        assert!(validate_name("notes/2024 ünïcode").is_ok());
        assert!(validate_name(&"é".repeat(255)).is_ok());
        assert!(matches!(
            validate_name(""),
            Err(CollabError::InvalidName(_))
        ));
        assert!(validate_name(&"x".repeat(256)).is_err());
        assert!(validate_name("tab\there").is_err());
        assert!(validate_name("nul\0").is_err());
    }

    #[test]
    fn decode_rejects_empty_oversized_and_garbage() {
        assert_eq!(
            decode_update(&[], 100, NESTING).err(),
            Some(CollabError::EmptyUpdate)
        );
        assert!(matches!(
            decode_update(&typed("abc"), 4, NESTING),
            Err(CollabError::UpdateTooLarge { .. })
        ));
        assert!(matches!(
            decode_update(&[0xff, 0xff, 0xff], 100, NESTING),
            Err(CollabError::MalformedUpdate(_))
        ));
        assert!(decode_update(&typed("abc"), 1000, NESTING).is_ok());
    }

    #[test]
    fn integrate_then_read_text_and_json() {
        let doc = new_doc();
        integrate_bytes(&doc, &typed("hello")).expect("integrates");
        assert_eq!(read_text(&doc, "d", "content").expect("text"), "hello");
        assert_eq!(read_text(&doc, "d", "absent").expect("text"), "");
        let json = to_json(&doc).expect("json");
        assert_eq!(json, serde_json::json!({"content": "hello"}));
    }

    #[test]
    fn json_covers_maps_arrays_and_xml() {
        let (_, bytes) = update_from(|d| {
            let m = d.get_or_insert_map("meta");
            let a = d.get_or_insert_array("list");
            let x = d.get_or_insert_xml_fragment("prosemirror");
            let mut txn = d.transact_mut();
            m.insert(&mut txn, "title", "Hi");
            m.insert(&mut txn, "n", 3.0);
            a.push_back(&mut txn, 1.0);
            a.push_back(&mut txn, "two");
            let p = x.push_back(&mut txn, yrs::XmlElementPrelim::empty("paragraph"));
            p.push_back(&mut txn, yrs::XmlTextPrelim::new("para"));
        });
        let doc = load("d", Some(&bytes), []).expect("loads");
        let json = to_json(&doc).expect("json");
        assert_eq!(json["meta"], serde_json::json!({"title": "Hi", "n": 3.0}));
        assert_eq!(json["list"], serde_json::json!([1.0, "two"]));
        assert_eq!(json["prosemirror"], "<paragraph>para</paragraph>");
        let err = read_text(&doc, "d", "meta").expect_err("map is not text");
        assert!(matches!(err, CollabError::WrongType { actual: "map", .. }));
        assert!(insert_text(&doc, "d", "list", 0, "x").is_err());
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

    #[test]
    fn pending_updates_are_kept_in_state() {
        let a = new_doc();
        let first = insert_text(&a, "d", "content", 0, "ab")
            .expect("i")
            .expect("u");
        let second = insert_text(&a, "d", "content", 2, "cd")
            .expect("i")
            .expect("u");
        let b = new_doc();
        integrate_bytes(&b, &second).expect("pending ok");
        assert_eq!(read_text(&b, "d", "content").expect("t"), "");
        // The pending struct survives a round trip through the encoded state.
        let c = load("d", Some(&state(&b)), [first.as_slice()]).expect("load");
        assert_eq!(read_text(&c, "d", "content").expect("t"), "abcd");
    }

    #[test]
    fn diff_against_a_state_vector_is_what_the_peer_lacks() {
        let a = new_doc();
        insert_text(&a, "d", "content", 0, "hello").expect("i");
        let b = load("d", Some(&state(&a)), []).expect("copy");
        insert_text(&a, "d", "content", 5, " world").expect("i");
        let d = diff(&a, &state_vector(&b)).expect("diff");
        assert!(d.len() < state(&a).len());
        apply_stored(&b, "d", [d.as_slice()]).expect("apply");
        assert_eq!(read_text(&b, "d", "content").expect("t"), "hello world");
        assert!(matches!(
            diff(&a, &[0xff, 0xff]),
            Err(CollabError::MalformedStateVector(_))
        ));
    }

    #[test]
    fn merged_batch_equals_its_parts() {
        let a = new_doc();
        let u1 = insert_text(&a, "d", "content", 0, "x")
            .expect("i")
            .expect("u");
        let u2 = insert_text(&a, "d", "content", 1, "y")
            .expect("i")
            .expect("u");
        let merged = merge_updates(&[&u1, &u2]).expect("merges");
        let b = load("d", Some(&merged), []).expect("load");
        assert_eq!(read_text(&b, "d", "content").expect("t"), "xy");
    }
}
