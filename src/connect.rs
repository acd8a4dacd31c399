//! The [`Connect`] trait: what [`ReconnectingStream`](crate::ReconnectingStream) calls once per attempt.

use std::future::Future;

use crate::error::BoxError;

/// Makes a new connection: called once per attempt.
///
/// Any `FnMut() -> impl Future<Output = Result<S, E>>` closure is a connector. Layers (handshakes,
/// extensions) are connectors that wrap another connector.
pub trait Connect {
    /// The connection: a `Stream + Sink`.
    type Connection;
    /// Why an attempt failed.
    type Error: Into<BoxError>;
    /// The attempt in progress.
    type Future: Future<Output = Result<Self::Connection, Self::Error>>;

    /// Starts an attempt.
    fn connect(&mut self) -> Self::Future;
}

impl<F, Fut, S, E> Connect for F
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<S, E>>,
    E: Into<BoxError>,
{
    type Connection = S;
    type Error = E;
    type Future = Fut;

    fn connect(&mut self) -> Fut {
        self()
    }
}
