//! Proxies under the WebSocket: HTTP `CONNECT` (with Basic authentication) and SOCKS5 (with or without
//! username/password), for `ws://` and `wss://` alike, chosen per connector or from the environment.
//!
//! # The tunnel
//!
//! The proxy's address is resolved here and dialled over TCP; on that connection the tunnel to the target
//! is asked for (`CONNECT host:port`, or a SOCKS5 connect request), then TLS runs inside the tunnel for
//! `wss://`, checking the certificate against the *target's* host name, and then the WebSocket upgrade as
//! without a proxy. The proxy sees only the target's host and port, and for `wss://` encrypted bytes.
//!
//! Proxy URLs: `http://[user:password@]host[:port]` (port 80 by default), `socks5h://...` (SOCKS5, the proxy
//! resolves the target's name: "remote DNS") and `socks5://...` (SOCKS5, the target's name is resolved here
//! and its address sent, as curl and python websockets do), port 1080 by default. User name and password are
//! percent-decoded (`p%40ss` is `p@ss`). `https://` proxies (TLS to the proxy) and SOCKS4 are not supported.
//!
//! # Choosing the proxy
//!
//! By default ([`with_proxy_from_env`]) each attempt reads the environment as python websockets does, when
//! the attempt starts (so a change of the environment applies from the next attempt on):
//!
//! - `no_proxy` (or `NO_PROXY`) first: a comma-separated list of host names (each matching itself and its
//!   subdomains, with or without a leading dot), `name:port` entries, IP addresses and CIDR blocks
//!   (`10.0.0.0/8`, `::1/128`); `*` alone matches every host. Loopback is **not** excluded implicitly
//!   (python does not exclude it either): list `localhost,127.0.0.1,::1` to keep local connections direct.
//! - then, for `wss://`: `wss_proxy`, `socks_proxy`, `https_proxy`, `all_proxy`; for `ws://`: `ws_proxy`,
//!   `socks_proxy`, `https_proxy`, `http_proxy`, `all_proxy`. The first one set wins; a lower-case variable
//!   wins over its upper-case twin, and set to the empty string it turns that entry off. `all_proxy` is
//!   curl's, read last; python websockets does not read it.
//! - a value without a scheme is an HTTP proxy (`socks5h` for `socks_proxy`); `HTTP_PROXY` in upper case is
//!   ignored when `REQUEST_METHOD` is set (a CGI script: "httpoxy"), as python ignores it.
//!
//! [`with_proxy`] names one proxy for every connection (no variable, not even `no_proxy`, applies), and
//! [`without_proxy`] dials every connection directly whatever the environment says.
//!
//! # Failures
//!
//! - [`ConnectError::ProxyAuth`]: HTTP 407, or SOCKS5 credentials rejected or required. Fatal.
//! - [`ConnectError::InvalidProxy`]: a proxy URL that cannot be used (given, or in the variable that
//!   applies, which the error names). Fatal.
//! - [`ConnectError::Proxy`] with a [`ProxyFailure`]: the proxy could not be reached (refused, DNS), closed
//!   or reset the connection, or refused the tunnel. Refused connections, resets, HTTP 5xx/408/429 and most
//!   SOCKS5 replies are retried; HTTP 4xx and SOCKS5 "not allowed" are fatal; see
//!   [`ProxyFailure::is_retryable`]. A connector timeout covers the proxy's part of the attempt too.
//!
//! A proxy's credentials never appear in an error, a log line or `Debug` output: a proxy is shown as
//! `http://<redacted>@host:port`.
//!
//! [`with_proxy_from_env`]: crate::ws::WsConnectorBuilder::with_proxy_from_env
//! [`with_proxy`]: crate::ws::WsConnectorBuilder::with_proxy
//! [`without_proxy`]: crate::ws::WsConnectorBuilder::without_proxy
//! [`ConnectError::ProxyAuth`]: crate::ws::ConnectError::ProxyAuth
//! [`ConnectError::InvalidProxy`]: crate::ws::ConnectError::InvalidProxy
//! [`ConnectError::Proxy`]: crate::ws::ConnectError::Proxy

mod env;
mod error;
mod http;
mod no_proxy;
mod socks5;
mod url;

use std::fmt;
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;

use async_io::Async;

use self::env::Env;
use self::socks5::Address;
use self::url::{Protocol, ProxyUrl};
use super::error::ConnectError;
use super::transport::{self, Target, TcpOptions};
pub(crate) use crate::ws::error::ProxyFailure;

/// Which proxy a connector uses.
#[derive(Clone, Default)]
pub(crate) enum ProxySetting {
    /// The one the environment names for each target, read on each attempt.
    #[default]
    FromEnv,
    /// None.
    Direct,
    /// This one, for every target.
    Fixed(Arc<ProxyUrl>),
    /// A proxy URL that cannot be used: every attempt fails with it.
    Invalid { proxy: String, reason: String },
}

impl ProxySetting {
    /// `url`, parsed (a URL without a scheme is an HTTP proxy).
    pub(crate) fn explicit(url: &str) -> Self {
        match ProxyUrl::parse(url, "http") {
            Ok(proxy) => Self::Fixed(Arc::new(proxy)),
            Err(reason) => Self::Invalid {
                proxy: url::redact_text(url),
                reason,
            },
        }
    }

    /// The proxy for `target`, if any, and the variable that named it.
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidProxy`] for a proxy URL that cannot be used.
    pub(crate) fn route(&self, target: &Target) -> Result<Option<Route>, ConnectError> {
        self.route_in(target, &env::process_env)
    }

    fn route_in(&self, target: &Target, env: Env<'_>) -> Result<Option<Route>, ConnectError> {
        match self {
            Self::Direct => Ok(None),
            Self::Fixed(proxy) => Ok(Some(Route {
                proxy: ProxyUrl::clone(proxy),
                variable: None,
            })),
            Self::Invalid { proxy, reason } => Err(ConnectError::InvalidProxy {
                proxy: proxy.clone(),
                reason: reason.clone(),
            }),
            Self::FromEnv => Ok(
                env::proxy_for(&target.host, target.port, target.tls, env)?.map(|found| Route {
                    proxy: found.proxy,
                    variable: Some(found.variable),
                }),
            ),
        }
    }
}

impl fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FromEnv => f.write_str("FromEnv"),
            Self::Direct => f.write_str("Direct"),
            Self::Fixed(proxy) => f.debug_tuple("Fixed").field(&proxy.redacted()).finish(),
            Self::Invalid { proxy, .. } => f.debug_tuple("Invalid").field(proxy).finish(),
        }
    }
}

/// The proxy one attempt goes through.
#[derive(Debug)]
pub(crate) struct Route {
    proxy: ProxyUrl,
    /// The environment variable that named it.
    variable: Option<&'static str>,
}

impl Route {
    /// The proxy as errors and logs show it (`scheme://[<redacted>@]host:port`).
    pub(crate) fn redacted(&self) -> String {
        self.proxy.redacted()
    }

    /// The environment variable that named the proxy, if one did.
    pub(crate) fn variable(&self) -> Option<&'static str> {
        self.variable
    }

    /// Dials the proxy and opens the tunnel to `target`: the TCP stream returned is connected to the target
    /// (TLS and the upgrade run on it).
    ///
    /// # Errors
    ///
    /// [`ConnectError::Proxy`] when the proxy cannot be reached or does not open the tunnel,
    /// [`ConnectError::ProxyAuth`] when it does not accept the authentication, [`ConnectError::Dns`] when the
    /// target's name cannot be resolved for `socks5://`.
    pub(crate) async fn dial(&self, target: &Target, options: TcpOptions) -> Result<Async<TcpStream>, ConnectError> {
        let proxy = &self.proxy;
        let at = Target {
            host: proxy.host.clone(),
            port: proxy.port,
            tls: false,
        };
        let mut tcp = transport::dial_tcp(&at, options)
            .await
            .map_err(|error| unreachable(self.redacted(), error))?;
        let credentials = proxy.credentials.as_ref();
        let outcome = match proxy.protocol {
            Protocol::Http => http::connect(&mut tcp, &target.host, target.port, credentials).await,
            Protocol::Socks5 { remote_dns } => {
                let address = socks_address(target, remote_dns).await?;
                socks5::connect(&mut tcp, &address, target.port, credentials).await
            }
        };
        outcome.map_err(|tunnel| tunnel.into_connect_error(self.redacted()))?;
        Ok(tcp)
    }
}

/// A failure to dial the proxy itself, as [`ProxyFailure::Unreachable`].
fn unreachable(proxy: String, error: ConnectError) -> ConnectError {
    match error {
        ConnectError::Dns { source, .. } | ConnectError::Tcp { source, .. } => ConnectError::Proxy {
            proxy,
            failure: ProxyFailure::Unreachable,
            source: Some(source),
        },
        other => other,
    }
}

/// The target as a SOCKS5 address: an address as it is; a name as it is with remote DNS, else resolved here
/// (off the executor) to its first address.
async fn socks_address(target: &Target, remote_dns: bool) -> Result<Address, ConnectError> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(Address::Ip(ip));
    }
    if remote_dns {
        return Ok(Address::Name(target.host.clone()));
    }
    let dns_error = |source| ConnectError::Dns {
        host: target.host.clone(),
        source,
    };
    let addrs = async_net::resolve((target.host.as_str(), target.port))
        .await
        .map_err(dns_error)?;
    match addrs.first() {
        Some(addr) => Ok(Address::Ip(addr.ip())),
        None => Err(dns_error(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address found",
        ))),
    }
}

/// An in-memory peer for the handshakes' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_io::{AsyncRead, AsyncWrite};

    /// Reads replay a script a few bytes at a time (so that replies arrive split), then end; writes are
    /// recorded.
    #[derive(Debug)]
    pub(crate) struct Scripted {
        input: Vec<u8>,
        at: usize,
        pub(crate) written: Vec<u8>,
    }

    impl Scripted {
        pub(crate) fn new(input: &[u8]) -> Self {
            Self {
                input: input.to_vec(),
                at: 0,
                written: Vec::new(),
            }
        }
    }

    impl AsyncRead for Scripted {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(7).min(self.input.len() - self.at);
            let at = self.at;
            buf[..n].copy_from_slice(&self.input[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;

    use super::*;

    fn target(host: &str, port: u16, tls: bool) -> Target {
        Target {
            host: host.into(),
            port,
            tls,
        }
    }

    #[test]
    fn an_explicit_proxy_ignores_the_environment_and_the_opt_out_dials_directly() {
        let map: HashMap<&str, &str> = [("https_proxy", "http://env:1"), ("no_proxy", "*")].into();
        let env = move |name: &str| map.get(name).map(OsString::from);
        let wss = target("example.com", 443, true);
        let explicit = ProxySetting::explicit("socks5h://u:p@explicit:2");
        let route = explicit.route_in(&wss, &env).unwrap().unwrap();
        assert_eq!(
            (route.redacted().as_str(), route.variable()),
            ("socks5h://<redacted>@explicit:2", None)
        );
        assert!(ProxySetting::Direct.route_in(&wss, &env).unwrap().is_none());
        assert!(
            ProxySetting::FromEnv.route_in(&wss, &env).unwrap().is_none(),
            "no_proxy=*"
        );
        let map: HashMap<&str, &str> = [("https_proxy", "http://env:1")].into();
        let env = move |name: &str| map.get(name).map(OsString::from);
        let route = ProxySetting::FromEnv.route_in(&wss, &env).unwrap().unwrap();
        assert_eq!(
            (route.redacted().as_str(), route.variable()),
            ("http://env:1", Some("https_proxy"))
        );
    }

    #[test]
    fn an_invalid_explicit_proxy_fails_every_attempt_without_showing_credentials() {
        let setting = ProxySetting::explicit("https://user:s3cret@proxy:443");
        let error = setting.route_in(&target("h", 1, false), &|_| None).unwrap_err();
        let text = format!("{error} / {error:?} / {setting:?}");
        assert!(text.contains("https proxies"), "{text}");
        assert!(!text.contains("s3cret") && !text.contains("user"), "{text}");
        assert!(!error.is_retryable());
    }

    #[test]
    fn a_setting_is_shown_without_credentials() {
        let debug = format!("{:?}", ProxySetting::explicit("http://user:s3cret@proxy:3128"));
        assert_eq!(debug, r#"Fixed("http://<redacted>@proxy:3128")"#);
    }

    #[test]
    fn a_socks_target_is_a_name_with_remote_dns_and_an_address_otherwise() {
        let name = target("localhost", 80, false);
        let remote = async_io::block_on(socks_address(&name, true)).unwrap();
        assert_eq!(remote, Address::Name("localhost".into()));
        let local = async_io::block_on(socks_address(&name, false)).unwrap();
        assert!(matches!(local, Address::Ip(ip) if ip.is_loopback()), "{local:?}");
        let ip = async_io::block_on(socks_address(&target("::1", 80, false), true)).unwrap();
        assert_eq!(ip, Address::Ip("::1".parse().unwrap()));
    }
}
