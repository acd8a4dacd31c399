//! Our WebSocket client against the bare async-tungstenite socket and tokio-websockets, over loopback, in the
//! same run.
//!
//! Run it with `cargo bench --bench websocket` (a few minutes at most; `BENCH_QUICK=1` or `-- --quick` for a
//! run of well under a minute). `WS_BENCH_ONLY` picks figures, comma-separated, from `receive`, `echo`,
//! `reconnect` and `memory` (`WS_BENCH_ONLY=memory` prints the idle memory lines alone); criterion's report is
//! printed only when every figure is. It prints criterion's report for each benchmark, then the headline
//! figures, each as a ratio to bare async-tungstenite (with the target) and to tokio-websockets:
//!
//! - **receive 64B / 1KiB** (throughput ratio, other's time / our time; 1.00 = equal, target >= 0.97 against
//!   bare): the server floods 1000 binary messages as fast as it can; we time the client from the first
//!   message's arrival to the last's, so the request's round trip is not part of it.
//! - **echo 64B** (latency ratio, our time / other's, target <= 1.05 against bare; p50, with p90 and p99
//!   below): send one message, await its echo. When pinned (see below), a second time with the client and a
//!   second server on one CPU.
//! - **reconnect** (latency ratio, ours / other's, target <= 1.1 against bare): the client tells the server
//!   `drop`; the server drops the TCP connection at once (no Close frame); we time from sending `drop` to the
//!   first message of the next connection, which the server sends right after each accept. Ours is a
//!   [`ReconnectingStream`] with [`Immediate`] retry; bare and tokio-websockets are a hand-written loop (read
//!   until the stream ends, connect again at once, read the first message). All clock the same span: the
//!   one-way trip of `drop`, the drop, noticing it, TCP connect, upgrade, greeting.
//! - **idle memory per connection** (KiB, ours against bare, target <= 0.5; and against tokio-websockets): RSS
//!   growth of a fresh client process per connection, over 500 idle connections with one message exchanged on
//!   each (see below); for `ws://` and `wss://`, and for a [`WebSocketClient`].
//!
//! "bare" is `async_tungstenite::client_async(url, Async::<TcpStream>::connect(addr))` (`TCP_NODELAY`, as
//! every client here) with tungstenite's default configuration (128 KiB read buffer); "ours" is
//! `ReconnectingStream::new(move || stream_tungstenite::connect(url.clone()))` (its default
//! [`DEFAULT_READ_BUFFER`]); "tokio-websockets" is `tokio_websockets::ClientBuilder::connect_on` over tokio's
//! `TcpStream` (`TCP_NODELAY`, as ours), on a current-thread tokio runtime: the reference as its users run it.
//! Diagnostic lines under each figure compare like with like: bare with our read buffer, ours with 128 KiB,
//! and tokio-websockets over async-io's socket (through tokio-util's compat layer, on async-io's `block_on`
//! as ours and bare are), which tells the runtime's share from the library's.
//!
//! # Method
//!
//! - **The server is another process**: this binary, re-executed with `WS_BENCH_ROLE=server`, running every
//!   connection on one `async_io::block_on` thread. So on 2 cores the client and the server each have one,
//!   and the server's memory is never counted. It floods by writing pre-encoded frames straight to the
//!   socket, so it is much faster than any client and the client is what is measured. It exits when this
//!   process goes away (its stdin closes). It also serves `wss://` (a self-signed certificate for
//!   `localhost`, made at start) for the memory figure.
//! - **Each client on its own runtime.** A sample runs on the client's runtime (`async_io::block_on`, or the
//!   tokio runtime's `block_on`), the same way for every variant.
//! - **Interleaved medians.** Each figure's ratio comes from a loop that runs the variants in turn, rotating
//!   which goes first, and compares medians: drift on the machine hits all variants alike. Criterion's report
//!   is printed too, but its numbers come from separate runs (and, for receive, long-lived connections).
//! - **A fresh connection per receive sample.** Over loopback, a long-lived connection settles into a fast or
//!   a slow regime (2-3x apart at 1 KiB, depending on how much data is in flight as TCP autotunes its
//!   buffers, and thus on whether it is still in cache) and stays there for a while; with one connection per
//!   variant the 1 KiB ratio swung from 0.5 to 1.8 between runs. Each receive sample therefore opens a new
//!   connection (not timed), so every variant starts from the same state.
//! - **Pinned CPUs.** When the `taskset` tool is there and two CPUs are allowed, the client is pinned to one
//!   and the server to the other, so the scheduler's placement (one CPU or two, changing during the run) is
//!   not a variable. `WS_BENCH_NO_PIN=1` turns this off. Pinned, a round trip wakes the other CPU each way,
//!   which on a VM costs far more than the clients do (60-80 µs against 25 µs on one CPU, here): the echo
//!   ratios are then close to 1 whatever the clients do. The echo figure is therefore measured a second
//!   time against a server on the client's CPU, where a round trip is the CPU work of both sides (system
//!   calls included) and the clients' differences show.
//! - **Noise.** On a shared 2-CPU machine the absolute numbers move by 2x with other load; the ratios move
//!   much less, but a single run's third digit means little. Run it twice.
//! - **Memory in fresh processes.** Each variant is measured in its own child process (this binary with
//!   `WS_BENCH_ROLE=idle-<variant>`), since memory freed by an earlier phase need not go back to the OS. The
//!   child opens one connection and exchanges a message first, so one-time costs (the reactor thread,
//!   allocator arenas, lazily built statics, the TLS configuration) fall before the baseline; then it reads
//!   `VmRSS` from `/proc/self/status`, opens N more connections with one 64-byte echo on each (the first read
//!   is when tungstenite zero-fills its read buffer), reads `VmRSS` again and reports the growth over N. The
//!   clients are kept in a `Vec`, so their own size counts too. Linux only.
//!
//! [`ReconnectingStream`]: stream_tungstenite::ReconnectingStream
//! [`Immediate`]: stream_tungstenite::retry::Immediate
//! [`DEFAULT_READ_BUFFER`]: stream_tungstenite::ws::DEFAULT_READ_BUFFER
//! [`WebSocketClient`]: stream_tungstenite::WebSocketClient

#[path = "common/mod.rs"]
mod common;

use common::Mode;
use std::fmt::Debug;
use std::future::Future;
use std::hint::black_box;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_io::Async;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Message, Utf8Bytes};
use async_tungstenite::WebSocketStream;
use criterion::{Criterion, Throughput};
use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures::{Sink, SinkExt, Stream, StreamExt};
use futures_rustls::client::TlsStream;
use futures_rustls::rustls::pki_types::{CertificateDer, ServerName};
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use stream_tungstenite::retry::Immediate;
use stream_tungstenite::ws::{WsConnector, DEFAULT_READ_BUFFER};
use stream_tungstenite::ReconnectingStream;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// Selects what this process is: unset for the benchmark, `server`, `idle-<variant>` (a memory child), or
/// `echo-<variant>`: `WS_BENCH_ROUNDS` round trips (default 10,000) of one variant (`bare`, `ours`,
/// `tokio-websockets`, `tokio-websockets-async-io`) against a running server at `WS_BENCH_ADDR`, for `strace
/// -c`, `perf` or callgrind; with `WS_BENCH_FLOOD=<size>`, floods of 1000 messages of that size instead.
const ROLE_ENV: &str = "WS_BENCH_ROLE";
/// The server's `ws://` address, for the memory children.
const ADDR_ENV: &str = "WS_BENCH_ADDR";
/// The server's `wss://` address, for the memory children.
const TLS_ADDR_ENV: &str = "WS_BENCH_TLS_ADDR";
/// The server's certificate (DER, hex), for the memory children.
const CERT_ENV: &str = "WS_BENCH_CERT";
/// How many idle connections a memory child opens.
const CONNECTIONS_ENV: &str = "WS_BENCH_CONNECTIONS";
/// The path on which the server greets each new connection with [`GREETING`].
const GREET_PATH: &str = "/greet";
const GREETING: &str = "hello";
/// The server's read buffer (its own memory is not measured; a small one keeps its per-read work small).
const SERVER_READ_BUFFER: usize = 16 * 1024;
/// Size of the echo and idle-exchange messages.
const ECHO_LEN: usize = 64;

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("server") => return server::run(),
        Ok(role) if role.starts_with("idle-") => return memory::child(&role["idle-".len()..]),
        Ok(role) if role.starts_with("echo-") => return figures::echo_child(&role["echo-".len()..]),
        Ok(role) => panic!("unknown {ROLE_ENV}={role}"),
        Err(_) => {}
    }
    let mode = Mode::from_env();
    let pinning = if mode == Mode::Test { None } else { Pinning::try_pin() };
    let server = ServerProcess::start(pinning.as_ref());
    let addr = server.addr;
    let only = std::env::var("WS_BENCH_ONLY").ok();
    let wanted = |figure: &str| {
        only.as_deref()
            .map_or(true, |only| only.split(',').any(|o| o.trim() == figure))
    };

    if only.is_none() {
        let mut criterion = Criterion::default()
            .warm_up_time(Duration::from_millis(if mode == Mode::Full { 1000 } else { 200 }))
            .measurement_time(Duration::from_millis(if mode == Mode::Full { 3000 } else { 500 }))
            .sample_size(if mode == Mode::Full { 50 } else { 10 })
            .configure_from_args();
        criterion_benches(&mut criterion, addr, mode);
        criterion.final_summary();
    }

    let pinned = match &pinning {
        Some(pinning) => format!("client on cpu {}, server on cpu {}", pinning.client, pinning.server),
        None => "not pinned to cpus".to_owned(),
    };
    if mode == Mode::Test {
        println!("\n(test mode: a smoke run of a few samples; the figures below mean nothing)");
    }
    println!(
        "\nstream-tungstenite vs bare async-tungstenite and tokio-websockets over loopback (medians of interleaved runs; {mode:?} mode; {pinned})"
    );
    if wanted("receive") {
        figures::receive(addr, mode, 64);
        figures::receive(addr, mode, 1024);
    }
    if wanted("echo") {
        figures::echo(addr, mode, "");
        if let Some(pinning) = &pinning {
            // A second server on the client's own CPU: no cross-CPU wake-ups, so a round trip is the CPU
            // work of both sides, and the clients' differences show.
            let one_cpu = Pinning {
                client: pinning.client,
                server: pinning.client,
            };
            let server = ServerProcess::start(Some(&one_cpu));
            figures::echo(server.addr, mode, ", client and server on one CPU");
        }
    }
    if wanted("reconnect") {
        figures::reconnect(addr, mode);
    }
    if wanted("memory") {
        memory::figure(&server, mode);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------------------------------

/// Where a client's futures run: async-io's `block_on` (ours, bare, tokio-websockets over async-io's socket),
/// or this thread's current-thread tokio runtime (tokio-websockets over tokio's socket).
#[derive(Clone)]
enum Runtime {
    AsyncIo,
    Tokio(Rc<tokio::runtime::Runtime>),
}

impl Runtime {
    /// This thread's tokio runtime (one per thread, made on first use).
    fn tokio() -> Self {
        thread_local! {
            static TOKIO: Rc<tokio::runtime::Runtime> = Rc::new(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime"),
            );
        }
        Self::Tokio(TOKIO.with(Rc::clone))
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match self {
            Self::AsyncIo => async_io::block_on(future),
            Self::Tokio(runtime) => runtime.block_on(future),
        }
    }
}

/// One client under test. All the variants run exactly the same code around these calls.
trait Client {
    /// Where this client's futures run.
    fn runtime(&self) -> Runtime {
        Runtime::AsyncIo
    }
    /// Sends `message` and flushes it.
    async fn send(&mut self, message: Message);
    /// The next message.
    async fn recv(&mut self) -> Message;
    /// Tells the server to drop the connection; returns the first message of the next connection.
    async fn reconnect(&mut self) -> Message;
}

/// A byte stream that a reference client (bare, tokio-websockets) dials itself: TCP or TLS, async-io's or
/// tokio's.
trait Dial: Sized + Unpin {
    /// `ws` or `wss`.
    const SCHEME: &'static str = "ws";
    /// Where futures over this stream run.
    fn runtime() -> Runtime {
        Runtime::AsyncIo
    }
    /// A connection to `addr`, with `TCP_NODELAY` (as ours has).
    async fn dial(addr: SocketAddr) -> io::Result<Self>;
}

/// The server's addresses.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    ws: SocketAddr,
    wss: SocketAddr,
}

/// The URL of `path` on `addr` (`localhost`, the certificate's name, for `wss`).
fn url<S: Dial>(addr: SocketAddr, path: &str) -> String {
    if S::SCHEME == "wss" {
        format!("wss://localhost:{}{path}", addr.port())
    } else {
        format!("ws://{addr}{path}")
    }
}

impl Dial for Async<TcpStream> {
    async fn dial(addr: SocketAddr) -> io::Result<Self> {
        let tcp = Async::<TcpStream>::connect(addr).await?;
        tcp.get_ref().set_nodelay(true)?;
        Ok(tcp)
    }
}

/// The client TLS configuration trusting the bench server's certificate, set once per process.
static TLS: OnceLock<Arc<ClientConfig>> = OnceLock::new();

fn tls_config(cert: CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("the server's certificate");
    let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl Dial for TlsStream<Async<TcpStream>> {
    const SCHEME: &'static str = "wss";
    async fn dial(addr: SocketAddr) -> io::Result<Self> {
        let tcp = <Async<TcpStream> as Dial>::dial(addr).await?;
        let config = Arc::clone(TLS.get().expect("the TLS configuration is set"));
        let name = ServerName::try_from("localhost").expect("a server name");
        futures_rustls::TlsConnector::from(config).connect(name, tcp).await
    }
}

impl Dial for tokio::net::TcpStream {
    fn runtime() -> Runtime {
        Runtime::tokio()
    }
    async fn dial(addr: SocketAddr) -> io::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }
}

impl<S: Dial + AsyncRead + AsyncWrite> Dial for Compat<S> {
    const SCHEME: &'static str = S::SCHEME;
    fn runtime() -> Runtime {
        S::runtime()
    }
    async fn dial(addr: SocketAddr) -> io::Result<Self> {
        Ok(S::dial(addr).await?.compat())
    }
}

/// The bare async-tungstenite socket, with a hand-written reconnect loop.
struct Bare<S> {
    ws: Option<WebSocketStream<S>>,
    addr: SocketAddr,
    path: &'static str,
    config: Option<WebSocketConfig>,
}

impl<S: Dial + AsyncRead + AsyncWrite> Bare<S> {
    /// Connects with tungstenite's default configuration, or `config`.
    async fn connect(addr: SocketAddr, path: &'static str, config: Option<WebSocketConfig>) -> Self {
        let ws = bare_dial(addr, path, config).await.expect("bare connect failed");
        Self {
            ws: Some(ws),
            addr,
            path,
            config,
        }
    }

    fn ws(&mut self) -> &mut WebSocketStream<S> {
        self.ws.as_mut().expect("connected")
    }
}

async fn bare_dial<S: Dial + AsyncRead + AsyncWrite>(
    addr: SocketAddr,
    path: &str,
    config: Option<WebSocketConfig>,
) -> Result<WebSocketStream<S>, Box<dyn std::error::Error>> {
    let stream = S::dial(addr).await?;
    let url = url::<S>(addr, path);
    let (ws, _response) = match config {
        None => async_tungstenite::client_async(url, stream).await?,
        Some(config) => async_tungstenite::client_async_with_config(url, stream, Some(config)).await?,
    };
    Ok(ws)
}

impl<S: Dial + AsyncRead + AsyncWrite> Client for Bare<S> {
    async fn send(&mut self, message: Message) {
        send(self.ws(), message).await;
    }

    async fn recv(&mut self) -> Message {
        recv(self.ws()).await
    }

    async fn reconnect(&mut self) -> Message {
        let mut ws = self.ws.take().expect("connected");
        send(&mut ws, Message::text("drop")).await;
        // Read until the stream ends, then connect again at once, until a connection is up.
        while let Some(Ok(_)) = ws.next().await {}
        drop(ws);
        let mut ws = loop {
            if let Ok(ws) = bare_dial(self.addr, self.path, self.config).await {
                break ws;
            }
        };
        let first = recv(&mut ws).await;
        self.ws = Some(ws);
        first
    }
}

/// tokio-websockets over `S` (tokio's TCP stream, or async-io's through the compat layer), with a
/// hand-written reconnect loop.
struct Tws<S> {
    ws: Option<tokio_websockets::WebSocketStream<S>>,
    addr: SocketAddr,
    path: &'static str,
}

impl<S> Tws<S>
where
    S: Dial + tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    /// Connects on its own runtime (for the figures' loops, which run each client on its runtime).
    fn open(addr: SocketAddr, path: &'static str) -> Self {
        S::runtime().block_on(Self::connect(addr, path))
    }

    async fn connect(addr: SocketAddr, path: &'static str) -> Self {
        let ws = tws_dial(addr, path).await.expect("tokio-websockets connect failed");
        Self {
            ws: Some(ws),
            addr,
            path,
        }
    }

    fn ws(&mut self) -> &mut tokio_websockets::WebSocketStream<S> {
        self.ws.as_mut().expect("connected")
    }
}

async fn tws_dial<S>(
    addr: SocketAddr,
    path: &str,
) -> Result<tokio_websockets::WebSocketStream<S>, Box<dyn std::error::Error>>
where
    S: Dial + tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let stream = S::dial(addr).await?;
    let url = url::<S>(addr, path);
    let (ws, _response) = tokio_websockets::ClientBuilder::new()
        .uri(&url)?
        .connect_on(stream)
        .await?;
    Ok(ws)
}

/// A tungstenite message as tokio-websockets'; the payload is shared, not copied.
fn to_tws(message: Message) -> tokio_websockets::Message {
    match message {
        Message::Binary(data) => tokio_websockets::Message::binary(data),
        Message::Text(text) => tokio_websockets::Message::text(text.as_str().to_owned()),
        other => panic!("the bench sends no {other:?}"),
    }
}

/// A tokio-websockets message as tungstenite's; the payload is shared, not copied.
fn from_tws(message: tokio_websockets::Message) -> Message {
    if message.is_text() {
        let text = message.as_text().expect("text").to_owned();
        Message::Text(Utf8Bytes::from(text))
    } else {
        Message::Binary(message.into_payload().into())
    }
}

async fn tws_recv<S>(ws: &mut tokio_websockets::WebSocketStream<S>) -> Option<Message>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = ws.next().await?.ok()?;
        // The server sends neither pings nor pongs; a Close ends the stream.
        if message.is_binary() || message.is_text() {
            return Some(from_tws(message));
        }
    }
}

impl<S> Client for Tws<S>
where
    S: Dial + tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    fn runtime(&self) -> Runtime {
        S::runtime()
    }

    async fn send(&mut self, message: Message) {
        self.ws().send(to_tws(message)).await.expect("send failed");
    }

    async fn recv(&mut self) -> Message {
        tws_recv(self.ws()).await.expect("the stream ended")
    }

    async fn reconnect(&mut self) -> Message {
        let mut ws = self.ws.take().expect("connected");
        ws.send(to_tws(Message::text("drop"))).await.expect("send failed");
        while tws_recv(&mut ws).await.is_some() {}
        drop(ws);
        let mut ws = loop {
            if let Ok(ws) = tws_dial(self.addr, self.path).await {
                break ws;
            }
        };
        let first = tws_recv(&mut ws).await.expect("a greeting");
        self.ws = Some(ws);
        first
    }
}

/// The bare socket over TCP.
type BareTcp = Bare<Async<TcpStream>>;
/// tokio-websockets on tokio, the reference.
type TwsTokio = Tws<tokio::net::TcpStream>;
/// tokio-websockets on async-io, a diagnostic variant.
type TwsAsyncIo = Tws<Compat<Async<TcpStream>>>;

/// A [`ReconnectingStream`] (or anything else that is a `Stream + Sink` of messages and reconnects itself).
struct Ours<S>(S);

impl<S> Client for Ours<S>
where
    S: Stream<Item = Result<Message, stream_tungstenite::Error>>
        + Sink<Message, Error = stream_tungstenite::Error>
        + Unpin,
{
    async fn send(&mut self, message: Message) {
        send(&mut self.0, message).await;
    }

    async fn recv(&mut self) -> Message {
        recv(&mut self.0).await
    }

    async fn reconnect(&mut self) -> Message {
        send(&mut self.0, Message::text("drop")).await;
        // The drop is not an item: the stream reconnects and yields the next connection's first message.
        recv(&mut self.0).await
    }
}

/// A [`WebSocketClient`](stream_tungstenite::WebSocketClient) with its `run()` spawned on a local executor,
/// read through a subscription and written through `send`: for the idle-memory figure only.
struct ClientConn {
    client: std::sync::Arc<stream_tungstenite::WebSocketClient>,
    messages: stream_tungstenite::client::Subscription<Message>,
    _run: smol::Task<()>,
}

impl ClientConn {
    fn open(executor: &smol::LocalExecutor<'_>, addr: SocketAddr) -> Self {
        let client = std::sync::Arc::new(
            stream_tungstenite::WebSocketClient::builder(format!("ws://{addr}/"))
                .with_retry(Immediate::new())
                .build(),
        );
        let messages = client.subscribe();
        let run = {
            let client = std::sync::Arc::clone(&client);
            executor.spawn(async move {
                let _ = client.run().await;
            })
        };
        Self {
            client,
            messages,
            _run: run,
        }
    }
}

impl Client for ClientConn {
    async fn send(&mut self, message: Message) {
        self.client.send(message).await.expect("client send failed");
    }

    async fn recv(&mut self) -> Message {
        self.messages.recv().await.expect("client receive failed")
    }

    async fn reconnect(&mut self) -> Message {
        unimplemented!("the client variant measures idle memory only")
    }
}

/// Ours as the brief has it: `stream_tungstenite::connect` (default read buffer), immediate retry.
fn ours(
    addr: SocketAddr,
    path: &str,
) -> Ours<
    impl Stream<Item = Result<Message, stream_tungstenite::Error>>
        + Sink<Message, Error = stream_tungstenite::Error>
        + Unpin,
> {
    let url = format!("ws://{addr}{path}");
    Ours(ReconnectingStream::new(move || stream_tungstenite::connect(url.clone())).with_retry(Immediate::new()))
}

/// Ours with tungstenite's default 128 KiB read buffer: a diagnostic variant.
fn ours_128k(addr: SocketAddr, path: &str) -> Ours<ReconnectingStream<WsConnector, Message>> {
    let connector = WsConnector::builder(format!("ws://{addr}{path}"))
        .with_websocket_config(WebSocketConfig::default())
        .build();
    Ours(ReconnectingStream::new(connector).with_retry(Immediate::new()))
}

/// The bare socket with our default read buffer: a diagnostic variant.
fn config_ours() -> Option<WebSocketConfig> {
    Some(WebSocketConfig::default().read_buffer_size(DEFAULT_READ_BUFFER))
}

async fn send<S>(sink: &mut S, message: Message)
where
    S: Sink<Message> + Unpin,
    S::Error: Debug,
{
    SinkExt::send(sink, message).await.expect("send failed");
}

async fn recv<S, E>(stream: &mut S) -> Message
where
    S: Stream<Item = Result<Message, E>> + Unpin,
    E: Debug,
{
    stream.next().await.expect("the stream ended").expect("receive failed")
}

// ---------------------------------------------------------------------------------------------------------------
// What is timed
// ---------------------------------------------------------------------------------------------------------------

/// Asks the server for `n` messages of `size` bytes; the time from the first message's arrival to the last's.
async fn flood<C: Client>(client: &mut C, size: usize, n: usize) -> Duration {
    client.send(Message::text(format!("flood {size} {n}"))).await;
    let first = client.recv().await;
    assert_eq!(first.len(), size, "unexpected message {first:?}");
    let start = Instant::now();
    for _ in 1..n {
        black_box(client.recv().await);
    }
    start.elapsed()
}

/// One round trip.
async fn echo<C: Client>(client: &mut C, message: &Message) -> Duration {
    let start = Instant::now();
    client.send(message.clone()).await;
    black_box(client.recv().await);
    start.elapsed()
}

/// From telling the server to drop the connection to the first message of the next one.
async fn reconnect<C: Client>(client: &mut C) -> Duration {
    let start = Instant::now();
    let first = client.reconnect().await;
    let elapsed = start.elapsed();
    assert_eq!(first.to_text().ok(), Some(GREETING), "unexpected message {first:?}");
    elapsed
}

fn echo_message() -> Message {
    Message::binary(vec![0x5a; ECHO_LEN])
}

/// Awaits `$op` (a future of a `Duration`) `$iters` times; the sum of the durations.
macro_rules! repeat {
    ($iters:expr, $op:expr) => {
        async {
            let mut total = Duration::ZERO;
            for _ in 0..$iters {
                total += $op.await;
            }
            total
        }
    };
}

/// Runs `$op` (an async expression using `$c: &mut` client) on each of the `$client`s in turn, each on its
/// own runtime, `$samples` times, rotating which goes first; returns the durations, one vector per client in
/// the order given.
macro_rules! interleaved {
    ($samples:expr, [$($client:ident),+ $(,)?], |$c:ident| $op:expr) => {{
        let names = [$(stringify!($client)),+];
        let mut times: Vec<Vec<Duration>> =
            names.iter().map(|_| Vec::with_capacity($samples)).collect();
        for sample in 0..$samples {
            for turn in 0..names.len() {
                let which = (sample + turn) % names.len();
                let mut index = 0;
                $(
                    if index == which {
                        let runtime = $client.runtime();
                        let $c = &mut $client;
                        let elapsed: Duration = runtime.block_on($op);
                        times[which].push(elapsed);
                    }
                    index += 1;
                )+
                let _ = index;
            }
        }
        times
    }};
}

// ---------------------------------------------------------------------------------------------------------------
// Criterion
// ---------------------------------------------------------------------------------------------------------------

fn criterion_benches(criterion: &mut Criterion, addr: SocketAddr, mode: Mode) {
    let mut bare = async_io::block_on(BareTcp::connect(addr, "/", None));
    let mut ours = ours(addr, "/");
    let mut tws = TwsTokio::open(addr, "/");
    let n = mode.pick(50, 1000, 1000);
    for size in [64, 1024] {
        let mut group = criterion.benchmark_group(format!("receive_{}", size_label(size)));
        group.throughput(Throughput::Elements(n as u64 - 1));
        group.bench_function("bare", |b| {
            b.iter_custom(|iters| async_io::block_on(repeat!(iters, flood(&mut bare, size, n))))
        });
        group.bench_function("ours", |b| {
            b.iter_custom(|iters| async_io::block_on(repeat!(iters, flood(&mut ours, size, n))))
        });
        group.bench_function("tokio-websockets", |b| {
            b.iter_custom(|iters| tws.runtime().block_on(repeat!(iters, flood(&mut tws, size, n))))
        });
        group.finish();
    }

    let message = echo_message();
    let mut group = criterion.benchmark_group("echo_64B");
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| async_io::block_on(repeat!(iters, echo(&mut bare, &message))))
    });
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| async_io::block_on(repeat!(iters, echo(&mut ours, &message))))
    });
    group.bench_function("tokio-websockets", |b| {
        b.iter_custom(|iters| tws.runtime().block_on(repeat!(iters, echo(&mut tws, &message))))
    });
    group.finish();

    let mut bare = async_io::block_on(BareTcp::connect(addr, GREET_PATH, None));
    let mut ours = self::ours(addr, GREET_PATH);
    let mut tws = TwsTokio::open(addr, GREET_PATH);
    async_io::block_on(async {
        bare.recv().await;
        ours.recv().await;
    });
    tws.runtime().block_on(tws.recv());
    let mut group = criterion.benchmark_group("reconnect");
    // Shorter: every reconnect leaves a socket in TIME_WAIT on the server side.
    if mode == Mode::Full {
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(20);
    }
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| async_io::block_on(repeat!(iters, reconnect(&mut bare))))
    });
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| async_io::block_on(repeat!(iters, reconnect(&mut ours))))
    });
    group.bench_function("tokio-websockets", |b| {
        b.iter_custom(|iters| tws.runtime().block_on(repeat!(iters, reconnect(&mut tws))))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// The headline figures
// ---------------------------------------------------------------------------------------------------------------

mod figures {
    use super::*;

    /// The variants of the throughput and latency figures, in this order.
    const VARIANTS: usize = 6;

    /// Each variant's median, and for latency its 90th and 99th percentiles.
    #[derive(Debug, Clone, Copy)]
    struct Medians {
        bare: f64,
        bare_ours_buf: f64,
        ours: f64,
        ours_128k: f64,
        tws: f64,
        tws_async_io: f64,
    }

    impl Medians {
        fn from(values: [f64; VARIANTS]) -> Self {
            let [bare, bare_ours_buf, ours, ours_128k, tws, tws_async_io] = values;
            Self {
                bare,
                bare_ours_buf,
                ours,
                ours_128k,
                tws,
                tws_async_io,
            }
        }
    }

    pub(super) fn receive(addr: SocketAddr, mode: Mode, size: usize) {
        let n = mode.pick(50, 1000, 1000);
        let samples = mode.pick(3, 201, 1001);
        // A fresh connection per sample (see the module docs); connecting is not timed.
        let mut times: Vec<Vec<Duration>> = (0..VARIANTS).map(|_| Vec::with_capacity(samples)).collect();
        let aio = Runtime::AsyncIo;
        for sample in 0..samples {
            for turn in 0..VARIANTS {
                let which = (sample + turn) % VARIANTS;
                let elapsed = match which {
                    0 => aio.block_on(async { flood(&mut BareTcp::connect(addr, "/", None).await, size, n).await }),
                    1 => aio.block_on(async {
                        flood(&mut BareTcp::connect(addr, "/", config_ours()).await, size, n).await
                    }),
                    2 => aio.block_on(flood(&mut super::ours(addr, "/"), size, n)),
                    3 => aio.block_on(flood(&mut super::ours_128k(addr, "/"), size, n)),
                    4 => {
                        let mut tws = TwsTokio::open(addr, "/");
                        tws.runtime().block_on(flood(&mut tws, size, n))
                    }
                    _ => {
                        let mut tws = TwsAsyncIo::open(addr, "/");
                        tws.runtime().block_on(flood(&mut tws, size, n))
                    }
                };
                times[which].push(elapsed);
            }
        }
        let m = Medians::from(percentile_per_message(&times, n - 1, 50));
        let label = format!("receive {}", size_label(size));
        let unit = "µs/msg";
        println!(
            "ratio {label}: {:.2} (bare {:.3} {unit}, ours {:.3} {unit}) [throughput ratio bare/ours; target >= 0.97: {}]",
            m.bare / m.ours,
            m.bare,
            m.ours,
            verdict(m.bare / m.ours >= 0.97)
        );
        println!(
            "    vs tokio-websockets: {:.2} (tokio-websockets {:.3} {unit}, ours {:.3} {unit}) [throughput ratio tokio-websockets/ours]",
            m.tws / m.ours,
            m.tws,
            m.ours
        );
        println!(
            "    same read buffer (ours): {:.2} (bare-ours-buf {:.3} {unit}, ours {:.3} {unit})",
            m.bare_ours_buf / m.ours,
            m.bare_ours_buf,
            m.ours
        );
        println!(
            "    same 128 KiB read buffer: {:.2} (bare {:.3} {unit}, ours-128K {:.3} {unit})",
            m.bare / m.ours_128k,
            m.bare,
            m.ours_128k
        );
        println!(
            "    tokio-websockets on async-io: {:.2} (tokio-websockets-async-io {:.3} {unit}, ours {:.3} {unit})",
            m.tws_async_io / m.ours,
            m.tws_async_io,
            m.ours
        );
    }

    pub(super) fn echo(addr: SocketAddr, mode: Mode, setup: &str) {
        let samples = mode.pick(5, 2001, 20001);
        let message = echo_message();
        let aio = Runtime::AsyncIo;
        let mut bare = aio.block_on(BareTcp::connect(addr, "/", None));
        let mut bare_ours_buf = aio.block_on(BareTcp::connect(addr, "/", config_ours()));
        let mut ours = super::ours(addr, "/");
        let mut ours_128k = super::ours_128k(addr, "/");
        let mut tws = TwsTokio::open(addr, "/");
        let mut tws_async_io = TwsAsyncIo::open(addr, "/");
        let warm_up = mode.pick(1, 100, 1000);
        let _ = interleaved!(
            warm_up,
            [bare, bare_ours_buf, ours, ours_128k, tws, tws_async_io],
            |c| super::echo(c, &message)
        );
        let times = interleaved!(
            samples,
            [bare, bare_ours_buf, ours, ours_128k, tws, tws_async_io],
            |c| super::echo(c, &message)
        );
        let label = format!("echo {}{setup}", size_label(ECHO_LEN));
        latency_lines(&label, 1.05, Medians::from(percentile_per_message(&times, 1, 50)));
        let p90 = Medians::from(percentile_per_message(&times, 1, 90));
        let p99 = Medians::from(percentile_per_message(&times, 1, 99));
        println!(
            "    p90 / p99: ours {:.1} / {:.1} µs, bare {:.1} / {:.1} µs, tokio-websockets {:.1} / {:.1} µs",
            p90.ours, p99.ours, p90.bare, p99.bare, p90.tws, p99.tws
        );
    }

    pub(super) fn reconnect(addr: SocketAddr, mode: Mode) {
        let samples = mode.pick(3, 201, 1001);
        let aio = Runtime::AsyncIo;
        let mut bare = aio.block_on(BareTcp::connect(addr, GREET_PATH, None));
        let mut bare_ours_buf = aio.block_on(BareTcp::connect(addr, GREET_PATH, config_ours()));
        let mut ours = super::ours(addr, GREET_PATH);
        let mut ours_128k = super::ours_128k(addr, GREET_PATH);
        let mut tws = TwsTokio::open(addr, GREET_PATH);
        let mut tws_async_io = TwsAsyncIo::open(addr, GREET_PATH);
        // Take each first connection's greeting (this also connects ours).
        let _ = interleaved!(1, [bare, bare_ours_buf, ours, ours_128k, tws, tws_async_io], |c| {
            async {
                c.recv().await;
                Duration::ZERO
            }
        });
        let warm_up = mode.pick(1, 10, 50);
        let _ = interleaved!(
            warm_up,
            [bare, bare_ours_buf, ours, ours_128k, tws, tws_async_io],
            |c| super::reconnect(c)
        );
        let times = interleaved!(
            samples,
            [bare, bare_ours_buf, ours, ours_128k, tws, tws_async_io],
            |c| super::reconnect(c)
        );
        latency_lines("reconnect", 1.1, Medians::from(percentile_per_message(&times, 1, 50)));
    }

    /// `WS_BENCH_ROLE=echo-<variant>`: round trips of one variant, and their median.
    pub(super) fn echo_child(variant: &str) {
        let addr: SocketAddr = std::env::var(ADDR_ENV)
            .expect("WS_BENCH_ADDR")
            .parse()
            .expect("an address");
        let rounds: usize = std::env::var("WS_BENCH_ROUNDS").map_or(10_000, |n| n.parse().expect("a number"));
        let message = echo_message();
        fn run<C: Client>(mut client: C, rounds: usize, message: &Message) -> Vec<Duration> {
            let flood: Option<usize> = std::env::var("WS_BENCH_FLOOD")
                .ok()
                .map(|size| size.parse().expect("a size"));
            let runtime = client.runtime();
            runtime.block_on(async {
                let mut times = Vec::with_capacity(rounds);
                for _ in 0..rounds {
                    times.push(match flood {
                        Some(size) => super::flood(&mut client, size, 1000).await,
                        None => super::echo(&mut client, message).await,
                    });
                }
                times
            })
        }
        let aio = Runtime::AsyncIo;
        let times = match variant {
            "bare" => run(aio.block_on(BareTcp::connect(addr, "/", None)), rounds, &message),
            "ours" => {
                let mut ours = super::ours(addr, "/");
                // Connected before the rounds.
                aio.block_on(super::echo(&mut ours, &message));
                run(ours, rounds, &message)
            }
            "tokio-websockets" => run(TwsTokio::open(addr, "/"), rounds, &message),
            "tokio-websockets-async-io" => run(TwsAsyncIo::open(addr, "/"), rounds, &message),
            other => panic!("unknown variant {other}"),
        };
        println!(
            "echo {variant}: {rounds} rounds, p50 {:.1} µs",
            percentile(&times, 50).as_secs_f64() * 1e6
        );
    }

    /// The `percentile`th percentile per message, in µs, for each variant.
    fn percentile_per_message(times: &[Vec<Duration>], messages: usize, percentile: usize) -> [f64; VARIANTS] {
        let values: Vec<f64> = times
            .iter()
            .map(|t| super::percentile(t, percentile).as_secs_f64() * 1e6 / messages as f64)
            .collect();
        values.try_into().expect("six variants")
    }

    fn latency_lines(label: &str, target: f64, m: Medians) {
        println!(
            "latency ratio {label} (ours/bare): {:.2} (bare {:.1} µs, ours {:.1} µs) [target <= {target}: {}]",
            m.ours / m.bare,
            m.bare,
            m.ours,
            verdict(m.ours / m.bare <= target)
        );
        println!(
            "    vs tokio-websockets (ours/tokio-websockets): {:.2} (tokio-websockets {:.1} µs, ours {:.1} µs)",
            m.ours / m.tws,
            m.tws,
            m.ours
        );
        println!(
            "    same read buffer (ours): {:.2} (bare-ours-buf {:.1} µs, ours {:.1} µs)",
            m.ours / m.bare_ours_buf,
            m.bare_ours_buf,
            m.ours
        );
        println!(
            "    same 128 KiB read buffer: {:.2} (bare {:.1} µs, ours-128K {:.1} µs)",
            m.ours_128k / m.bare,
            m.bare,
            m.ours_128k
        );
        println!(
            "    tokio-websockets on async-io: {:.2} (tokio-websockets-async-io {:.1} µs, ours {:.1} µs)",
            m.ours / m.tws_async_io,
            m.tws_async_io,
            m.ours
        );
    }
}

/// The `percentile`th percentile of `times` (50: the median).
fn percentile(times: &[Duration], percentile: usize) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted[(sorted.len() * percentile / 100).min(sorted.len() - 1)]
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn size_label(size: usize) -> String {
    if size % 1024 == 0 {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Idle memory
// ---------------------------------------------------------------------------------------------------------------

mod memory {
    use super::*;

    const VARIANTS: [&str; 10] = [
        "bare",
        "bare-ours-buf",
        "ours",
        "ours-128K",
        "client",
        "tokio-websockets",
        "tokio-websockets-async-io",
        "bare-wss",
        "ours-wss",
        "tokio-websockets-wss",
    ];

    /// Runs each variant in fresh child processes and prints the figure.
    pub(super) fn figure(server: &ServerProcess, mode: Mode) {
        let Some(_) = rss_kib() else {
            println!("idle memory: not measured (no /proc/self/status)");
            return;
        };
        let connections = mode.pick(10, 500, 500);
        let runs = mode.pick(1, 1, 3);
        let mut per_connection: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
        for run in 0..runs {
            for turn in 0..VARIANTS.len() {
                let which = (run + turn) % VARIANTS.len();
                per_connection[which].push(run_child(server, VARIANTS[which], connections));
            }
        }
        let kib: Vec<f64> = per_connection
            .into_iter()
            .map(|mut kib| {
                kib.sort_by(f64::total_cmp);
                kib[kib.len() / 2]
            })
            .collect();
        let [bare, bare_ours_buf, ours, ours_128k, client, tws, tws_async_io, bare_wss, ours_wss, tws_wss]: [f64; 10] =
            kib.try_into().expect("ten variants");
        println!(
            "ratio idle memory per connection (ours/bare): {:.2} (bare {bare:.1} KiB, ours {ours:.1} KiB) [RSS growth over {connections} connections, median of {runs} processes; target <= 0.5: {}]",
            ours / bare,
            verdict(ours / bare <= 0.5)
        );
        println!(
            "    vs tokio-websockets (ours/tokio-websockets): {:.2} (tokio-websockets {tws:.1} KiB, ours {ours:.1} KiB) [ours <= 6 KiB: {}]",
            ours / tws,
            verdict(ours <= 6.0)
        );
        println!(
            "    same read buffer (ours): {:.2} (bare-ours-buf {bare_ours_buf:.1} KiB, ours {ours:.1} KiB)",
            ours / bare_ours_buf
        );
        println!(
            "    same 128 KiB read buffer: {:.2} (bare {bare:.1} KiB, ours-128K {ours_128k:.1} KiB)",
            ours_128k / bare
        );
        println!(
            "    tokio-websockets on async-io: {:.2} (tokio-websockets-async-io {tws_async_io:.1} KiB, ours {ours:.1} KiB)",
            ours / tws_async_io
        );
        println!(
            "idle memory per wss connection (ours/bare): {:.2} (bare-wss {bare_wss:.1} KiB, ours-wss {ours_wss:.1} KiB; tokio-websockets-wss {tws_wss:.1} KiB, ours/tokio-websockets {:.2}) [same TLS stack: rustls through futures-rustls]",
            ours_wss / bare_wss,
            ours_wss / tws_wss
        );
        println!(
            "idle WebSocketClient: {client:.1} KiB per connection ({:+.1} KiB over ReconnectingStream, ours {ours:.1} KiB) [client <= 10 KiB: {}]",
            client - ours,
            verdict(client <= 10.0)
        );
    }

    /// KiB per connection, measured by a child process.
    fn run_child(server: &ServerProcess, variant: &str, connections: usize) -> f64 {
        let output = Command::new(std::env::current_exe().expect("own executable"))
            .env(ROLE_ENV, format!("idle-{variant}"))
            .env(ADDR_ENV, server.addr.to_string())
            .env(TLS_ADDR_ENV, server.tls_addr.to_string())
            .env(CERT_ENV, data_encoding::HEXLOWER.encode(&server.cert))
            .env(CONNECTIONS_ENV, connections.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("memory child failed to start");
        assert!(output.status.success(), "memory child {variant} failed");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<f64> = stdout
            .lines()
            .find_map(|line| line.strip_prefix("idle-rss-kib "))
            .expect("memory child printed no result")
            .split_whitespace()
            .map(|field| field.parse().expect("a number"))
            .collect();
        let [before, after] = fields[..] else {
            panic!("bad memory child output {stdout:?}")
        };
        (after - before) / connections as f64
    }

    /// The child: opens the connections, prints `idle-rss-kib <before> <after>`.
    pub(super) fn child(variant: &str) {
        let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
        let addrs = Addrs {
            ws: env(ADDR_ENV).parse().expect("a socket address"),
            wss: env(TLS_ADDR_ENV).parse().expect("a socket address"),
        };
        let connections: usize = env(CONNECTIONS_ENV).parse().expect("a number");
        let cert = CertificateDer::from(data_encoding::HEXLOWER.decode(env(CERT_ENV).as_bytes()).expect("hex"));
        let _ = TLS.set(tls_config(cert));
        let addr = addrs.ws;
        let aio = Runtime::AsyncIo;
        let (before, after) = match variant {
            "bare" => aio.block_on(idle(connections, || BareTcp::connect(addr, "/", None))),
            "bare-ours-buf" => aio.block_on(idle(connections, || BareTcp::connect(addr, "/", config_ours()))),
            "ours" => aio.block_on(idle(connections, || async move { ours(addr, "/") })),
            "ours-128K" => aio.block_on(idle(connections, || async move { ours_128k(addr, "/") })),
            "client" => {
                let executor = smol::LocalExecutor::new();
                aio.block_on(executor.run(idle(connections, || {
                    let conn = ClientConn::open(&executor, addr);
                    async move { conn }
                })))
            }
            "tokio-websockets" => Runtime::tokio().block_on(idle(connections, || TwsTokio::connect(addr, "/"))),
            "tokio-websockets-async-io" => aio.block_on(idle(connections, || TwsAsyncIo::connect(addr, "/"))),
            "bare-wss" => aio.block_on(idle(connections, || {
                Bare::<TlsStream<Async<TcpStream>>>::connect(addrs.wss, "/", None)
            })),
            "ours-wss" => {
                // One connector for all: its TLS configuration is shared, as an application's would be.
                let connector = WsConnector::builder(format!("wss://localhost:{}/", addrs.wss.port()))
                    .with_rustls_config(Arc::clone(TLS.get().expect("set above")))
                    .build();
                aio.block_on(idle(connections, || {
                    let connector = connector.clone();
                    async move { Ours(ReconnectingStream::new(connector).with_retry(Immediate::new())) }
                }))
            }
            "tokio-websockets-wss" => aio.block_on(idle(connections, || {
                Tws::<Compat<TlsStream<Async<TcpStream>>>>::connect(addrs.wss, "/")
            })),
            other => panic!("unknown variant {other}"),
        };
        println!("idle-rss-kib {before} {after}");
    }

    /// RSS in KiB before and after opening `connections` connections made by `open`, one echo on each.
    async fn idle<C, F, Fut>(connections: usize, mut open: F) -> (u64, u64)
    where
        C: Client,
        F: FnMut() -> Fut,
        Fut: Future<Output = C>,
    {
        let message = echo_message();
        let mut first = open().await;
        echo(&mut first, &message).await;
        let before = rss_kib().expect("VmRSS");
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            let mut client = open().await;
            echo(&mut client, &message).await;
            clients.push(client);
        }
        let after = rss_kib().expect("VmRSS");
        black_box(&clients);
        (before, after)
    }

    /// This process's resident set size in KiB (`VmRSS`), on Linux.
    pub(super) fn rss_kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------------------------

/// Client and server on two different CPUs, fixed for the whole run (see the module docs).
///
/// Uses the `taskset` tool when it exists and at least two CPUs are allowed; `WS_BENCH_NO_PIN=1` turns it
/// off.
struct Pinning {
    client: usize,
    server: usize,
}

impl Pinning {
    /// Pins this process (all its threads; later threads inherit it) to the first allowed CPU; the server is
    /// started on the second.
    fn try_pin() -> Option<Self> {
        if std::env::var_os("WS_BENCH_NO_PIN").is_some() {
            return None;
        }
        let pid = std::process::id().to_string();
        let output = Command::new("taskset")
            .args(["-c", "-p", &pid])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        // "pid 123's current affinity list: 0,2-5"
        let listed = String::from_utf8_lossy(&output.stdout);
        let list = listed.rsplit(':').next()?.trim();
        let mut cpus = list.split(',').flat_map(|part| {
            let (first, last) = part.split_once('-').unwrap_or((part, part));
            let first: usize = first.trim().parse().unwrap_or(usize::MAX);
            let last: usize = last.trim().parse().unwrap_or(0);
            first..=last
        });
        let (client, server) = (cpus.next()?, cpus.next()?);
        let pinned = Command::new("taskset")
            .args(["-a", "-c", "-p", &client.to_string(), &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        pinned.then_some(Self { client, server })
    }
}

/// The server child process; killed (and its stdin closed) when dropped.
struct ServerProcess {
    child: Child,
    _stdin: ChildStdin,
    addr: SocketAddr,
    tls_addr: SocketAddr,
    /// Its certificate (DER).
    cert: Vec<u8>,
}

impl ServerProcess {
    fn start(pinning: Option<&Pinning>) -> Self {
        let exe = std::env::current_exe().expect("own executable");
        let mut command = match pinning {
            Some(pinning) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(pinning.server.to_string()).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .env(ROLE_ENV, "server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("server process failed to start");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("server address");
        // "<ws address> <wss address> <certificate, hex>"
        let mut fields = line.split_whitespace();
        let mut field = || fields.next().expect("the server printed its addresses and certificate");
        let addr = field().parse().expect("an address");
        let tls_addr = field().parse().expect("an address");
        let cert = data_encoding::HEXLOWER.decode(field().as_bytes()).expect("hex");
        Self {
            child,
            _stdin: stdin,
            addr,
            tls_addr,
            cert,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod server {
    use super::*;
    use futures_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use futures_rustls::rustls::ServerConfig;

    /// The server process: prints its addresses and certificate, then serves until its stdin closes.
    ///
    /// Per connection: on [`GREET_PATH`] it first sends [`GREETING`]; it echoes binary messages; on the text
    /// `flood <size> <n>` it writes `n` binary frames of `size` bytes straight to the socket (pre-encoded, so
    /// the client, not the server, is the bottleneck); on `drop` it drops the TCP connection (no Close frame).
    /// The same over TLS on the second address.
    pub(super) fn run() {
        std::thread::spawn(|| {
            let mut buf = [0u8; 64];
            while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind");
        let addr = listener.get_ref().local_addr().expect("local address");
        let tls_listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind");
        let tls_addr = tls_listener.get_ref().local_addr().expect("local address");
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("a server configuration");
        let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(config));
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{addr} {tls_addr} {}", data_encoding::HEXLOWER.encode(&cert))
            .and_then(|()| stdout.flush())
            .expect("stdout");

        let executor = smol::LocalExecutor::new();
        let plain = async {
            loop {
                match listener.accept().await {
                    Ok((tcp, _)) => {
                        let _ = tcp.get_ref().set_nodelay(true);
                        executor.spawn(serve(tcp)).detach();
                    }
                    Err(error) => eprintln!("[bench server] accept failed: {error}"),
                }
            }
        };
        let tls = async {
            loop {
                match tls_listener.accept().await {
                    Ok((tcp, _)) => {
                        let _ = tcp.get_ref().set_nodelay(true);
                        let acceptor = acceptor.clone();
                        executor
                            .spawn(async move {
                                if let Ok(tls) = acceptor.accept(tcp).await {
                                    serve(tls).await;
                                }
                            })
                            .detach();
                    }
                    Err(error) => eprintln!("[bench server] accept failed: {error}"),
                }
            }
        };
        async_io::block_on(executor.run(futures::future::join(plain, tls)));
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
        let mut path = String::new();
        // The signature is tungstenite's.
        #[allow(clippy::result_large_err)]
        let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            path = request.uri().path().to_owned();
            Ok(response)
        };
        let config = WebSocketConfig::default().read_buffer_size(SERVER_READ_BUFFER);
        let Ok(mut ws) = async_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await else {
            return;
        };
        if path == GREET_PATH && ws.send(Message::text(GREETING)).await.is_err() {
            return;
        }
        let mut frames: Option<((usize, usize), Vec<u8>)> = None;
        while let Some(Ok(message)) = ws.next().await {
            let text = match message {
                Message::Binary(_) => {
                    if ws.send(message).await.is_err() {
                        return;
                    }
                    continue;
                }
                Message::Text(text) => text,
                _ => continue,
            };
            let mut words = text.as_str().split_whitespace();
            match words.next() {
                Some("drop") => return,
                Some("flood") => {
                    let mut number = || words.next().and_then(|w| w.parse::<usize>().ok());
                    let (Some(size), Some(n)) = (number(), number()) else {
                        return;
                    };
                    if frames.as_ref().map(|(key, _)| *key) != Some((size, n)) {
                        frames = Some(((size, n), encode_flood(size, n)));
                    }
                    let bytes = &frames.as_ref().expect("just set").1;
                    // Nothing is buffered in tungstenite here (every send was flushed), so writing frames
                    // straight to the socket keeps the stream well-formed.
                    if ws.get_mut().write_all(bytes).await.is_err() || ws.get_mut().flush().await.is_err() {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    /// `n` unmasked binary frames (server to client) of `size` bytes each.
    fn encode_flood(size: usize, n: usize) -> Vec<u8> {
        let mut frame = vec![0x82];
        match u16::try_from(size) {
            Ok(len) if len < 126 => frame.push(len as u8),
            Ok(len) => {
                frame.push(126);
                frame.extend_from_slice(&len.to_be_bytes());
            }
            Err(_) => panic!("flood messages are at most 64 KiB"),
        }
        frame.extend((0..size).map(|i| i as u8));
        frame.repeat(n)
    }
}
