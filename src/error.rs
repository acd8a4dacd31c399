//! Error types: [`Failure`], a transient cause reported in events, and [`Error`], which ends a stream.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error, the form in which connector, stream and sink errors are accepted.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A shared error: cheap to clone into events and into the terminal [`Error`].
pub(crate) type SharedError = Arc<dyn StdError + Send + Sync + 'static>;

pub(crate) fn share(error: impl Into<BoxError>) -> SharedError {
    Arc::from(error.into())
}

/// Why a connection attempt failed or a connection was lost.
///
/// A failure is transient: it is reported in [`Event`](crate::Event)s and passed to the
/// [`Classify`](crate::Classify) hook, which decides whether to retry. It only reaches the user's
/// stream as the cause inside an [`Error`] once the stream ends for good.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Failure {
    /// The connector returned an error.
    Connect {
        /// Which attempt failed, counted from 1 since the last stable connection.
        attempt: u32,
        /// The connector's error.
        source: SharedError,
    },
    /// The connector did not finish within the per-attempt connect timeout.
    ConnectTimeout {
        /// Which attempt timed out.
        attempt: u32,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The connection's stream returned an error.
    Read {
        /// The connection's generation.
        generation: u64,
        /// The stream's error.
        source: SharedError,
    },
    /// Writing or flushing to the connection's sink failed.
    Write {
        /// The connection's generation.
        generation: u64,
        /// The sink's error.
        source: SharedError,
    },
    /// The connection's stream ended (returned `None`).
    Ended {
        /// The connection's generation.
        generation: u64,
    },
}

impl Failure {
    /// The underlying error from the connector, stream or sink, if there is one.
    pub fn source_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        match self {
            Self::Connect { source, .. } | Self::Read { source, .. } | Self::Write { source, .. } => Some(&**source),
            Self::ConnectTimeout { .. } | Self::Ended { .. } => None,
        }
    }

    /// The underlying error as a concrete type, searching its whole `source()` chain.
    ///
    /// # Examples
    ///
    /// ```
    /// # use stream_tungstenite::Failure;
    /// fn is_refused(failure: &Failure) -> bool {
    ///     failure
    ///         .downcast_ref::<std::io::Error>()
    ///         .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    /// }
    /// ```
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        let mut next: Option<&(dyn StdError + 'static)> = match self.source_error() {
            Some(e) => Some(e),
            None => None,
        };
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<E>() {
                return Some(found);
            }
            next = error.source();
        }
        None
    }

    /// The generation of the connection that was lost, or `None` for a failed connect attempt.
    pub fn generation(&self) -> Option<u64> {
        match self {
            Self::Read { generation, .. } | Self::Write { generation, .. } | Self::Ended { generation } => {
                Some(*generation)
            }
            Self::Connect { .. } | Self::ConnectTimeout { .. } => None,
        }
    }

    /// The WebSocket close code of a lost connection: the server's Close code, or 1006 when the connection was
    /// lost without a close handshake. `None` for failed attempts and non-WebSocket connections.
    pub fn close_code(&self) -> Option<u16> {
        crate::ws::close_code(self)
    }

    /// Whether this failure happened while connecting (as opposed to on an established connection).
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::ConnectTimeout { .. })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect { attempt, .. } => write!(f, "connect attempt {attempt} failed"),
            Self::ConnectTimeout { attempt, after } => {
                write!(f, "connect attempt {attempt} timed out after {after:?}")
            }
            Self::Read { generation, .. } => {
                write!(f, "reading from connection {generation} failed")
            }
            Self::Write { generation, .. } => {
                write!(f, "writing to connection {generation} failed")
            }
            Self::Ended { generation } => write!(f, "connection {generation} ended"),
        }
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self.source_error() {
            Some(e) => Some(e),
            None => None,
        }
    }
}

/// Why a [`ReconnectingStream`](crate::ReconnectingStream) ended for good.
///
/// The stream yields this once, then `None`; the sink returns it from then on. Messages that were accepted but
/// not delivered stay in the stream and can be taken back with
/// [`take_unsent`](crate::ReconnectingStream::take_unsent); [`unsent`](Self::unsent) says how many there were.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The retry policy gave up.
    #[error("gave up after {attempts} consecutive failures ({unsent} messages unsent)")]
    GaveUp {
        /// Consecutive failures when the policy gave up.
        attempts: u32,
        /// Accepted messages that were not delivered.
        unsent: usize,
        /// The last failure.
        #[source]
        last: Failure,
    },
    /// The classifier judged a failure fatal: no retry was attempted.
    #[error("fatal failure ({unsent} messages unsent)")]
    Fatal {
        /// Accepted messages that were not delivered.
        unsent: usize,
        /// The fatal failure.
        #[source]
        cause: Failure,
    },
    /// The sink was closed by the user.
    #[error("stream closed ({unsent} messages unsent)")]
    Closed {
        /// Accepted messages that were not delivered when the stream closed.
        unsent: usize,
    },
}

impl Error {
    /// How many accepted messages were not delivered when the stream ended.
    pub fn unsent(&self) -> usize {
        match self {
            Self::GaveUp { unsent, .. } | Self::Fatal { unsent, .. } | Self::Closed { unsent } => *unsent,
        }
    }

    /// The failure that ended the stream, if one did.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::GaveUp { last, .. } => Some(last),
            Self::Fatal { cause, .. } => Some(cause),
            Self::Closed { .. } => None,
        }
    }

    /// Whether the stream ended because a failure was classified fatal.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Fatal { .. })
    }

    /// Whether the stream ended because the retry policy gave up.
    pub fn is_gave_up(&self) -> bool {
        matches!(self, Self::GaveUp { .. })
    }

    /// Whether the stream ended because the user closed it.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed { .. })
    }
}
