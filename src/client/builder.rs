//! [`ClientBuilder`]: what a [`WebSocketClient`] is made of.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_tungstenite::tungstenite::http::HeaderMap;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use event_listener::Event as Notify;
use futures_core::Stream;
use futures_rustls::rustls::pki_types::CertificateDer;
use futures_rustls::rustls::ClientConfig as RustlsConfig;
use futures_sink::Sink;
use tower_layer::Layer;

use super::config::ClientConfig;
use super::connector::{BoxConnector, Step};
use super::fanout::Publisher;
use super::outbox::Outbox;
use super::state::{Detail, Runs, Shared};
use super::{RetryFactory, WebSocketClient};
use crate::connect::Connect;
use crate::delivery::ResumeLayer;
use crate::diagnose::Classification;
use crate::diagnose::Diagnose;
use crate::error::BoxError;
use crate::error::Failure;
use crate::event::Event;
use crate::handshake::Handshaker;
use crate::hook::Hook;
use crate::reconnect::QueuePolicy;
use crate::redact::redact_url;
use crate::retry::{ExponentialBackoff, NoRetry, RetryPolicy};
use crate::time::{AsyncIoTimer, Timer};
use crate::ws::{WsConnector, WsConnectorBuilder};

/// Builds a [`WebSocketClient`]; made by [`WebSocketClient::builder`].
///
/// # Order
///
/// Hooks and layers stack as in a [`ConnectorBuilder`](crate::layer::ConnectorBuilder): the first added is
/// outermost (it sees outbound messages first and inbound messages last), and consecutive hooks run in one
/// wrapper. Under them all sits the receive timeout of the configuration ([`with_receive_timeout`]: closest
/// to the connection, so it sees every frame), then the handshakes, in the order added, then the transport,
/// whose connections have their own heartbeat ([`with_heartbeat`], on by default):
///
/// ```text
/// user  <->  hooks and layers, first added outermost  <->  receive timeout
///       <->  handshakes  <->  WebSocket transport (heartbeat)
/// ```
///
/// [`with_receive_timeout`]: Self::with_receive_timeout
/// [`with_heartbeat`]: Self::with_heartbeat
pub struct ClientBuilder {
    url: String,
    connector: WsConnectorBuilder,
    config: ClientConfig,
    retry: RetryFactory,
    handshakers: Vec<Arc<dyn Handshaker>>,
    steps: Vec<Step>,
    timer: Arc<dyn Timer>,
    classifier: Option<SharedClassifier>,
    observers: Vec<SharedObserver>,
    policy: SharedPolicy,
    first: Option<SharedFirst>,
    resume: Option<ResumeLayer<Message>>,
}

/// The queue policy, shared by the client's runs.
pub(super) type SharedPolicy = Arc<Mutex<QueuePolicy<Message>>>;
/// The first messages of each connection, shared by the client's runs.
pub(super) type SharedFirst = Arc<dyn Fn(u64) -> Vec<Message> + Send + Sync>;

/// A classifier shared by the client's runs.
pub(super) type SharedClassifier = Arc<dyn Fn(&Failure) -> Classification + Send + Sync>;
/// An observer shared by the client's runs.
pub(super) type SharedObserver = Arc<dyn Fn(&Event) + Send + Sync>;

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &redact_url(&self.url))
            .field("config", &self.config)
            .field("handshakers", &self.handshakers.len())
            .field("steps", &self.steps.len())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Starts building a client for `url` (the same as [`WebSocketClient::builder`]).
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        Self {
            connector: WsConnector::builder(url.clone()),
            url,
            config: ClientConfig::default(),
            retry: Arc::new(|| Box::new(ExponentialBackoff::default())),
            handshakers: Vec::new(),
            steps: Vec::new(),
            timer: Arc::new(AsyncIoTimer),
            classifier: None,
            observers: Vec::new(),
            policy: Arc::new(Mutex::new(QueuePolicy::ReplayAll)),
            first: None,
            resume: None,
        }
    }

    /// Resume positions with gap reports (see [`ResumeLayer`]): it runs outermost, after the handshakes, so
    /// the resume request goes out once they are done; its reports are in band in
    /// [`WebSocketClient::subscribe_resumed`](super::WebSocketClient::subscribe_resumed), and go to the
    /// layer's observer.
    pub fn with_resume(mut self, layer: ResumeLayer<Message>) -> Self {
        self.resume = Some(layer);
        self
    }

    /// Sets what happens to the queued messages when a connection comes up (see
    /// [`ReconnectingStream::with_queue_policy`](crate::ReconnectingStream::with_queue_policy)); what it drops
    /// is handed back by [`WebSocketClient::take_dropped`](super::WebSocketClient::take_dropped) and reported
    /// as [`Event::Dropped`]. Ages count from when a run took the message from the senders' queue (at once,
    /// unless the run's own queue was full).
    pub fn with_queue_policy(self, policy: QueuePolicy<Message>) -> Self {
        *self.policy.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
        self
    }

    /// Sets the messages each new connection sends first, before the queued ones (see
    /// [`ReconnectingStream::with_first_messages`](crate::ReconnectingStream::with_first_messages)); `first`
    /// gets the client's generation of the connection.
    pub fn with_first_messages(mut self, first: impl Fn(u64) -> Vec<Message> + Send + Sync + 'static) -> Self {
        self.first = Some(Arc::new(first));
        self
    }

    /// Bounds the send queues in payload bytes too ([`ClientConfig::send_bytes`]).
    pub fn with_send_bytes(mut self, max: usize) -> Self {
        self.config.send_bytes = Some(max);
        self
    }

    /// Starts building a client that asks `provider` for the URL on every attempt (a refreshed signed URL, a
    /// discovered endpoint); see [`WsConnector::builder_with_url_provider`].
    pub fn with_url_provider(provider: impl Fn() -> String + Send + Sync + 'static) -> Self {
        let mut builder = Self::new("<url provider>");
        builder.connector = WsConnector::builder_with_url_provider(provider);
        builder
    }

    /// Adds a fallback endpoint to the ring (see [`WsConnectorBuilder::with_endpoint`]).
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.connector = self.connector.with_endpoint(url);
        self
    }

    /// Adds an endpoint whose URL a provider gives on each attempt that falls on it (see
    /// [`WsConnectorBuilder::with_endpoint_provider`]).
    pub fn with_endpoint_provider(mut self, provider: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.connector = self.connector.with_endpoint_provider(provider);
        self
    }

    /// Overrides how failures are classified (retry, retry after, fatal), as
    /// [`ReconnectingStream::with_classifier`](crate::ReconnectingStream::with_classifier) does; the default
    /// follows what each failure diagnoses of itself.
    pub fn with_classifier(mut self, classifier: impl Fn(&Failure) -> Classification + Send + Sync + 'static) -> Self {
        self.classifier = Some(Arc::new(classifier));
        self
    }

    /// Adds an observer called with every [`Event`] (as event subscribers get it: with the client's
    /// generation), synchronously, in the order added, as
    /// [`ReconnectingStream::with_observer`](crate::ReconnectingStream::with_observer) does. Keep it quick: it
    /// runs on the driver.
    pub fn with_observer(mut self, observer: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Sets the per-attempt timeout covering TCP, TLS, the upgrade and the handshakes
    /// ([`ClientConfig::connect_timeout`]).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Enables TCP keepalive probes after `idle` without traffic (off by default).
    pub fn with_tcp_keepalive(mut self, idle: Duration) -> Self {
        self.connector = self.connector.with_tcp_keepalive(idle);
        self
    }

    /// Sets `TCP_NODELAY` (on by default).
    pub fn with_tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.connector = self.connector.with_tcp_nodelay(nodelay);
        self
    }

    /// The 0.6.1 name of [`with_config`](Self::with_config).
    #[deprecated(since = "0.7.0", note = "renamed `with_config`")]
    pub fn config(self, config: ClientConfig) -> Self {
        self.with_config(config)
    }

    /// The 0.6.1 name of [`with_receive_timeout`](Self::with_receive_timeout).
    #[deprecated(since = "0.7.0", note = "renamed `with_receive_timeout`")]
    pub fn receive_timeout(self, timeout: Duration) -> Self {
        self.with_receive_timeout(timeout)
    }

    /// The 0.6.1 name of [`with_retry`](Self::with_retry) (the policy trait is now
    /// [`RetryPolicy`](crate::retry::RetryPolicy)).
    #[deprecated(since = "0.7.0", note = "renamed `with_retry`")]
    pub fn retry_strategy(self, policy: impl RetryPolicy + Clone + Sync + 'static) -> Self {
        self.with_retry(policy)
    }

    /// The 0.6.1 name of [`with_handshaker`](Self::with_handshaker).
    #[deprecated(since = "0.7.0", note = "renamed `with_handshaker`")]
    pub fn handshaker(self, handshaker: impl Handshaker) -> Self {
        self.with_handshaker(handshaker)
    }

    /// The 0.6.1 shorthand for `with_retry(ExponentialBackoff::new(initial, max).with_factor(multiplier))`.
    #[deprecated(
        since = "0.7.0",
        note = "use `with_retry(ExponentialBackoff::new(initial, max).with_factor(multiplier))`"
    )]
    pub fn exponential_backoff(self, initial: Duration, max: Duration, multiplier: f64) -> Self {
        self.with_retry(ExponentialBackoff::new(initial, max).with_factor(multiplier))
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Reconnects when no message arrives for this long (a [`ReceiveTimeout`](crate::extension::ReceiveTimeout)
    /// hook under the others).
    pub fn with_receive_timeout(mut self, timeout: Duration) -> Self {
        self.config.receive_timeout = Some(timeout);
        self
    }

    /// Pings every `interval`; no frame within `timeout` of a ping means the connection is dead (the
    /// connection's own heartbeat; on by default, 20 s and 20 s).
    pub fn with_heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.config.heartbeat = Some((interval, timeout));
        self
    }

    /// Turns the heartbeat off.
    pub fn without_heartbeat(mut self) -> Self {
        self.config.heartbeat = None;
        self
    }

    /// Sets the retry policy (cloned for each run).
    pub fn with_retry(mut self, policy: impl RetryPolicy + Clone + Sync + 'static) -> Self {
        self.retry = Arc::new(move || Box::new(policy.clone()));
        self
    }

    /// Never retries: the first failure ends `run()`. The same as `with_retry(NoRetry)`.
    pub fn no_retry(self) -> Self {
        self.with_retry(NoRetry)
    }

    /// Adds a handshake, run on every connection after those added before it.
    pub fn with_handshaker(mut self, handshaker: impl Handshaker) -> Self {
        self.handshakers.push(Arc::new(handshaker));
        self
    }

    /// Adds a hook (cloned per attempt) inside those added before it.
    ///
    /// # Order
    ///
    /// The first added is outermost: see the [type's docs](Self).
    pub fn hook(mut self, hook: impl Hook<Message> + Clone + Sync + 'static) -> Self {
        self.steps.push(Step::Hook(Box::new(hook)));
        self
    }

    /// Adds any connector layer whose connections carry [`Message`]s, inside what was added before it: an
    /// [`AckLayer`](crate::delivery::AckLayer) for acknowledged sends, say (its outcomes come from the
    /// [`Acks`](crate::delivery::Acks) handle it was made with; acks do not reach the subscribers).
    ///
    /// # Order
    ///
    /// The first added is outermost: see the [type's docs](Self).
    pub fn layer<L, E>(mut self, layer: L) -> Self
    where
        L: Layer<BoxConnector> + Send + Sync + 'static,
        L::Service: Connect + Send + 'static,
        <L::Service as Connect>::Future: Send + 'static,
        <L::Service as Connect>::Connection: Stream<Item = Result<Message, E>> + Sink<Message> + Send + Unpin + 'static,
        <<L::Service as Connect>::Connection as Sink<Message>>::Error: Into<BoxError> + Diagnose,
        E: Into<BoxError> + Diagnose,
    {
        self.steps.push(Step::Layer(Arc::new(move |inner| {
            BoxConnector::new(layer.layer(inner))
        })));
        self
    }

    /// Adds a header to every upgrade request. An invalid name or value makes every attempt fail at once with
    /// [`ConnectError::Config`](crate::ws::ConnectError::Config), which ends the run (fatal).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.connector = self.connector.with_header(name, value);
        self
    }

    /// Adds headers from a provider called on every attempt (a refreshed token is used on the next dial).
    pub fn with_header_provider(mut self, provider: impl Fn() -> HeaderMap + Send + Sync + 'static) -> Self {
        self.connector = self.connector.with_header_provider(provider);
        self
    }

    /// Offers a subprotocol.
    pub fn with_subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.connector = self.connector.with_subprotocol(protocol);
        self
    }

    /// Trusts an extra root certificate for `wss://`. A certificate rustls rejects makes every attempt fail at
    /// once with [`ConnectError::Config`](crate::ws::ConnectError::Config), which ends the run (fatal).
    pub fn with_root_certificate(mut self, certificate: CertificateDer<'static>) -> Self {
        self.connector = self.connector.with_root_certificate(certificate);
        self
    }

    /// Sets the Close frame the client sends when it shuts down (`code`, `reason`); see
    /// [`WsConnectorBuilder::with_close_frame`].
    pub fn with_close_frame(mut self, code: u16, reason: &str) -> Self {
        self.connector = self.connector.with_close_frame(code, reason);
        self
    }

    /// Caps the wait a server's `Retry-After` asks for (default
    /// [`DEFAULT_MAX_RETRY_AFTER`](crate::ws::DEFAULT_MAX_RETRY_AFTER)); see
    /// [`WsConnectorBuilder::with_max_retry_after`].
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.connector = self.connector.with_max_retry_after(max);
        self
    }

    /// Uses this rustls configuration for `wss://`.
    pub fn with_rustls_config(mut self, config: Arc<RustlsConfig>) -> Self {
        self.connector = self.connector.with_rustls_config(config);
        self
    }

    /// Sets tungstenite's limits and buffer sizes.
    pub fn with_websocket_config(mut self, config: WebSocketConfig) -> Self {
        self.connector = self.connector.with_websocket_config(config);
        self
    }

    /// Uses `timer` for every delay and timeout (for tests: a [`ManualClock`](crate::time::ManualClock)).
    pub fn with_timer(mut self, timer: impl Timer + 'static) -> Self {
        self.timer = Arc::new(timer);
        self
    }

    /// Builds the client.
    pub fn build(self) -> WebSocketClient {
        let config = self.config;
        // One threshold: what counts as stable for the backoff also decides when the endpoint ring moves on.
        let mut connector = self
            .connector
            .with_stable_after(config.stable_after)
            .with_timer(Arc::clone(&self.timer));
        connector = match config.heartbeat {
            Some((interval, timeout)) => connector.with_heartbeat(interval, timeout),
            None => connector.without_heartbeat(),
        };
        if let Some(grace) = config.reply_grace {
            connector = connector.with_reply_grace(grace);
        }
        let messages = Publisher::new(config.subscriber_capacity);
        let tagged = Publisher::new(config.subscriber_capacity);
        let resumed = Publisher::new(config.subscriber_capacity);
        let events = Publisher::new(config.event_capacity);
        let outbox = Arc::new(Outbox::new(config.send_capacity, config.send_bytes));
        let close_timeout_ms = u64::try_from(config.close_timeout.as_millis()).unwrap_or(u64::MAX);
        let shared = Arc::new(Shared {
            config,
            timer: self.timer,
            running: AtomicBool::new(false),
            runs: Mutex::new(Runs::default()),
            shutdown_for: AtomicU64::new(0),
            close_timeout_ms: AtomicU64::new(close_timeout_ms),
            stopped: Notify::new(),
            messages,
            tagged,
            resumed,
            continuity: Arc::default(),
            events,
            outbox,
            leftover: Mutex::new(Default::default()),
            dropped: Mutex::new(Vec::new()),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            detail: Mutex::new(Detail::default()),
        });
        WebSocketClient {
            shared,
            url: self.url,
            connector: connector.build(),
            retry: self.retry,
            handshakers: self.handshakers,
            steps: self.steps,
            classifier: self.classifier,
            observers: self.observers,
            policy: self.policy,
            first: self.first,
            resume: self.resume,
        }
    }

    /// Dials every connection through this proxy (`http://[user:password@]host:port`, `socks5h://...`,
    /// `socks5://...`), whatever the environment says; see [`WsConnectorBuilder::with_proxy`]. A URL that
    /// cannot be used makes every attempt fail with
    /// [`ConnectError::InvalidProxy`](crate::ws::ConnectError::InvalidProxy), which ends the run (fatal).
    pub fn with_proxy(mut self, url: &str) -> Self {
        self.connector = self.connector.with_proxy(url);
        self
    }

    /// Takes the proxy from the environment, as python websockets does (the default); see
    /// [`WsConnectorBuilder::with_proxy_from_env`].
    pub fn with_proxy_from_env(mut self) -> Self {
        self.connector = self.connector.with_proxy_from_env();
        self
    }

    /// Dials every connection directly, whatever proxy the environment names; see
    /// [`WsConnectorBuilder::without_proxy`].
    pub fn without_proxy(mut self) -> Self {
        self.connector = self.connector.without_proxy();
        self
    }
}
