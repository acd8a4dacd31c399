//! Type-erased connectors and connections, so a client can be configured at run time with any layers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use futures_core::Stream;
use futures_sink::Sink;

use crate::error::BoxError;
use crate::time::{Sleep, Timer};
use crate::ws::WsConnector;
use crate::Connect;

/// A WebSocket connection of any layered type, with boxed errors.
pub trait Connection: Stream<Item = Result<Message, BoxError>> + Sink<Message, Error = BoxError> + Send {}

impl<T> Connection for T where T: Stream<Item = Result<Message, BoxError>> + Sink<Message, Error = BoxError> + Send {}

/// A boxed connection of any layered type.
pub type BoxConnection = Pin<Box<dyn Connection>>;
/// The attempt future of an [`ErasedConnector`].
pub type BoxConnectFuture = Pin<Box<dyn Future<Output = Result<BoxConnection, BoxError>> + Send>>;

/// Boxes a connection's errors.
struct ErrInto<S>(S);

impl<S, E> Stream for ErrInto<S>
where
    S: Stream<Item = Result<Message, E>> + Unpin,
    E: Into<BoxError>,
{
    type Item = Result<Message, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(Into::into)))
    }
}

impl<S> Sink<Message> for ErrInto<S>
where
    S: Sink<Message> + Unpin,
    S::Error: Into<BoxError>,
{
    type Error = BoxError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(Into::into)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), BoxError> {
        Pin::new(&mut self.0).start_send(item).map_err(Into::into)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(Into::into)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(Into::into)
    }
}

/// A WebSocket connector stack of any layered type, boxed: what [`ClientBuilder::layer`](super::ClientBuilder::layer)
/// layers wrap.
pub struct ErasedConnector {
    connect: Box<dyn FnMut() -> BoxConnectFuture + Send>,
}

impl ErasedConnector {
    /// Erases `inner`'s type.
    pub fn new<C, E>(mut inner: C) -> Self
    where
        C: Connect + Send + 'static,
        C::Future: Send + 'static,
        C::Connection: Stream<Item = Result<Message, E>> + Sink<Message> + Send + Unpin + 'static,
        <C::Connection as Sink<Message>>::Error: Into<BoxError>,
        E: Into<BoxError>,
    {
        Self {
            connect: Box::new(move || {
                let attempt = inner.connect();
                Box::pin(async move {
                    let conn = attempt.await.map_err(Into::into)?;
                    Ok(Box::pin(ErrInto(conn)) as BoxConnection)
                })
            }),
        }
    }
}

impl ErasedConnector {
    /// Wraps every connection `inner` makes with `wrap`.
    pub(crate) fn map_connection(
        mut self,
        wrap: impl Fn(BoxConnection) -> BoxConnection + Send + Sync + 'static,
    ) -> Self {
        let wrap = Arc::new(wrap);
        Self {
            connect: Box::new(move || {
                let attempt = (self.connect)();
                let wrap = Arc::clone(&wrap);
                Box::pin(async move { attempt.await.map(|conn| wrap(conn)) })
            }),
        }
    }
}

impl Connect for ErasedConnector {
    type Connection = BoxConnection;
    type Error = BoxError;
    type Future = BoxConnectFuture;

    fn connect(&mut self) -> BoxConnectFuture {
        (self.connect)()
    }
}

impl std::fmt::Debug for ErasedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasedConnector").finish_non_exhaustive()
    }
}

/// The connector of a client run: the transport alone when nothing is layered on it (the default), so that
/// the run is compiled for it and messages are read without dynamic dispatch; otherwise the erased stack.
// One per run: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ClientConnector {
    Direct(WsConnector),
    Layered(ErasedConnector),
}

/// No inbound frame for the receive timeout: the connection is declared dead.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no message received within {0:?}")]
pub struct ReceiveTimeout(pub Duration);

/// Fails the connection when no frame arrives for a whole receive-timeout window (so silence is detected
/// within one to two windows). Checking a flag per message, not the clock, keeps the data path cheap.
pub(crate) struct IdleTimeout {
    inner: BoxConnection,
    timeout: Duration,
    timer: Arc<dyn Timer>,
    window: Option<Sleep>,
    seen: bool,
}

impl IdleTimeout {
    pub(crate) fn wrap(inner: BoxConnection, timeout: Duration, timer: Arc<dyn Timer>) -> BoxConnection {
        Box::pin(Self {
            inner,
            timeout,
            timer,
            window: None,
            seen: false,
        })
    }

    fn arm(&mut self) {
        self.window = self
            .timer
            .now()
            .checked_add(self.timeout)
            .map(|deadline| self.timer.sleep_until(deadline));
    }
}

impl Stream for IdleTimeout {
    type Item = Result<Message, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Poll::Ready(item) = this.inner.as_mut().poll_next(cx) {
            this.seen = true;
            return Poll::Ready(item);
        }
        if this.window.is_none() {
            this.arm();
        }
        loop {
            let Some(window) = this.window.as_mut() else {
                return Poll::Pending;
            };
            match window.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if this.seen => {
                    this.seen = false;
                    this.arm();
                }
                Poll::Ready(()) => return Poll::Ready(Some(Err(Box::new(ReceiveTimeout(this.timeout))))),
            }
        }
    }
}

impl Sink<Message> for IdleTimeout {
    type Error = BoxError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.as_mut().poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), BoxError> {
        self.inner.as_mut().start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.as_mut().poll_close(cx)
    }
}
