//! What a failure means for reconnecting, said by its error: [`Classification`], [`Diagnosis`] and the
//! [`Diagnose`] trait.
//!
//! Part of the core, and its lowest piece. An error says what it knows about itself through [`Diagnose`]:
//! how it should be handled, a protocol close code, whether it came from a handshake. The core records that
//! [`Diagnosis`] in the [`Failure`](crate::Failure) when the failure happens, so it never has to know the
//! error's type; the WebSocket module ([`ws`](crate::ws)) implements [`Diagnose`] for its own errors.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::num::NonZeroU16;
use std::time::Duration;

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Classification {
    /// Retry after the delay the retry policy gives.
    Retry,
    /// Retry, waiting at least this long (for example an HTTP `Retry-After`), or longer if the policy says so.
    RetryAfter(Duration),
    /// Do not retry: the stream ends at once with [`Error::Fatal`](crate::Error::Fatal).
    Fatal,
}

/// What an error says about the failure it caused, recorded in the [`Failure`](crate::Failure) when it happens.
///
/// Built by [`Diagnose::diagnose`]; the default knows nothing: the failure is retried and has no close code.
///
/// # Examples
///
/// ```
/// use stream_tungstenite::{Classification, Diagnosis};
///
/// let diagnosis = Diagnosis::classified(Classification::Fatal).with_close_code(1008);
/// assert_eq!(diagnosis.classification(), Some(Classification::Fatal));
/// assert_eq!(diagnosis.close_code(), Some(1008));
/// assert!(!diagnosis.is_handshake());
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Diagnosis {
    // Twelve bytes at most, so that the failures and errors that carry one stay small (they travel in stream items).
    class: Class,
    peer_close: bool,
    handshake: bool,
    close_code: Option<NonZeroU16>,
    /// The delay of `Classification::RetryAfter`, in milliseconds (saturating).
    retry_after_ms: u32,
}

/// The classification of a [`Diagnosis`], without its delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Class {
    #[default]
    Unknown,
    Retry,
    RetryAfter,
    Fatal,
}

impl Diagnosis {
    /// Nothing known: the failure is retried with backoff and has no close code.
    pub const fn unknown() -> Self {
        Self {
            class: Class::Unknown,
            peer_close: false,
            handshake: false,
            close_code: None,
            retry_after_ms: 0,
        }
    }

    /// The error knows how it should be handled. (A `RetryAfter` delay is kept to the millisecond, up to
    /// about 49 days.)
    pub const fn classified(classification: Classification) -> Self {
        let (class, retry_after_ms) = match classification {
            Classification::Retry => (Class::Retry, 0),
            Classification::RetryAfter(delay) => {
                let millis = delay.as_millis();
                (
                    Class::RetryAfter,
                    if millis > u32::MAX as u128 {
                        u32::MAX
                    } else {
                        millis as u32
                    },
                )
            }
            Classification::Fatal => (Class::Fatal, 0),
        };
        Self {
            class,
            retry_after_ms,
            ..Self::unknown()
        }
    }

    /// With the protocol's close code of a lost connection, as this side names the failure (WebSocket: 1006 for
    /// a connection lost without a close handshake, 1009 for a message over the limit, ...). Code 0 is none.
    #[must_use]
    pub const fn with_close_code(mut self, code: u16) -> Self {
        self.close_code = NonZeroU16::new(code);
        self.peer_close = false;
        self
    }

    /// With the close code the peer sent when it closed the connection (WebSocket: the server's Close frame).
    #[must_use]
    pub const fn with_peer_close(mut self, code: u16) -> Self {
        self.close_code = NonZeroU16::new(code);
        self.peer_close = true;
        self
    }

    /// Marks the failure as a handshake's: the connection was made, and an exchange run on it failed.
    #[must_use]
    pub const fn in_handshake(mut self) -> Self {
        self.handshake = true;
        self
    }

    /// How the error says it should be handled, if it knows.
    pub const fn classification(&self) -> Option<Classification> {
        match self.class {
            Class::Unknown => None,
            Class::Retry => Some(Classification::Retry),
            Class::RetryAfter => Some(Classification::RetryAfter(Duration::from_millis(
                self.retry_after_ms as u64,
            ))),
            Class::Fatal => Some(Classification::Fatal),
        }
    }

    /// The close code of the lost connection, if the protocol has one.
    pub const fn close_code(&self) -> Option<u16> {
        match self.close_code {
            Some(code) => Some(code.get()),
            None => None,
        }
    }

    /// Whether the close code is the peer's own (it closed the connection), not this side's name for the
    /// failure.
    pub const fn is_peer_close(&self) -> bool {
        self.peer_close
    }

    /// Whether a handshake failed (reported as [`Event::HandshakeFailed`](crate::Event::HandshakeFailed)).
    pub const fn is_handshake(&self) -> bool {
        self.handshake
    }
}

impl fmt::Debug for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Diagnosis")
            .field("classification", &self.classification())
            .field("close_code", &self.close_code())
            .field("peer_close", &self.peer_close)
            .field("handshake", &self.handshake)
            .finish()
    }
}

/// An error that can say what it means for reconnecting: the errors of connectors and connections implement
/// it.
///
/// The default method knows nothing ([`Diagnosis::unknown`]), so for an error type of your own an empty impl
/// will do: `impl Diagnose for MyError {}`. The core implements it (knowing nothing) for `std::io::Error`,
/// [`BoxError`](crate::BoxError), `String`, `&'static str`, `Infallible` and the errors of `futures` channels' senders; this
/// crate's WebSocket, handshake and hook errors diagnose themselves.
///
/// # Examples
///
/// ```
/// use stream_tungstenite::{Classification, Diagnose, Diagnosis};
///
/// #[derive(Debug)]
/// enum FeedError {
///     Banned,
///     Io(std::io::Error),
/// }
///
/// impl Diagnose for FeedError {
///     fn diagnose(&self) -> Diagnosis {
///         match self {
///             FeedError::Banned => Diagnosis::classified(Classification::Fatal),
///             FeedError::Io(_) => Diagnosis::unknown(),
///         }
///     }
/// }
/// # assert!(FeedError::Io(std::io::ErrorKind::Other.into()).diagnose().classification().is_none());
/// ```
pub trait Diagnose {
    /// What this error says about the failure.
    fn diagnose(&self) -> Diagnosis {
        Diagnosis::unknown()
    }
}

impl Diagnose for io::Error {}
impl Diagnose for Box<dyn std::error::Error + Send + Sync> {}
impl Diagnose for String {}
impl Diagnose for &'static str {}

impl Diagnose for futures_channel::mpsc::SendError {}
impl<T> Diagnose for futures_channel::mpsc::TrySendError<T> {}

impl Diagnose for Infallible {
    fn diagnose(&self) -> Diagnosis {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diagnosis_is_small_and_keeps_what_it_is_told() {
        assert!(std::mem::size_of::<Diagnosis>() <= 12);
        let wait = Diagnosis::classified(Classification::RetryAfter(Duration::from_millis(2500))).with_peer_close(1013);
        assert_eq!(
            wait.classification(),
            Some(Classification::RetryAfter(Duration::from_millis(2500)))
        );
        assert_eq!((wait.close_code(), wait.is_peer_close()), (Some(1013), true));
        let long = Diagnosis::classified(Classification::RetryAfter(Duration::MAX));
        assert_eq!(
            long.classification(),
            Some(Classification::RetryAfter(Duration::from_millis(u64::from(u32::MAX))))
        );
        assert_eq!(Diagnosis::unknown().in_handshake().classification(), None);
        assert!(Diagnosis::unknown().in_handshake().is_handshake());
    }
}
