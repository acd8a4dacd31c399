//! The [`Connect`] trait: what [`ReconnectingStream`](crate::ReconnectingStream) calls once per attempt.
//!
//! Part of the core. Layers ([`handshake`](crate::handshake), [`hook`](crate::hook)) are connectors that
//! wrap another connector; the WebSocket transport ([`ws`](crate::ws)) is the innermost one.

use std::future::Future;

use crate::diagnose::Diagnose;
use crate::error::BoxError;

/// Makes a new connection: called once per attempt.
///
/// Any `FnMut() -> impl Future<Output = Result<S, E>>` closure is a connector. Its error `E` (and the errors
/// of the connection `S`) must implement [`Diagnose`], through which they tell the stream what they mean
/// for reconnecting: `std::io::Error`, [`BoxError`], this crate's errors and tungstenite's do; for an error
/// type of your own, `impl Diagnose for MyError {}` is enough.
///
/// # Examples
///
/// ```
/// use stream_tungstenite::{Connect, ReconnectingStream};
///
/// // A connector that fails its first attempt.
/// let mut attempts = 0;
/// let connector = move || {
///     attempts += 1;
///     let outcome = if attempts == 1 {
///         Err(std::io::Error::other("not yet"))
///     } else {
///         Ok(futures::stream::empty::<Result<u8, std::io::Error>>())
///     };
///     std::future::ready(outcome)
/// };
/// # let _ = &connector;
/// let stream: ReconnectingStream<_, ()> = ReconnectingStream::new(connector);
/// # drop(stream);
/// ```
pub trait Connect {
    /// The connection: a `Stream + Sink`.
    type Connection;
    /// Why an attempt failed.
    type Error: Into<BoxError> + Diagnose;
    /// The attempt in progress.
    type Future: Future<Output = Result<Self::Connection, Self::Error>>;

    /// Starts an attempt.
    fn connect(&mut self) -> Self::Future;
}

impl<F, Fut, S, E> Connect for F
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<S, E>>,
    E: Into<BoxError> + Diagnose,
{
    type Connection = S;
    type Error = E;
    type Future = Fut;

    fn connect(&mut self) -> Fut {
        self()
    }
}
