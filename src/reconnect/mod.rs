//! [`ReconnectingStream`]: a `Stream + Sink` that keeps a connection alive.

mod state;
mod waker;

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::stream::FusedStream;
use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;

use self::state::{Core, State, StateProj};
use self::waker::{Side, WakerSlots};
use crate::classify::{Classify, DefaultClassifier};
use crate::error::{BoxError, Error};
use crate::event::{ConnectionState, Observer, Observers};
use crate::retry::{ExponentialBackoff, RetryPolicy};
use crate::time::{AsyncIoTimer, Timer};
use crate::Connect;

/// The default capacity of the send queue: 1024 messages.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// The default time a connection must stay up to count as stable: 5 s.
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(5);
/// The default per-attempt connect timeout: 30 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default bound on [`poll_close`](Sink::poll_close): 5 s.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

pin_project! {
    /// A `Stream + Sink` over a connection that is re-made whenever it fails.
    ///
    /// It wraps a connector ([`Connect`]: any `FnMut() -> impl Future<Output = Result<S, E>>` where
    /// `S: Stream<Item = Result<T, SE>> + Sink<I>`). Reading yields the connection's items; sending queues
    /// messages and writes them to the current connection. Failures, backoff and re-dialling happen inside,
    /// reported as [`Event`](crate::Event)s to [observers](Self::with_observer), never as items.
    ///
    /// The state machine is driven by whichever of `poll_next`, `poll_ready`, `poll_flush` and `poll_close` is
    /// polled; no task is spawned and no runtime is named, so it runs under any executor.
    ///
    /// # Contracts
    ///
    /// - **Lazy.** Nothing connects until the first poll of `poll_next`, `poll_ready` or `poll_flush`.
    /// - **Items.** A transient failure is never an item. When the retry policy gives up, or a failure is
    ///   classified fatal, one `Err` ([`Error::GaveUp`], [`Error::Fatal`]) is yielded, then `None` forever. After
    ///   the sink is closed the stream yields `None`.
    /// - **Nothing accepted is lost.** A message accepted by `start_send` is either written to a connection
    ///   whose flush completed, or still queued, or, once the stream has ended, handed back by
    ///   [`take_unsent`](Self::take_unsent) (the ending error says how many with [`Error::unsent`]). A message
    ///   whose write or flush failed is sent again on the next connection, before anything sent later.
    /// - **Bounded.** At most [`queue capacity`](Self::with_queue_capacity) messages are queued or awaiting a
    ///   flush; when full, `poll_ready` is `Pending` (backpressure) and keeps driving the connection.
    /// - **Ordering.** Sends keep their order across reconnects. Each connection has a generation, in
    ///   [`Event::Connected`](crate::Event::Connected) and [`state`](Self::state).
    /// - **Flap-aware backoff.** A connection that drops before it was up for
    ///   [`stable_after`](Self::with_stable_after) counts as a failed attempt, so the backoff keeps growing;
    ///   it resets only after a stable connection.
    /// - **Close.** `poll_close` flushes the queue to the current connection, closes it, and never reconnects.
    ///   If no connection is up, or it fails while closing, or the [close timeout](Self::with_close_timeout)
    ///   passes, it returns at once with [`Error::Closed`] saying how many messages were not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::{SinkExt, StreamExt};
    /// use stream_tungstenite::ReconnectingStream;
    ///
    /// # futures::executor::block_on(async {
    /// let connect = || async {
    ///     let (tx, rx) = futures::channel::mpsc::unbounded::<u32>();
    ///     Ok::<_, std::io::Error>(stream_tungstenite::join(rx.map(Ok::<_, std::io::Error>), tx))
    /// };
    /// let mut conn = ReconnectingStream::new(connect);
    /// conn.send(1).await?;
    /// assert_eq!(conn.next().await.transpose()?, Some(1));
    /// # Ok::<_, stream_tungstenite::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping a pending `next()` loses nothing: an item is taken from the connection only when it is
    /// returned. Dropping a pending `send()` loses at most the one message that future owned and had not yet
    /// handed to `start_send`; once accepted, a message is in the queue whatever happens to the future.
    pub struct ReconnectingStream<C, I>
    where
        C: Connect,
    {
        #[pin]
        state: State<C::Future, C::Connection>,
        connector: C,
        core: Core<I>,
    }
}

impl<C, I> ReconnectingStream<C, I>
where
    C: Connect,
{
    /// A stream that dials with `connector`, retrying with [`ExponentialBackoff::default`].
    ///
    /// Nothing is dialled until the stream or sink is first polled.
    pub fn new(connector: C) -> Self {
        let (wakers, combined) = WakerSlots::new_pair();
        Self {
            state: State::Idle,
            connector,
            core: Core {
                queue: VecDeque::new(),
                unflushed: VecDeque::new(),
                capacity: DEFAULT_QUEUE_CAPACITY,
                policy: Box::new(ExponentialBackoff::default()),
                classifier: Box::new(DefaultClassifier),
                observers: Observers::new(),
                timer: Arc::new(AsyncIoTimer),
                stable_after: DEFAULT_STABLE_AFTER,
                connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
                close_timeout: DEFAULT_CLOSE_TIMEOUT,
                failures: 0,
                attempts: 0,
                streak_start: None,
                generation: 0,
                connected_at: None,
                closing: false,
                close_deadline: None,
                terminal: None,
                terminal_yielded: false,
                wakers,
                combined,
            },
        }
    }

    /// Sets the retry policy, which gives the delay before each attempt (see [`retry`](crate::retry)).
    pub fn with_retry(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.core.policy = Box::new(policy);
        self
    }

    /// Sets the capacity of the send queue (default [`DEFAULT_QUEUE_CAPACITY`]; 0 is taken as 1).
    ///
    /// It bounds the messages queued plus those written but not yet flushed.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.core.capacity = capacity.max(1);
        self
    }

    /// Sets how long a connection must stay up to count as stable (default [`DEFAULT_STABLE_AFTER`]).
    ///
    /// Only the drop of a stable connection resets the backoff.
    pub fn with_stable_after(mut self, stable_after: Duration) -> Self {
        self.core.stable_after = stable_after;
        self
    }

    /// Sets the per-attempt timeout covering the whole connector future (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]); `None` waits forever.
    pub fn with_connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.core.connect_timeout = timeout.into();
        self
    }

    /// Sets the bound on `poll_close` (default [`DEFAULT_CLOSE_TIMEOUT`]).
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.core.close_timeout = timeout;
        self
    }

    /// Sets the failure classifier (default [`DefaultClassifier`]: the WebSocket failure classes for this
    /// crate's and tungstenite's errors, retry for everything else).
    pub fn with_classifier(mut self, classifier: impl Classify + 'static) -> Self {
        self.core.classifier = Box::new(classifier);
        self
    }

    /// Adds an observer that receives every [`Event`](crate::Event). Observers are called in the order added.
    pub fn with_observer(mut self, observer: impl Observer + 'static) -> Self {
        self.core.observers.push(Box::new(observer));
        self
    }

    /// Sets the clock for backoff, timeouts and stability (default [`AsyncIoTimer`]).
    pub fn with_timer(mut self, timer: impl Timer + 'static) -> Self {
        self.core.timer = Arc::new(timer);
        self
    }

    /// Where the stream is in its life.
    pub fn state(&self) -> ConnectionState {
        self.core.state_of(&self.state)
    }

    /// The generation of the current or last connection: 0 before the first, then one more per connection.
    pub fn generation(&self) -> u64 {
        self.core.generation
    }

    /// Accepted messages not yet flushed to a connection (queued, or written and awaiting a flush).
    pub fn queued(&self) -> usize {
        self.core.outstanding()
    }

    /// Takes back the messages that are queued and not yet written to a connection, in order.
    ///
    /// Once the stream has ended (closed, gave up or fatal) these are all the accepted messages that were not
    /// delivered. For an `Unpin` stream call it as `Pin::new(&mut stream).take_unsent()`.
    pub fn take_unsent(self: Pin<&mut Self>) -> Vec<I> {
        self.project().core.queue.drain(..).collect()
    }

    /// Ends the stream at once, without flushing or closing the connection gracefully: the connection is
    /// dropped, nothing reconnects, and every message not known to be flushed (queued, or written but not
    /// flushed) can be taken back with [`take_unsent`](Self::take_unsent). A no-op once the stream has ended.
    pub fn close_now(self: Pin<&mut Self>) {
        let mut this = self.project();
        if this.core.terminal.is_none() {
            this.core.closing = true;
            let next = this.core.close_now();
            this.state.set(next);
            this.core.wakers.wake(waker::Side::Read);
            this.core.wakers.wake(waker::Side::Write);
        }
    }

    /// The connector.
    pub fn connector(&self) -> &C {
        &self.connector
    }
}

impl<C, I, T, SE> Stream for ReconnectingStream<C, I>
where
    C: Connect,
    C::Connection: Stream<Item = Result<T, SE>> + Sink<I>,
    SE: Into<BoxError>,
    <C::Connection as Sink<I>>::Error: Into<BoxError>,
    I: Clone,
{
    type Item = Result<T, Error>;

    #[inline]
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Fast path: connected with nothing to write, the common case of a busy reader.
        let this = self.as_mut().project();
        if this.core.queue.is_empty() && this.core.unflushed.is_empty() {
            if let StateProj::Connected { conn } = this.state.project() {
                match conn.poll_next(cx) {
                    Poll::Ready(Some(Ok(item))) => return Poll::Ready(Some(Ok(item))),
                    Poll::Pending => {
                        self.core.wakers.register(Side::Read, cx.waker());
                        return Poll::Pending;
                    }
                    Poll::Ready(Some(Err(error))) => {
                        let failure = self.core.read_failure(Some(error.into()));
                        self.as_mut().fail_connection(failure, Side::Read);
                    }
                    Poll::Ready(None) => {
                        let failure = self.core.read_failure(None);
                        self.as_mut().fail_connection(failure, Side::Read);
                    }
                }
            }
        }
        self.poll_read(cx)
    }
}

impl<C, I, T, SE> FusedStream for ReconnectingStream<C, I>
where
    C: Connect,
    C::Connection: Stream<Item = Result<T, SE>> + Sink<I>,
    SE: Into<BoxError>,
    <C::Connection as Sink<I>>::Error: Into<BoxError>,
    I: Clone,
{
    fn is_terminated(&self) -> bool {
        self.state().is_ended() && self.core.terminal_yielded
    }
}

impl<C, I> Sink<I> for ReconnectingStream<C, I>
where
    C: Connect,
    C::Connection: Sink<I>,
    <C::Connection as Sink<I>>::Error: Into<BoxError>,
    I: Clone,
{
    type Error = Error;

    /// `Ready(Ok)` while the queue has room; otherwise drives the connection and flushes until it has.
    ///
    /// # Errors
    ///
    /// Once the stream has ended: [`Error::Closed`], [`Error::GaveUp`] or [`Error::Fatal`].
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.state().is_ended() {
            return Poll::Ready(Err(self.core.sink_error()));
        }
        if self.core.has_room() {
            if let ConnectionState::Idle = self.state() {
                // Lazy start: begin dialling now.
                let _ = self.as_mut().poll_connection(cx, Side::Write);
            }
            return Poll::Ready(Ok(()));
        }
        match self.as_mut().poll_flush_queue(cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending if self.core.has_room() => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Queues `item`. It is never dropped: if the stream has ended it is kept for
    /// [`take_unsent`](Self::take_unsent).
    ///
    /// # Errors
    ///
    /// None: accepting a message cannot fail. (Call `poll_ready` first; without it the queue may exceed its
    /// capacity by the messages sent without it.)
    fn start_send(self: Pin<&mut Self>, item: I) -> Result<(), Error> {
        self.project().core.queue.push_back(item);
        Ok(())
    }

    /// Writes and flushes every queued message, reconnecting as needed; `Ready(Ok)` when all are flushed.
    ///
    /// With nothing queued and no connection up it returns `Ready(Ok)` at once.
    ///
    /// # Errors
    ///
    /// Once the stream has ended: [`Error::Closed`], [`Error::GaveUp`] or [`Error::Fatal`].
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.core.outstanding() == 0 && !self.state().is_connected() {
            if self.state().is_ended() {
                return Poll::Ready(Err(self.core.sink_error()));
            }
            if let ConnectionState::Idle = self.state() {
                let _ = self.as_mut().poll_connection(cx, Side::Write);
            }
            return Poll::Ready(Ok(()));
        }
        self.poll_flush_queue(cx)
    }

    /// Flushes the queue to the current connection, closes it and ends the stream; never reconnects.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] with the number of messages not sent, if any were left (no connection was up, it
    /// failed while closing, or the close timeout passed). They can be taken back with
    /// [`take_unsent`](Self::take_unsent).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_shutdown(cx)
    }
}

impl<C, I> fmt::Debug for ReconnectingStream<C, I>
where
    C: Connect,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectingStream")
            .field("state", &self.state())
            .field("generation", &self.core.generation)
            .field("queued", &self.core.outstanding())
            .field("capacity", &self.core.capacity)
            .field("failures", &self.core.failures)
            .field("observers", &self.core.observers)
            .finish_non_exhaustive()
    }
}
