//! [`RotateLayer`]: make-before-break rotation. A connection older than its maximum age (or told to by
//! [`Rotation::rotate`]) dials its successor and switches over only once the successor is up, so that a
//! server that caps connection lifetimes (an exchange that drops every connection at 24 h, say) never leaves
//! the reader without one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_core::Stream;
use futures_sink::Sink;
use tower_layer::Layer;

use super::redundant::Recent;
use crate::connect::Connect;
use crate::time::{AsyncIoTimer, Sleep, Timer};

/// How long an old connection is given to finish its close after a switch: 5 s.
pub const DEFAULT_RETIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The default overlap: how long the old connection is still read once its successor is up: 1 s.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(1);
/// How long a failed dial of a successor waits before the next: 1 s.
const RETRY_SUCCESSOR: Duration = Duration::from_secs(1);

type KeyOf<T> = Arc<dyn Fn(&T) -> Option<u64> + Send + Sync>;

struct Shared {
    /// Bumped by each manual rotation.
    requests: AtomicU64,
    /// The task to wake for one.
    waker: Mutex<Option<Waker>>,
}

/// The handle to a [`RotateLayer`]: rotates its current connection on demand.
#[derive(Clone)]
pub struct Rotation {
    shared: Arc<Shared>,
}

impl fmt::Debug for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotation").finish_non_exhaustive()
    }
}

impl Rotation {
    /// Makes the current connection dial its successor now (make-before-break, as for the maximum age).
    pub fn rotate(&self) {
        self.shared.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(waker) = self.shared.waker.lock().unwrap_or_else(PoisonError::into_inner).take() {
            waker.wake();
        }
    }
}

/// Make-before-break rotation, as a layer over a connector (which must be `Clone`: each connection dials its
/// successor with a clone).
///
/// # The switch
///
/// When a connection reaches its [maximum age](Self::with_max_age) (minus up to the
/// [jitter](Self::with_jitter)), or [`Rotation::rotate`] is called, it dials its successor (handshakes
/// included) while it goes on reading and writing. Once the successor is up:
///
/// 1. the old connection is still read for the [overlap](Self::with_overlap) (what the server sent it before
///    the successor was up may still be on its way), then until it has nothing more ready;
/// 2. what was written to the old connection is flushed;
/// 3. reads and writes switch to the successor; the old connection is closed in the background (within
///    [`DEFAULT_RETIRE_TIMEOUT`]).
///
/// So nothing the old connection received is lost, and nothing written is left unflushed. The successor may
/// have received some of the same messages (both were subscribed for a moment): with a
/// [dedupe key](Self::with_dedupe) (a sequence number, say) a message whose key was delivered recently is
/// not delivered again, so the reader sees no gap and no duplicate at the switch. A failed dial of the
/// successor is tried again after a second; the old connection serves meanwhile.
pub struct RotateLayer<T> {
    max_age: Option<Duration>,
    jitter: f64,
    overlap: Duration,
    key_of: Option<KeyOf<T>>,
    window: usize,
    timer: Arc<dyn Timer>,
    shared: Arc<Shared>,
}

impl<T> Clone for RotateLayer<T> {
    fn clone(&self) -> Self {
        Self {
            max_age: self.max_age,
            jitter: self.jitter,
            overlap: self.overlap,
            key_of: self.key_of.clone(),
            window: self.window,
            timer: Arc::clone(&self.timer),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for RotateLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotateLayer")
            .field("max_age", &self.max_age)
            .field("jitter", &self.jitter)
            .field("dedupe", &self.key_of.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> RotateLayer<T> {
    /// Rotation on demand only; set a maximum age with [`with_max_age`](Self::with_max_age).
    pub fn new() -> (Self, Rotation) {
        let shared = Arc::new(Shared {
            requests: AtomicU64::new(0),
            waker: Mutex::new(None),
        });
        let layer = Self {
            max_age: None,
            jitter: 0.0,
            overlap: DEFAULT_OVERLAP,
            key_of: None,
            window: 4096,
            timer: Arc::new(AsyncIoTimer),
            shared: Arc::clone(&shared),
        };
        (layer, Rotation { shared })
    }

    /// Rotates each connection once it is `age` old.
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Rotates up to this fraction of the maximum age earlier, at random per connection (0.0 to 1.0; default
    /// 0), so that many clients do not rotate at once.
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// How long the old connection is still read once its successor is up (default [`DEFAULT_OVERLAP`]): at
    /// least the time the server may take to get a message to the old connection. Messages both receive
    /// meanwhile come twice unless a [dedupe key](Self::with_dedupe) is set.
    pub fn with_overlap(mut self, overlap: Duration) -> Self {
        self.overlap = overlap;
        self
    }

    /// Does not deliver a message whose key (`key_of`) is among the last `window` delivered (default 4096).
    pub fn with_dedupe(mut self, key_of: impl Fn(&T) -> Option<u64> + Send + Sync + 'static) -> Self {
        self.key_of = Some(Arc::new(key_of));
        self
    }

    /// How many recent keys the dedupe remembers (at least 1).
    pub fn with_dedupe_window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// Uses `timer` for the ages (for tests: a [`ManualClock`](crate::time::ManualClock)).
    pub fn with_timer(mut self, timer: impl Timer + 'static) -> Self {
        self.timer = Arc::new(timer);
        self
    }

    /// When a connection made now is to rotate.
    fn deadline(&self) -> Option<Sleep> {
        let age = self.max_age?;
        let early = age.mul_f64(self.jitter * fastrand::f64());
        let at = self.timer.now().checked_add(age.saturating_sub(early))?;
        Some(self.timer.sleep_until(at))
    }
}

impl<T, C> Layer<C> for RotateLayer<T> {
    type Service = RotateConnector<C, T>;

    fn layer(&self, inner: C) -> Self::Service {
        RotateConnector {
            inner,
            layer: self.clone(),
        }
    }
}

/// The connector of a [`RotateLayer`].
pub struct RotateConnector<C, T> {
    inner: C,
    layer: RotateLayer<T>,
}

impl<C: Clone, T> Clone for RotateConnector<C, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<C, T> fmt::Debug for RotateConnector<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotateConnector")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

/// The attempt future of a [`RotateConnector`].
///
/// # Cancel safety
///
/// Dropping it abandons the attempt.
pub type RotateFuture<C, T> =
    Pin<Box<dyn Future<Output = Result<RotatingConnection<C, T>, <C as Connect>::Error>> + Send>>;

impl<C, T> Connect for RotateConnector<C, T>
where
    C: Connect + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Connection: Send,
    T: 'static,
{
    type Connection = RotatingConnection<C, T>;
    type Error = C::Error;
    type Future = RotateFuture<C, T>;

    fn connect(&mut self) -> Self::Future {
        let attempt = self.inner.connect();
        let connector = self.inner.clone();
        let layer = self.layer.clone();
        Box::pin(async move {
            let current = attempt.await?;
            let seen = layer.shared.requests.load(Ordering::SeqCst);
            Ok(RotatingConnection {
                age: layer.deadline(),
                connector,
                current,
                successor: None,
                ready: None,
                overlap: None,
                retiring: None,
                seen,
                recent: Recent::new(layer.window),
                layer,
            })
        })
    }
}

/// A connection of a [`RotateConnector`]: the current connection, its successor while it is dialled, and the
/// previous one while it closes.
pub struct RotatingConnection<C: Connect, T> {
    layer: RotateLayer<T>,
    connector: C,
    current: C::Connection,
    successor: Option<Pin<Box<C::Future>>>,
    /// The successor, up, waiting for the overlap to pass and the current one to be drained and flushed.
    ready: Option<C::Connection>,
    /// The overlap, from when the successor came up.
    overlap: Option<Sleep>,
    retiring: Option<(C::Connection, Sleep)>,
    /// When to rotate.
    age: Option<Sleep>,
    /// The manual rotations seen.
    seen: u64,
    recent: Recent,
}

impl<C: Connect, T> Unpin for RotatingConnection<C, T> where C::Connection: Unpin {}

impl<C: Connect, T> fmt::Debug for RotatingConnection<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingConnection")
            .field("dialling_successor", &self.successor.is_some())
            .field("successor_ready", &self.ready.is_some())
            .field("retiring", &self.retiring.is_some())
            .finish_non_exhaustive()
    }
}

impl<C: Connect, T> RotatingConnection<C, T> {
    /// The current connection.
    pub fn get_ref(&self) -> &C::Connection {
        &self.current
    }

    /// The current connection, mutably.
    pub fn get_mut(&mut self) -> &mut C::Connection {
        &mut self.current
    }
}

impl<C, T, E> RotatingConnection<C, T>
where
    C: Connect,
    C::Connection: Stream<Item = Result<T, E>> + Sink<T> + Unpin,
{
    /// Starts or advances the rotation: the trigger, the successor's dial, the old connection's close.
    fn poll_rotation(&mut self, cx: &mut Context<'_>) {
        if let Some((old, deadline)) = self.retiring.as_mut() {
            let closed = Pin::new(old).poll_close(cx).is_ready();
            if closed || deadline.as_mut().poll(cx).is_ready() {
                self.retiring = None;
            }
        }
        if self.successor.is_none() && self.ready.is_none() {
            *self.layer.shared.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            let requests = self.layer.shared.requests.load(Ordering::SeqCst);
            let aged = self.age.as_mut().is_some_and(|age| age.as_mut().poll(cx).is_ready());
            if aged || requests != self.seen {
                self.seen = requests;
                self.age = None;
                self.successor = Some(Box::pin(self.connector.connect()));
            }
        }
        if let Some(successor) = self.successor.as_mut() {
            match successor.as_mut().poll(cx) {
                Poll::Ready(Ok(conn)) => {
                    self.successor = None;
                    self.ready = Some(conn);
                    let timer = &self.layer.timer;
                    self.overlap = timer
                        .now()
                        .checked_add(self.layer.overlap)
                        .map(|at| timer.sleep_until(at));
                }
                Poll::Ready(Err(_)) => {
                    self.successor = None;
                    let timer = &self.layer.timer;
                    self.age = timer.now().checked_add(RETRY_SUCCESSOR).map(|at| timer.sleep_until(at));
                    if let Some(age) = self.age.as_mut() {
                        let _ = age.as_mut().poll(cx);
                    }
                }
                Poll::Pending => {}
            }
        }
    }

    /// The successor is up and the current connection has nothing more ready: flush it, then switch.
    fn poll_switch(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(overlap) = self.overlap.as_mut() {
            if overlap.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.overlap = None;
        }
        if Pin::new(&mut self.current).poll_flush(cx).is_pending() {
            return Poll::Pending;
        }
        let Some(next) = self.ready.take() else {
            return Poll::Ready(());
        };
        let old = std::mem::replace(&mut self.current, next);
        let timer = &self.layer.timer;
        let deadline = match timer.now().checked_add(DEFAULT_RETIRE_TIMEOUT) {
            Some(at) => timer.sleep_until(at),
            None => Box::pin(std::future::pending()),
        };
        self.retiring = Some((old, deadline));
        self.age = self.layer.deadline();
        self.poll_rotation(cx);
        Poll::Ready(())
    }

    /// An item of the current connection, unless its key was delivered recently.
    fn fresh(&mut self, item: &T) -> bool {
        match self.layer.key_of.as_ref().and_then(|key_of| key_of(item)) {
            Some(key) => self.recent.first(key),
            None => true,
        }
    }
}

impl<C, T, E> Stream for RotatingConnection<C, T>
where
    C: Connect,
    C::Connection: Stream<Item = Result<T, E>> + Sink<T> + Unpin,
{
    type Item = Result<T, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.poll_rotation(cx);
        loop {
            match Pin::new(&mut this.current).poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => {
                    if this.fresh(&item) {
                        return Poll::Ready(Some(Ok(item)));
                    }
                }
                Poll::Pending if this.ready.is_some() => {
                    // Drained: switch, then read the successor.
                    if this.poll_switch(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                Poll::Ready(_) if this.ready.is_some() => {
                    // The old one ended on its own: the successor takes over at once.
                    if let Some(next) = this.ready.take() {
                        this.current = next;
                        this.overlap = None;
                        this.age = this.layer.deadline();
                    }
                }
                other => return other,
            }
        }
    }
}

impl<C, T, E> Sink<T> for RotatingConnection<C, T>
where
    C: Connect,
    C::Connection: Stream<Item = Result<T, E>> + Sink<T> + Unpin,
{
    type Error = <C::Connection as Sink<T>>::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        this.poll_rotation(cx);
        Pin::new(&mut this.current).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), Self::Error> {
        Pin::new(&mut self.get_mut().current).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().current).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        this.successor = None;
        this.ready = None;
        this.overlap = None;
        this.retiring = None;
        Pin::new(&mut this.current).poll_close(cx)
    }
}
