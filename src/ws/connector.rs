//! [`WsConnector`]: what differs per deployment (URLs, headers, subprotocols, limits, TLS, timeouts), built
//! once and called once per attempt.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::handshake::client::Request;
use async_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_rustls::rustls::pki_types::CertificateDer;
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use futures_util::future::{self, Either};
use tracing::debug;

use super::connection::WsConnection;
use super::error::ConnectError;
use super::transport::{self, MaybeTlsStream, Target, TcpOptions, Transport};
use crate::connect::Connect;
use crate::error::ConnectTimeout;
use crate::redact::redact_url;

/// The default read buffer per connection: 32 KiB (tungstenite's own default is 128 KiB, zero-filled on the
/// first read: most of an idle connection's memory). A busy connection reads ahead up to 96 KiB per system
/// call into a buffer of its own, freed as soon as the socket has nothing more, so it reads as fast as with a
/// large buffer while an idle one keeps only these 32 KiB.
pub const DEFAULT_READ_BUFFER: usize = 32 * 1024;

/// Opens a WebSocket connection: TCP (async-io, `TCP_NODELAY`), TLS for `wss://` (rustls, default roots),
/// then the upgrade.
///
/// `request` is anything tungstenite accepts: `&str`, `String`, a `Uri`, or an `http::Request` carrying
/// headers and subprotocols. The defaults are [`WsConnector`]'s; build one for more control.
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
/// ([`ConnectError::is_retryable`], [`ConnectError::retry_after`]), which a reconnecting stream follows.
pub async fn connect<R>(request: R) -> Result<WsConnection, ConnectError>
where
    R: IntoClientRequest + Unpin,
{
    let request = into_request(request)?;
    dial(request, &Settings::default()).await
}

fn into_request<R: IntoClientRequest>(request: R) -> Result<Request, ConnectError> {
    request.into_client_request().map_err(|error| ConnectError::InvalidUrl {
        url: String::new(),
        reason: error.to_string(),
    })
}

/// Everything a dial needs besides the request.
#[derive(Clone)]
struct Settings {
    ws_config: WebSocketConfig,
    tls: Option<Arc<ClientConfig>>,
    connect_timeout: Option<Duration>,
    tcp: TcpOptions,
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

async fn dial_inner(request: Request, settings: &Settings) -> Result<WsConnection, ConnectError> {
    let target = Target::from_uri(request.uri())?;
    debug!(host = %target.host, port = target.port, tls = target.tls, "dialling");
    let tcp = transport::dial_tcp(&target, settings.tcp).await?;
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
    let (ws, response) =
        async_tungstenite::client_async_with_config(request, Transport::new(stream), Some(settings.ws_config))
            .await
            .map_err(ConnectError::from_upgrade)?;
    // A fresh WebSocket over the same bytes: its read buffer has the configured size for good (see
    // `Transport`); the handshake read nothing past the response head, so nothing is left behind.
    let transport = ws.into_inner().upgraded();
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Ok(WsConnection::new(transport, settings.ws_config, protocol))
}

type UrlProvider = Arc<dyn Fn() -> String + Send + Sync>;
type HeaderProvider = Arc<dyn Fn() -> HeaderMap + Send + Sync>;

#[derive(Clone)]
enum Urls {
    /// Tried in turn: the next one after a failed attempt.
    Endpoints(Vec<String>),
    /// Asked once per attempt.
    Provider(UrlProvider),
}

/// A WebSocket connector: a [`Connect`] that dials a fresh connection per attempt.
///
/// Cheap to clone (the configuration is shared). Built with [`WsConnector::builder`].
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
    urls: Urls,
    next_endpoint: Arc<AtomicUsize>,
    headers: HeaderMap,
    header_provider: Option<HeaderProvider>,
    subprotocols: Vec<String>,
    settings: Settings,
}

impl WsConnector {
    /// A connector for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self::builder(url).build()
    }

    /// Starts building a connector for `url`.
    pub fn builder(url: impl Into<String>) -> WsConnectorBuilder {
        WsConnectorBuilder {
            connector: Self {
                urls: Urls::Endpoints(vec![url.into()]),
                next_endpoint: Arc::new(AtomicUsize::new(0)),
                headers: HeaderMap::new(),
                header_provider: None,
                subprotocols: Vec::new(),
                settings: Settings::default(),
            },
            roots: None,
        }
    }

    /// Starts building a connector that asks `provider` for the URL on every attempt.
    pub fn builder_with_url_provider(provider: impl Fn() -> String + Send + Sync + 'static) -> WsConnectorBuilder {
        let mut builder = Self::builder(String::new());
        builder.connector.urls = Urls::Provider(Arc::new(provider));
        builder
    }

    /// The URL the next attempt will use.
    pub fn next_url(&self) -> String {
        match &self.urls {
            Urls::Endpoints(urls) => {
                let index = self.next_endpoint.load(Ordering::Relaxed) % urls.len().max(1);
                urls.get(index).cloned().unwrap_or_default()
            }
            Urls::Provider(provider) => provider(),
        }
    }

    fn request(&self) -> Result<Request, ConnectError> {
        let url = self.next_url();
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|error| ConnectError::InvalidUrl {
                url: redact_url(&url),
                reason: error.to_string(),
            })?;
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        if let Some(provider) = &self.header_provider {
            for (name, value) in provider() {
                if let Some(name) = name {
                    headers.insert(name, value);
                }
            }
        }
        if !self.subprotocols.is_empty() {
            let joined = self.subprotocols.join(", ");
            let value = HeaderValue::from_str(&joined).map_err(|_| ConnectError::InvalidUrl {
                url: redact_url(&url),
                reason: format!("invalid subprotocol list {joined:?}"),
            })?;
            headers.insert("sec-websocket-protocol", value);
        }
        Ok(request)
    }
}

/// The attempt future of a [`WsConnector`].
pub type WsConnectorFuture = Pin<Box<dyn Future<Output = Result<WsConnection, ConnectError>> + Send>>;

impl Connect for WsConnector {
    type Connection = WsConnection;
    type Error = ConnectError;
    type Future = WsConnectorFuture;

    fn connect(&mut self) -> WsConnectorFuture {
        let request = self.request();
        let settings = self.settings.clone();
        let rotate = match &self.urls {
            Urls::Endpoints(urls) if urls.len() > 1 => Some(Arc::clone(&self.next_endpoint)),
            _ => None,
        };
        Box::pin(async move {
            let outcome = dial(request?, &settings).await;
            if let (Err(_), Some(next)) = (&outcome, rotate) {
                next.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        })
    }
}

impl fmt::Debug for WsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may carry credentials: only their names are shown.
        let header_names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        // URLs may carry credentials in their query or user info: those are hidden too.
        let mut s = f.debug_struct("WsConnector");
        match &self.urls {
            Urls::Endpoints(urls) => {
                let shown: Vec<String> = urls.iter().map(|url| redact_url(url)).collect();
                s.field("endpoints", &shown)
            }
            Urls::Provider(_) => s.field("endpoints", &"<provider>"),
        };
        s.field("headers", &header_names)
            .field("header_provider", &self.header_provider.is_some())
            .field("subprotocols", &self.subprotocols)
            .field("connect_timeout", &self.settings.connect_timeout)
            .field("tcp_nodelay", &self.settings.tcp.nodelay)
            .field("tcp_keepalive", &self.settings.tcp.keepalive)
            .field("custom_tls", &self.settings.tls.is_some())
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
    /// Adds a fallback endpoint: after a failed attempt the next endpoint is tried, in a ring.
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        match &mut self.connector.urls {
            Urls::Endpoints(urls) => urls.push(url.into()),
            Urls::Provider(_) => self.connector.urls = Urls::Endpoints(vec![url.into()]),
        }
        self
    }

    /// Adds a header sent with every upgrade request.
    ///
    /// # Panics
    ///
    /// Never: an invalid name or value is logged and skipped.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => {
                self.connector.headers.insert(name, value);
            }
            _ => tracing::warn!(header = name, "invalid header skipped"),
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
    pub fn with_root_certificate(mut self, certificate: CertificateDer<'static>) -> Self {
        let roots = self.roots.get_or_insert_with(transport::default_roots);
        if let Err(error) = roots.add(certificate) {
            tracing::warn!(%error, "root certificate skipped");
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

    /// Builds the connector.
    pub fn build(mut self) -> WsConnector {
        if let Some(roots) = self.roots.take() {
            match transport::client_config(roots) {
                Ok(config) => self.connector.settings.tls = Some(config),
                Err(error) => {
                    tracing::warn!(%error, "custom tls configuration failed; using the default")
                }
            }
        }
        self.connector
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connector_is_shown_without_credentials() {
        let debug = format!("{:?}", WsConnector::new("ws://u:p@127.0.0.1:1/x?token=s3cret"));
        assert!(!debug.contains("s3cret") && !debug.contains("u:p"), "{debug}");
    }
}
