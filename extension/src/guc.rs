//! Settings (`collab.*` GUCs): limits and the compaction and cache policies.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

pub static MAX_UPDATE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(4 * 1024 * 1024);
pub static COMPACT_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(256 * 1024);
pub static CACHE_DOCUMENTS: GucSetting<i32> = GucSetting::<i32>::new(32);
/// The DBA's cap on `collab.cache_documents`, which any role may set (the bridge sizes it).
pub static CACHE_DOCUMENTS_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(1024);
/// Default 512: ProseMirror/Tiptap documents nest tens of levels (lists in tables in
/// blockquotes rarely pass 30); yrs's remaining recursions (deleting and collecting nested
/// types, encoding values) then stay far inside PostgreSQL's stack (see README, Limits).
pub static MAX_NESTING: GucSetting<i32> = GucSetting::<i32>::new(512);
/// The highest `collab.max_nesting` a DBA can set: past it, yrs's recursions could approach
/// the 8 MB thread stack even with PostgreSQL's own frames below them.
pub const MAX_NESTING_CEILING: i32 = 4096;
/// Per-backend budget of the document cache, in kB (64 MB).
pub static CACHE_KB: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024);
/// Milliseconds a document's search text may lag behind its writes (0: refreshed at every
/// write, so current at commit). collab-bridge's write lanes set its `--search-lag-ms` (see api/search.rs).
pub static SEARCH_LAG_MS: GucSetting<i32> = GucSetting::<i32>::new(0);
/// The author an application records for its SQL edits (empty: the SQL role's name).
pub static AUTHOR: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);

pub fn register() {
    GucRegistry::define_int_guc(
        c"collab.search_lag",
        c"How long a document's searchable text may lag behind this session's writes.",
        c"0: every write refreshes it (current at commit). Otherwise a write refreshes it only if \
this backend has not done so within the lag; what is left stale is refreshed by the next write \
after the lag or by collab.refresh_search() (which collab-bridge calls as often as its lanes' lag).",
        &SEARCH_LAG_MS,
        0,
        60_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_string_guc(
        c"collab.author",
        c"Author recorded with this session's writes (empty: the SQL role).",
        c"Applications set it (SET LOCAL collab.author = 'alice') so that collab.history and \
collab.text_authors name their user rather than the database role. Any role may set it: it is \
the writer's claim, like the text it writes.",
        &AUTHOR,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"collab.max_update_bytes",
        c"Largest Yjs update accepted by collab.apply_update(s), in bytes.",
        c"Bigger updates are refused with SQLSTATE 54000 and nothing is stored.",
        &MAX_UPDATE_BYTES,
        16,
        1024 * 1024 * 1024,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_int_guc(
        c"collab.compact_threshold",
        c"Uncompacted log bytes after which a write also writes a checkpoint (0: never).",
        c"A checkpoint is the merged document as of a sequence; reads start from the latest one, \
so the work a cold read does stays bounded while the log itself is kept as history.",
        &COMPACT_THRESHOLD,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_int_guc(
        c"collab.cache_documents",
        c"How many decoded documents each backend keeps in memory (0: none).",
        c"A cached document makes reads and edits cost the change, not the document size.",
        &CACHE_DOCUMENTS,
        0,
        100_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"collab.cache_documents_limit",
        c"Most decoded documents a backend keeps, whatever collab.cache_documents says.",
        c"collab.cache_documents may be set by any role; this cap (superuser-settable) bounds \
the memory it can make a backend use.",
        &CACHE_DOCUMENTS_LIMIT,
        0,
        100_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"collab.max_nesting",
        c"Deepest nesting of shared types in a document, and of values inside content.",
        c"Updates that would nest deeper are refused with SQLSTATE 54001; yrs recurses once per \
level when it reads, deletes or collects nested types, so this bounds its stack use.",
        &MAX_NESTING,
        1,
        MAX_NESTING_CEILING,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"collab.cache_bytes",
        c"Memory each backend may use for decoded documents (estimated), in kB.",
        c"Past it the least recently used documents are dropped, even ones this transaction \
changed (they are rebuilt from its own rows). Only a superuser can raise it.",
        &CACHE_KB,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
}

/// `collab.author` when set and not empty.
pub fn author() -> Option<String> {
    AUTHOR
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|a| !a.is_empty())
}

pub fn search_lag() -> std::time::Duration {
    std::time::Duration::from_millis(SEARCH_LAG_MS.get().max(0) as u64)
}

pub fn max_nesting() -> u32 {
    MAX_NESTING.get().clamp(1, MAX_NESTING_CEILING) as u32
}

pub fn cache_bytes() -> usize {
    (CACHE_KB.get().max(0) as usize).saturating_mul(1024)
}

pub fn max_update_bytes() -> usize {
    MAX_UPDATE_BYTES.get().max(0) as usize
}

pub fn compact_threshold() -> i64 {
    i64::from(COMPACT_THRESHOLD.get())
}

pub fn cache_documents() -> usize {
    CACHE_DOCUMENTS
        .get()
        .min(CACHE_DOCUMENTS_LIMIT.get())
        .max(0) as usize
}
