//! Decoded documents kept per backend, so that validating an update, reading text or making an
//! SQL edit costs the change and not a reload of the whole document.
//!
//! An entry is taken out of the cache while it is used and put back only when the operation
//! succeeded, so an error anywhere (PostgreSQL's or ours) simply drops it. Entries changed by
//! the current transaction are "dirty": they hold uncommitted updates, so a rollback (of the
//! transaction or of any subtransaction) evicts them, and a commit makes them clean again.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::prelude::*;
use yrs::Doc;

use crate::guc;

pub struct Entry {
    pub doc_id: i64,
    /// Creation time of the row (µs), so a document re-created under a reused id never matches.
    pub created: i64,
    /// Log sequence the document reflects.
    pub seq: i64,
    pub doc: Doc,
    pub dirty: bool,
    last_used: u64,
}

impl Entry {
    pub fn new(doc_id: i64, created: i64, seq: i64, doc: Doc) -> Self {
        Entry {
            doc_id,
            created,
            seq,
            doc,
            dirty: false,
            last_used: 0,
        }
    }
}

#[derive(Default)]
struct Cache {
    entries: Vec<Entry>,
    clock: u64,
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

/// Puts an entry back, evicting the least recently used clean entries above the limit.
pub fn put(mut entry: Entry) {
    let limit = guc::cache_documents();
    if limit == 0 && !entry.dirty {
        return;
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.clock += 1;
        entry.last_used = c.clock;
        c.entries.retain(|e| e.doc_id != entry.doc_id);
        c.entries.push(entry);
        while c.entries.len() > limit.max(1) {
            // Dirty entries stay until the transaction ends: they are the only copy of what
            // this transaction wrote that is already integrated.
            let victim = c
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.dirty)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    c.entries.swap_remove(i);
                }
                None => break,
            }
        }
    });
}

fn settle(committed: bool) {
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
        }
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => settle(true),
        // A prepared transaction may still roll back, after this backend has moved on.
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => settle(false),
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
        settle(false);
    }
}

pub fn register_callbacks() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}
