//! [`WebSocketClient`]: the high-level client — one driver future, any number of subscribers, a cloneable
//! sender, events, a state snapshot and a graceful shutdown — on any runtime.
//!
//! # Examples
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use stream_tungstenite::prelude::*;
//!
//! # async fn demo() {
//! let client = WebSocketClient::builder("wss://example.com/ws")
//!     .receive_timeout(Duration::from_secs(30))
//!     .build();
//! let mut messages = client.subscribe();
//! let client = Arc::new(client);
//! let driver = { let client = client.clone(); async move { client.run().await } };
//! // spawn `driver` on tokio, async-std or smol
//! # drop(driver);
//! while let Ok(msg) = messages.recv().await {
//!     println!("Received: {:?}", msg);
//! }
//! # }
//! ```

mod config;
mod erased;
mod fanout;
mod handles;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_tungstenite::tungstenite::http::HeaderMap;
use async_tungstenite::tungstenite::Message;
use event_listener::{Event as Notify, EventListener};
use futures_core::Stream;
use futures_rustls::rustls::pki_types::CertificateDer;
use futures_rustls::rustls::ClientConfig as RustlsConfig;
use futures_sink::Sink;
use tower_layer::Layer;

pub use self::config::ClientConfig;
pub use self::erased::{BoxConnectFuture, BoxConnection, Connection, ErasedConnector, ReceiveTimeout};
use self::erased::{ClientConnector, IdleTimeout};
use self::fanout::Publisher;
pub use self::handles::{ClientState, DisconnectReason, ReceiveError, SendError, Sender, Subscription};
use crate::extension::{Extension, ExtensionLayer, HeartbeatLayer};
use crate::handshake::{ChainedHandshaker, Handshake, HandshakeLayer};
use crate::retry::{ExponentialBackoff, NoRetry, RetryPolicy};
use crate::time::{AsyncIoTimer, Timer};
use crate::ws::WsConnector;
use crate::{BoxError, Connect, ConnectionState, Event, ReconnectingStream};

/// Why [`WebSocketClient::run`] ended with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `run()` is already running on this client.
    #[error("the client is already running")]
    AlreadyRunning,
    /// The connection ended for good: the retry policy gave up or a failure was fatal (e.g. HTTP 401, a
    /// certificate error, a rejected handshake).
    #[error("the connection ended for good")]
    Terminated(#[source] crate::Error),
}

type RetryFactory = Arc<dyn Fn() -> Box<dyn RetryPolicy> + Send + Sync>;
type LayerFn = Arc<dyn Fn(ErasedConnector) -> ErasedConnector + Send + Sync>;

/// State shared by the client, its senders and its driver.
pub(crate) struct Shared {
    config: ClientConfig,
    timer: Arc<dyn Timer>,
    running: AtomicBool,
    shutdown: AtomicBool,
    close_timeout_ms: AtomicU64,
    wake_driver: Notify,
    stopped: Notify,
    messages: Publisher<Message>,
    events: Publisher<Event>,
    outgoing: async_channel::Receiver<Message>,
    leftover: Mutex<VecDeque<Message>>,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    detail: Mutex<Detail>,
}

#[derive(Debug, Default)]
struct Detail {
    status: Option<ConnectionState>,
    generation: u64,
    connected_at: Option<SystemTime>,
    connections: u64,
    failed_attempts: u64,
    last_error: Option<String>,
    last_disconnect: Option<DisconnectReason>,
}

impl Shared {
    fn detail(&self) -> MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // The counters have one writer, the running driver (a second run() is refused), so a load and a store do
    // instead of a locked read-modify-write per message; readers see a recent value either way.
    fn bump(counter: &AtomicU64, by: u64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
    }

    fn count_in(&self, messages: usize, bytes: u64) {
        Self::bump(&self.messages_in, messages as u64);
        Self::bump(&self.bytes_in, bytes);
    }

    fn count_out(&self, message: &Message) {
        Self::bump(&self.messages_out, 1);
        Self::bump(&self.bytes_out, message.len() as u64);
    }

    /// A message counted as sent came back unsent.
    fn uncount_out(&self, message: &Message) {
        let less = |counter: &AtomicU64, by: u64| {
            counter.store(counter.load(Ordering::Relaxed).saturating_sub(by), Ordering::Relaxed);
        };
        less(&self.messages_out, 1);
        less(&self.bytes_out, message.len() as u64);
    }

    fn leftover(&self) -> MutexGuard<'_, VecDeque<Message>> {
        self.leftover.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an event in the state and forwards it to event subscribers (never blocking).
    fn on_event(&self, event: &Event) {
        // Each run has its own stream, whose generations start at 1: events carry the client's count instead.
        let mut event = event.clone();
        {
            let mut detail = self.detail();
            match &mut event {
                Event::Connecting { attempt } => {
                    detail.status = Some(ConnectionState::Connecting { attempt: *attempt })
                }
                Event::Connected { generation, .. } => {
                    detail.connections += 1;
                    detail.generation = detail.connections;
                    *generation = detail.generation;
                    detail.connected_at = Some(SystemTime::now());
                    detail.status = Some(ConnectionState::Connected {
                        generation: detail.generation,
                    });
                }
                Event::ConnectFailed { failure } | Event::HandshakeFailed { failure, .. } => {
                    detail.failed_attempts += 1;
                    detail.last_error = Some(describe(failure));
                }
                Event::Disconnected {
                    generation,
                    uptime,
                    reason,
                } => {
                    *generation = detail.generation;
                    detail.connected_at = None;
                    detail.last_error = Some(describe(reason));
                    detail.last_disconnect = Some(DisconnectReason {
                        generation: detail.generation,
                        close_code: reason.close_code(),
                        reason: describe(reason),
                        uptime: *uptime,
                    });
                }
                Event::RetryScheduled { attempt, delay, .. } => {
                    detail.status = Some(ConnectionState::Backoff {
                        attempt: *attempt,
                        delay: *delay,
                    })
                }
                Event::GaveUp { reason, .. } => {
                    detail.connected_at = None;
                    detail.last_error = Some(describe(reason));
                    detail.status = Some(ConnectionState::Terminated);
                }
                Event::Closed { .. } => {
                    detail.connected_at = None;
                    detail.status = Some(ConnectionState::Closed);
                }
            }
        }
        self.events.publish(event);
    }
}

/// A failure and its causes, in one line.
fn describe(failure: &crate::Failure) -> String {
    let mut text = failure.to_string();
    let mut source = std::error::Error::source(failure);
    while let Some(error) = source {
        let part = error.to_string();
        // Many errors already print their source: do not say it twice.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = error.source();
    }
    text
}

/// A WebSocket client that keeps its connection alive; see the [module docs](self).
///
/// Build it with [`WebSocketClient::builder`], then spawn [`run`](Self::run) (a single driver future) on any
/// runtime. Read with [`subscribe`](Self::subscribe), write with [`sender`](Self::sender), watch
/// [`subscribe_events`](Self::subscribe_events) and [`state`](Self::state), and stop with
/// [`shutdown`](Self::shutdown); the client can run again afterwards.
pub struct WebSocketClient {
    shared: Arc<Shared>,
    tx: async_channel::Sender<Message>,
    url: String,
    connector: WsConnector,
    retry: RetryFactory,
    handshakers: Vec<Arc<dyn Handshake>>,
    layers: Vec<LayerFn>,
}

impl fmt::Debug for WebSocketClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketClient")
            .field("url", &crate::ws::redact_url(&self.url))
            .field("connector", &self.connector)
            .field("config", &self.shared.config)
            .field("running", &self.shared.running.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl WebSocketClient {
    /// Starts building a client for `url`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url.into())
    }

    /// A client for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self::builder(url).build()
    }

    /// The URL the client connects to.
    pub fn uri(&self) -> &str {
        &self.url
    }

    /// A new subscriber to inbound messages (those received from now on). Each subscriber gets every message;
    /// a payload is shared, not copied, between subscribers (a [`Message`] clone is a reference-count
    /// increment).
    pub fn subscribe(&self) -> Subscription<Message> {
        Subscription {
            rx: self.shared.messages.subscribe(),
        }
    }

    /// A new subscriber to connection [`Event`]s.
    pub fn subscribe_events(&self) -> Subscription<Event> {
        Subscription {
            rx: self.shared.events.subscribe(),
        }
    }

    /// A cloneable sender, valid across reconnects and runs.
    pub fn sender(&self) -> Sender {
        Sender {
            tx: self.tx.clone(),
            timer: Arc::clone(&self.shared.timer),
        }
    }

    /// Queues a message; see [`Sender::send`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        self.sender().send(message).await
    }

    /// Queues a message if there is room; see [`Sender::try_send`].
    ///
    /// # Errors
    ///
    /// As [`Sender::try_send`].
    pub fn try_send(&self, message: Message) -> Result<(), SendError> {
        self.sender().try_send(message)
    }

    /// Queues a message, waiting at most `timeout`; see [`Sender::send_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send_timeout`].
    pub async fn send_timeout(&self, message: Message, timeout: Duration) -> Result<(), SendError> {
        self.sender().send_timeout(message, timeout).await
    }

    /// Queues a text message.
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), SendError> {
        self.sender().send_text(text).await
    }

    /// Queues a binary message.
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    pub async fn send_binary(&self, data: impl Into<async_tungstenite::tungstenite::Bytes>) -> Result<(), SendError> {
        self.sender().send_binary(data).await
    }

    /// A snapshot of the state and counters; cheap, callable at any time.
    pub fn state(&self) -> ClientState {
        let detail = self.shared.detail();
        let running = self.shared.running.load(Ordering::SeqCst);
        ClientState {
            status: detail.status.unwrap_or(ConnectionState::Idle),
            generation: detail.generation,
            connected_at: detail.connected_at,
            reconnects: detail.connections.saturating_sub(1),
            failed_attempts: detail.failed_attempts,
            messages_sent: self.shared.messages_out.load(Ordering::Relaxed),
            messages_received: self.shared.messages_in.load(Ordering::Relaxed),
            bytes_sent: self.shared.bytes_out.load(Ordering::Relaxed),
            bytes_received: self.shared.bytes_in.load(Ordering::Relaxed),
            last_error: detail.last_error.clone(),
            last_disconnect: detail.last_disconnect.clone(),
            running,
        }
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.state().is_connected()
    }

    /// Takes back the messages a finished run could not send (they would otherwise go out first on the next
    /// run).
    pub fn take_unsent(&self) -> Vec<Message> {
        self.shared.leftover().drain(..).collect()
    }

    /// Connects and keeps the connection alive until [`shutdown`](Self::shutdown) or a terminal failure:
    /// forwards inbound messages to subscribers and queued messages to the connection. Spawn it on any
    /// runtime.
    ///
    /// # Errors
    ///
    /// [`ClientError::AlreadyRunning`] if another `run()` is in progress; [`ClientError::Terminated`] when the
    /// retry policy gives up or a failure is fatal. A shutdown ends it with `Ok(())`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the connection; messages it had accepted but not sent are kept for the next
    /// run (see [`take_unsent`](Self::take_unsent)).
    pub async fn run(&self) -> Result<(), ClientError> {
        if self.shared.running.swap(true, Ordering::SeqCst) {
            return Err(ClientError::AlreadyRunning);
        }
        let guard = RunGuard {
            shared: Arc::clone(&self.shared),
        };
        let outcome = match self.connector() {
            ClientConnector::Direct(connector) => self.drive(connector).await,
            ClientConnector::Layered(connector) => self.drive(connector).await,
        };
        drop(guard);
        outcome
    }

    /// One run over `connector`.
    async fn drive<C, E>(&self, connector: C) -> Result<(), ClientError>
    where
        C: Connect,
        C::Connection: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
        <C::Connection as Sink<Message>>::Error: Into<BoxError>,
        E: Into<BoxError>,
    {
        let shared = Arc::clone(&self.shared);
        let config = &self.shared.config;
        let stream = ReconnectingStream::new(connector)
            .with_retry((self.retry)())
            .with_timer(TimerRef(Arc::clone(&self.shared.timer)))
            .with_connect_timeout(config.connect_timeout)
            .with_stable_after(config.stable_after)
            .with_close_timeout(config.close_timeout)
            .with_queue_capacity(config.send_capacity)
            .with_observer(move |event: &Event| shared.on_event(event));
        let mut driver = Driver {
            stream,
            shared: Arc::clone(&self.shared),
            outgoing: Box::pin(self.shared.outgoing.clone()),
            pending: self.shared.leftover().drain(..).collect(),
            inbound: VecDeque::new(),
            listener: None,
            closing: None,
        };
        let outcome = futures_util::future::poll_fn(|cx| driver.poll_drive(cx)).await;
        drop(driver); // keeps what it could not send, also when this future is dropped instead
        outcome
    }

    /// Sends Close, stops retrying (interrupting a backoff or a connect in progress) and returns once `run()`
    /// has ended; waits at most the configured close timeout for the server's Close. Returns at once if the
    /// client is not running.
    pub async fn shutdown(&self) {
        self.shutdown_graceful(self.shared.config.close_timeout).await;
    }

    /// As [`shutdown`](Self::shutdown), waiting at most `timeout` for the close handshake.
    pub async fn shutdown_graceful(&self, timeout: Duration) {
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.shared.close_timeout_ms.store(millis, Ordering::SeqCst);
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.wake_driver.notify(usize::MAX);
        loop {
            if !self.shared.running.load(Ordering::SeqCst) {
                return;
            }
            let listener = self.shared.stopped.listen();
            if !self.shared.running.load(Ordering::SeqCst) {
                return;
            }
            listener.await;
        }
    }

    /// The connector stack for one run: transport, handshakes, receive timeout, heartbeat, user layers.
    fn connector(&self) -> ClientConnector {
        let config = &self.shared.config;
        let layered = !self.handshakers.is_empty()
            || config.receive_timeout.is_some()
            || config.heartbeat.is_some()
            || !self.layers.is_empty();
        if !layered {
            return ClientConnector::Direct(self.connector.clone());
        }
        let timer = Arc::clone(&self.shared.timer);
        let mut connector = ErasedConnector::new(self.connector.clone());
        if !self.handshakers.is_empty() {
            let chain = ChainedHandshaker::from_steps(self.handshakers.clone());
            connector = ErasedConnector::new(
                HandshakeLayer::new(chain)
                    .with_timer(TimerRef(Arc::clone(&timer)))
                    .layer(connector),
            );
        }
        if let Some(timeout) = self.shared.config.receive_timeout {
            let timer = Arc::clone(&timer);
            connector = connector
                .map_connection(move |conn: BoxConnection| IdleTimeout::wrap(conn, timeout, Arc::clone(&timer)));
        }
        if let Some((interval, timeout)) = self.shared.config.heartbeat {
            connector = ErasedConnector::new(
                HeartbeatLayer::new(interval, timeout)
                    .with_timer(TimerRef(Arc::clone(&timer)))
                    .layer(connector),
            );
        }
        for layer in &self.layers {
            connector = layer(connector);
        }
        ClientConnector::Layered(connector)
    }
}

/// Shares the client's timer with the layers.
#[derive(Clone)]
struct TimerRef(Arc<dyn Timer>);

impl Timer for TimerRef {
    fn now(&self) -> std::time::Instant {
        self.0.now()
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> crate::time::Sleep {
        self.0.sleep_until(deadline)
    }
}

/// Marks the client stopped when `run()` ends, however it ends.
struct RunGuard {
    shared: Arc<Shared>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        // Cleared here, not when a run starts: a shutdown requested before a spawned run is first polled
        // still stops it.
        self.shared.shutdown.store(false, Ordering::SeqCst);
        self.shared.running.store(false, Ordering::SeqCst);
        self.shared.stopped.notify(usize::MAX);
    }
}

/// Inbound messages handled per poll before yielding to the executor (fairness).
const BUDGET: usize = 512;

/// The driver of one run: moves queued messages into the stream, inbound messages to subscribers.
struct Driver<C>
where
    C: Connect,
    C::Connection: Unpin,
{
    stream: ReconnectingStream<C, Message>,
    shared: Arc<Shared>,
    outgoing: Pin<Box<async_channel::Receiver<Message>>>,
    /// Taken from the channel (or left by the previous run), not yet accepted by the stream.
    pending: VecDeque<Message>,
    /// Read from the stream in this poll, published to the subscribers at its end.
    inbound: VecDeque<Message>,
    listener: Option<EventListener>,
    closing: Option<crate::time::Sleep>,
}

impl<C> Drop for Driver<C>
where
    C: Connect,
    C::Connection: Unpin,
{
    fn drop(&mut self) {
        self.keep_unsent();
    }
}

impl<C> Driver<C>
where
    C: Connect,
    C::Connection: Unpin,
{
    /// Keeps what the stream and the driver hold unsent for the next run (or `take_unsent`); written but
    /// unflushed messages count as unsent.
    fn keep_unsent(&mut self) {
        let mut stream = Pin::new(&mut self.stream);
        stream.as_mut().close_now();
        let unsent = stream.take_unsent();
        for message in &unsent {
            self.shared.uncount_out(message);
        }
        let mut leftover = self.shared.leftover();
        for message in unsent.into_iter().chain(self.pending.drain(..)) {
            leftover.push_back(message);
        }
    }
}

impl<C, E> Driver<C>
where
    C: Connect,
    C::Connection: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
    <C::Connection as Sink<Message>>::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    /// On shutdown: everything sent before it goes into the stream, to be flushed before the Close frame
    /// (or kept for the next run if no connection is up).
    fn take_queued(&mut self) {
        while let Ok(message) = self.outgoing.try_recv() {
            self.pending.push_back(message);
        }
        while let Some(message) = self.pending.pop_front() {
            self.shared.count_out(&message);
            // `start_send` queues without limit; the stream keeps the message whatever happens.
            let _ = Pin::new(&mut self.stream).start_send(message);
        }
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        if self.shutdown_requested(cx) {
            return self.poll_shutdown(cx);
        }
        // Outgoing: from the queue into the stream while it has room, then flush.
        loop {
            if self.pending.is_empty() {
                match self.outgoing.as_mut().poll_next(cx) {
                    Poll::Ready(Some(message)) => self.pending.push_back(message),
                    _ => break,
                }
            }
            match Pin::new(&mut self.stream).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(message) = self.pending.pop_front() {
                        self.shared.count_out(&message);
                        if let Err(error) = Pin::new(&mut self.stream).start_send(message) {
                            return Poll::Ready(Err(ClientError::Terminated(error)));
                        }
                    }
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(ClientError::Terminated(error))),
                Poll::Pending => break,
            }
        }
        if let Poll::Ready(Err(error)) = Pin::new(&mut self.stream).poll_flush(cx) {
            return Poll::Ready(Err(ClientError::Terminated(error)));
        }
        // Inbound: to every subscriber, never waiting for a slow one; published a batch at a time (what one
        // poll read), so subscribers pay one lock per batch, not per message.
        let mut outcome = None;
        let mut bytes = 0;
        while self.inbound.len() < BUDGET {
            match Pin::new(&mut self.stream).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    bytes += message.len() as u64;
                    self.inbound.push_back(message);
                }
                Poll::Ready(Some(Err(error))) => {
                    outcome = Some(Poll::Ready(Err(ClientError::Terminated(error))));
                    break;
                }
                Poll::Ready(None) => {
                    outcome = Some(Poll::Ready(Ok(())));
                    break;
                }
                Poll::Pending => {
                    outcome = Some(Poll::Pending);
                    break;
                }
            }
        }
        self.shared.count_in(self.inbound.len(), bytes);
        self.shared.messages.publish_all(&mut self.inbound);
        outcome.unwrap_or_else(|| {
            // More inbound work is waiting: let other tasks run, then continue.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    fn shutdown_requested(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.shared.shutdown.load(Ordering::SeqCst) {
                return true;
            }
            match self.listener.as_mut() {
                None => self.listener = Some(self.shared.wake_driver.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => self.listener = None,
                    Poll::Pending => return false,
                },
            }
        }
    }

    /// Closes the stream (flush, Close frame, wait for the server's), bounded by the shutdown timeout.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        if self.closing.is_none() {
            self.take_queued();
            let timeout = Duration::from_millis(self.shared.close_timeout_ms.load(Ordering::SeqCst));
            let deadline = self.shared.timer.now().checked_add(timeout);
            self.closing = Some(match deadline {
                Some(deadline) => self.shared.timer.sleep_until(deadline),
                None => Box::pin(futures_util::future::pending()),
            });
        }
        if Pin::new(&mut self.stream).poll_close(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        match self.closing.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }
}

/// Builds a [`WebSocketClient`]; made by [`WebSocketClient::builder`].
pub struct ClientBuilder {
    url: String,
    connector: crate::ws::WsConnectorBuilder,
    config: ClientConfig,
    retry: RetryFactory,
    handshakers: Vec<Arc<dyn Handshake>>,
    layers: Vec<LayerFn>,
    timer: Arc<dyn Timer>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &crate::ws::redact_url(&self.url))
            .field("config", &self.config)
            .field("handshakers", &self.handshakers.len())
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    fn new(url: String) -> Self {
        Self {
            connector: WsConnector::builder(url.clone()),
            url,
            config: ClientConfig::default(),
            retry: Arc::new(|| Box::new(ExponentialBackoff::default())),
            handshakers: Vec::new(),
            layers: Vec::new(),
            timer: Arc::new(AsyncIoTimer),
        }
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Reconnects when no message arrives for this long.
    pub fn receive_timeout(mut self, timeout: Duration) -> Self {
        self.config.receive_timeout = Some(timeout);
        self
    }

    /// Pings every `interval`; no frame within `timeout` of a ping means the connection is dead.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.config.heartbeat = Some((interval, timeout));
        self
    }

    /// Sets the retry policy (cloned for each run).
    pub fn retry_strategy(mut self, policy: impl RetryPolicy + Clone + Sync + 'static) -> Self {
        self.retry = Arc::new(move || Box::new(policy.clone()));
        self
    }

    /// Exponential backoff from `initial` to `max`, growing by `factor`, with the default (equal) jitter.
    pub fn exponential_backoff(self, initial: Duration, max: Duration, factor: f64) -> Self {
        self.retry_strategy(ExponentialBackoff::new(initial, max).factor(factor))
    }

    /// Never retries: the first failure ends `run()`.
    pub fn no_retry(self) -> Self {
        self.retry_strategy(NoRetry)
    }

    /// Adds a handshake, run on every connection after those added before it.
    pub fn handshaker(mut self, handshaker: impl Handshake) -> Self {
        self.handshakers.push(Arc::new(handshaker));
        self
    }

    /// Adds a message extension (cloned per connection).
    pub fn extension(self, extension: impl Extension<Message> + Clone + Sync + 'static) -> Self {
        self.layer(ExtensionLayer::new(extension))
    }

    /// Adds any connector layer whose connections carry [`Message`]s. Layers added first are outermost.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<ErasedConnector> + Send + Sync + 'static,
        L::Service: crate::Connect + Send + 'static,
        <L::Service as crate::Connect>::Future: Send + 'static,
        <L::Service as crate::Connect>::Connection:
            Stream<Item = Result<Message, BoxError>> + Sink<Message, Error = BoxError> + Send + Unpin + 'static,
    {
        self.layers
            .push(Arc::new(move |inner| ErasedConnector::new(layer.layer(inner))));
        self
    }

    /// Adds a header to every upgrade request.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.connector = self.connector.header(name, value);
        self
    }

    /// Adds headers from a provider called on every attempt (a refreshed token is used on the next dial).
    pub fn header_provider(mut self, provider: impl Fn() -> HeaderMap + Send + Sync + 'static) -> Self {
        self.connector = self.connector.header_provider(provider);
        self
    }

    /// Offers a subprotocol.
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.connector = self.connector.subprotocol(protocol);
        self
    }

    /// Trusts an extra root certificate for `wss://`.
    pub fn add_root_certificate(mut self, certificate: CertificateDer<'static>) -> Self {
        self.connector = self.connector.add_root_certificate(certificate);
        self
    }

    /// Uses this rustls configuration for `wss://`.
    pub fn rustls_config(mut self, config: Arc<RustlsConfig>) -> Self {
        self.connector = self.connector.rustls_config(config);
        self
    }

    /// Sets tungstenite's limits and buffer sizes.
    pub fn websocket_config(mut self, config: async_tungstenite::tungstenite::protocol::WebSocketConfig) -> Self {
        self.connector = self.connector.websocket_config(config);
        self
    }

    /// Uses `timer` for every delay and timeout (for tests: a [`ManualClock`](crate::time::ManualClock)).
    pub fn timer(mut self, timer: impl Timer + 'static) -> Self {
        self.timer = Arc::new(timer);
        self
    }

    /// Builds the client.
    pub fn build(self) -> WebSocketClient {
        let config = self.config;
        let messages = Publisher::new(config.subscriber_capacity);
        let events = Publisher::new(config.event_capacity);
        let (tx, rx) = async_channel::bounded(config.send_capacity.max(1));
        let close_timeout_ms = u64::try_from(config.close_timeout.as_millis()).unwrap_or(u64::MAX);
        let shared = Arc::new(Shared {
            config,
            timer: self.timer,
            running: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            close_timeout_ms: AtomicU64::new(close_timeout_ms),
            wake_driver: Notify::new(),
            stopped: Notify::new(),
            messages,
            events,
            outgoing: rx,
            leftover: Mutex::new(VecDeque::new()),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            detail: Mutex::new(Detail::default()),
        });
        WebSocketClient {
            shared,
            tx,
            url: self.url,
            connector: self.connector.build(),
            retry: self.retry,
            handshakers: self.handshakers,
            layers: self.layers,
        }
    }
}
