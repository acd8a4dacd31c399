//! The poll machine: the connection's lifecycle as one enum, and one loop that every poll of the stream and the
//! sink calls with its intent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_core::Stream;
use futures_sink::Sink;
use tracing::{debug, trace};

use super::queue::SendQueue;
use super::waker::{Side, WakerSlots};
use super::ReconnectingStream;
use crate::classify::{Classification, Classify, Diagnose};
use crate::error::{BoxError, ConnectTimeout, Error, Failure};
use crate::event::{ConnectionState, Event, Observers};
use crate::retry::{RetryContext, RetryPolicy};
use crate::time::{Sleep, Timer};
use crate::Connect;

/// Where the stream is in its life. Each state carries its own data; nothing outside restates it.
///
/// The connect future is boxed per attempt, so that the stream stays `Unpin` whatever the connector's
/// future is (held in place, an `async` connector would make the stream `!Unpin`, and `next().await` on it
/// would need pinning first).
pub(crate) enum State<F, S> {
    /// Not polled yet: nothing has been dialled.
    Idle,
    /// An attempt is in progress, raced against the connect timeout.
    Connecting {
        future: Pin<Box<F>>,
        timeout: Option<Sleep>,
        attempt: u32,
    },
    /// Waiting before the next attempt.
    Backoff {
        sleep: Sleep,
        attempt: u32,
        delay: Duration,
    },
    /// A connection is up.
    Connected { conn: S, since: Instant },
    /// `poll_close` was called: the queue is flushed and the connection closed, until `deadline`.
    Closing { conn: S, since: Instant, deadline: Sleep },
    /// Ended for good by a failure (gave up or fatal); the stream has not yielded `error` yet.
    Failed { error: Error },
    /// Ended for good: the stream yields `None`, the sink returns `error`.
    Ended { error: Error },
}

impl<F, S> State<F, S> {
    /// The public view of the state.
    pub(crate) fn view(&self, generation: u64) -> ConnectionState {
        match self {
            Self::Idle => ConnectionState::Idle,
            Self::Connecting { attempt, .. } => ConnectionState::Connecting { attempt: *attempt },
            Self::Backoff { attempt, delay, .. } => ConnectionState::Backoff {
                attempt: *attempt,
                delay: *delay,
            },
            Self::Connected { .. } => ConnectionState::Connected { generation },
            Self::Closing { .. } => ConnectionState::Closing,
            Self::Failed { .. } => ConnectionState::Terminated,
            Self::Ended { error } if error.is_closed() => ConnectionState::Closed,
            Self::Ended { .. } => ConnectionState::Terminated,
        }
    }
}

/// What the caller of [`ReconnectingStream::drive`] wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    /// `poll_next`: the next item.
    Read,
    /// `poll_ready`: room in the send queue.
    Ready,
    /// `poll_flush`: every accepted message flushed.
    Flush,
    /// `poll_close`: the connection closed, for good.
    Close,
}

impl Intent {
    fn side(self) -> Side {
        match self {
            Self::Read => Side::Read,
            Self::Ready | Self::Flush | Self::Close => Side::Write,
        }
    }
}

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
    pub(crate) wakers: Arc<WakerSlots>,
    /// Wakes both halves: the connect future and the backoff sleep are polled with it.
    combined: Waker,
}

/// What follows a failure.
enum Next {
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
            wakers,
            combined,
        }
    }

    fn emit(&mut self, event: Event) {
        self.settings.observers.emit(event);
    }

    /// Starts the next attempt.
    fn dial<C: Connect>(&mut self, connector: &mut C) -> State<C::Future, C::Connection> {
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
    fn connected(&mut self, attempt: u32) -> Instant {
        self.generation += 1;
        debug!(generation = self.generation, attempt, "connected");
        self.emit(Event::Connected {
            generation: self.generation,
            attempt,
        });
        self.settings.timer.now()
    }

    /// An attempt failed: report it, then decide what comes next.
    fn connect_failed(&mut self, failure: Failure, unsent: usize) -> Next {
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

    /// A connection up since `since` was lost: report it; a stable one ends the streak of failures.
    fn disconnected(&mut self, failure: &Failure, since: Instant) {
        let uptime = self.settings.timer.now().saturating_duration_since(since);
        debug!(generation = self.generation, ?uptime, %failure, "disconnected");
        self.emit(Event::Disconnected {
            generation: self.generation,
            uptime,
            reason: failure.clone(),
        });
        if uptime >= self.settings.stable_after {
            self.settings.policy.reset();
            self.failures = 0;
            self.attempts = 0;
            self.streak_start = None;
        }
    }

    /// A failure counts against the retry budget: retry now, back off, or end.
    fn after_failure(&mut self, failure: Failure, unsent: usize) -> Next {
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
            Error::Fatal { unsent, cause: failure }
        } else {
            Error::GaveUp {
                attempts: self.failures,
                unsent,
                last: failure,
            }
        })
    }

    /// Closed: what was not flushed is handed back.
    fn closed<F, S, I>(&mut self, queue: &mut SendQueue<I>) -> State<F, S> {
        queue.rewind();
        let unsent = queue.len();
        debug!(unsent, "closed");
        self.emit(Event::Closed { unsent });
        State::Ended {
            error: Error::Closed { unsent },
        }
    }
}

/// Whether a sink's `intent` is met as things stand: the queue has room (ready), or nothing is left to flush
/// and no connection is up to flush (flush).
fn met<I>(intent: Intent, queue: &SendQueue<I>, connected: bool) -> bool {
    match intent {
        Intent::Ready => queue.has_room(),
        Intent::Flush => queue.is_empty() && !connected,
        Intent::Read | Intent::Close => false,
    }
}

impl<C, I> ReconnectingStream<C, I>
where
    C: Connect,
{
    /// The one loop: drives the lifecycle toward `intent`.
    ///
    /// For [`Intent::Read`] it returns the stream's next item. For the sink's intents, `Ready(None)` means the
    /// intent is met and `Ready(Some(Err(..)))` that the stream has ended (an item is never returned).
    /// `Pending` only when the connection, the connect future or a timer returned `Pending`.
    ///
    /// ```text
    ///  state      | intent       | what happens                             | next
    /// ------------+--------------+------------------------------------------+---------------------------------
    ///  Idle       | close        | nothing to flush                         | Ended (closed)
    ///  Idle       | any other    | the connector is called                  | Connecting
    ///  Connecting | close        | the attempt is dropped                   | Ended (closed)
    ///  Connecting | any other    | connected / failed or timed out          | Connected / Backoff, Connecting
    ///             |              |                                          |   (no delay) or Failed
    ///  Backoff    | close        | the sleep is dropped                     | Ended (closed)
    ///  Backoff    | any other    | the delay elapses                        | Connecting
    ///  Connected  | read         | queued messages written, an item read    | Connected, or on failure as for
    ///             |              |                                          |   a failed attempt
    ///  Connected  | ready, flush | queued messages written and flushed      | Connected, or as above
    ///  Connected  | close        | the close timeout starts                 | Closing
    ///  Closing    | close        | queue flushed, connection closed, or the | Ended (closed)
    ///             |              |   close timeout passed                   |
    ///  Closing    | other        | as in Connected                          | Closing; on failure Ended
    ///  Failed     | read         | the error is yielded                     | Ended
    ///  Failed,    | ready, flush | the error is returned                    | -
    ///  Ended      |              |                                          |
    ///  Ended      | read         | `None`                                   | -
    /// ```
    ///
    /// The connect future and the backoff sleep are polled with the combined waker, after the caller's waker is
    /// registered for its side, so that neither half steals the other's wake-up (the halves of a `split`).
    #[inline]
    pub(crate) fn drive<T, SE>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        intent: Intent,
    ) -> Poll<Option<Result<T, Error>>>
    where
        C::Connection: Stream<Item = Result<T, SE>> + Sink<I> + Unpin,
        SE: Into<BoxError> + Diagnose,
        <C::Connection as Sink<I>>::Error: Into<BoxError> + Diagnose,
        I: Clone,
    {
        let this = self.project();
        let side = intent.side();
        // Just dialled lazily: the new attempt is polled once before the sink's intent may return.
        let mut dialled = false;
        loop {
            // The sink's intents are met without a connection when the queue allows: at once, but for the lazy
            // start (an idle stream dials, and polls the attempt once, first).
            let settled = matches!(*this.state, State::Idle | State::Failed { .. } | State::Ended { .. });
            if !settled && !dialled && met(intent, this.queue, matches!(*this.state, State::Connected { .. })) {
                return Poll::Ready(None);
            }
            dialled = false;
            match this.state {
                // Lazy start (or closed before it): dial.
                State::Idle => {
                    if intent == Intent::Close {
                        let next = this.life.closed(this.queue);
                        *this.state = next;
                        continue;
                    }
                    trace!("idle -> connecting");
                    let next = this.life.dial(this.connector);
                    *this.state = next;
                    dialled = true;
                }
                // An attempt in progress: wait for it or its timeout.
                State::Connecting {
                    future,
                    timeout,
                    attempt,
                } => {
                    let attempt = *attempt;
                    if intent == Intent::Close {
                        trace!("connecting -> closed");
                        let next = this.life.closed(this.queue);
                        *this.state = next;
                        this.life.wakers.wake(Side::Read);
                        continue;
                    }
                    this.life.wakers.register(side, cx.waker());
                    let mut shared = Context::from_waker(&this.life.combined);
                    let failure = match future.as_mut().poll(&mut shared) {
                        Poll::Ready(Ok(conn)) => {
                            trace!("connecting -> connected");
                            let since = this.life.connected(attempt);
                            *this.state = State::Connected { conn, since };
                            this.life.wakers.wake(side.other());
                            continue;
                        }
                        Poll::Ready(Err(error)) => Failure::connect(attempt, error),
                        Poll::Pending => match timeout.as_mut().map(|sleep| sleep.as_mut().poll(&mut shared)) {
                            Some(Poll::Ready(())) => {
                                let after = this.life.settings.connect_timeout.unwrap_or_default();
                                Failure::connect(attempt, ConnectTimeout { after })
                            }
                            Some(Poll::Pending) | None => return pending_unless_met(intent, this.queue, false),
                        },
                    };
                    trace!("connecting -> failed");
                    let next = this.life.connect_failed(failure, this.queue.len());
                    let next = this.life.apply(next, this.connector);
                    *this.state = next;
                }
                // Waiting before the next attempt.
                State::Backoff { sleep, .. } => {
                    if intent == Intent::Close {
                        trace!("backoff -> closed");
                        let next = this.life.closed(this.queue);
                        *this.state = next;
                        this.life.wakers.wake(Side::Read);
                        continue;
                    }
                    this.life.wakers.register(side, cx.waker());
                    match sleep.as_mut().poll(&mut Context::from_waker(&this.life.combined)) {
                        Poll::Ready(()) => {
                            trace!("backoff -> connecting");
                            let next = this.life.dial(this.connector);
                            *this.state = next;
                        }
                        Poll::Pending => return pending_unless_met(intent, this.queue, false),
                    }
                }
                // Up: read, write, or start closing.
                State::Connected { conn, since } => {
                    let since = *since;
                    let failure = match intent {
                        Intent::Read => match poll_read(conn, this.queue, this.life, cx) {
                            Ok(poll) => return poll,
                            Err(failure) => failure,
                        },
                        Intent::Ready | Intent::Flush => match this.queue.poll_write(Pin::new(conn), cx) {
                            Poll::Ready(Ok(())) => return Poll::Ready(None),
                            Poll::Ready(Err(error)) => Failure::write(this.life.generation, error),
                            Poll::Pending => {
                                this.life.wakers.register(Side::Write, cx.waker());
                                return pending_unless_met(intent, this.queue, true);
                            }
                        },
                        Intent::Close => {
                            debug!(queued = this.queue.len(), "closing");
                            let timer = &this.life.settings.timer;
                            let deadline = match timer.now().checked_add(this.life.settings.close_timeout) {
                                Some(deadline) => timer.sleep_until(deadline),
                                None => Box::pin(std::future::pending()),
                            };
                            if let State::Connected { conn, since } = std::mem::replace(this.state, State::Idle) {
                                *this.state = State::Closing { conn, since, deadline };
                            }
                            continue;
                        }
                    };
                    trace!("connected -> disconnected");
                    this.life.disconnected(&failure, since);
                    this.queue.rewind();
                    let next = this.life.after_failure(failure, this.queue.len());
                    let next = this.life.apply(next, this.connector);
                    *this.state = next;
                    this.life.wakers.wake(side.other());
                }
                // Closing: flush and close (bounded by the deadline); reads and writes go on meanwhile.
                State::Closing { conn, since, deadline } => {
                    let since = *since;
                    let failure = match intent {
                        Intent::Close => {
                            if deadline.as_mut().poll(cx).is_ready() {
                                debug!("close timed out");
                                let next = this.life.closed(this.queue);
                                *this.state = next;
                                this.life.wakers.wake(Side::Read);
                                continue;
                            }
                            let flushed = match this.queue.poll_write(Pin::new(&mut *conn), cx) {
                                Poll::Ready(Ok(())) => Pin::new(conn).poll_close(cx),
                                other => other,
                            };
                            match flushed {
                                Poll::Ready(Ok(())) => {
                                    let next = this.life.closed(this.queue);
                                    *this.state = next;
                                    this.life.wakers.wake(Side::Read);
                                    continue;
                                }
                                Poll::Ready(Err(error)) => Failure::write(this.life.generation, error),
                                Poll::Pending => return Poll::Pending,
                            }
                        }
                        Intent::Read => match poll_read(conn, this.queue, this.life, cx) {
                            Ok(poll) => return poll,
                            Err(failure) => failure,
                        },
                        Intent::Ready | Intent::Flush => match this.queue.poll_write(Pin::new(conn), cx) {
                            Poll::Ready(Ok(())) => return Poll::Ready(None),
                            Poll::Ready(Err(error)) => Failure::write(this.life.generation, error),
                            Poll::Pending => {
                                this.life.wakers.register(Side::Write, cx.waker());
                                return pending_unless_met(intent, this.queue, false);
                            }
                        },
                    };
                    debug!(%failure, "connection failed while closing");
                    this.life.disconnected(&failure, since);
                    let next = this.life.closed(this.queue);
                    *this.state = next;
                    this.life.wakers.wake(side.other());
                }
                // Ended by a failure: the stream yields the error once.
                State::Failed { error } => {
                    let error = error.clone();
                    match intent {
                        Intent::Read => {
                            *this.state = State::Ended { error: error.clone() };
                            return Poll::Ready(Some(Err(error)));
                        }
                        Intent::Ready | Intent::Flush => return Poll::Ready(Some(Err(error))),
                        Intent::Close => return closed_outcome(this.queue),
                    }
                }
                // Ended for good.
                State::Ended { error } => {
                    return match intent {
                        Intent::Read => Poll::Ready(None),
                        Intent::Ready | Intent::Flush => Poll::Ready(Some(Err(error.clone()))),
                        Intent::Close => closed_outcome(this.queue),
                    };
                }
            }
        }
    }

    /// The view of the current state.
    pub(crate) fn view(&self) -> ConnectionState {
        self.state.view(self.life.generation)
    }
}

impl Lifecycle {
    /// The state that `next` leads to.
    fn apply<C: Connect>(&mut self, next: Next, connector: &mut C) -> State<C::Future, C::Connection> {
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

/// `Pending`, unless the sink's intent is met all the same (the queue has room, or nothing to flush while no
/// connection is up).
fn pending_unless_met<T, I>(intent: Intent, queue: &SendQueue<I>, connected: bool) -> Poll<Option<Result<T, Error>>> {
    if met(intent, queue, connected) {
        Poll::Ready(None)
    } else {
        Poll::Pending
    }
}

/// `poll_close` once the stream has ended: done, unless messages were left unsent.
fn closed_outcome<T, I>(queue: &SendQueue<I>) -> Poll<Option<Result<T, Error>>> {
    match queue.len() {
        0 => Poll::Ready(None),
        unsent => Poll::Ready(Some(Err(Error::Closed { unsent }))),
    }
}

/// The read of a connection that is up: queued messages go out first (even if only the read half is
/// polled, after a reconnect, say; with the combined waker, so that the write half's wake-ups stay intact),
/// then the next item. `Err` is the connection's failure.
#[inline(always)]
fn poll_read<S, I, T, SE>(
    conn: &mut S,
    queue: &mut SendQueue<I>,
    life: &mut Lifecycle,
    cx: &mut Context<'_>,
) -> Result<Poll<Option<Result<T, Error>>>, Failure>
where
    S: Stream<Item = Result<T, SE>> + Sink<I> + Unpin,
    SE: Into<BoxError> + Diagnose,
    S::Error: Into<BoxError> + Diagnose,
    I: Clone,
{
    if !queue.is_empty() {
        life.wakers.register(Side::Read, cx.waker());
        let combined = life.combined.clone();
        if let Poll::Ready(Err(error)) = queue.poll_write(Pin::new(&mut *conn), &mut Context::from_waker(&combined)) {
            return Err(Failure::write(life.generation, error));
        }
    }
    match Pin::new(conn).poll_next(cx) {
        Poll::Ready(Some(Ok(item))) => Ok(Poll::Ready(Some(Ok(item)))),
        Poll::Ready(Some(Err(error))) => Err(Failure::read(life.generation, error)),
        Poll::Ready(None) => Err(Failure::Ended {
            generation: life.generation,
        }),
        Poll::Pending => {
            life.wakers.register(Side::Read, cx.waker());
            Ok(Poll::Pending)
        }
    }
}
