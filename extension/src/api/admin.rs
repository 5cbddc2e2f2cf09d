//! Administration: per-document rights, the notification key, bringing back a deleted name.
//!
//! The rights and key functions are SECURITY DEFINER (they act on owner-only tables and need
//! no per-document check: EXECUTE is granted to `collab_admin`, or to `collab_bridge` for the
//! keys); `recreate_document` checks the caller's admin right on the document like the other
//! document functions.

use pgrx::prelude::*;

use super::{doc_name, guarded};
use crate::error::{required, CollabError, OrRaise};
use crate::rights::{self, Right};
use crate::{notify, storage};

fn spi_err(e: pgrx::spi::SpiError) -> CollabError {
    CollabError::Internal(format!("SPI: {e}"))
}

fn role_exists(role: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(role) else {
        return false;
    };
    unsafe { pgrx::pg_sys::get_role_oid(c.as_ptr(), true) != pgrx::pg_sys::Oid::INVALID }
}

/// Lets `role` (and its members) `level` ('read', 'write' or 'admin') the documents whose
/// name matches `pattern` ('*', 'prefix*' or an exact name). Replaces the level of an
/// existing rule for the same role and pattern.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn grant_access(
    role: Option<&str>,
    pattern: Option<&str>,
    level: default!(Option<&str>, "'write'"),
) {
    (|| {
        let role = required(role, "role")?;
        let pattern = required(pattern, "pattern")?;
        let level = required(level, "level")?;
        if !role_exists(role) {
            return Err(CollabError::UnknownRole(format!(
                "role \"{role}\" does not exist"
            )));
        }
        if Right::parse(level).is_none() {
            return Err(CollabError::InvalidArgument(format!(
                "invalid level \"{level}\": read, write or admin"
            )));
        }
        if pattern.is_empty() || pattern[..pattern.len() - 1].contains('*') && pattern != "*" {
            return Err(CollabError::InvalidArgument(format!(
                "invalid pattern \"{pattern}\": '*', 'prefix*' or an exact document name"
            )));
        }
        Spi::run_with_args(
            "INSERT INTO collab.access_rules (role, pattern, level) VALUES ($1, $2, $3) \
             ON CONFLICT (role, pattern) DO UPDATE SET level = EXCLUDED.level",
            &[role.into(), pattern.into(), level.into()],
        )
        .map_err(spi_err)
    })()
    .or_raise()
}

/// Removes the rule for `role` and `pattern`. Returns whether there was one.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_access(role: Option<&str>, pattern: Option<&str>) -> bool {
    (|| {
        let role = required(role, "role")?;
        let pattern = required(pattern, "pattern")?;
        Spi::get_one_with_args::<bool>(
            "WITH gone AS (DELETE FROM collab.access_rules WHERE role = $1 AND pattern = $2 \
                           RETURNING 1) SELECT count(*) > 0 FROM gone",
            &[role.into(), pattern.into()],
        )
        .map(|b| b.unwrap_or(false))
        .map_err(spi_err)
    })()
    .or_raise()
}

/// Makes a new random notification key the one notifications are sealed with, and drops all
/// but the previous one (notifications already queued under it still open). Returns its id.
/// Bridges fetch the new key when they first see its id.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn rotate_notification_key() -> i32 {
    (|| {
        let key = notify::new_key()?;
        let id = Spi::get_one_with_args::<i32>(
            "INSERT INTO collab.notification_keys (key) VALUES ($1) RETURNING id",
            &[key.to_vec().into()],
        )
        .map_err(spi_err)?
        .ok_or_else(|| CollabError::Internal("no key id".into()))?;
        Spi::run_with_args(
            "DELETE FROM collab.notification_keys WHERE id < (SELECT max(id) FROM \
             collab.notification_keys WHERE id < $1)",
            &[id.into()],
        )
        .map_err(spi_err)?;
        Ok(id)
    })()
    .or_raise()
}

/// The keys notifications are sealed with (newest first), for bridges: granted to
/// `collab_bridge` only.
#[pg_extern(security_definer, stable)]
#[search_path(pg_catalog, pg_temp)]
fn notification_keys() -> TableIterator<'static, (name!(id, i32), name!(key, Vec<u8>))> {
    let rows = Spi::connect(|c| {
        let t = c.select(
            "SELECT id, key FROM collab.notification_keys ORDER BY id DESC",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push((
                r.get::<i32>(1)?.unwrap_or(0),
                r.get::<Vec<u8>>(2)?.unwrap_or_default(),
            ));
        }
        Ok(out)
    })
    .map_err(spi_err)
    .or_raise();
    TableIterator::new(rows)
}

/// Removes the tombstone of a deleted document so that its name can be written again (from
/// empty). Returns whether the document was deleted.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn recreate_document(doc: Option<&str>) -> bool {
    (|| {
        let name = doc_name(doc)?;
        guarded(name, Right::Admin, || storage::recreate(name))
    })()
    .or_raise()
}

/// Whether the caller may `level` document `doc` ('read', 'write' or 'admin'), for
/// applications that want to check before they call.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn has_access(doc: Option<&str>, level: default!(Option<&str>, "'read'")) -> bool {
    (|| {
        let name = doc_name(doc)?;
        let level = required(level, "level")?;
        let right = Right::parse(level).ok_or_else(|| {
            CollabError::InvalidArgument(format!("invalid level \"{level}\": read, write or admin"))
        })?;
        Ok(rights::require(name, right).is_ok())
    })()
    .or_raise()
}
