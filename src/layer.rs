//! [`ConnectorBuilder`]: composing a connector from layers and hooks, the way tower's `ServiceBuilder`
//! composes services.
//!
//! The top of the connector stack. A layer ([`tower_layer::Layer`]) wraps a connector in another connector:
//! handshake layers ([`handshake`](crate::handshake)) run an exchange on each new connection. Hooks
//! ([`hook`](crate::hook), [`extension`](crate::extension)) look at each message; consecutive hooks form one
//! group, run by one connection wrapper ([`HooksLayer`]).
//!
//! # Order
//!
//! As with `ServiceBuilder`, what is added **first is outermost**:
//!
//! ```text
//! ConnectorBuilder::new(dial).hook(A).hook(B).layer(H).build()   ==  Hooks[A, B](H(dial))
//!
//!   new connection:   dial  ->  H's exchange runs  ->  A and B start  ->  Connected (user traffic starts)
//!   outbound message: user  ->  A  ->  B  ->  (H passes it on)  ->  socket
//!   inbound message:  socket  ->  (H passes it on)  ->  B  ->  A  ->  user
//! ```
//!
//! So put hooks (heartbeat, metrics, logging, message filters) first and handshakes after them: the
//! handshakes then run on the bare connection, before any hook sees user traffic, and their frames are
//! invisible to the hooks. A hook added *after* a handshake layer sits inside it and sees the handshake's
//! frames too. A layer added between two hooks splits them into two groups, each its own wrapper.
//!
//! [`WebSocketClient`](crate::WebSocketClient)'s builder follows the same rule for its `hook` and `layer`.

use std::fmt;

use tower_layer::{Identity, Layer, Stack};

use crate::hook::HooksLayer;

/// Builds a connector from an inner connector, hooks and layers; [`build`](Self::build) gives the
/// connector.
///
/// The third type parameter is the group of hooks added since the last layer: `()` for none, a nested pair
/// otherwise.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use stream_tungstenite::extension::{Heartbeat, Metrics};
/// use stream_tungstenite::handshake::{AuthHandshaker, SubscribeHandshaker};
/// use stream_tungstenite::{chain_handshakers, layer::ConnectorBuilder, tungstenite::Message, ReconnectingStream};
/// use stream_tungstenite::ws::WsConnector;
///
/// let metrics = Metrics::new();
/// let connector = ConnectorBuilder::new(WsConnector::new("wss://example.com/feed"))
///     .hook(Heartbeat::new(Duration::from_secs(15), Duration::from_secs(10)))
///     .hook(metrics.clone())
///     .layer(chain_handshakers!(
///         AuthHandshaker::new(|| "secret-token".to_owned()).json(),
///         SubscribeHandshaker::new(["trades", "book"]),
///     ))
///     .build();
/// let ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector);
/// ```
pub struct ConnectorBuilder<C, L = Identity, H = ()> {
    inner: C,
    layers: L,
    hooks: H,
}

impl<C> ConnectorBuilder<C> {
    /// Starts from the innermost connector (the transport).
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            layers: Identity::new(),
            hooks: (),
        }
    }
}

impl<C, L> ConnectorBuilder<C, L, ()> {
    /// Adds a layer inside what was added before it.
    ///
    /// # Order
    ///
    /// The first layer added is outermost: it sees outbound messages first and inbound messages last, and
    /// its part of connecting runs after the inner layers' parts. See [the module docs](self).
    pub fn layer<T>(self, layer: T) -> ConnectorBuilder<C, Stack<T, L>, ()> {
        ConnectorBuilder {
            inner: self.inner,
            layers: Stack::new(layer, self.layers),
            hooks: (),
        }
    }

    /// Adds a hook inside what was added before it; hooks added one after the other form one group, run by
    /// one connection wrapper.
    ///
    /// # Order
    ///
    /// The first hook added is outermost: it sees outbound messages first and inbound messages last. See
    /// [the module docs](self) and [`hook`](crate::hook).
    pub fn hook<K>(self, hook: K) -> ConnectorBuilder<C, L, ((), K)> {
        ConnectorBuilder {
            inner: self.inner,
            layers: self.layers,
            hooks: ((), hook),
        }
    }

    /// The connector.
    pub fn build(self) -> L::Service
    where
        L: Layer<C>,
    {
        self.layers.layer(self.inner)
    }
}

/// The layers of a builder once a pending hook group `H` has become a layer, inside `L`.
type WithHooks<L, H> = Stack<HooksLayer<H>, L>;

/// A builder whose hook group `(A, B)` has become a layer, with `T` added inside it.
type Flushed<C, L, A, B, T> = ConnectorBuilder<C, Stack<T, WithHooks<L, (A, B)>>, ()>;

impl<C, L, A, B> ConnectorBuilder<C, L, (A, B)> {
    /// Adds a layer inside what was added before it (the hooks so far become one group, outside it).
    ///
    /// # Order
    ///
    /// As for the first layer: see [the module docs](self).
    pub fn layer<T>(self, layer: T) -> Flushed<C, L, A, B, T> {
        ConnectorBuilder {
            inner: self.inner,
            layers: Stack::new(layer, Stack::new(HooksLayer::new(self.hooks), self.layers)),
            hooks: (),
        }
    }

    /// Adds a hook to the group of hooks added just before it, inside them.
    ///
    /// # Order
    ///
    /// As for the first hook: see [the module docs](self).
    pub fn hook<K>(self, hook: K) -> ConnectorBuilder<C, L, ((A, B), K)> {
        ConnectorBuilder {
            inner: self.inner,
            layers: self.layers,
            hooks: (self.hooks, hook),
        }
    }

    /// The connector: the layers, with the last group of hooks innermost.
    pub fn build(self) -> <WithHooks<L, (A, B)> as Layer<C>>::Service
    where
        WithHooks<L, (A, B)>: Layer<C>,
    {
        Stack::new(HooksLayer::new(self.hooks), self.layers).layer(self.inner)
    }
}

impl<C, L, H> fmt::Debug for ConnectorBuilder<C, L, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorBuilder").finish_non_exhaustive()
    }
}
