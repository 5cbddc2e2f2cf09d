//! Decoded documents kept per backend, so that validating an update, reading text or making an
//! SQL edit costs the change and not a reload of the whole document.
//!
//! An entry is taken out of the cache while it is used and put back only when the operation
//! succeeded, so an error anywhere (PostgreSQL's or ours) simply drops it. Entries of documents
//! written by the current transaction are "dirty": they hold uncommitted updates, so a rollback
//! (of the transaction or of any subtransaction) evicts them, and a commit makes them clean.
//!
//! The cache is bounded by `collab.cache_documents` and by `collab.cache_bytes` (an estimate of
//! each document's memory). Dirty entries may be evicted too: the transaction's own rows hold
//! everything they held, and a document rebuilt from them is dirty again (the documents this
//! transaction wrote are remembered until it ends).

use std::cell::RefCell;
use std::collections::HashSet;

use pgrx::pg_sys;
use pgrx::prelude::*;
use yrs::Doc;

use crate::depth::Depths;
use crate::guc;

/// Decoded yrs documents take several times their encoded size in memory (a struct per item,
/// the block store, the text). 8 is an assumed factor, not a measured one; the memory test
/// (tests/hostile.rs) checks the backend's RSS against the budget it implies.
const BYTES_PER_ENCODED_BYTE: usize = 8;

pub struct Entry {
    pub doc_id: i64,
    /// Creation time of the row (µs), so a document re-created under a reused id never matches.
    pub created: i64,
    /// Log sequence the document reflects.
    pub seq: i64,
    pub doc: Doc,
    /// How deep shared types nest in `doc` (checked before every write).
    pub depths: Depths,
    pub dirty: bool,
    /// Encoded bytes the document was built from and has integrated since.
    pub encoded_bytes: usize,
    last_used: u64,
}

impl Entry {
    pub fn new(
        doc_id: i64,
        created: i64,
        seq: i64,
        doc: Doc,
        depths: Depths,
        encoded_bytes: usize,
    ) -> Self {
        Entry {
            doc_id,
            created,
            seq,
            doc,
            depths,
            dirty: false,
            encoded_bytes,
            last_used: 0,
        }
    }

    /// Estimated memory of the entry, for `collab.cache_bytes`.
    pub fn approx_bytes(&self) -> usize {
        self.encoded_bytes
            .saturating_mul(BYTES_PER_ENCODED_BYTE)
            .saturating_add(self.depths.approx_bytes())
    }
}

#[derive(Default)]
struct Cache {
    entries: Vec<Entry>,
    clock: u64,
    /// Documents written by the current top-level transaction.
    written: HashSet<i64>,
}

/// Notes that the current transaction wrote document `doc_id`: its entries are dirty until
/// the transaction ends, even if evicted and rebuilt meanwhile.
pub fn mark_written(doc_id: i64) {
    CACHE.with(|c| {
        c.borrow_mut().written.insert(doc_id);
    });
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// Removes and returns the entry of a document, if cached.
pub fn take(doc_id: i64, created: i64) -> Option<Entry> {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let i = c
            .entries
            .iter()
            .position(|e| e.doc_id == doc_id && e.created == created)?;
        Some(c.entries.swap_remove(i))
    })
}

/// Puts an entry back, then evicts the least recently used entries while the cache is over
/// `collab.cache_documents` or `collab.cache_bytes`.
pub fn put(mut entry: Entry) {
    let limit = guc::cache_documents();
    let budget = guc::cache_bytes();
    if limit == 0 || budget == 0 || entry.approx_bytes() > budget {
        return;
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.clock += 1;
        entry.last_used = c.clock;
        entry.dirty |= c.written.contains(&entry.doc_id);
        c.entries.retain(|e| e.doc_id != entry.doc_id);
        c.entries.push(entry);
        let mut total: usize = c.entries.iter().map(Entry::approx_bytes).sum();
        while c.entries.len() > limit || total > budget {
            let victim = c
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    let gone = c.entries.swap_remove(i);
                    total = total.saturating_sub(gone.approx_bytes());
                }
                None => break,
            }
        }
    });
}

/// Estimated bytes held by this backend's cache (for tests).
#[cfg(any(test, feature = "pg_test"))]
pub fn held_bytes() -> usize {
    CACHE.with(|c| c.borrow().entries.iter().map(Entry::approx_bytes).sum())
}

/// `top_level`: the transaction ended (not only a subtransaction), so the set of documents
/// it wrote is forgotten.
fn settle(committed: bool, top_level: bool) {
    if !committed {
        crate::notify::clear_stash();
    }
    CACHE.with(|c| {
        // Never panic in a transaction callback: if the cache is busy, leave it.
        if let Ok(mut c) = c.try_borrow_mut() {
            if committed {
                c.entries.iter_mut().for_each(|e| e.dirty = false);
            } else {
                c.entries.retain(|e| !e.dirty);
            }
            if top_level {
                c.written.clear();
            }
        }
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => settle(true, true),
        // A prepared transaction may still roll back, after this backend has moved on.
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => settle(false, true),
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // Conservative: which of the dirty entries' updates belonged to the aborted
        // subtransaction is not tracked, so all of them are rebuilt from the log.
        settle(false, false);
    }
}

pub fn register_callbacks() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}
