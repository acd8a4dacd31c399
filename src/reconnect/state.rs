//! [`State`]: where a [`ReconnectingStream`](super::ReconnectingStream) is in its life, one enum whose variants
//! carry their data.

use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::event::ConnectionState;
use crate::time::Sleep;

/// Where the stream is in its life. Each state carries its own data; nothing outside restates it.
///
/// The connect future is boxed per attempt, so that the stream stays `Unpin` whatever the connector's
/// future is (held in place, an `async` connector would make the stream `!Unpin`, and `next().await` on it
/// would need pinning first).
pub(crate) enum State<F, S> {
    /// Not polled yet: nothing has been dialled.
    Idle,
    /// An attempt is in progress, raced against the connect timeout.
    Connecting {
        future: Pin<Box<F>>,
        timeout: Option<Sleep>,
        attempt: u32,
    },
    /// Waiting before the next attempt.
    Backoff {
        sleep: Sleep,
        attempt: u32,
        delay: Duration,
    },
    /// A connection is up.
    Connected { conn: S, since: Instant },
    /// `poll_close` was called: the queue is flushed and the connection closed, until `deadline`.
    Closing { conn: S, since: Instant, deadline: Sleep },
    /// Ended for good by a failure (gave up or fatal); the stream has not yielded `error` yet.
    Failed { error: Error },
    /// Ended for good: the stream yields `None`, the sink returns `error`.
    Ended { error: Error },
}

impl<F, S> State<F, S> {
    /// When the connection came up, if one is up.
    pub(crate) fn since(&self) -> Option<Instant> {
        match self {
            Self::Connected { since, .. } | Self::Closing { since, .. } => Some(*since),
            _ => None,
        }
    }

    /// The public view of the state.
    pub(crate) fn view(&self, generation: u64) -> ConnectionState {
        match self {
            Self::Idle => ConnectionState::Idle,
            Self::Connecting { attempt, .. } => ConnectionState::Connecting { attempt: *attempt },
            Self::Backoff { attempt, delay, .. } => ConnectionState::Backoff {
                attempt: *attempt,
                delay: *delay,
            },
            Self::Connected { .. } => ConnectionState::Connected { generation },
            Self::Closing { .. } => ConnectionState::Closing,
            Self::Failed { .. } => ConnectionState::Terminated,
            Self::Ended { error } if error.is_closed() => ConnectionState::Closed,
            Self::Ended { .. } => ConnectionState::Terminated,
        }
    }
}
