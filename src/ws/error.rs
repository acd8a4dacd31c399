//! WebSocket errors: [`ConnectError`] for a failed attempt, [`ConnectionError`] for a lost connection. How
//! each is classified is in the [`diagnose`](super::diagnose) module.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

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
        /// The `Retry-After` header as a wait from when the response arrived: its delay-seconds or its
        /// HTTP-date form (a date in the past is no wait), at most the connector's
        /// [`with_max_retry_after`](super::WsConnectorBuilder::with_max_retry_after) (by default
        /// [`DEFAULT_MAX_RETRY_AFTER`](super::DEFAULT_MAX_RETRY_AFTER)).
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
    /// The proxy could not be reached, or did not open the tunnel to the target: [`failure`](Self::Proxy::failure)
    /// says which. Retried or fatal as [`ProxyFailure::is_retryable`] says: a refused or reset connection, HTTP
    /// 5xx (and 408, 429) and most SOCKS5 replies are retried; HTTP 4xx and SOCKS5 "not allowed" are fatal.
    #[error("proxy {proxy} {failure}")]
    Proxy {
        /// The proxy, as `scheme://host:port` (credentials shown as `<redacted>@`).
        proxy: String,
        /// What went wrong.
        failure: ProxyFailure,
        /// The socket's or resolver's error, for a proxy that could not be reached or reset the connection.
        #[source]
        source: Option<io::Error>,
    },
    /// The proxy did not accept the authentication: HTTP 407 (the credentials of the proxy URL were rejected,
    /// or it has none), or a SOCKS5 username/password failure. Fatal: retrying with the same credentials
    /// cannot help.
    #[error("proxy authentication failed at {proxy}: {reason}")]
    ProxyAuth {
        /// The proxy, as `scheme://host:port` (credentials shown as `<redacted>@`).
        proxy: String,
        /// What the proxy answered (never the credentials).
        reason: String,
    },
    /// A proxy URL that cannot be used, given to
    /// [`with_proxy`](super::WsConnectorBuilder::with_proxy) or found in the environment variable that
    /// applies (which `reason` names). Fatal.
    #[error("invalid proxy {proxy:?}: {reason}")]
    InvalidProxy {
        /// The proxy URL as given, with what could be credentials hidden.
        proxy: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The connector was built with a configuration it cannot use (a root certificate rustls rejected, an
    /// invalid header, a TLS configuration that could not be made). Every attempt of that connector fails
    /// with it at once, before anything is dialled. Fatal.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong, e.g. `root certificate rejected: ...` or `invalid value for header authorization`
        /// (header values are never shown: they may carry credentials).
        reason: String,
    },
}

impl ConnectError {
    /// Whether retrying may help: `false` for invalid URLs, an invalid configuration, certificate errors,
    /// HTTP 4xx other than 408 and 429, a proxy's authentication failure, an invalid proxy URL, and the proxy
    /// failures [`ProxyFailure::is_retryable`] calls fatal.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidUrl { .. } | Self::Config { .. } | Self::ProxyAuth { .. } | Self::InvalidProxy { .. } => false,
            Self::Proxy { failure, .. } => failure.is_retryable(),
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
    /// `Retry-After`, at most `max_retry_after`).
    pub(crate) fn from_upgrade(error: tungstenite::Error, max_retry_after: Duration) -> Self {
        match error {
            tungstenite::Error::Http(response) => {
                let retry_after = retry_after(&response, SystemTime::now(), max_retry_after);
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
    /// No frame arrived within `after` of a heartbeat ping: the connection is presumed dead (half-open).
    #[error("no frame within {after:?} of a ping: the connection is presumed dead")]
    Silent {
        /// The heartbeat's timeout.
        after: Duration,
    },
    /// Messages were written after the connection's end had arrived (the server's Close, `peer`, or a frame
    /// that fails the connection) and the server may have discarded them: they are sent again on the next
    /// connection. The end itself follows on the read side.
    #[error("messages were written after the connection had ended (close code {code}); they are sent again")]
    WrittenAfterEnd {
        /// The server's close code, or the one that names the failure.
        code: u16,
        /// The server ended it with a Close.
        peer: bool,
    },
}

impl ConnectionError {
    /// The close code: the server's for [`Closed`](Self::Closed), 1006 (abnormal closure) for a connection
    /// lost without a close handshake, 1009 for a message over the size limit, 1002 for a protocol violation.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Closed { code, .. } | Self::WrittenAfterEnd { code, .. } => Some(*code),
            Self::Protocol(error) => Self::close_code_of(error),
            Self::Silent { .. } => Some(1006),
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

/// The `Retry-After` header of a rejected upgrade as a wait from `now`, at most `max` (see
/// [`parse_retry_after`]).
pub(super) fn retry_after<T>(response: &http::Response<T>, now: SystemTime, max: Duration) -> Option<Duration> {
    let value = response.headers().get(http::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now).map(|wait| wait.min(max))
}

/// A `Retry-After` value (RFC 9110 section 10.2.3) as a wait from `now`: delay-seconds, or an HTTP-date in
/// any of its three forms (IMF-fixdate, RFC 850, asctime). A date in the past is no wait; more digits than a
/// `u64` holds are as long a wait as can be (the caller caps it). `None` for anything else.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Why a proxy did not open the tunnel, in [`ConnectError::Proxy`]. Whether retrying may help is
/// [`is_retryable`](Self::is_retryable).
///
/// Its `Display` completes a sentence that starts with the proxy's address (`proxy http://host:3128 refused
/// the tunnel with http status 502`). A failed authentication is not one of these: it is
/// [`ConnectError::ProxyAuth`], which is fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyFailure {
    /// The proxy could not be reached: resolving its host or connecting to it failed (refused, unreachable).
    /// The error's source is the socket's or the resolver's error. Retried.
    Unreachable,
    /// The proxy closed or reset the connection before the tunnel was open (for example because it could not
    /// reach the target). The error's source is the reset, if it was one. Retried.
    Closed,
    /// The proxy answered `CONNECT` with this HTTP status (neither 2xx nor 407). 5xx, 408 and 429 are
    /// retried; other 4xx (403: the proxy's policy forbids the target, say) are fatal.
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// The SOCKS5 proxy answered the connect request with this reply code (RFC 1928 section 6). 2 (not
    /// allowed by the ruleset), 7 (command not supported) and 8 (address type not supported) are fatal; the
    /// others (1 general failure, 3 network unreachable, 4 host unreachable, 5 connection refused, 6 TTL
    /// expired, and unassigned codes) are retried.
    Socks {
        /// The reply code.
        reply: u8,
    },
    /// The SOCKS5 proxy accepts none of the authentication methods offered (no authentication, and
    /// username/password when the proxy URL has credentials). Fatal.
    NoAcceptableMethod,
    /// The proxy's reply is not what the protocol allows (not HTTP, not SOCKS5, a response head over the size
    /// limit, bytes past the response). Retried, as an invalid upgrade response is.
    Protocol {
        /// What is wrong with it.
        reason: String,
    },
}

impl ProxyFailure {
    /// Whether retrying may help: `false` for an HTTP 4xx other than 408 and 429, SOCKS5 replies 2, 7 and 8,
    /// and no acceptable authentication method.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable | Self::Closed | Self::Protocol { .. } => true,
            Self::Status { status } => status_is_retryable(*status),
            Self::Socks { reply } => !matches!(reply, 2 | 7 | 8),
            Self::NoAcceptableMethod => false,
        }
    }
}

impl std::fmt::Display for ProxyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable => f.write_str("could not be reached"),
            Self::Closed => f.write_str("closed the connection before the tunnel was open"),
            Self::Status { status } => write!(f, "refused the tunnel with http status {status}"),
            Self::Socks { reply } => {
                write!(
                    f,
                    "refused the tunnel: socks5 reply {reply} ({})",
                    socks_reply_meaning(*reply)
                )
            }
            Self::NoAcceptableMethod => f.write_str("accepts none of the socks5 authentication methods offered"),
            Self::Protocol { reason } => write!(f, "sent an invalid reply: {reason}"),
        }
    }
}

/// RFC 1928's name for a SOCKS5 reply code.
pub(crate) fn socks_reply_meaning(reply: u8) -> &'static str {
    match reply {
        0 => "succeeded",
        1 => "general socks server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "ttl expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's example date.
    fn example_date() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn retry_after_reads_delay_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for invalid in ["", "-1", "1.5", "+3", "soon", "12 s"] {
            assert_eq!(parse_retry_after(invalid, now), None, "{invalid:?}");
        }
    }

    #[test]
    fn retry_after_reads_the_three_http_date_forms() {
        let before = example_date() - Duration::from_secs(90);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_retry_after(form, before), Some(Duration::from_secs(90)), "{form}");
        }
    }

    #[test]
    fn a_retry_after_date_in_the_past_is_no_wait() {
        let after = example_date() + Duration::from_secs(3600);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", after),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_rejection_caps_its_retry_after() {
        let response = |value: &str| {
            http::Response::builder()
                .status(429)
                .header("retry-after", value)
                .body(None::<Vec<u8>>)
                .expect("a valid response")
        };
        let cap = Duration::from_secs(60);
        let now = example_date();
        assert_eq!(retry_after(&response("999999999"), now, cap), Some(cap));
        assert_eq!(
            retry_after(&response("Mon, 07 Nov 1994 08:49:37 GMT"), now, cap),
            Some(cap)
        );
        assert_eq!(retry_after(&response("30"), now, cap), Some(Duration::from_secs(30)));
        let error = ConnectError::from_upgrade(tungstenite::Error::Http(Box::new(response("999999999"))), cap);
        assert_eq!(error.retry_after(), Some(cap));
    }
}
