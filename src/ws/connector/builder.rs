//! [`WsConnectorBuilder`]: every setting of a [`WsConnector`], each with its default.

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_rustls::rustls::pki_types::CertificateDer;
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use tracing::debug;

use super::{Settings, WsConnector};
use crate::time::Timer;
use crate::ws::connection::close_frame;
use crate::ws::proxy::ProxySetting;
use crate::ws::ring::{Ring, Source};
use crate::ws::transport;

/// Builds a [`WsConnector`]; made by [`WsConnector::builder`].
#[derive(Debug)]
pub struct WsConnectorBuilder {
    connector: WsConnector,
    roots: Option<RootCertStore>,
}

impl WsConnectorBuilder {
    pub(super) fn new(source: Source) -> Self {
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

    /// Sets the longest wait a server's `Retry-After` can impose (default [`DEFAULT_MAX_RETRY_AFTER`](crate::ws::DEFAULT_MAX_RETRY_AFTER)): a
    /// longer one, in seconds or as a date, is taken as this long in [`ConnectError::Rejected`](crate::ws::ConnectError::Rejected).
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.connector.settings.max_retry_after = max;
        self
    }

    /// Adds a header sent with every upgrade request.
    ///
    /// # Errors
    ///
    /// An invalid name or value makes every attempt of the built connector fail at once with
    /// [`ConnectError::Config`](crate::ws::ConnectError::Config) naming the header. Its value is never shown (it may be a credential), nor an
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
    /// [`DEFAULT_READ_BUFFER`](crate::ws::DEFAULT_READ_BUFFER) read buffer; message (64 MiB) and frame (16 MiB) limits are on.
    pub fn with_websocket_config(mut self, config: WebSocketConfig) -> Self {
        self.connector.settings.ws_config = config;
        self
    }

    /// Sets a timeout for one attempt (DNS, TCP, TLS and upgrade); [`ConnectError::Timeout`](crate::ws::ConnectError::Timeout) when it passes.
    /// None by default: `ReconnectingStream`'s per-attempt timeout covers the attempt.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connector.settings.connect_timeout = Some(timeout);
        self
    }

    /// Sets each connection's heartbeat: a Ping every `interval`; when no frame arrives within `timeout` of
    /// one, the connection fails with [`ConnectionError::Silent`](crate::ws::ConnectionError::Silent) (and a
    /// reconnecting stream replaces it). A half-open connection is detected within `interval + timeout`.
    /// Default: [`DEFAULT_PING_INTERVAL`](crate::ws::DEFAULT_PING_INTERVAL) and
    /// [`DEFAULT_PING_TIMEOUT`](crate::ws::DEFAULT_PING_TIMEOUT), 20 s each.
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
    /// [`WsConnection::close_with`](crate::ws::WsConnection::close_with) overrides it for one connection.
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
    /// [`ConnectError::Config`](crate::ws::ConnectError::Config) (`root certificate rejected: ...`), even if
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
    /// HTTP proxy. No environment variable applies, `no_proxy` included. See [`proxy`](crate::ws::proxy) for the
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
    /// makes every attempt of the built connector fail at once with [`ConnectError::InvalidProxy`](crate::ws::ConnectError::InvalidProxy), which is
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
    /// The rules in full are in [`proxy`](crate::ws::proxy).
    ///
    /// # Errors
    ///
    /// When the variable that applies holds a URL that cannot be used, that attempt fails with
    /// [`ConnectError::InvalidProxy`](crate::ws::ConnectError::InvalidProxy) naming the variable (fatal).
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
    /// from the roots) is kept in the connector, whose every attempt fails with [`ConnectError::Config`](crate::ws::ConnectError::Config).
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
pub(super) fn invalid_header_name(name: &str) -> String {
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
