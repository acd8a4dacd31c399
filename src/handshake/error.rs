//! [`HandshakeError`], why an application handshake failed, and [`AttemptError`], the error of an attempt
//! through a [`Handshake`](super::Handshake) connector.

use std::fmt;
use std::sync::Arc;

use crate::diagnose::{Classification, Diagnose, Diagnosis};
use crate::error::{BoxError, ConnectTimeout};
use crate::ws::FATAL_CLOSE_CODES;

/// Why an application handshake failed.
///
/// Diagnosed as a handshake failure ([`Event::HandshakeFailed`](crate::Event::HandshakeFailed)): a rejection
/// (or a server Close with a fatal code) is fatal, everything else is retried with backoff.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server refused (e.g. bad credentials): fatal, never retried.
    #[error("{step} handshake rejected: {reason}")]
    Rejected {
        /// The handshake.
        step: String,
        /// What the server said (truncated).
        reason: String,
    },
    /// No acceptable reply within the handshake's timeout: retried with backoff.
    #[error("{step} handshake timed out")]
    Timeout {
        /// The handshake.
        step: String,
        /// The timeout that elapsed.
        #[source]
        source: ConnectTimeout,
    },
    /// The connection ended or failed during the handshake: retried with backoff (a server Close with a
    /// fatal code is fatal).
    #[error("connection lost during {step} handshake")]
    ConnectionLost {
        /// The handshake.
        step: String,
        /// The server's close code, if it sent one.
        close_code: Option<u16>,
        /// The connection's error, if any.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The handshake could not build its message (e.g. invalid JSON from a custom builder).
    #[error("{step} handshake failed: {reason}")]
    Failed {
        /// The handshake.
        step: String,
        /// Why.
        reason: String,
    },
}

impl HandshakeError {
    /// Whether this failure is fatal (the server rejected the handshake).
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Rejected { .. } => true,
            Self::ConnectionLost {
                close_code: Some(code), ..
            } => FATAL_CLOSE_CODES.contains(code),
            _ => false,
        }
    }

    /// A rejection, for use in a handshake.
    pub fn rejected(step: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Rejected {
            step: step.into(),
            reason: reason.into(),
        }
    }
}

impl Diagnose for HandshakeError {
    fn diagnose(&self) -> Diagnosis {
        let diagnosis = if self.is_fatal() {
            Diagnosis::classified(Classification::Fatal)
        } else {
            Diagnosis::classified(Classification::Retry)
        };
        let diagnosis = match self {
            Self::ConnectionLost {
                close_code: Some(code), ..
            } => diagnosis.with_peer_close(*code),
            _ => diagnosis,
        };
        diagnosis.in_handshake()
    }
}

/// Why an attempt through a [`Handshake`](super::Handshake) connector failed: the inner connector's error,
/// or the handshake's.
///
/// It diagnoses as the error it holds, and turns into that error when boxed (so a failure's source is the
/// [`HandshakeError`] or the inner error itself, and downcasts find it).
#[derive(Debug)]
#[non_exhaustive]
pub enum AttemptError<E> {
    /// The inner connector failed.
    Connect(E),
    /// The connection was made; the handshake failed on it.
    Handshake(HandshakeError),
}

impl<E: fmt::Display> fmt::Display for AttemptError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(error) => error.fmt(f),
            Self::Handshake(error) => error.fmt(f),
        }
    }
}

impl<E: Diagnose> Diagnose for AttemptError<E> {
    fn diagnose(&self) -> Diagnosis {
        match self {
            Self::Connect(error) => error.diagnose(),
            Self::Handshake(error) => error.diagnose(),
        }
    }
}

impl<E: Into<BoxError>> From<AttemptError<E>> for BoxError {
    fn from(error: AttemptError<E>) -> Self {
        match error {
            AttemptError::Connect(error) => error.into(),
            AttemptError::Handshake(error) => Box::new(error),
        }
    }
}
