//! [`WsConnector`]: what differs per deployment (URLs, headers, subprotocols, limits, TLS, timeouts), built
//! once and called once per attempt.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::client::{ClientRequestBuilder, IntoClientRequest};
use async_tungstenite::tungstenite::handshake::client::Request;
use async_tungstenite::tungstenite::http::header::AUTHORIZATION;
use async_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use futures_rustls::rustls::pki_types::CertificateDer;
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use futures_util::future::{self, Either};
use tracing::debug;

use super::connection::{close_frame, Liveness, WsConnection};
use super::error::ConnectError;
use super::proxy::ProxySetting;
use super::ring::{Ring, Source};
use super::transport::{self, MaybeTlsStream, Target, TcpOptions, Transport};
use super::upgrade;
use crate::connect::Connect;
use crate::error::ConnectTimeout;
use crate::reconnect::DEFAULT_STABLE_AFTER;
use crate::redact::redact_url;
use crate::time::Timer;

/// The default read buffer per connection: 2 KiB (tungstenite's own default is 128 KiB, zero-filled on the
/// first read: most of an idle connection's memory). A busy connection reads ahead up to 96 KiB per system
/// call into a buffer of its own, freed as soon as the socket has nothing more, which this small buffer then
/// takes a part at a time: it reads as fast as with a large buffer while an idle one keeps only these 2 KiB.
/// A message larger than the buffer grows it while it arrives.
pub const DEFAULT_READ_BUFFER: usize = 2 * 1024;

/// The default cap on a server's `Retry-After`: 5 minutes.
///
/// A 429 or 503 asks the client to wait; a wait longer than this is taken as this long, so that a
/// misconfigured or hostile `Retry-After: 999999999` cannot park a client for years. Five minutes is above
/// what rate limiters ask for in practice (seconds to a minute) and short enough that a client recovers soon
/// after a maintenance window that asked for more; waking early costs one more request, which the server can
/// answer with another `Retry-After`. Set per connector with
/// [`with_max_retry_after`](WsConnectorBuilder::with_max_retry_after).
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(5 * 60);

/// Opens a WebSocket connection: TCP (async-io, `TCP_NODELAY`), TLS for `wss://` (rustls, default roots),
/// then the upgrade.
///
/// `request` is a URL (`&str`, `String`), a `Uri`, or an `http::Request` carrying headers and subprotocols
/// (see [`IntoWsRequest`]). A URL with user info (`wss://user:pass@host/`) sends it as HTTP Basic
/// authentication (percent-decoded), unless the request has an `Authorization` header of its own. The defaults are [`WsConnector`]'s; build one for more control.
///
/// A proxy named by the environment is used, as python websockets uses it (`wss_proxy`, `https_proxy`,
/// `no_proxy`, ...; read on each call, see [`proxy`](super::proxy)); a connector built
/// [`without_proxy`](WsConnectorBuilder::without_proxy) ignores the environment.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use futures::{SinkExt, StreamExt};
/// use stream_tungstenite::{retry::ExponentialBackoff, tungstenite::Message, ReconnectingStream};
///
/// # async fn run() -> Result<(), stream_tungstenite::Error> {
/// // Once:
/// let mut conn = stream_tungstenite::connect("wss://example.com/feed").await.expect("connected");
/// conn.send(Message::text("hello")).await.expect("sent");
///
/// // Kept alive: a closure (or a `WsConnector`) as the connector.
/// let url = "wss://example.com/feed";
/// let mut ws = ReconnectingStream::new(move || stream_tungstenite::connect(url))
///     .with_retry(ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(30)));
/// ws.send(Message::text("hello")).await?;
/// while let Some(msg) = ws.next().await {
///     println!("{:?}", msg?);
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// A [`ConnectError`] saying which step failed; it diagnoses its own failure class
/// ([`ConnectError::is_retryable`], [`ConnectError::retry_after`]), which a reconnecting stream follows. An
/// invalid URL is [`ConnectError::InvalidUrl`] with the URL (redacted) and the reason.
///
/// # Cancel safety
///
/// Dropping the future abandons the attempt and closes whatever it had opened.
pub async fn connect<R: IntoWsRequest>(request: R) -> Result<WsConnection, ConnectError> {
    let request = request.into_ws_request()?;
    dial(request, &Settings::default()).await
}

/// What [`connect`] dials: a URL (`&str`, `String`), a `Uri`, an `http::Request` (with headers and
/// subprotocols of its own) or tungstenite's `ClientRequestBuilder`.
pub trait IntoWsRequest {
    /// The upgrade request.
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidUrl`], with the URL (redacted) and why.
    fn into_ws_request(self) -> Result<Request, ConnectError>;
}

/// tungstenite's request from `request`, or the error naming `url` (redacted).
fn client_request(request: impl IntoClientRequest, url: &str) -> Result<Request, ConnectError> {
    request.into_client_request().map_err(|error| ConnectError::InvalidUrl {
        url: redact_url(url),
        reason: error.to_string(),
    })
}

impl IntoWsRequest for &str {
    fn into_ws_request(self) -> Result<Request, ConnectError> {
        client_request(self, self)
    }
}

impl IntoWsRequest for &String {
    fn into_ws_request(self) -> Result<Request, ConnectError> {
        client_request(self.as_str(), self)
    }
}

impl IntoWsRequest for String {
    fn into_ws_request(self) -> Result<Request, ConnectError> {
        client_request(self.as_str(), &self)
    }
}

impl IntoWsRequest for Uri {
    fn into_ws_request(self) -> Result<Request, ConnectError> {
        let url = self.to_string();
        client_request(self, &url)
    }
}

impl IntoWsRequest for &Uri {
    fn into_ws_request(self) -> Result<Request, ConnectError> {
        self.clone().into_ws_request()
    }
}

impl IntoWsRequest for Request {
    fn into_ws_request(self) -> Result<Request, ConnectError> {
        let url = self.uri().to_string();
        client_request(self, &url)
    }
}

impl IntoWsRequest for ClientRequestBuilder {
    fn into_ws_request(self) -> Result<Request, ConnectError> {
        client_request(self, "")
    }
}

/// A URL's user info (`user:pass@`) as HTTP Basic authentication, percent-decoded, as python websockets
/// sends it; an `Authorization` header already there wins.
fn basic_auth_from_user_info(request: &mut Request) {
    let Some(user_info) = request
        .uri()
        .authority()
        .and_then(|authority| authority.as_str().rsplit_once('@'))
        .map(|(user_info, _)| user_info.to_owned())
    else {
        return;
    };
    if request.headers().contains_key(AUTHORIZATION) {
        return;
    }
    let (user, password) = user_info.split_once(':').unwrap_or((&user_info, ""));
    let mut credentials = percent_decode(user);
    credentials.push(b':');
    credentials.extend(percent_decode(password));
    let value = format!("Basic {}", data_encoding::BASE64.encode(&credentials));
    if let Ok(mut value) = HeaderValue::from_str(&value) {
        value.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, value);
    }
}

/// `%XX` escapes decoded (anything else, a malformed escape too, kept as it is).
pub(super) fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits: at most 0xff.
                decoded.push(u8::try_from(high * 16 + low).unwrap_or(u8::MAX));
                i += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    decoded
}

/// Everything a dial needs besides the request.
#[derive(Clone)]
struct Settings {
    ws_config: WebSocketConfig,
    tls: Option<Arc<ClientConfig>>,
    connect_timeout: Option<Duration>,
    tcp: TcpOptions,
    /// The cap on a rejection's `Retry-After`.
    max_retry_after: Duration,
    /// A connection of a ring of several endpoints dropped sooner moves the ring on.
    stable_after: Duration,
    /// Each connection's heartbeat, clock and reply grace.
    liveness: Liveness,
    /// The proxy: from the environment (read per attempt) by default.
    proxy: ProxySetting,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ws_config: default_ws_config(),
            tls: None,
            connect_timeout: None,
            tcp: TcpOptions {
                nodelay: true,
                keepalive: None,
            },
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            stable_after: DEFAULT_STABLE_AFTER,
            liveness: Liveness::default(),
            proxy: ProxySetting::FromEnv,
        }
    }
}

fn default_ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(DEFAULT_READ_BUFFER)
}

async fn dial(request: Request, settings: &Settings) -> Result<WsConnection, ConnectError> {
    let attempt = dial_inner(request, settings);
    match settings.connect_timeout {
        None => attempt.await,
        Some(timeout) => {
            let timer = async_io::Timer::after(timeout);
            futures_util::pin_mut!(attempt);
            match future::select(attempt, timer).await {
                Either::Left((outcome, _)) => outcome,
                Either::Right(_) => Err(ConnectError::Timeout(ConnectTimeout { after: timeout })),
            }
        }
    }
}

async fn dial_inner(mut request: Request, settings: &Settings) -> Result<WsConnection, ConnectError> {
    basic_auth_from_user_info(&mut request);
    let target = Target::from_uri(request.uri())?;
    let tcp = match settings.proxy.route(&target)? {
        None => {
            debug!(host = %target.host, port = target.port, tls = target.tls, "dialling");
            transport::dial_tcp(&target, settings.tcp).await?
        }
        Some(route) => {
            let proxy = route.redacted();
            let variable = route.variable().unwrap_or("");
            debug!(host = %target.host, port = target.port, tls = target.tls, %proxy, from_env = variable, "dialling through a proxy");
            route.dial(&target, settings.tcp).await?
        }
    };
    let stream = if target.tls {
        let config = match &settings.tls {
            Some(config) => Arc::clone(config),
            None => transport::default_client_config().map_err(|error| ConnectError::Tls {
                host: target.host.clone(),
                source: std::io::Error::other(error),
            })?,
        };
        transport::handshake_tls(tcp, &target.host, config).await?
    } else {
        MaybeTlsStream::Plain(tcp)
    };
    let mut transport = Transport::new(stream);
    let response = upgrade::upgrade(&mut transport, &request)
        .await
        .map_err(|error| ConnectError::from_upgrade(error, settings.max_retry_after))?;
    // The handshake read nothing past the response head: the connection starts from a read buffer of its
    // configured size (see `Transport`).
    let transport = transport.upgraded();
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut connection = WsConnection::new(transport, settings.ws_config, protocol, settings.liveness.clone());
    connection.response = Some(Box::new(response));
    Ok(connection)
}

type HeaderProvider = Arc<dyn Fn() -> HeaderMap + Send + Sync>;

/// A WebSocket connector: a [`Connect`] that dials a fresh connection per attempt.
///
/// Cheap to clone (the configuration is shared). Built with [`WsConnector::builder`].
///
/// # Endpoints
///
/// The URLs come from a ring of sources, each a fixed URL ([`builder`](Self::builder),
/// [`with_endpoint`](WsConnectorBuilder::with_endpoint)) or a provider asked for one on each attempt that
/// falls on it ([`builder_with_url_provider`](Self::builder_with_url_provider),
/// [`with_endpoint_provider`](WsConnectorBuilder::with_endpoint_provider)), in the order added. Every attempt
/// uses the current source. With two sources or more, the ring moves on to the next after an attempt that
/// failed, and after a connection that was dropped before it was up for
/// [`stable_after`](WsConnectorBuilder::with_stable_after) (a host that accepts the upgrade and then drops
/// the connection is left like one that refuses it). It moves on only from the source the attempt or
/// connection was made with, so two failures from one source move it once. A source that fails twice in a
/// row (attempts or early drops) is then passed over for a while (1 s, doubling with each further failure, at
/// most 60 s), unless every source is; a stable connection clears its record. The ring is shared by the
/// connector's clones, and [`set_endpoints`](Self::set_endpoints) replaces it at run time.
///
/// # Errors
///
/// A configuration the builder could not use (an invalid header, a root certificate rustls rejected) makes
/// every attempt fail at once with [`ConnectError::Config`], which is fatal.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use stream_tungstenite::{tungstenite::Message, ws::WsConnector, ReconnectingStream};
///
/// let connector = WsConnector::builder("wss://a.example.com/feed")
///     .with_endpoint("wss://b.example.com/feed")
///     .with_header_provider(|| {
///         let mut headers = stream_tungstenite::tungstenite::http::HeaderMap::new();
///         headers.insert("authorization", "Bearer fresh-token".parse().unwrap());
///         headers
///     })
///     .with_subprotocol("v2.feed")
///     .with_connect_timeout(Duration::from_secs(10))
///     .build();
/// let ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector);
/// ```
#[derive(Clone)]
pub struct WsConnector {
    ring: Ring,
    headers: HeaderMap,
    header_provider: Option<HeaderProvider>,
    subprotocols: Vec<String>,
    settings: Settings,
    /// What the builder could not use: every attempt fails with it.
    config_error: Option<String>,
}

impl WsConnector {
    /// A connector for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self::builder(url).build()
    }

    /// Starts building a connector for `url`, the first source of its ring.
    pub fn builder(url: impl Into<String>) -> WsConnectorBuilder {
        WsConnectorBuilder::new(Source::Fixed(url.into()))
    }

    /// Starts building a connector whose first source asks `provider` for the URL on every attempt that falls
    /// on it (every attempt, unless more sources are added: see [Endpoints](Self#endpoints)).
    pub fn builder_with_url_provider(provider: impl Fn() -> String + Send + Sync + 'static) -> WsConnectorBuilder {
        WsConnectorBuilder::new(Source::Provider(Arc::new(provider)))
    }

    /// The Close frame its connections send when closed, shared with them.
    pub(crate) fn close_frame_slot(&self) -> &Arc<std::sync::Mutex<Option<CloseFrame>>> {
        &self.settings.liveness.close_frame
    }

    /// Replaces the endpoints with `urls`, in order (from the next attempt on; a connection that is up stays
    /// up): the URL changes at run time. Every clone of the connector sees it, the one a
    /// [`ReconnectingStream`](crate::ReconnectingStream) owns too (`stream.connector().set_endpoints(..)`). An
    /// empty list leaves the endpoints as they are.
    pub fn set_endpoints<I, U>(&self, urls: I)
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        let sources: Vec<Source> = urls.into_iter().map(|url| Source::Fixed(url.into())).collect();
        if !sources.is_empty() {
            self.ring.set(sources);
        }
    }

    /// Replaces the endpoints with `url` alone; see [`set_endpoints`](Self::set_endpoints).
    pub fn set_url(&self, url: impl Into<String>) {
        self.set_endpoints([url.into()]);
    }

    /// The URL the next attempt will use: the current source's (a provider is asked now).
    pub fn next_url(&self) -> String {
        self.ring.current().0
    }

    fn request(&self, url: &str) -> Result<Request, ConnectError> {
        let mut request = client_request(url, url)?;
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        if let Some(provider) = &self.header_provider {
            // A provider's header replaces a fixed one of the same name; its further values are kept too.
            let mut last: Option<HeaderName> = None;
            for (name, value) in provider() {
                match (name, &last) {
                    (Some(name), _) => {
                        headers.insert(&name, value);
                        last = Some(name);
                    }
                    (None, Some(name)) => {
                        headers.append(name, value);
                    }
                    (None, None) => {}
                }
            }
        }
        if !self.subprotocols.is_empty() {
            let joined = self.subprotocols.join(", ");
            let value = HeaderValue::from_str(&joined).map_err(|_| ConnectError::InvalidUrl {
                url: redact_url(url),
                reason: format!("invalid subprotocol list {joined:?}"),
            })?;
            headers.insert("sec-websocket-protocol", value);
        }
        Ok(request)
    }
}

/// The attempt future of a [`WsConnector`].
///
/// # Cancel safety
///
/// Dropping it abandons the attempt: what it had opened (TCP, TLS) is closed, nothing is retried by it.
pub type WsConnectorFuture = Pin<Box<dyn Future<Output = Result<WsConnection, ConnectError>> + Send>>;

impl Connect for WsConnector {
    type Connection = WsConnection;
    type Error = ConnectError;
    type Future = WsConnectorFuture;

    fn connect(&mut self) -> WsConnectorFuture {
        if let Some(reason) = &self.config_error {
            let error = ConnectError::Config { reason: reason.clone() };
            return Box::pin(future::ready(Err(error)));
        }
        let (url, turn) = self.ring.current();
        let request = self.request(&url);
        let settings = self.settings.clone();
        Box::pin(async move {
            let outcome = match request {
                Ok(request) => dial(request, &settings).await,
                Err(error) => Err(error),
            };
            match (outcome, turn) {
                (Ok(mut connection), Some(turn)) => {
                    connection.rotation = Some(turn.until_stable(settings.stable_after));
                    Ok(connection)
                }
                (Err(error), Some(turn)) => {
                    turn.advance();
                    Err(error)
                }
                (outcome, None) => outcome,
            }
        })
    }
}

impl fmt::Debug for WsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may carry credentials: only their names are shown.
        let header_names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        // URLs may carry credentials in their query or user info: those are hidden too.
        f.debug_struct("WsConnector")
            .field("endpoints", &self.ring)
            .field("headers", &header_names)
            .field("header_provider", &self.header_provider.is_some())
            .field("subprotocols", &self.subprotocols)
            .field("connect_timeout", &self.settings.connect_timeout)
            .field("tcp_nodelay", &self.settings.tcp.nodelay)
            .field("tcp_keepalive", &self.settings.tcp.keepalive)
            .field("custom_tls", &self.settings.tls.is_some())
            .field("proxy", &self.settings.proxy)
            .field("max_retry_after", &self.settings.max_retry_after)
            .field("stable_after", &self.settings.stable_after)
            .field("heartbeat", &self.settings.liveness.heartbeat)
            .field("reply_grace", &self.settings.liveness.reply_grace)
            .field("config_error", &self.config_error)
            .finish_non_exhaustive()
    }
}

/// Builds a [`WsConnector`]; made by [`WsConnector::builder`].
#[derive(Debug)]
pub struct WsConnectorBuilder {
    connector: WsConnector,
    roots: Option<RootCertStore>,
}

impl WsConnectorBuilder {
    fn new(source: Source) -> Self {
        Self {
            connector: WsConnector {
                ring: Ring::new(source),
                headers: HeaderMap::new(),
                header_provider: None,
                subprotocols: Vec::new(),
                settings: Settings::default(),
                config_error: None,
            },
            roots: None,
        }
    }

    /// Keeps the first configuration error: every attempt of the built connector fails with it.
    fn fail(&mut self, reason: String) {
        self.connector.config_error.get_or_insert(reason);
    }

    /// Appends a fixed URL to the endpoint ring, tried after the sources added before it (see
    /// [Endpoints](WsConnector#endpoints)). It adds to a URL provider; it does not replace it.
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.connector.ring.push(Source::Fixed(url.into()));
        self
    }

    /// Appends a URL provider to the endpoint ring: asked for the URL on each attempt that falls on it (see
    /// [Endpoints](WsConnector#endpoints)).
    pub fn with_endpoint_provider(mut self, provider: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.connector.ring.push(Source::Provider(Arc::new(provider)));
        self
    }

    /// Sets how long a connection must stay up to count as stable (default
    /// [`DEFAULT_STABLE_AFTER`](crate::DEFAULT_STABLE_AFTER), the same as
    /// [`ReconnectingStream::with_stable_after`](crate::ReconnectingStream::with_stable_after)'s, which it
    /// should match). With several endpoints, a connection dropped sooner, for whatever reason, moves the
    /// ring on to the next one; `Duration::ZERO` moves it only after failed attempts.
    pub fn with_stable_after(mut self, stable_after: Duration) -> Self {
        self.connector.settings.stable_after = stable_after;
        self
    }

    /// Sets the longest wait a server's `Retry-After` can impose (default [`DEFAULT_MAX_RETRY_AFTER`]): a
    /// longer one, in seconds or as a date, is taken as this long in [`ConnectError::Rejected`].
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.connector.settings.max_retry_after = max;
        self
    }

    /// Adds a header sent with every upgrade request.
    ///
    /// # Errors
    ///
    /// An invalid name or value makes every attempt of the built connector fail at once with
    /// [`ConnectError::Config`] naming the header. Its value is never shown (it may be a credential), nor an
    /// invalid name past its first invalid character (`"authorization: Bearer ..."` given as a name).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        match HeaderName::from_bytes(name.as_bytes()) {
            Err(_) => self.fail(invalid_header_name(name)),
            Ok(name) => match HeaderValue::from_str(value) {
                Ok(value) => {
                    self.connector.headers.insert(name, value);
                }
                Err(_) => self.fail(format!(
                    "invalid value for header {name} (only visible ASCII, spaces and tabs are allowed)"
                )),
            },
        }
        self
    }

    /// Sets a provider called on every attempt for extra headers, so a refreshed token is used on the next
    /// dial. Its headers replace static ones of the same name.
    pub fn with_header_provider(mut self, provider: impl Fn() -> HeaderMap + Send + Sync + 'static) -> Self {
        self.connector.header_provider = Some(Arc::new(provider));
        self
    }

    /// Adds a subprotocol to offer (`Sec-WebSocket-Protocol`).
    pub fn with_subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.connector.subprotocols.push(protocol.into());
        self
    }

    /// Sets tungstenite's limits and buffer sizes. The default is tungstenite's, with a
    /// [`DEFAULT_READ_BUFFER`] read buffer; message (64 MiB) and frame (16 MiB) limits are on.
    pub fn with_websocket_config(mut self, config: WebSocketConfig) -> Self {
        self.connector.settings.ws_config = config;
        self
    }

    /// Sets a timeout for one attempt (DNS, TCP, TLS and upgrade); [`ConnectError::Timeout`] when it passes.
    /// None by default: `ReconnectingStream`'s per-attempt timeout covers the attempt.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connector.settings.connect_timeout = Some(timeout);
        self
    }

    /// Sets each connection's heartbeat: a Ping every `interval`; when no frame arrives within `timeout` of
    /// one, the connection fails with [`ConnectionError::Silent`](super::ConnectionError::Silent) (and a
    /// reconnecting stream replaces it). A half-open connection is detected within `interval + timeout`.
    /// Default: [`DEFAULT_PING_INTERVAL`](super::DEFAULT_PING_INTERVAL) and
    /// [`DEFAULT_PING_TIMEOUT`](super::DEFAULT_PING_TIMEOUT), 20 s each.
    pub fn with_heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.connector.settings.liveness.heartbeat = Some((interval, timeout));
        self
    }

    /// Turns the heartbeat off: a connection that goes silent is then only detected by the operating system
    /// (TCP keepalive, see [`with_tcp_keepalive`](Self::with_tcp_keepalive)) or a receive timeout.
    pub fn without_heartbeat(mut self) -> Self {
        self.connector.settings.liveness.heartbeat = None;
        self
    }

    /// Uses `timer` for the heartbeat and the reply grace (for tests: a
    /// [`ManualClock`](crate::time::ManualClock)).
    pub fn with_timer(mut self, timer: impl Timer + 'static) -> Self {
        self.connector.settings.liveness.timer = Arc::new(timer);
        self
    }

    /// When the server's Close arrives right behind a message the application has not answered yet, waits up
    /// to `grace` for the answer before replying to the Close, so that the answer still goes out on this
    /// connection (ahead of the Close reply) when the reader runs ahead of the writer, as a client's driver
    /// does. Off by default: a `ReconnectingStream` read and written in turn needs none.
    pub fn with_reply_grace(mut self, grace: Duration) -> Self {
        self.connector.settings.liveness.reply_grace = Some(grace);
        self
    }

    /// Sets the Close frame each connection sends when it is closed (`code` and `reason`; the reason is cut to
    /// the 123 bytes a Close frame has room for). Default: a Close without a code.
    /// [`WsConnection::close_with`] overrides it for one connection.
    pub fn with_close_frame(self, code: u16, reason: &str) -> Self {
        *self
            .connector
            .settings
            .liveness
            .close_frame
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(close_frame(code, reason));
        self
    }

    /// Enables TCP keepalive probes after `idle` without traffic (off by default).
    pub fn with_tcp_keepalive(mut self, idle: Duration) -> Self {
        self.connector.settings.tcp.keepalive = Some(idle);
        self
    }

    /// Sets `TCP_NODELAY` (on by default).
    pub fn with_tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.connector.settings.tcp.nodelay = nodelay;
        self
    }

    /// Trusts `certificate` (DER) as a root, in addition to the default roots.
    ///
    /// # Errors
    ///
    /// A certificate rustls rejects makes every attempt of the built connector fail at once with
    /// [`ConnectError::Config`] (`root certificate rejected: ...`), even if
    /// [`with_rustls_config`](Self::with_rustls_config) replaces the roots later.
    pub fn with_root_certificate(mut self, certificate: CertificateDer<'static>) -> Self {
        let roots = self.roots.get_or_insert_with(transport::default_roots);
        if let Err(error) = roots.add(certificate) {
            self.fail(format!("root certificate rejected: {error}"));
        }
        self
    }

    /// Uses this rustls configuration for `wss://` (replacing the roots added with
    /// [`with_root_certificate`](Self::with_root_certificate)).
    pub fn with_rustls_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.roots = None;
        self.connector.settings.tls = Some(config);
        self
    }

    /// Dials every connection through this proxy: `http://[user:password@]host[:port]` (HTTP `CONNECT`, with
    /// Basic authentication from the user info, percent-decoded), `socks5h://...` (SOCKS5, the proxy resolves
    /// the target's name) or `socks5://...` (SOCKS5, the name is resolved here); a URL without a scheme is an
    /// HTTP proxy. No environment variable applies, `no_proxy` included. See [`proxy`](super::proxy) for the
    /// tunnel and its failures.
    ///
    /// # Examples
    ///
    /// ```
    /// use stream_tungstenite::ws::WsConnector;
    ///
    /// let connector = WsConnector::builder("wss://example.com/feed")
    ///     .with_proxy("http://user:p%40ss@proxy.internal:3128")
    ///     .build();
    /// // The credentials are never shown.
    /// assert!(format!("{connector:?}").contains(r#"Fixed("http://<redacted>@proxy.internal:3128")"#));
    /// ```
    ///
    /// # Errors
    ///
    /// A URL that cannot be used (another scheme, a path, a port out of range, a user name without a password)
    /// makes every attempt of the built connector fail at once with [`ConnectError::InvalidProxy`], which is
    /// fatal; it is shown with its credentials hidden.
    pub fn with_proxy(mut self, url: &str) -> Self {
        self.connector.settings.proxy = ProxySetting::explicit(url);
        self
    }

    /// Takes the proxy from the environment, as python websockets does: the default, so this only undoes
    /// [`with_proxy`](Self::with_proxy) or [`without_proxy`](Self::without_proxy).
    ///
    /// Each attempt reads the environment when it starts: `no_proxy` first (host names with their
    /// subdomains, `host:port`, IP addresses, CIDR blocks, or `*`; loopback is not excluded unless listed),
    /// then `wss_proxy`, `socks_proxy`, `https_proxy`, `all_proxy` for `wss://`, and `ws_proxy`,
    /// `socks_proxy`, `https_proxy`, `http_proxy`, `all_proxy` for `ws://`, each in lower then upper case.
    /// The rules in full are in [`proxy`](super::proxy).
    ///
    /// # Errors
    ///
    /// When the variable that applies holds a URL that cannot be used, that attempt fails with
    /// [`ConnectError::InvalidProxy`] naming the variable (fatal).
    pub fn with_proxy_from_env(mut self) -> Self {
        self.connector.settings.proxy = ProxySetting::FromEnv;
        self
    }

    /// Dials every connection directly, whatever proxy the environment names.
    pub fn without_proxy(mut self) -> Self {
        self.connector.settings.proxy = ProxySetting::Direct;
        self
    }

    /// Builds the connector.
    ///
    /// # Errors
    ///
    /// Never here: a configuration error (see [`with_header`](Self::with_header) and
    /// [`with_root_certificate`](Self::with_root_certificate), or a TLS configuration rustls could not make
    /// from the roots) is kept in the connector, whose every attempt fails with [`ConnectError::Config`].
    pub fn build(mut self) -> WsConnector {
        if let Some(roots) = self.roots.take() {
            match transport::client_config(roots) {
                Ok(config) => self.connector.settings.tls = Some(config),
                Err(error) => self.fail(format!("tls configuration failed: {error}")),
            }
        }
        if let Some(reason) = &self.connector.config_error {
            debug!(%reason, "connector built with an invalid configuration: every attempt fails");
        }
        self.connector
    }
}

/// Why `name` is not a header name, showing it only up to its first invalid character: what follows may be a
/// header value given as part of the name.
fn invalid_header_name(name: &str) -> String {
    let is_token = |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
    match name.bytes().position(|byte| !is_token(byte)) {
        None if name.is_empty() => "invalid header name: empty".to_owned(),
        // Every byte before `at` is ASCII, so `at` is a character boundary.
        Some(at) => format!(
            "invalid header name {:?}... (character {} is not allowed)",
            name.get(..at).unwrap_or_default(),
            at + 1
        ),
        None => format!("invalid header name {name:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_header_name_is_shown_up_to_its_first_invalid_character() {
        assert_eq!(
            invalid_header_name("authorization: Bearer s3cret"),
            r#"invalid header name "authorization"... (character 14 is not allowed)"#
        );
        assert_eq!(invalid_header_name(""), "invalid header name: empty");
    }

    #[test]
    fn a_connector_is_shown_without_credentials() {
        let debug = format!("{:?}", WsConnector::new("ws://u:p@127.0.0.1:1/x?token=s3cret"));
        assert!(!debug.contains("s3cret") && !debug.contains("u:p"), "{debug}");
    }
}
