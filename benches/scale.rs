//! 10,000 idle connections in one process against a local server: memory per connection, time to connect
//! them all, CPU used while idle, and the reconnection of all of them after the server restarts.
//!
//! Run it explicitly (it is not part of `cargo test`, and takes about a minute): `cargo bench --bench scale`.
//! `SCALE_CONNECTIONS` (default 10,000), `SCALE_IDLE_SECS` (default 25: longer than the 20 s heartbeat
//! interval, so every connection pings once in the window), `SCALE_HEARTBEAT=0` (no heartbeat) and
//! `SCALE_RETRY_MS` (the reconnection after the restart waits a delay drawn uniformly from zero to this,
//! [`Jitter::Full`]; default: the crate's default policy, [`ExponentialBackoff::default`], 100 ms with equal
//! jitter) change it; `BENCH_QUICK=1` makes it 2,000 connections and 5 s idle. Under
//! `cargo test --benches` it is a smoke run of 50 connections.
//!
//! # Setup
//!
//! - **The clients**: one [`ReconnectingStream`] per connection over one [`WsConnector`] (cloned, so the
//!   configuration is shared), with the defaults (heartbeat on: a ping every 20 s), each read by its own task
//!   on one `LocalExecutor` on the main thread: one thread for all.
//! - **The server** is another process (this binary with `SCALE_ROLE=server`), so that its memory is not
//!   counted and it can be killed and started again on the same port. It greets each connection with a text
//!   message, answers pings, and otherwise only reads. It listens with a backlog of 4,096.
//! - **File descriptors**: both processes raise their soft limit to what the hard limit allows (the
//!   `rlimit` crate); the run is cut to what fits, and says so.
//!
//! # Figures
//!
//! - **memory per connection**: growth of `VmRSS` from before the first dial to when every connection has
//!   received its greeting, over the number of connections (the streams included).
//! - **connect all**: from spawning the clients to the last greeting.
//! - **idle CPU**: user + system time of this process (all its threads) over the idle window, from
//!   `/proc/self/stat`, against the heartbeat's pings in that window.
//! - **reconnect all**: the server is killed (SIGKILL; the kernel closes its connections) and started again
//!   at once on the same port; the time from the kill to each client's new greeting: first, median, 90th and
//!   99th percentile, last, and the most new connections in any 100 ms, which shows whether the backoff's
//!   jitter spreads the herd.
//!
//! [`ReconnectingStream`]: stream_tungstenite::ReconnectingStream
//! [`WsConnector`]: stream_tungstenite::ws::WsConnector
//! [`ExponentialBackoff::default`]: stream_tungstenite::retry::ExponentialBackoff
//! [`Jitter::Full`]: stream_tungstenite::retry::Jitter::Full

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use common::Mode;
use futures::{SinkExt, StreamExt};
use stream_tungstenite::retry::{ExponentialBackoff, Jitter};
use stream_tungstenite::ws::WsConnector;
use stream_tungstenite::ReconnectingStream;

const ROLE_ENV: &str = "SCALE_ROLE";
/// The port the server listens on (0: any).
const PORT_ENV: &str = "SCALE_PORT";
const GREETING: &str = "hello";
/// The listen backlog: room for a large part of the herd at once (the kernel caps it at `somaxconn`).
const BACKLOG: i32 = 4096;
/// File descriptors besides the connections: the reactor, the executor, the standard streams.
const SPARE_FDS: u64 = 64;

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("server") {
        return server();
    }
    let mode = Mode::from_env();
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|value| value.parse::<u64>().expect("a number"))
    };
    let wanted = env("SCALE_CONNECTIONS").unwrap_or(mode.pick(50, 2_000, 10_000));
    let idle = Duration::from_secs(env("SCALE_IDLE_SECS").unwrap_or(mode.pick(1, 5, 25)));
    let retry = env("SCALE_RETRY_MS").map(Duration::from_millis);
    let heartbeat = env("SCALE_HEARTBEAT") != Some(0);

    let limit = rlimit::increase_nofile_limit(wanted + SPARE_FDS).unwrap_or(0);
    let connections = wanted.min(limit.saturating_sub(SPARE_FDS)) as usize;
    println!(
        "scale: {connections} connections (asked for {wanted}; open files allowed: {limit}), heartbeat {}, idle window {idle:?}, retry: {}",
        if heartbeat { "on (20 s)" } else { "off" },
        retry.map_or("the default policy (100 ms, equal jitter)".to_owned(), |first| format!(
            "{first:?} first, full jitter"
        ))
    );
    println!(
        "inline sizes: ReconnectingStream<WsConnector, Message> {} bytes, WsConnection {} bytes",
        std::mem::size_of::<ReconnectingStream<WsConnector, Message>>(),
        std::mem::size_of::<stream_tungstenite::WsConnection>()
    );
    let mut server = ServerProcess::start(0);
    let addr = server.addr;

    let executor = Rc::new(smol::LocalExecutor::new());
    let (greeted, greetings) = async_channel::unbounded::<(usize, Instant)>();
    let builder = WsConnector::builder(format!("ws://{addr}/"));
    let connector = if heartbeat {
        builder
    } else {
        builder.without_heartbeat()
    }
    .build();
    let rss_before = rss_kib();
    let cpu_start = cpu_time();
    let start = Instant::now();
    let tasks: Vec<smol::Task<()>> = (0..connections)
        .map(|index| {
            let mut stream: ReconnectingStream<WsConnector, Message> = ReconnectingStream::new(connector.clone());
            if let Some(first) = retry {
                stream = stream.with_retry(ExponentialBackoff::new(first, first * 10).with_jitter(Jitter::Full));
            }
            let greeted = greeted.clone();
            executor.spawn(async move {
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(Message::Text(text)) if text.as_str() == GREETING => {
                            let _ = greeted.send((index, Instant::now())).await;
                        }
                        Ok(_) => {}
                        Err(error) => {
                            eprintln!("[scale] connection {index} ended: {error}");
                            return;
                        }
                    }
                }
                let _ = stream.close().await;
            })
        })
        .collect();

    async_io::block_on(executor.run(async {
        // Every connection up.
        let mut connected: Vec<Duration> = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (_, at) = greetings.recv().await.expect("the clients run");
            connected.push(at - start);
        }
        let connect_all = connected.iter().copied().max().unwrap_or_default();
        let rss_after = rss_kib();
        let dial_cpu = cpu_time() - cpu_start;
        println!(
            "connect all: {:.2} s ({:.0} connections/s; {:.0} µs of CPU per connection, client side)",
            connect_all.as_secs_f64(),
            connections as f64 / connect_all.as_secs_f64(),
            dial_cpu.as_secs_f64() * 1e6 / connections as f64
        );
        println!(
            "memory per connection: {:.2} KiB (VmRSS {rss_before} KiB -> {rss_after} KiB over {connections} connections)",
            (rss_after - rss_before) as f64 / connections as f64
        );

        // Idle: nothing runs here but the heartbeat.
        let cpu_idle_start = cpu_time();
        Timer::after(idle).await;
        let idle_cpu = cpu_time() - cpu_idle_start;
        // Each connection pings every 20 s from when it connected.
        let window = (connect_all, connect_all + idle);
        let pings: usize = connected
            .iter()
            .filter(|_| heartbeat)
            .map(|&at| {
                (1..)
                    .map(|k| at + stream_tungstenite::ws::DEFAULT_PING_INTERVAL * k)
                    .take_while(|&ping| ping < window.1)
                    .filter(|&ping| ping >= window.0)
                    .count()
            })
            .sum();
        println!(
            "idle CPU: {:.0} ms over {:.0} s ({:.3}% of one core; {pings} heartbeat pings in the window{})",
            idle_cpu.as_secs_f64() * 1e3,
            idle.as_secs_f64(),
            idle_cpu.as_secs_f64() / idle.as_secs_f64() * 100.0,
            if pings > 0 {
                format!(", {:.1} µs of CPU each", idle_cpu.as_secs_f64() * 1e6 / pings as f64)
            } else {
                String::new()
            }
        );

        // The server restarts.
        let killed = Instant::now();
        server.kill();
        server = ServerProcess::start(addr.port());
        let restarted = killed.elapsed();
        let mut back: Vec<Duration> = Vec::with_capacity(connections);
        let deadline = Duration::from_secs(120);
        while back.len() < connections {
            let next = futures::future::select(
                Box::pin(greetings.recv()),
                Box::pin(Timer::at(killed + deadline)),
            )
            .await;
            match next {
                futures::future::Either::Left((Ok((_, at)), _)) => back.push(at - killed),
                _ => break,
            }
        }
        back.sort_unstable();
        let missing = connections - back.len();
        let at = |percentile: usize| back[(back.len() * percentile / 100).min(back.len() - 1)];
        let peak = peak_per(&back, Duration::from_millis(100));
        if back.is_empty() {
            println!("reconnect all: none came back within {deadline:?}");
        } else {
            println!(
                "reconnect all after a server restart (restart took {:.0} ms): first {:.0} ms, p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, last {:.0} ms after the kill; at most {peak} new connections in any 100 ms{}",
                restarted.as_secs_f64() * 1e3,
                back[0].as_secs_f64() * 1e3,
                at(50).as_secs_f64() * 1e3,
                at(90).as_secs_f64() * 1e3,
                at(99).as_secs_f64() * 1e3,
                back[back.len() - 1].as_secs_f64() * 1e3,
                if missing > 0 {
                    format!("; {missing} did not come back within {deadline:?}")
                } else {
                    String::new()
                }
            );
        }
    }));
    drop(tasks);
    drop(server);
}

/// The most instants of `sorted` within any `window` (sliding from each one).
fn peak_per(sorted: &[Duration], window: Duration) -> usize {
    let mut peak = 0;
    let mut first = 0;
    for (last, &at) in sorted.iter().enumerate() {
        while sorted[first] + window <= at {
            first += 1;
        }
        peak = peak.max(last + 1 - first);
    }
    peak
}

/// This process's resident set size in KiB (`VmRSS`), on Linux; 0 elsewhere.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The user + system time of this process (all threads), from `/proc/self/stat` (in clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's name (in parentheses, which may hold spaces): utime is the 12th, stime
    // the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |at: usize| fields.get(at).and_then(|field| field.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The server child process; killed when dropped.
struct ServerProcess {
    child: Option<Child>,
    _stdin: ChildStdin,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the server on `port` (0: any), and waits until it listens.
    fn start(port: u16) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("own executable"))
            .env(ROLE_ENV, "server")
            .env(PORT_ENV, port.to_string())
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
            child: Some(child),
            _stdin: stdin,
            addr,
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The server process: greets each connection, answers pings, reads until the end; exits when its stdin
/// closes.
fn server() {
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let port: u16 = std::env::var(PORT_ENV)
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(0);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("bind");
    socket.listen(BACKLOG).expect("listen");
    let listener = Async::new(TcpListener::from(socket)).expect("a non-blocking listener");
    let addr = listener.get_ref().local_addr().expect("local address");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{addr}")
        .and_then(|()| stdout.flush())
        .expect("stdout");
    let executor = smol::LocalExecutor::new();
    async_io::block_on(executor.run(async {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => executor.spawn(serve(tcp)).detach(),
                Err(error) => eprintln!("[scale server] accept failed: {error}"),
            }
        }
    }))
}

async fn serve(tcp: Async<TcpStream>) {
    let _ = tcp.get_ref().set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let Ok(mut ws) = async_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    if ws.send(Message::text(GREETING)).await.is_err() {
        return;
    }
    // Reading answers pings.
    while let Some(Ok(_)) = ws.next().await {}
}
