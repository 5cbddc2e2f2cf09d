//! Who may do what: the caller's right on a document (from the collab_* roles and the rules in
//! `collab.access_rules`), and running the extension's own statements as the table owner.
//!
//! The SQL functions are SECURITY INVOKER with a fixed `search_path`: they see the real caller
//! (`GetUserId()`, which honours `SET ROLE`), check its right, and only then switch the user id
//! to the owner of the tables for their own SPI statements (and the triggers those fire), the
//! way PostgreSQL itself runs foreign-key checks. The switch is undone by a guard when the
//! statement returns or unwinds, and by PostgreSQL's abort processing on ERROR.
//!
//! The rules and the identities they need are cached per backend and dropped when any backend
//! changes `collab.access_rules` or `collab.notification_keys`: a statement trigger on those
//! tables queues a relcache invalidation, which every backend receives at commit.

use std::cell::RefCell;
use std::ffi::CString;

use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;

use crate::error::{CollabError, Result};

/// What a role may do with a document; each level includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Right {
    /// state, text, diff, history, updates_since, document_info.
    Read = 1,
    /// apply_update(s), the text edits, broadcast.
    Write = 2,
    /// compact, prune, delete_document, recreate_document.
    Admin = 3,
}

impl Right {
    pub fn parse(s: &str) -> Option<Right> {
        match s {
            "read" => Some(Right::Read),
            "write" => Some(Right::Write),
            "admin" => Some(Right::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        }
    }
}

/// A document name pattern: `*` alone matches every document, `prefix*` the names that start
/// with the prefix, anything else exactly that name. No other wildcard: names may contain any
/// character, and a rule must mean one thing.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

struct Rule {
    role: Oid,
    pattern: String,
    right: Right,
}

/// Everything the checks need, loaded once per backend (and after each invalidation).
struct Loaded {
    owner: Oid,
    tables: [Oid; 3],
    /// collab_reader, collab_writer, collab_admin, collab_bridge (InvalidOid if dropped).
    reader: Oid,
    writer: Oid,
    admin: Oid,
    bridge: Oid,
    rules: Vec<Rule>,
}

thread_local! {
    static LOADED: RefCell<Option<std::rc::Rc<Loaded>>> = const { RefCell::new(None) };
    static KEY_EPOCH: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn spi_err(e: pgrx::spi::SpiError) -> CollabError {
    CollabError::Internal(format!("SPI: {e}"))
}

fn role_oid(name: &str) -> Oid {
    let Ok(c) = CString::new(name) else {
        return Oid::INVALID;
    };
    unsafe { pg_sys::get_role_oid(c.as_ptr(), true) }
}

fn load() -> Result<std::rc::Rc<Loaded>> {
    if let Some(l) = LOADED.with(|l| l.borrow().clone()) {
        return Ok(l);
    }
    // Looked up by name in the catalogs, which every role may read (a cast to regclass would
    // need USAGE on the schema).
    let found: Vec<(String, Oid, Oid)> = Spi::connect(|c| {
        let t = c.select(
            "SELECT c.relname::pg_catalog.text, c.oid, c.relowner FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'collab' \
               AND c.relname IN ('documents', 'access_rules', 'notification_keys')",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Oid>(2)?.unwrap_or(Oid::INVALID),
                r.get::<Oid>(3)?.unwrap_or(Oid::INVALID),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(spi_err)?;
    let table = |name: &str| {
        found
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, oid, owner)| (*oid, *owner))
            .ok_or_else(|| CollabError::Internal(format!("table collab.{name} is missing")))
    };
    let (documents, owner) = table("documents")?;
    let (rules_table, _) = table("access_rules")?;
    let (keys_table, _) = table("notification_keys")?;
    if owner == Oid::INVALID {
        return Err(CollabError::Internal(
            "collab.documents has no owner".into(),
        ));
    }
    let raw: Vec<(String, String, String)> = with_user(owner, || {
        Spi::connect(|c| {
            let t = c.select(
                "SELECT role::pg_catalog.text, pattern, level FROM collab.access_rules",
                None,
                &[],
            )?;
            let mut out = Vec::new();
            for r in t {
                out.push((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<String>(3)?.unwrap_or_default(),
                ));
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        })
    })
    .map_err(spi_err)?;
    let rules = raw
        .into_iter()
        .filter_map(|(role, pattern, level)| {
            // A rule naming a role that no longer exists grants nothing.
            let role = role_oid(&role);
            let right = Right::parse(&level)?;
            (role != Oid::INVALID).then_some(Rule {
                role,
                pattern,
                right,
            })
        })
        .collect();
    let loaded = std::rc::Rc::new(Loaded {
        owner,
        tables: [documents, rules_table, keys_table],
        reader: role_oid("collab_reader"),
        writer: role_oid("collab_writer"),
        admin: role_oid("collab_admin"),
        bridge: role_oid("collab_bridge"),
        rules,
    });
    LOADED.with(|l| *l.borrow_mut() = Some(loaded.clone()));
    Ok(loaded)
}

fn has_privs(member: Oid, role: Oid) -> bool {
    role != Oid::INVALID && unsafe { pg_sys::has_privs_of_role(member, role) }
}

/// The current user (after `SET ROLE`, before any switch of ours).
pub fn caller() -> Oid {
    unsafe { pg_sys::GetUserId() }
}

/// The name of the caller (after `SET ROLE`): the default author of its writes.
pub fn caller_name() -> String {
    role_name(caller())
}

/// The best right `role` holds on document `name`, if any. Superusers hold every right.
fn right_of(l: &Loaded, role: Oid, name: &str) -> Option<Right> {
    if has_privs(role, l.admin) || has_privs(role, l.owner) {
        return Some(Right::Admin);
    }
    let mut best = if has_privs(role, l.writer) || has_privs(role, l.bridge) {
        Some(Right::Write)
    } else if has_privs(role, l.reader) {
        Some(Right::Read)
    } else {
        None
    };
    for rule in &l.rules {
        if Some(rule.right) > best
            && pattern_matches(&rule.pattern, name)
            && has_privs(role, rule.role)
        {
            best = Some(rule.right);
        }
    }
    best
}

/// Refuses (42501) unless the caller holds `right` on document `name`.
pub fn require(name: &str, right: Right) -> Result<()> {
    let l = load()?;
    let role = caller();
    if right_of(&l, role, name).is_some_and(|r| r >= right) {
        return Ok(());
    }
    Err(CollabError::Denied {
        role: role_name(role),
        right: right.as_str(),
        doc: name.to_string(),
    })
}

/// Whether the caller may read document `name` (for listings, which skip the others).
pub fn may_read(name: &str) -> Result<bool> {
    let l = load()?;
    Ok(right_of(&l, caller(), name).is_some())
}

/// Whether the caller is the owner of the tables or a member of it (superusers are): the only
/// roles whose direct INSERTs into the log are accepted, which is what a restore does.
pub fn caller_is_owner() -> Result<bool> {
    let l = load()?;
    Ok(has_privs(caller(), l.owner))
}

fn role_name(role: Oid) -> String {
    unsafe {
        let p = pg_sys::GetUserNameFromId(role, true);
        if p.is_null() {
            return format!("role {}", role.to_u32());
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Restores the user id and security context when dropped (also while unwinding).
struct Restore {
    user: Oid,
    context: i32,
}

impl Drop for Restore {
    fn drop(&mut self) {
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

fn with_user<T>(user: Oid, f: impl FnOnce() -> T) -> T {
    let mut prev_user = Oid::INVALID;
    let mut prev_context = 0;
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut prev_user, &mut prev_context);
        // SECURITY_LOCAL_USERID_CHANGE: nothing run meanwhile may SET ROLE its way out.
        pg_sys::SetUserIdAndSecContext(
            user,
            prev_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let _restore = Restore {
        user: prev_user,
        context: prev_context,
    };
    f()
}

/// Runs `f` (the extension's own statements on its tables) as the owner of the tables. Call
/// only after the caller's right was checked.
pub fn as_owner<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let owner = load()?.owner;
    with_user(owner, f)
}

/// Incremented whenever the cached rules are dropped, so `notify` knows to reload its key.
pub fn key_epoch() -> u64 {
    KEY_EPOCH.with(|e| e.get())
}

fn invalidate() {
    LOADED.with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            *l = None;
        }
    });
    KEY_EPOCH.with(|e| e.set(e.get().wrapping_add(1)));
}

#[pg_guard]
unsafe extern "C-unwind" fn on_relcache(_arg: pg_sys::Datum, relid: Oid) {
    // InvalidOid: the whole relcache was reset (e.g. after a sinval overflow).
    let ours = relid == Oid::INVALID
        || LOADED.with(|l| {
            l.try_borrow()
                .ok()
                .and_then(|l| l.as_ref().map(|l| l.tables.contains(&relid)))
                .unwrap_or(true)
        });
    if ours {
        invalidate();
    }
}

pub fn register_callbacks() {
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache), pg_sys::Datum::from(0)) };
}

/// Internal, for the statement triggers on `collab.access_rules` and
/// `collab.notification_keys`: every backend drops its cached rules and key at commit.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
fn _invalidate(table: pg_sys::Oid) {
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(table) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_exact_names_prefixes_or_everything() {
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("team/*", "team/notes"));
        assert!(pattern_matches("team/*", "team/"));
        assert!(!pattern_matches("team/*", "teams/notes"));
        assert!(pattern_matches("notes", "notes"));
        assert!(!pattern_matches("notes", "notes2"));
        assert!(!pattern_matches("team/?", "team/a"));
    }

    #[test]
    fn rights_are_ordered() {
        assert!(Right::Admin > Right::Write && Right::Write > Right::Read);
        assert_eq!(Right::parse("write"), Some(Right::Write));
        assert_eq!(Right::parse("owner"), None);
    }
}
