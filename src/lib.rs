//! A runtime-agnostic reconnecting `Stream + Sink`, and a WebSocket client on top.
//!
//! [`ReconnectingStream`] wraps a connector — any `FnMut() -> impl Future<Output = Result<S, E>>` where the
//! connection `S` is a `Stream + Sink` — and keeps a connection alive behind it. You read with
//! `stream.next().await` and write with `sink.send(msg).await`; drops, backoff and re-dialling happen inside and
//! are reported as [`Event`]s. The state machine is a hand-written set of `poll_*` functions: no task is
//! spawned, no runtime is named, and it runs on tokio, async-std, smol or any other executor. Timers come from
//! [`async_io`] (or an injected [`time::Timer`]).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use futures::{SinkExt, StreamExt};
//! use stream_tungstenite::{retry::ExponentialBackoff, ReconnectingStream};
//!
//! # futures::executor::block_on(async {
//! // A connector. Here: an in-memory echo connection; usually a `WsConnector`.
//! let connect = || async {
//!     let (tx, rx) = futures::channel::mpsc::unbounded::<String>();
//!     Ok::<_, std::io::Error>(stream_tungstenite::join(rx.map(Ok::<_, std::io::Error>), tx))
//! };
//! let mut conn = ReconnectingStream::new(connect)
//!     .with_retry(ExponentialBackoff::new(Duration::from_millis(50), Duration::from_secs(10)));
//!
//! conn.send("hello".to_string()).await?;
//! let echoed = conn.next().await.transpose()?;
//! assert_eq!(echoed.as_deref(), Some("hello"));
//! assert_eq!(conn.generation(), 1);
//! # Ok::<_, stream_tungstenite::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Architecture
//!
//! ```text
//!  user code        next() / send()                        WebSocketClient: run(), subscribe(), sender()
//!                       |                                            | drives one per run
//!  core             ReconnectingStream: one poll state machine, retry, send queue, events
//!                       | calls once per attempt (a Connect)
//!  connector stack  layers (handshakes, your own) and hook groups, built with layer::ConnectorBuilder
//!                       |
//!  transport        ws: TCP, TLS, the WebSocket upgrade, and the failure classes of its errors
//! ```
//!
//! Dependencies point down only. The core (`ReconnectingStream`, [`retry`], [`Classify`], [`Event`],
//! [`Error`], [`time`], [`join`], [`Connect`]) knows no WebSocket and no handshake: a failure's error tells it
//! what it means through [`Diagnose`].
//!
//! # Modules
//!
//! - [`retry`]: retry policies (exponential backoff with jitter, fixed, immediate, none, closures) and their
//!   budgets.
//! - [`time`]: the timer abstraction and a manual clock for tests.
//! - [`ws`]: WebSocket on any runtime: [`connect`], [`WsConnector`], [`WsConnection`], the failure classes.
//! - [`layer`]: [`ConnectorBuilder`](layer::ConnectorBuilder), composing a connector from layers and hooks.
//! - [`hook`]: the [`Hook`](hook::Hook) trait for per-message extensions, and the one wrapper that runs them.
//! - [`extension`]: the provided hooks: heartbeat, receive timeout, metrics, logging, filters.
//! - [`handshake`]: application handshakes (auth, subscribe, send a message, chains, closures) as layers.
//! - [`client`]: [`WebSocketClient`], the high-level client.
//! - [`prelude`]: the names most programs need.
//!
//! # Feature flags
//!
//! - `webpki-roots` (default): trust Mozilla's root certificates (bundled) for `wss://`.
//! - `native-roots`: trust the operating system's root certificates too.
//!
//! TLS is rustls with the `ring` provider either way; certificate verification is always on.

mod classify;
pub mod client;
mod connect;
pub mod connectivity;
pub mod delivery;
mod diagnose;
mod error;
mod event;
pub mod extension;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
mod hash;
pub mod hook;
mod join;
pub mod layer;
mod reconnect;
mod redact;
pub mod retry;
pub mod time;
pub mod ws;

pub use crate::client::{
    ClientBuilder, ClientConfig, ClientError, ClientState, DisconnectReason, ReceiveError, SendError, Sender,
    Subscription, WebSocketClient, WebSocketClientBuilder,
};
pub use crate::handshake::HandshakeError;
pub use crate::ws::{connect, ConnectError, WsConnection, WsConnector};
pub use async_tungstenite::tungstenite;

pub use crate::classify::{Classify, DefaultClassifier, RetryAll};
pub use crate::connect::Connect;
pub use crate::diagnose::{Classification, Diagnose, Diagnosis};
pub use crate::error::{BoxError, ConnectTimeout, DiagnosedError, Error, Failure};
pub use crate::event::{ConnectionState, Event, Observer};

/// The 0.6.1 name of [`Event`]: what [`WebSocketClient::subscribe_events`] yields.
pub type ConnectionEvent = Event;
pub use crate::join::{join, Join};
pub use crate::reconnect::{
    KeepFn, QueuePolicy, ReconnectingStream, Weight, DEFAULT_CLOSE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_STABLE_AFTER,
};

/// The names most programs need: `use stream_tungstenite::prelude::*;`.
pub mod prelude {
    pub use crate::client::{
        ClientConfig, ClientError, ClientState, DisconnectReason, ReceiveError, SendError, Sender, Subscription,
        WebSocketClient,
    };
    pub use crate::handshake::{AuthHandshaker, HandshakeError, SubscribeHandshaker};
    pub use crate::hook::{Hook, Verdict};
    pub use crate::retry::{ExponentialBackoff, FixedDelay, NoRetry, RetryPolicy};
    pub use crate::tungstenite::Message;
    pub use crate::ws::{ConnectError, ConnectionError, WsConnector};
    pub use crate::{connect, ConnectionState, Error, Event, ReconnectingStream};
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
