//! [`WebSocketClient`]: the high-level client — one driver future, any number of subscribers, a cloneable
//! sender, events, a state snapshot and a graceful shutdown — on any runtime.
//!
//! The top of the architecture: it drives one [`ReconnectingStream`] per run over a [`WsConnector`] with the
//! hooks, layers and handshakes its [`ClientBuilder`] was given, and spawns nothing itself.
//!
//! # Examples
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use stream_tungstenite::prelude::*;
//!
//! # async fn demo() {
//! let client = WebSocketClient::builder("wss://example.com/ws")
//!     .with_receive_timeout(Duration::from_secs(30))
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

mod builder;
mod config;
mod connector;
mod driver;
mod error;
mod fanout;
mod handles;
mod outbox;
mod state;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use futures_core::Stream;
use futures_sink::Sink;
use tower_layer::Layer;

pub use self::builder::ClientBuilder;

/// The 0.6.1 name of [`ClientBuilder`].
pub type WebSocketClientBuilder = ClientBuilder;
pub use self::config::{ClientConfig, DEFAULT_EVENT_CAPACITY, DEFAULT_REPLY_GRACE, DEFAULT_SUBSCRIBER_CAPACITY};
pub use self::connector::{BoxConnectFuture, BoxConnection, BoxConnector};
use self::connector::{ClientConnector, HookList, Step};
use self::driver::{Driver, RunGuard};
pub use self::error::{ClientError, ReceiveError, SendError};
pub use self::handles::{Sender, Subscription};
use self::state::Shared;
pub use self::state::{ClientState, DisconnectReason};
use crate::connect::Connect;
use crate::diagnose::Diagnose;
use crate::error::BoxError;
use crate::event::Event;
use crate::extension::ReceiveTimeout;
use crate::handshake::{ChainedHandshaker, HandshakeLayer, Handshaker};
use crate::reconnect::{QueuePolicy, ReconnectingStream};
use crate::redact::redact_url;
use crate::retry::RetryPolicy;
use crate::ws::WsConnector;

type RetryFactory = Arc<dyn Fn() -> Box<dyn RetryPolicy> + Send + Sync>;

/// A WebSocket client that keeps its connection alive; see the [module docs](self).
///
/// Build it with [`WebSocketClient::builder`], then spawn [`run`](Self::run) (a single driver future) on any
/// runtime. Read with [`subscribe`](Self::subscribe), write with [`sender`](Self::sender), watch
/// [`subscribe_events`](Self::subscribe_events) and [`state`](Self::state), and stop with
/// [`shutdown`](Self::shutdown); the client can run again afterwards.
pub struct WebSocketClient {
    shared: Arc<Shared>,
    url: String,
    connector: WsConnector,
    retry: RetryFactory,
    handshakers: Vec<Arc<dyn Handshaker>>,
    steps: Vec<Step>,
    classifier: Option<builder::SharedClassifier>,
    observers: Vec<builder::SharedObserver>,
    policy: builder::SharedPolicy,
    first: Option<builder::SharedFirst>,
    resume: Option<crate::delivery::ResumeLayer<Message>>,
}

impl fmt::Debug for WebSocketClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketClient")
            .field("url", &redact_url(&self.url))
            .field("connector", &self.connector)
            .field("config", &self.shared.config)
            .field("running", &self.shared.running.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Drop for WebSocketClient {
    fn drop(&mut self) {
        // Senders outlive the client: from now on they are told it is gone.
        self.shared.outbox.close();
    }
}

impl WebSocketClient {
    /// Starts building a client for `url`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url.into())
    }

    /// Starts building a client that asks `provider` for the URL on every attempt; see
    /// [`ClientBuilder::with_url_provider`].
    pub fn builder_with_url_provider(provider: impl Fn() -> String + Send + Sync + 'static) -> ClientBuilder {
        ClientBuilder::with_url_provider(provider)
    }

    /// A client for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self::builder(url).build()
    }

    /// The URL the client connects to, with its query and user info redacted (`?<redacted>`,
    /// `<redacted>@`): they may carry credentials, and this is what gets printed and logged. (The client
    /// dials the URL it was given, of course.)
    pub fn uri(&self) -> String {
        redact_url(&self.url)
    }

    /// A new subscriber to inbound messages (those received from now on). Each subscriber gets every message;
    /// a payload is shared, not copied, between subscribers (a [`Message`] clone is a reference-count
    /// increment).
    pub fn subscribe(&self) -> Subscription<Message> {
        Subscription {
            rx: self.shared.messages.subscribe(),
        }
    }

    /// A new subscriber to inbound messages, each with the generation of the connection it came on (1 for the
    /// client's first connection, as in [`Event::Connected`] and [`ClientState::generation`]): where the
    /// generation changes, messages may have been missed. (A message a connection had received before it was
    /// replaced can still arrive just after the new connection is up, tagged with the new generation.)
    pub fn subscribe_with_generation(&self) -> Subscription<(u64, Message)> {
        Subscription {
            rx: self.shared.tagged.subscribe(),
        }
    }

    /// A new subscriber to inbound messages and, in band, what the client's
    /// [`ResumeLayer`](crate::delivery::ResumeLayer) learns about continuity
    /// ([`ClientBuilder::with_resume`]): [`Recovered`](crate::delivery::Continuity::Recovered) or
    /// [`Gap`](crate::delivery::Continuity::Gap) right before the message that showed it. Without a resume
    /// layer it yields the messages alone.
    pub fn subscribe_resumed(&self) -> Subscription<crate::delivery::Resumed<Message>> {
        Subscription {
            rx: self.shared.resumed.subscribe(),
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
            outbox: Arc::clone(&self.shared.outbox),
            timer: Arc::clone(&self.shared.timer),
        }
    }

    /// Queues a message; see [`Sender::send`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    ///
    /// # Cancel safety
    ///
    /// As [`Sender::send`]: dropped before it completes, the message was not queued.
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
    ///
    /// # Cancel safety
    ///
    /// As [`Sender::send`]: dropped before it completes, the message was not queued.
    pub async fn send_timeout(&self, message: Message, timeout: Duration) -> Result<(), SendError> {
        self.sender().send_timeout(message, timeout).await
    }

    /// Queues a text message.
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    ///
    /// # Cancel safety
    ///
    /// As [`Sender::send`]: dropped before it completes, the message was not queued.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), SendError> {
        self.sender().send_text(text).await
    }

    /// Queues a binary message.
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    ///
    /// # Cancel safety
    ///
    /// As [`Sender::send`]: dropped before it completes, the message was not queued.
    pub async fn send_binary(&self, data: impl Into<async_tungstenite::tungstenite::Bytes>) -> Result<(), SendError> {
        self.sender().send_binary(data).await
    }

    /// A snapshot of the state and counters; cheap, callable at any time.
    pub fn state(&self) -> ClientState {
        self.shared.snapshot()
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.state().is_connected()
    }

    /// Takes back what the [queue policy](ClientBuilder::with_queue_policy) dropped, oldest first.
    pub fn take_dropped(&self) -> Vec<Message> {
        std::mem::take(&mut *self.shared.dropped())
    }

    /// Empties the senders' queue and hands it back, in order (what a run has taken already goes out, or is
    /// handed back by [`take_unsent`](Self::take_unsent) when the run ends).
    pub fn clear(&self) -> Vec<Message> {
        self.shared.outbox.drain()
    }

    /// One run's copy of the queue policy (a predicate stays shared).
    fn run_policy(&self) -> QueuePolicy<Message> {
        let policy = self.policy.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*policy {
            QueuePolicy::ReplayAll => QueuePolicy::ReplayAll,
            QueuePolicy::DropOlderThan(ttl) => QueuePolicy::DropOlderThan(*ttl),
            QueuePolicy::ClearOnReconnect => QueuePolicy::ClearOnReconnect,
            QueuePolicy::Keep(_) => {
                let shared = Arc::clone(&self.policy);
                QueuePolicy::keep(move |message, age| {
                    match &mut *shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
                        QueuePolicy::Keep(keep) => keep(message, age),
                        _ => true,
                    }
                })
            }
        }
    }

    /// Takes back every message the client accepted and has not sent, oldest first: what a finished run
    /// could not send, then what still waits in the senders' queue (sent before a run took it, or after one
    /// ended). Left alone, they go out first on the next run.
    ///
    /// While a run is in progress it takes only what that run has not taken from the queue yet.
    pub fn take_unsent(&self) -> Vec<Message> {
        let mut unsent: Vec<Message> = self.shared.leftover().drain(..).collect();
        unsent.extend(self.shared.outbox.drain());
        unsent
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
    /// The run begins when `run()` is called (from then on [`state`](Self::state) says it is running and a
    /// [`shutdown`](Self::shutdown) stops it) and dials on its first poll. Dropping the future unpolled ends
    /// it.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the connection; messages it had accepted but not sent are kept for the next
    /// run (see [`take_unsent`](Self::take_unsent)).
    pub fn run(&self) -> impl Future<Output = Result<(), ClientError>> + '_ {
        // The run starts here, not at its first poll: a shutdown from now on is meant for it.
        let guard = self.shared.start_run().map(|run| RunGuard {
            shared: Arc::clone(&self.shared),
            run,
        });
        async move {
            let Some(guard) = guard else {
                return Err(ClientError::AlreadyRunning);
            };
            let run = guard.run;
            let outcome = match self.connector() {
                ClientConnector::Direct(connector) => self.driver(connector, run).await,
                ClientConnector::Stacked(connector) => self.driver(connector, run).await,
            };
            drop(guard);
            outcome
        }
    }

    /// The driver of one run over `connector`: a future that is the run. (Made here and awaited in place, so
    /// that the run's future holds it once: an `async fn` would keep its argument and locals beside it.)
    fn driver<C, E>(&self, connector: C, run: u64) -> Driver<C>
    where
        C: Connect,
        C::Future: Unpin,
        C::Connection: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
        <C::Connection as Sink<Message>>::Error: Into<BoxError> + Diagnose,
        E: Into<BoxError> + Diagnose,
    {
        let shared = Arc::clone(&self.shared);
        let config = &self.shared.config;
        let stream = ReconnectingStream::new(connector)
            .with_retry((self.retry)())
            .with_timer(Arc::clone(&self.shared.timer))
            .with_connect_timeout(config.connect_timeout)
            .with_stable_after(config.stable_after)
            .with_close_timeout(config.close_timeout)
            .with_queue_capacity(config.send_capacity)
            .with_observer({
                let observers = self.observers.clone();
                move |event: &Event| {
                    let event = shared.on_event(event);
                    for observer in &observers {
                        observer(&event);
                    }
                }
            });
        let stream = match &self.first {
            Some(first) => {
                let first = Arc::clone(first);
                let shared = Arc::clone(&self.shared);
                stream.with_first_messages(move |_| first(shared.detail().generation))
            }
            None => stream,
        };
        let stream = stream.with_queue_policy(self.run_policy());
        let stream = match config.send_bytes {
            Some(max) => stream.with_queue_bytes(max),
            None => stream,
        };
        let stream = match &self.classifier {
            Some(classifier) => {
                let classifier = Arc::clone(classifier);
                stream.with_classifier(move |failure: &crate::error::Failure| classifier(failure))
            }
            None => stream,
        };
        // Dropped when the run ends, or with the run's future: either way it keeps what it could not send.
        Driver {
            stream,
            shared: Arc::clone(&self.shared),
            run,
            pending: self.shared.leftover().drain(..).collect(),
            inbound: VecDeque::new(),
            listener: None,
            closing: None,
        }
    }

    /// Sends Close, stops retrying (interrupting a backoff or a connect in progress) and returns once `run()`
    /// has ended; waits at most the configured close timeout for the server's Close.
    ///
    /// It stops the run in progress only: if the client is not running it returns at once and the next
    /// `run()` is not affected (a run spawned but not yet polled has not started).
    ///
    /// # Cancel safety
    ///
    /// The shutdown is requested on the first poll; dropping the future afterwards does not withdraw it, it
    /// only stops waiting for the run to end.
    pub async fn shutdown(&self) {
        self.shutdown_graceful(self.shared.config.close_timeout).await;
    }

    /// As [`shutdown`](Self::shutdown), with this Close frame: `code` and `reason` (cut to the 123 bytes a
    /// Close frame has room for). Later shutdowns send the builder's frame again
    /// ([`ClientBuilder::with_close_frame`]), or a Close without a code.
    ///
    /// # Cancel safety
    ///
    /// As [`shutdown`](Self::shutdown). Once the future is dropped, a close still under way sends the
    /// builder's frame.
    pub async fn shutdown_with(&self, code: u16, reason: &str) {
        /// Puts the previous frame back when the shutdown is over, or its future dropped.
        struct Restore<'a> {
            slot: &'a std::sync::Mutex<Option<async_tungstenite::tungstenite::protocol::CloseFrame>>,
            previous: Option<async_tungstenite::tungstenite::protocol::CloseFrame>,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                *self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = self.previous.take();
            }
        }
        let slot = self.connector.close_frame_slot();
        let previous = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(crate::ws::close_frame(code, reason));
        let _restore = Restore { slot, previous };
        self.shutdown().await;
    }

    /// As [`shutdown`](Self::shutdown), waiting at most `timeout` for the close handshake.
    ///
    /// # Cancel safety
    ///
    /// As [`shutdown`](Self::shutdown).
    pub async fn shutdown_graceful(&self, timeout: Duration) {
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.shared.close_timeout_ms.store(millis, Ordering::SeqCst);
        if !self.shared.request_shutdown() {
            return;
        }
        self.shared.outbox.wake.notify(usize::MAX);
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

    /// The connector stack for one run: see [`ClientBuilder`]'s order.
    fn connector(&self) -> ClientConnector {
        let config = &self.shared.config;
        let timer = &self.shared.timer;
        let mut innermost = HookList::default();
        if let Some(window) = config.receive_timeout {
            innermost
                .0
                .push(Box::new(ReceiveTimeout::new(window).with_timer(Arc::clone(timer))));
        }
        if self.handshakers.is_empty() && self.steps.is_empty() && innermost.0.is_empty() && self.resume.is_none() {
            return ClientConnector::Direct(self.connector.clone());
        }
        let mut transport = BoxConnector::new(self.connector.clone());
        if !self.handshakers.is_empty() {
            let chain = ChainedHandshaker::from_steps(self.handshakers.clone());
            transport = BoxConnector::new(
                HandshakeLayer::new(chain)
                    .with_timer(Arc::clone(timer))
                    .layer(transport),
            );
        }
        let stacked = connector::stack(transport, &self.steps, innermost);
        match &self.resume {
            // Outermost: the resume request goes out after the handshakes, and reports reach the driver.
            Some(resume) => ClientConnector::Stacked(BoxConnector::new(connector::Tap {
                inner: resume.layer(stacked),
                slot: Arc::clone(&self.shared.continuity),
            })),
            None => ClientConnector::Stacked(stacked),
        }
    }
}
