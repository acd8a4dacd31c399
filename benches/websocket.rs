//! Our WebSocket client against the bare async-tungstenite socket, over loopback, in the same run.
//!
//! Run it with `cargo bench --bench websocket` (a few minutes at most; `WS_BENCH_ONLY=memory` for the idle
//! memory figures alone; `BENCH_QUICK=1` or `-- --quick` for a
//! run of well under a minute). It prints criterion's report for each benchmark, then one line per headline
//! figure, with the target:
//!
//! - **receive 64B / 1KiB** (throughput ratio, bare time / our time; 1.00 = equal, target >= 0.97): the
//!   server floods 1000 binary messages as fast as it can; we time the client from the first message's
//!   arrival to the last's, so the request's round trip is not part of it.
//! - **echo 64B** (latency ratio, our time / bare time, target <= 1.05): send one message, await its echo.
//! - **reconnect** (latency ratio, ours / bare, target <= 1.1): the client tells the server `drop`; the server
//!   drops the TCP connection at once (no Close frame); we time from sending `drop` to the first message of
//!   the next connection, which the server sends right after each accept. Ours is a [`ReconnectingStream`]
//!   with [`Immediate`] retry; bare is a hand-written loop (read until the stream ends, connect again at once,
//!   read the first message). Both clock the same span: the one-way trip of `drop`, the drop, noticing it,
//!   TCP connect, upgrade, greeting.
//! - **idle memory per connection** (ours / bare, target <= 0.5): RSS growth of a fresh client process per
//!   connection, over 500 idle connections with one message exchanged on each (see below).
//!
//! "bare" is `async_tungstenite::client_async(url, Async::<TcpStream>::connect(addr))` with tungstenite's
//! default configuration (128 KiB read buffer); "ours" is
//! `ReconnectingStream::new(move || stream_tungstenite::connect(url.clone()))` (32 KiB read buffer,
//! [`DEFAULT_READ_BUFFER`]). Under each headline figure two diagnostic lines compare like with like (both
//! with our 32 KiB read buffer, both with 128 KiB), so what the wrapper costs can be told apart from what the
//! buffer size does.
//!
//! # Method
//!
//! - **The server is another process**: this binary, re-executed with `WS_BENCH_ROLE=server`, running every
//!   connection on one `async_io::block_on` thread. So on 2 cores the client and the server each have one,
//!   and the server's memory is never counted. It floods by writing pre-encoded frames straight to the
//!   socket, so it is much faster than any client and the client is what is measured. It exits when this
//!   process goes away (its stdin closes).
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
//!   not a variable. `WS_BENCH_NO_PIN=1` turns this off.
//! - **Noise.** On a shared 2-CPU machine the absolute numbers move by 2x with other load; the ratios move
//!   much less, but a single run's third digit means little. Run it twice.
//! - **Memory in fresh processes.** Each variant is measured in its own child process (this binary with
//!   `WS_BENCH_ROLE=idle-<variant>`), since memory freed by an earlier phase need not go back to the OS. The
//!   child opens one connection and exchanges a message first, so one-time costs (the reactor thread,
//!   allocator arenas, lazily built statics) fall before the baseline; then it reads `VmRSS` from
//!   `/proc/self/status`, opens N more connections with one 64-byte echo on each (the first read is when
//!   tungstenite zero-fills its read buffer), reads `VmRSS` again and reports the growth over N. Linux only.
//!
//! [`ReconnectingStream`]: stream_tungstenite::ReconnectingStream
//! [`Immediate`]: stream_tungstenite::retry::Immediate
//! [`DEFAULT_READ_BUFFER`]: stream_tungstenite::ws::DEFAULT_READ_BUFFER

#[path = "common/mod.rs"]
mod common;

use common::Mode;
use std::fmt::Debug;
use std::future::Future;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use async_io::{block_on, Async};
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use criterion::{Criterion, Throughput};
use futures::io::AsyncWriteExt;
use futures::{Sink, SinkExt, Stream, StreamExt};
use stream_tungstenite::retry::Immediate;
use stream_tungstenite::ws::{WsConnector, DEFAULT_READ_BUFFER};
use stream_tungstenite::ReconnectingStream;

/// Selects what this process is: unset for the benchmark, `server`, or `idle-<variant>`.
const ROLE_ENV: &str = "WS_BENCH_ROLE";
/// The server's address, for the memory children.
const ADDR_ENV: &str = "WS_BENCH_ADDR";
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
        Ok(role) => panic!("unknown {ROLE_ENV}={role}"),
        Err(_) => {}
    }
    let mode = Mode::from_env();
    let pinning = if mode == Mode::Test { None } else { Pinning::try_pin() };
    let server = ServerProcess::start(pinning.as_ref());
    let addr = server.addr;
    if std::env::var("WS_BENCH_ONLY").as_deref() == Ok("memory") {
        memory::figure(addr, mode);
        return;
    }

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(if mode == Mode::Full { 1000 } else { 200 }))
        .measurement_time(Duration::from_millis(if mode == Mode::Full { 3000 } else { 500 }))
        .sample_size(if mode == Mode::Full { 50 } else { 10 })
        .configure_from_args();
    criterion_benches(&mut criterion, addr, mode);
    criterion.final_summary();

    let pinned = match &pinning {
        Some(pinning) => format!("client on cpu {}, server on cpu {}", pinning.client, pinning.server),
        None => "not pinned to cpus".to_owned(),
    };
    if mode == Mode::Test {
        println!("\n(test mode: a smoke run of a few samples; the figures below mean nothing)");
    }
    println!(
        "\nstream-tungstenite vs bare async-tungstenite over loopback (medians of interleaved runs; {mode:?} mode; {pinned})"
    );
    figures::receive(addr, mode, 64);
    figures::receive(addr, mode, 1024);
    figures::echo(addr, mode);
    figures::reconnect(addr, mode);
    memory::figure(addr, mode);
}

// ---------------------------------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------------------------------

/// The bare socket.
type BareWs = WebSocketStream<Async<TcpStream>>;

/// One client under test. All the variants run exactly the same code around these calls.
trait Client {
    /// Sends `message` and flushes it.
    async fn send(&mut self, message: Message);
    /// The next message.
    async fn recv(&mut self) -> Message;
    /// Tells the server to drop the connection; returns the first message of the next connection.
    async fn reconnect(&mut self) -> Message;
}

/// The bare async-tungstenite socket, with a hand-written reconnect loop.
struct Bare {
    ws: Option<BareWs>,
    addr: SocketAddr,
    path: &'static str,
    config: Option<WebSocketConfig>,
}

impl Bare {
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

    fn ws(&mut self) -> &mut BareWs {
        self.ws.as_mut().expect("connected")
    }
}

async fn bare_dial(
    addr: SocketAddr,
    path: &str,
    config: Option<WebSocketConfig>,
) -> Result<BareWs, Box<dyn std::error::Error>> {
    let tcp = Async::<TcpStream>::connect(addr).await?;
    let url = format!("ws://{addr}{path}");
    let (ws, _response) = match config {
        None => async_tungstenite::client_async(url, tcp).await?,
        Some(config) => async_tungstenite::client_async_with_config(url, tcp, Some(config)).await?,
    };
    Ok(ws)
}

impl Client for Bare {
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

/// Ours as the brief has it: `stream_tungstenite::connect` (default 32 KiB read buffer), immediate retry.
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

/// The bare socket with our default 32 KiB read buffer: a diagnostic variant.
fn config_16k() -> Option<WebSocketConfig> {
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

/// Runs `$op` (an async expression using `$c: &mut` client) on each of the `$client`s in turn, `$samples`
/// times, rotating which goes first; returns the durations, one vector per client in the order given.
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
                        let $c = &mut $client;
                        let elapsed: Duration = $op.await;
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
    let mut bare = block_on(Bare::connect(addr, "/", None));
    let mut ours = ours(addr, "/");
    let n = mode.pick(50, 1000, 1000);
    for size in [64, 1024] {
        let mut group = criterion.benchmark_group(format!("receive_{}", size_label(size)));
        group.throughput(Throughput::Elements(n as u64 - 1));
        group.bench_function("bare", |b| {
            b.iter_custom(|iters| block_on(repeat!(iters, flood(&mut bare, size, n))))
        });
        group.bench_function("ours", |b| {
            b.iter_custom(|iters| block_on(repeat!(iters, flood(&mut ours, size, n))))
        });
        group.finish();
    }

    let message = echo_message();
    let mut group = criterion.benchmark_group("echo_64B");
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| block_on(repeat!(iters, echo(&mut bare, &message))))
    });
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| block_on(repeat!(iters, echo(&mut ours, &message))))
    });
    group.finish();

    let mut bare = block_on(Bare::connect(addr, GREET_PATH, None));
    let mut ours = self::ours(addr, GREET_PATH);
    block_on(async {
        bare.recv().await;
        ours.recv().await;
    });
    let mut group = criterion.benchmark_group("reconnect");
    // Shorter: every reconnect leaves a socket in TIME_WAIT on the server side.
    if mode == Mode::Full {
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(20);
    }
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| block_on(repeat!(iters, reconnect(&mut bare))))
    });
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| block_on(repeat!(iters, reconnect(&mut ours))))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// The headline figures
// ---------------------------------------------------------------------------------------------------------------

mod figures {
    use super::*;

    pub(super) fn receive(addr: SocketAddr, mode: Mode, size: usize) {
        let n = mode.pick(50, 1000, 1000);
        let samples = mode.pick(3, 201, 1001);
        let [bare, bare_16k, ours, ours_128k] = block_on(async {
            // A fresh connection per sample (see the module docs); connecting is not timed.
            let mut times: Vec<Vec<Duration>> = (0..4).map(|_| Vec::with_capacity(samples)).collect();
            for sample in 0..samples {
                for turn in 0..4 {
                    let which = (sample + turn) % 4;
                    let elapsed = match which {
                        0 => flood(&mut Bare::connect(addr, "/", None).await, size, n).await,
                        1 => flood(&mut Bare::connect(addr, "/", config_16k()).await, size, n).await,
                        2 => flood(&mut super::ours(addr, "/"), size, n).await,
                        _ => flood(&mut super::ours_128k(addr, "/"), size, n).await,
                    };
                    times[which].push(elapsed);
                }
            }
            per_message(times, n - 1)
        });
        let label = format!("receive {}", size_label(size));
        let unit = "µs/msg";
        println!(
            "ratio {label}: {:.2} (bare {bare:.3} {unit}, ours {ours:.3} {unit}) [throughput ratio bare/ours; target >= 0.97: {}]",
            bare / ours,
            verdict(bare / ours >= 0.97)
        );
        println!(
            "    same read buffer (ours): {:.2} (bare-ours-buf {bare_16k:.3} {unit}, ours {ours:.3} {unit})",
            bare_16k / ours
        );
        println!(
            "    same 128 KiB read buffer: {:.2} (bare {bare:.3} {unit}, ours-128K {ours_128k:.3} {unit})",
            bare / ours_128k
        );
    }

    pub(super) fn echo(addr: SocketAddr, mode: Mode) {
        let samples = mode.pick(5, 2001, 20001);
        let message = echo_message();
        let [bare, bare_16k, ours, ours_128k] = block_on(async {
            let mut bare = Bare::connect(addr, "/", None).await;
            let mut bare_16k = Bare::connect(addr, "/", config_16k()).await;
            let mut ours = super::ours(addr, "/");
            let mut ours_128k = super::ours_128k(addr, "/");
            let warm_up = mode.pick(1, 100, 1000);
            let _ = interleaved!(warm_up, [bare, bare_16k, ours, ours_128k], |c| super::echo(c, &message));
            let times = interleaved!(samples, [bare, bare_16k, ours, ours_128k], |c| super::echo(c, &message));
            per_message(times, 1)
        });
        latency_lines(
            &format!("echo {}", size_label(ECHO_LEN)),
            1.05,
            [bare, bare_16k, ours, ours_128k],
        );
    }

    pub(super) fn reconnect(addr: SocketAddr, mode: Mode) {
        let samples = mode.pick(3, 201, 1001);
        let [bare, bare_16k, ours, ours_128k] = block_on(async {
            let mut bare = Bare::connect(addr, GREET_PATH, None).await;
            let mut bare_16k = Bare::connect(addr, GREET_PATH, config_16k()).await;
            let mut ours = super::ours(addr, GREET_PATH);
            let mut ours_128k = super::ours_128k(addr, GREET_PATH);
            // Take each first connection's greeting (this also connects ours).
            bare.recv().await;
            bare_16k.recv().await;
            ours.recv().await;
            ours_128k.recv().await;
            let warm_up = mode.pick(1, 10, 50);
            let _ = interleaved!(warm_up, [bare, bare_16k, ours, ours_128k], |c| { super::reconnect(c) });
            let times = interleaved!(samples, [bare, bare_16k, ours, ours_128k], |c| { super::reconnect(c) });
            per_message(times, 1)
        });
        latency_lines("reconnect", 1.1, [bare, bare_16k, ours, ours_128k]);
    }

    /// Median per message, in µs, for each variant.
    fn per_message(times: Vec<Vec<Duration>>, messages: usize) -> [f64; 4] {
        let medians: Vec<f64> = times
            .into_iter()
            .map(|t| median(t).as_secs_f64() * 1e6 / messages as f64)
            .collect();
        medians.try_into().expect("four variants")
    }

    fn latency_lines(label: &str, target: f64, [bare, bare_16k, ours, ours_128k]: [f64; 4]) {
        println!(
            "latency ratio {label} (ours/bare): {:.2} (bare {bare:.1} µs, ours {ours:.1} µs) [target <= {target}: {}]",
            ours / bare,
            verdict(ours / bare <= target)
        );
        println!(
            "    same read buffer (ours): {:.2} (bare-ours-buf {bare_16k:.1} µs, ours {ours:.1} µs)",
            ours / bare_16k
        );
        println!(
            "    same 128 KiB read buffer: {:.2} (bare {bare:.1} µs, ours-128K {ours_128k:.1} µs)",
            ours_128k / bare
        );
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
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

    const VARIANTS: [&str; 5] = ["bare", "bare-ours-buf", "ours", "ours-128K", "client"];

    /// Runs each variant in fresh child processes and prints the figure.
    pub(super) fn figure(addr: SocketAddr, mode: Mode) {
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
                per_connection[which].push(run_child(addr, VARIANTS[which], connections));
            }
        }
        let [bare, bare_16k, ours, ours_128k, client]: [f64; 5] = per_connection
            .into_iter()
            .map(|mut kib| {
                kib.sort_by(f64::total_cmp);
                kib[kib.len() / 2]
            })
            .collect::<Vec<_>>()
            .try_into()
            .expect("five variants");
        println!(
            "ratio idle memory per connection (ours/bare): {:.2} (bare {bare:.1} KiB, ours {ours:.1} KiB) [RSS growth over {connections} connections, median of {runs} processes; target <= 0.5: {}]",
            ours / bare,
            verdict(ours / bare <= 0.5)
        );
        println!(
            "    same read buffer (ours): {:.2} (bare-ours-buf {bare_16k:.1} KiB, ours {ours:.1} KiB)",
            ours / bare_16k
        );
        println!(
            "    same 128 KiB read buffer: {:.2} (bare {bare:.1} KiB, ours-128K {ours_128k:.1} KiB)",
            ours_128k / bare
        );
        println!(
            "idle WebSocketClient over ReconnectingStream: {:+.1} KiB per connection (client {client:.1} KiB, ours {ours:.1} KiB) [target <= +4: {}]",
            client - ours,
            verdict(client - ours <= 4.0)
        );
    }

    /// KiB per connection, measured by a child process.
    fn run_child(addr: SocketAddr, variant: &str, connections: usize) -> f64 {
        let output = Command::new(std::env::current_exe().expect("own executable"))
            .env(ROLE_ENV, format!("idle-{variant}"))
            .env(ADDR_ENV, addr.to_string())
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
        let addr: SocketAddr = std::env::var(ADDR_ENV)
            .expect("server address")
            .parse()
            .expect("a socket address");
        let connections: usize = std::env::var(CONNECTIONS_ENV)
            .expect("connection count")
            .parse()
            .expect("a number");
        let (before, after) = block_on(async {
            match variant {
                "bare" => idle(connections, || Bare::connect(addr, "/", None)).await,
                "bare-ours-buf" => idle(connections, || Bare::connect(addr, "/", config_16k())).await,
                "ours" => idle(connections, || async move { ours(addr, "/") }).await,
                "ours-128K" => idle(connections, || async move { ours_128k(addr, "/") }).await,
                "client" => {
                    let executor = smol::LocalExecutor::new();
                    executor
                        .run(idle(connections, || {
                            let conn = ClientConn::open(&executor, addr);
                            async move { conn }
                        }))
                        .await
                }
                other => panic!("unknown variant {other}"),
            }
        });
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
        let addr = line.trim().parse().expect("server printed its address");
        Self {
            child,
            _stdin: stdin,
            addr,
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

    /// The server process: prints its address, then serves until its stdin closes.
    ///
    /// Per connection: on [`GREET_PATH`] it first sends [`GREETING`]; it echoes binary messages; on the text
    /// `flood <size> <n>` it writes `n` binary frames of `size` bytes straight to the socket (pre-encoded, so
    /// the client, not the server, is the bottleneck); on `drop` it drops the TCP connection (no Close frame).
    pub(super) fn run() {
        std::thread::spawn(|| {
            let mut buf = [0u8; 64];
            while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind");
        let addr = listener.get_ref().local_addr().expect("local address");
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{addr}")
            .and_then(|()| stdout.flush())
            .expect("stdout");

        let executor = smol::LocalExecutor::new();
        block_on(executor.run(async {
            loop {
                match listener.accept().await {
                    Ok((tcp, _)) => executor.spawn(serve(tcp)).detach(),
                    Err(error) => eprintln!("[bench server] accept failed: {error}"),
                }
            }
        }))
    }

    async fn serve(tcp: Async<TcpStream>) {
        let _ = tcp.get_ref().set_nodelay(true);
        let mut path = String::new();
        // The signature is tungstenite's.
        #[allow(clippy::result_large_err)]
        let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            path = request.uri().path().to_owned();
            Ok(response)
        };
        let config = WebSocketConfig::default().read_buffer_size(SERVER_READ_BUFFER);
        let Ok(mut ws) = async_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await else {
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
                    if ws.get_mut().write_all(bytes).await.is_err() {
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
