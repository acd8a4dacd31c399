//! Timers without a runtime: the [`Timer`] trait, its default [`AsyncIoTimer`], and a [`ManualClock`] for tests.
//!
//! Part of the core; hooks with timers (a heartbeat) take a [`Timer`] too.
//!
//! [`ReconnectingStream`](crate::ReconnectingStream) needs a clock for three things: backoff delays, the
//! per-attempt connect timeout and telling a stable connection from a flapping one. By default these come from
//! [`async_io::Timer`], which works under every executor. Tests inject a [`ManualClock`] through
//! [`ReconnectingStream::with_timer`](crate::ReconnectingStream::with_timer) and move time by hand, so no test
//! waits on real time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A boxed sleep returned by [`Timer::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// A source of time: the current instant and sleeps until a deadline.
///
/// Modelled on hyper's `rt::Timer`. Implement it to drive [`ReconnectingStream`](crate::ReconnectingStream)
/// from another clock.
pub trait Timer: Send + Sync {
    /// The current instant on this clock.
    fn now(&self) -> Instant;

    /// A future that completes once this clock reaches `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Sleep;
}

/// A shared timer is the timer it shares (so one clock can be handed to a stream and its hooks alike).
impl<T: Timer + ?Sized> Timer for Arc<T> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        (**self).sleep_until(deadline)
    }
}

/// The default [`Timer`]: real time, with sleeps from [`async_io::Timer`].
///
/// async-io runs its own timer thread when no executor drives its reactor, so this works on tokio, async-std,
/// smol and `futures::executor` alike.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncIoTimer;

impl Timer for AsyncIoTimer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let timer = async_io::Timer::at(deadline);
        Box::pin(async move {
            timer.await;
        })
    }
}

/// A clock that only moves when told to: for deterministic tests.
///
/// Clones share the same time. Sleeps complete when [`advance`](Self::advance) moves the clock to or past their
/// deadline, and wake their task then.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stream_tungstenite::time::{ManualClock, Timer};
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(3));
/// assert_eq!(clock.now() - start, Duration::from_secs(3));
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<Mutex<ClockInner>>,
}

#[derive(Debug)]
struct ClockInner {
    now: Instant,
    /// Pending sleeps that have been polled: deadline, the sleep's id, its task.
    sleepers: Vec<(Instant, u64, Waker)>,
    /// The id the next sleep gets.
    next_id: u64,
}

impl Default for ClockInner {
    fn default() -> Self {
        Self {
            now: Instant::now(),
            sleepers: Vec::new(),
            next_id: 0,
        }
    }
}

impl ManualClock {
    /// A clock that starts at the current real instant and stands still.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` and wakes every sleep whose deadline has come.
    pub fn advance(&self, by: Duration) {
        let wakers: Vec<Waker> = {
            let mut inner = self.lock();
            inner.now = inner.now.checked_add(by).unwrap_or(inner.now);
            let now = inner.now;
            let (due, waiting) = std::mem::take(&mut inner.sleepers)
                .into_iter()
                .partition(|(deadline, _, _)| *deadline <= now);
            inner.sleepers = waiting;
            due.into_iter().map(|(_, _, waker)| waker).collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// How long from now until the earliest pending sleep is due, if any sleep is pending.
    ///
    /// Only sleeps that have been polled and are still waiting count (a dropped sleep does not).
    pub fn next_deadline(&self) -> Option<Duration> {
        let inner = self.lock();
        inner
            .sleepers
            .iter()
            .map(|(deadline, _, _)| deadline.saturating_duration_since(inner.now))
            .min()
    }

    fn lock(&self) -> MutexGuard<'_, ClockInner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("ManualClock")
            .field("now", &inner.now)
            .field("sleepers", &inner.sleepers.len())
            .finish()
    }
}

impl Timer for ManualClock {
    fn now(&self) -> Instant {
        self.lock().now
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let id = {
            let mut inner = self.lock();
            inner.next_id += 1;
            inner.next_id
        };
        Box::pin(ManualSleep {
            clock: self.clone(),
            deadline,
            id,
        })
    }
}

struct ManualSleep {
    clock: ManualClock,
    deadline: Instant,
    id: u64,
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        let id = self.id;
        self.clock.lock().sleepers.retain(|(_, sleeper, _)| *sleeper != id);
    }
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.clock.lock();
        if inner.now >= self.deadline {
            return Poll::Ready(());
        }
        let (deadline, id) = (self.deadline, self.id);
        match inner.sleepers.iter_mut().find(|(_, sleeper, _)| *sleeper == id) {
            Some((_, _, waker)) if waker.will_wake(cx.waker()) => {}
            Some((_, _, waker)) => *waker = cx.waker().clone(),
            None => inner.sleepers.push((deadline, id, cx.waker().clone())),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_test::task::new_count_waker;

    #[test]
    fn sleep_completes_only_when_clock_reaches_deadline() {
        let clock = ManualClock::new();
        let mut sleep = clock.sleep_until(clock.now() + Duration::from_millis(100));
        let (waker, count) = new_count_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert_eq!(clock.next_deadline(), Some(Duration::from_millis(100)));
        clock.advance(Duration::from_millis(99));
        assert_eq!(count.get(), 0);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(1));
        assert_eq!(count.get(), 1);
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        assert_eq!(clock.next_deadline(), None);
    }

    #[test]
    fn advancing_by_a_huge_duration_does_not_panic() {
        let clock = ManualClock::new();
        clock.advance(Duration::MAX);
        let mut sleep = clock.sleep_until(clock.now());
        let (waker, _) = new_count_waker();
        assert!(sleep.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
    }
}
