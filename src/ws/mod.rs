//! WebSocket on any runtime: [`connect`], [`WsConnector`], [`WsConnection`] and the failure classes.
//!
//! The bottom of the connector stack, under the hooks and the handshakes: it knows nothing of them, nor of
//! the reconnecting core, which it serves only as a [`Connect`](crate::Connect) whose errors
//! [diagnose](crate::Diagnose) themselves.
//!
//! The transport names no runtime: TCP through async-io (with `TCP_NODELAY`), DNS on async-net's blocking
//! pool (never on the executor thread), TLS through rustls (futures-rustls, ring provider) with webpki roots
//! by default, and the upgrade through async-tungstenite without any runtime feature.
//!
//! Failures are classified by what their errors diagnose ([`diagnose`] has the rules), which
//! [`ReconnectingStream`](crate::ReconnectingStream)'s default classifier follows: HTTP 401/403/404, invalid
//! URLs, an invalid connector configuration and certificate errors end the stream at once; 429/503 with
//! `Retry-After` wait at least that long (at most [`DEFAULT_MAX_RETRY_AFTER`] by default); 5xx and I/O errors
//! retry; a server Close reconnects unless its code says reconnecting cannot help.
//!
//! Every connection has a heartbeat by default (a Ping every 20 s, dead after 20 s without a frame), so a
//! half-open connection is detected within 40 s: see [`WsConnection`]'s docs and
//! [`WsConnectorBuilder::with_heartbeat`].

mod connection;
mod connector;
pub mod diagnose;
mod error;
pub mod proxy;
mod ring;
mod transport;
mod upgrade;

pub(crate) use self::connection::close_frame;
pub use self::connection::{WsConnection, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT};
pub use self::connector::{
    connect, IntoWsRequest, WsConnector, WsConnectorBuilder, WsConnectorFuture, DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_READ_BUFFER,
};
pub use self::diagnose::FATAL_CLOSE_CODES;
pub use self::error::ProxyFailure;
pub use self::error::{ConnectError, ConnectionError};
// For the fuzz targets only (see `crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) use self::{error::parse_retry_after, transport::HeadScan};
