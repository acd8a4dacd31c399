//! The connector, attempt future and connection of an [`AckLayer`]: resends after a reconnect, tracking on
//! flush, ack timeouts, and the acks taken out of the inbound messages.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tower_layer::Layer;

use super::{Ack, AckLayer, Outcome, Unacked};
use crate::connect::Connect;
use crate::hash::FoldHash;
use crate::time::Sleep;

impl<T, Id, C> Layer<C> for AckLayer<T, Id> {
    type Service = AckConnector<C, T, Id>;

    fn layer(&self, inner: C) -> Self::Service {
        AckConnector {
            inner,
            layer: self.clone(),
        }
    }
}

/// The connector of an [`AckLayer`].
pub struct AckConnector<C, T, Id> {
    inner: C,
    layer: AckLayer<T, Id>,
}

impl<C: Clone, T, Id> Clone for AckConnector<C, T, Id> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<C, T, Id> fmt::Debug for AckConnector<C, T, Id> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckConnector")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<C, T, Id> Connect for AckConnector<C, T, Id>
where
    C: Connect,
    T: Clone,
    Id: Eq + Hash + Clone,
{
    type Connection = AckConnection<C::Connection, T, Id>;
    type Error = C::Error;
    type Future = AckFuture<C::Future, T, Id>;

    fn connect(&mut self) -> Self::Future {
        AckFuture {
            inner: self.inner.connect(),
            layer: Some(self.layer.clone()),
        }
    }
}

pin_project! {
    /// The attempt future of an [`AckConnector`]: the inner attempt.
    ///
    /// # Cancel safety
    ///
    /// Dropping it abandons the attempt; nothing tracked is lost (it stays unacked for the next connection).
    pub struct AckFuture<F, T, Id> {
        #[pin]
        inner: F,
        layer: Option<AckLayer<T, Id>>,
    }
}

impl<F, S, E, T, Id> Future for AckFuture<F, T, Id>
where
    F: Future<Output = Result<S, E>>,
    T: Clone,
    Id: Eq + Hash + Clone,
{
    type Output = Result<AckConnection<S, T, Id>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let conn = std::task::ready!(this.inner.poll(cx))?;
        let Some(layer) = this.layer.take() else {
            // Polled after it completed: a contract breach of the caller; end it as pending.
            return Poll::Pending;
        };
        // Everything still unacked goes out again first, in order (an attempt each, from now); what has had
        // all its attempts fails instead.
        let (resend, carried): (VecDeque<T>, HashSet<Id, FoldHash>) = {
            let mut state = layer.shared.state();
            let now = state.timer.now();
            let attempts = state.attempts;
            let spent: Vec<Id> = (state.unacked.iter())
                .filter(|unacked| unacked.attempts >= attempts)
                .map(|unacked| unacked.id.clone())
                .collect();
            for id in spent {
                state.resolve(&id, Outcome::Failed);
            }
            let mut carried = HashSet::default();
            let resend = (state.unacked.iter_mut())
                .map(|unacked| {
                    unacked.attempts = unacked.attempts.saturating_add(1);
                    unacked.sent = now;
                    carried.insert(unacked.id.clone());
                    unacked.message.clone()
                })
                .collect();
            (resend, carried)
        };
        Poll::Ready(Ok(AckConnection {
            inner: conn,
            layer,
            resend,
            carried,
            written: Vec::new(),
            room: 0,
            sleep: None,
        }))
    }
}

/// A connection of an [`AckConnector`]: it sends again what is unacked, tracks what it flushes, and takes
/// the acks out of the inbound messages.
pub struct AckConnection<S, T, Id> {
    inner: S,
    layer: AckLayer<T, Id>,
    /// Unacked messages to write again, before anything new.
    resend: VecDeque<T>,
    /// The ids of `resend`, until the first message written that is not one of them: the writer's own
    /// replay of those (a flush beside its own, a hook's, tracked them before the writer knew they were
    /// flushed) is not sent a second time.
    carried: HashSet<Id, FoldHash>,
    /// Written since the last completed flush, with their ids: tracked once the flush completes.
    written: Vec<(Id, T)>,
    /// Room in the window as last counted, less what was written since: a lower bound (acks only make more),
    /// so that a send takes the lock only when it runs out.
    room: usize,
    /// The earliest ack deadline.
    sleep: Option<Sleep>,
}

// Nothing in it is pinned: the messages and ids are moved freely (they need not be `Unpin` themselves).
impl<S: Unpin, T, Id> Unpin for AckConnection<S, T, Id> {}

impl<S: fmt::Debug, T, Id> fmt::Debug for AckConnection<S, T, Id> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckConnection")
            .field("inner", &self.inner)
            .field("resend", &self.resend.len())
            .finish_non_exhaustive()
    }
}

impl<S, T, Id> AckConnection<S, T, Id> {
    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The connection, mutably (what is written to it directly is not tracked).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S, T, Id> AckConnection<S, T, Id>
where
    S: Sink<T> + Unpin,
    T: Clone,
    Id: Eq + Hash + Clone,
{
    /// Writes what is to be sent again (unacked after a reconnect, or past its ack timeout) and flushes it.
    fn poll_resend(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.resend.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while let Some(message) = self.resend.front() {
            std::task::ready!(Pin::new(&mut self.inner).poll_ready(cx))?;
            let message = message.clone();
            self.resend.pop_front();
            Pin::new(&mut self.inner).start_send(message)?;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Ack timeouts: what waited too long is sent again, or fails once out of attempts.
    fn poll_deadlines(&mut self, cx: &mut Context<'_>) {
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return;
                }
                self.sleep = None;
            }
            let mut state = self.layer.shared.state();
            let now = state.timer.now();
            let (timeout, attempts) = (state.timeout, state.attempts);
            let mut expired = Vec::new();
            let mut earliest: Option<Instant> = None;
            for unacked in state.unacked.iter_mut() {
                let due = unacked.sent.checked_add(timeout).unwrap_or(unacked.sent);
                if due <= now {
                    if unacked.attempts >= attempts {
                        expired.push(unacked.id.clone());
                    } else {
                        unacked.attempts += 1;
                        unacked.sent = now;
                        self.resend.push_back(unacked.message.clone());
                        let next = now.checked_add(timeout).unwrap_or(now);
                        earliest = Some(earliest.map_or(next, |e| e.min(next)));
                    }
                } else {
                    earliest = Some(earliest.map_or(due, |e| e.min(due)));
                }
            }
            for id in expired {
                state.resolve(&id, Outcome::Failed);
            }
            let Some(earliest) = earliest else {
                return;
            };
            self.sleep = Some(state.timer.sleep_until(earliest));
        }
    }
}

impl<S, T, Id, E> Stream for AckConnection<S, T, Id>
where
    S: Stream<Item = Result<T, E>> + Sink<T> + Unpin,
    T: Clone,
    Id: Eq + Hash + Clone,
{
    type Item = Result<T, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // What must go out again does, also while only the read half is polled (errors show on the read).
        let _ = this.poll_resend(cx);
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    let Some(ack) = (this.layer.ack_of)(&message) else {
                        return Poll::Ready(Some(Ok(message)));
                    };
                    // (The lock is not held across polls: the layers beneath, and `ack_of`, may use the
                    // `Acks` handle.)
                    let mut state = this.layer.shared.state();
                    match ack {
                        Ack::Ack(id) => state.resolve(&id, |_| Outcome::Acked),
                        Ack::Nack(id) => state.resolve(&id, Outcome::Nacked),
                    }
                    drop(state);
                    if this.layer.deliver_acks {
                        return Poll::Ready(Some(Ok(message)));
                    }
                }
                Poll::Pending => {
                    this.poll_deadlines(cx);
                    if !this.resend.is_empty() {
                        let _ = this.poll_resend(cx);
                    }
                    return Poll::Pending;
                }
                other => return other,
            }
        }
    }
}

impl<S, T, Id> Sink<T> for AckConnection<S, T, Id>
where
    S: Sink<T> + Unpin,
    T: Clone,
    Id: Eq + Hash + Clone,
{
    type Error = S::Error;

    /// Room in the window and in the connection; what must go out again goes first.
    ///
    /// When what was written since the last flush fills the window, this waits for that flush: the caller
    /// flushes when a sink is not ready, as futures' `send_all` and the reconnecting stream do. (Flushing here
    /// instead would hand messages to the window behind the caller's back: a reconnecting stream, which owns
    /// what it wrote until its own flush completes, would send them again after a reconnect, acked or not.)
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_resend(cx))?;
        if this.room == 0 {
            let mut state = this.layer.shared.state();
            this.room = state.room(this.written.len());
            if this.room == 0 {
                if this.written.is_empty() {
                    state.writer = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
        Pin::new(&mut this.inner).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: T) -> Result<(), S::Error> {
        let this = self.get_mut();
        let id = (this.layer.id_of)(&message);
        if !this.carried.is_empty() {
            if id.as_ref().is_some_and(|id| this.carried.remove(id)) {
                // Tracked already, and sent again first on this connection.
                return Ok(());
            }
            this.carried = HashSet::default();
        }
        if let Some(id) = id {
            this.written.push((id, message.clone()));
            this.room = this.room.saturating_sub(1);
        }
        Pin::new(&mut this.inner).start_send(message)
    }

    /// Flushes; once it completes, what was written is tracked until its ack.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_resend(cx))?;
        this.poll_flush_tracked(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

impl<S, T, Id> AckConnection<S, T, Id>
where
    S: Sink<T> + Unpin,
    T: Clone,
    Id: Eq + Hash + Clone,
{
    /// Flushes the connection; once that completes, what was written is tracked until its ack.
    fn poll_flush_tracked(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let this = self;
        std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        if !this.written.is_empty() {
            let mut state = this.layer.shared.state();
            let now = state.timer.now();
            for (id, message) in this.written.drain(..) {
                state.unacked.push_back(Unacked {
                    id,
                    message,
                    sent: now,
                    attempts: 1,
                });
            }
            drop(state);
            // The new deadlines are due after the earliest one: look again.
            this.sleep = None;
            this.poll_deadlines(cx);
        }
        Poll::Ready(Ok(()))
    }
}
