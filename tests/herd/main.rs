//! The thundering herd: 1,000 clients lose their connections at the same instant and reconnect. With backoff
//! jitter the reconnections spread out; without it they arrive together. This file measures by how much.
//!
//! The setup, all in this file and all light: a WebSocket echo server and a TCP proxy in front of it whose
//! links and connections are tasks on one executor thread, with one accept thread each, listening with a
//! backlog of 4,096. (The fault proxy of tests/support/proxy.rs spends two threads per link, 2,000 threads
//! each waking 20 times a second for this herd, and listens with std's backlog of 128. Tried here, it made the
//! first connections take 1.2 s instead of 0.3 s, the drops take up to 160 ms to be seen instead of 30 ms,
//! and part of an unjittered herd overflow the backlog and come back a SYN retransmission (1 s) late.) The
//! proxy stamps each connection the moment `accept` returns on its own thread, so the stamps do not wait for
//! the executor. The clients are
//! [`ReconnectingStream`]s over [`connect`] (ws:// through the proxy), every one of them a task on one
//! `LocalExecutor` on the test thread.
//!
//! A run: every client connects and exchanges one echo; the proxy then resets every link at once (RST); every
//! client reconnects, its first retry delay coming from `ExponentialBackoff::new(2 s, 10 s)` seeded per
//! client, and exchanges another echo on the new connection. Every client must reconnect exactly once (one
//! accept each, generation 2). The figure is the peak rate of new connections at the proxy after the cut: the
//! most accepts within any 100 ms (a window sliding from each accept), scaled to per second: the figure that
//! is asserted. The peak over 1 s windows is printed too; capped by the herd's size at 1,000/s and spanning
//! half the jitter range, it shows the burst less (about 520/s with jitter against 1,000/s without).
//!
//! Two runs with the same policy except for jitter, [`Jitter::Full`] (uniform in [0, 2 s]) and
//! [`Jitter::None`]: the jittered peak must be at most half the unjittered one. Without jitter every client
//! waits exactly 2 s, so no reconnection may come sooner than that after the cut.
//!
//! Measured in a debug build on 2 cores: without jitter the whole herd comes back within about 90 ms on a
//! quiet machine (10,000 conn/s over 100 ms) and within 175-600 ms on a loaded one (the clients' one thread
//! dials and upgrades them one after the other: 7,300 down to 2,900 conn/s); with full jitter over 2 s the peak
//! is about 700 conn/s. Why 2 s: over 500 ms, full jitter still peaks at about 2,200 conn/s, which a loaded
//! machine's unjittered herd does not reach twice over.
//!
//! The whole test takes 5-7 s, so it runs by default; it needs about 4,500 open files (it raises its soft
//! limit, and says so if the hard limit is lower). Figures are printed: `cargo test --test herd -- --nocapture`.

#[path = "../support/mod.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_io::Async;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures::future::{select, Either};
use futures::{SinkExt, StreamExt};
use smol::{Executor, LocalExecutor};
use stream_tungstenite::retry::{ExponentialBackoff, Jitter};
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::{connect, Event, ReconnectingStream};

/// The first retry delay (before jitter).
const INITIAL: Duration = Duration::from_secs(2);
const MAX: Duration = Duration::from_secs(10);
/// The listen backlog of the proxy and the server: room for the whole herd at once.
const BACKLOG: i32 = 4096;
/// The bound on each phase of a run.
const PHASE_LIMIT: Duration = Duration::from_secs(60);
const SHORT_WINDOW: Duration = Duration::from_millis(100);
const LONG_WINDOW: Duration = Duration::from_secs(1);

/// A count that tasks can wait on.
#[derive(Default)]
struct Counter {
    count: AtomicUsize,
    changed: event_listener::Event,
}

impl Counter {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.changed.notify(usize::MAX);
    }

    fn get(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Completes once the count is at least `n`.
    async fn reach(&self, n: usize) {
        loop {
            if self.get() >= n {
                return;
            }
            let listener = self.changed.listen();
            if self.get() >= n {
                return;
            }
            listener.await;
        }
    }
}

/// `127.0.0.1:0` with a backlog of [`BACKLOG`].
fn listen() -> TcpListener {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into()).unwrap();
    socket.listen(BACKLOG).unwrap();
    socket.into()
}

/// Accepts on a thread of its own until `stop` is set, handing each connection (and the instant `accept`
/// returned) to `on_accept`.
fn accept_thread(
    name: &str,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    mut on_accept: impl FnMut(TcpStream, Instant) + Send + 'static,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for tcp in listener.incoming() {
                let at = Instant::now();
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(tcp) = tcp {
                    on_accept(tcp, at);
                }
            }
        })
        .unwrap()
}

/// A WebSocket echo connection, with a small read buffer (a thousand of them at tungstenite's default
/// 128 KiB, zero-filled, would cost 128 MB).
async fn echo(tcp: TcpStream) {
    let Ok(tcp) = Async::new(tcp) else { return };
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(mut ws) = async_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

/// What the proxy's accept thread and its link tasks share.
#[derive(Default)]
struct Links {
    /// When each connection was accepted.
    accepts: Mutex<Vec<Instant>>,
    /// Links whose task is running.
    live: AtomicUsize,
    /// Bumped by each cut; a link is cut by every bump after its accept.
    cuts: AtomicU64,
    cut: event_listener::Event,
}

impl Links {
    /// Completes once a cut is made after `epoch`.
    async fn cut_after(&self, epoch: u64) {
        loop {
            if self.cuts.load(Ordering::SeqCst) > epoch {
                return;
            }
            let listener = self.cut.listen();
            if self.cuts.load(Ordering::SeqCst) > epoch {
                return;
            }
            listener.await;
        }
    }
}

/// Decrements the live count when a link task ends, however it ends.
struct LiveGuard(Arc<Links>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One proxied connection: copies both ways until one end closes (then both sockets close) or a cut (then
/// both are reset).
async fn link(client: TcpStream, target: SocketAddr, links: Arc<Links>, epoch: u64) {
    let _live = LiveGuard(Arc::clone(&links));
    let Ok(client) = Async::new(client) else { return };
    let Ok(server) = Async::<TcpStream>::connect(target).await else {
        return;
    };
    for tcp in [client.get_ref(), server.get_ref()] {
        let _ = tcp.set_nodelay(true);
    }
    let (mut to_server, mut to_client) = (&server, &client);
    let up = pin!(futures::io::copy(&client, &mut to_server));
    let down = pin!(futures::io::copy(&server, &mut to_client));
    let cut = pin!(links.cut_after(epoch));
    if let Either::Right(_) = select(select(up, down), cut).await {
        for tcp in [client.get_ref(), server.get_ref()] {
            let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
        }
    }
    // Both sockets close here: with a reset after a cut.
}

/// The echo server and the proxy: tasks on one executor thread, and an accept thread each.
struct Infra {
    proxy: SocketAddr,
    links: Arc<Links>,
    stop: Arc<AtomicBool>,
    stopped: Arc<Counter>,
    threads: Vec<JoinHandle<()>>,
    accept_addrs: Vec<SocketAddr>,
}

impl Infra {
    fn start() -> Self {
        let executor = Arc::new(Executor::new());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(Counter::default());
        let links = Arc::new(Links::default());
        let mut threads = Vec::new();

        let server = listen();
        let server_addr = server.local_addr().unwrap();
        let spawner = Arc::clone(&executor);
        threads.push(accept_thread(
            "herd-server",
            server,
            Arc::clone(&stop),
            move |tcp, _| {
                spawner.spawn(echo(tcp)).detach();
            },
        ));

        let proxy = listen();
        let proxy_addr = proxy.local_addr().unwrap();
        let (spawner, shared) = (Arc::clone(&executor), Arc::clone(&links));
        threads.push(accept_thread("herd-proxy", proxy, Arc::clone(&stop), move |tcp, at| {
            shared.accepts.lock().unwrap().push(at);
            shared.live.fetch_add(1, Ordering::SeqCst);
            let epoch = shared.cuts.load(Ordering::SeqCst);
            spawner
                .spawn(link(tcp, server_addr, Arc::clone(&shared), epoch))
                .detach();
        }));

        let until = Arc::clone(&stopped);
        threads.push(
            std::thread::Builder::new()
                .name("herd-executor".into())
                .spawn(move || async_io::block_on(executor.run(until.reach(1))))
                .unwrap(),
        );
        Self {
            proxy: proxy_addr,
            links,
            stop,
            stopped,
            threads,
            accept_addrs: vec![server_addr, proxy_addr],
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.proxy)
    }

    /// Resets every live link at once; returns how many were live.
    fn cut_all(&self) -> usize {
        let live = self.links.live.load(Ordering::SeqCst);
        self.links.cuts.fetch_add(1, Ordering::SeqCst);
        self.links.cut.notify(usize::MAX);
        live
    }

    fn live(&self) -> usize {
        self.links.live.load(Ordering::SeqCst)
    }

    fn accept_times(&self) -> Vec<Instant> {
        self.links.accepts.lock().unwrap().clone()
    }
}

impl Drop for Infra {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake each accept thread: it sees the flag and returns.
        for addr in &self.accept_addrs {
            let _ = TcpStream::connect(addr);
        }
        // Stop the executor thread; dropping the executor drops every task, closing their sockets.
        self.stopped.add();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What the clients report.
#[derive(Default)]
struct Herd {
    /// Connections made, by generation.
    first: Counter,
    second: Counter,
    later: Counter,
    /// Clients that completed their first echo.
    echoed: Counter,
    /// Set once every client has reconnected: each exchanges one more echo.
    go: Counter,
    /// When each client saw its connection drop.
    disconnects: Mutex<Vec<Instant>>,
}

/// The next item must be the echo of `text`.
async fn expect_echo<S>(ws: &mut S, text: &str) -> Result<(), String>
where
    S: futures::Stream<Item = Result<Message, stream_tungstenite::Error>> + Unpin,
{
    match ws.next().await {
        Some(Ok(Message::Text(echo))) if echo.as_str() == text => Ok(()),
        other => Err(format!("expected the echo of {text}, got {other:?}")),
    }
}

/// One client: connect and echo, idle (reading) through the cut and the reconnection, then echo again.
async fn client(id: usize, url: String, policy: ExponentialBackoff, herd: Arc<Herd>) -> Result<(), String> {
    let observed = Arc::clone(&herd);
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(move || connect(url.clone()))
        .with_retry(policy)
        .with_observer(move |event: &Event| match event {
            Event::Connected { generation: 1, .. } => observed.first.add(),
            Event::Connected { generation: 2, .. } => observed.second.add(),
            Event::Connected { .. } => observed.later.add(),
            Event::Disconnected { .. } => observed.disconnects.lock().unwrap().push(Instant::now()),
            _ => {}
        });
    let text = id.to_string();
    let fail = |what: &str, error: String| format!("client {id}: {what}: {error}");
    ws.send(Message::text(text.clone()))
        .await
        .map_err(|e| fail("first send", e.to_string()))?;
    expect_echo(&mut ws, &text).await.map_err(|e| fail("first echo", e))?;
    herd.echoed.add();
    // Transient failures are not items: nothing may come until the go.
    if let Either::Left((item, _)) = select(ws.next(), pin!(herd.go.reach(1))).await {
        return Err(fail("while idle", format!("{item:?}")));
    }
    if ws.generation() != 2 {
        return Err(fail("generation", ws.generation().to_string()));
    }
    ws.send(Message::text(text.clone()))
        .await
        .map_err(|e| fail("second send", e.to_string()))?;
    expect_echo(&mut ws, &text).await.map_err(|e| fail("second echo", e))
}

/// The most `times` (sorted) that fall within any `window` starting at one of them.
fn peak(times: &[Instant], window: Duration) -> usize {
    let mut end = 0;
    let mut best = 0;
    for (start, at) in times.iter().enumerate() {
        while end < times.len() && times[end] < *at + window {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}

/// One run's figures.
#[derive(Debug)]
struct Figures {
    /// Peak accepts in a [`SHORT_WINDOW`], and that as connections per second.
    short_peak: usize,
    short_rate: f64,
    long_rate: f64,
    /// The first and the last reconnection, after the cut.
    first: Duration,
    last: Duration,
}

/// Connects `clients` clients with `jitter`, cuts them all, waits for every one to reconnect and echo again.
fn run(clients: usize, jitter: Jitter) -> Figures {
    let started = Instant::now();
    let infra = Infra::start();
    let herd = Arc::new(Herd::default());
    let local = LocalExecutor::new();
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            let policy = ExponentialBackoff::new(INITIAL, MAX)
                .with_jitter(jitter)
                .with_seed(id as u64);
            local.spawn(client(id, infra.url(), policy, Arc::clone(&herd)))
        })
        .collect();
    let (connected, cut_at, reconnected) = async_io::block_on(local.run(async {
        support::within(PHASE_LIMIT, herd.echoed.reach(clients))
            .await
            .expect("all connected");
        let connected = started.elapsed();
        assert_eq!(infra.live(), clients, "one live link per client");
        let cut_at = Instant::now();
        assert_eq!(infra.cut_all(), clients);
        support::within(PHASE_LIMIT, herd.second.reach(clients))
            .await
            .expect("all reconnected");
        let reconnected = cut_at.elapsed();
        herd.go.add();
        for task in tasks {
            if let Err(error) = support::within(PHASE_LIMIT, task).await.expect("the second echo") {
                panic!("{error}");
            }
        }
        (connected, cut_at, reconnected)
    }));
    assert_eq!(herd.first.get(), clients);
    assert_eq!(herd.second.get(), clients);
    assert_eq!(herd.later.get(), 0, "a client reconnected more than once");
    let mut after: Vec<Instant> = infra.accept_times().into_iter().filter(|at| *at >= cut_at).collect();
    after.sort();
    assert_eq!(after.len(), clients, "one new connection per client, no failed attempt");
    let mut disconnects = herd.disconnects.lock().unwrap().clone();
    assert_eq!(disconnects.len(), clients);
    disconnects.sort();
    let detected_first = (disconnects[0] - cut_at).as_millis();
    let detected_last = (disconnects[clients - 1] - cut_at).as_millis();
    let short_peak = peak(&after, SHORT_WINDOW);
    let figures = Figures {
        short_peak,
        short_rate: short_peak as f64 / SHORT_WINDOW.as_secs_f64(),
        long_rate: peak(&after, LONG_WINDOW) as f64 / LONG_WINDOW.as_secs_f64(),
        first: after[0] - cut_at,
        last: after[clients - 1] - cut_at,
    };
    drop(infra);
    println!(
        "herd: {clients} clients, jitter {jitter:?}, initial {INITIAL:?}: connected in {connected:.2?}; after the \
         cut: drops seen +{detected_first}..{detected_last} ms, reconnections +{}..{} ms (all up after \
         {reconnected:.2?}); peak {:.0} conn/s over 100 ms windows ({} in one), {:.0} conn/s over 1 s windows; run \
         {:.1?}",
        figures.first.as_millis(),
        figures.last.as_millis(),
        figures.short_rate,
        figures.short_peak,
        figures.long_rate,
        started.elapsed()
    );
    figures
}

/// Both runs, and what they must show.
fn herd(clients: usize) {
    // Four sockets per client (the client's, the proxy's two, the server's), and some to spare. The soft limit
    // is often 1,024: raise it as far as the hard limit allows.
    let needed = 4 * clients as u64 + 512;
    let limit = rlimit::increase_nofile_limit(needed).unwrap_or(0);
    assert!(
        limit >= needed,
        "the herd needs {needed} open files and the hard limit allows {limit}: raise it (`ulimit -Hn {needed}`)"
    );
    let jittered = run(clients, Jitter::Full);
    let unjittered = run(clients, Jitter::None);
    // Without jitter nobody comes back sooner than the initial delay.
    assert!(unjittered.first >= INITIAL, "{unjittered:?}");
    // Full jitter spreads the first retry over [0, INITIAL]: the reconnections span most of it.
    assert!(jittered.last - jittered.first >= INITIAL / 2, "{jittered:?}");
    assert!(
        jittered.short_rate <= unjittered.short_rate / 2.0,
        "jitter did not halve the peak: {:.0} conn/s with jitter, {:.0} without",
        jittered.short_rate,
        unjittered.short_rate
    );
}

#[test]
fn herd_of_1000_reconnects_spread_by_jitter() {
    herd(1000);
}
