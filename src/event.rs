//! Lifecycle events, observers and the connection state: what a
//! [`ReconnectingStream`](crate::ReconnectingStream) tells the world about itself. Part of the core.

use std::fmt;
use std::time::Duration;

use crate::error::Failure;

/// A transition of a [`ReconnectingStream`](crate::ReconnectingStream), delivered to every [`Observer`].
///
/// In order, a connection's life reads: `Connecting`, `Connected`, `Disconnected`, `RetryScheduled`,
/// `Connecting`, … until `GaveUp` or `Closed`. A failed attempt reads `Connecting`, `ConnectFailed` (or
/// `HandshakeFailed`), `RetryScheduled`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A connection attempt is starting.
    Connecting {
        /// The attempt, counted from 1 since the stream started or the last stable connection dropped.
        attempt: u32,
    },
    /// A connection is up (after every handshake layer has finished).
    Connected {
        /// The connection's generation: 1 for the first connection, one more for each reconnection.
        generation: u64,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// Why (carries the attempt number).
        failure: Failure,
    },
    /// A connection was made but a handshake layer failed on it (its error said so:
    /// [`Diagnosis::is_handshake`](crate::Diagnosis::is_handshake)); the attempt counts as failed.
    HandshakeFailed {
        /// The attempt.
        attempt: u32,
        /// Why.
        failure: Failure,
    },
    /// An established connection was lost.
    Disconnected {
        /// The lost connection's generation.
        generation: u64,
        /// How long it had been up.
        uptime: Duration,
        /// Why it was lost; [`Failure::close_code`] gives the protocol's close code, if any.
        reason: Failure,
    },
    /// The next attempt will start after `delay`.
    RetryScheduled {
        /// The attempt that will start.
        attempt: u32,
        /// Consecutive failures so far: the number the retry policy was given.
        failures: u32,
        /// The delay before the attempt.
        delay: Duration,
    },
    /// The stream ended for good because of a failure: the policy gave up or the failure was fatal.
    GaveUp {
        /// Consecutive failures.
        failures: u32,
        /// Accepted messages not delivered.
        unsent: usize,
        /// The last failure.
        reason: Failure,
    },
    /// The stream was closed by the user.
    Closed {
        /// Accepted messages not delivered.
        unsent: usize,
    },
    /// The queue policy dropped queued messages as a connection came up; they are handed back by
    /// [`take_dropped`](crate::ReconnectingStream::take_dropped) (or the client's).
    Dropped {
        /// The connection that came up.
        generation: u64,
        /// How many messages were dropped.
        count: usize,
    },
}

/// Receives every [`Event`] of a stream, synchronously, as it happens.
///
/// Observers run inside the stream's poll, so they must not block: record, count, log, or forward into a
/// channel with a non-blocking send. Any `FnMut(&Event) + Send` closure is an observer.
pub trait Observer: Send {
    /// Called once per event.
    fn on_event(&mut self, event: &Event);
}

impl<F> Observer for F
where
    F: FnMut(&Event) + Send,
{
    fn on_event(&mut self, event: &Event) {
        self(event)
    }
}

pub(crate) struct Observers(Vec<Box<dyn Observer>>);

impl Observers {
    pub(crate) fn new() -> Self {
        Self(Vec::new())
    }

    pub(crate) fn push(&mut self, observer: Box<dyn Observer>) {
        self.0.push(observer);
    }

    pub(crate) fn emit(&mut self, event: Event) {
        for observer in &mut self.0 {
            observer.on_event(&event);
        }
    }
}

impl fmt::Debug for Observers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} observers", self.0.len())
    }
}

/// Where a [`ReconnectingStream`](crate::ReconnectingStream) is in its life, read with
/// [`state`](crate::ReconnectingStream::state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not polled yet: nothing has connected.
    Idle,
    /// An attempt is in progress.
    Connecting {
        /// The attempt.
        attempt: u32,
    },
    /// A connection is up.
    Connected {
        /// Its generation.
        generation: u64,
    },
    /// Waiting before the next attempt.
    Backoff {
        /// The attempt that will start.
        attempt: u32,
        /// The whole delay (not what is left of it).
        delay: Duration,
    },
    /// The user closed the sink and the close is in progress.
    Closing,
    /// Closed by the user.
    Closed,
    /// Ended by a fatal failure or because the retry policy gave up.
    Terminated,
}

impl ConnectionState {
    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        matches!(self, Self::Connected { .. })
    }

    /// Whether the stream has ended for good.
    pub fn is_ended(&self) -> bool {
        matches!(self, Self::Closed | Self::Terminated)
    }
}
