//! The client's errors: [`ClientError`] ends a run, [`SendError`] hands a message back, [`ReceiveError`] says
//! why a subscription returned none.

use async_tungstenite::tungstenite::Message;

/// Why [`WebSocketClient::run`](super::WebSocketClient::run) ended with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `run()` is already running on this client.
    #[error("the client is already running")]
    AlreadyRunning,
    /// The connection ended for good: the retry policy gave up or a failure was fatal (e.g. HTTP 401, a
    /// certificate error, a rejected handshake).
    #[error("the run ended: {0}")]
    Terminated(#[source] crate::error::Error),
}

/// Why a message could not be queued; the message is handed back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The send queue is full ([`Sender::try_send`](super::Sender::try_send)).
    #[error("the send queue is full")]
    Full(Message),
    /// The queue stayed full for the whole timeout ([`Sender::send_timeout`](super::Sender::send_timeout)).
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

/// Why a [`Subscription`](super::Subscription) returned no message.
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
