//! Failure classes: what a failure means for reconnecting, and who decides.
//!
//! Part of the core. An error says what it knows about itself through [`Diagnose`]: how it should be
//! handled, a protocol close code, whether it came from a handshake. The core records that [`Diagnosis`]
//! in the [`Failure`] when the failure happens, so it never has to know the error's type; the WebSocket
//! module ([`ws`](crate::ws)) implements [`Diagnose`] for its own errors. A [`Classify`] then decides, from
//! the failure, whether to retry: by default [`DefaultClassifier`], which follows the diagnosis.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use crate::error::{BoxError, ConnectTimeout};
use crate::Failure;

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

/// What an error says about the failure it caused, recorded in the [`Failure`] when it happens.
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Diagnosis {
    classification: Option<Classification>,
    close_code: Option<u16>,
    peer_close: bool,
    handshake: bool,
}

impl Diagnosis {
    /// Nothing known: the failure is retried with backoff and has no close code.
    pub const fn unknown() -> Self {
        Self {
            classification: None,
            close_code: None,
            peer_close: false,
            handshake: false,
        }
    }

    /// The error knows how it should be handled.
    pub const fn classified(classification: Classification) -> Self {
        Self {
            classification: Some(classification),
            close_code: None,
            peer_close: false,
            handshake: false,
        }
    }

    /// With the protocol's close code of a lost connection, as this side names the failure (WebSocket: 1006 for
    /// a connection lost without a close handshake, 1009 for a message over the limit, ...).
    #[must_use]
    pub const fn with_close_code(mut self, code: u16) -> Self {
        self.close_code = Some(code);
        self.peer_close = false;
        self
    }

    /// With the close code the peer sent when it closed the connection (WebSocket: the server's Close frame).
    #[must_use]
    pub const fn with_peer_close(mut self, code: u16) -> Self {
        self.close_code = Some(code);
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
        self.classification
    }

    /// The close code of the lost connection, if the protocol has one.
    pub const fn close_code(&self) -> Option<u16> {
        self.close_code
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

/// An error that can say what it means for reconnecting: the errors of connectors and connections implement
/// it.
///
/// The default method knows nothing ([`Diagnosis::unknown`]), so for an error type of your own an empty impl
/// will do: `impl Diagnose for MyError {}`. The core implements it (knowing nothing) for `std::io::Error`,
/// [`BoxError`], `String`, `&'static str`, `Infallible` and the errors of `futures` channels' senders; this
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
impl Diagnose for BoxError {}
impl Diagnose for String {}
impl Diagnose for &'static str {}
impl Diagnose for ConnectTimeout {}

impl Diagnose for futures_channel::mpsc::SendError {}
impl<T> Diagnose for futures_channel::mpsc::TrySendError<T> {}

impl Diagnose for Infallible {
    fn diagnose(&self) -> Diagnosis {
        match *self {}
    }
}

/// Classifies failures. Any `Fn(&Failure) -> Classification + Send` closure is a classifier.
///
/// # Examples
///
/// ```
/// use stream_tungstenite::{Classification, DefaultClassifier, Classify, Failure};
///
/// // Permission errors are fatal; everything else as the default decides.
/// let classifier = |failure: &Failure| match failure.downcast_ref::<std::io::Error>() {
///     Some(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Classification::Fatal,
///     _ => DefaultClassifier.classify(failure),
/// };
/// # let _ = stream_tungstenite::ReconnectingStream::<_, ()>::new(|| async {
/// #     Err::<futures::stream::Empty<Result<(), std::io::Error>>, std::io::Error>(std::io::ErrorKind::Other.into())
/// # }).with_classifier(classifier);
/// ```
pub trait Classify: Send {
    /// Decides what to do about `failure`.
    fn classify(&self, failure: &Failure) -> Classification;
}

impl<F> Classify for F
where
    F: Fn(&Failure) -> Classification + Send,
{
    fn classify(&self, failure: &Failure) -> Classification {
        self(failure)
    }
}

/// The default classifier: what the failure's error said about itself ([`Failure::diagnosis`]), and retry
/// when it said nothing.
///
/// For WebSocket connections that gives the failure classes of [`ws`](crate::ws): invalid URLs, certificate
/// errors, HTTP 4xx and protocol-fault close codes are fatal, 429/503 with `Retry-After` wait that long,
/// everything else is retried.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    fn classify(&self, failure: &Failure) -> Classification {
        failure.diagnosis().classification().unwrap_or(Classification::Retry)
    }
}

/// A classifier that retries every failure, whatever its error says.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryAll;

impl Classify for RetryAll {
    fn classify(&self, _failure: &Failure) -> Classification {
        Classification::Retry
    }
}
