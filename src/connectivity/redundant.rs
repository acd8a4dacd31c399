//! [`Redundant`]: N connections at once (over N connectors: the same endpoint, or several), read together
//! with duplicates removed by a user key, first arrival winning; writes go to one primary.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_sink::Sink;

use crate::connect::Connect;
use crate::hash::FoldHash;
use crate::time::{AsyncIoTimer, Sleep, Timer};

/// The default number of recent keys the de-duplication remembers: 4096.
pub const DEFAULT_DEDUPE_WINDOW: usize = 4096;
/// The first wait before a lost member is dialled again; it doubles up to [`MAX_REDIAL`].
const FIRST_REDIAL: Duration = Duration::from_millis(100);
const MAX_REDIAL: Duration = Duration::from_secs(5);

type KeyOf<T> = Arc<dyn Fn(&T) -> Option<u64> + Send + Sync>;

/// The keys delivered last, oldest first, bounded.
pub(super) struct Recent {
    order: VecDeque<u64>,
    set: HashSet<u64, FoldHash>,
    window: usize,
}

impl Recent {
    pub(super) fn new(window: usize) -> Self {
        Self {
            order: VecDeque::new(),
            set: HashSet::with_hasher(FoldHash::default()),
            window: window.max(1),
        }
    }

    /// Whether `key` is new (then it is remembered, and the oldest forgotten once the window is full).
    pub(super) fn first(&mut self, key: u64) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        // The oldest goes before the new one is queued: the queue never outgrows the window.
        if self.order.len() >= self.window {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        self.order.push_back(key);
        true
    }
}

/// Redundant connections: a [`Connect`] over several connectors (one per member), for feeds served by
/// several endpoints (or several connections to one).
///
/// - A connection of it is up as soon as one member is; the others are dialled meanwhile.
/// - Reads take every member's messages; a message whose [key](Self::new) was among the last
///   [`window`](Self::with_dedupe_window) delivered is dropped (first arrival wins), so each message comes
///   once, each member's in its order.
/// - Writes go to the primary, the first member (in the order given) that is up; it is re-elected when it
///   drops (and stays the primary while it is up, even once an earlier member is back: no flapping). A write that fails fails the connection (the stream sends what it had not flushed again, on the
///   next one).
/// - A member that drops is dialled again (after 100 ms, doubling to 5 s) while the others serve; the
///   connection ends when no member is up (the stream's retry policy then dials them all again).
pub struct Redundant<C, T> {
    members: Vec<C>,
    key_of: KeyOf<T>,
    window: usize,
    timer: Arc<dyn Timer>,
}

impl<C: Clone, T> Clone for Redundant<C, T> {
    fn clone(&self) -> Self {
        Self {
            members: self.members.clone(),
            key_of: Arc::clone(&self.key_of),
            window: self.window,
            timer: Arc::clone(&self.timer),
        }
    }
}

impl<C, T> fmt::Debug for Redundant<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redundant")
            .field("members", &self.members.len())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl<C, T> Redundant<C, T> {
    /// One member per connector; `key_of` reads the de-duplication key of a message (messages without one
    /// are all delivered).
    pub fn new(members: Vec<C>, key_of: impl Fn(&T) -> Option<u64> + Send + Sync + 'static) -> Self {
        Self {
            members,
            key_of: Arc::new(key_of),
            window: DEFAULT_DEDUPE_WINDOW,
            timer: Arc::new(AsyncIoTimer),
        }
    }

    /// How many recent keys are remembered (default [`DEFAULT_DEDUPE_WINDOW`]): enough to cover what the
    /// slowest member may lag behind the fastest.
    pub fn with_dedupe_window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// Uses `timer` for the re-dial delays (for tests: a [`ManualClock`](crate::time::ManualClock)).
    pub fn with_timer(mut self, timer: impl Timer + 'static) -> Self {
        self.timer = Arc::new(timer);
        self
    }
}

/// Where a member is.
enum Member<C: Connect> {
    Up(C::Connection),
    Dialling(Pin<Box<C::Future>>),
    Waiting(Sleep),
}

/// One member: its connector, where it is, and its current re-dial delay.
struct Slot<C: Connect> {
    connector: C,
    state: Member<C>,
    delay: Duration,
}

impl<C, T> Connect for Redundant<C, T>
where
    C: Connect + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Connection: Send,
    C::Error: Send,
    T: 'static,
{
    type Connection = RedundantConnection<C, T>;
    type Error = C::Error;
    type Future = RedundantFuture<C, T>;

    fn connect(&mut self) -> Self::Future {
        let slots = self
            .members
            .iter()
            .map(|connector| {
                let mut connector = connector.clone();
                let attempt = Box::pin(connector.connect());
                Slot {
                    connector,
                    state: Member::Dialling(attempt),
                    delay: FIRST_REDIAL,
                }
            })
            .collect();
        RedundantFuture {
            slots: Some(slots),
            key_of: Arc::clone(&self.key_of),
            window: self.window,
            timer: Arc::clone(&self.timer),
        }
    }
}

/// The attempt future of [`Redundant`]: done when one member is up (or every first attempt failed).
///
/// # Cancel safety
///
/// Dropping it abandons every member's attempt.
pub struct RedundantFuture<C: Connect, T> {
    slots: Option<Vec<Slot<C>>>,
    key_of: KeyOf<T>,
    window: usize,
    timer: Arc<dyn Timer>,
}

impl<C: Connect, T> Unpin for RedundantFuture<C, T> {}

impl<C: Connect, T> fmt::Debug for RedundantFuture<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedundantFuture").finish_non_exhaustive()
    }
}

impl<C: Connect, T> Future for RedundantFuture<C, T> {
    type Output = Result<RedundantConnection<C, T>, C::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(slots) = this.slots.as_mut() else {
            return Poll::Pending;
        };
        let mut last_error = None;
        let mut dialling = 0;
        for slot in slots.iter_mut() {
            if let Member::Dialling(attempt) = &mut slot.state {
                match attempt.as_mut().poll(cx) {
                    Poll::Ready(Ok(conn)) => slot.state = Member::Up(conn),
                    Poll::Ready(Err(error)) => {
                        last_error = Some(error);
                        slot.state = Member::Waiting(Box::pin(std::future::pending()));
                    }
                    Poll::Pending => dialling += 1,
                }
            }
        }
        if slots.iter().any(|slot| matches!(slot.state, Member::Up(_))) {
            let mut slots = this.slots.take().unwrap_or_default();
            // Those that failed their first attempt are dialled again after the first delay.
            for slot in &mut slots {
                if let Member::Waiting(_) = slot.state {
                    slot.state = Member::Waiting(sleep(&this.timer, slot.delay));
                }
            }
            return Poll::Ready(Ok(RedundantConnection {
                slots,
                recent: Recent::new(this.window),
                key_of: Arc::clone(&this.key_of),
                timer: Arc::clone(&this.timer),
                next_read: 0,
                primary: None,
                held: None,
            }));
        }
        match (dialling, last_error) {
            (0, Some(error)) => {
                this.slots = None;
                Poll::Ready(Err(error))
            }
            _ => Poll::Pending,
        }
    }
}

fn sleep(timer: &Arc<dyn Timer>, after: Duration) -> Sleep {
    match timer.now().checked_add(after) {
        Some(at) => timer.sleep_until(at),
        None => Box::pin(std::future::pending()),
    }
}

/// A connection of [`Redundant`]: its members, read together, written through the primary.
pub struct RedundantConnection<C: Connect, T> {
    slots: Vec<Slot<C>>,
    recent: Recent,
    key_of: KeyOf<T>,
    timer: Arc<dyn Timer>,
    /// Where the next read starts (fairness).
    next_read: usize,
    /// The member writes went to since the last flush.
    primary: Option<usize>,
    /// A message accepted while no primary was up (outside the `Sink` protocol): written first.
    held: Option<T>,
}

impl<C: Connect, T> Unpin for RedundantConnection<C, T> {}

impl<C: Connect, T> fmt::Debug for RedundantConnection<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedundantConnection")
            .field("members", &self.slots.len())
            .field("up", &self.up())
            .field("primary", &self.primary)
            .finish_non_exhaustive()
    }
}

impl<C: Connect, T> RedundantConnection<C, T> {
    /// How many members are up.
    pub fn up(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| matches!(slot.state, Member::Up(_)))
            .count()
    }

    /// The first member that is up: where writes go.
    fn elect(&self) -> Option<usize> {
        self.slots.iter().position(|slot| matches!(slot.state, Member::Up(_)))
    }

    /// Member `index` is lost: dialled again after its delay (doubled for the next time).
    fn lose(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            slot.state = Member::Waiting(sleep(&self.timer, slot.delay));
            slot.delay = (slot.delay * 2).min(MAX_REDIAL);
        }
        if self.primary == Some(index) {
            self.primary = None;
        }
    }

    /// Members waiting or dialling make progress.
    fn poll_members(&mut self, cx: &mut Context<'_>) {
        for slot in &mut self.slots {
            if let Member::Waiting(wait) = &mut slot.state {
                if wait.as_mut().poll(cx).is_ready() {
                    slot.state = Member::Dialling(Box::pin(slot.connector.connect()));
                }
            }
            if let Member::Dialling(attempt) = &mut slot.state {
                match attempt.as_mut().poll(cx) {
                    Poll::Ready(Ok(conn)) => {
                        slot.state = Member::Up(conn);
                        slot.delay = FIRST_REDIAL;
                    }
                    Poll::Ready(Err(_)) => {
                        slot.state = Member::Waiting(sleep(&self.timer, slot.delay));
                        slot.delay = (slot.delay * 2).min(MAX_REDIAL);
                        if let Member::Waiting(wait) = &mut slot.state {
                            let _ = wait.as_mut().poll(cx);
                        }
                    }
                    Poll::Pending => {}
                }
            }
        }
    }
}

impl<C, T, E> Stream for RedundantConnection<C, T>
where
    C: Connect,
    C::Connection: Stream<Item = Result<T, E>> + Unpin,
{
    type Item = Result<T, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.poll_members(cx);
        let count = this.slots.len();
        let mut last_error = None;
        let mut scanned = 0;
        while scanned < count {
            let index = (this.next_read + scanned) % count;
            let Member::Up(conn) = &mut this.slots[index].state else {
                scanned += 1;
                continue;
            };
            match Pin::new(conn).poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => {
                    let fresh = (this.key_of)(&item).map_or(true, |key| this.recent.first(key));
                    if fresh {
                        // The next read starts after this member, so that none starves the others.
                        this.next_read = (index + 1) % count;
                        return Poll::Ready(Some(Ok(item)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    last_error = Some(error);
                    this.lose(index);
                    this.poll_members(cx);
                    scanned += 1;
                }
                Poll::Ready(None) => {
                    this.lose(index);
                    this.poll_members(cx);
                    scanned += 1;
                }
                Poll::Pending => scanned += 1,
            }
        }
        if this.up() > 0 {
            return Poll::Pending;
        }
        // No member is up: the connection ends, and the stream's retry policy dials the group again.
        match last_error {
            Some(error) => Poll::Ready(Some(Err(error))),
            None => Poll::Ready(None),
        }
    }
}

impl<C, T> Sink<T> for RedundantConnection<C, T>
where
    C: Connect,
    C::Connection: Sink<T> + Unpin,
{
    type Error = <C::Connection as Sink<T>>::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        this.poll_members(cx);
        if this.primary.is_none() {
            this.primary = this.elect();
        }
        let Some(Member::Up(conn)) = this.primary.map(|index| &mut this.slots[index].state) else {
            // No member up: wait for one (the read side ends the connection if none comes back).
            return Poll::Pending;
        };
        if let Some(held) = this.held.take() {
            std::task::ready!(Pin::new(&mut *conn).poll_ready(cx))?;
            Pin::new(&mut *conn).start_send(held)?;
        }
        Pin::new(conn).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), Self::Error> {
        let this = self.get_mut();
        match this.primary.map(|index| &mut this.slots[index].state) {
            Some(Member::Up(conn)) => Pin::new(conn).start_send(item),
            // Outside the protocol (no `poll_ready` found a primary): kept, written first once one is up.
            _ => {
                this.held = Some(item);
                Ok(())
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        let Some(index) = this.primary else {
            return Poll::Ready(Ok(()));
        };
        match &mut this.slots[index].state {
            Member::Up(conn) => Pin::new(conn).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        let mut outcome = Poll::Ready(Ok(()));
        for slot in &mut this.slots {
            if let Member::Up(conn) = &mut slot.state {
                match Pin::new(conn).poll_close(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => outcome = Poll::Ready(Err(error)),
                    Poll::Pending => {
                        if outcome.is_ready() {
                            outcome = Poll::Pending;
                        }
                    }
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn recent_keys_are_bounded_and_repeat_only_once_forgotten() {
        let mut recent = Recent::new(2);
        assert!(recent.first(1));
        assert!(!recent.first(1));
        assert!(recent.first(2));
        assert!(recent.first(3));
        assert!(recent.first(1), "1 was forgotten: the window holds 2");
        assert_eq!((recent.order.len(), recent.set.len()), (2, 2));
        assert!(!recent.first(3) && !recent.first(1) && recent.first(2));
    }

    /// A full window of 4096 keeps its queue at 4096 slots (it once grew to 8192 on the 4097th key), and
    /// the seeded hash tells every key apart.
    #[test]
    fn a_full_window_does_not_outgrow_itself() {
        let mut recent = Recent::new(4096);
        for key in 0..100_000u64 {
            assert!(recent.first(key.wrapping_mul(0x1_0000_0001)));
        }
        assert!(recent.order.capacity() < 8192, "{}", recent.order.capacity());
        assert_eq!(recent.set.len(), 4096);
        assert!(!recent.first(99_999u64.wrapping_mul(0x1_0000_0001)));
    }
}
