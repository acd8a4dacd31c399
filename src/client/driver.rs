//! The driver of one run: what `run()` polls, moving queued messages into the stream and inbound messages to
//! the subscribers.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use event_listener::EventListener;
use futures_core::Stream;
use futures_sink::Sink;

use super::error::ClientError;
use super::state::Shared;
use crate::connect::Connect;
use crate::diagnose::Diagnose;
use crate::error::BoxError;
use crate::reconnect::ReconnectingStream;

/// Marks the client stopped when `run()` ends, however it ends.
pub(super) struct RunGuard {
    pub(super) shared: Arc<Shared>,
    /// The run's number: a shutdown is meant for one run.
    pub(super) run: u64,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.shared.end_run(self.run);
        self.shared.stopped.notify(usize::MAX);
    }
}

/// Inbound messages handled per poll before yielding to the executor (fairness).
const BUDGET: usize = 512;

/// The driver of one run: moves queued messages into the stream, inbound messages to subscribers.
pub(super) struct Driver<C>
where
    C: Connect,
    C::Future: Unpin,
    C::Connection: Unpin,
{
    pub(super) stream: ReconnectingStream<C, Message>,
    pub(super) shared: Arc<Shared>,
    /// This run's number (see [`RunGuard`]).
    pub(super) run: u64,

    /// Taken from the channel (or left by the previous run), not yet accepted by the stream.
    pub(super) pending: VecDeque<Message>,
    /// Read from the stream in this poll, published to the subscribers at its end.
    pub(super) inbound: VecDeque<Message>,
    /// Wakes the driver when a message arrives in the outbox or a shutdown is asked (see [`arm`](Self::arm)).
    pub(super) listener: Option<EventListener>,
    pub(super) closing: Option<crate::time::Sleep>,
}

impl<C> Drop for Driver<C>
where
    C: Connect,
    C::Future: Unpin,
    C::Connection: Unpin,
{
    fn drop(&mut self) {
        self.keep_unsent();
    }
}

impl<C> Driver<C>
where
    C: Connect,
    C::Future: Unpin,
    C::Connection: Unpin,
{
    /// Keeps what the stream and the driver hold unsent for the next run (or `take_unsent`); written but
    /// unflushed messages count as unsent.
    /// Moves what the queue policy dropped to the client, for `take_dropped` (they were counted as sent).
    fn keep_dropped(&mut self) {
        if self.stream.has_dropped() {
            let dropped = Pin::new(&mut self.stream).take_dropped();
            for message in &dropped {
                self.shared.uncount_out(message);
            }
            self.shared.dropped().extend(dropped);
        }
    }

    fn keep_unsent(&mut self) {
        self.keep_dropped();
        let mut stream = Pin::new(&mut self.stream);
        stream.as_mut().close_now();
        let unsent = stream.take_unsent();
        for message in &unsent {
            self.shared.uncount_out(message);
        }
        let mut leftover = self.shared.leftover();
        for message in unsent.into_iter().chain(self.pending.drain(..)) {
            leftover.push_back(message);
        }
    }
}

impl<C, E> Future for Driver<C>
where
    C: Connect,
    C::Future: Unpin,
    C::Connection: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
    <C::Connection as Sink<Message>>::Error: Into<BoxError> + Diagnose,
    E: Into<BoxError> + Diagnose,
{
    type Output = Result<(), ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_drive(cx)
    }
}

impl<C, E> Driver<C>
where
    C: Connect,
    C::Future: Unpin,
    C::Connection: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
    <C::Connection as Sink<Message>>::Error: Into<BoxError> + Diagnose,
    E: Into<BoxError> + Diagnose,
{
    /// On shutdown: everything sent before it goes into the stream, to be flushed before the Close frame
    /// (or kept for the next run if no connection is up).
    fn take_queued(&mut self) {
        self.pending.extend(self.shared.outbox.drain());
        while let Some(message) = self.pending.pop_front() {
            self.shared.count_out(&message);
            // Beyond the stream's capacity if need be (the client's own queue bounded these): the stream keeps
            // the message whatever happens.
            Pin::new(&mut self.stream).push_beyond_capacity(message);
        }
    }

    pub(super) fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        self.arm(cx);
        if self.shutdown_requested() {
            return self.poll_shutdown(cx);
        }
        // Outgoing: from the queue into the stream while it has room, then flush.
        loop {
            if self.pending.is_empty() {
                match self.shared.outbox.pop() {
                    Some(message) => self.pending.push_back(message),
                    None => break,
                }
            }
            match Pin::new(&mut self.stream).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(message) = self.pending.pop_front() {
                        self.shared.count_out(&message);
                        if let Err(error) = Pin::new(&mut self.stream).start_send(message) {
                            return Poll::Ready(Err(ClientError::Terminated(error)));
                        }
                    }
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(ClientError::Terminated(error))),
                Poll::Pending => break,
            }
        }
        if let Poll::Ready(Err(error)) = Pin::new(&mut self.stream).poll_flush(cx) {
            return Poll::Ready(Err(ClientError::Terminated(error)));
        }
        // Inbound: to every subscriber, never waiting for a slow one; published a batch at a time (what one
        // poll read), so subscribers pay one lock per batch, not per message.
        let mut outcome = None;
        let mut bytes = 0;
        // For `subscribe_resumed`: each report of the resume layer in front of the message read after it.
        let mut resumed = self.shared.resumed.has_receivers().then(VecDeque::new);
        while self.inbound.len() < BUDGET {
            match Pin::new(&mut self.stream).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    if let Some(resumed) = resumed.as_mut() {
                        let reports = self.shared.continuity().drain(..).collect::<Vec<_>>();
                        resumed.extend(reports.into_iter().map(crate::delivery::Resumed::Continuity));
                        resumed.push_back(crate::delivery::Resumed::Message(message.clone()));
                    }
                    bytes += message.len() as u64;
                    self.inbound.push_back(message);
                }
                Poll::Ready(Some(Err(error))) => {
                    outcome = Some(Poll::Ready(Err(ClientError::Terminated(error))));
                    break;
                }
                Poll::Ready(None) => {
                    outcome = Some(Poll::Ready(Ok(())));
                    break;
                }
                Poll::Pending => {
                    outcome = Some(Poll::Pending);
                    break;
                }
            }
        }
        self.shared.count_in(self.inbound.len(), bytes);
        self.keep_dropped();
        if let Some(mut resumed) = resumed {
            self.shared.resumed.publish_all(&mut resumed);
        } else if !self.inbound.is_empty() {
            // Nobody reads the reports: they are not kept.
            self.shared.continuity().clear();
        }
        if !self.inbound.is_empty() && self.shared.tagged.has_receivers() {
            let generation = self.shared.detail().generation;
            let mut tagged: VecDeque<(u64, Message)> = self
                .inbound
                .iter()
                .map(|message| (generation, message.clone()))
                .collect();
            self.shared.tagged.publish_all(&mut tagged);
        }
        self.shared.messages.publish_all(&mut self.inbound);
        outcome.unwrap_or_else(|| {
            // More inbound work is waiting: let other tasks run, then continue.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    /// Registers the task for the driver's wake-up (a message queued, a shutdown asked), before the caller
    /// looks for either: what happens after this wakes the task.
    fn arm(&mut self, cx: &mut Context<'_>) {
        loop {
            match self.listener.as_mut() {
                None => self.listener = Some(self.shared.outbox.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => self.listener = None,
                    Poll::Pending => return,
                },
            }
        }
    }

    fn shutdown_requested(&self) -> bool {
        self.shared.shutdown_for.load(Ordering::SeqCst) == self.run
    }

    /// Closes the stream (flush, Close frame, wait for the server's), bounded by the shutdown timeout.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        if self.closing.is_none() {
            self.take_queued();
            let timeout = Duration::from_millis(self.shared.close_timeout_ms.load(Ordering::SeqCst));
            let deadline = self.shared.timer.now().checked_add(timeout);
            self.closing = Some(match deadline {
                Some(deadline) => self.shared.timer.sleep_until(deadline),
                None => Box::pin(futures_util::future::pending()),
            });
        }
        if Pin::new(&mut self.stream).poll_close(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        match self.closing.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }
}
