//! The upgrade's response and the live connection, readable through `ReconnectingStream` after each
//! reconnect; and a Close frame with a code and a reason, from the stream and from the client.

use futures::{SinkExt, StreamExt};
use stream_tungstenite::retry::FixedDelay;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::ws::WsConnector;
use stream_tungstenite::{ReconnectingStream, WebSocketClient};

use crate::support::{self, server};

/// Answers the upgrade with a header naming the connection and the subprotocol `v{index}`, greets, and drops
/// the connection after the first message it reads.
#[allow(clippy::result_large_err)] // tungstenite's callback type
fn numbering_server() -> server::Server {
    server::serve(|tcp, index, _| async move {
        let callback =
            move |_: &async_tungstenite::tungstenite::handshake::server::Request,
                  mut response: async_tungstenite::tungstenite::handshake::server::Response| {
                let headers = response.headers_mut();
                headers.insert("x-connection", index.to_string().parse().unwrap());
                headers.insert("sec-websocket-protocol", format!("v{index}").parse().unwrap());
                Ok(response)
            };
        let Ok(mut ws) = async_tungstenite::accept_hdr_async(tcp, callback).await else {
            return;
        };
        let _ = ws.send(Message::text(format!("hello {index}"))).await;
        let _ = ws.next().await;
    })
}

#[test]
fn the_upgrade_response_and_protocol_are_readable_after_each_reconnect() {
    let server = numbering_server();
    let connector = WsConnector::builder(server.url())
        .with_subprotocol("v0")
        .with_subprotocol("v1")
        .build();
    let mut ws = ReconnectingStream::new(connector).with_retry(FixedDelay::new(std::time::Duration::ZERO));
    assert!(ws.get_ref().is_none(), "nothing is up before the first poll");
    support::block_on(async {
        for index in 0..2 {
            let hello = ws.next().await.unwrap().unwrap();
            assert_eq!(hello, Message::text(format!("hello {index}")));
            let conn = ws.get_ref().expect("a connection is up");
            let response = conn.response().expect("made by the connector: it has a response");
            assert_eq!(response.status(), 101);
            assert_eq!(response.headers()["x-connection"], index.to_string().as_str());
            assert_eq!(conn.protocol(), Some(format!("v{index}").as_str()));
            // The server drops the connection after this: the stream reconnects.
            ws.send(Message::text("next")).await.unwrap();
        }
    });
}

/// Records the code and reason of the Close each connection receives.
fn close_recording_server() -> server::Server {
    server::serve(|tcp, _, log| async move {
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(frame) = message {
                let shown = frame.map_or("none".to_owned(), |frame| {
                    format!("{} {}", u16::from(frame.code), frame.reason)
                });
                log.lock().unwrap().push(shown);
            }
        }
    })
}

#[test]
fn a_close_frame_with_a_code_and_reason_reaches_the_server() {
    let server = close_recording_server();
    let url = server.url();
    let mut ws = ReconnectingStream::new(move || stream_tungstenite::connect(url.clone()));
    support::block_on(async {
        ws.send(Message::text("up")).await.unwrap();
        ws.get_mut().expect("up").close_with(4000, "going away for now");
        ws.close().await.unwrap();
    });
    let client = WebSocketClient::builder(server.url())
        .with_close_frame(4001, "default")
        .build();
    let mut events = client.subscribe_events();
    for expected_shutdown in [true, false] {
        support::block_on(async {
            let test = async {
                while !matches!(events.recv().await, Ok(stream_tungstenite::Event::Connected { .. })) {}
                if expected_shutdown {
                    client.shutdown_with(4002, "done").await;
                } else {
                    client.shutdown().await;
                }
            };
            let (outcome, ()) = futures::future::join(client.run(), test).await;
            outcome.unwrap();
        });
    }
    let log = server.log();
    assert_eq!(log, ["4000 going away for now", "4002 done", "4001 default"]);
}
