//! [`HooksConnection`]: the one wrapper that runs a hook group on a connection.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_core::Stream;
use futures_sink::Sink;

use super::{End, Hook, Tick, Verdict};
use crate::diagnose::Diagnose;
use crate::error::{BoxError, DiagnosedError};

/// How many inbound messages may pass between two polls of the hooks' timers while messages flow: arriving
/// data proves the connection alive, and a ping is due every few seconds at most, not every message.
const TIMER_EVERY: u32 = 64;

/// A connection whose messages pass a hook group `H` (see [`Hook`]); `T` is the message type. Made by a
/// [`Hooks`](super::Hooks) connector.
///
/// A message is looked at where it lies and handed on as it came, so the group costs no copy of it. The
/// hooks' timers are polled when the stream has nothing to yield, and every few dozen messages while it has;
/// a message a timer sends (a ping) is written with a waker that wakes both the reader and the last writer,
/// so that a split connection's writer keeps its wake-ups.
pub struct HooksConnection<S, H, T>
where
    H: Hook<T>,
{
    inner: S,
    hooks: H,
    /// A message a timer asked to send that the connection has not taken yet.
    outbox: Option<T>,
    /// A message from a timer was written and is not flushed yet.
    flush_due: bool,
    /// Messages since the timers were last polled.
    since_timers: u32,
    /// The last task that wrote, to be woken by writes made from the read side.
    writer: Option<Waker>,
    /// The hooks were told the end.
    ended: bool,
    _message: PhantomData<fn(T) -> T>,
}

impl<S, H: Hook<T>, T> HooksConnection<S, H, T> {
    pub(super) fn new(inner: S, hooks: H) -> Self {
        Self {
            inner,
            hooks,
            outbox: None,
            flush_due: false,
            since_timers: 0,
            writer: None,
            ended: false,
            _message: PhantomData,
        }
    }

    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The connection, mutably (what is written to it directly bypasses the hooks).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The hook group.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }

    /// Tells the hooks how the connection ended, once.
    #[cold]
    #[inline(never)]
    fn end(&mut self, end: End<'_>) {
        if !std::mem::replace(&mut self.ended, true) {
            self.hooks.on_end(&end);
        }
    }

    fn remember_writer(&mut self, waker: &Waker) {
        if !self.writer.as_ref().is_some_and(|writer| writer.will_wake(waker)) {
            self.writer = Some(waker.clone());
        }
    }
}

/// Nothing in it is pinned: the connection is polled through `Pin::new`, which needs it `Unpin`.
impl<S: Unpin, H: Hook<T>, T> Unpin for HooksConnection<S, H, T> {}

impl<S, H: Hook<T>, T> Drop for HooksConnection<S, H, T> {
    fn drop(&mut self) {
        self.end(End::Dropped);
    }
}

impl<S, H: Hook<T>, T> fmt::Debug for HooksConnection<S, H, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HooksConnection")
            .field("ended", &self.ended)
            .field("outbox", &self.outbox.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, H, T, E> HooksConnection<S, H, T>
where
    S: Stream<Item = Result<T, E>> + Sink<T> + Unpin,
    E: Into<BoxError> + Diagnose + fmt::Display,
    S::Error: Into<BoxError> + Diagnose + fmt::Display,
    H: Hook<T>,
{
    /// Polls the hooks' timers until they are all pending, then writes what they asked to send. `Err` when a
    /// hook failed the connection, or writing its message did.
    ///
    /// The timers are polled even while an earlier message still waits for the connection (a stalled peer
    /// fills the socket: that is when a liveness timeout must still fire); a message a timer sends while the
    /// previous one waits is dropped, as a second ping would be redundant.
    #[inline(never)]
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Result<(), DiagnosedError> {
        self.since_timers = 0;
        while let Poll::Ready(tick) = self.hooks.poll_timer(cx) {
            match tick {
                Tick::Send(message) if self.outbox.is_none() => self.outbox = Some(message),
                Tick::Send(_) => tracing::trace!("a timer's message dropped: the previous one is still waiting"),
                Tick::Fail(error) => {
                    self.end(End::HookFailed(&error));
                    return Err(DiagnosedError::new(error));
                }
            }
        }
        if self.outbox.is_none() && !self.flush_due {
            return Ok(());
        }
        // Written from the read side: wake the writer too, which may be waiting on the same socket.
        let both = Waker::from(Arc::new(Both(cx.waker().clone(), self.writer.clone())));
        let mut shared = Context::from_waker(&both);
        if let Some(message) = self.outbox.take() {
            match Pin::new(&mut self.inner).poll_ready(&mut shared) {
                Poll::Ready(Ok(())) => {
                    if let Err(error) = Pin::new(&mut self.inner).start_send(message) {
                        return Err(self.write_failed(error));
                    }
                    self.flush_due = true;
                }
                Poll::Ready(Err(error)) => return Err(self.write_failed(error)),
                Poll::Pending => {
                    self.outbox = Some(message);
                    return Ok(());
                }
            }
        }
        match Pin::new(&mut self.inner).poll_flush(&mut shared) {
            Poll::Ready(Ok(())) => self.flush_due = false,
            Poll::Ready(Err(error)) => return Err(self.write_failed(error)),
            Poll::Pending => {}
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn write_failed(&mut self, error: S::Error) -> DiagnosedError {
        self.end(End::WriteFailed(&error));
        DiagnosedError::new(error)
    }

    #[cold]
    #[inline(never)]
    fn read_failed(&mut self, error: E) -> Poll<Option<Result<T, DiagnosedError>>> {
        self.end(End::ReadFailed(&error));
        Poll::Ready(Some(Err(DiagnosedError::new(error))))
    }
}

impl<S, H, T, E> Stream for HooksConnection<S, H, T>
where
    S: Stream<Item = Result<T, E>> + Sink<T> + Unpin,
    E: Into<BoxError> + Diagnose + fmt::Display,
    S::Error: Into<BoxError> + Diagnose + fmt::Display,
    H: Hook<T>,
{
    type Item = Result<T, DiagnosedError>;

    // Inlined into the caller, so that a message is not copied from one stack frame into the next; the rare
    // paths are out of line.
    #[inline(always)]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let mut poll = Pin::new(&mut this.inner).poll_next(cx);
            // The message is looked at where it lies, in the connection's result.
            if let Poll::Ready(Some(Ok(message))) = &mut poll {
                this.since_timers += 1;
                if this.since_timers >= TIMER_EVERY {
                    if let Err(error) = this.poll_timers(cx) {
                        return Poll::Ready(Some(Err(error)));
                    }
                }
                if let Verdict::Drop = this.hooks.on_inbound(message) {
                    continue;
                }
            }
            match poll {
                Poll::Ready(Some(Ok(message))) => return Poll::Ready(Some(Ok(message))),
                Poll::Ready(Some(Err(error))) => return this.read_failed(error),
                Poll::Ready(None) => {
                    this.end(End::Ended);
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    return match this.poll_timers(cx) {
                        Ok(()) => Poll::Pending,
                        Err(error) => Poll::Ready(Some(Err(error))),
                    };
                }
            }
        }
    }
}

impl<S, H, T, E> Sink<T> for HooksConnection<S, H, T>
where
    S: Stream<Item = Result<T, E>> + Sink<T> + Unpin,
    E: Into<BoxError> + Diagnose + fmt::Display,
    S::Error: Into<BoxError> + Diagnose + fmt::Display,
    H: Hook<T>,
{
    type Error = DiagnosedError;

    #[inline]
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), DiagnosedError>> {
        let this = self.get_mut();
        this.remember_writer(cx.waker());
        match Pin::new(&mut this.inner).poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => Poll::Ready(Err(this.write_failed(error))),
            Poll::Pending => Poll::Pending,
        }
    }

    #[inline]
    fn start_send(self: Pin<&mut Self>, mut item: T) -> Result<(), DiagnosedError> {
        let this = self.get_mut();
        if let Verdict::Drop = this.hooks.on_outbound(&mut item) {
            return Ok(());
        }
        match Pin::new(&mut this.inner).start_send(item) {
            Ok(()) => Ok(()),
            Err(error) => Err(this.write_failed(error)),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), DiagnosedError>> {
        let this = self.get_mut();
        this.remember_writer(cx.waker());
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => Poll::Ready(Err(this.write_failed(error))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), DiagnosedError>> {
        let this = self.get_mut();
        this.remember_writer(cx.waker());
        match Pin::new(&mut this.inner).poll_close(cx) {
            Poll::Ready(Ok(())) => {
                this.end(End::Closed);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(this.write_failed(error))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Wakes the reader and the last writer: for writes made from the read side.
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
