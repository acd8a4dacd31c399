//! The poll machine: the connection's lifecycle as one enum, and one loop that every poll of the stream and the
//! sink calls with its intent.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use tracing::{debug, trace};

use super::lifecycle::Lifecycle;
use super::queue::{QueuePolicy, SendQueue};
pub(crate) use super::state::State;
use super::waker::Side;
use super::ReconnectingStream;
use crate::connect::Connect;
use crate::diagnose::Diagnose;
use crate::error::{BoxError, ConnectTimeout, Error, Failure};
use crate::event::ConnectionState;
use crate::time::Timer;

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

/// Whether a sink's `intent` is met as things stand: the queue has room (ready), or nothing is left to flush
/// and no connection is up to flush (flush).
fn met<I>(intent: Intent, queue: &SendQueue<I>, connected: bool) -> bool {
    match intent {
        Intent::Ready => queue.has_room(),
        Intent::Flush => queue.is_empty() && !connected,
        Intent::Read | Intent::Close => false,
    }
}

/// Writes what is queued from the read side (after a reconnect, say, when only the read half is polled), with
/// the combined waker so that the write half's wake-ups stay intact. `Err` is the connection's failure.
#[inline(never)]
pub(crate) fn write_queued<S, I>(
    conn: &mut S,
    queue: &mut SendQueue<I>,
    life: &Lifecycle,
    cx: &Context<'_>,
) -> Result<(), Failure>
where
    S: Sink<I> + Unpin,
    S::Error: Into<BoxError> + Diagnose,
    I: Clone,
{
    life.wakers.register(Side::Read, cx.waker());
    let combined = life.combined.clone();
    match queue.poll_write(Pin::new(conn), &mut Context::from_waker(&combined)) {
        Poll::Ready(Err(error)) => Err(Failure::write(life.generation, error)),
        _ => Ok(()),
    }
}

/// The read of a connection that is up, in the arm of the loop that has it: queued messages go out first,
/// then the next item is returned from the loop as it came; evaluates to the connection's failure otherwise.
/// (A macro, so that the item is returned by the caller itself, moved once: `poll_next`'s fast path and the
/// Connected arm of the loop are this same code.)
macro_rules! read_connected {
    ($conn:expr, $queue:expr, $life:expr, $cx:expr) => {{
        let conn = $conn;
        match (!$queue.is_empty()).then(|| $crate::reconnect::machine::write_queued(&mut *conn, $queue, $life, $cx)) {
            Some(Err(failure)) => failure,
            _ => match ::std::pin::Pin::new(conn).poll_next($cx) {
                ::std::task::Poll::Ready(Some(Ok(item))) => {
                    $life.received = true;
                    return ::std::task::Poll::Ready(Some(Ok(item)));
                }
                ::std::task::Poll::Pending => {
                    $life.wakers.register($crate::reconnect::waker::Side::Read, $cx.waker());
                    return ::std::task::Poll::Pending;
                }
                ::std::task::Poll::Ready(Some(Err(error))) => $crate::error::Failure::read($life.generation, error),
                ::std::task::Poll::Ready(None) => $crate::error::Failure::Ended {
                    generation: $life.generation,
                },
            },
        }
    }};
}
pub(crate) use read_connected;

/// The sink's write of a connection that is up (connected, or closing): the queue written and flushed; returns
/// from the loop when done or pending, evaluates to the connection's failure otherwise.
macro_rules! write_connected {
    ($conn:expr, $this:ident, $cx:expr, $intent:expr, $connected:expr) => {
        match $this.queue.poll_write(Pin::new($conn), $cx) {
            Poll::Ready(Ok(())) => return Poll::Ready(None),
            Poll::Ready(Err(error)) => Failure::write($this.life.generation, error),
            Poll::Pending => {
                $this.life.wakers.register(Side::Write, $cx.waker());
                return pending_unless_met($intent, $this.queue, $connected);
            }
        }
    };
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
    ///  any        | read, with a | the item a connection whose write failed | as before
    ///             |   draining   |   still held ([`lose`]); none: it goes   |
    /// ```
    ///
    /// The connect future and the backoff sleep are polled with the combined waker, after the caller's waker is
    /// registered for its side, so that neither half steals the other's wake-up (the halves of a `split`).
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
        // An attempt failed in this call: a second one in the same call yields first (see below).
        let mut failed_here = false;
        loop {
            // What a connection whose write failed had already received comes first.
            if intent == Intent::Read && this.draining.is_some() {
                if let Some(item) = drain(this.draining, cx) {
                    return Poll::Ready(Some(Ok(item)));
                }
            }
            // The sink's intents are met without a connection when the queue allows: at once, but for the lazy
            // start (an idle stream dials, and polls the attempt once, first).
            if !dialled && met_as_is(intent, this.queue, this.state) {
                return Poll::Ready(None);
            }
            dialled = false;
            match this.state {
                // Closed while no connection is up: nothing to flush; the queue is kept for the user.
                State::Idle | State::Connecting { .. } | State::Backoff { .. } if intent == Intent::Close => {
                    trace!("closed before a connection was up");
                    *this.state = this.life.closed(this.queue);
                    this.life.wakers.wake(Side::Read);
                }
                // Lazy start: dial.
                State::Idle => {
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
                    this.life.wakers.register(side, cx.waker());
                    let mut shared = Context::from_waker(&this.life.combined);
                    let failure = match future.as_mut().poll(&mut shared) {
                        Poll::Ready(Ok(conn)) => {
                            trace!("connecting -> connected");
                            let since = this.life.connected(attempt);
                            this.queue.carried = false;
                            if !matches!(this.policy, QueuePolicy::ReplayAll) || this.first.is_some() {
                                arrive(this.queue, this.policy, this.dropped, this.first, this.life);
                            }
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
                    let again = matches!(next, State::Connecting { .. });
                    *this.state = next;
                    // With no delay (an immediate policy, a zero connect timeout), attempts that fail at once
                    // would follow one another inside this one poll forever: one per poll, the task woken
                    // for the next, so that the executor (and the other half) get their turn.
                    if again && std::mem::replace(&mut failed_here, true) {
                        cx.waker().wake_by_ref();
                        return pending_unless_met(intent, this.queue, false);
                    }
                }
                // Waiting before the next attempt.
                State::Backoff { sleep, .. } => {
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
                State::Connected { conn, .. } => {
                    let failure = match intent {
                        Intent::Read => read_connected!(conn, this.queue, this.life, cx),
                        Intent::Ready | Intent::Flush => write_connected!(conn, this, cx, intent, true),
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
                    lose(
                        failure,
                        this.state,
                        this.draining,
                        this.life,
                        this.queue,
                        this.connector,
                        side,
                    );
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
                        Intent::Read => read_connected!(conn, this.queue, this.life, cx),
                        Intent::Ready | Intent::Flush => write_connected!(conn, this, cx, intent, false),
                    };
                    debug!(%failure, "connection failed while closing");
                    this.life.disconnected(&failure, since, this.queue.carried);
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

/// A connection just came up: the queue policy runs over what is queued (what it drops is kept for
/// `take_dropped` and reported), then the connection's first messages go to the front.
#[cold]
#[inline(never)]
fn arrive<I>(
    queue: &mut SendQueue<I>,
    policy: &mut QueuePolicy<I>,
    dropped: &mut Vec<I>,
    first: &mut Option<Box<dyn FnMut(u64) -> Vec<I> + Send>>,
    life: &mut Lifecycle,
) {
    let now = life.settings.timer.now();
    let generation = life.generation;
    let gone = queue.apply(policy, now, generation > 1);
    if !gone.is_empty() {
        life.dropped(gone.len());
        dropped.extend(gone);
    }
    if let Some(first) = first.as_mut() {
        let messages = first(generation);
        if !messages.is_empty() {
            queue.push_front(messages, now);
        }
    }
}

/// The connection up in `state` failed: the lifecycle goes on to the next state. If it was a write that
/// failed, the connection is kept in `draining`, so that what it had already received is still read (a
/// write can fail on a connection whose peer's last messages and end are waiting to be read).
#[cold]
#[inline(never)]
pub(crate) fn lose<C: Connect, I>(
    failure: Failure,
    state: &mut State<C::Future, C::Connection>,
    draining: &mut Option<C::Connection>,
    life: &mut Lifecycle,
    queue: &mut SendQueue<I>,
    connector: &mut C,
    side: Side,
) {
    let write = matches!(failure, Failure::Write { .. });
    let next = life.lost(failure, state, queue, connector, side);
    if let State::Connected { conn, .. } = std::mem::replace(state, next) {
        if write {
            *draining = Some(conn);
        }
    }
}

/// The next item the draining connection has ready; it is dropped once it has none (pending, ended or
/// failed: its failure was reported already).
#[cold]
#[inline(never)]
pub(crate) fn drain<S, T, E>(draining: &mut Option<S>, cx: &mut Context<'_>) -> Option<T>
where
    S: Stream<Item = Result<T, E>> + Unpin,
{
    match draining.as_mut().map(|conn| Pin::new(conn).poll_next(cx)) {
        Some(Poll::Ready(Some(Ok(item)))) => Some(item),
        _ => {
            *draining = None;
            None
        }
    }
}

/// Whether a sink's `intent` is met in `state` with nothing to do: the loop's first check, which the sink's
/// fast paths make too. An idle stream dials first (lazily), an ended one reports its end.
#[inline(always)]
pub(crate) fn met_as_is<F, S, I>(intent: Intent, queue: &SendQueue<I>, state: &State<F, S>) -> bool {
    let settled = matches!(state, State::Idle | State::Failed { .. } | State::Ended { .. });
    !settled && met(intent, queue, matches!(state, State::Connected { .. }))
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
