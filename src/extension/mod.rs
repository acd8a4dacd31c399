//! Extensions: layers that wrap each connection to observe, transform or drop messages, keep it alive, log
//! or count.
//!
//! - [`Extension`] with [`ExtensionLayer`]: synchronous hooks on every inbound and outbound message (no boxed
//!   future per message), fresh per connection. Closures through [`ExtensionLayer::inbound`] and
//!   [`ExtensionLayer::outbound`].
//! - [`HeartbeatLayer`]: pings every interval; a connection that sends no frame within the timeout after a
//!   ping is declared dead and replaced.
//! - [`MetricsLayer`]: counts attempts, connections, disconnects by reason, and messages and bytes each way,
//!   readable at any time through a [`Metrics`] handle.
//! - [`LoggingLayer`]: a tracing span per connection, with its lifecycle and every message (redacted,
//!   truncated).
//!
//! Lifecycle observers (connect, disconnect, retry, gave up, closed) are
//! [`Observer`](crate::Observer)s on the stream itself: see
//! [`ReconnectingStream::with_observer`](crate::ReconnectingStream::with_observer).
//!
//! See [`layer`](crate::layer) for the order in which layers see messages.

mod heartbeat;
mod logging;
mod metrics;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tower_layer::Layer;

pub use self::heartbeat::{Heartbeat, HeartbeatConnection, HeartbeatLayer, HeartbeatTimeout};
pub use self::logging::{
    LogMessage, Logging, LoggingConnection, LoggingFuture, LoggingLayer, DEFAULT_MAX_BODY, DEFAULT_REDACT_KEYS,
};
pub use self::metrics::{
    Disconnects, MessageSize, Metrics, MetricsConnection, MetricsConnector, MetricsFuture, MetricsLayer,
    MetricsSnapshot,
};
use crate::Connect;

/// Hooks on every message of one connection. Both default to passing the message on unchanged.
///
/// Each connection gets its own clone of the extension given to [`ExtensionLayer::new`]; share state across
/// connections through an `Arc` inside it.
pub trait Extension<T>: Send {
    /// An inbound message: return it (possibly changed) to deliver it, `None` to drop it.
    fn on_inbound(&mut self, message: T) -> Option<T> {
        Some(message)
    }

    /// An outbound message: return it (possibly changed) to send it, `None` to drop it (it then counts as
    /// sent).
    fn on_outbound(&mut self, message: T) -> Option<T> {
        Some(message)
    }
}

/// Wraps each connection with a clone of an [`Extension`].
#[derive(Debug, Clone)]
pub struct ExtensionLayer<X> {
    extension: X,
}

impl<X> ExtensionLayer<X> {
    /// Applies `extension` (cloned per connection).
    pub fn new(extension: X) -> Self {
        Self { extension }
    }
}

impl<F> ExtensionLayer<Inbound<F>> {
    /// An extension from a closure over inbound messages: `Some` delivers, `None` drops.
    pub fn inbound(f: F) -> Self {
        Self::new(Inbound(f))
    }
}

impl<F> ExtensionLayer<Outbound<F>> {
    /// An extension from a closure over outbound messages: `Some` sends, `None` drops.
    pub fn outbound(f: F) -> Self {
        Self::new(Outbound(f))
    }
}

/// An [`Extension`] from a closure over inbound messages; built by [`ExtensionLayer::inbound`].
#[derive(Clone)]
pub struct Inbound<F>(F);

/// An [`Extension`] from a closure over outbound messages; built by [`ExtensionLayer::outbound`].
#[derive(Clone)]
pub struct Outbound<F>(F);

impl<T, F: FnMut(T) -> Option<T> + Send> Extension<T> for Inbound<F> {
    fn on_inbound(&mut self, message: T) -> Option<T> {
        (self.0)(message)
    }
}

impl<T, F: FnMut(T) -> Option<T> + Send> Extension<T> for Outbound<F> {
    fn on_outbound(&mut self, message: T) -> Option<T> {
        (self.0)(message)
    }
}

impl<F> fmt::Debug for Inbound<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound").finish_non_exhaustive()
    }
}

impl<F> fmt::Debug for Outbound<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound").finish_non_exhaustive()
    }
}

impl<C, X: Clone> Layer<C> for ExtensionLayer<X> {
    type Service = Extended<C, X>;

    fn layer(&self, inner: C) -> Self::Service {
        Extended {
            inner,
            extension: self.extension.clone(),
        }
    }
}

/// A connector whose connections are wrapped with an [`Extension`]; made by [`ExtensionLayer`].
#[derive(Debug, Clone)]
pub struct Extended<C, X> {
    inner: C,
    extension: X,
}

impl<C, X> Connect for Extended<C, X>
where
    C: Connect,
    X: Clone,
{
    type Connection = ExtendedConnection<C::Connection, X>;
    type Error = C::Error;
    type Future = MapConnection<C::Future, X>;

    fn connect(&mut self) -> Self::Future {
        MapConnection {
            inner: self.inner.connect(),
            extension: Some(self.extension.clone()),
        }
    }
}

pin_project! {
    /// The attempt future of an [`Extended`] connector.
    #[derive(Debug)]
    pub struct MapConnection<F, X> {
        #[pin]
        inner: F,
        extension: Option<X>,
    }
}

impl<F, X, S, E> Future for MapConnection<F, X>
where
    F: Future<Output = Result<S, E>>,
{
    type Output = Result<ExtendedConnection<S, X>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let conn = ready!(this.inner.poll(cx))?;
        match this.extension.take() {
            Some(extension) => Poll::Ready(Ok(ExtendedConnection { inner: conn, extension })),
            // Polled after completion: the contract of `Future` allows anything but unsafety; stay pending.
            None => Poll::Pending,
        }
    }
}

pin_project! {
    /// A connection whose messages pass through an [`Extension`].
    #[derive(Debug)]
    pub struct ExtendedConnection<S, X> {
        #[pin]
        inner: S,
        extension: X,
    }
}

impl<S, X> ExtendedConnection<S, X> {
    /// The extension.
    pub fn extension(&self) -> &X {
        &self.extension
    }

    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, X, T, E> Stream for ExtendedConnection<S, X>
where
    S: Stream<Item = Result<T, E>>,
    X: Extension<T>,
{
    type Item = Result<T, E>;

    #[inline(always)]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            match ready!(this.inner.as_mut().poll_next(cx)) {
                Some(Ok(message)) => {
                    if let Some(message) = this.extension.on_inbound(message) {
                        return Poll::Ready(Some(Ok(message)));
                    }
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

impl<S, X, T> Sink<T> for ExtendedConnection<S, X>
where
    S: Sink<T>,
    X: Extension<T>,
{
    type Error = S::Error;

    #[inline]
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.project().inner.poll_ready(cx)
    }

    #[inline]
    fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), S::Error> {
        let this = self.project();
        match this.extension.on_outbound(item) {
            Some(item) => this.inner.start_send(item),
            None => Ok(()),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.project().inner.poll_close(cx)
    }
}
