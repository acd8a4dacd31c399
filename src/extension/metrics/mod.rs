//! [`Metrics`]: counts attempts, connections, disconnects by reason, and messages and bytes each way.

mod counters;
mod snapshot;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use self::counters::{bump, Counters, Reason, Traffic};
pub use self::snapshot::{Disconnects, MetricsSnapshot};
use super::MessageView;
use crate::hook::{End, Hook, Verdict};
use crate::time::{AsyncIoTimer, Timer};

/// Counts connection attempts, connections, disconnects by reason, and messages and bytes in each direction.
/// The hook is its own handle: keep a clone and read it at any time.
///
/// Every counter is an atomic in an `Arc` shared by all clones: counting costs a few relaxed atomic stores
/// per message, with no lock and no allocation, and reading never blocks the connection. One `Metrics` used
/// for several streams counts them all together; use one per stream to count streams apart.
///
/// # What is counted
///
/// - An **attempt** each time the connector is called; it ends as a **connection** (the inner connector
///   yielded one) or a **failed attempt** (it failed, or was dropped unfinished, e.g. by the connect timeout).
/// - Each message read from a connection is an inbound **message** of
///   [`payload_len`](MessageView::payload_len) **bytes**; each one handed to the connection is an outbound
///   one. Pings and pongs that pass through count too.
/// - Exactly one **disconnect** per connection, by how it ended: see [`Disconnects`].
///
/// # Order
///
/// Added before the handshakes in a [`ConnectorBuilder`](crate::layer::ConnectorBuilder) (outside them),
/// it sees a connection only once every handshake has finished, so a failed handshake is a failed attempt and
/// [`MetricsSnapshot::connections`] equals the stream's [`generation`](crate::ReconnectingStream::generation);
/// handshake frames are not counted. Added after them, it counts handshake frames as messages.
///
/// # Examples
///
/// ```
/// use futures::{SinkExt, StreamExt};
/// use stream_tungstenite::extension::Metrics;
/// use stream_tungstenite::layer::ConnectorBuilder;
/// use stream_tungstenite::ReconnectingStream;
///
/// # futures::executor::block_on(async {
/// let metrics = Metrics::new();
/// // An in-memory echo connection; usually a `WsConnector`.
/// let connector = ConnectorBuilder::new(|| async {
///     let (tx, rx) = futures::channel::mpsc::unbounded::<String>();
///     Ok::<_, std::io::Error>(stream_tungstenite::join(rx.map(Ok::<_, std::io::Error>), tx))
/// })
/// .hook(metrics.clone())
/// .build();
/// let mut stream = ReconnectingStream::new(connector);
/// stream.send("hello".to_owned()).await?;
/// assert_eq!(stream.next().await.transpose()?.as_deref(), Some("hello"));
///
/// let snapshot = metrics.snapshot();
/// assert_eq!((snapshot.attempts, snapshot.connections), (1, 1));
/// assert_eq!((snapshot.messages_out, snapshot.bytes_out), (1, 5));
/// assert_eq!((snapshot.messages_in, snapshot.bytes_in), (1, 5));
/// assert!(metrics.uptime().is_some());
/// # Ok::<_, stream_tungstenite::Error>(())
/// # }).unwrap();
/// ```
pub struct Metrics {
    counters: Arc<Counters>,
    /// The connection this instance counts (a clone made for an attempt, once it is up).
    connection: Option<Connection>,
}

/// What one instance counts of its connection.
struct Connection {
    generation: u64,
    traffic: Arc<Traffic>,
    /// The code of a Close frame read from the connection.
    close_frame: Option<u16>,
    ended: bool,
}

impl Metrics {
    /// Fresh counters, timing uptime with real time.
    pub fn new() -> Self {
        Self::with_shared_timer(Arc::new(AsyncIoTimer))
    }

    /// Times uptime with `timer` (for tests: a [`ManualClock`](crate::time::ManualClock)).
    ///
    /// This starts fresh counters: take clones after calling it.
    pub fn with_timer(self, timer: impl Timer + 'static) -> Self {
        Self::with_shared_timer(Arc::new(timer))
    }

    fn with_shared_timer(timer: Arc<dyn Timer>) -> Self {
        Self {
            counters: Arc::new(Counters::new(timer)),
            connection: None,
        }
    }

    /// All the figures at once.
    ///
    /// Reads are relaxed atomic loads: each figure is exact, but a snapshot taken while messages flow may mix
    /// figures from slightly different instants.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.counters.snapshot()
    }

    /// How long the latest connection has been up; `None` while it is down (or before the first).
    pub fn uptime(&self) -> Option<Duration> {
        self.counters.uptime()
    }

    /// Whether the latest connection is up.
    pub fn is_connected(&self) -> bool {
        self.counters.is_connected()
    }

    /// The generation of the latest connection: the number of connections made so far.
    pub fn generation(&self) -> u64 {
        self.counters.generation()
    }

    /// Counts the end of this instance's connection, once.
    fn end(&mut self, reason: impl FnOnce(Option<u16>) -> Reason) {
        if let Some(connection) = self.connection.as_mut().filter(|connection| !connection.ended) {
            connection.ended = true;
            let reason = reason(connection.close_frame);
            self.counters
                .on_disconnected(connection.generation, reason, &connection.traffic);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A clone shares the counters; it counts a connection of its own once it is used as a hook.
impl Clone for Metrics {
    fn clone(&self) -> Self {
        Self {
            counters: Arc::clone(&self.counters),
            connection: None,
        }
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        // Only reached without an end for a hook used outside a hooks connection (which always tells one).
        self.end(|_| Reason::Dropped);
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Metrics").field(&self.snapshot()).finish()
    }
}

impl<T: MessageView> Hook<T> for Metrics {
    fn on_attempt(&mut self) {
        self.counters.on_attempt();
    }

    fn on_start(&mut self) {
        let (generation, traffic) = self.counters.on_connected();
        self.connection = Some(Connection {
            generation,
            traffic,
            close_frame: None,
            ended: false,
        });
    }

    #[inline]
    fn on_inbound(&mut self, message: &mut T) -> Verdict {
        if let Some(connection) = self.connection.as_mut() {
            bump(&connection.traffic.messages_in, 1);
            bump(&connection.traffic.bytes_in, message.payload_len() as u64);
            if let Some(code) = message.close_code() {
                connection.close_frame = Some(code);
            }
        }
        Verdict::Pass
    }

    #[inline]
    fn on_outbound(&mut self, message: &mut T) -> Verdict {
        if let Some(connection) = self.connection.as_ref() {
            bump(&connection.traffic.messages_out, 1);
            bump(&connection.traffic.bytes_out, message.payload_len() as u64);
        }
        Verdict::Pass
    }

    fn on_end(&mut self, end: &End<'_>) {
        if end.is_attempt() {
            self.counters.on_failed_attempt();
            return;
        }
        self.end(|close_frame| Reason::of_end(end, close_frame));
    }
}

#[cfg(test)]
mod tests;
