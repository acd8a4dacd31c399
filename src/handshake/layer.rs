//! [`HandshakeLayer`], the connector it makes ([`Handshake`]), its attempt future ([`HandshakeFuture`]) and
//! the connection it yields ([`HandshakeConnection`]).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_tungstenite::tungstenite::Message;
use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tower_layer::Layer;

use super::{AttemptError, Boxed, HandshakeIo, Handshaker};
use crate::connect::Connect;
use crate::error::BoxError;
use crate::time::{AsyncIoTimer, Timer};

/// Runs a handshaker on every connection: the layer form of any [`Handshaker`], with its own clock.
#[derive(Clone)]
pub struct HandshakeLayer<H> {
    handshaker: Arc<H>,
    timer: Arc<dyn Timer>,
}

impl<H: Handshaker> HandshakeLayer<H> {
    /// Runs `handshaker` on every new connection, timing it with async-io.
    pub fn new(handshaker: H) -> Self {
        Self {
            handshaker: Arc::new(handshaker),
            timer: Arc::new(AsyncIoTimer),
        }
    }

    /// Times the handshake with `timer` (for tests: a [`ManualClock`](crate::time::ManualClock)).
    pub fn with_timer(mut self, timer: impl Timer + 'static) -> Self {
        self.timer = Arc::new(timer);
        self
    }
}

impl<H> fmt::Debug for HandshakeLayer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeLayer").finish_non_exhaustive()
    }
}

impl<H: Handshaker, C> Layer<C> for HandshakeLayer<H> {
    type Service = Handshake<C, H>;

    fn layer(&self, inner: C) -> Self::Service {
        Handshake {
            inner,
            handshaker: Arc::clone(&self.handshaker),
            timer: Arc::clone(&self.timer),
        }
    }
}

/// A connector that runs a handshaker on each connection its inner connector makes; made by
/// [`HandshakeLayer`] (or by adding a handshaker as a layer).
pub struct Handshake<C, H> {
    inner: C,
    handshaker: Arc<H>,
    timer: Arc<dyn Timer>,
}

impl<C: Clone, H> Clone for Handshake<C, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            handshaker: Arc::clone(&self.handshaker),
            timer: Arc::clone(&self.timer),
        }
    }
}

impl<C: fmt::Debug, H> fmt::Debug for Handshake<C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The attempt future of a [`Handshake`] connector: the inner attempt, then the exchange.
///
/// # Cancel safety
///
/// Dropping it abandons the attempt midway through its handshakes: the connection is dropped with it.
pub type HandshakeFuture<S, E> = Pin<Box<dyn Future<Output = Result<HandshakeConnection<S>, AttemptError<E>>> + Send>>;

impl<C, H, S, E> Connect for Handshake<C, H>
where
    C: Connect<Connection = S>,
    C::Future: Send + 'static,
    C::Error: Send + 'static,
    H: Handshaker,
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Send + Unpin + 'static,
    <S as Sink<Message>>::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    type Connection = HandshakeConnection<S>;
    type Error = AttemptError<C::Error>;
    type Future = HandshakeFuture<S, C::Error>;

    fn connect(&mut self) -> Self::Future {
        let attempt = self.inner.connect();
        let handshaker = Arc::clone(&self.handshaker);
        let timer = Arc::clone(&self.timer);
        Box::pin(async move {
            let mut conn = attempt.await.map_err(AttemptError::Connect)?;
            let mut stash = VecDeque::new();
            {
                let mut boxed = Boxed(&mut conn);
                let mut io = HandshakeIo {
                    conn: &mut boxed,
                    stash: &mut stash,
                    timer,
                    step: handshaker.name().to_owned(),
                };
                io.run(&*handshaker).await.map_err(AttemptError::Handshake)?;
            }
            Ok(HandshakeConnection { inner: conn, stash })
        })
    }
}

impl<C, H> Handshake<C, H> {
    /// The inner connector.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }
}

pin_project! {
    /// A connection after its handshakes: delivers the messages they kept, then the connection's.
    #[derive(Debug)]
    pub struct HandshakeConnection<S> {
        #[pin]
        inner: S,
        stash: VecDeque<Message>,
    }
}

impl<S> HandshakeConnection<S> {
    /// The connection.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The connection, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S, E> Stream for HandshakeConnection<S>
where
    S: Stream<Item = Result<Message, E>>,
{
    type Item = Result<Message, E>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if let Some(message) = this.stash.pop_front() {
            return Poll::Ready(Some(Ok(message)));
        }
        this.inner.poll_next(cx)
    }
}

impl<S: Sink<Message>> Sink<Message> for HandshakeConnection<S> {
    type Error = S::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.project().inner.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), S::Error> {
        self.project().inner.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.project().inner.poll_close(cx)
    }
}
