//! [`Heartbeat`]: pings on a schedule and fails a connection that has gone silent.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::tungstenite::{Bytes, Message};

use super::LivenessTimeout;
use crate::hook::{Hook, Tick, Verdict};
use crate::time::{AsyncIoTimer, Sleep, Timer};

/// The payload of a heartbeat hook's pings, by which their Pongs are told from the application's.
const PING_PAYLOAD: &[u8] = b"stream-tungstenite heartbeat";

/// Pings every `interval`; if no frame at all (data, ping or pong) arrives within `timeout` of a ping, the
/// connection fails with [`LivenessTimeout`] and the stream reconnects. A peer that stops answering without
/// closing TCP is detected within `interval + timeout`.
///
/// A [hook](crate::hook): add it with [`ConnectorBuilder::hook`](crate::layer::ConnectorBuilder::hook). Its
/// timers run while the stream is read, which is what any consumer of a reconnecting stream does. While
/// messages keep arriving the connection is evidently alive; pings still go out every interval so the server
/// sees the client alive too. Its pings carry a payload of their own, and the Pongs that answer them are
/// taken out of the stream (as python websockets does): the reader sees no Pong it did not ask for. A Pong
/// answering the application's own Ping (any other payload) is delivered.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stream_tungstenite::extension::Heartbeat;
///
/// let heartbeat = Heartbeat::new(Duration::from_secs(15), Duration::from_secs(10));
/// # drop(heartbeat);
/// ```
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    timer: Arc<dyn Timer>,
    /// When the next ping is due (per connection).
    next_ping: Option<Sleep>,
    /// When the connection is dead unless a frame arrives (per connection, armed by a ping).
    deadline: Option<Sleep>,
    /// What its pings carry; a Pong carrying it is this heartbeat's.
    payload: &'static [u8],
}

impl Heartbeat {
    /// Pings every `interval`, declaring the connection dead when no frame arrives within `timeout` of a
    /// ping.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            timer: Arc::new(AsyncIoTimer),
            next_ping: None,
            deadline: None,
            payload: PING_PAYLOAD,
        }
    }

    /// Pings carrying `payload` (a connection's built-in heartbeat has one of its own, so that it and a
    /// heartbeat hook each know their own Pongs).
    pub(crate) fn with_payload(mut self, payload: &'static [u8]) -> Self {
        self.payload = payload;
        self
    }

    /// Whether a Pong carrying `payload` answers this heartbeat's ping.
    #[inline]
    pub(crate) fn answers(&self, payload: &[u8]) -> bool {
        payload == self.payload
    }

    /// Uses `timer` for the schedule (for tests: a [`ManualClock`](crate::time::ManualClock)).
    pub fn with_timer(mut self, timer: impl Timer + 'static) -> Self {
        self.timer = Arc::new(timer);
        self
    }

    /// A frame arrived: it proves the connection alive.
    #[inline]
    pub(crate) fn saw_frame(&mut self) {
        if self.deadline.is_some() {
            self.deadline = None;
        }
    }

    /// How long a ping waits for a frame.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn sleep(&self, after: Duration) -> Option<Sleep> {
        let deadline = self.timer.now().checked_add(after)?;
        Some(self.timer.sleep_until(deadline))
    }
}

/// A clone is the same schedule for another connection: its timers start when that connection does.
impl Clone for Heartbeat {
    fn clone(&self) -> Self {
        Self {
            interval: self.interval,
            timeout: self.timeout,
            timer: Arc::clone(&self.timer),
            next_ping: None,
            deadline: None,
            payload: self.payload,
        }
    }
}

impl fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heartbeat")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("awaiting_frame", &self.deadline.is_some())
            .finish_non_exhaustive()
    }
}

impl Hook<Message> for Heartbeat {
    fn on_start(&mut self) {
        self.next_ping = self.sleep(self.interval);
        self.deadline = None;
    }

    #[inline]
    fn on_inbound(&mut self, message: &mut Message) -> Verdict {
        self.saw_frame();
        match message {
            Message::Pong(payload) if self.answers(payload) => Verdict::Drop,
            _ => Verdict::Pass,
        }
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Tick<Message>> {
        if let Some(deadline) = self.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!(timeout = ?self.timeout, "heartbeat timed out");
                self.deadline = None;
                let error = LivenessTimeout { after: self.timeout };
                return Poll::Ready(Tick::Fail(Box::new(error)));
            }
        }
        let ping_due = self
            .next_ping
            .as_mut()
            .is_some_and(|next_ping| next_ping.as_mut().poll(cx).is_ready());
        if !ping_due {
            return Poll::Pending;
        }
        // The next ping, and the deadline for an answer to this one, each polled once to be woken.
        self.next_ping = self.sleep(self.interval);
        if let Some(next_ping) = self.next_ping.as_mut() {
            let _ = next_ping.as_mut().poll(cx);
        }
        if self.deadline.is_none() {
            self.deadline = self.sleep(self.timeout);
            if let Some(deadline) = self.deadline.as_mut() {
                let _ = deadline.as_mut().poll(cx);
            }
        }
        tracing::trace!("heartbeat ping");
        Poll::Ready(Tick::Send(Message::Ping(Bytes::from_static(self.payload))))
    }
}
