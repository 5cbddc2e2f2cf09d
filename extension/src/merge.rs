//! Pure Yjs logic on top of yrs: validating and integrating updates, loading documents from
//! storage, encoding states and diffs. Reading documents is in [`crate::content`], SQL text
//! edits in [`crate::edit`]. No pgrx here, so all of it is tested with plain `#[test]`s.
//!
//! yrs has open reports of updates that decode but panic when integrated or re-encoded, so every
//! call into yrs with outside bytes runs under `catch_unwind`; a document that panicked half-way
//! is never used again (the caller drops it and rebuilds from storage).
//!
//! yrs also recurses once per nesting level when it decodes values, reads, deletes or collects
//! nested types, and a stack overflow cannot be caught. So every byte string goes through
//! [`crate::scan`] before yrs decodes it, the depth of shared types in the document is tracked
//! in [`crate::depth`] before yrs integrates anything, and the readers (JSON, XML, in
//! [`crate::content`]) walk documents with an explicit stack.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};

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

/// What the tests of this module, [`crate::content`] and [`crate::edit`] build documents with.
#[cfg(test)]
pub(crate) mod testing {
    use yrs::{Doc, Text, Transact};

    use super::*;

    pub(crate) const NESTING: u32 = 64;

    pub(crate) fn load<'a>(
        name: &str,
        checkpoint: Option<&'a [u8]>,
        updates: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Doc> {
        super::load(name, checkpoint, updates, NESTING).map(|(doc, _)| doc)
    }

    pub(crate) fn apply_stored<'a>(
        doc: &Doc,
        name: &str,
        updates: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        super::apply_stored(doc, &mut Depths::default(), name, updates, NESTING)
    }

    pub(crate) fn integrate_bytes(doc: &Doc, bytes: &[u8]) -> Result<Option<Vec<u8>>> {
        let u = decode_batch(&[bytes], 1 << 20, NESTING)?;
        integrate(doc, &mut Depths::default(), &[bytes], u, "d", NESTING)
    }

    pub(crate) fn update_from(f: impl FnOnce(&Doc)) -> (Doc, Vec<u8>) {
        let doc = new_doc();
        f(&doc);
        let bytes = state(&doc);
        (doc, bytes)
    }

    pub(crate) fn typed(text: &str) -> Vec<u8> {
        update_from(|d| {
            let t = d.get_or_insert_text("content");
            t.insert(&mut d.transact_mut(), 0, text);
        })
        .1
    }
}

#[cfg(test)]
mod tests {
    use yrs::{GetString, Text, Transact};

    use super::testing::{apply_stored, integrate_bytes, load, typed, NESTING};
    use super::*;

    /// Inserts into the text root `content` as a local edit; returns its update.
    fn insert(doc: &Doc, at: u32, s: &str) -> Vec<u8> {
        let t = doc.get_or_insert_text("content");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, at, s);
        txn.encode_update_v1()
    }

    fn text(doc: &Doc) -> String {
        let t = doc.get_or_insert_text("content");
        let txn = doc.transact();
        t.get_string(&txn)
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
    fn pending_updates_are_kept_in_state() {
        let a = new_doc();
        let first = insert(&a, 0, "ab");
        let second = insert(&a, 2, "cd");
        let b = new_doc();
        integrate_bytes(&b, &second).expect("pending ok");
        assert_eq!(text(&b), "");
        // The pending struct survives a round trip through the encoded state.
        let c = load("d", Some(&state(&b)), [first.as_slice()]).expect("load");
        assert_eq!(text(&c), "abcd");
    }

    #[test]
    fn diff_against_a_state_vector_is_what_the_peer_lacks() {
        let a = new_doc();
        insert(&a, 0, "hello");
        let b = load("d", Some(&state(&a)), []).expect("copy");
        insert(&a, 5, " world");
        let d = diff(&a, &state_vector(&b)).expect("diff");
        assert!(d.len() < state(&a).len());
        apply_stored(&b, "d", [d.as_slice()]).expect("apply");
        assert_eq!(text(&b), "hello world");
        assert!(matches!(
            diff(&a, &[0xff, 0xff]),
            Err(CollabError::MalformedStateVector(_))
        ));
    }

    #[test]
    fn merged_batch_equals_its_parts() {
        let a = new_doc();
        let u1 = insert(&a, 0, "x");
        let u2 = insert(&a, 1, "y");
        let merged = merge_updates(&[&u1, &u2]).expect("merges");
        let b = load("d", Some(&merged), []).expect("load");
        assert_eq!(text(&b), "xy");
    }
}
