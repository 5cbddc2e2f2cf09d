//! y-websocket message framing: decoding client frames and encoding server frames with `yrs::sync`.
//!
//! Message types: 0 sync (step 1, step 2, update), 1 awareness, 2 auth, 3 query awareness.
//! Two more this bridge uses, never sent to a client that did not ask for them: 5 stateless
//! (a Hocuspocus stateless payload relayed through `collab.broadcast`, delivered only to
//! Hocuspocus connections) and 8 saved (to y-websocket clients that connected with `?saved=1`).
//! Decoding never panics on hostile input (yrs's own decoders are guarded).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use axum::body::Bytes;
use yrs::encoding::read::Cursor;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{ClientID, StateVector};

use crate::error::{Error, Result};

/// One decoded client message.
#[derive(Debug)]
pub enum Incoming {
    /// Sync step 1: the client's state vector (re-encoded, v1).
    SyncStep1(Vec<u8>),
    /// Sync step 2: what the server lacks, as a v1 update.
    SyncStep2(Vec<u8>),
    /// An incremental v1 update.
    Update(Vec<u8>),
    /// An awareness update: its entries and the frame as received (to relay as is).
    Awareness(AwarenessUpdate),
    /// Query awareness: the client asks for everyone's awareness state.
    AwarenessQuery,
    /// Auth message (servers ignore those from clients).
    Auth,
    /// Another message type: its tag and the buffer that follows (ignored from clients).
    Custom(u8, Vec<u8>),
}

/// Deepest nesting of values the bridge accepts: the extension's highest `collab.max_nesting`
/// (the scanner itself does not recurse).
const MAX_VALUE_NESTING: u32 = 4096;

fn guarded<T>(f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| Error::Malformed("decoder failed on hostile input".into()))
}

/// Decodes one y-websocket frame (one message; trailing bytes are ignored, as y-websocket does).
pub fn decode(frame: &[u8]) -> Result<Incoming> {
    if frame.is_empty() {
        return Err(Error::Malformed("empty frame".into()));
    }
    let msg = guarded(|| {
        let mut decoder = DecoderV1::new(Cursor::new(frame));
        Message::decode(&mut decoder)
    })?
    .map_err(|e| Error::Malformed(e.to_string()))?;
    Ok(match msg {
        Message::Sync(SyncMessage::SyncStep1(sv)) => Incoming::SyncStep1(sv.encode_v1()),
        Message::Sync(SyncMessage::SyncStep2(u)) => Incoming::SyncStep2(u),
        Message::Sync(SyncMessage::Update(u)) => Incoming::Update(u),
        Message::Awareness(a) => Incoming::Awareness(a),
        Message::AwarenessQuery => Incoming::AwarenessQuery,
        Message::Auth(_) => Incoming::Auth,
        Message::Custom(tag, data) => Incoming::Custom(tag, data),
    })
}

/// Checks that `update` is a decodable Yjs v1 update; returns whether it changes anything.
pub fn check_update(update: &[u8]) -> Result<bool> {
    // Checked by the byte-level scanner only, never decoded by yrs here: yrs decodes nested
    // values recursively and a 2 MB tokio worker stack overflows long before PostgreSQL's
    // limit. The scanner refuses what is malformed or lies about its lengths; PostgreSQL
    // applies `collab.max_nesting` (and everything else) when the update is stored.
    let summary = collab_scan::scan_update(update, MAX_VALUE_NESTING, |_| {})
        .map_err(|e| Error::Malformed(format!("invalid Yjs update: {e}")))?;
    Ok(summary.structs > 0 || summary.deleted_ranges > 0)
}

/// Several v1 updates as one (None if yrs cannot merge them).
pub fn merge(updates: &[Vec<u8>]) -> Option<Vec<u8>> {
    guarded(|| yrs::merge_updates_v1(updates)).ok()?.ok()
}

/// Checks that `sv` decodes as a v1 state vector.
pub fn check_state_vector(sv: &[u8]) -> Result<()> {
    collab_scan::scan_state_vector(sv)
        .map_err(|e| Error::Malformed(format!("invalid state vector: {e}")))?;
    guarded(|| StateVector::decode_v1(sv))?
        .map(|_| ())
        .map_err(|e| Error::Malformed(format!("invalid state vector: {e}")))
}

fn frame(msg: &Message) -> Bytes {
    Bytes::from(msg.encode_v1())
}

pub fn sync_step1(state_vector: &[u8]) -> Result<Bytes> {
    let sv = StateVector::decode_v1(state_vector)
        .map_err(|e| Error::Internal(format!("database returned a bad state vector: {e}")))?;
    Ok(frame(&Message::Sync(SyncMessage::SyncStep1(sv))))
}

pub fn sync_step2(update: Vec<u8>) -> Bytes {
    frame(&Message::Sync(SyncMessage::SyncStep2(update)))
}

pub fn update(update: Vec<u8>) -> Bytes {
    frame(&Message::Sync(SyncMessage::Update(update)))
}

/// An awareness message from entries `client id → (clock, JSON state)`.
pub fn awareness(entries: impl IntoIterator<Item = (u64, u32, Arc<str>)>) -> Bytes {
    let clients: HashMap<ClientID, AwarenessUpdateEntry> = entries
        .into_iter()
        .map(|(id, clock, json)| (ClientID::new(id), AwarenessUpdateEntry { clock, json }))
        .collect();
    frame(&Message::Awareness(AwarenessUpdate { clients }))
}

pub fn awareness_frame(update: AwarenessUpdate) -> Bytes {
    frame(&Message::Awareness(update))
}

/// Tag of a stateless message (the Hocuspocus number): `[5, varString(payload)]`, which is also
/// how yrs reads any other tag (`Custom(tag, buffer)`).
pub const MSG_STATELESS: u8 = 5;
/// Tag of the opt-in "saved" message to y-websocket clients.
pub const MSG_SAVED: u8 = 8;

/// A stateless message (as relayed through `collab.broadcast`; a Hocuspocus frame once prefixed
/// with the document name).
pub fn stateless(payload: &[u8]) -> Bytes {
    frame(&Message::Custom(MSG_STATELESS, payload.to_vec()))
}

/// What a `?saved=1` y-websocket client is told once one of its update messages is settled:
/// `[8, varUint(kind), varUint(seq)]`. Kind 0: an update message, stored (committed) at `seq`;
/// 1: a sync step 2, stored at `seq`; `seq` is 0 when the message changed nothing and needed no
/// storing. Kind 2: refused (read-only); nothing stored.
pub fn saved(kind: u8, seq: i64) -> Bytes {
    use yrs::encoding::write::Write;
    let mut out = Vec::with_capacity(12);
    out.write_var(MSG_SAVED);
    out.write_var(kind);
    out.write_var(seq.max(0) as u64);
    Bytes::from(out)
}

/// Auth message, permission denied with `reason`.
pub fn permission_denied(reason: &str) -> Bytes {
    frame(&Message::Auth(Some(reason.to_string())))
}

/// Entries of an awareness update as `(client id, clock, JSON state)`; `"null"` means removed.
pub fn awareness_entries(update: &AwarenessUpdate) -> Vec<(u64, u32, Arc<str>)> {
    update
        .clients
        .iter()
        .map(|(id, e)| (id.get(), e.clock, e.json.clone()))
        .collect()
}

/// Decodes a relayed broadcast payload (a y-websocket awareness frame).
pub fn decode_awareness_frame(payload: &[u8]) -> Option<AwarenessUpdate> {
    match decode(payload) {
        Ok(Incoming::Awareness(a)) => Some(a),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

    #[test]
    fn round_trips_sync_messages() {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        text.push(&mut doc.transact_mut(), "hi");
        let u = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert!(check_update(&u).unwrap_or(false));
        match decode(&update(u.clone())) {
            Ok(Incoming::Update(got)) => assert_eq!(got, u),
            other => panic!("unexpected {other:?}"),
        }
        let sv = doc.transact().state_vector().encode_v1();
        match decode(&sync_step1(&sv).unwrap_or_default()) {
            Ok(Incoming::SyncStep1(got)) => assert_eq!(got, sv),
            other => panic!("unexpected {other:?}"),
        }
        let other = Doc::new();
        let t2 = other.get_or_insert_text("content");
        other
            .transact_mut()
            .apply_update(Update::decode_v1(&u).expect("decode"))
            .expect("apply");
        assert_eq!(t2.get_string(&other.transact()), "hi");
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [
            &[][..],
            &[0xff, 0xff, 0xff][..],
            &[0, 2, 200, 1][..],
            &[
                1, 5, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ][..],
            &[0, 7][..],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert!(check_update(&[1, 2, 3, 4, 5]).is_err());
    }

    #[test]
    fn merges_updates() {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        let mut parts = Vec::new();
        for s in ["a", "b", "c"] {
            let mut txn = doc.transact_mut();
            text.push(&mut txn, s);
            parts.push(txn.encode_update_v1());
        }
        let merged = merge(&parts).expect("merge");
        let other = Doc::new();
        let t2 = other.get_or_insert_text("content");
        other
            .transact_mut()
            .apply_update(Update::decode_v1(&merged).expect("decode"))
            .expect("apply");
        assert_eq!(t2.get_string(&other.transact()), "abc");
    }

    #[test]
    fn empty_update_changes_nothing() {
        assert!(!check_update(&[0, 0]).unwrap_or(true));
    }

    #[test]
    fn awareness_entries_round_trip() {
        let f = awareness([(42, 3, Arc::from("{\"a\":1}"))]);
        let a = decode_awareness_frame(&f).expect("awareness");
        assert_eq!(awareness_entries(&a), vec![(42, 3, Arc::from("{\"a\":1}"))]);
    }
}
