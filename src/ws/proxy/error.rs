//! How a tunnel handshake failed ([`Tunnel`]), turned into the [`ConnectError`] that names the proxy. (The
//! public [`ProxyFailure`] lives with the other connect errors, in `ws::error`.)

use std::io;

use crate::ws::error::{ConnectError, ProxyFailure};

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
