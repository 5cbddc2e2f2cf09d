//! NOTIFY payloads on channel `collab` (format documented in the README).
//!
//! The statement trigger on `collab.updates` sends one notification per batch. When the batch
//! came through `collab.apply_updates` (or an SQL edit), the writer has stashed the merged
//! batch here just before its INSERT, so the trigger need not re-aggregate the rows.

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
    doc_id: i64,
    name: String,
    seq_from: i64,
    seq_to: i64,
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

pub fn stash(row: &DocRow, seq_from: i64, seq_to: i64, updates: &[Vec<u8>]) {
    let slices: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
    let stash = Stash {
        doc_id: row.id,
        name: row.name.clone(),
        seq_from,
        seq_to,
        merged: merged(&slices),
    };
    STASH.with(|s| *s.borrow_mut() = Some(stash));
}

pub fn clear_stash() {
    STASH.with(|s| *s.borrow_mut() = None);
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

/// The payload for rows `seq_from..=seq_to` of document `doc_id`. Uses the writer's stash when
/// it matches; otherwise needs the rows' updates (returns None to ask for them).
pub fn payload_for(
    doc_id: i64,
    name: Option<&str>,
    seq_from: i64,
    seq_to: i64,
    origin: Option<&str>,
    updates: Option<&[&[u8]]>,
) -> Option<String> {
    let from_stash = STASH.with(|s| {
        let s = s.borrow();
        let s = s.as_ref()?;
        (s.doc_id == doc_id && s.seq_from == seq_from && s.seq_to == seq_to)
            .then(|| update_payload(&s.name, seq_from, seq_to, origin, s.merged.as_deref()))
    });
    if from_stash.is_some() {
        return from_stash;
    }
    let updates = updates?;
    let name = name?;
    Some(update_payload(
        name,
        seq_from,
        seq_to,
        origin,
        merged(updates).as_deref(),
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
