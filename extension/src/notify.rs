//! NOTIFY payloads on channel `collab` (format documented in the README), sealed so that only
//! holders of the notification key can read them or make new ones.
//!
//! The statement trigger on `collab.updates` sends one notification per batch. The writer
//! stashes the batch (as one update) here just before its INSERT, so the trigger neither
//! captures a transition table nor re-merges the rows.
//!
//! Any role that can connect may `LISTEN collab` and `pg_notify('collab', ...)`: PostgreSQL has
//! no privilege on channels. So every payload is `v1.<key id>.<base64url(nonce || ciphertext)>`,
//! XChaCha20-Poly1305 with a random 24-byte nonce under a 32-byte key kept in the owner-only
//! table `collab.notification_keys` (bridges fetch it through `collab.notification_keys()`,
//! granted to `collab_bridge`). The plaintext is a JSON header, with the time it was made
//! (`ts`, ms since the epoch) so receivers can refuse old replays, then, after a NUL byte, the
//! raw bytes of the inline update or broadcast payload (no base64 inside the ciphertext).

use std::cell::RefCell;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use pgrx::prelude::*;
use rand::TryRngCore;
use serde_json::json;

use crate::error::{CollabError, Result};
use crate::merge;
use crate::rights;
use crate::storage::DocRow;

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
pub const MAX_PAYLOAD: usize = 7999;
pub const CHANNEL: &str = "collab";
const NONCE: usize = 24;
const TAG: usize = 16;
/// `v1.<id>.`: the id is an int4.
const PREFIX_MAX: usize = 3 + 11 + 1;

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
    updates: &[&[u8]],
    combined: Option<&[u8]>,
    origin: Option<&str>,
) {
    let merged = match combined {
        Some(c) => Some(c.to_vec()),
        None => merged(updates),
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Length of a sealed payload whose plaintext is `plain` bytes long (unpadded base64).
fn sealed_len(plain: usize) -> usize {
    PREFIX_MAX + (NONCE + plain + TAG).div_ceil(3) * 4
}

/// The plaintext: JSON header, then NUL and the raw bytes when there are any.
fn plaintext(header: &serde_json::Value, bytes: Option<&[u8]>) -> Vec<u8> {
    let mut out = header.to_string().into_bytes();
    if let Some(b) = bytes {
        out.push(0);
        out.extend_from_slice(b);
    }
    out
}

/// Encrypts `plain` under key `id`.
pub fn seal_with(id: i32, key: &[u8; 32], plain: &[u8]) -> Result<String> {
    let mut nonce = [0u8; NONCE];
    rand::rngs::OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|e| CollabError::Internal(format!("no randomness: {e}")))?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let sealed = cipher
        .encrypt(&XNonce::from(nonce), plain)
        .map_err(|_| CollabError::Internal("encryption failed".into()))?;
    let mut body = Vec::with_capacity(NONCE + sealed.len());
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&sealed);
    Ok(format!(
        "v1.{id}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
    ))
}

struct Key {
    epoch: u64,
    id: i32,
    key: [u8; 32],
}

thread_local! {
    static KEY: RefCell<Option<Key>> = const { RefCell::new(None) };
}

/// The newest notification key, cached until `collab.notification_keys` changes.
fn current_key() -> Result<(i32, [u8; 32])> {
    let epoch = rights::key_epoch();
    if let Some(k) = KEY.with(|k| {
        k.borrow()
            .as_ref()
            .filter(|k| k.epoch == epoch)
            .map(|k| (k.id, k.key))
    }) {
        return Ok(k);
    }
    let (id, bytes) = rights::as_owner(|| {
        Spi::connect(|c| {
            let t = c.select(
                "SELECT id, key FROM collab.notification_keys ORDER BY id DESC LIMIT 1",
                None,
                &[],
            )?;
            if t.is_empty() {
                return Ok(None);
            }
            let t = t.first();
            Ok::<_, pgrx::spi::SpiError>(t.get::<i32>(1)?.zip(t.get::<Vec<u8>>(2)?))
        })
        .map_err(|e| CollabError::Internal(format!("SPI: {e}")))
    })?
    .ok_or_else(|| {
        CollabError::Internal(
            "no notification key: run SELECT collab.rotate_notification_key()".into(),
        )
    })?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| CollabError::Internal("a notification key is not 32 bytes".into()))?;
    KEY.with(|k| *k.borrow_mut() = Some(Key { epoch, id, key }));
    Ok((id, key))
}

fn seal(plain: &[u8]) -> Result<String> {
    let (id, key) = current_key()?;
    seal_with(id, &key, plain)
}

/// The plaintext of an update notification: the inline update only when the sealed payload
/// fits PostgreSQL's limit.
fn update_plaintext(
    name: &str,
    seq_from: i64,
    seq_to: i64,
    origin: Option<&str>,
    update: Option<&[u8]>,
    ts: i64,
) -> Vec<u8> {
    let header = json!({
        "type": "update",
        "doc": name,
        "seq_from": seq_from,
        "seq_to": seq_to,
        "origin": origin,
        "ts": ts,
    });
    if let Some(update) = update {
        let with = plaintext(&header, Some(update));
        if sealed_len(with.len()) <= MAX_PAYLOAD {
            return with;
        }
    }
    plaintext(&header, None)
}

/// Takes the payload of the batch stashed by the writer of the current statement.
pub fn take() -> Option<Result<String>> {
    let stash = STASH.with(|s| s.borrow_mut().take())?;
    Some(seal(&update_plaintext(
        &stash.name,
        stash.seq_from,
        stash.seq_to,
        stash.origin.as_deref(),
        stash.merged.as_deref(),
        now_ms(),
    )))
}

fn broadcast_plaintext(name: &str, payload: &[u8], origin: Option<&str>) -> Result<Vec<u8>> {
    let header = json!({
        "type": "broadcast",
        "doc": name,
        "origin": origin,
        "ts": now_ms(),
    });
    let plain = plaintext(&header, Some(payload));
    let size = sealed_len(plain.len());
    if size > MAX_PAYLOAD {
        return Err(CollabError::PayloadTooLarge {
            size,
            limit: MAX_PAYLOAD,
        });
    }
    Ok(plain)
}

/// An ephemeral message (awareness, presence) for everyone following `name`; stored nowhere.
pub fn broadcast_payload(name: &str, payload: &[u8], origin: Option<&str>) -> Result<String> {
    seal(&broadcast_plaintext(name, payload, origin)?)
}

/// Tells listeners that `name` was deleted (they confirm it before acting).
pub fn deleted_payload(name: &str) -> Result<String> {
    seal(&plaintext(
        &json!({"type": "deleted", "doc": name, "ts": now_ms()}),
        None,
    ))
}

/// Sends `payload` on the channel (delivered at commit).
pub fn send(payload: &str) -> Result<()> {
    Spi::run_with_args(
        "SELECT pg_catalog.pg_notify($1, $2)",
        &[CHANNEL.into(), payload.into()],
    )
    .map_err(|e| CollabError::Internal(e.to_string()))
}

/// A fresh random key for `collab.rotate_notification_key`.
pub fn new_key() -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut key)
        .map_err(|e| CollabError::Internal(format!("no randomness: {e}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(key: &[u8; 32], payload: &str) -> Vec<u8> {
        let mut parts = payload.splitn(3, '.');
        assert_eq!(parts.next(), Some("v1"));
        assert_eq!(parts.next(), Some("7"));
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts.next().expect("body"))
            .expect("base64url");
        let nonce: [u8; NONCE] = body[..NONCE].try_into().expect("nonce");
        XChaCha20Poly1305::new(key.into())
            .decrypt(&XNonce::from(nonce), &body[NONCE..])
            .expect("opens")
    }

    #[test]
    fn sealed_payloads_open_with_the_key_only_and_differ_each_time() {
        let key = [9u8; 32];
        let a = seal_with(7, &key, b"hello").expect("seal");
        let b = seal_with(7, &key, b"hello").expect("seal");
        assert_ne!(a, b, "a fresh nonce each time");
        assert_eq!(open(&key, &a), b"hello");
        assert_eq!(a.len(), sealed_len(5) - PREFIX_MAX + "v1.7.".len());
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(a.rsplit('.').next().expect("body"))
            .expect("base64url");
        let nonce: [u8; NONCE] = body[..NONCE].try_into().expect("nonce");
        assert!(XChaCha20Poly1305::new((&[8u8; 32]).into())
            .decrypt(&XNonce::from(nonce), &body[NONCE..])
            .is_err());
    }

    #[test]
    fn small_updates_are_inlined_raw_and_large_ones_are_not() {
        let p = update_plaintext("d", 1, 1, Some("o"), Some(&[1, 2, 3]), 5);
        let nul = p.iter().position(|b| *b == 0).expect("separator");
        let v: serde_json::Value = serde_json::from_slice(&p[..nul]).expect("json");
        assert_eq!(&p[nul + 1..], &[1, 2, 3]);
        assert_eq!(v["seq_from"], 1);
        assert_eq!(v["origin"], "o");
        assert_eq!(v["ts"], 5);
        let big = vec![7u8; 6000];
        let p = update_plaintext("d", 1, 9, None, Some(&big), 5);
        assert!(!p.contains(&0));
        let v: serde_json::Value = serde_json::from_slice(&p).expect("json");
        assert_eq!(v["seq_to"], 9);
        // The largest update still inlined leaves the sealed payload within the limit.
        let fits = (1..8000)
            .rev()
            .find(|n| update_plaintext("d", 1, 1, None, Some(&vec![1u8; *n]), 5).contains(&0))
            .expect("some size fits");
        assert!(fits > 5800, "{fits}");
        assert!(
            sealed_len(update_plaintext("d", 1, 1, None, Some(&vec![1u8; fits]), 5).len())
                <= MAX_PAYLOAD
        );
    }

    #[test]
    fn broadcast_refuses_what_cannot_be_notified() {
        assert!(broadcast_plaintext("d", &[0; 100], None).is_ok());
        assert!(broadcast_plaintext("d", &[0; 6000], None).is_err());
    }
}
