//! [`ReceiveTimeout`]: fails a connection on which nothing arrives for a whole window.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::LivenessTimeout;
use crate::hook::{Hook, Tick, Verdict};
use crate::time::{AsyncIoTimer, Sleep, Timer};

/// Fails the connection with [`LivenessTimeout`] when no frame arrives for a whole `window`, so silence is
/// detected within one to two windows; the stream then reconnects.
///
/// A [hook](crate::hook). It notes that a frame arrived (a flag per message) and looks at the clock once per
/// window, so the data path stays cheap. Unlike [`Heartbeat`](super::Heartbeat) it sends nothing: use it for
/// feeds that are never quiet for long.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stream_tungstenite::extension::ReceiveTimeout;
///
/// let silence = ReceiveTimeout::new(Duration::from_secs(30));
/// # drop(silence);
/// ```
pub struct ReceiveTimeout {
    window: Duration,
    timer: Arc<dyn Timer>,
    /// The current window (per connection).
    sleep: Option<Sleep>,
    /// A frame arrived in the current window.
    seen: bool,
}

impl ReceiveTimeout {
    /// Fails a connection silent for `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            timer: Arc::new(AsyncIoTimer),
            sleep: None,
            seen: false,
        }
    }

    /// Uses `timer` for the windows (for tests: a [`ManualClock`](crate::time::ManualClock)).
    pub fn with_timer(mut self, timer: impl Timer + 'static) -> Self {
        self.timer = Arc::new(timer);
        self
    }

    fn arm(&mut self) {
        self.sleep = self
            .timer
            .now()
            .checked_add(self.window)
            .map(|deadline| self.timer.sleep_until(deadline));
    }
}

/// A clone watches another connection: its window starts with that connection.
impl Clone for ReceiveTimeout {
    fn clone(&self) -> Self {
        Self {
            window: self.window,
            timer: Arc::clone(&self.timer),
            sleep: None,
            seen: false,
        }
    }
}

impl fmt::Debug for ReceiveTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiveTimeout")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl<T> Hook<T> for ReceiveTimeout {
    fn on_start(&mut self) {
        self.arm();
        self.seen = false;
    }

    #[inline]
    fn on_inbound(&mut self, _message: &mut T) -> Verdict {
        self.seen = true;
        Verdict::Pass
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Tick<T>> {
        loop {
            let Some(sleep) = self.sleep.as_mut() else {
                return Poll::Pending;
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if !std::mem::take(&mut self.seen) {
                self.sleep = None;
                let error = LivenessTimeout { after: self.window };
                return Poll::Ready(Tick::Fail(Box::new(error)));
            }
            self.arm();
        }
    }
}
