//! The WebSocket failure classes of DESIGN contract 7.

use std::time::Duration;

use async_tungstenite::tungstenite;

use super::error::{status_is_retryable, ConnectError, ConnectionError};
use crate::handshake::HandshakeError;
use crate::{Classification, Failure};

/// Close codes after which reconnecting cannot help: protocol or policy faults (1002 protocol error,
/// 1003 unsupported data, 1007 invalid payload, 1008 policy violation, 1009 message too big, 1010 missing
/// extension, 1015 TLS failure).
pub const FATAL_CLOSE_CODES: [u16; 7] = [1002, 1003, 1007, 1008, 1009, 1010, 1015];

/// Classifies a failure of a WebSocket connection or attempt.
///
/// - Connect: invalid URL, certificate errors and HTTP 4xx other than 408/429 are fatal; 429 and 503 with
///   `Retry-After` wait at least that long; 5xx, DNS, TCP, timeouts and other TLS errors retry. The same
///   rules apply to a bare `tungstenite::Error` from a hand-written connector.
/// - Connection: a server Close with a code in [`FATAL_CLOSE_CODES`] is fatal; every other code (1000,
///   1001, 1006, 1011, 1012, 1013, 4xxx, ...), I/O errors and resets reconnect with backoff.
/// - Handshakes: a rejection (or a server Close with a fatal code during the handshake) is fatal;
///   timeouts and lost connections retry.
/// - Anything else (unknown error types, a stream that ended) retries.
pub fn classify(failure: &Failure) -> Classification {
    if let Some(error) = failure.downcast_ref::<ConnectError>() {
        return classify_connect(error);
    }
    if let Some(error) = failure.downcast_ref::<HandshakeError>() {
        return if error.is_fatal() {
            Classification::Fatal
        } else {
            Classification::Retry
        };
    }
    if let Some(error) = failure.downcast_ref::<ConnectionError>() {
        return match error {
            ConnectionError::Closed { code, .. } if FATAL_CLOSE_CODES.contains(code) => Classification::Fatal,
            _ => Classification::Retry,
        };
    }
    if failure.is_connect() {
        if let Some(error) = failure.downcast_ref::<tungstenite::Error>() {
            return classify_tungstenite_connect(error);
        }
    }
    Classification::Retry
}

fn classify_connect(error: &ConnectError) -> Classification {
    if let Some(delay) = error.retry_after() {
        return Classification::RetryAfter(delay);
    }
    if error.is_retryable() {
        Classification::Retry
    } else {
        Classification::Fatal
    }
}

fn classify_tungstenite_connect(error: &tungstenite::Error) -> Classification {
    match error {
        tungstenite::Error::Url(_) => Classification::Fatal,
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            match (status, retry_after) {
                (429 | 503, Some(delay)) => Classification::RetryAfter(delay),
                _ if status_is_retryable(status) => Classification::Retry,
                _ => Classification::Fatal,
            }
        }
        _ => Classification::Retry,
    }
}

/// The close code of a lost WebSocket connection: the server's Close code, or 1006 when it was lost without a
/// close handshake. `None` for failed attempts and non-WebSocket connections.
pub(crate) fn close_code(failure: &Failure) -> Option<u16> {
    failure
        .downcast_ref::<ConnectionError>()
        .and_then(ConnectionError::close_code)
}
