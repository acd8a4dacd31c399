//! What went wrong at a proxy: [`ProxyFailure`], carried by
//! [`ConnectError::Proxy`](crate::ws::ConnectError::Proxy).

use std::fmt;
use std::io;

use crate::ws::error::{status_is_retryable, ConnectError};

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

impl fmt::Display for ProxyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// How a tunnel handshake failed, before the proxy's name is attached ([`into_connect_error`]).
///
/// [`into_connect_error`]: Tunnel::into_connect_error
#[derive(Debug)]
pub(crate) enum Tunnel {
    /// Reading or writing failed, or the proxy closed the connection (`UnexpectedEof`).
    Io(io::Error),
    /// The proxy did not accept the authentication: why, never with the credentials.
    Auth(String),
    /// The proxy refused, or answered nonsense.
    Refused(ProxyFailure),
}

impl From<io::Error> for Tunnel {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

impl Tunnel {
    /// A protocol violation.
    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        Self::Refused(ProxyFailure::Protocol { reason: reason.into() })
    }

    /// The error naming `proxy` (already redacted).
    pub(crate) fn into_connect_error(self, proxy: String) -> ConnectError {
        match self {
            Self::Io(error) if error.kind() == io::ErrorKind::UnexpectedEof => ConnectError::Proxy {
                proxy,
                failure: ProxyFailure::Closed,
                source: None,
            },
            Self::Io(error) => ConnectError::Proxy {
                proxy,
                failure: ProxyFailure::Closed,
                source: Some(error),
            },
            Self::Auth(reason) => ConnectError::ProxyAuth { proxy, reason },
            Self::Refused(failure) => ConnectError::Proxy {
                proxy,
                failure,
                source: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_whether_retrying_may_help() {
        let retried = [
            ProxyFailure::Unreachable,
            ProxyFailure::Closed,
            ProxyFailure::Status { status: 502 },
            ProxyFailure::Status { status: 503 },
            ProxyFailure::Status { status: 408 },
            ProxyFailure::Status { status: 429 },
            ProxyFailure::Socks { reply: 1 },
            ProxyFailure::Socks { reply: 5 },
            ProxyFailure::Socks { reply: 200 },
            ProxyFailure::Protocol { reason: "x".into() },
        ];
        for failure in retried {
            assert!(failure.is_retryable(), "{failure:?}");
        }
        let fatal = [
            ProxyFailure::Status { status: 403 },
            ProxyFailure::Status { status: 400 },
            ProxyFailure::Socks { reply: 2 },
            ProxyFailure::Socks { reply: 7 },
            ProxyFailure::Socks { reply: 8 },
            ProxyFailure::NoAcceptableMethod,
        ];
        for failure in fatal {
            assert!(!failure.is_retryable(), "{failure:?}");
        }
    }

    #[test]
    fn failures_read_as_the_end_of_a_sentence() {
        assert_eq!(
            ProxyFailure::Socks { reply: 5 }.to_string(),
            "refused the tunnel: socks5 reply 5 (connection refused)"
        );
        assert_eq!(
            ProxyFailure::Status { status: 502 }.to_string(),
            "refused the tunnel with http status 502"
        );
    }

    #[test]
    fn an_end_of_stream_is_a_close_and_a_reset_keeps_its_cause() {
        let eof = Tunnel::Io(io::ErrorKind::UnexpectedEof.into()).into_connect_error("http://p:1".into());
        assert!(matches!(
            eof,
            ConnectError::Proxy {
                failure: ProxyFailure::Closed,
                source: None,
                ..
            }
        ));
        let reset = Tunnel::Io(io::ErrorKind::ConnectionReset.into()).into_connect_error("http://p:1".into());
        assert!(matches!(reset, ConnectError::Proxy { source: Some(_), .. }));
        assert!(reset.is_retryable());
    }
}
