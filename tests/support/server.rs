//! Loopback servers for WebSocket tests: a thread per connection, each running its handler on
//! `async_io::block_on`, so the client under test may run on any runtime.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_io::Async;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures::StreamExt;

pub type Handler = Arc<dyn Fn(Async<TcpStream>, usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A running server: its address, how many connections it accepted, and a log its handlers may write to.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// Starts a server on 127.0.0.1:0 running `handler(tcp, index, log)` for every connection.
pub fn serve<F, Fut>(handler: F) -> Server
where
    F: Fn(Async<TcpStream>, usize, Arc<Mutex<Vec<String>>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let server = Server {
        addr,
        accepted: Arc::clone(&accepted),
        log: Arc::clone(&log),
    };
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let index = accepted.fetch_add(1, Ordering::SeqCst);
            let handler = Arc::clone(&handler);
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let Ok(tcp) = Async::new(tcp) else { return };
                async_io::block_on(handler(tcp, index, log));
            });
        }
    });
    server
}

#[allow(clippy::result_large_err)]
/// Accepts the upgrade, recording the request's headers in the log as `header <name>: <value>`.
pub async fn accept_logging_headers(
    tcp: Async<TcpStream>,
    log: &Arc<Mutex<Vec<String>>>,
) -> Option<WebSocketStream<Async<TcpStream>>> {
    let log = Arc::clone(log);
    async_tungstenite::accept_hdr_async(
        tcp,
        move |request: &async_tungstenite::tungstenite::handshake::server::Request,
              mut response: async_tungstenite::tungstenite::handshake::server::Response| {
            for (name, value) in request.headers() {
                log.lock()
                    .unwrap()
                    .push(format!("header {}: {}", name, value.to_str().unwrap_or("?")));
            }
            if let Some(protocol) = request.headers().get("sec-websocket-protocol") {
                let first = protocol
                    .to_str()
                    .unwrap_or("")
                    .split(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                response
                    .headers_mut()
                    .insert("sec-websocket-protocol", first.parse().unwrap());
            }
            Ok(response)
        },
    )
    .await
    .ok()
}

/// An echo server; with `drop_every = Some(n)` it drops the TCP connection (no close handshake) after
/// echoing n messages.
pub fn echo_server(drop_every: Option<usize>) -> Server {
    serve(move |tcp, _, _| async move {
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        let mut echoed = 0;
        while let Some(Ok(message)) = ws.next().await {
            if !(message.is_text() || message.is_binary()) {
                continue;
            }
            if ws.send(message).await.is_err() {
                return;
            }
            echoed += 1;
            if Some(echoed) == drop_every {
                return;
            }
        }
    })
}

/// A server that answers every upgrade request with this raw HTTP status line and headers (each line ending
/// in `\r\n`).
pub fn rejecting_server(status: u16, reason: &'static str, headers: impl Into<String>) -> Server {
    let headers = headers.into();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = Server {
        addr,
        accepted: Arc::clone(&accepted),
        log: Arc::default(),
    };
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            accepted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let mut request = Vec::new();
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = "go away";
            let _ = write!(
                tcp,
                "HTTP/1.1 {status} {reason}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    server
}

/// Sends `Message::Close` with `code` after the first message (or at once with `after_first = false`).
pub fn closing_server(code: u16, after_first: bool) -> Server {
    serve(move |tcp, _, _| async move {
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        if after_first {
            let _ = ws.next().await;
        }
        let frame = async_tungstenite::tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: "restart".into(),
        };
        let _ = ws.send(Message::Close(Some(frame))).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
}

/// A wss echo server with a fresh self-signed certificate for `localhost`, and that certificate (to trust as a
/// root).
pub fn tls_echo_server() -> (Server, futures_rustls::rustls::pki_types::CertificateDer<'static>) {
    use futures_rustls::rustls::{self, pki_types::PrivateKeyDer, pki_types::PrivatePkcs8KeyDer};
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(config));
    let server = serve(move |tcp, _, _| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut ws) = async_tungstenite::accept_async(tls).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() && ws.send(message).await.is_err() {
                    return;
                }
            }
        }
    });
    (server, cert)
}
