//! Network faults injected by a loopback TCP proxy (tests/support/proxy.rs) between the client and a real
//! server: connections cut at random (RST and FIN), a half-open path caught by the heartbeat, a server that
//! refuses for a while, and one that accepts and drops at once (DESIGN contracts 3, 5, 6 and 8).
//!
//! Everything runs on real time with async-io's timer, so the tests in this file take a lock and run one at a
//! time: timing bounds and the CPU measurement of one test must not be disturbed by another. Figures are
//! printed; see them with `cargo test --test faults -- --nocapture`.

#[path = "../support/lockstep.rs"]
mod lockstep;
#[path = "../support/proxy.rs"]
mod proxy;
#[path = "../support/server.rs"]
mod server;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures::future::{select, Either};
use futures::{SinkExt, StreamExt};
use proxy::{Cut, Direction, Proxy};
use stream_tungstenite::extension::{HeartbeatLayer, HeartbeatTimeout};
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::{ExponentialBackoff, Jitter, RetryContext, RetryPolicy};
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::{connect, Event, ReconnectingStream};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One test at a time (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every event with the instant it was observed.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<(Instant, Event)>>>);

impl Timeline {
    fn observer(&self) -> impl FnMut(&Event) + Send + 'static {
        let log = Arc::clone(&self.0);
        move |event: &Event| log.lock().unwrap().push((Instant::now(), event.clone()))
    }

    fn events(&self) -> Vec<(Instant, Event)> {
        self.0.lock().unwrap().clone()
    }

    fn delays(&self) -> Vec<Duration> {
        self.events()
            .into_iter()
            .filter_map(|(_, event)| match event {
                Event::RetryScheduled { delay, .. } => Some(delay),
                _ => None,
            })
            .collect()
    }

    fn count(&self, pick: impl Fn(&Event) -> bool) -> usize {
        self.events().iter().filter(|(_, event)| pick(event)).count()
    }
}

/// The delays `policy` gives for failures 1..=n.
fn policy_delays(mut policy: impl RetryPolicy, n: usize) -> Vec<Duration> {
    (1..=n as u32)
        .map(|failures| policy.next_delay(&RetryContext::new(failures, Duration::ZERO)).unwrap())
        .collect()
}

/// CPU time (user + system) this process has used, in clock ticks (USER_HZ, 100 a second on Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after "pid (comm) ": the first is field 3 (state); utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

const TICK: Duration = Duration::from_millis(10);

/// Threads of this process whose name starts with "proxy-".
fn proxy_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("proxy-"))
        .count()
}

// ---- The proxy itself --------------------------------------------------------------------------------------

/// A raw TCP echo server on a thread per connection.
fn tcp_echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = tcp.read(&mut buf) {
                    if tcp.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn dial(proxy: &Proxy) -> TcpStream {
    let tcp = TcpStream::connect(proxy.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    tcp
}

fn echo_once(tcp: &mut TcpStream, data: &[u8]) {
    tcp.write_all(data).unwrap();
    let mut buf = vec![0u8; data.len()];
    tcp.read_exact(&mut buf).unwrap();
    assert_eq!(buf, data);
}

/// The proxy forwards, counts, stalls and resumes, cuts with RST and FIN, refuses, and leaves no thread behind.
#[test]
fn proxy_forwards_stalls_cuts_and_refuses() {
    let _serial = serial();
    let proxy = Proxy::start(tcp_echo());

    let mut a = dial(&proxy);
    echo_once(&mut a, b"hello");
    assert_eq!((proxy.bytes_to_server(), proxy.bytes_to_client()), (5, 5));

    // Stalled towards the server: nothing comes back while stalled, everything once resumed.
    assert_eq!(proxy.stall(Direction::ToServer), 1);
    a.write_all(b"held").unwrap();
    a.set_read_timeout(Some(ms(200))).unwrap();
    let mut buf = [0u8; 4];
    let error = a.read(&mut buf).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{error}"
    );
    assert_eq!(proxy.bytes_to_server(), 5);
    // A link made during the stall is not stalled.
    let mut b = dial(&proxy);
    echo_once(&mut b, b"fresh");
    proxy.resume();
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"held");

    // RST reaches the client as a reset, FIN as end of stream.
    assert_eq!(proxy.cut_all(Cut::Rst), 2);
    let error = a.read(&mut buf).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    let mut c = dial(&proxy);
    echo_once(&mut c, b"again");
    assert_eq!(proxy.cut_all(Cut::Fin), 1);
    assert_eq!(c.read(&mut buf).unwrap(), 0);

    // Refusing: a new connection is reset before any byte passes.
    proxy.refuse_for(Duration::from_secs(5));
    let mut d = dial(&proxy);
    let _ = d.write_all(b"x");
    assert!(matches!(d.read(&mut buf), Ok(0) | Err(_)));
    assert_eq!(proxy.refused(), 1);
    assert_eq!((proxy.accepted(), proxy.forwarded()), (4, 3));

    drop(proxy);
    assert_eq!(proxy_threads(), 0, "proxy threads left after drop");
}

// ---- a. Flapping ---------------------------------------------------------------------------------------------

/// Cuts wanted; fewer if they do not fit in [`CUT_BUDGET`].
const TARGET_CUTS: usize = 200;
const CUT_BUDGET: Duration = Duration::from_secs(10);
const BATCH: u32 = 50;

#[derive(Debug, Default)]
struct CutStats {
    cuts: usize,
    /// Cuts that found at least one live link.
    hits: usize,
    rst: usize,
    fin: usize,
}

/// Waits for each new connection, lets it live 0–15 ms, then cuts every link, alternating RST and FIN, until
/// [`TARGET_CUTS`] or [`CUT_BUDGET`]; then sets `done`.
fn cut_loop(proxy: &Proxy, generation: &AtomicU64, done: &AtomicBool) -> Result<CutStats, String> {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let start = Instant::now();
    let mut stats = CutStats::default();
    let mut last = 0;
    let result = loop {
        if stats.cuts >= TARGET_CUTS || start.elapsed() >= CUT_BUDGET {
            break Ok(stats);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let now = generation.load(Ordering::SeqCst);
            if now > last {
                last = now;
                break;
            }
            if Instant::now() > deadline {
                done.store(true, Ordering::SeqCst);
                return Err(format!(
                    "no new connection within 3 s after cut {} (generation {now})",
                    stats.cuts
                ));
            }
            std::thread::sleep(ms(1));
        }
        std::thread::sleep(ms(rng.u64(0..=15)));
        let cut = if stats.cuts % 2 == 0 { Cut::Rst } else { Cut::Fin };
        if proxy.cut_all(cut) > 0 {
            stats.hits += 1;
        }
        stats.cuts += 1;
        match cut {
            Cut::Rst => stats.rst += 1,
            Cut::Fin => stats.fin += 1,
        }
    };
    done.store(true, Ordering::SeqCst);
    result
}

/// An echo server behind the proxy; a thread cuts every connection at random moments while the client runs
/// numbered lockstep exchanges (a number is resent when the generation changes while its echo is awaited).
/// Every batch must come back complete and in order, and every cut must cost exactly one reconnection.
#[test]
fn flapping_connection_keeps_order_and_loses_nothing() {
    let _serial = serial();
    let server = server::echo_server(None);
    let proxy = Proxy::start(server.addr);
    let url = proxy.url();
    let timeline = Timeline::default();
    let (observer, mut connected) = lockstep::connected_channel();
    let generation = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&generation);
    let mut ws = ReconnectingStream::new(move || connect(url.clone()))
        .with_retry(ExponentialBackoff::new(ms(1), ms(10)).seed(1))
        .with_observer(observer)
        .with_observer(timeline.observer())
        .with_observer(move |event: &Event| {
            if let Event::Connected { generation, .. } = event {
                seen.store(*generation, Ordering::SeqCst);
            }
        });
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let (stats, numbers, resent) = std::thread::scope(|scope| {
        let cutter = scope.spawn(|| cut_loop(&proxy, &generation, &done));
        let (mut numbers, mut resent) = (0, 0);
        async_io::block_on(async {
            while !done.load(Ordering::SeqCst) {
                let exchange = lockstep::echo_numbers(&mut ws, |w| w.generation(), &mut connected, BATCH, "flap").await;
                assert_eq!(
                    exchange.echoed,
                    (0..BATCH).collect::<Vec<_>>(),
                    "batch {}",
                    numbers / BATCH
                );
                numbers += BATCH;
                resent += exchange.resent;
            }
        });
        (cutter.join().unwrap(), numbers, resent)
    });
    let stats = stats.unwrap();
    let elapsed = start.elapsed();
    let disconnects = timeline.count(|e| matches!(e, Event::Disconnected { .. }));
    println!(
        "flapping: {} cuts ({} RST, {} FIN, {} on a live link) in {elapsed:?}; {numbers} numbers echoed in order, \
         {resent} resent; generation {}; {disconnects} disconnects; proxy accepted {}",
        stats.cuts,
        stats.rst,
        stats.fin,
        stats.hits,
        ws.generation(),
        proxy.accepted()
    );
    assert!(stats.cuts >= 50, "only {} cuts fitted in {CUT_BUDGET:?}", stats.cuts);
    assert_eq!(
        stats.hits, stats.cuts,
        "every cut was made on an established connection"
    );
    // Each cut ends exactly one connection and the client makes exactly one new one for it.
    assert_eq!(disconnects, stats.cuts);
    assert_eq!(ws.generation(), stats.cuts as u64 + 1);
    assert!(proxy.forwarded() >= ws.generation() as usize);
}

// ---- b. Half-open stall ----------------------------------------------------------------------------------------

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(300);
/// Scheduling slack on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(400);

/// The proxy stalls both directions of a live connection without closing anything (half-open). The heartbeat
/// must declare it dead within interval + timeout, the client must reconnect through the proxy (new links are
/// not stalled), and the echo must work again, the number lost in the stalled path resent.
#[test]
fn half_open_connection_is_detected_by_heartbeat() {
    let _serial = serial();
    let server = server::echo_server(None);
    let proxy = Proxy::start(server.addr);
    let url = proxy.url();
    let timeline = Timeline::default();
    let (observer, mut connected) = lockstep::connected_channel();
    let connector = ConnectorBuilder::new(move || connect(url.clone())).layer(HeartbeatLayer::new(INTERVAL, TIMEOUT));
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector)
        .with_retry(ExponentialBackoff::new(ms(20), ms(200)).jitter(Jitter::None))
        .with_observer(observer)
        .with_observer(timeline.observer());

    let stall_at = async_io::block_on(async {
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        // Idle but read for over three intervals: the pings are answered (their pongs surface as items) and
        // the connection stays.
        let mut pongs = 0;
        let mut idle = Timer::after(ms(1000));
        while let Either::Left((item, _)) = select(ws.next(), &mut idle).await {
            match item {
                Some(Ok(Message::Pong(_))) => pongs += 1,
                other => panic!("while idle: {other:?}"),
            }
        }
        assert!(pongs >= 2, "{pongs} pongs in 1 s with a {INTERVAL:?} interval");
        assert_eq!(ws.generation(), 1);
        assert_eq!(timeline.count(|e| matches!(e, Event::Disconnected { .. })), 0);
        assert!(proxy.bytes_to_server() > 0 && proxy.bytes_to_client() > 0);

        assert_eq!(proxy.stall(Direction::Both), 1);
        let stall_at = Instant::now();
        let exchange = lockstep::echo_numbers(&mut ws, |w| w.generation(), &mut connected, 5, "stall").await;
        assert_eq!(exchange.echoed, (0..5).collect::<Vec<_>>());
        assert_eq!(
            exchange.resent, 1,
            "the number sent into the stalled path is resent once"
        );
        stall_at
    });
    assert_eq!(ws.generation(), 2);
    // The stalled link is still open at the proxy: the client got no FIN or RST, only silence.
    assert_eq!(proxy.live(), 2);

    let events = timeline.events();
    let connected_at = events
        .iter()
        .find_map(|(at, e)| matches!(e, Event::Connected { generation: 1, .. }).then_some(*at))
        .unwrap();
    let (detected_at, uptime, reason) = events
        .iter()
        .find_map(|(at, e)| match e {
            Event::Disconnected {
                generation: 1,
                uptime,
                reason,
            } => Some((*at, *uptime, reason.clone())),
            _ => None,
        })
        .expect("a Disconnected event for generation 1");
    let heartbeat = reason
        .downcast_ref::<HeartbeatTimeout>()
        .unwrap_or_else(|| panic!("disconnect reason is not a HeartbeatTimeout: {reason:?}"));
    assert_eq!(heartbeat.timeout, TIMEOUT);
    let detection = detected_at - stall_at;
    // The same figure from the event alone: the connection's uptime minus its age when the stall began.
    let from_uptime = uptime.saturating_sub(stall_at - connected_at);
    println!(
        "half-open: detected {detection:?} after the stall (uptime - age at stall = {from_uptime:?}); \
         bound interval + timeout = {:?}",
        INTERVAL + TIMEOUT
    );
    assert!(detection <= INTERVAL + TIMEOUT + MARGIN, "detected after {detection:?}");
    assert!(
        from_uptime <= INTERVAL + TIMEOUT + MARGIN,
        "uptime says {from_uptime:?}"
    );
    assert!(
        from_uptime.abs_diff(detection) < ms(50),
        "{from_uptime:?} vs {detection:?}"
    );

    // Resuming flushes the held bytes into a path the client has abandoned; the new connection is unaffected.
    proxy.resume();
    async_io::block_on(async {
        ws.send(Message::text("after")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after"));
    });
    assert_eq!(ws.generation(), 2);
    drop(ws);
    drop(proxy);
    assert_eq!(proxy_threads(), 0, "proxy threads left after drop");
}

// ---- c. Refused, then available ------------------------------------------------------------------------------

/// How long the proxy refuses. (The scenario this models says 5 s; 2 s keeps CI fast and still covers the
/// capped part of the backoff.)
const REFUSE: Duration = Duration::from_secs(2);

/// The proxy resets every connection for 2 s, then forwards. The retry delays must follow the policy exactly
/// (no jitter), the client must get through within one capped backoff step of the proxy opening, and waiting
/// must cost little CPU (timers, not a busy loop).
#[test]
fn refused_then_available_follows_backoff_without_spinning() {
    let _serial = serial();
    let server = server::echo_server(None);
    let proxy = Proxy::start(server.addr);
    let url = proxy.url();
    let timeline = Timeline::default();
    let policy = ExponentialBackoff::new(ms(50), ms(400)).jitter(Jitter::None);
    let mut ws = ReconnectingStream::new(move || connect(url.clone()))
        .with_retry(policy.clone())
        .with_observer(timeline.observer());

    let cpu_before = cpu_ticks();
    let start = Instant::now();
    let opens_at = proxy.refuse_for(REFUSE);
    async_io::block_on(async {
        // `send` completes once the message is flushed to a connection: it drives the retries.
        ws.send(Message::text("first")).await.unwrap();
    });
    let cpu = TICK * (cpu_ticks() - cpu_before) as u32;
    let events = timeline.events();
    let connected_at = events
        .iter()
        .find_map(|(at, e)| matches!(e, Event::Connected { .. }).then_some(*at))
        .unwrap();
    let waited = connected_at - start;
    async_io::block_on(async {
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("first"));
    });

    let delays = timeline.delays();
    let late = connected_at.saturating_duration_since(opens_at);
    println!(
        "refused: {} refused attempts, delays {:?} ms; connected {late:?} after the proxy opened \
         ({waited:?} after start); CPU {cpu:?} = {:.1}% of the wait",
        proxy.refused(),
        delays.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        100.0 * cpu.as_secs_f64() / waited.as_secs_f64()
    );
    assert!(delays.len() >= 5, "{delays:?}");
    assert_eq!(
        delays,
        policy_delays(policy, delays.len()),
        "delays follow 50, 100, 200, 400, 400..."
    );
    assert_eq!(
        proxy.refused(),
        delays.len(),
        "each failed attempt is one refused connection"
    );
    assert_eq!(proxy.forwarded(), 1);
    assert!(connected_at >= opens_at, "connected while the proxy was refusing");
    assert!(late <= ms(400) + ms(200), "connected {late:?} after the proxy opened");
    assert!(
        cpu.as_secs_f64() < 0.2 * waited.as_secs_f64(),
        "{cpu:?} of CPU over {waited:?}"
    );
    assert_eq!(ws.generation(), 1);
}

// ---- d. Accept, then close -----------------------------------------------------------------------------------

const WINDOW: Duration = Duration::from_secs(2);

/// A server completes the WebSocket upgrade and drops the connection at once. Each such connection dies before
/// `stable_after`, so it counts as a failed attempt and the backoff keeps growing: over 2 s the server sees no
/// more connections than the policy's delays allow, instead of one every 20 ms.
#[test]
fn accept_then_close_backs_off_instead_of_hammering() {
    let _serial = serial();
    let server = server::serve(|tcp, _, _| async move {
        let _ = async_tungstenite::accept_async(tcp).await;
    });
    let url = server.url();
    let timeline = Timeline::default();
    let policy = ExponentialBackoff::new(ms(20), Duration::from_secs(1)).jitter(Jitter::None);
    let mut ws = ReconnectingStream::new(move || connect(url.clone()))
        .with_retry(policy.clone())
        .with_stable_after(Duration::from_secs(5))
        .with_observer(timeline.observer());

    async_io::block_on(async {
        let outcome = select(ws.next(), Timer::after(WINDOW)).await;
        assert!(matches!(outcome, Either::Right(_)), "the stream yielded something");
    });
    let accepted = server.accepted();
    // The first attempt is immediate; each later one follows a delay. Count the delays that fit in the window.
    let mut allowed = 1;
    let mut total = Duration::ZERO;
    for delay in policy_delays(policy.clone(), 20) {
        total += delay;
        if total > WINDOW {
            break;
        }
        allowed += 1;
    }
    let delays = timeline.delays();
    let connects = timeline.count(|e| matches!(e, Event::Connected { .. }));
    let disconnects = timeline.count(|e| matches!(e, Event::Disconnected { .. }));
    println!(
        "accept-then-close: {accepted} connections in {WINDOW:?} (policy allows {allowed}); delays {:?} ms; \
         {connects} connected, {disconnects} disconnected",
        delays.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    assert!(accepted <= allowed, "{accepted} connections, policy allows {allowed}");
    assert!(
        accepted + 1 >= allowed,
        "only {accepted} connections: the client stopped retrying?"
    );
    assert_eq!(delays, policy_delays(policy, delays.len()), "the backoff never reset");
    // Every connection completed the upgrade: this is the flap path (connected, then lost), not a connect error.
    assert_eq!(connects, accepted);
    assert!(disconnects + 1 >= connects);
}
