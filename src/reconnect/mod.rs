//! [`ReconnectingStream`]: a `Stream + Sink` that keeps a connection alive.
//!
//! The heart of the core. It knows connections only as `Stream + Sink` made by a [`Connect`]or and failures
//! only through what their errors [diagnose](crate::Diagnose); the WebSocket transport, handshakes and hooks
//! all sit below it, in the connector.

mod lifecycle;
pub(crate) mod machine;
mod queue;
mod state;
pub(crate) mod waker;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::stream::FusedStream;
use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;

use self::lifecycle::{Lifecycle, Settings};
use self::machine::{drain, lose, met_as_is, read_connected, Intent};
use self::queue::SendQueue;
pub use self::queue::{KeepFn, QueuePolicy, Weight};
use self::state::State;
use self::waker::Side;
use crate::classify::{Classify, DefaultClassifier};
use crate::connect::Connect;
use crate::diagnose::Diagnose;
use crate::error::{BoxError, Error};
use crate::event::{ConnectionState, Observer, Observers};
use crate::retry::{ExponentialBackoff, RetryPolicy};
use crate::time::{AsyncIoTimer, Timer};

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
    /// `S: Stream<Item = Result<T, SE>> + Sink<I> + Unpin`). Reading yields the connection's items; sending
    /// queues messages and writes them to the current connection. Failures, backoff and re-dialling happen
    /// inside, reported as [`Event`](crate::Event)s to [observers](Self::with_observer), never as items.
    ///
    /// The state machine is driven by whichever of `poll_next`, `poll_ready`, `poll_flush` and `poll_close` is
    /// polled; no task is spawned and no runtime is named, so it runs under any executor. It is `Unpin`. The
    /// connection must be `Unpin` too (the stream moves it from state to state); box one that is not
    /// (`Box::pin(conn)`).
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
    ///   whose write or flush failed is sent again on the next connection, before anything sent later. A
    ///   connection whose write failed is still read for what it had already received: those items come
    ///   before the next connection's (after its `Disconnected` event), and nothing that arrived is dropped.
    /// - **Bounded.** At most [`queue capacity`](Self::with_queue_capacity) messages are queued or awaiting a
    ///   flush; when full, `poll_ready` is `Pending` (backpressure) and keeps driving the connection.
    /// - **Ordering.** Sends keep their order across reconnects. Each connection has a generation, in
    ///   [`Event::Connected`](crate::Event::Connected) and [`state`](Self::state).
    /// - **Flap-aware backoff.** A connection that drops before it was up for
    ///   [`stable_after`](Self::with_stable_after), having carried no traffic both ways, counts as a failed
    ///   attempt, so the backoff keeps growing (a server that accepts and drops is not hammered). The backoff
    ///   resets after a connection that was stable, or productive: it yielded at least one item and a flush of
    ///   at least one message completed on it (a server that works and drops often is not punished for it).
    /// - **Failure classes.** Each failure is classified by the [classifier](Self::with_classifier); the default
    ///   follows what the failure's error [diagnoses](crate::Diagnose) of itself (for WebSocket errors: an HTTP
    ///   401 is fatal, a 503 with `Retry-After` waits that long, a Close with 1008 is fatal, ...).
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
        state: State<C::Future, C::Connection>,
        connector: C,
        queue: SendQueue<I>,
        life: Lifecycle,
        // A connection whose write failed: read for what it had already received, then dropped.
        draining: Option<C::Connection>,
        // What happens to the queue when a connection comes up, and what it dropped (not taken back yet).
        policy: QueuePolicy<I>,
        dropped: Vec<I>,
        // The messages each new connection sends first, before the queue.
        first: Option<Box<dyn FnMut(u64) -> Vec<I> + Send>>,
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
        Self {
            state: State::Idle,
            draining: None,
            policy: QueuePolicy::ReplayAll,
            dropped: Vec::new(),
            first: None,
            connector,
            queue: SendQueue::new(DEFAULT_QUEUE_CAPACITY),
            life: Lifecycle::new(Settings {
                policy: Box::new(ExponentialBackoff::default()),
                classifier: Box::new(DefaultClassifier),
                observers: Observers::new(),
                timer: Arc::new(AsyncIoTimer),
                stable_after: DEFAULT_STABLE_AFTER,
                connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
                close_timeout: DEFAULT_CLOSE_TIMEOUT,
            }),
        }
    }

    /// Sets the retry policy, which gives the delay before each attempt (see [`retry`](crate::retry)).
    pub fn with_retry(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.life.settings.policy = Box::new(policy);
        self
    }

    /// Sets the capacity of the send queue (default [`DEFAULT_QUEUE_CAPACITY`]; 0 is taken as 1).
    ///
    /// It bounds the messages queued plus those written but not yet flushed.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue.set_capacity(capacity);
        self
    }

    /// Sets what happens to the queued messages when a connection comes up (default
    /// [`QueuePolicy::ReplayAll`]): drop those older than a TTL, clear on reconnect, or keep what a predicate
    /// keeps. What it drops is handed back by [`take_dropped`](Self::take_dropped) and reported as
    /// [`Event::Dropped`](crate::Event::Dropped). Messages written to a connection and awaiting its flush are
    /// never dropped (they may have been delivered).
    pub fn with_queue_policy(mut self, policy: QueuePolicy<I>) -> Self {
        let now = self.life.settings.timer.now();
        self.queue.stamp_from(now, policy.needs_ages());
        self.policy = policy;
        self
    }

    /// Sets the messages each new connection sends first, before the queued ones (a subscription to renew,
    /// say): `first` gets the connection's generation. They are part of the queue from then on (sent again
    /// if the connection fails before they are flushed).
    pub fn with_first_messages(mut self, first: impl FnMut(u64) -> Vec<I> + Send + 'static) -> Self {
        self.first = Some(Box::new(first));
        self
    }

    /// Bounds the send queue in bytes too (as [`Weight`] counts them): `poll_ready` is `Pending` while at least
    /// `max` bytes are queued or awaiting a flush (backpressure). A message larger than `max` still goes into
    /// an empty queue.
    pub fn with_queue_bytes(mut self, max: usize) -> Self
    where
        I: Weight,
    {
        self.queue.set_byte_capacity(max, <I as Weight>::weight);
        self
    }

    /// Sets how long a connection must stay up to count as stable (default [`DEFAULT_STABLE_AFTER`]).
    ///
    /// The drop of a connection that was stable, or productive (it yielded an item and flushed a message),
    /// resets the backoff; any other drop counts as a failed attempt.
    pub fn with_stable_after(mut self, stable_after: Duration) -> Self {
        self.life.settings.stable_after = stable_after;
        self
    }

    /// Sets the per-attempt timeout covering the whole connector future (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]); `None` waits forever. When it passes, the attempt fails with
    /// [`ConnectTimeout`](crate::ConnectTimeout).
    pub fn with_connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.life.settings.connect_timeout = timeout.into();
        self
    }

    /// Sets the bound on `poll_close` (default [`DEFAULT_CLOSE_TIMEOUT`]).
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.life.settings.close_timeout = timeout;
        self
    }

    /// Sets the failure classifier (default [`DefaultClassifier`]: what each failure's error diagnosed of
    /// itself, retry when it said nothing).
    pub fn with_classifier(mut self, classifier: impl Classify + 'static) -> Self {
        self.life.settings.classifier = Box::new(classifier);
        self
    }

    /// Adds an observer that receives every [`Event`](crate::Event). Observers are called in the order added.
    pub fn with_observer(mut self, observer: impl Observer + 'static) -> Self {
        self.life.settings.observers.push(Box::new(observer));
        self
    }

    /// Sets the clock for backoff, timeouts and stability (default [`AsyncIoTimer`]).
    pub fn with_timer(mut self, timer: impl Timer + 'static) -> Self {
        self.life.settings.timer = Arc::new(timer);
        self
    }

    /// Where the stream is in its life.
    pub fn state(&self) -> ConnectionState {
        self.view()
    }

    /// The generation of the current or last connection: 0 before the first, then one more per connection.
    pub fn generation(&self) -> u64 {
        self.life.generation
    }

    /// Accepted messages not yet flushed to a connection (queued, or written and awaiting a flush).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Takes back the messages that are queued and not yet written to a connection, in order.
    ///
    /// Once the stream has ended (closed, gave up or fatal) these are all the accepted messages that were not
    /// delivered. For an `Unpin` stream call it as `Pin::new(&mut stream).take_unsent()`.
    pub fn take_unsent(self: Pin<&mut Self>) -> Vec<I> {
        let this = self.project();
        let taken = this.queue.take_unwritten();
        // The end reports what is left, from now on.
        if let State::Failed { error } | State::Ended { error } = this.state {
            error.set_unsent(this.queue.len());
        }
        taken
    }

    /// Ends the stream at once, without flushing or closing the connection gracefully: the connection is
    /// dropped, nothing reconnects, and every message not known to be flushed (queued, or written but not
    /// flushed) can be taken back with [`take_unsent`](Self::take_unsent). A no-op once the stream has ended.
    pub fn close_now(self: Pin<&mut Self>) {
        let this = self.project();
        *this.draining = None;
        if !matches!(*this.state, State::Failed { .. } | State::Ended { .. }) {
            *this.state = this.life.close_now(this.queue);
        }
    }

    /// Queues `item` whatever the room (for the client's shutdown, which hands the stream what its own
    /// bounded queue still holds, to be flushed before the Close frame or handed back).
    pub(crate) fn push_beyond_capacity(self: Pin<&mut Self>, item: I) {
        let this = self.project();
        let timer = &this.life.settings.timer;
        this.queue.push(item, || timer.now());
    }

    /// Takes back what the [queue policy](Self::with_queue_policy) dropped, oldest first (each drop is also
    /// an [`Event::Dropped`](crate::Event::Dropped)).
    pub fn take_dropped(self: Pin<&mut Self>) -> Vec<I> {
        std::mem::take(self.project().dropped)
    }

    /// Empties the queue of what is not yet written to a connection and hands it back, in order (what is
    /// written and awaiting its flush stays: it may yet be delivered). The same as
    /// [`take_unsent`](Self::take_unsent), while the stream runs.
    pub fn clear(self: Pin<&mut Self>) -> Vec<I> {
        self.take_unsent()
    }

    /// Whether the queue policy dropped messages not taken back yet.
    pub(crate) fn has_dropped(&self) -> bool {
        !self.dropped.is_empty()
    }

    /// Queued bytes, when the queue is bounded in bytes ([`with_queue_bytes`](Self::with_queue_bytes)).
    pub fn queued_bytes(&self) -> Option<usize> {
        self.queue.bytes()
    }

    /// The connection that is up (connected, or closing), if one is: to read what it knows after each
    /// reconnect, as futures-util's and tokio-util's wrappers offer `get_ref` (for a
    /// [`WsConnection`](crate::WsConnection): its [`protocol`](crate::WsConnection::protocol) and the upgrade's
    /// [`response`](crate::WsConnection::response)).
    pub fn get_ref(&self) -> Option<&C::Connection> {
        match &self.state {
            State::Connected { conn, .. } | State::Closing { conn, .. } => Some(conn),
            _ => None,
        }
    }

    /// The connection that is up, mutably (to set its Close frame, say). Reading or writing it directly
    /// bypasses the stream: messages written so are not in the send queue and are not sent again.
    pub fn get_mut(&mut self) -> Option<&mut C::Connection> {
        match &mut self.state {
            State::Connected { conn, .. } | State::Closing { conn, .. } => Some(conn),
            _ => None,
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
    C::Connection: Stream<Item = Result<T, SE>> + Sink<I> + Unpin,
    SE: Into<BoxError> + Diagnose,
    <C::Connection as Sink<I>>::Error: Into<BoxError> + Diagnose,
    I: Clone,
{
    type Item = Result<T, Error>;

    /// A connection that is up is read at once, by the same code as the loop's Connected arm; anything else
    /// goes through the loop.
    #[inline]
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.as_mut().project();
        if this.draining.is_some() {
            if let Some(item) = drain(this.draining, cx) {
                return Poll::Ready(Some(Ok(item)));
            }
        }
        if let State::Connected { conn, .. } = this.state {
            let failure = read_connected!(conn, this.queue, this.life, cx);
            lose(
                failure,
                this.state,
                this.draining,
                this.life,
                this.queue,
                this.connector,
                Side::Read,
            );
        }
        self.drive(cx, Intent::Read)
    }
}

impl<C, I, T, SE> FusedStream for ReconnectingStream<C, I>
where
    C: Connect,
    C::Connection: Stream<Item = Result<T, SE>> + Sink<I> + Unpin,
    SE: Into<BoxError> + Diagnose,
    <C::Connection as Sink<I>>::Error: Into<BoxError> + Diagnose,
    I: Clone,
{
    fn is_terminated(&self) -> bool {
        matches!(self.state, State::Ended { .. }) && self.draining.is_none()
    }
}

/// The sink's outcome from [`drive`](ReconnectingStream::drive)'s: `None` is done.
fn sink_outcome<T>(poll: Poll<Option<Result<T, Error>>>) -> Poll<Result<(), Error>> {
    match poll {
        Poll::Ready(Some(Err(error))) => Poll::Ready(Err(error)),
        Poll::Ready(_) => Poll::Ready(Ok(())),
        Poll::Pending => Poll::Pending,
    }
}

impl<C, I, T, SE> Sink<I> for ReconnectingStream<C, I>
where
    C: Connect,
    C::Connection: Stream<Item = Result<T, SE>> + Sink<I> + Unpin,
    SE: Into<BoxError> + Diagnose,
    <C::Connection as Sink<I>>::Error: Into<BoxError> + Diagnose,
    I: Clone,
{
    type Error = Error;

    /// `Ready(Ok)` while the queue has room; otherwise drives the connection and flushes until it has.
    ///
    /// # Errors
    ///
    /// Once the stream has ended: [`Error::Closed`], [`Error::GaveUp`] or [`Error::Fatal`].
    #[inline]
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // The loop's first check, made before entering it.
        if met_as_is(Intent::Ready, &self.queue, &self.state) {
            return Poll::Ready(Ok(()));
        }
        sink_outcome(self.drive(cx, Intent::Ready))
    }

    /// Queues `item`: accepted, it is never dropped (if the stream has ended it is kept for
    /// [`take_unsent`](Self::take_unsent)).
    ///
    /// # Errors
    ///
    /// [`Error::Full`] if the queue has no room, which only happens when `poll_ready` did not return
    /// `Ready(Ok)` first, as the `Sink` protocol asks: the message is refused (not accepted), so the queue
    /// never exceeds its capacity.
    #[inline]
    fn start_send(self: Pin<&mut Self>, item: I) -> Result<(), Error> {
        let this = self.project();
        if !this.queue.has_room() {
            return Err(Error::Full {
                capacity: this.queue.capacity(),
            });
        }
        let timer = &this.life.settings.timer;
        this.queue.push(item, || timer.now());
        Ok(())
    }

    /// Writes and flushes every queued message, reconnecting as needed; `Ready(Ok)` when all are flushed.
    ///
    /// With nothing queued and no connection up it returns `Ready(Ok)` at once.
    ///
    /// # Errors
    ///
    /// Once the stream has ended: [`Error::Closed`], [`Error::GaveUp`] or [`Error::Fatal`].
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        sink_outcome(self.drive(cx, Intent::Flush))
    }

    /// Flushes the queue to the current connection, closes it and ends the stream; never reconnects.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] with the number of messages not sent, if any were left (no connection was up, it
    /// failed while closing, or the close timeout passed). They can be taken back with
    /// [`take_unsent`](Self::take_unsent).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        sink_outcome(self.drive(cx, Intent::Close))
    }
}

impl<C, I> fmt::Debug for ReconnectingStream<C, I>
where
    C: Connect,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectingStream")
            .field("state", &self.state())
            .field("generation", &self.life.generation)
            .field("queued", &self.queue.len())
            .field("capacity", &self.queue.capacity())
            .field("failures", &self.life.failures)
            .field("observers", &self.life.settings.observers)
            .finish_non_exhaustive()
    }
}
