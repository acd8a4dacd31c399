//! The send queue: messages accepted by the sink, kept until a flush of the connection they were written to
//! completes.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_sink::Sink;

/// What happens to the queued messages when a connection comes up: set with
/// [`ReconnectingStream::with_queue_policy`](super::ReconnectingStream::with_queue_policy).
///
/// Whatever a policy drops is handed back ([`take_dropped`](super::ReconnectingStream::take_dropped)) and
/// reported ([`Event::Dropped`](crate::Event::Dropped)), never lost silently.
pub enum QueuePolicy<I> {
    /// Send everything again, in order (the default).
    ReplayAll,
    /// Drop what has waited longer than this since it was accepted (on every connection, the first too).
    DropOlderThan(Duration),
    /// Drop everything queued when a connection comes up after the first (a reconnect): only what is sent
    /// from then on goes out.
    ClearOnReconnect,
    /// Keep what the predicate keeps: it gets each message and how long it has waited (on every connection).
    Keep(KeepFn<I>),
}

/// The predicate of [`QueuePolicy::Keep`]: a message and how long it has waited; `true` keeps it.
pub type KeepFn<I> = Box<dyn FnMut(&I, Duration) -> bool + Send>;

impl<I> QueuePolicy<I> {
    /// [`Keep`](Self::Keep) from a closure.
    pub fn keep(predicate: impl FnMut(&I, Duration) -> bool + Send + 'static) -> Self {
        Self::Keep(Box::new(predicate))
    }

    /// Whether it looks at how long messages waited (the queue then records when each was accepted).
    pub(crate) fn needs_ages(&self) -> bool {
        matches!(self, Self::DropOlderThan(_) | Self::Keep(_))
    }
}

impl<I> fmt::Debug for QueuePolicy<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReplayAll => f.write_str("ReplayAll"),
            Self::DropOlderThan(ttl) => f.debug_tuple("DropOlderThan").field(ttl).finish(),
            Self::ClearOnReconnect => f.write_str("ClearOnReconnect"),
            Self::Keep(_) => f.write_str("Keep(..)"),
        }
    }
}

/// The size of a message, for a send queue bounded in bytes
/// ([`ReconnectingStream::with_queue_bytes`](super::ReconnectingStream::with_queue_bytes)).
pub trait Weight {
    /// How many bytes the message counts for (its payload, say).
    fn weight(&self) -> usize;
}

impl Weight for String {
    fn weight(&self) -> usize {
        self.len()
    }
}

impl Weight for Vec<u8> {
    fn weight(&self) -> usize {
        self.len()
    }
}

impl Weight for &'static str {
    fn weight(&self) -> usize {
        self.len()
    }
}

impl Weight for u32 {
    fn weight(&self) -> usize {
        std::mem::size_of::<u32>()
    }
}

/// Accepted messages, oldest first. The first `written` have been written to the current connection, whose
/// flush has not completed yet: they are sent again if the connection fails before it does.
pub(crate) struct SendQueue<I> {
    messages: VecDeque<I>,
    written: usize,
    capacity: usize,
    /// When each message was accepted, while the policy needs it (`None` otherwise: no clock read per
    /// message).
    stamps: Option<VecDeque<Instant>>,
    /// The byte bound and the weighing, if the queue is bounded in bytes.
    bytes: Option<ByteBound<I>>,
    /// A flush of at least one message completed since [`mark`](Self::mark): the connection carried traffic
    /// out.
    pub(crate) carried: bool,
}

/// A bound in bytes: at most `max` queued (one message more than that fits into an empty queue, so that a
/// large message cannot block the queue for good).
struct ByteBound<I> {
    max: usize,
    held: usize,
    weigh: fn(&I) -> usize,
}

impl<I> fmt::Debug for SendQueue<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendQueue")
            .field("len", &self.messages.len())
            .field("written", &self.written)
            .field("capacity", &self.capacity)
            .field("bytes", &self.bytes.as_ref().map(|bound| (bound.held, bound.max)))
            .finish()
    }
}

impl<I> SendQueue<I> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            messages: VecDeque::new(),
            written: 0,
            capacity: capacity.max(1),
            stamps: None,
            bytes: None,
            carried: false,
        }
    }

    /// Records acceptance times from now on (for a policy that looks at ages); messages already queued
    /// count as accepted `now`.
    pub(crate) fn stamp_from(&mut self, now: Instant, on: bool) {
        self.stamps = on.then(|| self.messages.iter().map(|_| now).collect());
    }

    /// Bounds the queue to `max` bytes as `weigh` counts them.
    pub(crate) fn set_byte_capacity(&mut self, max: usize, weigh: fn(&I) -> usize) {
        let held = self.messages.iter().map(weigh).sum();
        self.bytes = Some(ByteBound { max, held, weigh });
    }

    /// Queued bytes, if the queue is bounded in bytes.
    pub(crate) fn bytes(&self) -> Option<usize> {
        self.bytes.as_ref().map(|bound| bound.held)
    }

    fn weigh_in(&mut self, message: &I) {
        if let Some(bound) = self.bytes.as_mut() {
            bound.held += (bound.weigh)(message);
        }
    }

    fn weigh_out(&mut self, message: &I) {
        if let Some(bound) = self.bytes.as_mut() {
            bound.held = bound.held.saturating_sub((bound.weigh)(message));
        }
    }

    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Accepted messages not known to be flushed: queued, or written and awaiting a flush.
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Whether another message fits (the capacity bounds queued plus unflushed messages, and their bytes if
    /// the queue is bounded in bytes).
    pub(crate) fn has_room(&self) -> bool {
        self.messages.len() < self.capacity
            && self
                .bytes
                .as_ref()
                .map_or(true, |bound| bound.held < bound.max || self.messages.is_empty())
    }

    /// Accepts a message (whatever the room: the caller checks [`has_room`](Self::has_room) when it must).
    pub(crate) fn push(&mut self, message: I, now: impl FnOnce() -> Instant) {
        self.weigh_in(&message);
        if let Some(stamps) = self.stamps.as_mut() {
            stamps.push_back(now());
        }
        self.messages.push_back(message);
    }

    /// Puts `messages` first, ahead of everything not yet written (a new connection's first messages).
    pub(crate) fn push_front(&mut self, messages: Vec<I>, now: Instant) {
        for message in messages.into_iter().rev() {
            self.weigh_in(&message);
            if let Some(stamps) = self.stamps.as_mut() {
                stamps.push_front(now);
            }
            self.messages.push_front(message);
        }
    }

    /// Applies `policy` to the messages not yet written, on a connection just up (`reconnect`: not the
    /// first); returns what it dropped, in order.
    pub(crate) fn apply(&mut self, policy: &mut QueuePolicy<I>, now: Instant, reconnect: bool) -> Vec<I> {
        let keep_all = match policy {
            QueuePolicy::ReplayAll => true,
            QueuePolicy::ClearOnReconnect => !reconnect,
            QueuePolicy::DropOlderThan(_) | QueuePolicy::Keep(_) => false,
        };
        if keep_all || self.messages.len() <= self.written {
            return Vec::new();
        }
        let mut kept = VecDeque::with_capacity(self.messages.len());
        let mut kept_stamps = self.stamps.as_ref().map(|_| VecDeque::new());
        let mut dropped = Vec::new();
        let mut stamps = self.stamps.take().map(VecDeque::into_iter);
        for (index, message) in std::mem::take(&mut self.messages).into_iter().enumerate() {
            let stamp = stamps.as_mut().and_then(Iterator::next).unwrap_or(now);
            let age = now.saturating_duration_since(stamp);
            let keep = index < self.written
                || match policy {
                    QueuePolicy::ReplayAll => true,
                    QueuePolicy::ClearOnReconnect => false,
                    QueuePolicy::DropOlderThan(ttl) => age <= *ttl,
                    QueuePolicy::Keep(predicate) => predicate(&message, age),
                };
            if keep {
                kept.push_back(message);
                if let Some(stamps) = kept_stamps.as_mut() {
                    stamps.push_back(stamp);
                }
            } else {
                dropped.push(message);
            }
        }
        self.messages = kept;
        self.stamps = kept_stamps;
        for message in &dropped {
            self.weigh_out(message);
        }
        dropped
    }

    /// The connection is gone: what it had not flushed goes out again, first, on the next one.
    pub(crate) fn rewind(&mut self) {
        self.written = 0;
    }

    /// Takes the messages not yet written to a connection, in order. (Those written and awaiting a flush
    /// stay: the flush may still complete. Once the connection is gone and the queue rewound, that is all.)
    pub(crate) fn take_unwritten(&mut self) -> Vec<I> {
        if let Some(stamps) = self.stamps.as_mut() {
            stamps.truncate(self.written);
        }
        let taken: Vec<I> = self.messages.drain(self.written..).collect();
        for message in &taken {
            self.weigh_out(message);
        }
        taken
    }

    /// Writes the queue to `conn` and flushes it. `Ready(Ok)` once everything accepted so far is flushed; on
    /// an error the connection is to be given up (the unflushed messages stay, for [`rewind`](Self::rewind)).
    ///
    /// When the connection has no room for the next message, what was written is flushed (as futures'
    /// `send_all` does): a connection may make room only once a flush has taken what it holds (an ack window
    /// does), and a completed flush is what hands the written messages over to it.
    pub(crate) fn poll_write<S>(&mut self, mut conn: Pin<&mut S>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>>
    where
        S: Sink<I>,
        I: Clone,
    {
        while let Some(message) = self.messages.get(self.written) {
            if conn.as_mut().poll_ready(cx)?.is_pending() {
                if self.written == 0 {
                    return Poll::Pending;
                }
                std::task::ready!(conn.as_mut().poll_flush(cx))?;
                self.flushed();
                continue;
            }
            // A copy goes out; the original stays until the flush completes, to be sent again if it fails.
            let copy = message.clone();
            self.written += 1;
            conn.as_mut().start_send(copy)?;
        }
        std::task::ready!(conn.poll_flush(cx))?;
        self.flushed();
        Poll::Ready(Ok(()))
    }

    /// A flush completed: what was written is the connection's now.
    fn flushed(&mut self) {
        self.carried |= self.written > 0;
        if let Some(stamps) = self.stamps.as_mut() {
            stamps.drain(..self.written.min(stamps.len()));
        }
        if self.bytes.is_some() {
            let flushed: Vec<I> = self.messages.drain(..self.written).collect();
            for message in &flushed {
                self.weigh_out(message);
            }
        } else {
            self.messages.drain(..self.written);
        }
        self.written = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;

    /// A sink that records what it accepted, and flushes or fails as told.
    #[derive(Default)]
    struct Recorder {
        accepted: Vec<u32>,
        flushed: usize,
        fail_flush: bool,
    }

    impl Sink<u32> for Recorder {
        type Error = &'static str;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(mut self: Pin<&mut Self>, item: u32) -> Result<(), &'static str> {
            self.accepted.push(item);
            Ok(())
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
            if self.fail_flush {
                return Poll::Ready(Err("broken"));
            }
            self.flushed = self.accepted.len();
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_failed_flush_keeps_the_messages_and_a_rewind_sends_them_again_first() {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut queue = SendQueue::new(4);
        queue.push(1, Instant::now);
        queue.push(2, Instant::now);
        let mut broken = Recorder {
            fail_flush: true,
            ..Recorder::default()
        };
        assert!(matches!(
            queue.poll_write(Pin::new(&mut broken), &mut cx),
            Poll::Ready(Err("broken"))
        ));
        assert_eq!(broken.accepted, [1, 2]);
        assert_eq!(queue.len(), 2, "unflushed messages are kept");
        queue.rewind();
        queue.push(3, Instant::now);
        let mut healthy = Recorder::default();
        assert!(matches!(
            queue.poll_write(Pin::new(&mut healthy), &mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!((healthy.accepted.as_slice(), healthy.flushed), (&[1, 2, 3][..], 3));
        assert!(queue.is_empty());
    }

    #[test]
    fn the_capacity_counts_unflushed_messages_and_is_at_least_one() {
        let mut queue = SendQueue::new(0);
        assert_eq!(queue.capacity(), 1);
        assert!(queue.has_room());
        queue.push("a", Instant::now);
        assert!(!queue.has_room());
        queue.push("b", Instant::now);
        assert_eq!(queue.take_unwritten(), ["a", "b"]);
        assert!(queue.has_room());
    }
}
