//! [`ResumeLayer`]: resume positions and gap reports. A user extractor reads a position from inbound
//! messages; each new connection first sends what the user makes of the last position (a resume request);
//! afterwards the reader is told, in band, whether the stream [recovered](Continuity::Recovered) or where it
//! has a [gap](Continuity::Gap).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tower_layer::Layer;

use crate::connect::Connect;

/// Where an inbound message sits in the server's sequence: a number, and the epoch it counts in (a server
/// that restarts its numbering starts a new epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The sequence number (or offset).
    pub seq: u64,
    /// The epoch, if the server has one.
    pub epoch: Option<u64>,
}

impl Position {
    /// Position `seq`, without an epoch.
    pub fn new(seq: u64) -> Self {
        Self { seq, epoch: None }
    }

    /// Position `seq` in `epoch`.
    pub fn in_epoch(seq: u64, epoch: u64) -> Self {
        Self {
            seq,
            epoch: Some(epoch),
        }
    }
}

/// What the reader learns about continuity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// After a reconnect, the stream went on exactly after `last`: nothing was missed.
    Recovered {
        /// The last position before the reconnect.
        last: Position,
    },
    /// Positions jumped: `expected` was next, `got` came (or the epoch changed: then everything after the old
    /// epoch's last position may be missing).
    Gap {
        /// The position that was due.
        expected: Position,
        /// The position that came.
        got: Position,
    },
}

/// An item of a [`ResumeLayer`]'s connections: a message, or what is known about continuity, right before
/// the message that showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed<T> {
    /// A message.
    Message(T),
    /// A continuity report.
    Continuity(Continuity),
}

type PositionOf<T> = Arc<dyn Fn(&T) -> Option<Position> + Send + Sync>;
type Request<T> = Arc<dyn Fn(Position) -> Vec<T> + Send + Sync>;
type Report = Arc<dyn Fn(&Continuity) + Send + Sync>;

/// What a connection judges positions against (its own copy: no lock per message).
struct State {
    /// The last position delivered.
    last: Option<Position>,
    /// A connection came up after `last`: the next positioned message says whether it recovered.
    resuming: bool,
}

/// The last position delivered, shared across connections: written by the connection that delivers (one
/// at a time), read when the next connection comes up and by [`ResumeLayer::last_position`]. Plain atomic
/// stores, so that delivering a message costs no lock.
#[derive(Debug, Default)]
struct Last {
    seq: AtomicU64,
    epoch: AtomicU64,
    /// `KNOWN`, and `EPOCH` when the position has one.
    flags: AtomicU8,
}

const KNOWN: u8 = 1;
const EPOCH: u8 = 2;

impl Last {
    fn load(&self) -> Option<Position> {
        let flags = self.flags.load(Ordering::Acquire);
        (flags & KNOWN != 0).then(|| Position {
            seq: self.seq.load(Ordering::Relaxed),
            epoch: (flags & EPOCH != 0).then(|| self.epoch.load(Ordering::Relaxed)),
        })
    }

    fn store(&self, position: Position) {
        self.seq.store(position.seq, Ordering::Relaxed);
        if let Some(epoch) = position.epoch {
            self.epoch.store(epoch, Ordering::Relaxed);
        }
        let flags = KNOWN | if position.epoch.is_some() { EPOCH } else { 0 };
        self.flags.store(flags, Ordering::Release);
    }
}

/// Resume positions with gap reports, as a layer over a connector (its state lives across connections).
///
/// - `position_of` reads a position from an inbound message (messages without one pass through).
/// - On each new connection, once a position is known, `resume(last)` gives the messages to send first (say
///   `{"op":"resume","from":last+1}`).
/// - The first positioned message after a reconnect is preceded by [`Continuity::Recovered`] when it follows
///   the last one, or [`Continuity::Gap`] when positions jumped or the epoch changed; a jump within a
///   connection is a gap too. A message at or before the last position in the same epoch (a replay
///   overlapping what was delivered) is not delivered again.
/// - Reports are items ([`Resumed::Continuity`]), in band where the reader reads, and go to the
///   [observer](Self::with_observer) too.
pub struct ResumeLayer<T> {
    position_of: PositionOf<T>,
    resume: Request<T>,
    observer: Option<Report>,
    last: Arc<Last>,
}

impl<T> Clone for ResumeLayer<T> {
    fn clone(&self) -> Self {
        Self {
            position_of: Arc::clone(&self.position_of),
            resume: Arc::clone(&self.resume),
            observer: self.observer.clone(),
            last: Arc::clone(&self.last),
        }
    }
}

impl<T> fmt::Debug for ResumeLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeLayer")
            .field("last", &self.last.load())
            .finish_non_exhaustive()
    }
}

impl<T> ResumeLayer<T> {
    /// Positions from `position_of`; `resume(last)` is what each new connection sends first once a position is
    /// known.
    pub fn new(
        position_of: impl Fn(&T) -> Option<Position> + Send + Sync + 'static,
        resume: impl Fn(Position) -> Vec<T> + Send + Sync + 'static,
    ) -> Self {
        Self {
            position_of: Arc::new(position_of),
            resume: Arc::new(resume),
            observer: None,
            last: Arc::default(),
        }
    }

    /// Also tells `observer` every continuity report (an event beside the in-band item).
    pub fn with_observer(mut self, observer: impl Fn(&Continuity) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The last position delivered, if any.
    pub fn last_position(&self) -> Option<Position> {
        self.last.load()
    }
}

impl<T, C> Layer<C> for ResumeLayer<T> {
    type Service = ResumeConnector<C, T>;

    fn layer(&self, inner: C) -> Self::Service {
        ResumeConnector {
            inner,
            layer: self.clone(),
        }
    }
}

/// The connector of a [`ResumeLayer`].
pub struct ResumeConnector<C, T> {
    inner: C,
    layer: ResumeLayer<T>,
}

impl<C: Clone, T> Clone for ResumeConnector<C, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<C, T> fmt::Debug for ResumeConnector<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeConnector")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<C: Connect, T> Connect for ResumeConnector<C, T> {
    type Connection = ResumeConnection<C::Connection, T>;
    type Error = C::Error;
    type Future = ResumeFuture<C::Future, T>;

    fn connect(&mut self) -> Self::Future {
        ResumeFuture {
            inner: self.inner.connect(),
            layer: Some(self.layer.clone()),
        }
    }
}

pin_project! {
    /// The attempt future of a [`ResumeConnector`]: the inner attempt.
    ///
    /// # Cancel safety
    ///
    /// Dropping it abandons the attempt; the last position is kept for the next one.
    pub struct ResumeFuture<F, T> {
        #[pin]
        inner: F,
        layer: Option<ResumeLayer<T>>,
    }
}

impl<F, S, E, T> Future for ResumeFuture<F, T>
where
    F: Future<Output = Result<S, E>>,
{
    type Output = Result<ResumeConnection<S, T>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let conn = std::task::ready!(this.inner.poll(cx))?;
        let Some(layer) = this.layer.take() else {
            return Poll::Pending;
        };
        let last = layer.last.load();
        let request = last.map(|last| (layer.resume)(last)).unwrap_or_default();
        Poll::Ready(Ok(ResumeConnection {
            inner: conn,
            layer,
            state: State {
                last,
                resuming: last.is_some(),
            },
            request: request.into(),
            held: None,
        }))
    }
}

/// A connection of a [`ResumeConnector`]: it sends the resume request first and yields [`Resumed`] items.
pub struct ResumeConnection<S, T> {
    inner: S,
    layer: ResumeLayer<T>,
    /// The positions as this connection judges them (published to the layer as they are delivered).
    state: State,
    /// The resume request, not yet written.
    request: std::collections::VecDeque<T>,
    /// The message behind a report just returned.
    held: Option<T>,
}

// Nothing in it is pinned.
impl<S: Unpin, T> Unpin for ResumeConnection<S, T> {}

impl<S: fmt::Debug, T> fmt::Debug for ResumeConnection<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeConnection")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, T> ResumeConnection<S, T> {
    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The connection, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: Sink<T> + Unpin, T> ResumeConnection<S, T> {
    fn poll_request(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.request.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while !self.request.is_empty() {
            std::task::ready!(Pin::new(&mut self.inner).poll_ready(cx))?;
            if let Some(message) = self.request.pop_front() {
                Pin::new(&mut self.inner).start_send(message)?;
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

/// What to do with a positioned message, given the last position.
enum Verdict {
    Deliver(Option<Continuity>),
    Duplicate,
}

fn judge(state: &mut State, got: Position) -> Verdict {
    let resuming = std::mem::replace(&mut state.resuming, false);
    let Some(last) = state.last else {
        state.last = Some(got);
        return Verdict::Deliver(None);
    };
    let expected = Position {
        seq: last.seq.saturating_add(1),
        epoch: last.epoch,
    };
    let report = if got.epoch != last.epoch {
        Some(Continuity::Gap { expected, got })
    } else if got.seq <= last.seq {
        // Put back: the next message still says whether the reconnect recovered.
        state.resuming = resuming;
        return Verdict::Duplicate;
    } else if got.seq == expected.seq {
        resuming.then_some(Continuity::Recovered { last })
    } else {
        Some(Continuity::Gap { expected, got })
    };
    state.last = Some(got);
    Verdict::Deliver(report)
}

impl<S, T, E> Stream for ResumeConnection<S, T>
where
    S: Stream<Item = Result<T, E>> + Sink<T> + Unpin,
{
    type Item = Result<Resumed<T>, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(message) = this.held.take() {
            return Poll::Ready(Some(Ok(Resumed::Message(message))));
        }
        let _ = this.poll_request(cx);
        loop {
            let message = match std::task::ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            };
            let Some(position) = (this.layer.position_of)(&message) else {
                return Poll::Ready(Some(Ok(Resumed::Message(message))));
            };
            // Another connection of the layer (a rotation's overlap) may have delivered meanwhile.
            let shared = this.layer.last.load();
            if shared != this.state.last {
                this.state.last = shared;
            }
            let verdict = judge(&mut this.state, position);
            if let (Verdict::Deliver(_), Some(last)) = (&verdict, this.state.last) {
                this.layer.last.store(last);
            }
            match verdict {
                Verdict::Duplicate => continue,
                Verdict::Deliver(None) => return Poll::Ready(Some(Ok(Resumed::Message(message)))),
                Verdict::Deliver(Some(report)) => {
                    if let Some(observer) = &this.layer.observer {
                        observer(&report);
                    }
                    this.held = Some(message);
                    return Poll::Ready(Some(Ok(Resumed::Continuity(report))));
                }
            }
        }
    }
}

impl<S: Sink<T> + Unpin, T> Sink<T> for ResumeConnection<S, T> {
    type Error = S::Error;

    /// The resume request goes first.
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_request(cx))?;
        Pin::new(&mut this.inner).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: T) -> Result<(), S::Error> {
        Pin::new(&mut self.get_mut().inner).start_send(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_request(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(last: Option<Position>, resuming: bool) -> State {
        State { last, resuming }
    }

    #[test]
    fn positions_are_judged_against_the_last_one() {
        let mut s = state(None, false);
        assert!(matches!(judge(&mut s, Position::new(5)), Verdict::Deliver(None)));
        assert!(matches!(judge(&mut s, Position::new(6)), Verdict::Deliver(None)));
        assert!(matches!(judge(&mut s, Position::new(6)), Verdict::Duplicate));
        assert!(matches!(
            judge(&mut s, Position::new(9)),
            Verdict::Deliver(Some(Continuity::Gap { expected, got })) if expected.seq == 7 && got.seq == 9
        ));
        s.resuming = true;
        assert!(
            matches!(judge(&mut s, Position::new(9)), Verdict::Duplicate),
            "overlap of a replay"
        );
        assert!(matches!(
            judge(&mut s, Position::new(10)),
            Verdict::Deliver(Some(Continuity::Recovered { last })) if last.seq == 9
        ));
        assert!(matches!(
            judge(&mut s, Position::in_epoch(1, 2)),
            Verdict::Deliver(Some(Continuity::Gap { .. }))
        ));
    }
}
