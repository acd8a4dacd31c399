//! Extensions: the provided [hooks](crate::hook), each a plain struct run by the one hooks wrapper.
//!
//! Sits in the connector stack with the other hooks (see [`ConnectorBuilder::hook`]):
//!
//! - [`Heartbeat`]: pings every interval; a connection that sends no frame within the timeout after a ping
//!   fails with [`LivenessTimeout`] and is replaced.
//! - [`ReceiveTimeout`]: a connection that delivers nothing for a whole window fails with [`LivenessTimeout`].
//! - [`Metrics`]: counts attempts, connections, disconnects by reason, and messages and bytes each way; the
//!   hook is its own handle, readable at any time.
//! - [`Logging`]: a tracing span per connection, with its lifecycle and every message (redacted, truncated).
//! - [`Filter`]: a closure that changes or drops messages, inbound or outbound.
//!
//! Metrics and logging learn about a message through [`MessageView`], implemented for tungstenite's
//! [`Message`](crate::tungstenite::Message) and for strings and byte buffers.
//!
//! Lifecycle observers (connect, disconnect, retry, gave up, closed) are [`Observer`](crate::Observer)s on
//! the stream itself: see [`ReconnectingStream::with_observer`](crate::ReconnectingStream::with_observer).
//!
//! [`ConnectorBuilder::hook`]: crate::layer::ConnectorBuilder::hook

mod filter;
mod heartbeat;
mod logging;
mod message;
mod metrics;
mod receive_timeout;

use std::time::Duration;

pub use self::filter::Filter;
pub use self::heartbeat::Heartbeat;
pub use self::logging::{Logging, DEFAULT_MAX_BODY};
pub use self::message::MessageView;
pub use self::metrics::{Disconnects, Metrics, MetricsSnapshot};
pub use self::receive_timeout::ReceiveTimeout;
use crate::diagnose::Diagnose;
pub use crate::redact::DEFAULT_REDACT_KEYS;

/// A connection went silent: no frame arrived within `after`. The one liveness timeout, of
/// [`Heartbeat`] (within the timeout after a ping) and of [`ReceiveTimeout`] (within a whole window).
///
/// The connection is replaced: it is retried like any lost connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no frame received within {after:?}")]
pub struct LivenessTimeout {
    /// How long the connection was silent.
    pub after: Duration,
}

impl Diagnose for LivenessTimeout {}
