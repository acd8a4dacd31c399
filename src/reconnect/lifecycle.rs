//! The lifecycle's bookkeeping: configuration, counters, and what each transition reports and decides
//! (events, the retry policy, the classifier). The loop in [`machine`](super::machine) calls it.

use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use super::queue::SendQueue;
use super::state::State;
use super::waker::{Side, WakerSlots};
use crate::classify::Classify;
use crate::connect::Connect;
use crate::diagnose::Classification;
use crate::error::{Error, Failure};
use crate::event::{Event, Observers};
use crate::retry::{RetryContext, RetryPolicy};
use crate::time::{Sleep, Timer};

/// Configuration: what the builder methods set.
pub(crate) struct Settings {
    pub(crate) policy: Box<dyn RetryPolicy>,
    pub(crate) classifier: Box<dyn Classify>,
    pub(crate) observers: Observers,
    pub(crate) timer: Arc<dyn Timer>,
    pub(crate) stable_after: Duration,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
}

/// Counters of the lifecycle (not state: they carry across states), the configuration, and the wakers.
pub(crate) struct Lifecycle {
    pub(crate) settings: Settings,
    /// Consecutive failures, the retry policy's input.
    pub(crate) failures: u32,
    /// Attempts since the start or the last stable connection.
    pub(crate) attempts: u32,
    /// When the current streak of failures began.
    streak_start: Option<Instant>,
    /// The generation of the current or last connection.
    pub(crate) generation: u64,
    /// The current connection has yielded an item (it carried traffic in).
    pub(crate) received: bool,
    pub(crate) wakers: Arc<WakerSlots>,
    /// Wakes both halves: the connect future and the backoff sleep are polled with it.
    pub(crate) combined: Waker,
}

/// What follows a failure.
pub(crate) enum Next {
    /// Dial again now.
    Dial,
    /// Dial again after the backoff.
    Wait {
        sleep: Sleep,
        attempt: u32,
        delay: Duration,
    },
    /// The stream has ended.
    End(Error),
}

impl Lifecycle {
    pub(crate) fn new(settings: Settings) -> Self {
        let (wakers, combined) = WakerSlots::new_pair();
        Self {
            settings,
            failures: 0,
            attempts: 0,
            streak_start: None,
            generation: 0,
            received: false,
            wakers,
            combined,
        }
    }

    fn emit(&mut self, event: Event) {
        self.settings.observers.emit(event);
    }

    /// Starts the next attempt.
    pub(crate) fn dial<C: Connect>(&mut self, connector: &mut C) -> State<C::Future, C::Connection> {
        self.attempts = self.attempts.saturating_add(1);
        let attempt = self.attempts;
        debug!(attempt, "connecting");
        self.emit(Event::Connecting { attempt });
        let timer = &self.settings.timer;
        let timeout = self
            .settings
            .connect_timeout
            .and_then(|after| timer.now().checked_add(after))
            .map(|deadline| timer.sleep_until(deadline));
        State::Connecting {
            future: Box::pin(connector.connect()),
            timeout,
            attempt,
        }
    }

    /// A connection is up: its generation, and when.
    pub(crate) fn connected(&mut self, attempt: u32) -> Instant {
        self.generation += 1;
        self.received = false;
        debug!(generation = self.generation, attempt, "connected");
        self.emit(Event::Connected {
            generation: self.generation,
            attempt,
        });
        self.settings.timer.now()
    }

    /// The queue policy dropped `count` messages as the current connection came up.
    pub(crate) fn dropped(&mut self, count: usize) {
        debug!(generation = self.generation, count, "queue policy dropped messages");
        self.emit(Event::Dropped {
            generation: self.generation,
            count,
        });
    }

    /// An attempt failed: report it, then decide what comes next.
    pub(crate) fn connect_failed(&mut self, failure: Failure, unsent: usize) -> Next {
        debug!(%failure, "connect attempt failed");
        let event = match &failure {
            Failure::Connect { attempt, diagnosis, .. } if diagnosis.is_handshake() => Event::HandshakeFailed {
                attempt: *attempt,
                failure: failure.clone(),
            },
            _ => Event::ConnectFailed {
                failure: failure.clone(),
            },
        };
        self.emit(event);
        self.after_failure(failure, unsent)
    }

    /// A connection up since `since` was lost: report it. One that was stable (up for `stable_after`) or
    /// productive (it yielded an item and flushed a message: `sent` says whether it did) ends the streak of
    /// failures; any other counts as one more failed attempt.
    pub(crate) fn disconnected(&mut self, failure: &Failure, since: Instant, sent: bool) {
        let uptime = self.settings.timer.now().saturating_duration_since(since);
        debug!(generation = self.generation, ?uptime, %failure, "disconnected");
        self.emit(Event::Disconnected {
            generation: self.generation,
            uptime,
            reason: failure.clone(),
        });
        let productive = self.received && sent;
        if uptime >= self.settings.stable_after || productive {
            self.settings.policy.reset();
            self.failures = 0;
            self.attempts = 0;
            self.streak_start = None;
        }
    }

    /// A failure counts against the retry budget: retry now, back off, or end.
    pub(crate) fn after_failure(&mut self, failure: Failure, unsent: usize) -> Next {
        let at_least = match self.settings.classifier.classify(&failure) {
            Classification::Fatal => return self.end(failure, true, unsent),
            Classification::Retry => Duration::ZERO,
            Classification::RetryAfter(delay) => delay,
        };
        let now = self.settings.timer.now();
        self.failures = self.failures.saturating_add(1);
        let elapsed = now.saturating_duration_since(*self.streak_start.get_or_insert(now));
        let context = RetryContext::new(self.failures, elapsed);
        let Some(delay) = self.settings.policy.next_delay(&context) else {
            return self.end(failure, false, unsent);
        };
        let delay = delay.max(at_least);
        let attempt = self.attempts.saturating_add(1);
        debug!(attempt, failures = self.failures, ?delay, "retry scheduled");
        self.emit(Event::RetryScheduled {
            attempt,
            failures: self.failures,
            delay,
        });
        if delay.is_zero() {
            return Next::Dial;
        }
        let sleep = match now.checked_add(delay) {
            Some(deadline) => self.settings.timer.sleep_until(deadline),
            // Further than the clock can count: wait forever (until closed).
            None => Box::pin(std::future::pending()),
        };
        Next::Wait { sleep, attempt, delay }
    }

    /// Gives up: the terminal error.
    fn end(&mut self, failure: Failure, fatal: bool, unsent: usize) -> Next {
        debug!(%failure, fatal, unsent, "giving up");
        self.emit(Event::GaveUp {
            failures: self.failures,
            unsent,
            reason: failure.clone(),
        });
        Next::End(if fatal {
            Error::Fatal {
                unsent,
                cause: Box::new(failure),
            }
        } else {
            Error::GaveUp {
                attempts: self.failures,
                unsent,
                last: Box::new(failure),
            }
        })
    }

    /// Closed: what was not flushed is handed back.
    pub(crate) fn closed<F, S, I>(&mut self, queue: &mut SendQueue<I>) -> State<F, S> {
        queue.rewind();
        let unsent = queue.len();
        debug!(unsent, "closed");
        self.emit(Event::Closed { unsent });
        State::Ended {
            error: Error::Closed { unsent },
        }
    }
}

impl Lifecycle {
    /// The connection up in `state` failed: report it, requeue what it had not flushed, and go on to the
    /// next state, waking the other half, which may be waiting on the connection just lost.
    #[cold]
    #[inline(never)]
    pub(crate) fn lost<C: Connect, I>(
        &mut self,
        failure: Failure,
        state: &State<C::Future, C::Connection>,
        queue: &mut SendQueue<I>,
        connector: &mut C,
        side: Side,
    ) -> State<C::Future, C::Connection> {
        trace!("connected -> disconnected");
        let since = state.since().unwrap_or_else(|| self.settings.timer.now());
        self.disconnected(&failure, since, queue.carried);
        queue.rewind();
        let next = self.after_failure(failure, queue.len());
        let next = self.apply(next, connector);
        self.wakers.wake(side.other());
        next
    }

    /// The state that `next` leads to.
    pub(crate) fn apply<C: Connect>(&mut self, next: Next, connector: &mut C) -> State<C::Future, C::Connection> {
        match next {
            Next::Dial => self.dial(connector),
            Next::Wait { sleep, attempt, delay } => State::Backoff { sleep, attempt, delay },
            Next::End(error) => State::Failed { error },
        }
    }

    /// Ends the stream at once (for [`ReconnectingStream::close_now`]): the connection is dropped.
    pub(crate) fn close_now<F, S, I>(&mut self, queue: &mut SendQueue<I>) -> State<F, S> {
        let next = self.closed(queue);
        self.wakers.wake(Side::Read);
        self.wakers.wake(Side::Write);
        next
    }
}
