//! Notification payloads on channel `collab`: opening sealed payloads into room events.
//!
//! Any role that can connect to the database may `pg_notify('collab', ...)`, so the bridge
//! believes only what opens with a notification key (XChaCha20-Poly1305; keys fetched with
//! `collab.notification_keys()`, which only `collab_bridge` may call). A payload is
//! `v1.<key id>.<base64url(nonce || ciphertext)>`; the plaintext is a JSON header, then a NUL
//! byte and the raw inline update or broadcast payload. What fails to open is dropped.
//!
//! Sealing stops forgeries, not replays of genuine payloads captured with `LISTEN`; those are
//! harmless by construction: updates are idempotent and their sequences already known, old
//! broadcasts are dropped by age ([`age_ms`]), and a `deleted` is confirmed against
//! the database before any client is closed (the listener does that).

use std::collections::HashMap;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::Deserialize;

use crate::fanout::RoomEvent;

const NONCE: usize = 24;

/// Notification keys by id.
#[derive(Default, Clone)]
pub struct Keys(HashMap<i32, XChaCha20Poly1305>);

impl Keys {
    /// From the rows of `collab.notification_keys()`; keys that are not 32 bytes are skipped.
    pub fn new(rows: impl IntoIterator<Item = (i32, Vec<u8>)>) -> Keys {
        Keys(
            rows.into_iter()
                .filter_map(|(id, key)| Some((id, XChaCha20Poly1305::new_from_slice(&key).ok()?)))
                .collect(),
        )
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a payload was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Reject {
    /// Sealed with a key this bridge does not hold (yet): worth refetching the keys once.
    UnknownKey(i32),
    /// Not a sealed payload, or one that does not open or parse: forged or damaged.
    Invalid,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Header {
    Update {
        doc: String,
        seq_from: i64,
        seq_to: i64,
        #[serde(default)]
        origin: Option<String>,
        ts: i64,
    },
    Broadcast {
        doc: String,
        #[serde(default)]
        origin: Option<String>,
        ts: i64,
    },
    Deleted {
        doc: String,
        ts: i64,
    },
}

/// An opened notification.
#[derive(Debug)]
pub struct Opened {
    pub doc: String,
    pub event: RoomEvent,
    /// When the database made it, in ms since the epoch by the database's clock.
    pub ts: i64,
}

/// How old a payload made at `ts` (database clock) is, given the database clock's offset from
/// ours (`db - local`, in ms).
pub fn age_ms(ts: i64, now_local_ms: i64, offset_ms: i64) -> i64 {
    now_local_ms + offset_ms - ts
}

/// Opens a payload with `keys`.
pub fn open(keys: &Keys, payload: &str) -> Result<Opened, Reject> {
    let mut parts = payload.splitn(3, '.');
    if parts.next() != Some("v1") {
        return Err(Reject::Invalid);
    }
    let id: i32 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or(Reject::Invalid)?;
    let body = parts
        .next()
        .and_then(|b| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b)
                .ok()
        })
        .ok_or(Reject::Invalid)?;
    let cipher = keys.0.get(&id).ok_or(Reject::UnknownKey(id))?;
    if body.len() < NONCE {
        return Err(Reject::Invalid);
    }
    let nonce: [u8; NONCE] = body[..NONCE].try_into().map_err(|_| Reject::Invalid)?;
    let plain = cipher
        .decrypt(&XNonce::from(nonce), &body[NONCE..])
        .map_err(|_| Reject::Invalid)?;
    parse(&plain).ok_or(Reject::Invalid)
}

/// Turns an opened plaintext into a document name and room event.
fn parse(plain: &[u8]) -> Option<Opened> {
    let (header, bytes) = match plain.iter().position(|b| *b == 0) {
        Some(i) => (&plain[..i], Some(plain[i + 1..].to_vec())),
        None => (plain, None),
    };
    let (doc, event, ts) = match serde_json::from_slice::<Header>(header).ok()? {
        Header::Update {
            doc,
            seq_from,
            seq_to,
            origin,
            ts,
        } => (
            doc,
            RoomEvent::Update {
                seq_from,
                seq_to,
                origin,
                update: bytes,
            },
            ts,
        ),
        Header::Broadcast { doc, origin, ts } => (
            doc,
            RoomEvent::Broadcast {
                origin,
                payload: bytes?,
            },
            ts,
        ),
        Header::Deleted { doc, ts } => (doc, RoomEvent::Deleted, ts),
    };
    Some(Opened { doc, event, ts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    fn seal(id: i32, key: &[u8; 32], plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = XChaCha20Poly1305::new(key.into())
            .encrypt(&XNonce::from(nonce), plain)
            .expect("seals");
        let mut body = nonce.to_vec();
        body.extend(sealed);
        format!(
            "v1.{id}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
        )
    }

    fn with_bytes(header: &str, bytes: &[u8]) -> Vec<u8> {
        let mut p = header.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(bytes);
        p
    }

    #[test]
    fn opens_the_three_payloads() {
        let key = [3u8; 32];
        let keys = Keys::new([(1, key.to_vec())]);
        let h = r#"{"type":"update","doc":"d","seq_from":3,"seq_to":4,"origin":null,"ts":5}"#;
        let o = open(&keys, &seal(1, &key, &with_bytes(h, &[1, 2, 3]))).expect("update");
        assert_eq!((o.doc.as_str(), o.ts), ("d", 5));
        match o.event {
            RoomEvent::Update {
                seq_from: 3,
                seq_to: 4,
                origin: None,
                update: Some(u),
            } => assert_eq!(u, vec![1, 2, 3]),
            other => panic!("{other:?}"),
        }
        let h = br#"{"type":"update","doc":"d","seq_from":1,"seq_to":9,"origin":"b/1","ts":5}"#;
        let o = open(&keys, &seal(1, &key, h)).expect("update without inline");
        assert!(matches!(o.event, RoomEvent::Update { update: None, .. }));
        let h = r#"{"type":"broadcast","doc":"d","origin":"x","ts":5}"#;
        let o = open(&keys, &seal(1, &key, &with_bytes(h, &[1]))).expect("broadcast");
        assert!(matches!(o.event, RoomEvent::Broadcast { .. }));
        let o = open(
            &keys,
            &seal(1, &key, br#"{"type":"deleted","doc":"d","ts":5}"#),
        )
        .expect("deleted");
        assert!(matches!(o.event, RoomEvent::Deleted));
    }

    #[test]
    fn forged_damaged_and_foreign_payloads_are_rejected() {
        let key = [3u8; 32];
        let keys = Keys::new([(1, key.to_vec())]);
        // What 0.1.0 sent, and what anyone can pg_notify.
        assert_eq!(
            open(&keys, r#"{"type":"deleted","doc":"victim-doc"}"#).err(),
            Some(Reject::Invalid)
        );
        let deleted = br#"{"type":"deleted","doc":"d","ts":5}"#;
        // Sealed with a key the database never had.
        assert_eq!(
            open(&keys, &seal(1, &[4u8; 32], deleted)).err(),
            Some(Reject::Invalid)
        );
        // A key id the bridge has not fetched yet.
        assert_eq!(
            open(&keys, &seal(2, &key, deleted)).err(),
            Some(Reject::UnknownKey(2))
        );
        // One flipped bit.
        let good = seal(1, &key, deleted);
        let mut body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&good[5..])
            .expect("b64");
        let last = body.len() - 1;
        body[last] ^= 1;
        let bad = format!(
            "v1.1.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
        );
        assert_eq!(open(&keys, &bad).err(), Some(Reject::Invalid));
        // Sealed but not a payload the extension makes.
        assert_eq!(
            open(&keys, &seal(1, &key, br#"{"type":"other"}"#)).err(),
            Some(Reject::Invalid)
        );
        assert_eq!(open(&keys, "v1.1.").err(), Some(Reject::Invalid));
    }

    #[test]
    fn age_is_measured_on_the_database_clock() {
        // Our clock is 500 ms behind the database's.
        assert_eq!(age_ms(10_000, 9_700, 500), 200);
    }
}
