//! Receive throughput of [`WebSocketClient`] through `subscribe()`, against the bare async-tungstenite socket,
//! over the same loopback server in the same run.
//!
//! Run it with `cargo bench --bench client` (under a minute; `BENCH_QUICK=1` or `-- --quick` for a run of a
//! few seconds). It prints criterion's report, then the headline figures:
//!
//! - **receive 1 subscriber** (throughput ratio, bare time / client time; 1.00 = equal, target >= 0.8): the
//!   server floods `N` 64-byte binary messages as fast as it can; we time from sending the request to the
//!   last of the `N` messages, received by the bare socket's `next()`, or by the client's one subscriber.
//! - **receive 4 subscribers**: the same, until each of 4 subscribers of one client has received all `N`
//!   (every message is delivered to each; a lag report would abort the run).
//! - diagnostic lines that compare like with like: both with the client's 32 KiB read buffer, both with
//!   tungstenite's 128 KiB one; and [`ReconnectingStream`] (the layer below the client, read with `next()`),
//!   so that the client's own cost (the fan-out to subscribers) can be told apart from the read buffer's and
//!   the stream's.
//!
//! "bare" is `async_tungstenite::client_async(url, Async::<TcpStream>::connect(addr))` with tungstenite's
//! default configuration; "client" is `WebSocketClient::new(url)` with its defaults.
//!
//! # Method
//!
//! - **The server** runs in this process, on one thread of its own (`async_io::block_on` with a local smol
//!   executor for its connections). It floods by writing pre-encoded frames straight to the socket, so it is
//!   much faster than any client and the client is what is measured.
//! - **One client thread.** Each variant runs on the bench's thread: the client's `run()` future is polled
//!   together with its subscribers (`select(run, join_all(subscribers))`), as a single-threaded executor would
//!   poll a spawned driver and the tasks reading from it. So on 2 cores the client and the server each get one,
//!   as with the bare socket.
//! - **Interleaved medians.** The ratios come from a loop that runs the variants in turn, rotating which goes
//!   first, over connections that stay open, and compares medians: drift on the machine hits all variants
//!   alike. Criterion's report is printed too, but its numbers come from separate runs.
//!
//! To profile one variant alone, set `CLIENT_BENCH_PROFILE` to its name (`bare`, `client-1`, `client-4`,
//! `bare-ours-buf`, `client-128K`, `stream`): the bench then floods only that variant for 5 s (`perf record -g target/release/deps/client-<hash> --bench`).
//!
//! [`WebSocketClient`]: stream_tungstenite::WebSocketClient
//! [`ReconnectingStream`]: stream_tungstenite::ReconnectingStream

#[path = "common/mod.rs"]
mod common;

use common::Mode;
use std::future::Future;
use std::hint::black_box;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{block_on, Async};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use criterion::{Criterion, Throughput};
use futures::future::{self, Either};
use futures::{SinkExt, StreamExt};
use stream_tungstenite::prelude::*;

/// Payload size of every flooded message.
const MESSAGE_LEN: usize = 64;
/// Set to a variant (`bare`, `client-1`, `client-4`, `bare-ours-buf`, `client-128K`, `stream`) to flood only it for 5 s, e.g. under `perf`.
const PROFILE_ENV: &str = "CLIENT_BENCH_PROFILE";

fn main() {
    let mode = Mode::from_env();
    let addr = server::start();
    if let Ok(variant) = std::env::var(PROFILE_ENV) {
        return profile(addr, &variant);
    }

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(mode.pick(10, 200, 1000)))
        .measurement_time(Duration::from_millis(mode.pick(10, 500, 3000)))
        .sample_size(mode.pick(10, 10, 30))
        .configure_from_args();
    criterion_benches(&mut criterion, addr, mode);
    criterion.final_summary();

    println!(
        "\nWebSocketClient (subscribe) vs bare async-tungstenite over loopback: {} messages of {MESSAGE_LEN} bytes \
         per run, medians of interleaved runs ({mode:?} mode{})",
        mode.pick(200, 10_000, 10_000),
        if mode == Mode::Test {
            ": a smoke test, the numbers mean nothing"
        } else {
            ""
        }
    );
    figures(addr, mode);
}

// ---------------------------------------------------------------------------------------------------------------
// The variants
// ---------------------------------------------------------------------------------------------------------------

/// One receiver under test.
trait Receiver {
    /// Asks the server for `n` messages; the time until all have been received (by every subscriber).
    async fn flood(&mut self, n: usize) -> Duration;
}

/// The request for a flood of `n` messages.
fn request(n: usize) -> Message {
    Message::text(format!("flood {n}"))
}

/// The bare async-tungstenite socket.
struct Bare(WebSocketStream<Async<TcpStream>>);

impl Bare {
    /// With tungstenite's default configuration (128 KiB read buffer).
    async fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, None).await
    }

    async fn connect_with(addr: SocketAddr, config: Option<WebSocketConfig>) -> Self {
        let tcp = Async::<TcpStream>::connect(addr).await.expect("tcp connect");
        tcp.get_ref().set_nodelay(true).expect("nodelay");
        let (ws, _) = async_tungstenite::client_async_with_config(format!("ws://{addr}/"), tcp, config)
            .await
            .expect("bare connect");
        Self(ws)
    }
}

impl Receiver for Bare {
    async fn flood(&mut self, n: usize) -> Duration {
        let start = Instant::now();
        self.0.send(request(n)).await.expect("send");
        for _ in 0..n {
            let message = self.0.next().await.expect("the stream ended").expect("receive");
            debug_assert_eq!(message.len(), MESSAGE_LEN);
            black_box(message);
        }
        start.elapsed()
    }
}

type RunFuture = Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send>>;

/// A [`WebSocketClient`] with `subscribers` subscriptions; its `run()` future is polled during each flood.
struct Client {
    client: Arc<WebSocketClient>,
    run: RunFuture,
    subscribers: Vec<Subscription<Message>>,
}

impl Client {
    /// With the client's defaults.
    async fn connect(addr: SocketAddr, subscribers: usize) -> Self {
        Self::connect_with(addr, subscribers, None).await
    }

    async fn connect_with(addr: SocketAddr, subscribers: usize, config: Option<WebSocketConfig>) -> Self {
        let mut builder = WebSocketClient::builder(format!("ws://{addr}/"));
        if let Some(config) = config {
            builder = builder.with_websocket_config(config);
        }
        let client = Arc::new(builder.build());
        let subscribers = (0..subscribers).map(|_| client.subscribe()).collect();
        let mut events = client.subscribe_events();
        let run: RunFuture = Box::pin({
            let client = Arc::clone(&client);
            async move { client.run().await }
        });
        let mut this = Self {
            client,
            run,
            subscribers,
        };
        let connected = async {
            while let Ok(event) = events.recv().await {
                if let Event::Connected { .. } = event {
                    return;
                }
            }
        };
        this.drive(connected).await;
        this
    }

    /// Runs `work` while polling the driver.
    async fn drive<T>(&mut self, work: impl Future<Output = T>) -> T {
        let work = std::pin::pin!(work);
        match future::select(self.run.as_mut(), work).await {
            Either::Left((outcome, _)) => panic!("run() ended: {outcome:?}"),
            Either::Right((value, _)) => value,
        }
    }

    async fn shutdown(mut self) {
        let client = Arc::clone(&self.client);
        let (outcome, ()) = future::join(self.run.as_mut(), client.shutdown()).await;
        outcome.expect("run");
    }
}

impl Receiver for Client {
    async fn flood(&mut self, n: usize) -> Duration {
        let start = Instant::now();
        let sender = self.client.sender();
        let mut subscribers = std::mem::take(&mut self.subscribers);
        let receive_all = future::join_all(subscribers.iter_mut().map(|subscriber| async move {
            for _ in 0..n {
                match subscriber.recv().await {
                    Ok(message) => {
                        debug_assert_eq!(message.len(), MESSAGE_LEN);
                        black_box(message);
                    }
                    Err(error) => panic!("a subscriber did not receive every message: {error}"),
                }
            }
        }));
        self.drive(async {
            sender.send(request(n)).await.expect("send");
            receive_all.await;
        })
        .await;
        let elapsed = start.elapsed();
        self.subscribers = subscribers;
        elapsed
    }
}

/// The layer below the client: a [`ReconnectingStream`] over `stream_tungstenite::connect`, read with `next()`.
struct Reconnecting(ReconnectingStream<stream_tungstenite::WsConnector, Message>);

impl Reconnecting {
    fn new(addr: SocketAddr) -> Self {
        Self(ReconnectingStream::new(stream_tungstenite::WsConnector::new(format!(
            "ws://{addr}/"
        ))))
    }
}

impl Receiver for Reconnecting {
    async fn flood(&mut self, n: usize) -> Duration {
        let start = Instant::now();
        self.0.send(request(n)).await.expect("send");
        for _ in 0..n {
            let message = self.0.next().await.expect("the stream ended").expect("receive");
            debug_assert_eq!(message.len(), MESSAGE_LEN);
            black_box(message);
        }
        start.elapsed()
    }
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

// ---------------------------------------------------------------------------------------------------------------
// Criterion
// ---------------------------------------------------------------------------------------------------------------

fn criterion_benches(criterion: &mut Criterion, addr: SocketAddr, mode: Mode) {
    let n = mode.pick(200, 10_000, 10_000);
    let (mut bare, mut client_1, mut client_4) = block_on(async {
        (
            Bare::connect(addr).await,
            Client::connect(addr, 1).await,
            Client::connect(addr, 4).await,
        )
    });
    let mut group = criterion.benchmark_group(format!("client_receive_{MESSAGE_LEN}B"));
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| block_on(repeat!(iters, bare.flood(n))))
    });
    group.bench_function("client_1_subscriber", |b| {
        b.iter_custom(|iters| block_on(repeat!(iters, client_1.flood(n))))
    });
    group.bench_function("client_4_subscribers", |b| {
        b.iter_custom(|iters| block_on(repeat!(iters, client_4.flood(n))))
    });
    group.finish();
    block_on(async {
        client_1.shutdown().await;
        client_4.shutdown().await;
    });
}

// ---------------------------------------------------------------------------------------------------------------
// The headline figures
// ---------------------------------------------------------------------------------------------------------------

fn figures(addr: SocketAddr, mode: Mode) {
    let n = mode.pick(200, 10_000, 10_000);
    let [bare, client_1, client_4, bare_16k, client_128k, stream] = block_on(async {
        let mut variants: [Box<dyn Flood>; 6] = [
            Box::new(Bare::connect(addr).await),
            Box::new(Client::connect(addr, 1).await),
            Box::new(Client::connect(addr, 4).await),
            Box::new(Bare::connect_with(addr, Some(config_16k())).await),
            Box::new(Client::connect_with(addr, 1, Some(WebSocketConfig::default())).await),
            Box::new(Reconnecting::new(addr)),
        ];
        // Warm up: connect the stream, grow the buffers.
        interleaved(&mut variants, mode.pick(1, 5, 20), n).await;
        let times = interleaved(&mut variants, mode.pick(3, 51, 301), n).await;
        times.map(|t| median(t).as_secs_f64() * 1e6 / n as f64)
    });
    let unit = "µs/msg";
    println!(
        "ratio client receive 1 subscriber: {:.2} (bare {bare:.3} {unit}, client {client_1:.3} {unit}) \
         [throughput ratio bare/client; target >= 0.8: {}]",
        bare / client_1,
        if bare / client_1 >= 0.8 { "met" } else { "MISSED" }
    );
    println!(
        "ratio client receive 4 subscribers: {:.2} (bare {bare:.3} {unit}, client {client_4:.3} {unit}) \
         [each of the 4 receives all {n}]",
        bare / client_4
    );
    println!(
        "    same read buffer (ours): {:.2} (bare-ours-buf {bare_16k:.3} {unit}, client {client_1:.3} {unit})",
        bare_16k / client_1
    );
    println!(
        "    same 128 KiB read buffer: {:.2} (bare {bare:.3} {unit}, client-128K {client_128k:.3} {unit})",
        bare / client_128k
    );
    println!(
        "    the layer below, ReconnectingStream read with next() (our read buffer, no fan-out): {:.2} \
         (bare {bare:.3} {unit}, stream {stream:.3} {unit})",
        bare / stream
    );
}

/// The client's default read buffer, for the bare socket.
fn config_16k() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(stream_tungstenite::ws::DEFAULT_READ_BUFFER)
}

/// Floods one variant for 5 s: for profiling.
fn profile(addr: SocketAddr, variant: &str) {
    block_on(async {
        let mut receiver: Box<dyn Flood> = match variant {
            "bare" => Box::new(Bare::connect(addr).await),
            "client-1" => Box::new(Client::connect(addr, 1).await),
            "client-4" => Box::new(Client::connect(addr, 4).await),
            "bare-ours-buf" => Box::new(Bare::connect_with(addr, Some(config_16k())).await),
            "client-128K" => Box::new(Client::connect_with(addr, 1, Some(WebSocketConfig::default())).await),
            "stream" => Box::new(Reconnecting::new(addr)),
            other => panic!("unknown variant {other:?} (bare, client-1, client-4, bare-ours-buf, client-128K, stream)"),
        };
        let start = Instant::now();
        let mut floods = 0;
        while start.elapsed() < Duration::from_secs(5) {
            receiver.flood_boxed(10_000).await;
            floods += 1;
        }
        println!("{variant}: {floods} floods of 10000 messages in {:?}", start.elapsed());
    });
}

/// Object-safe [`Receiver`], for the interleaving loop.
trait Flood {
    fn flood_boxed(&mut self, n: usize) -> Pin<Box<dyn Future<Output = Duration> + '_>>;
}

impl<R: Receiver> Flood for R {
    fn flood_boxed(&mut self, n: usize) -> Pin<Box<dyn Future<Output = Duration> + '_>> {
        Box::pin(Receiver::flood(self, n))
    }
}

/// Runs a flood on each variant in turn, `samples` times, rotating which goes first; the durations per variant.
async fn interleaved<const V: usize>(
    variants: &mut [Box<dyn Flood>; V],
    samples: usize,
    n: usize,
) -> [Vec<Duration>; V] {
    let mut times: [Vec<Duration>; V] = std::array::from_fn(|_| Vec::with_capacity(samples));
    for sample in 0..samples {
        for turn in 0..V {
            let which = (sample + turn) % V;
            times[which].push(variants[which].flood_boxed(n).await);
        }
    }
    times
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

// ---------------------------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------------------------

mod server {
    use futures::io::AsyncWriteExt;

    use super::*;

    /// Starts the server on its own thread; its address.
    ///
    /// Per connection it answers the text `flood <n>` by writing `n` binary frames of [`MESSAGE_LEN`] bytes
    /// straight to the socket (pre-encoded, so that the client, not the server, is the bottleneck), and answers
    /// a Close.
    pub(super) fn start() -> SocketAddr {
        common::local_server(|| move |tcp| serve(tcp))
    }

    async fn serve(tcp: Async<TcpStream>) {
        let _ = tcp.get_ref().set_nodelay(true);
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        let mut frames: Option<(usize, Vec<u8>)> = None;
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let Some(n) = text
                .as_str()
                .strip_prefix("flood ")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if frames.as_ref().map(|(count, _)| *count) != Some(n) {
                frames = Some((n, encode_flood(n)));
            }
            let bytes = &frames.as_ref().expect("just set").1;
            // Every send so far was flushed, so writing frames straight to the socket keeps the stream
            // well-formed.
            if ws.get_mut().write_all(bytes).await.is_err() {
                return;
            }
        }
    }

    /// `n` unmasked binary frames (server to client) of [`MESSAGE_LEN`] bytes each.
    fn encode_flood(n: usize) -> Vec<u8> {
        let mut frame = vec![0x82, MESSAGE_LEN as u8];
        frame.extend((0..MESSAGE_LEN).map(|i| i as u8));
        frame.repeat(n)
    }
}
