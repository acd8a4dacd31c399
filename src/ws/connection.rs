//! [`WsConnection`]: one WebSocket connection, with Close frames turned into a typed end.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_tungstenite::tungstenite::{self, protocol::CloseFrame, Message};
use async_tungstenite::WebSocketStream;
use futures_core::Stream;
use futures_sink::Sink;

use super::error::ConnectionError;
use super::transport::Transport;

/// One WebSocket connection: `Stream<Item = Result<Message, ConnectionError>> + Sink<Message>`.
///
/// Made by [`connect`](crate::connect) or a [`WsConnector`](super::WsConnector). It differs from the bare
/// async-tungstenite stream in one way: a Close frame from the server is not an item. The connection ends
/// with [`ConnectionError::Closed`] carrying the code and reason, so that
/// [`ReconnectingStream`](crate::ReconnectingStream) reports it as a disconnect with a close code and
/// decides by the code whether to reconnect. Pings are answered automatically (by tungstenite, on the next
/// read or write); they and pongs are still yielded as items.
///
/// `poll_close` performs the close handshake: it sends a Close frame, then waits for the server's Close (or
/// the end of the connection). Bound the wait from outside, as `ReconnectingStream`'s close timeout does.
#[derive(Debug)]
pub struct WsConnection {
    inner: WebSocketStream<Transport>,
    protocol: Option<String>,
    peer_close: Option<(u16, String)>,
    ended: bool,
}

impl WsConnection {
    pub(crate) fn new(inner: WebSocketStream<Transport>, protocol: Option<String>) -> Self {
        Self {
            inner,
            protocol,
            peer_close: None,
            ended: false,
        }
    }

    /// The subprotocol the server selected, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The async-tungstenite stream.
    pub fn get_ref(&self) -> &WebSocketStream<Transport> {
        &self.inner
    }

    /// The async-tungstenite stream, for low-level control.
    pub fn into_inner(self) -> WebSocketStream<Transport> {
        self.inner
    }

    fn closed_error(&mut self) -> Option<ConnectionError> {
        self.peer_close
            .take()
            .map(|(code, reason)| ConnectionError::Closed { code, reason })
    }
}

impl Stream for WsConnection {
    type Item = Result<Message, ConnectionError>;

    #[inline(always)]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
            Some(Ok(Message::Close(frame))) => {
                // tungstenite queues the reply: send it if the socket takes it now, then end at once rather
                // than wait for a server that may never close TCP.
                this.on_close(frame);
                let _ = Pin::new(&mut this.inner).poll_flush(cx);
                Poll::Ready(this.on_end(None))
            }
            Some(Ok(message)) => Poll::Ready(Some(Ok(message))),
            other => Poll::Ready(this.on_end(other)),
        }
    }
}

impl WsConnection {
    // The rare paths, kept out of line so the per-message path stays small.
    #[cold]
    #[inline(never)]
    fn on_close(&mut self, frame: Option<CloseFrame>) {
        let (code, reason) = frame.map_or((1005, String::new()), |frame| {
            (u16::from(frame.code), frame.reason.as_str().to_owned())
        });
        self.peer_close = Some((code, reason));
    }

    #[cold]
    #[inline(never)]
    fn on_end(
        &mut self,
        item: Option<Result<Message, tungstenite::Error>>,
    ) -> Option<Result<Message, ConnectionError>> {
        self.ended = true;
        match item {
            Some(Err(error)) => Some(Err(self.closed_error().unwrap_or(ConnectionError::Protocol(error)))),
            _ => self.closed_error().map(Err),
        }
    }
}

impl Sink<Message> for WsConnection {
    type Error = ConnectionError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        Pin::new(&mut self.get_mut().inner).poll_ready(cx).map_err(Into::into)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), ConnectionError> {
        Pin::new(&mut self.get_mut().inner).start_send(item).map_err(Into::into)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx).map_err(Into::into)
    }

    /// Sends a Close frame, then waits for the server's Close or the end of the connection.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_close(cx))?;
        while !this.ended {
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => this.ended = true,
            }
        }
        Poll::Ready(Ok(()))
    }
}
