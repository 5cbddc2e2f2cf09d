//! Notification payloads on channel `collab`: parsing them into room events.

use base64::Engine;
use serde::Deserialize;

use crate::fanout::RoomEvent;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Payload {
    Update {
        doc: String,
        seq_from: i64,
        seq_to: i64,
        #[serde(default)]
        origin: Option<String>,
        #[serde(default)]
        update: Option<String>,
    },
    Broadcast {
        doc: String,
        #[serde(default)]
        origin: Option<String>,
        payload: String,
    },
    Deleted {
        doc: String,
    },
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Turns a notification payload into a document name and room event.
pub fn parse(payload: &str) -> Option<(String, RoomEvent)> {
    match serde_json::from_str::<Payload>(payload) {
        Ok(Payload::Update {
            doc,
            seq_from,
            seq_to,
            origin,
            update,
        }) => Some((
            doc,
            RoomEvent::Update {
                seq_from,
                seq_to,
                origin,
                // An undecodable inline update is fetched instead.
                update: update.as_deref().and_then(b64),
            },
        )),
        Ok(Payload::Broadcast {
            doc,
            origin,
            payload,
        }) => Some((
            doc,
            RoomEvent::Broadcast {
                origin,
                payload: b64(&payload)?,
            },
        )),
        Ok(Payload::Deleted { doc }) => Some((doc, RoomEvent::Deleted)),
        Err(e) => {
            tracing::debug!("ignoring notification {payload:?}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_payloads() {
        let (doc, ev) = parse(
            r#"{"type":"update","doc":"d","seq_from":3,"seq_to":4,"origin":null,"update":"AQID"}"#,
        )
        .expect("update");
        assert_eq!(doc, "d");
        match ev {
            RoomEvent::Update {
                seq_from: 3,
                seq_to: 4,
                origin: None,
                update: Some(u),
            } => assert_eq!(u, vec![1, 2, 3]),
            other => panic!("{other:?}"),
        }
        let (_, ev) =
            parse(r#"{"type":"update","doc":"d","seq_from":1,"seq_to":9,"origin":"b/1"}"#)
                .expect("update without inline");
        assert!(matches!(ev, RoomEvent::Update { update: None, .. }));
        let (_, ev) = parse(r#"{"type":"broadcast","doc":"d","origin":"x","payload":"AQ=="}"#)
            .expect("broadcast");
        assert!(matches!(ev, RoomEvent::Broadcast { .. }));
        assert!(matches!(
            parse(r#"{"type":"deleted","doc":"d"}"#),
            Some((_, RoomEvent::Deleted))
        ));
        assert!(parse("not json").is_none());
        assert!(parse(r#"{"type":"other"}"#).is_none());
    }
}
