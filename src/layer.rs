//! Composing connectors from layers, the way tower's `ServiceBuilder` composes services.
//!
//! A layer ([`tower_layer::Layer`]) wraps a connector in another connector. Handshake layers
//! ([`crate::handshake`]) run an exchange on each new connection; extension layers ([`crate::extension`])
//! wrap the connection itself.
//!
//! # Order
//!
//! As with `ServiceBuilder`, the layer added **first is outermost**:
//!
//! ```text
//! ConnectorBuilder::new(dial).layer(A).layer(B)      ==  A(B(dial))
//!
//!   new connection:   dial  ->  B's part runs  ->  A's part runs  ->  Connected (user traffic starts)
//!   outbound message: user  ->  A  ->  B  ->  socket
//!   inbound message:  socket  ->  B  ->  A  ->  user
//! ```
//!
//! So put extensions (heartbeat, metrics, logging, message filters) first and handshakes after them: the
//! handshakes then run on the bare connection, before any extension sees user traffic, and their frames are
//! invisible to the extensions. An extension added *after* a handshake layer sits inside it and sees the
//! handshake's frames too.

use std::fmt;

use tower_layer::{Identity, Layer, Stack};

use crate::Connect;

/// Builds a connector from an inner connector and layers; it is itself a [`Connect`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use stream_tungstenite::extension::HeartbeatLayer;
/// use stream_tungstenite::handshake::{AuthHandshaker, SubscribeHandshaker};
/// use stream_tungstenite::{chain_handshakers, layer::ConnectorBuilder, tungstenite::Message, ReconnectingStream};
///
/// let url = "wss://example.com/feed";
/// let connector = ConnectorBuilder::new(move || stream_tungstenite::connect(url))
///     .layer(HeartbeatLayer::new(Duration::from_secs(15), Duration::from_secs(10)))
///     .layer(chain_handshakers!(
///         AuthHandshaker::new(|| "secret-token".to_owned()).json(),
///         SubscribeHandshaker::new(["trades", "book"]),
///     ));
/// let ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector);
/// ```
pub struct ConnectorBuilder<C, L>
where
    L: Layer<C>,
{
    state: BuildState<C, L>,
}

enum BuildState<C, L: Layer<C>> {
    Pending { inner: C, layers: L },
    Built(L::Service),
    Poisoned,
}

impl<C> ConnectorBuilder<C, Identity>
where
    C: Connect,
{
    /// Starts from the innermost connector (the transport).
    pub fn new(inner: C) -> Self {
        Self {
            state: BuildState::Pending {
                inner,
                layers: Identity::new(),
            },
        }
    }
}

impl<C, L> ConnectorBuilder<C, L>
where
    L: Layer<C>,
{
    /// Adds a layer inside the ones added before it.
    ///
    /// # Order
    ///
    /// The first layer added is outermost: it sees outbound messages first and inbound messages last, and
    /// its part of connecting runs after the inner layers' parts. See [the module docs](self).
    pub fn layer<T>(self, layer: T) -> ConnectorBuilder<C, Stack<T, L>>
    where
        T: Layer<L::Service>,
        Stack<T, L>: Layer<C>,
    {
        match self.state {
            BuildState::Pending { inner, layers } => ConnectorBuilder {
                state: BuildState::Pending {
                    inner,
                    layers: Stack::new(layer, layers),
                },
            },
            // `layer` takes `self` by value before any `connect`, so these cannot occur.
            BuildState::Built(_) | BuildState::Poisoned => ConnectorBuilder {
                state: BuildState::Poisoned,
            },
        }
    }

    /// Applies the layers: the finished connector.
    pub fn build(self) -> Option<L::Service> {
        match self.state {
            BuildState::Pending { inner, layers } => Some(layers.layer(inner)),
            BuildState::Built(service) => Some(service),
            BuildState::Poisoned => None,
        }
    }
}

impl<C, L> Connect for ConnectorBuilder<C, L>
where
    L: Layer<C>,
    L::Service: Connect,
{
    type Connection = <L::Service as Connect>::Connection;
    type Error = crate::BoxError;
    type Future = futures_util::future::Either<
        MapErr<<L::Service as Connect>::Future>,
        futures_util::future::Ready<Result<Self::Connection, crate::BoxError>>,
    >;

    fn connect(&mut self) -> Self::Future {
        if let BuildState::Pending { .. } = self.state {
            if let BuildState::Pending { inner, layers } = std::mem::replace(&mut self.state, BuildState::Poisoned) {
                self.state = BuildState::Built(layers.layer(inner));
            }
        }
        match &mut self.state {
            BuildState::Built(service) => futures_util::future::Either::Left(MapErr {
                inner: service.connect(),
            }),
            _ => futures_util::future::Either::Right(futures_util::future::ready(Err(
                "connector builder is unusable".into()
            ))),
        }
    }
}

pin_project_lite::pin_project! {
    /// The attempt future of a [`ConnectorBuilder`]: the built connector's, with its error boxed.
    #[derive(Debug)]
    pub struct MapErr<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> std::future::Future for MapErr<F>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: Into<crate::BoxError>,
{
    type Output = Result<T, crate::BoxError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(Into::into)
    }
}

impl<C, L: Layer<C>> fmt::Debug for ConnectorBuilder<C, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            BuildState::Pending { .. } => "pending",
            BuildState::Built(_) => "built",
            BuildState::Poisoned => "poisoned",
        };
        f.debug_struct("ConnectorBuilder")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
