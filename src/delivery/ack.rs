//! [`AckLayer`]: acknowledged sends. Each tracked message waits for the peer's ack; unacked messages go out
//! again, first, on every new connection, within a bounded window; each send has an [`Outcome`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::hash::FoldHash;
use crate::time::{AsyncIoTimer, Timer};

mod connection;

pub use self::connection::{AckConnection, AckConnector, AckFuture};

/// The default number of tracked messages not yet acknowledged: 64.
pub const DEFAULT_ACK_WINDOW: usize = 64;
/// The default time a message waits for its ack before it is sent again: 10 s.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of times a message is sent before its outcome is [`Outcome::Failed`]: 5.
pub const DEFAULT_ACK_ATTEMPTS: u32 = 5;
/// How many acked outcomes nobody asked for yet are kept at least (twice the window when that is more; the
/// oldest are forgotten first; awaited and failed ones are kept until taken).
const KEPT_ACKED: usize = 1024;

/// What an inbound message says about a tracked one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack<Id> {
    /// The peer has it.
    Ack(Id),
    /// The peer refused it: it is not sent again.
    Nack(Id),
}

/// How a tracked send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The peer acknowledged it.
    Acked,
    /// The peer refused it (a nack); the message is handed back.
    Nacked(T),
    /// No ack came after every attempt ([`AckLayer::with_attempts`]); the message is handed back.
    Failed(T),
}

type IdOf<T, Id> = Arc<dyn Fn(&T) -> Option<Id> + Send + Sync>;
type AckOf<T, Id> = Arc<dyn Fn(&T) -> Option<Ack<Id>> + Send + Sync>;

/// Acknowledged sends, as a layer over a connector: each outbound message from which `id_of` reads an id is
/// tracked until an inbound message from which `ack_of` reads its ack (or nack) arrives.
///
/// - **At least once.** A tracked message that has no ack within the [timeout](Self::with_timeout) is sent
///   again on the same connection; when a connection is replaced, every unacked message is sent again first
///   on the new one, in order, before anything queued after it. It is delivered twice only if the peer got it
///   and its ack was lost (or slow): the peer must tolerate duplicates (by id).
/// - **Bounded.** At most [`window`](Self::with_window) tracked messages are unacked (or failed and not yet
///   taken): beyond that, sending waits (backpressure).
/// - **An outcome for every send.** [`Acks::outcome`] awaits it, [`Acks::try_outcome`] polls it: acked, or
///   the message handed back when the peer nacked it or every [attempt](Self::with_attempts) is spent.
/// - Acks are not delivered to the reader unless [`deliver_acks`](Self::deliver_acks) says so.
///
/// A message is tracked once a flush of the connection it was written to completes; before that it belongs
/// to the reconnecting stream's queue, which sends it again itself. (When a flush beside the stream's own
/// tracked it first, the stream's replay of it on the next connection is not sent: the layer's resend is.)
/// An id must be unique among the messages not yet acked.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use stream_tungstenite::delivery::{Ack, AckLayer};
/// use stream_tungstenite::layer::ConnectorBuilder;
/// use stream_tungstenite::{tungstenite::Message, ReconnectingStream};
///
/// // Outbound `{"id":7,...}` is tracked as 7; inbound `{"ack":7}` acknowledges it.
/// let number = |message: &Message, key: &str| -> Option<u64> {
///     let value: serde_json::Value = serde_json::from_str(message.to_text().ok()?).ok()?;
///     value.get(key)?.as_u64()
/// };
/// let (layer, acks) = AckLayer::new(
///     move |m: &Message| number(m, "id"),
///     move |m: &Message| number(m, "ack").map(Ack::Ack),
/// );
/// let layer = layer.with_timeout(Duration::from_secs(5)).with_window(128);
/// let connector = ConnectorBuilder::new(|| stream_tungstenite::connect("wss://example.com/orders"))
///     .layer(layer)
///     .build();
/// let ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector);
/// // ws.send(order).await?; then acks.outcome(&id).await
/// # drop((ws, acks));
/// ```
pub struct AckLayer<T, Id> {
    shared: Arc<Shared<T, Id>>,
    id_of: IdOf<T, Id>,
    ack_of: AckOf<T, Id>,
    deliver_acks: bool,
}

impl<T, Id> Clone for AckLayer<T, Id> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            id_of: Arc::clone(&self.id_of),
            ack_of: Arc::clone(&self.ack_of),
            deliver_acks: self.deliver_acks,
        }
    }
}

impl<T, Id> fmt::Debug for AckLayer<T, Id> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state();
        f.debug_struct("AckLayer")
            .field("window", &state.window)
            .field("timeout", &state.timeout)
            .field("attempts", &state.attempts)
            .field("unacked", &state.unacked.len())
            .finish_non_exhaustive()
    }
}

/// The handle to an [`AckLayer`]'s outcomes; cheap to clone.
pub struct Acks<T, Id> {
    shared: Arc<Shared<T, Id>>,
}

impl<T, Id> Clone for Acks<T, Id> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T, Id> fmt::Debug for Acks<T, Id> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acks")
            .field("unacked", &self.shared.state().unacked.len())
            .finish()
    }
}

struct Shared<T, Id> {
    state: Mutex<State<T, Id>>,
}

impl<T, Id> Shared<T, Id> {
    fn state(&self) -> MutexGuard<'_, State<T, Id>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A tracked message not acked yet.
struct Unacked<T, Id> {
    id: Id,
    message: T,
    /// When it was last written.
    sent: Instant,
    /// How many times it was written.
    attempts: u32,
}

struct State<T, Id> {
    window: usize,
    timeout: Duration,
    attempts: u32,
    timer: Arc<dyn Timer>,
    /// Oldest first.
    unacked: VecDeque<Unacked<T, Id>>,
    /// Outcomes not taken yet.
    done: HashMap<Id, Outcome<T>, FoldHash>,
    /// The acked ids in `done`, oldest first (to forget the oldest beyond `KEPT_ACKED`).
    acked_order: VecDeque<Id>,
    /// Failed or nacked outcomes in `done` (they count against the window until taken).
    failed: usize,
    /// Tasks waiting for an outcome.
    waiting: HashMap<Id, Waker, FoldHash>,
    /// The writer waiting for room in the window.
    writer: Option<Waker>,
}

impl<T, Id: Eq + Hash + Clone> State<T, Id> {
    /// How many more tracked messages the window takes, `pending` written and not yet tracked.
    fn room(&self, pending: usize) -> usize {
        self.window.saturating_sub(self.unacked.len() + self.failed + pending)
    }

    fn resolve(&mut self, id: &Id, outcome: impl FnOnce(T) -> Outcome<T>) {
        let Some(at) = self.unacked.iter().position(|unacked| unacked.id == *id) else {
            return;
        };
        let Some(unacked) = self.unacked.remove(at) else {
            return;
        };
        self.finish(unacked.id, outcome(unacked.message));
    }

    fn finish(&mut self, id: Id, outcome: Outcome<T>) {
        // An outcome somebody awaits is kept until taken; of the others, acked ones are forgotten oldest
        // first beyond twice the window (at least `KEPT_ACKED`), so that a caller awaiting outcomes in order
        // finds each one although a whole window of acks may land in one poll.
        let awaited = self.waiting.remove(&id);
        if matches!(outcome, Outcome::Acked) {
            if awaited.is_none() {
                self.acked_order.push_back(id.clone());
                let kept = KEPT_ACKED.max(self.window.saturating_mul(2));
                while self.acked_order.len() > kept {
                    let Some(oldest) = self.acked_order.pop_front() else {
                        break;
                    };
                    // (A failed outcome under a reused id stays until taken.)
                    if let Some(outcome) = self.done.remove(&oldest) {
                        if !matches!(outcome, Outcome::Acked) {
                            self.done.insert(oldest, outcome);
                        }
                    }
                }
            }
        } else {
            self.failed += 1;
        }
        if let Some(waker) = awaited {
            waker.wake();
        }
        self.done.insert(id, outcome);
        if let Some(writer) = self.writer.take() {
            writer.wake();
        }
    }

    fn take(&mut self, id: &Id) -> Option<Outcome<T>> {
        let outcome = self.done.remove(id)?;
        if !matches!(outcome, Outcome::Acked) {
            self.failed = self.failed.saturating_sub(1);
            if let Some(writer) = self.writer.take() {
                writer.wake();
            }
        }
        Some(outcome)
    }
}

impl<T, Id> AckLayer<T, Id>
where
    T: Clone + Send + 'static,
    Id: Eq + Hash + Clone + Send + 'static,
{
    /// Tracks the outbound messages `id_of` gives an id, acknowledged by the inbound messages `ack_of` reads
    /// an ack from; returns the layer and the handle to the outcomes.
    pub fn new(
        id_of: impl Fn(&T) -> Option<Id> + Send + Sync + 'static,
        ack_of: impl Fn(&T) -> Option<Ack<Id>> + Send + Sync + 'static,
    ) -> (Self, Acks<T, Id>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                window: DEFAULT_ACK_WINDOW,
                timeout: DEFAULT_ACK_TIMEOUT,
                attempts: DEFAULT_ACK_ATTEMPTS,
                timer: Arc::new(AsyncIoTimer),
                unacked: VecDeque::new(),
                done: HashMap::default(),
                acked_order: VecDeque::new(),
                failed: 0,
                waiting: HashMap::default(),
                writer: None,
            }),
        });
        let layer = Self {
            shared: Arc::clone(&shared),
            id_of: Arc::new(id_of),
            ack_of: Arc::new(ack_of),
            deliver_acks: false,
        };
        (layer, Acks { shared })
    }

    /// At most `window` tracked messages unacked (default [`DEFAULT_ACK_WINDOW`], at least 1).
    pub fn with_window(self, window: usize) -> Self {
        self.shared.state().window = window.max(1);
        self
    }

    /// How long a message waits for its ack before it is sent again (default [`DEFAULT_ACK_TIMEOUT`]).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.shared.state().timeout = timeout;
        self
    }

    /// How many times a message is sent in all before its outcome is [`Outcome::Failed`] (default
    /// [`DEFAULT_ACK_ATTEMPTS`], at least 1). Sends after a reconnect count too.
    pub fn with_attempts(self, attempts: u32) -> Self {
        self.shared.state().attempts = attempts.max(1);
        self
    }

    /// Delivers acks (and nacks) to the reader too (by default they are consumed here).
    pub fn deliver_acks(mut self, deliver: bool) -> Self {
        self.deliver_acks = deliver;
        self
    }

    /// Uses `timer` for the ack timeouts (for tests: a [`ManualClock`](crate::time::ManualClock)).
    pub fn with_timer(self, timer: impl Timer + 'static) -> Self {
        self.shared.state().timer = Arc::new(timer);
        self
    }
}

impl<T, Id> Acks<T, Id>
where
    Id: Eq + Hash + Clone,
{
    /// The outcome of the message with `id`, once it is known (it waits while the message is queued or
    /// unacked).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an outcome is taken only when the future returns it.
    pub fn outcome(&self, id: &Id) -> impl Future<Output = Outcome<T>> + '_ {
        let id = id.clone();
        futures_util::future::poll_fn(move |cx| {
            let mut state = self.shared.state();
            match state.take(&id) {
                Some(outcome) => Poll::Ready(outcome),
                None => {
                    state.waiting.insert(id.clone(), cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }

    /// The outcome of the message with `id`, if it is known (taking it).
    pub fn try_outcome(&self, id: &Id) -> Option<Outcome<T>> {
        self.shared.state().take(id)
    }

    /// Tracked messages not acked yet.
    pub fn unacked(&self) -> usize {
        self.shared.state().unacked.len()
    }

    /// Takes back the messages not acked yet, oldest first, and stops tracking them (when you give up on a
    /// stream that has ended, say).
    pub fn take_unacked(&self) -> Vec<T> {
        let mut state = self.shared.state();
        let taken = state.unacked.drain(..).map(|unacked| unacked.message).collect();
        if let Some(writer) = state.writer.take() {
            writer.wake();
        }
        taken
    }

    /// Takes every outcome that failed (nacked, or out of attempts) and was not taken yet, with its id.
    pub fn take_failed(&self) -> Vec<(Id, Outcome<T>)> {
        let mut state = self.shared.state();
        let ids: Vec<Id> = (state.done.iter())
            .filter(|(_, outcome)| !matches!(outcome, Outcome::Acked))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| state.take(&id).map(|outcome| (id, outcome)))
            .collect()
    }
}
