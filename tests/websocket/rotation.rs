//! The endpoint ring: a host that accepts the upgrade and drops the connection at once is rotated away from,
//! and URL providers and fixed endpoints share one ring.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message as ServerMessage;
use futures::StreamExt;
use stream_tungstenite::retry::FixedDelay;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::ws::WsConnector;
use stream_tungstenite::{Connect, ReconnectingStream};

use crate::support::{self, server};

/// Accepts the upgrade, then drops the connection at once.
fn dropping_server() -> server::Server {
    server::serve(|tcp, _, _| async move {
        let _ = async_tungstenite::accept_async(tcp).await;
    })
}

/// Accepts the upgrade, greets with "from B", then reads until the client leaves.
fn greeting_server() -> server::Server {
    server::serve(|tcp, _, _| async move {
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        let _ = ws.send(ServerMessage::text("from B")).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
}

#[test]
fn a_host_that_drops_right_after_the_upgrade_is_rotated_away_from() {
    let a = dropping_server();
    let b = greeting_server();
    let connector = WsConnector::builder(a.url()).with_endpoint(b.url()).build();
    let mut ws = ReconnectingStream::new(connector).with_retry(FixedDelay::new(Duration::from_millis(5)));
    let first = support::block_on_within(Duration::from_secs(10), "reaching B", ws.next());
    assert_eq!(first.expect("an item").expect("a message"), Message::text("from B"));
    assert_eq!((a.accepted(), b.accepted()), (1, 1), "A once, then B");
}

#[test]
fn a_url_provider_and_fixed_endpoints_share_one_ring() {
    let from_provider = server::rejecting_server(500, "Internal Server Error", "");
    let fixed = server::rejecting_server(500, "Internal Server Error", "");
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    let provided = from_provider.url();
    let mut connector = WsConnector::builder_with_url_provider(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        provided.clone()
    })
    .with_endpoint(fixed.url())
    .build();
    let mut dialled = Vec::new();
    for _ in 0..4 {
        let before = (from_provider.accepted(), fixed.accepted());
        let outcome = support::block_on(connector.connect());
        assert!(outcome.is_err(), "both servers reject");
        dialled.push(
            match (from_provider.accepted() - before.0, fixed.accepted() - before.1) {
                (1, 0) => "provider",
                (0, 1) => "fixed",
                _ => "?",
            },
        );
    }
    assert_eq!(dialled, ["provider", "fixed", "provider", "fixed"]);
    assert_eq!(
        asked.load(Ordering::SeqCst),
        2,
        "the provider is asked on its turns only"
    );
}

/// The URL changed at run time takes effect on the next dial, through the stream's own connector.
#[test]
fn the_url_changed_at_run_time_is_dialled_next() {
    let a = dropping_server();
    let b = greeting_server();
    let connector = WsConnector::builder(a.url()).build();
    let mut ws = ReconnectingStream::new(connector).with_retry(FixedDelay::new(Duration::from_millis(5)));
    ws.connector().set_url(b.url());
    let first = support::block_on_within(Duration::from_secs(10), "reaching B", ws.next());
    assert_eq!(first.expect("an item").expect("a message"), Message::text("from B"));
    assert_eq!((a.accepted(), b.accepted()), (0, 1));
}
