//! `ReconnectingStream`'s state machine under arbitrary scripts, with `Poll::Pending` injected anywhere.
//!
//! A closure connector plays one scripted attempt per call: it fails, hangs, or yields a connection after a
//! few `Pending` polls. Every poll of a connection's `poll_next`, `poll_ready`, `start_send`, `poll_flush` and
//! `poll_close` answers what the input says next (`Pending`, `Ready(Ok)`, an item, an error, the end). The
//! input also picks the queue capacity, the retry policy (seeded: deterministic), the timeouts, the failure
//! classes (retry, retry-after, fatal, handshake), and a sequence of operations: `poll_next`,
//! `poll_ready` + `start_send` of the next number, `start_send` alone, `poll_flush`, `poll_close`, moves of a
//! `ManualClock`, `take_unsent` and `close_now`. It ends with `close_now` and `take_unsent`.
//!
//! Invariants (the contracts of `ReconnectingStream`'s docs; a panic is a finding):
//! - nothing panics;
//! - **nothing accepted is lost, order kept**: a model of the send queue follows every accepted message. Each
//!   `start_send` a connection sees must be the model's next unwritten message (so writes keep their order, a
//!   connection starts again from the oldest message not flushed, and nothing flushed is written again); a
//!   completed flush delivers what the connection had accepted; `take_unsent` hands back the unwritten tail
//!   (or everything, once the connection is gone); at the end, after `close_now`, `take_unsent` returns the
//!   whole rest. Every accepted message is then delivered or handed back, exactly once;
//! - `queued()` is the model's count, never above the capacity; `start_send` refuses (`Error::Full`) exactly
//!   when there is no room, and never after `poll_ready` returned `Ready(Ok)`;
//! - **items**: the stream yields exactly the items the connections returned, in order; a transient failure
//!   is never an item; at most one `Err` (`GaveUp` or `Fatal`, after a `GaveUp` event), then `None` forever;
//!   never an item after `None`;
//! - the sink's errors come only once the stream has ended, and are never `Full`; `poll_flush` is `Ready(Ok)`
//!   only with nothing queued; `poll_close` ends the stream, with `Error::Closed` counting what is left;
//! - `Pending` only when an inner poll (a connection, an attempt, a timer) returned `Pending`;
//! - **lazy**: nothing is dialled before the first `poll_next`, `poll_ready` or `poll_flush`;
//! - the sink protocol towards connections: `start_send` only after `poll_ready` returned `Ready(Ok)`, only
//!   the newest connection is written, never after its sink failed or closed; a connection's stream is never
//!   polled after it ended; an attempt is never polled after it finished;
//! - the generation counts the connections made (and the `Connected` events).

#![no_main]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use futures::stream::FusedStream;
use futures::task::noop_waker_ref;
use futures::{Sink, Stream};
use libfuzzer_sys::fuzz_target;
use stream_tungstenite::retry::{ExponentialBackoff, FixedDelay, Jitter, Limited, RetryPolicy};
use stream_tungstenite::time::{ManualClock, Sleep, Timer};
use stream_tungstenite::ReconnectingStream;
use stream_tungstenite::{Classification, Connect, ConnectionState, Diagnose, Diagnosis, Error, Event};

/// At most this many scripted attempts (then every attempt hangs) and operations.
const MAX_PLANS: usize = 24;
const MAX_OPS: usize = 400;

// ---------------------------------------------------------------------------------------------------------
// The input.

#[derive(Debug, Arbitrary)]
struct Input {
    config: Config,
    plans: Vec<Plan>,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
struct Config {
    capacity: u8,
    policy: PolicyChoice,
    max_attempts: Option<u8>,
    connect_timeout_ms: Option<u16>,
    close_timeout_ms: u16,
    stable_after_ms: u16,
}

#[derive(Debug, Arbitrary)]
enum PolicyChoice {
    Fixed {
        delay_ms: u16,
        jitter: JitterChoice,
        seed: u64,
    },
    Exponential {
        initial_ms: u16,
        max_ms: u16,
        factor: u8,
        jitter: JitterChoice,
        seed: u64,
    },
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum JitterChoice {
    None,
    Full,
    Equal,
    Decorrelated,
}

/// One attempt.
#[derive(Debug, Arbitrary)]
struct Plan {
    /// Polls of the attempt that return `Pending` before it finishes (at most 3).
    connect_pending: u8,
    outcome: Outcome,
    reads: Vec<ReadAnswer>,
    /// What every read answers once `reads` have run out.
    read_then: ReadThen,
    readies: Vec<SinkAnswer>,
    sends: Vec<SendAnswer>,
    flushes: Vec<SinkAnswer>,
    closes: Vec<SinkAnswer>,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Outcome {
    Fail(u8),
    Hang,
    Open,
    Open2,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum ReadAnswer {
    Pending,
    Item,
    Item2,
    Error(u8),
    End,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum ReadThen {
    Pending,
    End,
    Error(u8),
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum SinkAnswer {
    Pending,
    Ok,
    Ok2,
    Error(u8),
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum SendAnswer {
    Ok,
    Error(u8),
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Op {
    /// `poll_next`.
    Next,
    /// Up to this many rounds of `poll_ready` then, if ready, `start_send` of the next number.
    Send(u8),
    /// `start_send` without `poll_ready`.
    SendBlind,
    /// `poll_flush`.
    Flush,
    /// `poll_close`.
    Close,
    /// Move the clock by this many milliseconds.
    Advance(u16),
    /// Move the clock to the earliest pending sleep.
    AdvanceToDeadline,
    /// `take_unsent`.
    TakeUnsent,
    /// `close_now`.
    CloseNow,
}

// ---------------------------------------------------------------------------------------------------------
// Failures, classified as the input says.

/// A scripted failure; its byte picks the class its `Diagnose` reports.
#[derive(Debug, Clone, Copy)]
struct Scripted(u8);

impl fmt::Display for Scripted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scripted failure {}", self.0)
    }
}

impl std::error::Error for Scripted {}

impl Diagnose for Scripted {
    fn diagnose(&self) -> Diagnosis {
        match self.0 % 16 {
            0 => Diagnosis::classified(Classification::Fatal),
            1 => Diagnosis::unknown().in_handshake(),
            2 | 3 => Diagnosis::classified(Classification::RetryAfter(Duration::from_millis(
                u64::from(self.0 >> 4) * 10,
            ))),
            4 | 5 => Diagnosis::classified(Classification::Retry),
            _ => Diagnosis::unknown(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The world the connector and its connections share with the harness, and the model of the send queue.

#[derive(Debug, Default)]
struct ConnLog {
    /// Its stream returned `None`.
    ended: bool,
    /// Its `poll_close` returned `Ready(Ok)`.
    closed: bool,
    /// One of its sink methods returned an error.
    broken: bool,
    /// `poll_ready` returned `Ready(Ok)` and no `start_send` followed yet.
    ready: bool,
    /// The stream handed back what had been written to it: it is no longer written to.
    abandoned: bool,
}

/// The send queue as the contract describes it.
#[derive(Debug, Default)]
struct Model {
    /// Accepted, not known to be flushed: the oldest first.
    queue: VecDeque<u32>,
    /// The first `written` of `queue` were written to connection `conn`, whose flush has not completed.
    written: usize,
    conn: Option<usize>,
    accepted: Vec<u32>,
    delivered: Vec<u32>,
    handed_back: Vec<u32>,
}

impl Model {
    /// `taken` was handed back by `take_unsent`: the unwritten tail, or everything once the connection written
    /// to is gone (the stream rewinds then).
    fn take(&mut self, taken: &[u32], conns: &mut [ConnLog]) {
        let tail: Vec<u32> = self.queue.iter().skip(self.written).copied().collect();
        if taken == tail {
            self.queue.truncate(self.written);
        } else {
            let all: Vec<u32> = self.queue.iter().copied().collect();
            assert_eq!(
                taken, all,
                "take_unsent handed back {taken:?}; expected the unwritten tail {tail:?} or all {all:?}"
            );
            self.queue.clear();
            if let Some(conn) = self.conn.take() {
                conns[conn].abandoned = true;
            }
            self.written = 0;
        }
        self.handed_back.extend_from_slice(taken);
    }
}

struct World {
    plans: VecDeque<Plan>,
    attempts: usize,
    conns: Vec<ConnLog>,
    /// Incremented by every inner poll that returns `Pending` (connections, attempts, sleeps).
    pending: Arc<AtomicU64>,
    /// Every item a connection returned, in order.
    items: Vec<u64>,
    next_item: u64,
    model: Model,
}

type Shared = Rc<RefCell<World>>;

impl World {
    fn pending(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// A sink method of connection `index` is called.
    fn sink_call(&mut self, index: usize, what: &str) {
        let newest = self.conns.len() - 1;
        assert_eq!(
            index, newest,
            "{what} on connection {index} while {newest} is the newest"
        );
        let log = &self.conns[index];
        assert!(!log.broken, "{what} on connection {index} after its sink failed");
        assert!(!log.closed, "{what} on connection {index} after it closed");
        assert!(
            !log.abandoned,
            "{what} on connection {index} after its messages were handed back"
        );
        if self.model.conn != Some(index) {
            // A new connection: the stream starts again from the oldest message not flushed.
            self.model.conn = Some(index);
            self.model.written = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The scripted attempt and connection.

struct Attempt {
    world: Shared,
    pending: u8,
    outcome: Option<Result<Plan, Scripted>>,
    hang: bool,
}

impl Future for Attempt {
    type Output = Result<Conn, Scripted>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.hang || self.pending > 0 {
            self.pending = self.pending.saturating_sub(1);
            self.world.borrow().pending();
            return Poll::Pending;
        }
        let outcome = self.outcome.take().expect("an attempt polled after it finished");
        Poll::Ready(outcome.map(|plan| {
            let mut world = self.world.borrow_mut();
            let index = world.conns.len();
            world.conns.push(ConnLog::default());
            Conn {
                world: self.world.clone(),
                index,
                reads: plan.reads.into(),
                read_then: plan.read_then,
                readies: plan.readies.into(),
                sends: plan.sends.into(),
                flushes: plan.flushes.into(),
                closes: plan.closes.into(),
            }
        }))
    }
}

struct Conn {
    world: Shared,
    index: usize,
    reads: VecDeque<ReadAnswer>,
    read_then: ReadThen,
    readies: VecDeque<SinkAnswer>,
    sends: VecDeque<SendAnswer>,
    flushes: VecDeque<SinkAnswer>,
    closes: VecDeque<SinkAnswer>,
}

impl Conn {
    /// The next answer of a sink method: `Pending` counted, an error marks the sink broken.
    fn answer(&mut self, answer: SinkAnswer) -> Poll<Result<(), Scripted>> {
        let mut world = self.world.borrow_mut();
        match answer {
            SinkAnswer::Pending => {
                world.pending();
                Poll::Pending
            }
            SinkAnswer::Ok | SinkAnswer::Ok2 => Poll::Ready(Ok(())),
            SinkAnswer::Error(class) => {
                world.conns[self.index].broken = true;
                Poll::Ready(Err(Scripted(class)))
            }
        }
    }
}

impl Stream for Conn {
    type Item = Result<u64, Scripted>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let index = self.index;
        let answer = self.reads.pop_front().unwrap_or(match self.read_then {
            ReadThen::Pending => ReadAnswer::Pending,
            ReadThen::End => ReadAnswer::End,
            ReadThen::Error(class) => ReadAnswer::Error(class),
        });
        let mut world = self.world.borrow_mut();
        let log = &world.conns[index];
        assert!(!log.ended, "connection {index}'s stream polled after it ended");
        assert!(!log.closed, "connection {index}'s stream polled after it closed");
        match answer {
            ReadAnswer::Pending => {
                world.pending();
                Poll::Pending
            }
            ReadAnswer::Item | ReadAnswer::Item2 => {
                let item = world.next_item;
                world.next_item += 1;
                world.items.push(item);
                Poll::Ready(Some(Ok(item)))
            }
            ReadAnswer::Error(class) => Poll::Ready(Some(Err(Scripted(class)))),
            ReadAnswer::End => {
                world.conns[index].ended = true;
                Poll::Ready(None)
            }
        }
    }
}

impl Sink<u32> for Conn {
    type Error = Scripted;

    fn poll_ready(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Scripted>> {
        self.world.borrow_mut().sink_call(self.index, "poll_ready");
        let answer = self.readies.pop_front().unwrap_or(SinkAnswer::Ok);
        let poll = self.answer(answer);
        if let Poll::Ready(Ok(())) = poll {
            self.world.borrow_mut().conns[self.index].ready = true;
        }
        poll
    }

    fn start_send(mut self: Pin<&mut Self>, message: u32) -> Result<(), Scripted> {
        let index = self.index;
        let answer = self.sends.pop_front().unwrap_or(SendAnswer::Ok);
        let mut world = self.world.borrow_mut();
        world.sink_call(index, "start_send");
        let log = &mut world.conns[index];
        assert!(
            log.ready,
            "start_send on connection {index} without poll_ready returning Ready(Ok)"
        );
        log.ready = false;
        if let SendAnswer::Error(class) = answer {
            log.broken = true;
            return Err(Scripted(class));
        }
        let model = &mut world.model;
        assert_eq!(
            model.queue.get(model.written),
            Some(&message),
            "connection {index} was written {message}; the queue (oldest first, {} written) is {:?}",
            model.written,
            model.queue
        );
        model.written += 1;
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Scripted>> {
        self.world.borrow_mut().sink_call(self.index, "poll_flush");
        let answer = self.flushes.pop_front().unwrap_or(SinkAnswer::Ok);
        let poll = self.answer(answer);
        if let Poll::Ready(Ok(())) = poll {
            let model = &mut self.world.borrow_mut().model;
            let flushed: Vec<u32> = model.queue.drain(..model.written).collect();
            model.delivered.extend(flushed);
            model.written = 0;
        }
        poll
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Scripted>> {
        self.world.borrow_mut().sink_call(self.index, "poll_close");
        let answer = self.closes.pop_front().unwrap_or(SinkAnswer::Ok);
        let poll = self.answer(answer);
        if let Poll::Ready(Ok(())) = poll {
            self.world.borrow_mut().conns[self.index].closed = true;
        }
        poll
    }
}

// ---------------------------------------------------------------------------------------------------------
// The clock: a `ManualClock` whose sleeps count their `Pending` polls.

#[derive(Clone)]
struct CountingClock {
    clock: ManualClock,
    pending: Arc<AtomicU64>,
}

impl Timer for CountingClock {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(CountingSleep {
            sleep: self.clock.sleep_until(deadline),
            pending: self.pending.clone(),
        })
    }
}

struct CountingSleep {
    sleep: Sleep,
    pending: Arc<AtomicU64>,
}

impl Future for CountingSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let poll = self.sleep.as_mut().poll(cx);
        if poll.is_pending() {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        poll
    }
}

// ---------------------------------------------------------------------------------------------------------
// The harness.

#[derive(Debug, Default)]
struct Events {
    connected: u64,
    gave_up: bool,
    closed: bool,
}

struct Harness<C: Connect> {
    stream: ReconnectingStream<C, u32>,
    world: Shared,
    pending: Arc<AtomicU64>,
    events: Arc<Mutex<Events>>,
    clock: ManualClock,
    capacity: usize,
    next_message: u32,
    /// Items the stream yielded.
    yielded: Vec<u64>,
    yielded_error: bool,
    yielded_none: bool,
    /// `poll_next`, `poll_ready` or `poll_flush` was called (the stream may dial).
    started: bool,
}

impl<C> Harness<C>
where
    C: Connect<Connection = Conn, Error = Scripted>,
{
    fn pin(&mut self) -> Pin<&mut ReconnectingStream<C, u32>> {
        Pin::new(&mut self.stream)
    }

    fn state(&self) -> ConnectionState {
        self.stream.state()
    }

    /// Polls the stream with `poll`; a `Pending` must come from an inner `Pending` (or wake the task).
    fn poll<T>(
        &mut self,
        what: &str,
        poll: impl FnOnce(Pin<&mut ReconnectingStream<C, u32>>, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let before = self.pending.load(Ordering::Relaxed);
        let woken = Arc::new(Woken(AtomicU64::new(0)));
        let waker = futures::task::waker(Arc::clone(&woken));
        let result = poll(self.pin(), &mut Context::from_waker(&waker));
        if result.is_pending() {
            // A `Pending` that wakes its own task at once (a yield, between attempts that fail at once) is one
            // too.
            assert!(
                self.pending.load(Ordering::Relaxed) > before || woken.0.load(Ordering::Relaxed) > 0,
                "{what} returned Pending, but no connection, attempt or timer did, nor was the task woken (state {:?})",
                self.state()
            );
        }
        result
    }

    fn next(&mut self) -> Poll<Option<Result<u64, Error>>> {
        self.started = true;
        let poll = self.poll("poll_next", |stream, cx| stream.poll_next(cx));
        match &poll {
            Poll::Ready(Some(Ok(item))) => {
                assert!(!self.yielded_none, "item {item} after None");
                assert!(!self.yielded_error, "item {item} after the ending error");
                self.yielded.push(*item);
            }
            Poll::Ready(Some(Err(error))) => {
                assert!(!self.yielded_none, "error {error} after None");
                assert!(!self.yielded_error, "a second ending error: {error}");
                assert!(
                    error.is_gave_up() || error.is_fatal(),
                    "the stream yielded {error:?}: only a give-up or a fatal failure is an item"
                );
                assert!(
                    self.events.lock().unwrap().gave_up,
                    "{error} yielded without a GaveUp event"
                );
                assert!(self.state().is_ended(), "{error} yielded in state {:?}", self.state());
                self.yielded_error = true;
            }
            Poll::Ready(None) => {
                assert!(
                    self.yielded_error || self.events.lock().unwrap().closed,
                    "None without an ending error or a close (state {:?})",
                    self.state()
                );
                assert!(self.stream.is_terminated(), "None, but the stream is not terminated");
                self.yielded_none = true;
            }
            Poll::Pending => {}
        }
        poll
    }

    /// A message the stream accepted.
    fn accepted(&mut self, message: u32) {
        let mut world = self.world.borrow_mut();
        world.model.queue.push_back(message);
        world.model.accepted.push(message);
    }

    fn send(&mut self, rounds: u8) {
        for _ in 0..rounds % 4 + 1 {
            self.started = true;
            match self.poll("poll_ready", |stream, cx| stream.poll_ready(cx)) {
                Poll::Ready(Ok(())) => {
                    let message = self.next_message;
                    self.next_message += 1;
                    if let Err(error) = self.pin().start_send(message) {
                        panic!("start_send refused {message} after poll_ready returned Ready(Ok): {error}");
                    }
                    self.accepted(message);
                }
                Poll::Ready(Err(error)) => {
                    self.sink_error("poll_ready", &error);
                    return;
                }
                Poll::Pending => {
                    assert!(
                        self.stream.queued() >= self.capacity,
                        "poll_ready Pending with room in the queue"
                    );
                    return;
                }
            }
        }
    }

    fn send_blind(&mut self) {
        let message = self.next_message;
        self.next_message += 1;
        let room = self.stream.queued() < self.capacity;
        match self.pin().start_send(message) {
            Ok(()) => {
                assert!(room, "start_send accepted {message} into a full queue");
                self.accepted(message);
            }
            Err(Error::Full { capacity }) => {
                assert!(!room, "start_send refused {message} with room in the queue");
                assert_eq!(capacity, self.capacity);
            }
            Err(error) => panic!("start_send failed with {error:?}"),
        }
    }

    fn sink_error(&self, what: &str, error: &Error) {
        assert!(!matches!(error, Error::Full { .. }), "{what}: {error:?}");
        assert!(
            self.state().is_ended(),
            "{what} failed with {error} in state {:?}",
            self.state()
        );
    }

    fn flush(&mut self) {
        self.started = true;
        match self.poll("poll_flush", |stream, cx| stream.poll_flush(cx)) {
            Poll::Ready(Ok(())) => assert_eq!(self.stream.queued(), 0, "poll_flush Ready(Ok) with messages queued"),
            Poll::Ready(Err(error)) => self.sink_error("poll_flush", &error),
            Poll::Pending => {}
        }
    }

    fn close(&mut self) {
        match self.poll("poll_close", |stream, cx| stream.poll_close(cx)) {
            Poll::Ready(Ok(())) => {
                assert!(
                    self.state().is_ended(),
                    "poll_close Ready(Ok) in state {:?}",
                    self.state()
                );
                assert_eq!(self.stream.queued(), 0, "poll_close Ready(Ok) with messages queued");
            }
            Poll::Ready(Err(error)) => {
                assert!(self.state().is_ended(), "poll_close failed in state {:?}", self.state());
                assert!(error.is_closed(), "poll_close failed with {error:?}");
                assert_eq!(error.unsent(), self.stream.queued(), "{error}: wrong count");
                assert!(error.unsent() > 0, "poll_close failed with nothing left: {error}");
            }
            Poll::Pending => {}
        }
    }

    fn take_unsent(&mut self) {
        let taken = self.pin().take_unsent();
        let world = &mut *self.world.borrow_mut();
        world.model.take(&taken, &mut world.conns);
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Next => {
                let _ = self.next();
            }
            Op::Send(rounds) => self.send(rounds),
            Op::SendBlind => self.send_blind(),
            Op::Flush => self.flush(),
            Op::Close => self.close(),
            Op::Advance(ms) => self.clock.advance(Duration::from_millis(u64::from(ms))),
            Op::AdvanceToDeadline => {
                if let Some(wait) = self.clock.next_deadline() {
                    self.clock.advance(wait);
                }
            }
            Op::TakeUnsent => self.take_unsent(),
            Op::CloseNow => {
                self.pin().close_now();
                assert!(self.state().is_ended(), "close_now left state {:?}", self.state());
            }
        }
        self.check();
    }

    /// What holds between any two operations.
    fn check(&self) {
        let world = self.world.borrow();
        let queued = self.stream.queued();
        assert_eq!(
            queued,
            world.model.queue.len(),
            "queued() is not the model's {:?}",
            world.model.queue
        );
        assert!(
            queued <= self.capacity,
            "{queued} queued, over the capacity {}",
            self.capacity
        );
        assert_eq!(
            self.yielded, world.items,
            "the stream did not yield exactly the connections' items"
        );
        if !self.started {
            assert_eq!(
                world.attempts, 0,
                "dialled before the first poll of the stream or the sink"
            );
        }
        assert_eq!(
            self.stream.generation(),
            world.conns.len() as u64,
            "the generation is not the connection count"
        );
        assert_eq!(
            self.events.lock().unwrap().connected,
            self.stream.generation(),
            "Connected events"
        );
    }

    /// The end: `close_now`, `take_unsent`, and what the stream yields after.
    fn finish(mut self) {
        self.pin().close_now();
        assert!(self.state().is_ended());
        let taken = self.pin().take_unsent();
        {
            let world = &mut *self.world.borrow_mut();
            let all: Vec<u32> = world.model.queue.iter().copied().collect();
            assert_eq!(
                taken, all,
                "after close_now, take_unsent must hand back every message not flushed"
            );
            world.model.take(&taken, &mut world.conns);
        }
        assert_eq!(self.stream.queued(), 0);
        for _ in 0..2 {
            if self.yielded_none {
                break;
            }
            assert!(self.next().is_ready(), "poll_next Pending after close_now");
        }
        assert!(self.yielded_none, "no None after close_now");
        assert!(self.next().is_ready());
        self.check();

        // Every accepted message was delivered or handed back, exactly once, and delivered in order.
        let world = self.world.borrow();
        let model = &world.model;
        assert!(model.queue.is_empty());
        assert!(
            model.delivered.windows(2).all(|w| w[0] < w[1]),
            "delivered out of order or twice: {:?}",
            model.delivered
        );
        let mut outcome: Vec<u32> = model.delivered.iter().chain(&model.handed_back).copied().collect();
        outcome.sort_unstable();
        assert_eq!(outcome, model.accepted, "accepted messages lost or duplicated");
    }
}

fn jitter(choice: JitterChoice) -> Jitter {
    match choice {
        JitterChoice::None => Jitter::None,
        JitterChoice::Full => Jitter::Full,
        JitterChoice::Equal => Jitter::Equal,
        JitterChoice::Decorrelated => Jitter::Decorrelated,
    }
}

fn policy(config: &Config) -> Box<dyn RetryPolicy> {
    let ms = |ms: u16| Duration::from_millis(u64::from(ms));
    let policy: Box<dyn RetryPolicy> = match config.policy {
        PolicyChoice::Fixed {
            delay_ms,
            jitter: j,
            seed,
        } => Box::new(FixedDelay::new(ms(delay_ms)).with_jitter(jitter(j)).with_seed(seed)),
        PolicyChoice::Exponential {
            initial_ms,
            max_ms,
            factor,
            jitter: j,
            seed,
        } => Box::new(
            ExponentialBackoff::new(ms(initial_ms), ms(max_ms))
                .with_factor(1.0 + f64::from(factor) / 64.0)
                .with_jitter(jitter(j))
                .with_seed(seed),
        ),
    };
    match config.max_attempts {
        Some(max) => Box::new(Limited::new(policy).with_max_attempts(u32::from(max % 8))),
        None => policy,
    }
}

fuzz_target!(|input: Input| {
    let Input {
        config,
        mut plans,
        mut ops,
    } = input;
    plans.truncate(MAX_PLANS);
    ops.truncate(MAX_OPS);
    let capacity = usize::from(config.capacity % 8).max(1);
    let pending = Arc::new(AtomicU64::new(0));
    let world: Shared = Rc::new(RefCell::new(World {
        plans: plans.into(),
        attempts: 0,
        conns: Vec::new(),
        pending: pending.clone(),
        items: Vec::new(),
        next_item: 0,
        model: Model::default(),
    }));

    let connector = {
        let world = world.clone();
        move || {
            let plan = {
                let mut shared = world.borrow_mut();
                shared.attempts += 1;
                shared.plans.pop_front()
            };
            // Once the script has run out, every attempt hangs.
            let Some(plan) = plan else {
                return Attempt {
                    world: world.clone(),
                    pending: 0,
                    outcome: None,
                    hang: true,
                };
            };
            let (outcome, hang) = match plan.outcome {
                Outcome::Fail(class) => (Some(Err(Scripted(class))), false),
                Outcome::Hang => (None, true),
                Outcome::Open | Outcome::Open2 => (None, false),
            };
            let pending = plan.connect_pending % 4;
            let outcome = if outcome.is_none() && !hang {
                Some(Ok(plan))
            } else {
                outcome
            };
            Attempt {
                world: world.clone(),
                pending,
                outcome,
                hang,
            }
        }
    };

    let clock = ManualClock::new();
    let events = Arc::new(Mutex::new(Events::default()));
    let ms = |ms: u16| Duration::from_millis(u64::from(ms));
    let stream = ReconnectingStream::new(connector)
        .with_timer(CountingClock {
            clock: clock.clone(),
            pending: pending.clone(),
        })
        .with_retry(policy(&config))
        .with_queue_capacity(capacity)
        .with_connect_timeout(config.connect_timeout_ms.map(ms))
        .with_close_timeout(ms(config.close_timeout_ms))
        .with_stable_after(ms(config.stable_after_ms))
        .with_observer({
            let events = events.clone();
            move |event: &Event| {
                let mut events = events.lock().unwrap();
                match event {
                    Event::Connected { .. } => events.connected += 1,
                    Event::GaveUp { .. } => events.gave_up = true,
                    Event::Closed { .. } => events.closed = true,
                    _ => {}
                }
            }
        });

    let mut harness = Harness {
        stream,
        world,
        pending,
        events,
        clock,
        capacity,
        next_message: 0,
        yielded: Vec::new(),
        yielded_error: false,
        yielded_none: false,
        started: false,
    };
    harness.check();
    for op in ops {
        harness.apply(op);
    }
    harness.finish();
});

/// Counts the wakes of the task a poll was given.
struct Woken(AtomicU64);

impl futures::task::ArcWake for Woken {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, Ordering::Relaxed);
    }
}
