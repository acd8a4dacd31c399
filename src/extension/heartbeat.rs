//! [`HeartbeatLayer`]: pings on a schedule and replaces a connection that has gone silent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tower_layer::Layer;

use crate::error::BoxError;
use crate::time::{AsyncIoTimer, Sleep, Timer};
use crate::Connect;

/// The connection sent no frame within the heartbeat timeout after a ping: it is dead (half-open, or the
/// peer hangs) and is replaced.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no frame received within {timeout:?} of a ping")]
pub struct HeartbeatTimeout {
    /// The timeout that passed.
    pub timeout: Duration,
}

/// Pings every `interval`; if no frame at all (data, ping or pong) arrives within `timeout` of a ping, the
/// connection fails with [`HeartbeatTimeout`] and the stream reconnects. A peer that stops answering without
/// closing TCP is detected within `interval + timeout`.
///
/// The timers run while the stream is read (polled for its next item), which is what any consumer of a
/// reconnecting stream does. While messages keep arriving the connection is evidently alive; pings still go
/// out every interval so the server sees the client alive too. The server's Pong replies are frames like any
/// other: they reach the reader as items (filter them with an [`ExtensionLayer`](super::ExtensionLayer) if
/// unwanted).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stream_tungstenite::extension::HeartbeatLayer;
///
/// let heartbeat = HeartbeatLayer::new(Duration::from_secs(15), Duration::from_secs(10));
/// ```
#[derive(Clone)]
pub struct HeartbeatLayer {
    interval: Duration,
    timeout: Duration,
    timer: Arc<dyn Timer>,
}

impl HeartbeatLayer {
    /// Pings every `interval`, declaring the connection dead when no frame arrives within `timeout` of a
    /// ping.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            timer: Arc::new(AsyncIoTimer),
        }
    }

    /// Uses `timer` for the schedule (for tests: a [`ManualClock`](crate::time::ManualClock)).
    pub fn with_timer(mut self, timer: impl Timer + 'static) -> Self {
        self.timer = Arc::new(timer);
        self
    }
}

impl fmt::Debug for HeartbeatLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeartbeatLayer")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<C> Layer<C> for HeartbeatLayer {
    type Service = Heartbeat<C>;

    fn layer(&self, inner: C) -> Heartbeat<C> {
        Heartbeat {
            inner,
            layer: self.clone(),
        }
    }
}

/// A connector whose connections are kept alive by pings; made by [`HeartbeatLayer`].
#[derive(Debug, Clone)]
pub struct Heartbeat<C> {
    inner: C,
    layer: HeartbeatLayer,
}

impl<C: Connect> Connect for Heartbeat<C> {
    type Connection = HeartbeatConnection<C::Connection>;
    type Error = C::Error;
    type Future = HeartbeatFuture<C::Future>;

    fn connect(&mut self) -> Self::Future {
        HeartbeatFuture {
            inner: self.inner.connect(),
            layer: self.layer.clone(),
        }
    }
}

pin_project! {
    /// The attempt future of a [`Heartbeat`] connector.
    #[derive(Debug)]
    pub struct HeartbeatFuture<F> {
        #[pin]
        inner: F,
        layer: HeartbeatLayer,
    }
}

impl<F, S, E> Future for HeartbeatFuture<F>
where
    F: Future<Output = Result<S, E>>,
{
    type Output = Result<HeartbeatConnection<S>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = ready!(this.inner.poll(cx))?;
        let layer = this.layer.clone();
        let first_ping = layer.timer.now().checked_add(layer.interval);
        Poll::Ready(Ok(HeartbeatConnection {
            inner,
            next_ping: first_ping.map(|at| layer.timer.sleep_until(at)),
            deadline: None,
            ping_due: false,
            flush_due: false,
            since_check: 0,
            writer: None,
            layer,
        }))
    }
}

/// How many inbound items may pass between timer checks while the connection is busy.
const CHECK_EVERY: u32 = 64;

pin_project! {
    /// A connection kept alive by pings; see [`HeartbeatLayer`].
    pub struct HeartbeatConnection<S> {
        #[pin]
        inner: S,
        layer: HeartbeatLayer,
        next_ping: Option<Sleep>,
        deadline: Option<Sleep>,
        ping_due: bool,
        flush_due: bool,
        since_check: u32,
        // The write half's waker, so that pings sent from the read side do not steal its wake-ups.
        writer: Option<Waker>,
    }
}

impl<S> fmt::Debug for HeartbeatConnection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeartbeatConnection")
            .field("layer", &self.layer)
            .field("awaiting_frame", &self.deadline.is_some())
            .finish_non_exhaustive()
    }
}

/// Wakes the reader and the writer.
struct Both(Waker, Option<Waker>);

impl Wake for Both {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake_by_ref();
        if let Some(writer) = &self.1 {
            writer.wake_by_ref();
        }
    }
}

impl<S, E> HeartbeatConnection<S>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message>,
    <S as Sink<Message>>::Error: Into<BoxError>,
{
    /// Runs the schedule: `Ready(Err)` when the connection is dead or the ping could not be sent.
    fn poll_schedule(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut this = self.project();
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!(timeout = ?this.layer.timeout, "heartbeat timed out");
                return Poll::Ready(Err(Box::new(HeartbeatTimeout {
                    timeout: this.layer.timeout,
                })));
            }
        }
        if let Some(next_ping) = this.next_ping.as_mut() {
            if next_ping.as_mut().poll(cx).is_ready() {
                *this.ping_due = true;
                let now = this.layer.timer.now();
                *this.next_ping = now
                    .checked_add(this.layer.interval)
                    .map(|at| this.layer.timer.sleep_until(at));
                if let Some(next_ping) = this.next_ping.as_mut() {
                    let _ = next_ping.as_mut().poll(cx);
                }
                if this.deadline.is_none() {
                    *this.deadline = now
                        .checked_add(this.layer.timeout)
                        .map(|at| this.layer.timer.sleep_until(at));
                    if let Some(deadline) = this.deadline.as_mut() {
                        let _ = deadline.as_mut().poll(cx);
                    }
                }
            }
        }
        if *this.ping_due || *this.flush_due {
            let both = Waker::from(Arc::new(Both(cx.waker().clone(), this.writer.clone())));
            let mut shared = Context::from_waker(&both);
            if *this.ping_due {
                match this.inner.as_mut().poll_ready(&mut shared) {
                    Poll::Ready(Ok(())) => {
                        this.inner
                            .as_mut()
                            .start_send(Message::Ping(Default::default()))
                            .map_err(Into::into)?;
                        tracing::trace!("heartbeat ping");
                        *this.ping_due = false;
                        *this.flush_due = true;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                    Poll::Pending => {}
                }
            }
            if *this.flush_due {
                match this.inner.as_mut().poll_flush(&mut shared) {
                    Poll::Ready(Ok(())) => *this.flush_due = false,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                    Poll::Pending => {}
                }
            }
        }
        Poll::Pending
    }
}

impl<S, E> Stream for HeartbeatConnection<S>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message>,
    E: Into<BoxError>,
    <S as Sink<Message>>::Error: Into<BoxError>,
{
    type Item = Result<Message, BoxError>;

    // Inlined into the caller, so that a message is not copied out of one stack frame into the next (the copy
    // stalls on store forwarding); the rare paths are out of line.
    #[inline(always)]
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.as_mut().project();
        // While busy, check the timers only every CHECK_EVERY items: data arriving proves the connection alive.
        if *this.since_check < CHECK_EVERY {
            match this.inner.poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    *this.since_check += 1;
                    if this.deadline.is_some() {
                        *this.deadline = None;
                    }
                    return Poll::Ready(Some(Ok(message)));
                }
                // Nothing yet: the slow path runs the timers and polls again, which is harmless.
                Poll::Pending => {}
                // The error or the end is the connection's last word: it must reach the stream (a close code
                // in the error decides whether to reconnect), not be dropped for a second poll.
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(box_error(error)))),
                Poll::Ready(None) => return Poll::Ready(None),
            }
        }
        self.poll_next_slow(cx)
    }
}

impl<S, E> HeartbeatConnection<S>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message>,
    E: Into<BoxError>,
    <S as Sink<Message>>::Error: Into<BoxError>,
{
    #[inline(never)]
    fn poll_next_slow(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Message, BoxError>>> {
        *self.as_mut().project().since_check = 0;
        if let Poll::Ready(Err(error)) = self.as_mut().poll_schedule(cx) {
            return Poll::Ready(Some(Err(error)));
        }
        let this = self.project();
        match ready!(this.inner.poll_next(cx)) {
            Some(Ok(message)) => {
                *this.deadline = None;
                Poll::Ready(Some(Ok(message)))
            }
            Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            None => Poll::Ready(None),
        }
    }
}

impl<S> HeartbeatConnection<S> {
    fn remember_writer(self: Pin<&mut Self>, cx: &Context<'_>) -> Pin<&mut S> {
        let this = self.project();
        if !this.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *this.writer = Some(cx.waker().clone());
        }
        this.inner
    }
}

impl<S> Sink<Message> for HeartbeatConnection<S>
where
    S: Sink<Message>,
    S::Error: Into<BoxError>,
{
    type Error = BoxError;

    #[inline]
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.remember_writer(cx).poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => Poll::Ready(Err(box_error(error))),
            Poll::Pending => Poll::Pending,
        }
    }

    #[inline]
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), BoxError> {
        match self.project().inner.start_send(item) {
            Ok(()) => Ok(()),
            Err(error) => Err(box_error(error)),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.remember_writer(cx).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => Poll::Ready(Err(box_error(error))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.remember_writer(cx).poll_close(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => Poll::Ready(Err(box_error(error))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Boxes an error, out of the hot path: keeps the `Ok` path of every poll free of the error's move.
#[cold]
#[inline(never)]
fn box_error<E: Into<BoxError>>(error: E) -> BoxError {
    error.into()
}
