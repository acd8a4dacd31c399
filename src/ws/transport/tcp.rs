//! Dialling TCP: the target from the request's URI, DNS off the executor, socket options.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use async_io::Async;
use tracing::trace;

use crate::redact::redact_url;
use crate::ws::error::ConnectError;

/// Where to dial, taken from the request's URI.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

impl Target {
    pub(crate) fn from_uri(uri: &async_tungstenite::tungstenite::http::Uri) -> Result<Self, ConnectError> {
        let invalid = |reason: &str| ConnectError::InvalidUrl {
            url: redact_url(&uri.to_string()),
            reason: reason.to_owned(),
        };
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            Some(_) => return Err(invalid("the scheme must be ws or wss")),
            None => return Err(invalid("no scheme")),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| invalid("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self { host, port, tls })
    }
}

/// TCP options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpOptions {
    pub(crate) nodelay: bool,
    pub(crate) keepalive: Option<Duration>,
}

/// Resolves `target` without blocking the executor (a blocking lookup runs on async-net's thread pool) and
/// connects to each address in turn.
pub(crate) async fn dial_tcp(target: &Target, options: TcpOptions) -> Result<Async<TcpStream>, ConnectError> {
    let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => async_net::resolve((target.host.as_str(), target.port))
            .await
            .map_err(|source| ConnectError::Dns {
                host: target.host.clone(),
                source,
            })?,
    };
    let mut last = None;
    for addr in addrs {
        trace!(%addr, "tcp connect");
        match Async::<TcpStream>::connect(addr).await {
            Ok(tcp) => {
                configure(&tcp, options);
                return Ok(tcp);
            }
            Err(source) => last = Some(ConnectError::Tcp { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::Dns {
        host: target.host.clone(),
        source: io::Error::new(io::ErrorKind::NotFound, "no address found"),
    }))
}

fn configure(tcp: &Async<TcpStream>, options: TcpOptions) {
    let socket = socket2::SockRef::from(tcp.get_ref());
    if let Err(error) = socket.set_tcp_nodelay(options.nodelay) {
        trace!(%error, "setting TCP_NODELAY failed");
    }
    if let Some(time) = options.keepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(time).with_interval(time);
        if let Err(error) = socket.set_tcp_keepalive(&keepalive) {
            trace!(%error, "setting TCP keepalive failed");
        }
    }
}
