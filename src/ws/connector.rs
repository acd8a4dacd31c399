//! [`WsConnector`]: what differs per deployment (URLs, headers, subprotocols, limits, TLS, timeouts), built
//! once and called once per attempt.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::client::{ClientRequestBuilder, IntoClientRequest};
use async_tungstenite::tungstenite::handshake::client::Request;
use async_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use futures_rustls::rustls::ClientConfig;
use futures_util::future::{self, Either};
use tracing::debug;

use super::connection::{Liveness, WsConnection};
use super::error::ConnectError;
use super::proxy::ProxySetting;
use super::ring::{Ring, Source};
use super::transport::{self, MaybeTlsStream, Target, TcpOptions, Transport};
use super::upgrade;
use crate::connect::Connect;
use crate::error::ConnectTimeout;
use crate::reconnect::DEFAULT_STABLE_AFTER;
use crate::redact::redact_url;

mod builder;

pub use self::builder::WsConnectorBuilder;

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
    super::upgrade::basic_auth_from_user_info(&mut request);
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

#[cfg(test)]
mod tests {
    use super::builder::invalid_header_name;
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
