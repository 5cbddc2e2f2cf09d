//! Hocuspocus framing, as `@hocuspocus/provider` 4.8 sends and reads it (pinned in tests/js and
//! web): every message starts with the document's address (lib0 varString: the document name,
//! or `name\0session` for providers with `sessionAwareness`), then a varUint message type.
//!
//! Types 0 sync, 1 awareness and 3 query awareness continue exactly as a y-websocket message
//! does, so `protocol` decodes and encodes them; a Hocuspocus frame of those types is the
//! address followed by a y-websocket frame. The others: 2 auth (client: `0` token varString,
//! then the provider's version varString; server: `2` authenticated with the scope
//! `"read-write"`/`"readonly"`, `1` permission denied with a reason, `0` alone asks the
//! provider for a fresh token), 5 stateless (varString), 7 close (client: nothing; server: a
//! reason varString), 8 sync status (server: varUint 1 saved / 0 not). A lone byte 10 is the
//! provider's pong (connection-level, no address); this bridge sends no app-level ping, and
//! WebSocket pings keep the socket alive.

use axum::body::Bytes;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;

use crate::error::{Error, Result};
use crate::protocol::{self, Incoming};

pub const MSG_AUTH: u8 = 2;
pub const MSG_STATELESS: u8 = protocol::MSG_STATELESS;
pub const MSG_CLOSE: u8 = 7;
pub const MSG_SYNC_STATUS: u8 = 8;
pub const MSG_PONG: u8 = 10;

const AUTH_TOKEN: u8 = 0;
const AUTH_PERMISSION_DENIED: u8 = 1;
const AUTH_AUTHENTICATED: u8 = 2;

/// Longest document address accepted (names themselves are checked by `db::validate_doc_name`).
const MAX_ADDRESS: usize = 1024;

#[derive(Debug)]
pub enum Body {
    /// Sync, awareness or query awareness: a y-websocket message.
    Yjs(Incoming),
    /// The token the provider sends (empty when it has none).
    Token(String),
    Stateless(String),
    /// The provider detached this document.
    Close,
    /// A type this bridge does not handle (ignored).
    Other(u64),
}

#[derive(Debug)]
pub struct Frame {
    /// The address as sent (replies use it).
    pub address: String,
    /// The document name: the address up to a `\0`.
    pub doc: String,
    pub body: Body,
}

#[derive(Debug)]
pub enum Decoded {
    Message(Frame),
    Pong,
}

fn malformed(e: impl std::fmt::Display) -> Error {
    Error::Malformed(format!("hocuspocus message: {e}"))
}

pub fn decode(frame: &[u8]) -> Result<Decoded> {
    if frame == [MSG_PONG] {
        return Ok(Decoded::Pong);
    }
    let mut cur = Cursor::new(frame);
    let address = cur.read_string().map_err(malformed)?.to_string();
    if address.len() > MAX_ADDRESS {
        return Err(malformed("document address too long"));
    }
    let doc = address.split('\0').next().unwrap_or_default().to_string();
    let rest = &frame[cur.next..];
    let mut body = Cursor::new(rest);
    let kind: u64 = body.read_var().map_err(malformed)?;
    let body = match kind {
        0 | 1 | 3 => Body::Yjs(protocol::decode(rest)?),
        k if k == u64::from(MSG_AUTH) => {
            let sub: u64 = body.read_var().map_err(malformed)?;
            if sub != u64::from(AUTH_TOKEN) {
                return Err(malformed("clients send only tokens in auth messages"));
            }
            Body::Token(body.read_string().map_err(malformed)?.to_string())
        }
        k if k == u64::from(MSG_STATELESS) => {
            Body::Stateless(body.read_string().map_err(malformed)?.to_string())
        }
        k if k == u64::from(MSG_CLOSE) => Body::Close,
        other => Body::Other(other),
    };
    Ok(Decoded::Message(Frame { address, doc, body }))
}

/// The address prefix of every message for `address`.
pub fn prefix(address: &str) -> Bytes {
    let mut out = Vec::with_capacity(address.len() + 2);
    out.write_string(address);
    Bytes::from(out)
}

fn message(address: &str, kind: u8, body: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(address.len() + 16);
    out.write_string(address);
    out.write_var(kind);
    body(&mut out);
    Bytes::from(out)
}

pub fn authenticated(address: &str, read_only: bool) -> Bytes {
    message(address, MSG_AUTH, |o| {
        o.write_var(AUTH_AUTHENTICATED);
        o.write_string(if read_only { "readonly" } else { "read-write" });
    })
}

pub fn permission_denied(address: &str, reason: &str) -> Bytes {
    message(address, MSG_AUTH, |o| {
        o.write_var(AUTH_PERMISSION_DENIED);
        o.write_string(reason);
    })
}

/// Asks the provider for a fresh token (it answers with its `token` function's result).
pub fn token_request(address: &str) -> Bytes {
    message(address, MSG_AUTH, |o| o.write_var(AUTH_TOKEN))
}

/// "Your update is saved" (1) or "not saved" (0): the provider counts down its unsynced changes
/// on 1.
pub fn sync_status(address: &str, saved: bool) -> Bytes {
    message(address, MSG_SYNC_STATUS, |o| o.write_var(u8::from(saved)))
}

/// Tells the provider that the server closed this document (the socket stays open).
pub fn close(address: &str, reason: &str) -> Bytes {
    message(address, MSG_CLOSE, |o| o.write_string(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(address: &str, kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.write_string(address);
        out.write_var(kind);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn an_auth_message_gives_the_token_and_ignores_the_version() {
        let mut body = Vec::new();
        body.write_var(0u8);
        body.write_string("tok");
        body.write_string("4.8.0");
        match decode(&client_frame("team/a", 2, &body)) {
            Ok(Decoded::Message(Frame {
                address,
                doc,
                body: Body::Token(t),
            })) => {
                assert_eq!(
                    (address.as_str(), doc.as_str(), t.as_str()),
                    ("team/a", "team/a", "tok")
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_session_address_names_the_document_before_the_nul() {
        match decode(&client_frame("notes\0abc", 7, &[])) {
            Ok(Decoded::Message(f)) => {
                assert_eq!(f.doc, "notes");
                assert_eq!(f.address, "notes\0abc");
                assert!(matches!(f.body, Body::Close));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn sync_messages_are_y_websocket_messages_after_the_address() {
        let update = crate::protocol::update(vec![0, 0]);
        let mut frame = prefix("d").to_vec();
        frame.extend_from_slice(&update);
        match decode(&frame) {
            Ok(Decoded::Message(Frame {
                body: Body::Yjs(Incoming::Update(u)),
                ..
            })) => assert_eq!(u, vec![0, 0]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_lone_pong_byte_is_a_pong_and_garbage_is_malformed() {
        assert!(matches!(decode(&[10]), Ok(Decoded::Pong)));
        assert!(decode(&[5, b'a']).is_err());
        assert!(decode(&[]).is_err());
        assert!(
            decode(&client_frame("d", 2, &[1])).is_err(),
            "servers' auth types"
        );
    }

    #[test]
    fn server_messages_have_the_documented_bytes() {
        assert_eq!(&sync_status("d", true)[..], &[1, b'd', 8, 1]);
        assert_eq!(&token_request("d")[..], &[1, b'd', 2, 0]);
        let a = authenticated("d", true);
        assert_eq!(&a[..4], &[1, b'd', 2, 2]);
        assert_eq!(&a[5..], b"readonly");
    }
}
