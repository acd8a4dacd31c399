//! The send queue: messages accepted by the sink, kept until a flush of the connection they were written to
//! completes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_sink::Sink;

/// Accepted messages, oldest first. The first `written` have been written to the current connection, whose
/// flush has not completed yet: they are sent again if the connection fails before it does.
#[derive(Debug)]
pub(crate) struct SendQueue<I> {
    messages: VecDeque<I>,
    written: usize,
    capacity: usize,
    /// A flush of at least one message completed since [`mark`](Self::mark): the connection carried traffic
    /// out.
    pub(crate) carried: bool,
}

impl<I> SendQueue<I> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            messages: VecDeque::new(),
            written: 0,
            capacity: capacity.max(1),
            carried: false,
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

    /// Whether another message fits (the capacity bounds queued plus unflushed messages).
    pub(crate) fn has_room(&self) -> bool {
        self.messages.len() < self.capacity
    }

    /// Accepts a message (even beyond the capacity: `start_send` never refuses).
    pub(crate) fn push(&mut self, message: I) {
        self.messages.push_back(message);
    }

    /// The connection is gone: what it had not flushed goes out again, first, on the next one.
    pub(crate) fn rewind(&mut self) {
        self.written = 0;
    }

    /// Takes the messages not yet written to a connection, in order. (Those written and awaiting a flush
    /// stay: the flush may still complete. Once the connection is gone and the queue rewound, that is all.)
    pub(crate) fn take_unwritten(&mut self) -> Vec<I> {
        self.messages.drain(self.written..).collect()
    }

    /// Writes the queue to `conn` and flushes it. `Ready(Ok)` once everything accepted so far is flushed; on
    /// an error the connection is to be given up (the unflushed messages stay, for [`rewind`](Self::rewind)).
    pub(crate) fn poll_write<S>(&mut self, mut conn: Pin<&mut S>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>>
    where
        S: Sink<I>,
        I: Clone,
    {
        while let Some(message) = self.messages.get(self.written) {
            std::task::ready!(conn.as_mut().poll_ready(cx))?;
            // A copy goes out; the original stays until the flush completes, to be sent again if it fails.
            let copy = message.clone();
            self.written += 1;
            conn.as_mut().start_send(copy)?;
        }
        std::task::ready!(conn.poll_flush(cx))?;
        self.carried |= self.written > 0;
        self.messages.drain(..self.written);
        self.written = 0;
        Poll::Ready(Ok(()))
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
        queue.push(1);
        queue.push(2);
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
        queue.push(3);
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
        queue.push("a");
        assert!(!queue.has_room());
        queue.push("b");
        assert_eq!(queue.take_unwritten(), ["a", "b"]);
        assert!(queue.has_room());
    }
}
