//! The WebSocket failure classes: how this module's errors, and tungstenite's, [diagnose](Diagnose)
//! themselves.
//!
//! - Connect: invalid URL, an invalid connector configuration ([`ConnectError::Config`]), certificate errors
//!   and HTTP 4xx other than 408/429 are fatal; 429 and 503 with `Retry-After` wait at least that long (at
//!   most the connector's cap, [`DEFAULT_MAX_RETRY_AFTER`] by default); 5xx, DNS, TCP, timeouts and other TLS
//!   errors retry. The same rules apply to a bare `tungstenite::Error` from a hand-written connector, whose
//!   `Retry-After` is capped at [`DEFAULT_MAX_RETRY_AFTER`].
//! - Proxy: an authentication failure ([`ConnectError::ProxyAuth`]: HTTP 407, SOCKS5 credentials rejected or
//!   required) and an invalid proxy URL ([`ConnectError::InvalidProxy`]) are fatal; a proxy that refuses the
//!   connection, resets or closes it, times out, answers HTTP 5xx (or 408/429) or a SOCKS5 failure other than
//!   "not allowed" is retried; HTTP 4xx and SOCKS5 replies 2, 7, 8 are fatal (see
//!   [`ProxyFailure::is_retryable`](super::ProxyFailure::is_retryable)).
//! - Connection: a server Close with a code in [`FATAL_CLOSE_CODES`] is fatal; every other code (1000,
//!   1001, 1006, 1011, 1012, 1013, 4xxx, ...), I/O errors and resets reconnect with backoff. Each lost
//!   connection carries its close code: the server's, or 1006 when it was lost without a close handshake.

use std::time::SystemTime;

use async_tungstenite::tungstenite;

use super::connector::DEFAULT_MAX_RETRY_AFTER;
use super::error::{retry_after, status_is_retryable, ConnectError, ConnectionError};
use crate::diagnose::{Classification, Diagnose, Diagnosis};

/// Close codes after which reconnecting cannot help: protocol or policy faults (1002 protocol error,
/// 1003 unsupported data, 1007 invalid payload, 1008 policy violation, 1009 message too big, 1010 missing
/// extension, 1015 TLS failure).
pub const FATAL_CLOSE_CODES: [u16; 7] = [1002, 1003, 1007, 1008, 1009, 1010, 1015];

impl Diagnose for ConnectError {
    fn diagnose(&self) -> Diagnosis {
        if let Some(delay) = self.retry_after() {
            return Diagnosis::classified(Classification::RetryAfter(delay));
        }
        Diagnosis::classified(if self.is_retryable() {
            Classification::Retry
        } else {
            Classification::Fatal
        })
    }
}

impl Diagnose for ConnectionError {
    fn diagnose(&self) -> Diagnosis {
        match self {
            Self::Closed { code, .. } if FATAL_CLOSE_CODES.contains(code) => {
                Diagnosis::classified(Classification::Fatal).with_peer_close(*code)
            }
            Self::Closed { code, .. } => Diagnosis::classified(Classification::Retry).with_peer_close(*code),
            Self::WrittenAfterEnd { code, peer: true } if FATAL_CLOSE_CODES.contains(code) => {
                Diagnosis::classified(Classification::Fatal).with_peer_close(*code)
            }
            Self::WrittenAfterEnd { code, peer: true } => {
                Diagnosis::classified(Classification::Retry).with_peer_close(*code)
            }
            Self::Silent { .. } | Self::WrittenAfterEnd { peer: false, .. } | Self::Protocol(_) => {
                let diagnosis = Diagnosis::classified(Classification::Retry);
                match self.close_code() {
                    Some(code) => diagnosis.with_close_code(code),
                    None => diagnosis,
                }
            }
        }
    }
}

/// A bare tungstenite error, from a connection or connector of your own (over async-tungstenite, say): an
/// HTTP rejection or an invalid URL is classified as [`ConnectError`] is; a lost connection gets its close
/// code.
impl Diagnose for tungstenite::Error {
    fn diagnose(&self) -> Diagnosis {
        match self {
            tungstenite::Error::Url(_) => Diagnosis::classified(Classification::Fatal),
            tungstenite::Error::Http(response) => {
                let status = response.status().as_u16();
                let wait = retry_after(response, SystemTime::now(), DEFAULT_MAX_RETRY_AFTER);
                match (status, wait) {
                    (429 | 503, Some(delay)) => Diagnosis::classified(Classification::RetryAfter(delay)),
                    _ if status_is_retryable(status) => Diagnosis::classified(Classification::Retry),
                    _ => Diagnosis::classified(Classification::Fatal),
                }
            }
            other => {
                let lost = ConnectionError::close_code_of(other);
                let diagnosis = Diagnosis::unknown();
                match lost {
                    Some(code) => diagnosis.with_close_code(code),
                    None => diagnosis,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn connect_errors_diagnose_their_class() {
        let rejected = |status, retry_after| ConnectError::Rejected {
            status,
            retry_after,
            body: None,
        };
        let class = |error: ConnectError| error.diagnose().classification();
        assert_eq!(class(rejected(401, None)), Some(Classification::Fatal));
        assert_eq!(class(rejected(500, None)), Some(Classification::Retry));
        assert_eq!(class(rejected(429, None)), Some(Classification::Retry));
        let wait = Duration::from_secs(3);
        assert_eq!(class(rejected(503, Some(wait))), Some(Classification::RetryAfter(wait)));
        let invalid = ConnectError::InvalidUrl {
            url: "x".into(),
            reason: "bad".into(),
        };
        assert_eq!(class(invalid), Some(Classification::Fatal));
        let config = ConnectError::Config {
            reason: "root certificate rejected: bad encoding".into(),
        };
        assert_eq!(
            config.to_string(),
            "invalid configuration: root certificate rejected: bad encoding"
        );
        assert_eq!(class(config), Some(Classification::Fatal));
    }

    #[test]
    fn proxy_failures_diagnose_their_class() {
        use super::super::ProxyFailure;
        let class = |error: ConnectError| error.diagnose().classification();
        let proxy = |failure, source| ConnectError::Proxy {
            proxy: "http://<redacted>@proxy:3128".into(),
            failure,
            source,
        };
        let auth = ConnectError::ProxyAuth {
            proxy: "http://<redacted>@proxy:3128".into(),
            reason: "http 407 proxy authentication required".into(),
        };
        assert_eq!(
            auth.to_string(),
            "proxy authentication failed at http://<redacted>@proxy:3128: http 407 proxy authentication required"
        );
        assert_eq!(class(auth), Some(Classification::Fatal));
        let invalid = ConnectError::InvalidProxy {
            proxy: "ftp://proxy".into(),
            reason: "the scheme must be http, socks5 or socks5h".into(),
        };
        assert_eq!(class(invalid), Some(Classification::Fatal));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let unreachable = proxy(ProxyFailure::Unreachable, Some(refused));
        assert_eq!(
            unreachable.to_string(),
            "proxy http://<redacted>@proxy:3128 could not be reached"
        );
        assert!(std::error::Error::source(&unreachable).is_some());
        assert_eq!(class(unreachable), Some(Classification::Retry));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            class(proxy(ProxyFailure::Closed, Some(reset))),
            Some(Classification::Retry)
        );
        assert_eq!(class(proxy(ProxyFailure::Closed, None)), Some(Classification::Retry));
        let status = |status| proxy(ProxyFailure::Status { status }, None);
        assert_eq!(class(status(502)), Some(Classification::Retry));
        assert_eq!(class(status(503)), Some(Classification::Retry));
        assert_eq!(class(status(403)), Some(Classification::Fatal));
        let socks = |reply| proxy(ProxyFailure::Socks { reply }, None);
        assert_eq!(class(socks(5)), Some(Classification::Retry));
        assert_eq!(class(socks(1)), Some(Classification::Retry));
        assert_eq!(class(socks(2)), Some(Classification::Fatal));
        assert_eq!(
            class(proxy(ProxyFailure::NoAcceptableMethod, None)),
            Some(Classification::Fatal)
        );
    }

    #[test]
    fn a_bare_rejection_caps_its_retry_after() {
        let response = tungstenite::http::Response::builder()
            .status(429)
            .header("retry-after", "999999999")
            .body(None)
            .expect("a valid response");
        let diagnosis = tungstenite::Error::Http(Box::new(response)).diagnose();
        assert_eq!(
            diagnosis.classification(),
            Some(Classification::RetryAfter(DEFAULT_MAX_RETRY_AFTER))
        );
    }

    #[test]
    fn connection_errors_carry_their_close_code() {
        let closed = |code| ConnectionError::Closed {
            code,
            reason: String::new(),
        };
        let fatal = closed(1008).diagnose();
        assert_eq!(
            (fatal.classification(), fatal.close_code(), fatal.is_peer_close()),
            (Some(Classification::Fatal), Some(1008), true)
        );
        let restart = closed(1012).diagnose();
        assert_eq!(restart.classification(), Some(Classification::Retry));
        let reset = ConnectionError::Protocol(tungstenite::Error::ConnectionClosed).diagnose();
        assert_eq!((reset.close_code(), reset.is_peer_close()), (Some(1006), false));
        let bare = tungstenite::Error::ConnectionClosed.diagnose();
        assert_eq!((bare.classification(), bare.close_code()), (None, Some(1006)));
    }
}
