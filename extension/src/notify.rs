//! NOTIFY payloads on channel `collab` (format documented in the README).
//!
//! The statement trigger on `collab.updates` sends one notification per batch. The writer
//! stashes the batch (as one update) here just before its INSERT, so the trigger neither
//! captures a transition table nor re-merges the rows.

use std::cell::RefCell;

use base64::Engine;
use serde_json::json;

use crate::merge;
use crate::storage::DocRow;

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
pub const MAX_PAYLOAD: usize = 7999;
pub const CHANNEL: &str = "collab";

/// Batches larger than this are not merged for inlining: listeners fetch them instead.
const MERGE_LIMIT: usize = 256 * 1024;

struct Stash {
    name: String,
    seq_from: i64,
    seq_to: i64,
    origin: Option<String>,
    merged: Option<Vec<u8>>,
}

thread_local! {
    static STASH: RefCell<Option<Stash>> = const { RefCell::new(None) };
}

fn merged(updates: &[&[u8]]) -> Option<Vec<u8>> {
    let total: usize = updates.iter().map(|u| u.len()).sum();
    if total > MERGE_LIMIT {
        return None;
    }
    merge::merge_updates(updates)
}

/// Remembers the batch about to be inserted. `combined` is the batch as one update when the
/// writer has it already (yrs encodes what a transaction changed far faster than it merges).
pub fn stash(
    row: &DocRow,
    seq_from: i64,
    seq_to: i64,
    updates: &[Vec<u8>],
    combined: Option<&[u8]>,
    origin: Option<&str>,
) {
    let merged = match combined {
        Some(c) => Some(c.to_vec()),
        None => merged(&updates.iter().map(Vec::as_slice).collect::<Vec<_>>()),
    };
    let stash = Stash {
        name: row.name.clone(),
        seq_from,
        seq_to,
        origin: origin.map(str::to_string),
        merged,
    };
    STASH.with(|s| *s.borrow_mut() = Some(stash));
}

pub fn clear_stash() {
    // Also called from transaction callbacks, which must never panic.
    STASH.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            *s = None;
        }
    });
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn update_payload(
    name: &str,
    seq_from: i64,
    seq_to: i64,
    origin: Option<&str>,
    update: Option<&[u8]>,
) -> String {
    let mut body = json!({
        "type": "update",
        "doc": name,
        "seq_from": seq_from,
        "seq_to": seq_to,
        "origin": origin,
    });
    if let Some(update) = update {
        // base64 grows by 4/3; skip the encoding when it cannot fit anyway.
        if update.len() * 4 / 3 < MAX_PAYLOAD {
            body["update"] = json!(b64(update));
            let text = body.to_string();
            if text.len() <= MAX_PAYLOAD {
                return text;
            }
            if let Some(map) = body.as_object_mut() {
                map.remove("update");
            }
        }
    }
    body.to_string()
}

/// Takes the payload of the batch stashed by the writer of the current statement.
pub fn take() -> Option<String> {
    let stash = STASH.with(|s| s.borrow_mut().take())?;
    Some(update_payload(
        &stash.name,
        stash.seq_from,
        stash.seq_to,
        stash.origin.as_deref(),
        stash.merged.as_deref(),
    ))
}

/// An ephemeral message (awareness, presence) for everyone following `name`; stored nowhere.
pub fn broadcast_payload(
    name: &str,
    payload: &[u8],
    origin: Option<&str>,
) -> crate::error::Result<String> {
    let text = json!({
        "type": "broadcast",
        "doc": name,
        "origin": origin,
        "payload": b64(payload),
    })
    .to_string();
    if text.len() > MAX_PAYLOAD {
        return Err(crate::error::CollabError::PayloadTooLarge {
            size: text.len(),
            limit: MAX_PAYLOAD,
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_updates_are_inlined_and_large_ones_are_not() {
        let p = update_payload("d", 1, 1, Some("o"), Some(&[1, 2, 3]));
        let v: serde_json::Value = serde_json::from_str(&p).expect("json");
        assert_eq!(v["update"], "AQID");
        assert_eq!(v["seq_from"], 1);
        assert_eq!(v["origin"], "o");
        let big = vec![7u8; 6000];
        let p = update_payload("d", 1, 9, None, Some(&big));
        let v: serde_json::Value = serde_json::from_str(&p).expect("json");
        assert!(v.get("update").is_none());
        assert_eq!(v["seq_to"], 9);
        assert!(p.len() <= MAX_PAYLOAD);
    }

    #[test]
    fn broadcast_refuses_what_cannot_be_notified() {
        assert!(broadcast_payload("d", &[0; 100], None).is_ok());
        assert!(broadcast_payload("d", &[0; 7000], None).is_err());
    }
}
