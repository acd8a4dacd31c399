//! WebSocketClient: the 0.6.1-style API on any runtime, and the defects of 0.6.1 pinned.

#[path = "../support/server.rs"]
mod server;

use std::sync::Arc;
use std::time::Duration;

use stream_tungstenite::prelude::*;

async fn quickstart_roundtrip() {
    let server = server::echo_server(None);
    let client = WebSocketClient::builder(server.url())
        .receive_timeout(Duration::from_secs(30))
        .build();
    let mut messages = client.subscribe();
    let client = Arc::new(client);
    let sender = client.sender();
    let driver = {
        let client = Arc::clone(&client);
        async move { client.run().await }
    };
    let test = async {
        for n in 0..10 {
            sender.send_text(format!("m{n}")).await.unwrap();
            let msg = messages.recv().await.unwrap();
            assert_eq!(*msg, Message::text(format!("m{n}")));
        }
        assert!(client.is_connected());
        assert!(matches!(client.run().await, Err(ClientError::AlreadyRunning)));
        client.shutdown().await;
        assert!(!client.state().running);
    };
    let (outcome, ()) = futures::future::join(driver, test).await;
    outcome.unwrap();
    // Runs again after a shutdown, on a fresh connection.
    let driver = {
        let client = Arc::clone(&client);
        async move { client.run().await }
    };
    let test = async {
        sender.send_text("again").await.unwrap();
        assert_eq!(*messages.recv().await.unwrap(), Message::text("again"));
        client.shutdown().await;
    };
    let (outcome, ()) = futures::future::join(driver, test).await;
    outcome.unwrap();
    let state = client.state();
    assert_eq!(state.generation, 2);
    assert_eq!(state.reconnects, 1);
    assert_eq!(state.messages_received, 11);
}

#[test]
fn quickstart_on_smol() {
    smol::block_on(quickstart_roundtrip());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_on_tokio_spawned() {
    let server = server::echo_server(None);
    let client = Arc::new(WebSocketClient::builder(server.url()).build());
    let mut messages = client.subscribe();
    let handle = tokio::spawn({
        let client = client.clone();
        async move { client.run().await }
    });
    client.send_text("hello").await.unwrap();
    assert_eq!(*messages.recv().await.unwrap(), Message::text("hello"));
    client.shutdown().await;
    handle.await.unwrap().unwrap();
}
