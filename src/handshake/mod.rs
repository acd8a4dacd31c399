//! Application handshakes: exchanges run on every new connection before it is handed to the user.
//!
//! Sits in the connector stack, between the hooks and the transport (see
//! [`ConnectorBuilder`](crate::layer::ConnectorBuilder)). A [`Handshaker`] gets a [`HandshakeIo`] on the
//! fresh connection: it sends, waits for replies that a predicate accepts, and finishes or fails. The
//! [`Handshake`] connector (made by [`HandshakeLayer`]) runs it inside the attempt, so on every
//! (re)connection handshakes complete before queued messages are flushed and before any inbound message
//! reaches the user, and the [`Connected`](crate::Event::Connected) event comes after them. Frames a
//! handshake consumes are not delivered; frames it receives but does not want (data that raced ahead of an
//! acknowledgement, say) are kept and delivered to the user first.
//!
//! Provided: [`AuthHandshaker`], [`SubscribeHandshaker`], [`SendMessageHandshaker`], closures through
//! [`handshake_fn`], and [`ChainedHandshaker`] (also through [`chain_handshakers!`](crate::chain_handshakers)).
//! Each is a [`tower_layer::Layer`] itself; wrap one in a [`HandshakeLayer`] to give it a different clock.
//!
//! Each handshake has its own timeout ([`DEFAULT_HANDSHAKE_TIMEOUT`] unless set). A failure is diagnosed as a
//! handshake failure: [`HandshakeError::Rejected`] (the server said no, e.g. bad credentials) is fatal and
//! ends the stream at once; timeouts and connection errors retry with backoff.

mod auth;
mod chain;
mod error;
mod func;
mod layer;
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

pub use self::auth::AuthHandshaker;
pub use self::chain::ChainedHandshaker;
pub use self::error::{AttemptError, HandshakeError};
pub use self::func::{handshake_fn, FnHandshaker};
pub use self::layer::{Handshake, HandshakeConnection, HandshakeFuture, HandshakeLayer};
pub use self::send::SendMessageHandshaker;
pub use self::subscribe::SubscribeHandshaker;
use crate::error::{BoxError, ConnectTimeout};
use crate::time::Timer;

/// The default time a handshake may take: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A shared predicate on messages.
pub(crate) type Predicate = Arc<dyn Fn(&Message) -> bool + Send + Sync>;

/// A boxed future borrowing its handshaker and I/O: what [`Handshaker::handshake`] returns.
pub type Exchange<'a> = Pin<Box<dyn Future<Output = Result<(), HandshakeError>> + Send + 'a>>;

/// An exchange run on each new connection.
///
/// Implement [`handshake`](Self::handshake) with `Box::pin(async move { ... })`, using `io` to send and
/// receive. Return [`HandshakeError::Rejected`] when the server refuses (fatal: no retry), other errors to
/// retry with backoff.
pub trait Handshaker: Send + Sync + 'static {
    /// Runs the exchange.
    ///
    /// # Errors
    ///
    /// Why the exchange failed: [`HandshakeError::Rejected`] ends the stream, anything else is retried.
    fn handshake<'a>(&'a self, io: &'a mut HandshakeIo<'_>) -> Exchange<'a>;

    /// A short name for logs and errors (e.g. `"auth"`).
    fn name(&self) -> &str {
        "handshake"
    }

    /// The time the whole exchange may take; `None` for no limit.
    fn timeout(&self) -> Option<Duration> {
        None
    }
}

/// A connection as a handshake sees it: WebSocket messages, boxed errors.
pub(super) trait Channel:
    Stream<Item = Result<Message, BoxError>> + Sink<Message, Error = BoxError> + Send + Unpin
{
}

impl<T> Channel for T where T: Stream<Item = Result<Message, BoxError>> + Sink<Message, Error = BoxError> + Send + Unpin {}

/// Adapts a connection's errors to [`BoxError`].
pub(super) struct Boxed<'c, S>(pub(super) &'c mut S);

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
    pub(super) conn: &'c mut (dyn Channel + 'c),
    pub(super) stash: &'c mut VecDeque<Message>,
    pub(super) timer: Arc<dyn Timer>,
    pub(super) step: String,
}

impl HandshakeIo<'_> {
    /// Sends a message and flushes it.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::ConnectionLost`] if the connection fails.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave the message unsent or half written; a handshake dropped halfway (by its
    /// timeout) fails the attempt, and the connection is dropped with it.
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is taken from the connection only when it is returned.
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
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the messages it set aside stay set aside (they are delivered after the handshake), and a
    /// message is taken from the connection only when it is looked at.
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
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the handshake midway: the attempt it belongs to is to be given up (the
    /// handshake layer does so), since the server's side of the exchange is then unknown.
    pub async fn run(&mut self, handshake: &dyn Handshaker) -> Result<(), HandshakeError> {
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
                        source: ConnectTimeout {
                            after: timeout.unwrap_or_default(),
                        },
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

/// Implements `Layer` for a handshaker type by way of [`HandshakeLayer`].
macro_rules! handshake_layer {
    ($ty:ty) => {
        impl<C> tower_layer::Layer<C> for $ty {
            type Service = $crate::handshake::Handshake<C, $ty>;

            fn layer(&self, inner: C) -> Self::Service {
                $crate::handshake::HandshakeLayer::new(self.clone()).layer(inner)
            }
        }
    };
}
pub(crate) use handshake_layer;
