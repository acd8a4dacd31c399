//! One waker slot per half, and a combined waker that wakes both.
//!
//! The connect future and the backoff sleep are shared by the read and the write half: whichever half polls
//! them must not steal the other's wake-up. They are polled with the combined waker, which wakes both slots.

use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// Which half of the stream is polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Read,
    Write,
}

#[derive(Debug, Default)]
pub(crate) struct WakerSlots {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
}

impl WakerSlots {
    pub(crate) fn new_pair() -> (Arc<Self>, Waker) {
        let slots = Arc::new(Self::default());
        let combined = Waker::from(Arc::clone(&slots));
        (slots, combined)
    }

    fn slot(&self, side: Side) -> &Mutex<Option<Waker>> {
        match side {
            Side::Read => &self.read,
            Side::Write => &self.write,
        }
    }

    /// Remembers the waker of the task polling `side`.
    pub(crate) fn register(&self, side: Side, waker: &Waker) {
        let mut slot = self.slot(side).lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Wakes the task polling `side`, if one is waiting.
    pub(crate) fn wake(&self, side: Side) {
        let waker = self.slot(side).lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Wake for WakerSlots {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let take = |slot: &Mutex<Option<Waker>>| slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (reader, writer) = (take(&self.read), take(&self.write));
        // One task polling both halves (the usual case) is woken once.
        if let Some(writer) = writer.filter(|writer| !reader.as_ref().is_some_and(|reader| reader.will_wake(writer))) {
            writer.wake();
        }
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

impl Side {
    pub(crate) fn other(self) -> Self {
        match self {
            Side::Read => Side::Write,
            Side::Write => Side::Read,
        }
    }
}
