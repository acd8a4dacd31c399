//! Error types: [`Failure`], a transient cause reported in events, [`Error`], which ends a stream, and
//! [`ConnectTimeout`], the one timeout of a connection attempt.
//!
//! Part of the core: nothing here knows a protocol. What a failure's error says about itself (how to handle
//! it, a close code) is recorded with it as a [`Diagnosis`] when it happens.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::diagnose::{Diagnose, Diagnosis};

/// A boxed error, the form in which connector, stream and sink errors are kept.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A shared error: cheap to clone into events and into the terminal [`Error`].
pub(crate) type SharedError = Arc<dyn StdError + Send + Sync + 'static>;

/// A connection attempt (dial, upgrade or handshake) did not finish in time.
///
/// The one connect timeout, wherever it happens: [`ReconnectingStream`](crate::ReconnectingStream)'s
/// per-attempt timeout, a connector's own, a handshake step's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connect timed out after {after:?}")]
pub struct ConnectTimeout {
    /// The timeout that elapsed.
    pub after: Duration,
}

/// An error boxed together with what it diagnosed of itself: what a connection yields once its own error
/// type is gone (through hooks, or type-erased in a client).
///
/// Its `Display` is the error's, its `source()` the error itself, and it diagnoses as that error did, so a
/// close code or a fatal class survives the boxing.
#[derive(Debug)]
pub struct DiagnosedError {
    error: BoxError,
    diagnosis: Diagnosis,
}

impl DiagnosedError {
    /// Boxes `error`, keeping its diagnosis.
    #[cold]
    pub fn new<E: Into<BoxError> + Diagnose>(error: E) -> Self {
        let diagnosis = error.diagnose();
        Self {
            error: error.into(),
            diagnosis,
        }
    }

    /// The error, unwrapped.
    pub fn into_inner(self) -> BoxError {
        self.error
    }
}

impl fmt::Display for DiagnosedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl StdError for DiagnosedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.error)
    }
}

impl Diagnose for DiagnosedError {
    fn diagnose(&self) -> Diagnosis {
        self.diagnosis
    }
}

impl Diagnose for ConnectTimeout {}

/// Why a connection attempt failed or a connection was lost.
///
/// A failure is transient: it is reported in [`Event`](crate::Event)s and passed to the
/// [`Classify`](crate::Classify) hook, which decides whether to retry. It only reaches the user's
/// stream as the cause inside an [`Error`] once the stream ends for good.
///
/// Each failure with an error carries the [`Diagnosis`] that error gave of itself when it happened
/// ([`diagnosis`](Self::diagnosis)): the close code of a lost WebSocket connection, say.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Failure {
    /// The connector returned an error, or the attempt timed out ([`ConnectTimeout`]).
    Connect {
        /// Which attempt failed, counted from 1 since the last stable connection.
        attempt: u32,
        /// The connector's error.
        source: SharedError,
        /// What the error said about itself.
        diagnosis: Diagnosis,
    },
    /// The connection's stream returned an error.
    Read {
        /// The connection's generation.
        generation: u64,
        /// The stream's error.
        source: SharedError,
        /// What the error said about itself.
        diagnosis: Diagnosis,
    },
    /// Writing or flushing to the connection's sink failed.
    Write {
        /// The connection's generation.
        generation: u64,
        /// The sink's error.
        source: SharedError,
        /// What the error said about itself.
        diagnosis: Diagnosis,
    },
    /// The connection's stream ended (returned `None`).
    Ended {
        /// The connection's generation.
        generation: u64,
    },
}

/// An error shared, with what it diagnosed of itself (read before the error is boxed).
fn shared<E: Into<BoxError> + Diagnose>(error: E) -> (SharedError, Diagnosis) {
    let diagnosis = error.diagnose();
    (Arc::from(error.into()), diagnosis)
}

impl Failure {
    /// A failed attempt.
    #[cold]
    #[inline(never)]
    pub(crate) fn connect<E: Into<BoxError> + Diagnose>(attempt: u32, error: E) -> Self {
        let (source, diagnosis) = shared(error);
        Self::Connect {
            attempt,
            source,
            diagnosis,
        }
    }

    /// A read error on connection `generation`.
    #[cold]
    #[inline(never)]
    pub(crate) fn read<E: Into<BoxError> + Diagnose>(generation: u64, error: E) -> Self {
        let (source, diagnosis) = shared(error);
        Self::Read {
            generation,
            source,
            diagnosis,
        }
    }

    /// A write or flush error on connection `generation`.
    #[cold]
    #[inline(never)]
    pub(crate) fn write<E: Into<BoxError> + Diagnose>(generation: u64, error: E) -> Self {
        let (source, diagnosis) = shared(error);
        Self::Write {
            generation,
            source,
            diagnosis,
        }
    }

    /// The underlying error from the connector, stream or sink, if there is one.
    pub fn source_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        match self {
            Self::Connect { source, .. } | Self::Read { source, .. } | Self::Write { source, .. } => Some(&**source),
            Self::Ended { .. } => None,
        }
    }

    /// What the failure's error said about itself when it happened ([`Diagnosis::unknown`] for a stream that
    /// ended without an error).
    pub fn diagnosis(&self) -> Diagnosis {
        match self {
            Self::Connect { diagnosis, .. } | Self::Read { diagnosis, .. } | Self::Write { diagnosis, .. } => {
                *diagnosis
            }
            Self::Ended { .. } => Diagnosis::unknown(),
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
            Self::Connect { .. } => None,
        }
    }

    /// The protocol's close code of a lost connection, as its error diagnosed it (WebSocket: the server's
    /// Close code, or 1006 when the connection was lost without a close handshake). `None` for failed
    /// attempts and for connections whose errors carry no code.
    pub fn close_code(&self) -> Option<u16> {
        self.diagnosis().close_code()
    }

    /// Whether this failure happened while connecting (as opposed to on an established connection).
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// The failure's cause in one line: its error and that error's sources, or what happened when there is no
    /// error. Used by [`Error`]'s `Display`.
    pub fn cause(&self) -> impl fmt::Display + '_ {
        Cause(self)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect { attempt, .. } => write!(f, "connect attempt {attempt} failed"),
            Self::Read { generation, .. } => write!(f, "reading from connection {generation} failed"),
            Self::Write { generation, .. } => write!(f, "writing to connection {generation} failed"),
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

/// A failure's error chain in one line, each part once (many errors print their source themselves).
struct Cause<'a>(&'a Failure);

impl fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(first) = self.0.source_error() else {
            return write!(f, "{}", self.0);
        };
        let mut text = first.to_string();
        let mut next = first.source();
        while let Some(error) = next {
            let part = error.to_string();
            if !text.ends_with(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            next = error.source();
        }
        f.write_str(&text)
    }
}

/// Why a [`ReconnectingStream`](crate::ReconnectingStream) ended for good (or, [`Full`](Self::Full), refused a
/// message).
///
/// The stream yields this once, then `None`; the sink returns it from then on. Messages that were accepted but
/// not delivered stay in the stream and can be taken back with
/// [`take_unsent`](crate::ReconnectingStream::take_unsent); [`unsent`](Self::unsent) says how many there were.
/// Its `Display` names the cause, for example `fatal: invalid URL "not a url": relative URL without a base
/// (0 unsent)`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The retry policy gave up.
    #[error(
        "gave up after {attempts} consecutive failures: {} ({unsent} unsent)",
        Failure::cause(last)
    )]
    GaveUp {
        /// Consecutive failures when the policy gave up.
        attempts: u32,
        /// Accepted messages that were not delivered.
        unsent: usize,
        /// The last failure (boxed, so that the stream's items stay small).
        #[source]
        last: Box<Failure>,
    },
    /// The classifier judged a failure fatal: no retry was attempted.
    #[error("fatal: {} ({unsent} unsent)", Failure::cause(cause))]
    Fatal {
        /// Accepted messages that were not delivered.
        unsent: usize,
        /// The fatal failure (boxed, so that the stream's items stay small).
        #[source]
        cause: Box<Failure>,
    },
    /// The sink was closed by the user.
    #[error("closed ({unsent} unsent)")]
    Closed {
        /// Accepted messages that were not delivered when the stream closed.
        unsent: usize,
    },
    /// `start_send` was called while the send queue was full (without a `poll_ready` that returned
    /// `Ready(Ok)` first): the message was refused, not accepted. The stream goes on; only this message is
    /// affected.
    #[error("the send queue is full ({capacity} messages): call poll_ready before start_send")]
    Full {
        /// The queue's capacity.
        capacity: usize,
    },
}

impl Error {
    /// How many accepted messages were not delivered when the stream ended.
    pub fn unsent(&self) -> usize {
        match self {
            Self::GaveUp { unsent, .. } | Self::Fatal { unsent, .. } | Self::Closed { unsent } => *unsent,
            Self::Full { .. } => 0,
        }
    }

    /// The same end, with `unsent` messages left (after some were taken back).
    pub(crate) fn set_unsent(&mut self, left: usize) {
        match self {
            Self::GaveUp { unsent, .. } | Self::Fatal { unsent, .. } | Self::Closed { unsent } => *unsent = left,
            Self::Full { .. } => {}
        }
    }

    /// The failure that ended the stream, if one did.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::GaveUp { last, .. } => Some(last),
            Self::Fatal { cause, .. } => Some(cause),
            Self::Closed { .. } | Self::Full { .. } => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_errors_name_their_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("invalid URL \"not a url\": relative URL without a base")]
        struct Invalid;
        impl Diagnose for Invalid {}
        let fatal = Error::Fatal {
            unsent: 0,
            cause: Box::new(Failure::connect(1, Invalid)),
        };
        assert_eq!(
            fatal.to_string(),
            "fatal: invalid URL \"not a url\": relative URL without a base (0 unsent)"
        );
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let gave_up = Error::GaveUp {
            attempts: 3,
            unsent: 2,
            last: Box::new(Failure::connect(3, refused)),
        };
        assert_eq!(
            gave_up.to_string(),
            "gave up after 3 consecutive failures: refused (2 unsent)"
        );
        let ended = Error::GaveUp {
            attempts: 1,
            unsent: 0,
            last: Box::new(Failure::Ended { generation: 4 }),
        };
        assert_eq!(
            ended.to_string(),
            "gave up after 1 consecutive failures: connection 4 ended (0 unsent)"
        );
        assert_eq!(Error::Closed { unsent: 1 }.to_string(), "closed (1 unsent)");
    }

    #[test]
    fn a_cause_names_each_error_of_the_chain_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("upgrade failed: {0}")]
        struct Outer(#[source] std::io::Error);
        impl Diagnose for Outer {}
        let failure = Failure::read(2, Outer(std::io::Error::other("reset")));
        assert_eq!(failure.cause().to_string(), "upgrade failed: reset");
        let timeout = Failure::connect(
            1,
            ConnectTimeout {
                after: Duration::from_secs(3),
            },
        );
        assert_eq!(timeout.cause().to_string(), "connect timed out after 3s");
        assert!(timeout.downcast_ref::<ConnectTimeout>().is_some());
    }
}
