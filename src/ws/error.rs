//! WebSocket errors: [`ConnectError`] for a failed attempt, [`ConnectionError`] for a lost connection. How
//! each is classified is in the [`diagnose`](super::diagnose) module.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_tungstenite::tungstenite::{self, http};

use crate::error::ConnectTimeout;

/// Why a WebSocket connection attempt failed.
///
/// Each variant diagnoses its own failure class: see [`is_retryable`](Self::is_retryable) and
/// [`retry_after`](Self::retry_after).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL or request is not a valid `ws://` or `wss://` target. Fatal.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given, with its query and user info hidden (they may carry credentials).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Resolving the host failed, or gave no address. Retried.
    #[error("dns lookup of {host} failed")]
    Dns {
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The TCP connection failed (refused, unreachable, reset). Retried.
    #[error("tcp connect to {addr} failed")]
    Tcp {
        /// The address tried last.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed. Fatal when the certificate was rejected
    /// ([`is_certificate_error`](Self::is_certificate_error)), retried otherwise.
    #[error("tls handshake with {host} failed")]
    Tls {
        /// The server name.
        host: String,
        /// The TLS error (a `rustls::Error` inside an `io::Error`).
        #[source]
        source: io::Error,
    },
    /// The server answered the upgrade request with a non-101 HTTP status.
    ///
    /// 400, 401, 403, 404 and other 4xx (but 408 and 429) are fatal; 429 and 503 wait at least
    /// [`retry_after`](Self::retry_after) when the server sent `Retry-After`; 5xx are retried.
    #[error("websocket upgrade rejected with http status {status}")]
    Rejected {
        /// The HTTP status code.
        status: u16,
        /// The `Retry-After` header, in seconds form.
        retry_after: Option<Duration>,
        /// The start of the response body, if any (at most 1 KiB, lossy UTF-8).
        body: Option<String>,
    },
    /// The attempt did not finish within the connector's own timeout. Retried.
    #[error("{0}")]
    Timeout(#[source] ConnectTimeout),
    /// The HTTP upgrade failed for another reason (bad response, protocol error, I/O). Retried.
    #[error("websocket upgrade failed")]
    Upgrade(#[source] tungstenite::Error),
}

impl ConnectError {
    /// Whether retrying may help: `false` for invalid URLs, certificate errors and HTTP 4xx other than 408
    /// and 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidUrl { .. } => false,
            Self::Tls { .. } => !self.is_certificate_error(),
            Self::Rejected { status, .. } => status_is_retryable(*status),
            Self::Upgrade(tungstenite::Error::Url(_)) => false,
            Self::Dns { .. } | Self::Tcp { .. } | Self::Timeout(_) | Self::Upgrade(_) => true,
        }
    }

    /// How long the server asked us to wait (`Retry-After` on a 429 or 503), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Rejected {
                status: 429 | 503,
                retry_after,
                ..
            } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status of a rejected upgrade.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server's certificate was rejected (unknown issuer, bad name, expired, ...).
    pub fn is_certificate_error(&self) -> bool {
        match self {
            Self::Tls { source, .. } => is_certificate_error(source),
            _ => false,
        }
    }

    /// Turns a tungstenite upgrade error into the matching variant (rejections keep status and
    /// `Retry-After`).
    pub(crate) fn from_upgrade(error: tungstenite::Error) -> Self {
        match error {
            tungstenite::Error::Http(response) => {
                let retry_after = retry_after(&response);
                let body = response.body().as_ref().map(|body| {
                    let end = body.len().min(1024);
                    String::from_utf8_lossy(&body[..end]).into_owned()
                });
                Self::Rejected {
                    status: response.status().as_u16(),
                    retry_after,
                    body,
                }
            }
            other => Self::Upgrade(other),
        }
    }
}

pub(super) fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429) || !(400..500).contains(&status)
}

fn is_certificate_error(error: &io::Error) -> bool {
    use futures_rustls::rustls;
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => true,
        Some(rustls::Error::AlertReceived(alert)) => matches!(
            alert,
            rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::UnknownCA
                | rustls::AlertDescription::CertificateExpired
                | rustls::AlertDescription::CertificateUnknown
        ),
        _ => false,
    }
}

/// Why an established WebSocket connection ended or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The server closed the connection with a Close frame.
    #[error("server closed the connection with code {code}{}", if reason.is_empty() { String::new() } else { format!(" ({reason})") })]
    Closed {
        /// The close code (1005 when the frame carried none).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// A WebSocket or I/O error.
    #[error("websocket connection failed")]
    Protocol(#[source] tungstenite::Error),
}

impl ConnectionError {
    /// The close code: the server's for [`Closed`](Self::Closed), 1006 (abnormal closure) for a connection
    /// lost without a close handshake, 1009 for a message over the size limit, 1002 for a protocol violation.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Closed { code, .. } => Some(*code),
            Self::Protocol(error) => Self::close_code_of(error),
        }
    }

    /// The close code that names a tungstenite error: 1006 for a connection lost without a close handshake,
    /// 1009 for a message over the limit, 1002 for a protocol violation, 1007 for invalid UTF-8.
    pub(crate) fn close_code_of(error: &tungstenite::Error) -> Option<u16> {
        use tungstenite::error::{CapacityError, ProtocolError};
        match error {
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | tungstenite::Error::Io(_)
            | tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed => Some(1006),
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. }) => Some(1009),
            tungstenite::Error::Protocol(_) => Some(1002),
            tungstenite::Error::Utf8(_) => Some(1007),
            _ => None,
        }
    }
}

impl From<tungstenite::Error> for ConnectionError {
    fn from(error: tungstenite::Error) -> Self {
        Self::Protocol(error)
    }
}

/// The `Retry-After` header of a rejected upgrade, in its seconds form.
pub(super) fn retry_after<T>(response: &http::Response<T>) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}
