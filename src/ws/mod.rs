//! WebSocket on any runtime: [`connect`], [`WsConnector`], [`WsConnection`] and the failure classes.
//!
//! The transport names no runtime: TCP through async-io (with `TCP_NODELAY`), DNS on async-net's blocking
//! pool (never on the executor thread), TLS through rustls (futures-rustls, ring provider) with webpki roots
//! by default, and the upgrade through async-tungstenite without any runtime feature.
//!
//! Failures are classified by [`classify`], which [`ReconnectingStream`](crate::ReconnectingStream) uses by
//! default: HTTP 401/403/404, invalid URLs and certificate errors end the stream at once; 429/503 with
//! `Retry-After` wait at least that long; 5xx and I/O errors retry; a server Close reconnects unless its
//! code says reconnecting cannot help.

mod classify;
mod connection;
mod connector;
mod error;
mod transport;

pub(crate) use self::classify::close_code;
pub use self::classify::{classify, FATAL_CLOSE_CODES};
pub use self::connection::WsConnection;
pub(crate) use self::connector::redact_url;
pub use self::connector::{connect, ConnectFuture, WsConnector, WsConnectorBuilder, DEFAULT_READ_BUFFER};
pub use self::error::{ConnectError, ConnectionError};
pub use self::transport::{MaybeTlsStream, RawStream, Transport};
