//! [`MetricsSnapshot`] and [`Disconnects`]: the figures of a [`Metrics`](super::Metrics) at one time.

use std::time::Duration;

/// Every figure of a [`Metrics`](super::Metrics) at one time; from
/// [`Metrics::snapshot`](super::Metrics::snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Connection attempts started.
    pub attempts: u64,
    /// Attempts that made a connection. Also the generation of the latest connection.
    pub connections: u64,
    /// Attempts that failed or were dropped unfinished (e.g. by the connect timeout).
    pub failed_attempts: u64,
    /// Connections currently up: 0 or 1 for a single stream.
    pub open: u64,
    /// Connections that ended, by reason.
    pub disconnects: Disconnects,
    /// Messages read from connections.
    pub messages_in: u64,
    /// Messages written to connections.
    pub messages_out: u64,
    /// Payload bytes read, as [`MessageView::payload_len`](crate::extension::MessageView::payload_len)
    /// counts them.
    pub bytes_in: u64,
    /// Payload bytes written, as [`MessageView::payload_len`](crate::extension::MessageView::payload_len)
    /// counts them.
    pub bytes_out: u64,
    /// How long the latest connection has been up; `None` while it is down.
    pub uptime: Option<Duration>,
}

impl MetricsSnapshot {
    /// Whether the latest connection was up.
    pub fn is_connected(&self) -> bool {
        self.uptime.is_some()
    }
}

/// How connections ended: each connection counts once, under the first end seen.
///
/// Close codes come from what the connection's error diagnosed ([`Diagnosis`](crate::Diagnosis): a server
/// Close, or 1006 for a connection lost without one), or from a Close frame read just before the stream
/// ended ([`MessageView::close_code`](crate::extension::MessageView::close_code)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Disconnects {
    /// The server closed with 1000 (normal closure).
    pub normal: u64,
    /// The server closed with 1001 (going away).
    pub going_away: u64,
    /// The connection was lost without a close handshake (1006: reset, I/O error).
    pub abnormal: u64,
    /// The server closed with any other code.
    pub other_close: u64,
    /// The stream yielded another error.
    pub read_error: u64,
    /// The stream ended (`None`) without a Close frame.
    pub ended: u64,
    /// The sink failed (`poll_ready`, `start_send`, `poll_flush` or `poll_close`).
    pub write_error: u64,
    /// A hook failed the connection (a heartbeat or receive timeout).
    pub hook_failed: u64,
    /// Closed from this side: the sink's `poll_close` completed.
    pub closed: u64,
    /// Dropped before any of the above was seen (e.g. the stream was dropped, or gave up on it).
    pub dropped: u64,
}

impl Disconnects {
    /// All disconnects.
    pub fn total(&self) -> u64 {
        self.normal
            + self.going_away
            + self.abnormal
            + self.other_close
            + self.read_error
            + self.ended
            + self.write_error
            + self.hook_failed
            + self.closed
            + self.dropped
    }

    /// Disconnects with a close code from the server (normal, going away, other).
    pub fn server_closed(&self) -> u64 {
        self.normal + self.going_away + self.other_close
    }
}
