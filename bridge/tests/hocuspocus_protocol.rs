//! The Hocuspocus endpoint and the y-websocket saved message byte by byte, with a raw WebSocket
//! client: what a refused or deleted document does to the socket, and what the saved
//! acknowledgements carry. (The stock npm provider is in hocuspocus.rs.)
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::encoder::Encode;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn frame(doc: &str, kind: u8, body: &[u8]) -> WsMessage {
    let mut out = Vec::new();
    out.write_string(doc);
    out.write_var(kind);
    out.extend_from_slice(body);
    WsMessage::Binary(out.into())
}

fn auth(doc: &str, token: &str) -> WsMessage {
    let mut body = Vec::new();
    body.write_var(0u8);
    body.write_string(token);
    body.write_string("test");
    frame(doc, 2, &body)
}

/// A Hocuspocus sync update message carrying `update`.
fn update(doc: &str, update: Vec<u8>) -> WsMessage {
    let y = Message::Sync(SyncMessage::Update(update)).encode_v1();
    let mut out = Vec::new();
    out.write_string(doc);
    out.extend_from_slice(&y);
    WsMessage::Binary(out.into())
}

/// What the server said, decoded enough for the assertions.
#[derive(Debug, PartialEq)]
enum Heard {
    Authenticated(String, String),
    Denied(String, String),
    SyncStatus(String, u64),
    Close(String),
    Other(String, u64),
}

async fn next(ws: &mut Ws) -> Heard {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .unwrap();
        let WsMessage::Binary(b) = m else {
            assert!(!matches!(m, WsMessage::Close(_)), "socket closed: {m:?}");
            continue;
        };
        let mut c = Cursor::new(&b);
        let doc = c.read_string().unwrap().to_string();
        let kind: u64 = c.read_var().unwrap();
        return match kind {
            2 => match c.read_var::<u64>().unwrap() {
                2 => Heard::Authenticated(doc, c.read_string().unwrap().into()),
                1 => Heard::Denied(doc, c.read_string().unwrap().into()),
                other => Heard::Other(doc, 200 + other),
            },
            8 => Heard::SyncStatus(doc, c.read_var().unwrap()),
            7 => Heard::Close(doc),
            other => Heard::Other(doc, other),
        };
    }
}

/// The next message that is not sync or awareness traffic.
async fn next_control(ws: &mut Ws) -> Heard {
    loop {
        match next(ws).await {
            Heard::Other(_, 0 | 1) => continue,
            h => return h,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_deleted_document_ends_alone_and_the_socket_serves_the_others() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "hp", &[]).await;
    let url = b.ws_url("").replace("/ws/", "/hocuspocus");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let t = token(&[("keep", "write"), ("gone", "write"), ("view", "read")]);

    ws.send(auth("keep", &t)).await.unwrap();
    assert_eq!(
        next_control(&mut ws).await,
        Heard::Authenticated("keep".into(), "read-write".into())
    );
    ws.send(auth("secret", &t)).await.unwrap();
    match next_control(&mut ws).await {
        Heard::Denied(doc, reason) => {
            assert_eq!(doc, "secret");
            assert!(reason.contains("no access"), "{reason}");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    ws.send(auth("view", &t)).await.unwrap();
    assert_eq!(
        next_control(&mut ws).await,
        Heard::Authenticated("view".into(), "readonly".into())
    );
    ws.send(update("view", text_update("nope"))).await.unwrap();
    assert_eq!(
        next_control(&mut ws).await,
        Heard::SyncStatus("view".into(), 0),
        "a read-only document's update is acknowledged as not saved"
    );

    ws.send(auth("gone", &t)).await.unwrap();
    assert_eq!(
        next_control(&mut ws).await,
        Heard::Authenticated("gone".into(), "read-write".into())
    );
    ws.send(update("gone", text_update("soon gone")))
        .await
        .unwrap();
    assert_eq!(
        next_control(&mut ws).await,
        Heard::SyncStatus("gone".into(), 1)
    );
    assert_eq!(pg.text("gone").await, "soon gone", "saved means stored");
    pg.client()
        .await
        .execute("SELECT collab.delete_document('gone')", &[])
        .await
        .unwrap();
    assert_eq!(
        next_control(&mut ws).await,
        Heard::Close("gone".into()),
        "the deleted document is closed"
    );

    ws.send(update("keep", text_update("still here")))
        .await
        .unwrap();
    assert_eq!(
        next_control(&mut ws).await,
        Heard::SyncStatus("keep".into(), 1)
    );
    assert_eq!(
        pg.text("keep").await,
        "still here",
        "the socket serves the others"
    );
    assert_eq!(
        pg.text("view").await,
        "",
        "nothing stored for the read-only document"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_y_websocket_client_that_asks_is_told_the_committed_sequence_of_each_update() {
    let pg = Pg::start();
    let b = Bridge::start(&pg, "saved", &["--allow-query-token"]).await;
    pg.insert_text("acked", 0, "from SQL;").await;
    let url = format!("{}?saved=1&token={}", b.ws_url("acked"), writer_token());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let msg = Message::Sync(SyncMessage::Update(text_update("typed"))).encode_v1();
    ws.send(WsMessage::Binary(msg.into())).await.unwrap();
    let saved = loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        if let WsMessage::Binary(b) = m {
            if b.first() == Some(&8) {
                break b;
            }
        }
    };
    let mut c = Cursor::new(&saved);
    let (_, kind, seq): (u8, u8, i64) = (
        c.read_var().unwrap(),
        c.read_var().unwrap(),
        c.read_var::<u64>().unwrap() as i64,
    );
    assert_eq!(kind, 0, "an update message");
    let head: i64 = pg
        .client()
        .await
        .query_one("SELECT head_seq FROM collab.document_info('acked')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seq, head, "the committed position of the update");
    assert!(pg.text("acked").await.contains("typed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_documents_opened_at_once_on_one_socket_all_arrive_within_its_send_budget() {
    let pg = Pg::start();
    // A send budget smaller than two documents' first syncs together.
    let b = Bridge::start(&pg, "big", &["--send-queue-bytes", "3000000"]).await;
    let big = "x".repeat(2_500_000);
    let names = ["big/1", "big/2", "big/3", "big/4"];
    for n in names {
        pg.insert_text(n, 0, &big).await;
    }
    let url = b.ws_url("").replace("/ws/", "/hocuspocus");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let t = writer_token();
    let step1 = Message::Sync(SyncMessage::SyncStep1(Default::default())).encode_v1();
    for n in names {
        ws.send(auth(n, &t)).await.unwrap();
        let mut f = Vec::new();
        f.write_string(n);
        f.extend_from_slice(&step1);
        ws.send(WsMessage::Binary(f.into())).await.unwrap();
    }
    // Not reading for a while: what the bridge sends fills the socket's buffers, so its queue
    // holds what it could not write yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Every document's whole state arrives (sync step 2), and the socket stays open.
    let mut whole = std::collections::HashSet::new();
    while whole.len() < names.len() {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("in time")
            .expect("socket open")
            .unwrap();
        assert!(!matches!(m, WsMessage::Close(_)), "closed: {m:?}");
        if let WsMessage::Binary(bytes) = m {
            let mut c = Cursor::new(&bytes);
            let doc = c.read_string().unwrap().to_string();
            let (kind, sync): (u64, u64) = (c.read_var().unwrap(), c.read_var().unwrap_or(9));
            if kind == 0 && sync == 1 && bytes.len() > 2_500_000 {
                whole.insert(doc);
            }
        }
    }
    assert_eq!(b.metric("collab_bridge_slow_clients_total").await, 0.0);
}
