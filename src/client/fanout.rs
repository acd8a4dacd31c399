//! A bounded broadcast built for throughput: the publisher hands over a batch of items under one lock, and a
//! receiver takes everything published since its last visit under one lock, then serves it from a local buffer.
//!
//! So a busy stream costs one lock per batch on each side instead of one per item, and a subscriber that is
//! the last to take an item gets it moved, not cloned. Semantics are those of a broadcast channel in overflow
//! mode: every receiver gets every item published after it subscribed, in order; the channel keeps at most
//! `capacity` items, dropping the oldest when full, and a receiver that had not taken a dropped item is told
//! how many it missed. The publisher never waits.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use event_listener::{Event, EventListener};

/// The publishing half; dropping it closes the channel (receivers drain what is buffered, then see the end).
pub(crate) struct Publisher<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    ring: Mutex<Ring<T>>,
    /// Notified when items are published or the channel closes.
    published: Event,
}

struct Ring<T> {
    /// Published items not yet taken by every receiver.
    items: VecDeque<T>,
    /// The sequence number of `items[0]`.
    head: u64,
    capacity: usize,
    /// Each live receiver's cursor, the sequence number of the next item it takes, by slot (`None`: a free
    /// slot). `head` is the smallest cursor, unless items were dropped for room.
    cursors: Vec<Option<u64>>,
    closed: bool,
}

impl<T> Ring<T> {
    /// The sequence number the next published item gets.
    fn end(&self) -> u64 {
        self.head + self.items.len() as u64
    }

    /// Drops the items every receiver has taken (all of them when there is no receiver).
    fn release(&mut self) {
        let slowest = self.cursors.iter().flatten().copied().min().unwrap_or(u64::MAX);
        let done = slowest.saturating_sub(self.head).min(self.items.len() as u64);
        self.items.drain(..usize::try_from(done).unwrap_or(usize::MAX));
        self.head += done;
    }
}

impl<T> Shared<T> {
    fn ring(&self) -> MutexGuard<'_, Ring<T>> {
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<T: Clone> Publisher<T> {
    /// A channel keeping at most `capacity` items (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                ring: Mutex::new(Ring {
                    items: VecDeque::new(),
                    head: 0,
                    capacity: capacity.max(1),
                    cursors: Vec::new(),
                    closed: false,
                }),
                published: Event::new(),
            }),
        }
    }

    /// A receiver of the items published from now on.
    pub(crate) fn subscribe(&self) -> Receiver<T> {
        let mut ring = self.shared.ring();
        let end = ring.end();
        let slot = match ring.cursors.iter().position(Option::is_none) {
            Some(free) => {
                ring.cursors[free] = Some(end);
                free
            }
            None => {
                ring.cursors.push(Some(end));
                ring.cursors.len() - 1
            }
        };
        Receiver {
            shared: Arc::clone(&self.shared),
            slot,
            local: VecDeque::new(),
            listener: None,
        }
    }

    /// Whether anyone receives (so that a batch is worth making).
    pub(crate) fn has_receivers(&self) -> bool {
        self.shared.ring().cursors.iter().any(Option::is_some)
    }

    /// Publishes one item.
    pub(crate) fn publish(&self, item: T) {
        let mut batch = VecDeque::from([item]);
        self.publish_all(&mut batch);
    }

    /// Publishes the items of `batch` in order, leaving it empty: under one lock, handing over the whole
    /// buffer when nothing else is waiting, and waking the receivers once. Without receivers the items are
    /// dropped.
    pub(crate) fn publish_all(&self, batch: &mut VecDeque<T>) {
        if batch.is_empty() {
            return;
        }
        let mut ring = self.shared.ring();
        if ring.cursors.iter().all(Option::is_none) {
            drop(ring);
            batch.clear();
            return;
        }
        if ring.items.is_empty() {
            std::mem::swap(&mut ring.items, batch);
        } else {
            ring.items.extend(batch.drain(..));
        }
        // Full: drop the oldest; receivers that had not taken them are told how many they missed.
        let excess = ring.items.len().saturating_sub(ring.capacity);
        ring.items.drain(..excess);
        ring.head += excess as u64;
        drop(ring);
        self.shared.published.notify(usize::MAX);
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        self.shared.ring().closed = true;
        self.shared.published.notify(usize::MAX);
    }
}

/// What a receive found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recv<T> {
    Item(T),
    /// Items were dropped before this receiver took them.
    Lagged(u64),
    /// Nothing buffered now.
    Empty,
    /// Nothing buffered, and the publisher is gone.
    Closed,
}

/// The receiving half: every item published after it was made, in order.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// Its cursor's index in the ring.
    slot: usize,
    /// Taken from the ring, not yet returned.
    local: VecDeque<T>,
    listener: Option<EventListener>,
}

impl<T: Clone> Receiver<T> {
    /// The next item already taken from the ring, if any: no lock.
    #[inline]
    pub(crate) fn pop_local(&mut self) -> Option<T> {
        self.local.pop_front()
    }

    /// The next item, without waiting.
    pub(crate) fn try_recv(&mut self) -> Recv<T> {
        if let Some(item) = self.local.pop_front() {
            return Recv::Item(item);
        }
        let mut ring = self.shared.ring();
        let ring = &mut *ring;
        let Some(Some(cursor)) = ring.cursors.get(self.slot).copied() else {
            return Recv::Closed;
        };
        if cursor < ring.head {
            ring.cursors[self.slot] = Some(ring.head);
            return Recv::Lagged(ring.head - cursor);
        }
        let end = ring.end();
        if cursor == end {
            return if ring.closed { Recv::Closed } else { Recv::Empty };
        }
        // Take everything published since the last visit. What no other receiver still needs is at the front
        // (every receiver takes in order) and is moved, the whole buffer at once if possible; the rest cloned.
        let others = (ring.cursors.iter().enumerate())
            .filter(|&(slot, _)| slot != self.slot)
            .filter_map(|(_, cursor)| *cursor)
            .min()
            .unwrap_or(u64::MAX)
            .max(ring.head); // a receiver that lagged is behind `head`: nothing of its is left

        if cursor == ring.head && others >= end {
            std::mem::swap(&mut ring.items, &mut self.local);
            ring.head = end;
        } else {
            if cursor == ring.head {
                let movable = usize::try_from(others - cursor).unwrap_or(usize::MAX);
                self.local.extend(ring.items.drain(..movable));
                ring.head = others;
            }
            let skip = usize::try_from(cursor.max(ring.head) - ring.head).unwrap_or(usize::MAX);
            self.local.extend(ring.items.iter().skip(skip).cloned());
        }
        ring.cursors[self.slot] = Some(end);
        match self.local.pop_front() {
            Some(item) => Recv::Item(item),
            None => Recv::Empty,
        }
    }

    /// The next item, or `Pending` until one is published (or the channel closes).
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Recv<T>> {
        loop {
            match self.try_recv() {
                Recv::Empty => {}
                found => {
                    self.listener = None;
                    return Poll::Ready(found);
                }
            }
            match self.listener.as_mut() {
                // Listen, then look again: an item published in between is not missed.
                None => self.listener = Some(self.shared.published.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => self.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }

    /// Items buffered for this receiver.
    pub(crate) fn len(&self) -> usize {
        let ring = self.shared.ring();
        let cursor = ring.cursors.get(self.slot).copied().flatten().unwrap_or(u64::MAX);
        let in_ring = ring.end().saturating_sub(cursor.max(ring.head));
        self.local.len() + usize::try_from(in_ring).unwrap_or(usize::MAX)
    }
}

// Items are never pinned in place.
impl<T> Unpin for Receiver<T> {}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut ring = self.shared.ring();
        if let Some(cursor) = ring.cursors.get_mut(self.slot) {
            *cursor = None;
        }
        // Release what only this receiver still needed.
        ring.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut Receiver<u32>) -> Vec<Recv<u32>> {
        let mut out = Vec::new();
        loop {
            match rx.try_recv() {
                Recv::Empty => return out,
                Recv::Closed => {
                    out.push(Recv::Closed);
                    return out;
                }
                found => out.push(found),
            }
        }
    }

    #[test]
    fn every_receiver_gets_every_item_in_order() {
        let tx = Publisher::new(8);
        let mut a = tx.subscribe();
        tx.publish_all(&mut VecDeque::from([1, 2]));
        let mut b = tx.subscribe();
        tx.publish_all(&mut VecDeque::from([3]));
        assert_eq!(drain(&mut a), vec![Recv::Item(1), Recv::Item(2), Recv::Item(3)]);
        assert_eq!(drain(&mut b), vec![Recv::Item(3)]);
        // Everything was taken by everyone: the ring is empty.
        assert!(tx.shared.ring().items.is_empty());
    }

    #[test]
    fn a_slow_receiver_is_told_how_many_it_missed() {
        let tx = Publisher::new(3);
        let mut slow = tx.subscribe();
        let mut fast = tx.subscribe();
        for n in 1..=5 {
            tx.publish(n);
            assert_eq!(fast.try_recv(), Recv::Item(n));
        }
        assert_eq!(
            drain(&mut slow),
            vec![Recv::Lagged(2), Recv::Item(3), Recv::Item(4), Recv::Item(5)]
        );
    }

    #[test]
    fn items_without_receivers_are_dropped_and_a_dropped_receiver_releases_its_claim() {
        let tx = Publisher::new(4);
        tx.publish(1);
        let mut a = tx.subscribe();
        let b = tx.subscribe();
        tx.publish_all(&mut VecDeque::from([2, 3]));
        drop(b);
        assert_eq!(drain(&mut a), vec![Recv::Item(2), Recv::Item(3)]);
        assert!(tx.shared.ring().items.is_empty());
    }

    #[test]
    fn closing_lets_receivers_drain_then_reports_the_end() {
        let tx = Publisher::new(4);
        let mut rx = tx.subscribe();
        tx.publish(7);
        drop(tx);
        assert_eq!(drain(&mut rx), vec![Recv::Item(7), Recv::Closed]);
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_publish() {
        let tx = Publisher::new(4);
        let mut rx = tx.subscribe();
        let (waker, wakes) = futures_test::task::new_count_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.publish(9);
        assert_eq!(wakes.get(), 1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Recv::Item(9)));
        assert_eq!(rx.len(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Subscribe,
        Unsubscribe(usize),
        Publish(u8),
        Recv(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            1 => Just(Op::Subscribe),
            1 => any::<usize>().prop_map(Op::Unsubscribe),
            3 => (1..6_u8).prop_map(Op::Publish),
            4 => any::<usize>().prop_map(Op::Recv),
        ]
    }

    proptest::proptest! {
        /// Against a model: each receiver gets, in order, every item published while it existed, except the
        /// oldest ones dropped for room before it took them, which it is told about (lagged by exactly their
        /// number); and the ring never holds more than its capacity nor anything every receiver has taken.
        #[test]
        fn matches_the_model(capacity in 1..6_usize, ops in proptest::collection::vec(op(), 1..80)) {
            let tx = Publisher::new(capacity);
            // Per receiver: the receiver, and its model cursor (next sequence number it should get).
            let mut receivers: Vec<(Receiver<u64>, u64)> = Vec::new();
            let mut end = 0_u64; // sequence numbers published with a receiver present
            for op in ops {
                match op {
                    Op::Subscribe => receivers.push((tx.subscribe(), end)),
                    Op::Unsubscribe(i) if !receivers.is_empty() => {
                        receivers.remove(i % receivers.len());
                    }
                    Op::Unsubscribe(_) => {}
                    Op::Publish(n) => {
                        let mut batch: VecDeque<u64> = (end..end + u64::from(n)).collect();
                        if !receivers.is_empty() {
                            end += u64::from(n);
                        }
                        tx.publish_all(&mut batch);
                        proptest::prop_assert!(batch.is_empty());
                    }
                    Op::Recv(i) if !receivers.is_empty() => {
                        let len = receivers.len();
                        let (rx, cursor) = &mut receivers[i % len];
                        let oldest = end.saturating_sub(capacity as u64);
                        // What a receiver already took into its own buffer is its to keep.
                        let expected = if *cursor < oldest && rx.local.is_empty() {
                            let missed = oldest - *cursor;
                            *cursor = oldest;
                            Recv::Lagged(missed)
                        } else if *cursor < end {
                            *cursor += 1;
                            Recv::Item(*cursor - 1)
                        } else {
                            Recv::Empty
                        };
                        proptest::prop_assert_eq!(rx.try_recv(), expected);
                    }
                    Op::Recv(_) => {}
                }
                let ring = tx.shared.ring();
                proptest::prop_assert!(ring.items.len() <= capacity);
                let slowest = receivers.iter().map(|(rx, model)| {
                    // Items already moved to the receiver's local buffer count as taken.
                    model + rx.local.len() as u64
                });
                if let Some(slowest) = slowest.min() {
                    proptest::prop_assert!(ring.head <= slowest.max(end.saturating_sub(capacity as u64)));
                } else {
                    proptest::prop_assert!(ring.items.is_empty());
                }
            }
        }
    }
}
