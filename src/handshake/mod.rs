//! Application handshakes: exchanges run on every new connection before it is handed to the user.
//!
//! A [`Handshake`] gets a [`HandshakeIo`] on the fresh connection: it sends, waits for replies that a
//! predicate accepts, and finishes or fails. Handshakes run inside the connector, so on every (re)connection
//! they complete before queued messages are flushed and before any inbound message reaches the user, and the
//! [`Connected`](crate::Event::Connected) event comes after them. Frames a handshake consumes are not
//! delivered; frames it receives but does not want (data that raced ahead of an acknowledgement, say) are
//! kept and delivered to the user first.
//!
//! Provided: [`AuthHandshaker`], [`SubscribeHandshaker`], [`SendMessageHandshaker`], closures through
//! [`handshake_fn`], and [`ChainedHandshaker`] (also through [`chain_handshakers!`](crate::chain_handshakers)).
//! Each is a [`tower_layer::Layer`]: add it to a [`ConnectorBuilder`](crate::layer::ConnectorBuilder). Wrap
//! one in a [`HandshakeLayer`] to give it a different clock.
//!
//! Each handshake has its own timeout. A failure is classified: [`HandshakeError::Rejected`] (the server said
//! no, e.g. bad credentials) is fatal and ends the stream at once; timeouts and connection errors retry with
//! backoff.

mod auth;
mod chain;
mod func;
mod send;
mod subscribe;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use futures_core::Stream;
use futures_sink::Sink;
use futures_util::future::{self, Either};
use futures_util::{SinkExt, StreamExt};
use tower_layer::Layer;

pub use self::auth::{AuthHandshaker, DEFAULT_AUTH_TIMEOUT};
pub use self::chain::ChainedHandshaker;
pub use self::func::{handshake_fn, FnHandshaker};
pub use self::send::SendMessageHandshaker;
pub use self::subscribe::{SubscribeHandshaker, DEFAULT_SUBSCRIBE_TIMEOUT};
use crate::error::BoxError;
use crate::time::{AsyncIoTimer, Timer};
use crate::Connect;

/// A shared predicate on messages.
pub(crate) type Predicate = Arc<dyn Fn(&Message) -> bool + Send + Sync>;

/// A boxed future borrowing its handshake and I/O: what [`Handshake::handshake`] returns.
pub type HandshakeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandshakeError>> + Send + 'a>>;

/// An exchange run on each new connection.
///
/// Implement [`handshake`](Self::handshake) with `Box::pin(async move { ... })`, using `io` to send and
/// receive. Return [`HandshakeError::Rejected`] when the server refuses (fatal: no retry), other errors to
/// retry with backoff.
pub trait Handshake: Send + Sync + 'static {
    /// Runs the exchange.
    fn handshake<'a>(&'a self, io: &'a mut HandshakeIo<'_>) -> HandshakeFuture<'a>;

    /// A short name for logs and errors (e.g. `"auth"`).
    fn name(&self) -> &str {
        "handshake"
    }

    /// The time the whole exchange may take; `None` for no limit.
    fn timeout(&self) -> Option<Duration> {
        None
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server refused (e.g. bad credentials): fatal, never retried.
    #[error("{step} handshake rejected: {reason}")]
    Rejected {
        /// The handshake.
        step: String,
        /// What the server said (truncated).
        reason: String,
    },
    /// No acceptable reply within the handshake's timeout: retried with backoff.
    #[error("{step} handshake timed out after {after:?}")]
    Timeout {
        /// The handshake.
        step: String,
        /// The timeout.
        after: Duration,
    },
    /// The connection ended or failed during the handshake: retried with backoff (a server Close with a
    /// fatal code is fatal).
    #[error("connection lost during {step} handshake")]
    ConnectionLost {
        /// The handshake.
        step: String,
        /// The server's close code, if it sent one.
        close_code: Option<u16>,
        /// The connection's error, if any.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The handshake could not build its message (e.g. invalid JSON from a custom builder).
    #[error("{step} handshake failed: {reason}")]
    Failed {
        /// The handshake.
        step: String,
        /// Why.
        reason: String,
    },
}

impl HandshakeError {
    /// Whether this failure is fatal (the server rejected the handshake).
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Rejected { .. } => true,
            Self::ConnectionLost {
                close_code: Some(code), ..
            } => crate::ws::FATAL_CLOSE_CODES.contains(code),
            _ => false,
        }
    }

    /// A rejection, for use in a handshake.
    pub fn rejected(step: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Rejected {
            step: step.into(),
            reason: reason.into(),
        }
    }
}

/// A connection as a handshake sees it: WebSocket messages, boxed errors.
trait Channel: Stream<Item = Result<Message, BoxError>> + Sink<Message, Error = BoxError> + Send + Unpin {}

impl<T> Channel for T where T: Stream<Item = Result<Message, BoxError>> + Sink<Message, Error = BoxError> + Send + Unpin {}

/// Adapts a connection's errors to [`BoxError`].
struct Boxed<'c, S>(&'c mut S);

impl<S, E> Stream for Boxed<'_, S>
where
    S: Stream<Item = Result<Message, E>> + Unpin,
    E: Into<BoxError>,
{
    type Item = Result<Message, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut *self.0)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(Into::into)))
    }
}

impl<S> Sink<Message> for Boxed<'_, S>
where
    S: Sink<Message> + Unpin,
    S::Error: Into<BoxError>,
{
    type Error = BoxError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Pin::new(&mut *self.0).poll_ready(cx).map_err(Into::into)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), BoxError> {
        Pin::new(&mut *self.0).start_send(item).map_err(Into::into)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Pin::new(&mut *self.0).poll_flush(cx).map_err(Into::into)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Pin::new(&mut *self.0).poll_close(cx).map_err(Into::into)
    }
}

/// What a handshake may do on the fresh connection.
pub struct HandshakeIo<'c> {
    conn: &'c mut (dyn Channel + 'c),
    stash: &'c mut VecDeque<Message>,
    timer: Arc<dyn Timer>,
    step: String,
}

impl HandshakeIo<'_> {
    /// Sends a message and flushes it.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::ConnectionLost`] if the connection fails.
    pub async fn send(&mut self, message: Message) -> Result<(), HandshakeError> {
        match self.conn.send(message).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.lost(Some(error))),
        }
    }

    /// Receives the next data message (text or binary); pings and pongs are skipped (pings are answered).
    ///
    /// # Errors
    ///
    /// [`HandshakeError::ConnectionLost`] if the connection ends or fails, with the server's close code.
    pub async fn recv(&mut self) -> Result<Message, HandshakeError> {
        loop {
            match self.conn.next().await {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => return Ok(message),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(self.lost(Some(error))),
                None => return Err(self.lost(None)),
            }
        }
    }

    /// Receives until `accept` returns `Some`; other data messages are kept and delivered to the user after
    /// the handshake.
    ///
    /// # Errors
    ///
    /// What `accept` returns as `Some(Err)`, or [`HandshakeError::ConnectionLost`].
    pub async fn recv_until<T>(
        &mut self,
        mut accept: impl FnMut(&Message) -> Option<Result<T, HandshakeError>>,
    ) -> Result<T, HandshakeError> {
        loop {
            let message = self.recv().await?;
            match accept(&message) {
                Some(outcome) => return outcome,
                None => self.stash.push_back(message),
            }
        }
    }

    /// The clock handshakes use for their timeouts.
    pub fn timer(&self) -> &Arc<dyn Timer> {
        &self.timer
    }

    /// Runs `handshake` with its own timeout and name.
    ///
    /// # Errors
    ///
    /// The handshake's error, or [`HandshakeError::Timeout`].
    pub async fn run(&mut self, handshake: &dyn Handshake) -> Result<(), HandshakeError> {
        let previous = std::mem::replace(&mut self.step, handshake.name().to_owned());
        let timeout = handshake.timeout();
        let deadline = timeout.and_then(|after| self.timer.now().checked_add(after));
        let sleep = deadline.map(|deadline| self.timer.sleep_until(deadline));
        let step = self.step.clone();
        let outcome = {
            let exchange = handshake.handshake(self);
            match sleep {
                None => exchange.await,
                Some(sleep) => match future::select(exchange, sleep).await {
                    Either::Left((outcome, _)) => outcome,
                    Either::Right(_) => Err(HandshakeError::Timeout {
                        step,
                        after: timeout.unwrap_or_default(),
                    }),
                },
            }
        };
        tracing::debug!(step = %self.step, ok = outcome.is_ok(), "handshake finished");
        self.step = previous;
        outcome
    }

    fn lost(&self, error: Option<BoxError>) -> HandshakeError {
        // Only a code the server sent: errors the client detected itself (a bad frame, say) are not the
        // server's verdict, and are retried like any lost connection.
        let close_code = error
            .as_ref()
            .and_then(|error| match error.downcast_ref::<crate::ws::ConnectionError>() {
                Some(crate::ws::ConnectionError::Closed { code, .. }) => Some(*code),
                _ => None,
            });
        HandshakeError::ConnectionLost {
            step: self.step.clone(),
            close_code,
            source: error.map(Arc::from),
        }
    }
}

impl fmt::Debug for HandshakeIo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeIo")
            .field("step", &self.step)
            .field("stashed", &self.stash.len())
            .finish_non_exhaustive()
    }
}

/// Runs a handshake with its own clock: the layer form of any [`Handshake`].
#[derive(Clone)]
pub struct HandshakeLayer<H> {
    handshake: Arc<H>,
    timer: Arc<dyn Timer>,
}

impl<H: Handshake> HandshakeLayer<H> {
    /// Runs `handshake` on every new connection, timing it with async-io.
    pub fn new(handshake: H) -> Self {
        Self {
            handshake: Arc::new(handshake),
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

impl<H: Handshake, C> Layer<C> for HandshakeLayer<H> {
    type Service = HandshakeConnector<C, H>;

    fn layer(&self, inner: C) -> Self::Service {
        HandshakeConnector {
            inner,
            handshake: Arc::clone(&self.handshake),
            timer: Arc::clone(&self.timer),
        }
    }
}

/// Implements `Layer` for a handshaker type by way of [`HandshakeLayer`].
macro_rules! handshake_layer {
    ($ty:ty) => {
        impl<C> tower_layer::Layer<C> for $ty {
            type Service = $crate::handshake::HandshakeConnector<C, $ty>;

            fn layer(&self, inner: C) -> Self::Service {
                $crate::handshake::HandshakeLayer::new(self.clone()).layer(inner)
            }
        }
    };
}
pub(crate) use handshake_layer;

/// A connector that runs a handshake on each connection its inner connector makes.
pub struct HandshakeConnector<C, H> {
    inner: C,
    handshake: Arc<H>,
    timer: Arc<dyn Timer>,
}

impl<C: fmt::Debug, H> fmt::Debug for HandshakeConnector<C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeConnector")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<C, H, S, E> Connect for HandshakeConnector<C, H>
where
    C: Connect<Connection = S>,
    C::Future: Send + 'static,
    H: Handshake,
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Send + Unpin + 'static,
    <S as Sink<Message>>::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    type Connection = Handshaken<S>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Handshaken<S>, BoxError>> + Send>>;

    fn connect(&mut self) -> Self::Future {
        let attempt = self.inner.connect();
        let handshake = Arc::clone(&self.handshake);
        let timer = Arc::clone(&self.timer);
        Box::pin(async move {
            let mut conn = attempt.await.map_err(Into::into)?;
            let mut stash = VecDeque::new();
            {
                let mut boxed = Boxed(&mut conn);
                let mut io = HandshakeIo {
                    conn: &mut boxed,
                    stash: &mut stash,
                    timer,
                    step: handshake.name().to_owned(),
                };
                io.run(&*handshake).await?;
            }
            Ok(Handshaken { inner: conn, stash })
        })
    }
}

pin_project_lite::pin_project! {
    /// A connection after its handshakes: delivers the messages they kept, then the connection's.
    #[derive(Debug)]
    pub struct Handshaken<S> {
        #[pin]
        inner: S,
        stash: VecDeque<Message>,
    }
}

impl<S> Handshaken<S> {
    /// The connection.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, E> Stream for Handshaken<S>
where
    S: Stream<Item = Result<Message, E>>,
{
    type Item = Result<Message, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if let Some(message) = this.stash.pop_front() {
            return Poll::Ready(Some(Ok(message)));
        }
        this.inner.poll_next(cx)
    }
}

impl<S: Sink<Message>> Sink<Message> for Handshaken<S> {
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

/// Truncates `text` to at most `max` bytes on a char boundary, for error messages and logs.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
