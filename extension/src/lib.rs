//! pg_collab: collaborative (Yjs) documents stored, validated and merged inside PostgreSQL.
//!
//! Layout: `api` holds the SQL surface (thin `#[pg_extern]` wrappers); `merge` the pure yrs
//! logic (validating, integrating, loading); `content` reading documents as text, XML or JSON;
//! `edit` SQL text edits as Yjs updates; `scan` the byte-level check of every Yjs byte string;
//! `depth` the nesting of shared types; `storage` the SPI queries on the log; `pack` how a log
//! row holds several updates; `cache` the per-backend decoded documents; `notify` the sealed
//! NOTIFY payloads; `rights` who may do what, and running as the owner; `guard` the DROP
//! EXTENSION guard; `guc` the settings; `error` the SQLSTATE mapping.

use pgrx::prelude::*;

mod api;
mod authorship;
mod cache;
mod content;
mod depth;
mod edit;
mod error;
mod guard;
mod guc;
mod merge;
mod notify;
mod pack;
mod plaintext;
mod restore;
mod rights;
mod storage;

/// The byte-level check of Yjs byte strings (its own crate: the bridge runs it too).
pub(crate) use collab_scan as scan;

#[cfg(test)]
mod fuzz;
#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;
#[cfg(any(test, feature = "pg_test"))]
mod pg_tests_data;
#[cfg(any(test, feature = "pg_test"))]
mod pg_tests_log;

::pgrx::pg_module_magic!(name, version);

// Tables, the NOTIFY trigger and grants come first; the generated functions go after them.
pgrx::extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
// Comments, privileges and the first notification key need the functions, so they run last.
pgrx::extension_sql_file!("../../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    cache::register_callbacks();
    rights::register_callbacks();
    merge::set_interrupt_point(check_interrupts);
}

/// What long loops in `merge` call: a pending cancel or timeout raises its ERROR here.
fn check_interrupts() {
    pgrx::check_for_interrupts!();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
