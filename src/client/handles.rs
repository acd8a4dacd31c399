//! The client's handles: [`Sender`] and [`Subscription`].

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::tungstenite::{Bytes, Message};
use futures_core::Stream;
use futures_util::future::{self, Either};

use super::error::{ReceiveError, SendError};
use super::fanout::{self, Recv};
use super::outbox::{Outbox, Refused};
use crate::time::Timer;

/// A cloneable handle for sending through a [`WebSocketClient`](super::WebSocketClient).
///
/// It stays valid across reconnects and across runs. Messages are queued (bounded by
/// [`ClientConfig::send_capacity`](super::ClientConfig::send_capacity)) and written by the client's `run()` in
/// order, after each new connection's handshakes; messages queued while disconnected go out on the next
/// connection. A message accepted here is delivered to a connection whose flush completed, or handed back by
/// [`WebSocketClient::take_unsent`](super::WebSocketClient::take_unsent): whether a run had taken it, or it
/// still waited in this queue (before a run, or after one ended).
#[derive(Clone)]
pub struct Sender {
    // Not the client's shared state: the outbox alone, which the client closes when it is dropped.
    pub(super) outbox: Arc<Outbox>,
    pub(super) timer: Arc<dyn Timer>,
}

impl Sender {
    /// Queues `message`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the client is gone.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops the message, which was not queued.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        self.outbox.push_wait(message).await.map_err(SendError::Closed)
    }

    /// Queues `message` if there is room now.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] or [`SendError::Closed`], with the message.
    pub fn try_send(&self, message: Message) -> Result<(), SendError> {
        self.outbox.push(message).map_err(|refused| match refused {
            Refused::Full(message) => SendError::Full(message),
            Refused::Closed(message) => SendError::Closed(message),
        })
    }

    /// Queues `message`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SendError::Timeout`] or [`SendError::Closed`], with the message.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops the message, which was not queued.
    pub async fn send_timeout(&self, message: Message, timeout: Duration) -> Result<(), SendError> {
        let message = match self.try_send(message) {
            Err(SendError::Full(message)) => message,
            other => return other,
        };
        let deadline = self.timer.now().checked_add(timeout);
        let sleep = match deadline {
            Some(deadline) => self.timer.sleep_until(deadline),
            None => Box::pin(future::pending()),
        };
        // The send future owns the message; keep a (cheap, reference-counted) copy to hand back on timeout.
        let copy = message.clone();
        let send = self.outbox.push_wait(message);
        futures_util::pin_mut!(send);
        match future::select(send, sleep).await {
            Either::Left((outcome, _)) => outcome.map_err(SendError::Closed),
            Either::Right(_) => Err(SendError::Timeout(copy)),
        }
    }

    /// Queues a text message.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send): dropped before it completes, the message was not queued.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), SendError> {
        self.send(Message::text(text.into())).await
    }

    /// Queues a binary message.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send): dropped before it completes, the message was not queued.
    pub async fn send_binary(&self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.send(Message::Binary(data.into())).await
    }

    /// Queues a ping.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send): dropped before it completes, the ping was not queued.
    pub async fn ping(&self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        self.send(Message::Ping(payload.into())).await
    }

    /// Messages queued and not yet taken by the client.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("queued", &self.outbox.len()).finish()
    }
}

/// A receiver of a client's messages (or events): any number can exist, and a slow one never stalls the
/// others. Each buffers up to [`ClientConfig::subscriber_capacity`](super::ClientConfig::subscriber_capacity)
/// items; a subscriber that falls further behind is told how many it missed with [`ReceiveError::Lagged`].
///
/// It is a `Stream` of `Result<T, ReceiveError>` too.
pub struct Subscription<T> {
    pub(super) rx: fanout::Receiver<T>,
}

impl<T: Clone> Subscription<T> {
    /// The next item.
    ///
    /// # Errors
    ///
    /// [`ReceiveError::Lagged`] after missed items, [`ReceiveError::Closed`] once the client is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses no item.
    pub async fn recv(&mut self) -> Result<T, ReceiveError> {
        if let Some(item) = self.rx.pop_local() {
            return Ok(item);
        }
        future::poll_fn(|cx| self.rx.poll_recv(cx).map(received)).await
    }

    /// The next item if one is buffered.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv); `Ok(None)` when nothing is buffered.
    pub fn try_recv(&mut self) -> Result<Option<T>, ReceiveError> {
        match self.rx.try_recv() {
            Recv::Empty => Ok(None),
            found => received(found).map(Some),
        }
    }
}

/// A receive's outcome as `recv` returns it (`Empty` does not reach here).
fn received<T>(found: Recv<T>) -> Result<T, ReceiveError> {
    match found {
        Recv::Item(item) => Ok(item),
        Recv::Lagged(missed) => Err(ReceiveError::Lagged(missed)),
        Recv::Empty | Recv::Closed => Err(ReceiveError::Closed),
    }
}

impl<T: Clone> Stream for Subscription<T> {
    type Item = Result<T, ReceiveError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|found| match received(found) {
            Err(ReceiveError::Closed) => None,
            outcome => Some(outcome),
        })
    }
}

impl<T: Clone> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("buffered", &self.rx.len())
            .finish()
    }
}
