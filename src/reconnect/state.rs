//! The poll machine: connection lifecycle, send queue and the transitions between them.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tracing::{debug, trace};

use super::waker::{Side, WakerSlots};
use super::ReconnectingStream;
use crate::classify::{Classification, Classify};
use crate::error::{share, BoxError, Error, Failure};
use crate::event::{ConnectionState, Event, Observers};
use crate::handshake::HandshakeError;
use crate::retry::{RetryContext, RetryPolicy};
use crate::time::{Sleep, Timer};
use crate::Connect;

pin_project! {
    /// The lifecycle. Sends are queued in [`Core`] whatever the state.
    #[project = StateProj]
    pub(crate) enum State<F, S> {
        // Nothing started yet (lazy), or the next attempt is due now.
        Idle,
        // An attempt is in progress, raced against the connect timeout.
        Connecting { fut: Pin<Box<F>>, timeout: Option<Sleep>, attempt: u32 },
        // A connection is up.
        Connected { #[pin] conn: S },
        // Waiting before the next attempt.
        Backoff { sleep: Sleep, attempt: u32, delay: Duration },
        // Closed by the user: never reconnects.
        Closed,
        // Gave up or hit a fatal failure: never reconnects.
        Terminated,
    }
}

/// What [`ReconnectingStream::poll_connection`] found.
pub(crate) enum Link {
    /// A connection is up: `state` is `Connected`.
    Up,
    /// The stream has ended for good: `state` is `Closed` or `Terminated`.
    Down,
}

/// Everything but the connector and the pinned state: configuration, the send queue, counters.
pub(crate) struct Core<I> {
    /// Accepted, not yet written to the current connection.
    pub(crate) queue: VecDeque<I>,
    /// Written to the current connection, whose flush has not completed yet; sent again if the connection
    /// fails before it does.
    pub(crate) unflushed: VecDeque<I>,
    pub(crate) capacity: usize,
    pub(crate) policy: Box<dyn RetryPolicy>,
    pub(crate) classifier: Box<dyn Classify>,
    pub(crate) observers: Observers,
    pub(crate) timer: Arc<dyn Timer>,
    pub(crate) stable_after: Duration,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
    /// Consecutive failures, the retry policy's input.
    pub(crate) failures: u32,
    /// Attempts since the start or the last stable connection.
    pub(crate) attempts: u32,
    pub(crate) streak_start: Option<Instant>,
    pub(crate) generation: u64,
    pub(crate) connected_at: Option<Instant>,
    /// `poll_close` has been called.
    pub(crate) closing: bool,
    pub(crate) close_deadline: Option<Sleep>,
    /// Why the stream ended, once it has.
    pub(crate) terminal: Option<Error>,
    /// The terminal error was yielded by the stream.
    pub(crate) terminal_yielded: bool,
    pub(crate) wakers: Arc<WakerSlots>,
    pub(crate) combined: Waker,
}

impl<I> Core<I> {
    fn emit(&mut self, event: Event) {
        self.observers.emit(event);
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.queue.len() + self.unflushed.len()
    }

    pub(crate) fn has_room(&self) -> bool {
        self.outstanding() < self.capacity
    }

    /// Starts the next attempt.
    fn start_attempt<C: Connect>(&mut self, connector: &mut C) -> State<C::Future, C::Connection> {
        self.attempts = self.attempts.saturating_add(1);
        let attempt = self.attempts;
        debug!(attempt, "connecting");
        self.emit(Event::Connecting { attempt });
        let timeout = self
            .connect_timeout
            .and_then(|after| self.timer.now().checked_add(after))
            .map(|deadline| self.timer.sleep_until(deadline));
        State::Connecting {
            fut: Box::pin(connector.connect()),
            timeout,
            attempt,
        }
    }

    fn on_connected(&mut self, attempt: u32) {
        self.generation += 1;
        self.connected_at = Some(self.timer.now());
        debug!(generation = self.generation, attempt, "connected");
        self.emit(Event::Connected {
            generation: self.generation,
            attempt,
        });
    }

    fn on_connect_failed<F, S>(&mut self, failure: Failure) -> State<F, S> {
        debug!(%failure, "connect attempt failed");
        let event = match &failure {
            Failure::Connect { attempt, .. } if failure.downcast_ref::<HandshakeError>().is_some() => {
                Event::HandshakeFailed {
                    attempt: *attempt,
                    failure: failure.clone(),
                }
            }
            _ => Event::ConnectFailed {
                failure: failure.clone(),
            },
        };
        self.emit(event);
        self.after_failure(failure)
    }

    /// The connection was lost: requeue what it had not flushed, then decide what comes next.
    pub(crate) fn on_disconnected<F, S>(&mut self, failure: Failure) -> State<F, S> {
        let now = self.timer.now();
        let uptime = self
            .connected_at
            .take()
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        debug!(generation = self.generation, ?uptime, %failure, "disconnected");
        self.emit(Event::Disconnected {
            generation: self.generation,
            uptime,
            reason: failure.clone(),
        });
        while let Some(message) = self.unflushed.pop_back() {
            self.queue.push_front(message);
        }
        if uptime >= self.stable_after {
            // A stable connection: the streak starts over.
            self.policy.reset();
            self.failures = 0;
            self.attempts = 0;
            self.streak_start = None;
        }
        self.after_failure(failure)
    }

    /// A failure counts against the retry budget: back off, give up, or (when closing) close.
    fn after_failure<F, S>(&mut self, failure: Failure) -> State<F, S> {
        if self.closing {
            return self.close_now();
        }
        let at_least = match self.classifier.classify(&failure) {
            Classification::Fatal => return self.terminate(failure, true),
            Classification::Retry => Duration::ZERO,
            Classification::RetryAfter(delay) => delay,
        };
        let now = self.timer.now();
        self.failures = self.failures.saturating_add(1);
        let elapsed = now.saturating_duration_since(*self.streak_start.get_or_insert(now));
        let Some(delay) = self.policy.next_delay(&RetryContext::new(self.failures, elapsed)) else {
            return self.terminate(failure, false);
        };
        let delay = delay.max(at_least);
        let attempt = self.attempts.saturating_add(1);
        debug!(attempt, failures = self.failures, ?delay, "retry scheduled");
        self.emit(Event::RetryScheduled {
            attempt,
            failures: self.failures,
            delay,
        });
        match now.checked_add(delay) {
            _ if delay.is_zero() => State::Idle,
            Some(deadline) => State::Backoff {
                sleep: self.timer.sleep_until(deadline),
                attempt,
                delay,
            },
            // Further than the clock can count: wait forever (until closed).
            None => State::Backoff {
                sleep: Box::pin(std::future::pending()),
                attempt,
                delay,
            },
        }
    }

    fn terminate<F, S>(&mut self, failure: Failure, fatal: bool) -> State<F, S> {
        let unsent = self.queue.len();
        debug!(%failure, fatal, unsent, "giving up");
        self.emit(Event::GaveUp {
            failures: self.failures,
            unsent,
            reason: failure.clone(),
        });
        self.terminal = Some(if fatal {
            Error::Fatal { unsent, cause: failure }
        } else {
            Error::GaveUp {
                attempts: self.failures,
                unsent,
                last: failure,
            }
        });
        State::Terminated
    }

    pub(crate) fn close_now<F, S>(&mut self) -> State<F, S> {
        while let Some(message) = self.unflushed.pop_back() {
            self.queue.push_front(message);
        }
        let unsent = self.queue.len();
        debug!(unsent, "closed");
        self.emit(Event::Closed { unsent });
        self.close_deadline = None;
        self.terminal = Some(Error::Closed { unsent });
        State::Closed
    }

    /// The error the sink returns once the stream has ended.
    pub(crate) fn sink_error(&self) -> Error {
        self.terminal.clone().unwrap_or(Error::Closed {
            unsent: self.queue.len(),
        })
    }

    /// The stream's item once it has ended: the terminal error once (unless the user closed it), then `None`.
    pub(crate) fn end_item<T>(&mut self) -> Option<Result<T, Error>> {
        if self.terminal_yielded {
            return None;
        }
        self.terminal_yielded = true;
        match &self.terminal {
            Some(Error::Closed { .. }) | None => None,
            Some(error) => Some(Err(error.clone())),
        }
    }

    /// The failure for a read error (`Some`) or the end of the connection's stream (`None`).
    pub(crate) fn read_failure(&self, error: Option<BoxError>) -> Failure {
        let generation = self.generation;
        match error {
            Some(error) => Failure::Read {
                generation,
                source: share(error),
            },
            None => Failure::Ended { generation },
        }
    }

    /// Writes the queue to `conn` and flushes it. `Ready(Ok)` once everything accepted so far is flushed.
    pub(crate) fn poll_write<S>(&mut self, mut conn: Pin<&mut S>, cx: &mut Context<'_>) -> Poll<Result<(), Failure>>
    where
        S: Sink<I>,
        S::Error: Into<BoxError>,
        I: Clone,
    {
        let generation = self.generation;
        let write_failure = |error: S::Error| Failure::Write {
            generation,
            source: share(error),
        };
        while !self.queue.is_empty() {
            match conn.as_mut().poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(write_failure(error))),
                Poll::Pending => return Poll::Pending,
            }
            if let Some(message) = self.queue.pop_front() {
                let copy = message.clone();
                self.unflushed.push_back(message);
                if let Err(error) = conn.as_mut().start_send(copy) {
                    return Poll::Ready(Err(write_failure(error)));
                }
            }
        }
        match conn.poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.unflushed.clear();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(write_failure(error))),
            Poll::Pending => Poll::Pending,
        }
    }

    pub(crate) fn state_of<F, S>(&self, state: &State<F, S>) -> ConnectionState {
        match state {
            State::Idle if self.attempts == 0 && self.generation == 0 => ConnectionState::Idle,
            State::Idle => ConnectionState::Connecting {
                attempt: self.attempts.saturating_add(1),
            },
            State::Connecting { attempt, .. } => ConnectionState::Connecting { attempt: *attempt },
            State::Connected { .. } if self.closing => ConnectionState::Closing,
            State::Connected { .. } => ConnectionState::Connected {
                generation: self.generation,
            },
            State::Backoff { attempt, delay, .. } => ConnectionState::Backoff {
                attempt: *attempt,
                delay: *delay,
            },
            State::Closed => ConnectionState::Closed,
            State::Terminated => ConnectionState::Terminated,
        }
    }
}

impl<C, I> ReconnectingStream<C, I>
where
    C: Connect,
{
    /// Drives the lifecycle until a connection is up or the stream has ended.
    ///
    /// `Pending` only when the connect future or the backoff sleep is pending; both are polled with the combined
    /// waker, after `side`'s waker has been registered, so neither half steals the other's wake-up.
    pub(crate) fn poll_connection(self: Pin<&mut Self>, cx: &mut Context<'_>, side: Side) -> Poll<Link> {
        let mut this = self.project();
        let core = this.core;
        // state       | event                    | next
        // ------------+--------------------------+-------------------------------------
        // Idle        | polled                   | Connecting (connector called)
        // Connecting  | connected                | Connected (generation + 1)
        // Connecting  | error or timeout         | Backoff / Idle (zero delay) / Terminated / Closed
        // Backoff     | delay elapsed            | Connecting
        // Connected   | -                        | Up (the caller reads or writes)
        // Closed      | -                        | Down
        // Terminated  | -                        | Down
        loop {
            match this.state.as_mut().project() {
                // Lazy start, or an attempt due now: dial.
                StateProj::Idle => {
                    trace!("idle -> connecting");
                    let next = core.start_attempt(this.connector);
                    this.state.set(next);
                }
                // An attempt in progress: wait for it or its timeout.
                StateProj::Connecting { fut, timeout, attempt } => {
                    let attempt = *attempt;
                    core.wakers.register(side, cx.waker());
                    let mut shared_cx = Context::from_waker(&core.combined);
                    let outcome = match fut.as_mut().poll(&mut shared_cx) {
                        Poll::Ready(outcome) => outcome,
                        Poll::Pending => match timeout.as_mut().map(|t| t.as_mut().poll(&mut shared_cx)) {
                            Some(Poll::Ready(())) => {
                                trace!("connecting -> timed out");
                                let failure = Failure::ConnectTimeout {
                                    attempt,
                                    after: core.connect_timeout.unwrap_or_default(),
                                };
                                let next = core.on_connect_failed(failure);
                                this.state.set(next);
                                continue;
                            }
                            Some(Poll::Pending) | None => return Poll::Pending,
                        },
                    };
                    match outcome {
                        Ok(conn) => {
                            trace!("connecting -> connected");
                            core.on_connected(attempt);
                            this.state.set(State::Connected { conn });
                            core.wakers.wake(side.other());
                        }
                        Err(error) => {
                            trace!("connecting -> failed");
                            let failure = Failure::Connect {
                                attempt,
                                source: share(error),
                            };
                            let next = core.on_connect_failed(failure);
                            this.state.set(next);
                        }
                    }
                }
                // Waiting before the next attempt.
                StateProj::Backoff { sleep, .. } => {
                    core.wakers.register(side, cx.waker());
                    match sleep.as_mut().poll(&mut Context::from_waker(&core.combined)) {
                        Poll::Ready(()) => {
                            trace!("backoff -> connecting");
                            let next = core.start_attempt(this.connector);
                            this.state.set(next);
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                // Up: the caller reads or writes.
                StateProj::Connected { .. } => return Poll::Ready(Link::Up),
                // Ended for good.
                StateProj::Closed | StateProj::Terminated => return Poll::Ready(Link::Down),
            }
        }
    }

    /// The connection failed: record it and move to the next state, waking the other half, which may be
    /// waiting on the connection just dropped.
    pub(crate) fn fail_connection(self: Pin<&mut Self>, failure: Failure, side: Side) {
        let mut this = self.project();
        trace!("connected -> disconnected");
        let next = this.core.on_disconnected(failure);
        this.state.set(next);
        this.core.wakers.wake(side.other());
    }

    /// Writes and flushes the queue on the current connection, reconnecting as needed.
    ///
    /// `Ready(Ok)` once nothing is outstanding, `Ready(Err)` once the stream has ended.
    pub(crate) fn poll_flush_queue(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>>
    where
        C::Connection: Sink<I>,
        <C::Connection as Sink<I>>::Error: Into<BoxError>,
        I: Clone,
    {
        loop {
            if let Link::Down = std::task::ready!(self.as_mut().poll_connection(cx, Side::Write)) {
                return Poll::Ready(Err(self.core.sink_error()));
            }
            let this = self.as_mut().project();
            let StateProj::Connected { conn } = this.state.project() else {
                continue;
            };
            match this.core.poll_write(conn, cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                Poll::Ready(Err(failure)) => self.as_mut().fail_connection(failure, Side::Write),
                Poll::Pending => {
                    this.core.wakers.register(Side::Write, cx.waker());
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads the next item, reconnecting as needed; on the way, writes anything outstanding.
    pub(crate) fn poll_read<T, SE>(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T, Error>>>
    where
        C::Connection: Stream<Item = Result<T, SE>> + Sink<I>,
        SE: Into<BoxError>,
        <C::Connection as Sink<I>>::Error: Into<BoxError>,
        I: Clone,
    {
        loop {
            if let Link::Down = std::task::ready!(self.as_mut().poll_connection(cx, Side::Read)) {
                return Poll::Ready(self.project().core.end_item());
            }
            let this = self.as_mut().project();
            let StateProj::Connected { mut conn } = this.state.project() else {
                continue;
            };
            let core = this.core;
            if core.outstanding() > 0 {
                // Queued messages go out even if only the read half is polled (after a reconnect, say). The
                // combined waker keeps the write half's wake-ups intact.
                core.wakers.register(Side::Read, cx.waker());
                let combined = core.combined.clone();
                if let Poll::Ready(Err(failure)) = core.poll_write(conn.as_mut(), &mut Context::from_waker(&combined)) {
                    self.as_mut().fail_connection(failure, Side::Read);
                    continue;
                }
            }
            let failure = match conn.poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => return Poll::Ready(Some(Ok(item))),
                Poll::Ready(Some(Err(error))) => core.read_failure(Some(error.into())),
                Poll::Ready(None) => core.read_failure(None),
                Poll::Pending => {
                    core.wakers.register(Side::Read, cx.waker());
                    return Poll::Pending;
                }
            };
            self.as_mut().fail_connection(failure, Side::Read);
        }
    }

    /// Closes: flushes the queue on the current connection (no reconnect), closes it, ends the stream.
    pub(crate) fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>>
    where
        C::Connection: Sink<I>,
        <C::Connection as Sink<I>>::Error: Into<BoxError>,
        I: Clone,
    {
        let this = self.as_mut().project();
        let core = this.core;
        if !core.closing {
            core.closing = true;
            debug!(queued = core.outstanding(), "closing");
            let deadline = core.timer.now().checked_add(core.close_timeout);
            core.close_deadline = deadline.map(|d| core.timer.sleep_until(d));
        }
        let mut state = this.state;
        loop {
            match state.as_mut().project() {
                // Not connected: close at once, keeping the queue for the user.
                StateProj::Idle | StateProj::Connecting { .. } | StateProj::Backoff { .. } => {
                    let next = core.close_now();
                    state.set(next);
                    core.wakers.wake(Side::Read);
                }
                // Connected: flush, then close the connection, within the close timeout.
                StateProj::Connected { mut conn } => {
                    let timed_out = core
                        .close_deadline
                        .as_mut()
                        .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
                    if timed_out {
                        debug!("close timed out");
                        let next = core.close_now();
                        state.set(next);
                        core.wakers.wake(Side::Read);
                        continue;
                    }
                    let generation = core.generation;
                    let flushed = match core.poll_write(conn.as_mut(), cx) {
                        Poll::Ready(Ok(())) => match conn.poll_close(cx) {
                            Poll::Ready(Ok(())) => Ok(()),
                            Poll::Ready(Err(error)) => Err(Failure::Write {
                                generation,
                                source: share(error),
                            }),
                            Poll::Pending => return Poll::Pending,
                        },
                        Poll::Ready(Err(failure)) => Err(failure),
                        Poll::Pending => return Poll::Pending,
                    };
                    if let Err(failure) = flushed {
                        debug!(%failure, "connection failed while closing");
                    }
                    let next = core.close_now();
                    state.set(next);
                    core.wakers.wake(Side::Read);
                }
                StateProj::Closed | StateProj::Terminated => {
                    return Poll::Ready(match core.queue.len() {
                        0 => Ok(()),
                        unsent => Err(Error::Closed { unsent }),
                    });
                }
            }
        }
    }
}
