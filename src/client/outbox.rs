//! The client's outbox: what its [`Sender`](super::Sender)s accepted and no run has taken yet.
//!
//! A bounded queue that allocates only for what it holds (an idle client holds nothing), and that the client
//! itself can drain: [`take_unsent`](super::WebSocketClient::take_unsent) hands back what sits here too, so a
//! message a sender accepted is delivered or handed back, whether or not a run is there to take it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use async_tungstenite::tungstenite::Message;
use event_listener::{Event as Notify, EventListener};

/// A bounded queue of accepted messages, oldest first.
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    capacity: usize,
    /// At most this many payload bytes (a message larger than that still goes into an empty queue).
    max_bytes: Option<usize>,
    /// The driver's wake-up: notified when a message is queued, the outbox closes, or (by the client) a
    /// shutdown is asked.
    pub(super) wake: Notify,
    /// Notified when room is made or the outbox closes (senders wait on it).
    room: Notify,
}

struct Queue {
    messages: VecDeque<Message>,
    /// Payload bytes queued (counted only with a byte bound).
    bytes: usize,
    /// The client is gone: nothing more is accepted.
    closed: bool,
}

/// Why [`Outbox::push`] did not queue a message; it is handed back.
pub(super) enum Refused {
    Full(Message),
    Closed(Message),
}

impl Outbox {
    pub(super) fn new(capacity: usize, max_bytes: Option<usize>) -> Self {
        Self {
            queue: Mutex::new(Queue {
                messages: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            capacity: capacity.max(1),
            max_bytes,
            wake: Notify::new(),
            room: Notify::new(),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `message` if there is room.
    pub(super) fn push(&self, message: Message) -> Result<(), Refused> {
        {
            let mut queue = self.queue();
            if queue.closed {
                return Err(Refused::Closed(message));
            }
            let over_bytes = self
                .max_bytes
                .is_some_and(|max| queue.bytes >= max && !queue.messages.is_empty());
            if queue.messages.len() >= self.capacity || over_bytes {
                return Err(Refused::Full(message));
            }
            if self.max_bytes.is_some() {
                queue.bytes += message.len();
            }
            queue.messages.push_back(message);
        }
        self.wake.notify(1);
        Ok(())
    }

    /// Queues `message`, waiting while the outbox is full.
    ///
    /// Cancel safety: dropping the future drops the message, which was not queued.
    pub(super) async fn push_wait(&self, mut message: Message) -> Result<(), Message> {
        loop {
            match self.push(message) {
                Ok(()) => return Ok(()),
                Err(Refused::Closed(back)) => return Err(back),
                Err(Refused::Full(back)) => message = back,
            }
            let listener = self.room.listen();
            // Room may have been made between the failed push and `listen`: look again before waiting.
            match self.push(message) {
                Ok(()) => return Ok(()),
                Err(Refused::Closed(back)) => return Err(back),
                Err(Refused::Full(back)) => message = back,
            }
            listener.await;
        }
    }

    /// The oldest message, if any.
    pub(super) fn pop(&self) -> Option<Message> {
        let message = {
            let mut queue = self.queue();
            let message = queue.messages.pop_front();
            if let Some(message) = &message {
                queue.bytes = queue.bytes.saturating_sub(message.len());
            }
            message
        };
        if message.is_some() {
            self.room.notify(1);
        }
        message
    }

    /// Every queued message, oldest first.
    pub(super) fn drain(&self) -> Vec<Message> {
        let drained: Vec<Message> = {
            let mut queue = self.queue();
            queue.bytes = 0;
            queue.messages.drain(..).collect()
        };
        if !drained.is_empty() {
            self.room.notify(usize::MAX);
        }
        drained
    }

    /// A listener for the driver's next wake-up (register it, then look again, then wait).
    pub(super) fn listen(&self) -> EventListener {
        self.wake.listen()
    }

    pub(super) fn len(&self) -> usize {
        self.queue().messages.len()
    }

    /// The client is gone: senders are refused from now on (what is queued is dropped with the client).
    pub(super) fn close(&self) {
        self.queue().closed = true;
        self.room.notify(usize::MAX);
        self.wake.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_its_capacity_in_order_hands_back_what_it_refuses_and_drains() {
        let outbox = Outbox::new(2, None);
        assert!(outbox.push(Message::text("a")).is_ok());
        assert!(outbox.push(Message::text("b")).is_ok());
        assert!(matches!(outbox.push(Message::text("c")), Err(Refused::Full(m)) if m == Message::text("c")));
        assert_eq!(outbox.pop(), Some(Message::text("a")));
        assert!(outbox.push(Message::text("c")).is_ok());
        assert_eq!(outbox.drain(), [Message::text("b"), Message::text("c")]);
        outbox.close();
        assert!(matches!(outbox.push(Message::text("d")), Err(Refused::Closed(_))));
    }

    #[test]
    fn a_waiting_push_goes_in_once_room_is_made() {
        use std::future::Future;
        use std::task::{Context, Poll};
        let outbox = Outbox::new(1, None);
        assert!(outbox.push(Message::text("a")).is_ok());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let push = outbox.push_wait(Message::text("b"));
        futures_util::pin_mut!(push);
        assert!(push.as_mut().poll(&mut cx).is_pending(), "full: it waits");
        assert_eq!(outbox.pop(), Some(Message::text("a")));
        assert!(matches!(push.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(outbox.drain(), [Message::text("b")]);
    }
}
