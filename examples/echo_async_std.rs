//! A reconnecting WebSocket client on async-std, against a local echo server.
//!
//! Run it with `cargo run --example echo_async_std`. It starts a WebSocket echo server on 127.0.0.1 (see
//! `examples/common/mod.rs`; no outside server is needed), then, through a [`ReconnectingStream`] over
//! [`stream_tungstenite::connect`] with exponential backoff:
//!
//! 1. reads the server's greeting and sends a few messages, printing each echo;
//! 2. asks the server to drop the connection: the stream reconnects by itself (the events are printed) and
//!    the next item is the greeting of the new connection;
//! 3. sends one more message, then closes the stream (Close handshake) and exits.
//!
//! The same code runs on tokio (`echo_tokio`) and smol (`echo_smol`): the stream names no runtime.

mod common;

use std::time::Duration;

#[async_std::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::exit_after(Duration::from_secs(10));
    common::echo_session("async-std").await
}
