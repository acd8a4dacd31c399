//! The client's handles: [`Sender`], [`Subscription`], and the [`ClientState`] snapshot.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_tungstenite::tungstenite::{Bytes, Message};
use futures_core::Stream;
use futures_util::future::{self, Either};

use super::fanout::{self, Recv};
use crate::time::Timer;
use crate::ConnectionState;

/// Why a message could not be queued; the message is handed back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The send queue is full ([`Sender::try_send`]).
    #[error("the send queue is full")]
    Full(Message),
    /// The queue stayed full for the whole timeout ([`Sender::send_timeout`]).
    #[error("the send queue stayed full for the timeout")]
    Timeout(Message),
    /// The client is gone.
    #[error("the client is gone")]
    Closed(Message),
}

impl SendError {
    /// The message that was not queued.
    pub fn into_inner(self) -> Message {
        match self {
            Self::Full(message) | Self::Timeout(message) | Self::Closed(message) => message,
        }
    }
}

/// A cloneable handle for sending through a [`WebSocketClient`](super::WebSocketClient).
///
/// It stays valid across reconnects and across runs. Messages are queued (bounded by
/// [`ClientConfig::send_capacity`](super::ClientConfig::send_capacity)) and written by the client's `run()` in
/// order, after each new connection's handshakes; messages queued while disconnected go out on the next
/// connection. A message accepted here is delivered to a connection whose flush completed, or kept for
/// [`WebSocketClient::take_unsent`](super::WebSocketClient::take_unsent) when a run ends.
#[derive(Clone)]
pub struct Sender {
    pub(super) tx: async_channel::Sender<Message>,
    // Not the client's shared state: holding it would keep the queue's receiving end alive, and a sender
    // could then never see the client gone.
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
        self.tx
            .send(message)
            .await
            .map_err(|error| SendError::Closed(error.into_inner()))
    }

    /// Queues `message` if there is room now.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] or [`SendError::Closed`], with the message.
    pub fn try_send(&self, message: Message) -> Result<(), SendError> {
        self.tx.try_send(message).map_err(|error| match error {
            async_channel::TrySendError::Full(message) => SendError::Full(message),
            async_channel::TrySendError::Closed(message) => SendError::Closed(message),
        })
    }

    /// Queues `message`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SendError::Timeout`] or [`SendError::Closed`], with the message.
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
        let send = self.tx.send(message);
        futures_util::pin_mut!(send);
        match future::select(send, sleep).await {
            Either::Left((outcome, _)) => outcome.map_err(|error| SendError::Closed(error.into_inner())),
            Either::Right(_) => Err(SendError::Timeout(copy)),
        }
    }

    /// Queues a text message.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), SendError> {
        self.send(Message::text(text.into())).await
    }

    /// Queues a binary message.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_binary(&self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.send(Message::Binary(data.into())).await
    }

    /// Queues a ping.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn ping(&self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        self.send(Message::Ping(payload.into())).await
    }

    /// Messages queued and not yet taken by the client.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("queued", &self.tx.len()).finish()
    }
}

/// Why a [`Subscription`] returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// This subscriber fell behind and missed this many messages (its buffer is bounded); the next receive
    /// continues with the oldest message still buffered.
    #[error("subscriber lagged behind and missed {0} messages")]
    Lagged(u64),
    /// The client is gone.
    #[error("the client is gone")]
    Closed,
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

/// Why the last connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DisconnectReason {
    /// The connection's generation.
    pub generation: u64,
    /// The WebSocket close code (the server's, or 1006 for a connection lost without a close handshake).
    pub close_code: Option<u16>,
    /// What happened, in words.
    pub reason: String,
    /// How long the connection had been up.
    pub uptime: Duration,
}

/// A snapshot of a client's state and counters; see [`WebSocketClient::state`](super::WebSocketClient::state).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClientState {
    /// Where the connection is.
    pub status: ConnectionState,
    /// The current or last connection's generation (1 for the first connection of the client).
    pub generation: u64,
    /// When the current connection came up.
    pub connected_at: Option<SystemTime>,
    /// Successful reconnections: connections after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed (including handshake failures).
    pub failed_attempts: u64,
    /// Messages handed to the connection for sending.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// Why the last connection ended.
    pub last_disconnect: Option<DisconnectReason>,
    /// Whether `run()` is running.
    pub running: bool,
}

impl ClientState {
    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.status.is_connected()
    }

    /// The close code of the last disconnect, if any.
    pub fn last_close_code(&self) -> Option<u16> {
        self.last_disconnect.as_ref().and_then(|d| d.close_code)
    }
}
