//! Connecting and receiving through a proxy against the same without one, over loopback, in the same run.
//!
//! Run it with `cargo bench --bench proxy` (`BENCH_QUICK=1` or `-- --quick` for a short run). It needs the
//! proxy servers that `.ci/install-peers` installs (pproxy in `<repo>/.venv`, microsocks on `PATH`); a missing
//! one is skipped with a note. It prints criterion's report for each benchmark, then one line per headline
//! figure:
//!
//! - **connect** (latency ratio, through / direct; 1.00 = equal): one `WsConnector` attempt to a `ws://`
//!   server, from the first TCP connect to the upgrade's `101` (through a proxy: TCP to the proxy, the tunnel
//!   handshake, the proxy's own connect to the target, then the upgrade), for HTTP `CONNECT` and SOCKS5
//!   (`socks5h`, the proxy resolves the target) through pproxy, and SOCKS5 through microsocks.
//! - **receive 1 KiB** (throughput ratio, direct time / through time; 1.00 = equal): the server floods 1000
//!   binary messages of 1 KiB; the client is timed from the first message's arrival to the last's, on a fresh
//!   connection per sample (not timed), through each proxy and directly.
//!
//! A fourth variant, **http (in-bench relay)**, goes through a minimal HTTP `CONNECT` relay written here (a
//! thread per direction, 64 KiB reads, `TCP_NODELAY`): the cost of the extra hop itself, with a relay that
//! does nothing else.
//!
//! What the ratios measure is mostly the proxy: the client runs the same `WsConnection` on the tunnel as on
//! a direct socket (the tunnel is the TCP stream itself once open: no wrapper, no extra copy), so the
//! difference is the proxy's extra hop and relay. pproxy is Python (asyncio), microsocks C (a thread per
//! client); both relay every byte twice through user space.
//!
//! # Method
//!
//! - The WebSocket server runs on a thread of this process (`async_io::block_on`), the proxies in their own
//!   processes, all on 127.0.0.1. It floods by writing pre-encoded frames straight to the socket.
//! - **Interleaved medians**: each figure's ratio comes from a loop that runs the variants in turn, rotating
//!   which goes first, and compares medians, so drift on the machine hits every variant alike. Criterion's
//!   report comes from separate runs.
//! - **Noise**: on a shared 2-CPU machine the absolute numbers move a lot with other load (and the proxies
//!   compete with client and server for the two CPUs); the ratios move less, but run it twice.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/proxies.rs"]
mod proxies;

use std::hint::black_box;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use async_io::{block_on, Async};
use async_tungstenite::tungstenite::Message;
use common::Mode;
use criterion::{Criterion, Throughput};
use futures::io::AsyncWriteExt;
use futures::{SinkExt, StreamExt};
use proxies::ProxyServer;
use stream_tungstenite::ws::{WsConnection, WsConnector};
use stream_tungstenite::Connect;

/// Messages per flood, and their size.
const FLOOD: usize = 1000;
const FLOOD_LEN: usize = 1024;

/// One way to reach the server.
struct Variant {
    label: String,
    connector: WsConnector,
}

fn main() {
    let mode = Mode::from_env();
    let addr = server::start();
    let url = format!("ws://{addr}/");
    // The proxies stay up for the whole run (dropped at the end).
    let pproxy = ProxyServer::pproxy("http+socks5", None);
    let microsocks = ProxyServer::microsocks(None);
    let mut variants = vec![Variant {
        label: "direct".into(),
        connector: WsConnector::builder(url.clone()).without_proxy().build(),
    }];
    if let Some(pproxy) = &pproxy {
        for (label, scheme) in [("http (pproxy)", "http"), ("socks5h (pproxy)", "socks5h")] {
            variants.push(Variant {
                label: label.into(),
                connector: WsConnector::builder(url.clone())
                    .with_proxy(&pproxy.url(scheme, None))
                    .build(),
            });
        }
    }
    // A relay with no cost of its own but the hop: what the tunnel itself costs.
    let relay = relay::start();
    variants.push(Variant {
        label: "http (in-bench relay)".into(),
        connector: WsConnector::builder(url.clone())
            .with_proxy(&format!("http://{relay}"))
            .build(),
    });
    if let Some(microsocks) = &microsocks {
        variants.push(Variant {
            label: "socks5h (microsocks)".into(),
            connector: WsConnector::builder(url.clone())
                .with_proxy(&microsocks.url("socks5h", None))
                .build(),
        });
    }
    variants.retain(|variant| variant.label == "direct" || common::selected(&variant.label));

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(if mode == Mode::Full { 1000 } else { 200 }))
        .measurement_time(Duration::from_millis(if mode == Mode::Full { 3000 } else { 500 }))
        .sample_size(if mode == Mode::Full { 50 } else { 10 })
        .configure_from_args();
    criterion_benches(&mut criterion, &variants, mode);
    criterion.final_summary();

    if mode == Mode::Test {
        println!("\n(test mode: a smoke run of a few samples; the figures below mean nothing)");
    }
    println!("\nthrough a proxy vs direct, over loopback (medians of interleaved runs; {mode:?} mode)");
    figures::connect(&variants, mode);
    figures::receive(&variants, mode);
    drop((pproxy, microsocks));
}

// ---------------------------------------------------------------------------------------------------------------
// What is timed
// ---------------------------------------------------------------------------------------------------------------

/// One connection attempt, closed at once.
async fn connect(mut connector: WsConnector) -> Duration {
    let start = Instant::now();
    let connection = connector.connect().await.expect("connected");
    let elapsed = start.elapsed();
    drop(black_box(connection));
    elapsed
}

/// A fresh connection (not timed), then the time from the first flooded message's arrival to the last's.
async fn flood(mut connector: WsConnector, n: usize) -> Duration {
    let mut connection: WsConnection = connector.connect().await.expect("connected");
    connection
        .send(Message::text(format!("flood {FLOOD_LEN} {n}")))
        .await
        .expect("sent");
    let first = connection.next().await.expect("a message").expect("no error");
    assert_eq!(first.len(), FLOOD_LEN);
    let start = Instant::now();
    for _ in 1..n {
        black_box(connection.next().await.expect("a message").expect("no error"));
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------------------------
// Criterion
// ---------------------------------------------------------------------------------------------------------------

fn criterion_benches(criterion: &mut Criterion, variants: &[Variant], mode: Mode) {
    let mut group = criterion.benchmark_group("connect");
    for variant in variants {
        group.bench_function(variant.label.as_str(), |b| {
            b.iter_custom(|iters| {
                block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += connect(variant.connector.clone()).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();

    let n = mode.pick(50, FLOOD, FLOOD);
    let mut group = criterion.benchmark_group("receive_1KiB");
    group.throughput(Throughput::Elements(n as u64 - 1));
    for variant in variants {
        group.bench_function(variant.label.as_str(), |b| {
            b.iter_custom(|iters| {
                block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += flood(variant.connector.clone(), n).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// The headline figures
// ---------------------------------------------------------------------------------------------------------------

mod figures {
    use super::*;

    /// `samples` runs of `op` on each variant, rotating which goes first: the median of each, in µs.
    async fn interleaved<F, Fut>(variants: &[Variant], samples: usize, mut op: F) -> Vec<f64>
    where
        F: FnMut(WsConnector) -> Fut,
        Fut: std::future::Future<Output = Duration>,
    {
        let mut times: Vec<Vec<Duration>> = variants.iter().map(|_| Vec::with_capacity(samples)).collect();
        for sample in 0..samples {
            for turn in 0..variants.len() {
                let which = (sample + turn) % variants.len();
                times[which].push(op(variants[which].connector.clone()).await);
            }
        }
        times.into_iter().map(|t| median(t).as_secs_f64() * 1e6).collect()
    }

    pub(super) fn connect(variants: &[Variant], mode: Mode) {
        let samples = mode.pick(3, 201, 1001);
        let medians = block_on(async {
            let _ = interleaved(variants, mode.pick(1, 20, 50), super::connect).await;
            interleaved(variants, samples, super::connect).await
        });
        let direct = medians[0];
        println!("connect direct: {direct:.0} µs");
        for (variant, through) in variants.iter().zip(&medians).skip(1) {
            println!(
                "latency ratio connect through {} (through/direct): {:.2} (direct {direct:.0} µs, through {through:.0} µs)",
                variant.label,
                through / direct
            );
        }
    }

    pub(super) fn receive(variants: &[Variant], mode: Mode) {
        let n = mode.pick(50, FLOOD, FLOOD);
        let samples = mode.pick(3, 101, 401);
        let medians = block_on(interleaved(variants, samples, |connector| super::flood(connector, n)));
        let per_message: Vec<f64> = medians.iter().map(|total| total / (n - 1) as f64).collect();
        let direct = per_message[0];
        let unit = "µs/msg";
        let mib_per_s = |per_message: f64| FLOOD_LEN as f64 / per_message / 1.048_576;
        println!(
            "receive 1KiB direct: {direct:.3} {unit} ({:.0} MiB/s)",
            mib_per_s(direct)
        );
        for (variant, through) in variants.iter().zip(&per_message).skip(1) {
            println!(
                "ratio receive 1KiB through {}: {:.2} (direct {direct:.3} {unit}, through {through:.3} {unit}, {:.0} MiB/s) [throughput ratio direct/through]",
                variant.label,
                direct / through,
                mib_per_s(*through)
            );
        }
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

// ---------------------------------------------------------------------------------------------------------------
// The in-bench relay
// ---------------------------------------------------------------------------------------------------------------

mod relay {
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

    /// Starts a minimal HTTP `CONNECT` relay on 127.0.0.1 (no authentication); its address.
    pub(super) fn start() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                std::thread::spawn(move || serve(client));
            }
        });
        addr
    }

    fn serve(mut client: TcpStream) -> Option<()> {
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") {
            client.read_exact(&mut byte).ok()?;
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).ok()?;
        let target = head.strip_prefix("CONNECT ")?.split(' ').next()?;
        let upstream = TcpStream::connect(target).ok()?;
        for socket in [&client, &upstream] {
            socket.set_nodelay(true).ok()?;
        }
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").ok()?;
        let (client_in, upstream_out) = (client.try_clone().ok()?, upstream.try_clone().ok()?);
        let up = std::thread::spawn(move || copy(client_in, upstream_out));
        copy(upstream, client);
        let _ = up.join();
        Some(())
    }

    fn copy(mut from: TcpStream, mut to: TcpStream) {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(read @ 1..) = from.read(&mut buffer) {
            if to.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------------------------

mod server {
    use super::*;

    /// Starts the server on a thread of its own; its address. Per connection, on the text `flood <size> <n>`
    /// it writes `n` binary frames of `size` bytes straight to the socket.
    pub(super) fn start() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        let listener = Async::new(listener).expect("async listener");
        std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                let executor = smol::LocalExecutor::new();
                block_on(executor.run(async {
                    loop {
                        match listener.accept().await {
                            Ok((tcp, _)) => executor.spawn(serve(tcp)).detach(),
                            Err(error) => eprintln!("[bench server] accept failed: {error}"),
                        }
                    }
                }))
            })
            .expect("server thread");
        addr
    }

    async fn serve(tcp: Async<std::net::TcpStream>) {
        let _ = tcp.get_ref().set_nodelay(true);
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else { continue };
            let mut words = text.as_str().split_whitespace().skip(1);
            let mut number = || words.next().and_then(|w| w.parse::<usize>().ok());
            let (Some(size), Some(n)) = (number(), number()) else {
                return;
            };
            if ws.get_mut().write_all(&encode_flood(size, n)).await.is_err() {
                return;
            }
        }
    }

    /// `n` unmasked binary frames (server to client) of `size` (< 64 KiB) bytes each.
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
