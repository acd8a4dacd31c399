//! [`ClientConfig`]: the tunables of a [`WebSocketClient`](super::WebSocketClient), with presets.

use std::time::Duration;

use crate::reconnect::{DEFAULT_CLOSE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_QUEUE_CAPACITY, DEFAULT_STABLE_AFTER};
use crate::ws::{DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT};

/// The default [`ClientConfig::subscriber_capacity`]: 1024 messages.
pub const DEFAULT_SUBSCRIBER_CAPACITY: usize = 1024;
/// The default [`ClientConfig::event_capacity`]: 256 events.
pub const DEFAULT_EVENT_CAPACITY: usize = 256;
/// The default [`reply_grace`](ClientConfig::reply_grace): 250 ms, ample for a subscriber on the same
/// runtime to answer, and short enough not to delay a reconnect noticeably.
pub const DEFAULT_REPLY_GRACE: Duration = Duration::from_millis(250);

/// Tunables of a [`WebSocketClient`](super::WebSocketClient). Every setter is `with_*`; the defaults are
/// documented on each field.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Messages buffered per subscriber before the slowest one starts to lag (it is then told how many it
    /// missed). Default [`DEFAULT_SUBSCRIBER_CAPACITY`].
    pub subscriber_capacity: usize,
    /// Bound on outgoing messages waiting while disconnected or busy: up to this many wait in the
    /// [`Sender`](super::Sender)s' queue, and up to this many more (plus one in hand) in the connection's send
    /// queue, where they are kept until a flush completes. Default
    /// [`DEFAULT_QUEUE_CAPACITY`](crate::DEFAULT_QUEUE_CAPACITY).
    pub send_capacity: usize,
    /// Events buffered per event subscriber. Default [`DEFAULT_EVENT_CAPACITY`].
    pub event_capacity: usize,
    /// No inbound frame for this long means the connection is dead: reconnect (a
    /// [`ReceiveTimeout`](crate::extension::ReceiveTimeout) hook). Default: none.
    pub receive_timeout: Option<Duration>,
    /// Ping every interval and expect a frame within the timeout (the connection's own heartbeat, see
    /// [`WsConnection`](crate::ws::WsConnection#heartbeat)); `None` turns it off. Default
    /// [`DEFAULT_PING_INTERVAL`](crate::ws::DEFAULT_PING_INTERVAL) and
    /// [`DEFAULT_PING_TIMEOUT`](crate::ws::DEFAULT_PING_TIMEOUT), 20 s each: a half-open connection is
    /// replaced within 40 s.
    pub heartbeat: Option<(Duration, Duration)>,
    /// When the server's Close arrives right behind a message, how long the connection waits for the
    /// subscribers' reply before answering the Close, so that a reply still goes out on that connection
    /// (see [`WsConnectorBuilder::with_reply_grace`](crate::ws::WsConnectorBuilder::with_reply_grace)).
    /// Default [`DEFAULT_REPLY_GRACE`]; `None` answers at once.
    pub reply_grace: Option<Duration>,
    /// A bound in payload bytes beside [`send_capacity`](Self::send_capacity), on the senders' queue and on
    /// each run's send queue: sending waits while it is reached. Default: none.
    pub send_bytes: Option<usize>,
    /// Per-attempt connect timeout (TCP, TLS, upgrade and handshakes). Default
    /// [`DEFAULT_CONNECT_TIMEOUT`](crate::DEFAULT_CONNECT_TIMEOUT).
    pub connect_timeout: Duration,
    /// How long a connection must stay up for the backoff to reset. Default
    /// [`DEFAULT_STABLE_AFTER`](crate::DEFAULT_STABLE_AFTER).
    pub stable_after: Duration,
    /// How long a graceful shutdown waits for the server's Close. Default
    /// [`DEFAULT_CLOSE_TIMEOUT`](crate::DEFAULT_CLOSE_TIMEOUT).
    pub close_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            subscriber_capacity: DEFAULT_SUBSCRIBER_CAPACITY,
            send_capacity: DEFAULT_QUEUE_CAPACITY,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            receive_timeout: None,
            heartbeat: Some((DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT)),
            reply_grace: Some(DEFAULT_REPLY_GRACE),
            send_bytes: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stable_after: DEFAULT_STABLE_AFTER,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
        }
    }
}

impl ClientConfig {
    /// Preset for latency-sensitive feeds: 10 s connect timeout, 2 s stability, heartbeat every 5 s with a
    /// 5 s timeout. Pair it with [`ExponentialBackoff::fast`](crate::retry::ExponentialBackoff::fast).
    pub fn fast_reconnect() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            stable_after: Duration::from_secs(2),
            heartbeat: Some((Duration::from_secs(5), Duration::from_secs(5))),
            ..Self::default()
        }
    }

    /// Preset for long-lived connections over unreliable networks: 60 s connect timeout, 30 s stability,
    /// heartbeat every 30 s with a 10 s timeout, larger buffers (4096). Pair it with
    /// [`ExponentialBackoff::conservative`](crate::retry::ExponentialBackoff::conservative).
    pub fn stable_connection() -> Self {
        Self {
            connect_timeout: Duration::from_secs(60),
            stable_after: Duration::from_secs(30),
            heartbeat: Some((Duration::from_secs(30), Duration::from_secs(10))),
            subscriber_capacity: 4096,
            send_capacity: 4096,
            ..Self::default()
        }
    }

    /// Sets [`subscriber_capacity`](Self::subscriber_capacity) (0 is taken as 1).
    pub fn with_subscriber_capacity(mut self, capacity: usize) -> Self {
        self.subscriber_capacity = capacity.max(1);
        self
    }

    /// Sets [`send_capacity`](Self::send_capacity) (0 is taken as 1).
    pub fn with_send_capacity(mut self, capacity: usize) -> Self {
        self.send_capacity = capacity.max(1);
        self
    }

    /// Sets [`event_capacity`](Self::event_capacity) (0 is taken as 1).
    pub fn with_event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Sets [`receive_timeout`](Self::receive_timeout).
    pub fn with_receive_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.receive_timeout = timeout.into();
        self
    }

    /// Turns the heartbeat off ([`heartbeat`](Self::heartbeat) `None`).
    pub fn without_heartbeat(mut self) -> Self {
        self.heartbeat = None;
        self
    }

    /// Sets [`send_bytes`](Self::send_bytes).
    pub fn with_send_bytes(mut self, max: impl Into<Option<usize>>) -> Self {
        self.send_bytes = max.into();
        self
    }

    /// Sets [`reply_grace`](Self::reply_grace).
    pub fn with_reply_grace(mut self, grace: impl Into<Option<Duration>>) -> Self {
        self.reply_grace = grace.into();
        self
    }

    /// Sets [`heartbeat`](Self::heartbeat).
    pub fn with_heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat = Some((interval, timeout));
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`stable_after`](Self::stable_after).
    pub fn with_stable_after(mut self, stable_after: Duration) -> Self {
        self.stable_after = stable_after;
        self
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }
}
