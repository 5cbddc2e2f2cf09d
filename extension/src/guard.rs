//! The DROP EXTENSION guard: once a database holds documents, `DROP EXTENSION pg_collab`
//! without `CASCADE` must refuse instead of deleting them all.
//!
//! PostgreSQL refuses to drop an object that something outside it depends on, naming that
//! dependent object. So the first write of a backend makes sure the view
//! `collab.stored_documents` (the live documents, owner-only) exists *outside* the extension:
//! created by a function, not by the install script, it is no member of it, and
//!
//! ```text
//! ERROR:  cannot drop extension pg_collab because other objects depend on it
//! DETAIL:  view collab.stored_documents depends on table collab.documents
//! HINT:  Use DROP ... CASCADE to drop the dependent objects too.
//! ```
//!
//! pg_dump keeps the view (it is an ordinary object), so a restored database is guarded too.

use std::cell::Cell;

use pgrx::prelude::*;

use crate::error::{CollabError, Result};

thread_local! {
    static CHECKED: Cell<bool> = const { Cell::new(false) };
}

/// Serialises the creation between backends writing their first documents at once.
const LOCK_KEY: i64 = 0x636f_6c6c_6162; // "collab"

/// Creates the guard view if it is missing; checked once per backend. Runs as the owner.
pub fn ensure() -> Result<()> {
    if CHECKED.with(Cell::get) {
        return Ok(());
    }
    let exists = Spi::get_one::<bool>(
        "SELECT pg_catalog.to_regclass('collab.stored_documents') IS NOT NULL",
    )
    .map_err(|e| CollabError::Internal(format!("SPI: {e}")))?
    .unwrap_or(false);
    if !exists {
        Spi::run_with_args(
            "SELECT pg_catalog.pg_advisory_xact_lock($1)",
            &[LOCK_KEY.into()],
        )
        .and_then(|_| {
            // Another backend may have made it while we waited for the lock.
            Spi::run(
                "DO $$ BEGIN \
                       IF pg_catalog.to_regclass('collab.stored_documents') IS NULL THEN \
                         CREATE VIEW collab.stored_documents AS \
                           SELECT name, head_seq, log_bytes, created_at, updated_at \
                           FROM collab.documents WHERE deleted_at IS NULL; \
                         COMMENT ON VIEW collab.stored_documents IS \
                           'The documents this database holds. Made by pg_collab with the first \
                            document and not part of the extension, so that DROP EXTENSION \
                            pg_collab refuses unless CASCADE, which deletes every document.'; \
                       END IF; \
                     END $$",
            )
        })
        .map_err(|e| CollabError::Internal(format!("SPI: {e}")))?;
    }
    CHECKED.with(|c| c.set(true));
    Ok(())
}
