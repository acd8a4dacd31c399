//! Network faults injected by a loopback TCP proxy (tests/support/proxy.rs) between the client and a real
//! server: connections cut at random (RST and FIN), a half-open path caught by the heartbeat, a server that
//! refuses for a while, one that accepts and drops at once, a path with 100 ms of latency each way, a path
//! throttled to 32 kB/s, and frames truncated mid-way before a cut, both in lockstep (nothing lost end to end)
//! and in a stream (nothing accepted skipped, a repeat only where a send had not completed): the contracts
//! "nothing accepted is lost", "ordering" and "flap-aware backoff" of `ReconnectingStream`'s docs, and the
//! heartbeat's "half-open detected within interval + timeout".
//!
//! Everything runs on real time with async-io's timer, so the tests in this file take a lock and run one at a
//! time: timing bounds and the CPU measurement of one test must not be disturbed by another. Figures are
//! printed; see them with `cargo test --test faults -- --nocapture`.

#[path = "../support/mod.rs"]
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures::future::{select, Either};
use futures::{SinkExt, StreamExt};
use stream_tungstenite::extension::{Heartbeat, LivenessTimeout};
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::{ExponentialBackoff, Jitter, RetryContext, RetryPolicy};
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::{connect, Event, ReconnectingStream};
use support::proxy::{Cut, Direction, Proxy};
use support::serial::{ms, serial};
use support::{lockstep, server};

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
    let count = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("proxy-"))
            .count()
    };
    // A joined thread's task can linger in /proc for a moment after `join` returns (the kernel wakes the
    // joiner before it releases the task), and nothing signals its release: look again for up to 1 s.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = count();
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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
        .with_retry(ExponentialBackoff::new(ms(1), ms(10)).with_seed(1))
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
        support::block_on(async {
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
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .hook(Heartbeat::new(INTERVAL, TIMEOUT))
        .build();
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector)
        .with_retry(ExponentialBackoff::new(ms(20), ms(200)).with_jitter(Jitter::None))
        .with_observer(observer)
        .with_observer(timeline.observer());

    let stall_at = support::block_on(async {
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        // Idle but read for over three intervals: the pings are answered, their pongs (not items) keep the
        // connection alive, and nothing else comes.
        let to_client = proxy.bytes_to_client();
        let idle = select(ws.next(), Timer::after(ms(1000))).await;
        assert!(matches!(idle, Either::Right(_)), "nothing comes while idle");
        assert!(
            proxy.bytes_to_client() >= to_client + 2 * 30,
            "at least two pongs came back in 1 s with a {INTERVAL:?} interval"
        );
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
        .downcast_ref::<LivenessTimeout>()
        .unwrap_or_else(|| panic!("disconnect reason is not a LivenessTimeout: {reason:?}"));
    assert_eq!(heartbeat.after, TIMEOUT);
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
    support::block_on(async {
        ws.send(Message::text("after")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after"));
    });
    assert_eq!(ws.generation(), 2);
    drop(ws);
    drop(proxy);
    assert_eq!(proxy_threads(), 0, "proxy threads left after drop");
}

// ---- c. Refused, then available ------------------------------------------------------------------------------

/// How long the proxy refuses: 5 s, as the scenario says.
const REFUSE: Duration = Duration::from_secs(5);

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
    let policy = ExponentialBackoff::new(ms(50), ms(400)).with_jitter(Jitter::None);
    let mut ws = ReconnectingStream::new(move || connect(url.clone()))
        .with_retry(policy.clone())
        .with_observer(timeline.observer());

    let cpu_before = cpu_ticks();
    let start = Instant::now();
    let opens_at = proxy.refuse_for(REFUSE);
    support::block_on(async {
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
    support::block_on(async {
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
    let policy = ExponentialBackoff::new(ms(20), Duration::from_secs(1)).with_jitter(Jitter::None);
    let mut ws = ReconnectingStream::new(move || connect(url.clone()))
        .with_retry(policy.clone())
        .with_stable_after(Duration::from_secs(5))
        .with_observer(timeline.observer());

    support::block_on(async {
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

/// With the default policy, a server that completes the upgrade and drops at once without any traffic gets at
/// most 15 connections in 5 s: connections that carried nothing still count as failed attempts.
#[test]
fn accept_then_close_with_the_default_policy_gets_at_most_15_connections_in_5s() {
    let _serial = serial();
    let server = server::serve(|tcp, _, _| async move {
        let _ = async_tungstenite::accept_async(tcp).await;
    });
    let url = server.url();
    let mut ws = ReconnectingStream::new(move || connect(url.clone()));
    let window = Duration::from_secs(5);
    support::block_on(async {
        let outcome = select(ws.next(), Timer::after(window)).await;
        assert!(matches!(outcome, Either::Right(_)), "the stream yielded something");
    });
    let accepted = server.accepted();
    println!("accept-then-close, default policy: {accepted} connections in {window:?}");
    assert!(accepted <= 15, "{accepted} connections in {window:?}");
    assert!(
        accepted >= 3,
        "only {accepted} connections: the client stopped retrying?"
    );
}

/// An echo server that aborts each connection (RST) right after its `every`-th echo: it works, and it drops.
fn aborting_echo_server(every: usize) -> server::Server {
    server::serve(move |tcp, _, _| async move {
        // Linger 0: the drop below sends RST, not FIN.
        let _ = socket2::SockRef::from(tcp.get_ref()).set_linger(Some(Duration::ZERO));
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        let mut echoed = 0;
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() && ws.send(message).await.is_ok() {
                echoed += 1;
                if echoed == every {
                    return;
                }
            }
        }
    })
}

/// What [`productive_drops`] measured.
struct Flapping {
    elapsed: Duration,
    answered: usize,
    longest_delay: Duration,
    connections: usize,
}

/// The application of the hardening issue: 200 times, send one numbered message and wait up to `wait` for its
/// echo, over `ReconnectingStream` with the default policy, against [`aborting_echo_server`]`(5)`.
fn productive_drops(wait: Duration, limit: Duration) -> Flapping {
    let server = aborting_echo_server(5);
    let url = server.url();
    let timeline = Timeline::default();
    let mut ws = ReconnectingStream::new(move || connect(url.clone())).with_observer(timeline.observer());
    let started = Instant::now();
    let answered = support::block_on_within(limit, "200 steps against a server that aborts every 5", async {
        let mut answered = 0;
        for step in 0..200_u32 {
            ws.send(numbered(step)).await.unwrap();
            let echo = async {
                loop {
                    match ws.next().await {
                        Some(Ok(message)) if number(&message) == Some(step) => return,
                        Some(Ok(_)) => {}
                        other => panic!("the stream ended: {other:?}"),
                    }
                }
            };
            if support::within(wait, echo).await.is_ok() {
                answered += 1;
            }
        }
        answered
    });
    Flapping {
        elapsed: started.elapsed(),
        answered,
        longest_delay: timeline.delays().into_iter().max().unwrap_or_default(),
        connections: server.accepted(),
    }
}

/// The hardening issue's scenario as it states it: 200 times, send one message and wait up to 2 s for its echo,
/// against a server that aborts every 5 messages, with the default policy: done within 90 s. Connections that
/// carried messages both ways before they dropped are not failed attempts, so the backoff starts over after
/// each and never grows. (Before, each such connection lived milliseconds, under `stable_after`, every drop
/// counted as a failed attempt and the delay climbed to its 30 s cap: it never finished in 300 s.)
#[test]
fn productive_connections_that_drop_do_not_grow_the_backoff() {
    let _serial = serial();
    let run = productive_drops(Duration::from_secs(2), Duration::from_secs(90));
    println!(
        "productive drops: 200 steps in {:?}, {} answered, {} connections, longest delay {:?}",
        run.elapsed, run.answered, run.connections, run.longest_delay
    );
    assert!(
        run.connections >= 30,
        "{} connections: the server did not abort?",
        run.connections
    );
    assert!(
        run.longest_delay <= ms(200),
        "the delay grew to {:?} (the default starts at 100 ms)",
        run.longest_delay
    );
    assert!(run.elapsed <= Duration::from_secs(90), "{:?}", run.elapsed);
}

// ---- The proxy's latency, throttle and truncation ------------------------------------------------------------

/// Reads until `tcp` has delivered `n` bytes or ended; returns what came.
fn read_up_to(tcp: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < n {
        match tcp.read(&mut buf[..(n - got.len()).min(4096)]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    got
}

/// The proxy adds latency to each chunk once per direction (chunks pipelined), holds a link to its bandwidth
/// cap, forwards exactly the armed number of bytes before a truncation cut, and records when it accepted.
#[test]
fn proxy_delays_throttles_and_truncates() {
    let _serial = serial();
    let before = Instant::now();
    let proxy = Proxy::start(tcp_echo());

    // Delay: 80 ms each way, so a round trip takes at least 160 ms. Two chunks written 40 ms apart each come
    // back one round trip after they were sent: the second is not forwarded early along with the first, nor
    // held for a second delay behind it.
    proxy.set_delay(Direction::Both, ms(80));
    let mut a = dial(&proxy);
    let start = Instant::now();
    echo_once(&mut a, b"slow");
    let rtt = start.elapsed();
    let start = Instant::now();
    a.write_all(b"one").unwrap();
    std::thread::sleep(ms(40));
    a.write_all(b"two").unwrap();
    assert_eq!(read_up_to(&mut a, 3), b"one");
    let one = start.elapsed();
    assert_eq!(read_up_to(&mut a, 3), b"two");
    let two = start.elapsed();
    println!("proxy delay: 80 ms each way; round trip {rtt:?}; chunks sent at 0 and 40 ms back at {one:?} and {two:?}");
    assert!(rtt >= ms(160), "round trip {rtt:?}");
    assert!(one >= ms(160), "{one:?}");
    assert!(two >= ms(40 + 160), "{two:?}");
    assert!(
        two < ms(40 + 160 + 160),
        "the second chunk waited for a second delay: {two:?}"
    );
    proxy.set_delay(Direction::Both, Duration::ZERO);
    echo_once(&mut a, b"fast again");

    // Throttle towards the client: 40 000 B/s, so 20 000 bytes take at least ~0.5 s (less one 20 ms slice).
    const RATE: u64 = 40_000;
    proxy.set_rate(Direction::ToClient, Some(RATE));
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    let sent_to_client = proxy.bytes_to_client();
    a.write_all(&data).unwrap();
    assert_eq!(read_up_to(&mut a, data.len()), data);
    let took = start.elapsed();
    let slice = RATE as f64 * 0.020;
    let floor = (data.len() as f64 - slice) / RATE as f64;
    println!(
        "proxy throttle: {} bytes in {took:?} at a cap of {RATE} B/s ({:.0} B/s)",
        data.len(),
        data.len() as f64 / took.as_secs_f64()
    );
    assert!(took.as_secs_f64() >= floor, "{took:?} < {floor} s");
    assert_eq!(proxy.bytes_to_client() - sent_to_client, data.len() as u64);
    proxy.set_rate(Direction::ToClient, None);

    // Truncation towards the client with a FIN: exactly 3 bytes of the next 5, then end of stream.
    assert_eq!(proxy.truncate(Direction::ToClient, 3, Cut::Fin), 1);
    a.write_all(b"hello").unwrap();
    assert_eq!(read_up_to(&mut a, 5), b"hel");
    assert_eq!(
        a.read(&mut [0u8; 8]).unwrap(),
        0,
        "end of stream after the truncated bytes"
    );
    assert_eq!(proxy.truncated(), 1);

    // Truncation towards the server with a RST: 2 bytes reach the server, the client gets a reset.
    let mut b = dial(&proxy);
    echo_once(&mut b, b"ok");
    let sent_to_server = proxy.bytes_to_server();
    assert_eq!(proxy.truncate(Direction::ToServer, 2, Cut::Rst), 1);
    b.write_all(b"abcdef").unwrap();
    let error = b.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    assert_eq!(proxy.bytes_to_server() - sent_to_server, 2);
    assert_eq!(proxy.truncated(), 2);
    // No live link is left to arm.
    assert_eq!(proxy.truncate(Direction::Both, 0, Cut::Fin), 0);

    let times = proxy.accept_times();
    assert_eq!(times.len(), proxy.accepted());
    assert_eq!(times.len(), 2);
    assert!(before <= times[0] && times[0] <= times[1] && times[1] <= Instant::now());
    drop(proxy);
    assert_eq!(proxy_threads(), 0, "proxy threads left after drop");
}

// ---- e. Delayed path ------------------------------------------------------------------------------------------

/// Added each way: a round trip costs at least twice this.
const LATENCY: Duration = Duration::from_millis(100);

/// `n` as a fixed-width text message, so that every frame of a test has the same length.
fn numbered(n: u32) -> Message {
    Message::text(format!("{n:06}"))
}

/// The number in an echoed message; `None` for anything that is not text (pongs).
fn number(message: &Message) -> Option<u32> {
    match message {
        Message::Text(text) => Some(text.parse().unwrap_or_else(|_| panic!("not a number: {text:?}"))),
        _ => None,
    }
}

/// The next echoed number (pongs skipped); panics if the stream ends or fails.
async fn next_number<S>(ws: &mut S) -> u32
where
    S: futures::Stream<Item = Result<Message, stream_tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(message)) => {
                if let Some(n) = number(&message) {
                    return n;
                }
            }
            other => panic!("stream ended: {other:?}"),
        }
    }
}

/// 100 ms added each way, with a heartbeat whose timeout is 2.5 round trips. Connecting takes at least one
/// round trip (the upgrade), each lockstep echo at least one and not much more, and a pipelined burst of 200
/// messages well under two: the delay is paid once, not per message. Nothing is lost or reordered, the
/// heartbeat never fires and the client never reconnects.
#[test]
fn delayed_path_keeps_working_without_reconnects() {
    let _serial = serial();
    let server = server::echo_server(None);
    let proxy = Proxy::start(server.addr);
    proxy.set_delay(Direction::Both, LATENCY);
    let url = proxy.url();
    let timeline = Timeline::default();
    let rtt = 2 * LATENCY;
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .hook(Heartbeat::new(ms(300), rtt * 5 / 2))
        .build();
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector)
        .with_retry(ExponentialBackoff::new(ms(20), ms(200)))
        .with_observer(timeline.observer());

    const LOCKSTEP: u32 = 5;
    const BURST: u32 = 200;
    let start = Instant::now();
    let (rtts, burst) = support::block_on(async {
        let mut rtts = Vec::new();
        for n in 0..LOCKSTEP {
            let sent = Instant::now();
            ws.send(numbered(n)).await.unwrap();
            assert_eq!(next_number(&mut ws).await, n);
            rtts.push(sent.elapsed());
        }
        let sent = Instant::now();
        for n in LOCKSTEP..LOCKSTEP + BURST {
            ws.feed(numbered(n)).await.unwrap();
        }
        ws.flush().await.unwrap();
        for n in LOCKSTEP..LOCKSTEP + BURST {
            assert_eq!(next_number(&mut ws).await, n, "echoes in order");
        }
        (rtts, sent.elapsed())
    });
    let events = timeline.events();
    let connected_at = events
        .iter()
        .find_map(|(at, e)| matches!(e, Event::Connected { .. }).then_some(*at))
        .unwrap();
    let connect_time = connected_at - start;
    println!(
        "delayed: {LATENCY:?} each way; connected after {connect_time:?}; lockstep round trips {:?} ms \
         (the first includes connecting); a burst of {BURST} echoed in {burst:?}",
        rtts.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    assert!(connect_time >= rtt, "the upgrade took {connect_time:?}");
    assert!(rtts[0] >= 2 * rtt, "connect + first echo took {:?}", rtts[0]);
    for (n, took) in rtts.iter().enumerate().skip(1) {
        assert!(*took >= rtt, "echo {n} took {took:?}");
        assert!(*took < rtt + ms(300), "echo {n} took {took:?}");
    }
    assert!(burst >= rtt, "{burst:?}");
    assert!(
        burst < 2 * rtt + ms(200),
        "the burst took {burst:?}: latency paid per message?"
    );
    assert_eq!(ws.generation(), 1);
    assert_eq!(timeline.count(|e| matches!(e, Event::Disconnected { .. })), 0);
    assert_eq!(proxy.accepted(), 1);
}

// ---- f. Throttled path ----------------------------------------------------------------------------------------

/// The cap each way, in bytes per second.
const RATE: u64 = 32_000;
/// Messages of [`PADDED`] bytes: 106 bytes a frame to the server (masked), 102 back.
const THROTTLED: u32 = 300;
const PADDED: usize = 100;

/// `n` padded with spaces to [`PADDED`] bytes.
fn padded(n: u32) -> Message {
    Message::text(format!("{n:<PADDED$}"))
}

/// Both directions capped at 32 000 B/s; 300 messages of 100 bytes are sent pipelined (about 32 KB each way,
/// so at least ~1 s). They all come back, in order; the bytes the proxy forwarded to the client while they
/// arrived respect the cap (within one 20 ms slice at each end of the window), the whole exchange takes at
/// least as long as the cap implies, and the slow path causes no reconnect.
#[test]
fn throttled_path_respects_the_cap_and_keeps_order() {
    let _serial = serial();
    let server = server::echo_server(None);
    let proxy = Proxy::start(server.addr);
    proxy.set_rate(Direction::Both, Some(RATE));
    let url = proxy.url();
    let timeline = Timeline::default();
    let ws: ReconnectingStream<_, Message> = ReconnectingStream::new(move || connect(url.clone()))
        .with_retry(ExponentialBackoff::new(ms(20), ms(200)))
        .with_observer(timeline.observer());
    let (mut tx, mut rx) = ws.split();

    let start = Instant::now();
    let (first, last, echoed) = support::block_on(async {
        let send = async {
            for n in 0..THROTTLED {
                tx.feed(padded(n)).await.unwrap();
            }
            tx.flush().await.unwrap();
        };
        let receive = async {
            let mut echoed = Vec::new();
            // (instant, bytes the proxy had forwarded to the client) at the first and the last echo.
            let (mut first, mut last) = (None, None);
            while echoed.len() < THROTTLED as usize {
                match rx.next().await {
                    Some(Ok(Message::Text(text))) => echoed.push(text.trim_end().parse::<u32>().unwrap()),
                    other => panic!("{other:?}"),
                }
                let mark = (Instant::now(), proxy.bytes_to_client());
                first.get_or_insert(mark);
                last = Some(mark);
            }
            (first.unwrap(), last.unwrap(), echoed)
        };
        futures::join!(send, receive).1
    });
    let elapsed = start.elapsed();
    let window = (last.0 - first.0).as_secs_f64();
    let bytes = last.1 - first.1;
    let slice = RATE as f64 * 0.020;
    let to_server = proxy.bytes_to_server();
    println!(
        "throttled: cap {RATE} B/s each way; {THROTTLED} messages ({to_server} bytes to the server, {} to the \
         client) in {elapsed:?}; to the client {bytes} bytes in {window:.3} s = {:.0} B/s",
        proxy.bytes_to_client(),
        bytes as f64 / window
    );
    assert_eq!(
        echoed,
        (0..THROTTLED).collect::<Vec<_>>(),
        "every message back, in order"
    );
    assert!(
        (bytes as f64) <= RATE as f64 * window + 2.0 * slice,
        "{bytes} bytes in {window} s exceed the cap"
    );
    // Only the first slice of the upgrade request goes out unpaced.
    let floor = (to_server as f64 - slice) / RATE as f64;
    assert!(
        elapsed.as_secs_f64() >= floor,
        "{elapsed:?}, the cap implies at least {floor:.3} s"
    );
    let ws = tx.reunite(rx).unwrap();
    assert_eq!(ws.generation(), 1);
    assert_eq!(timeline.count(|e| matches!(e, Event::Disconnected { .. })), 0);
}

// ---- g. Truncated frames ---------------------------------------------------------------------------------------

/// An echo server that logs `"<connection index> <number>"` for every text message before echoing it.
fn logging_echo_server() -> server::Server {
    server::serve(|tcp, index, log| async move {
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = &message {
                log.lock().unwrap().push(format!("{index} {}", text.trim_end()));
                if ws.send(message).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// The numbers each connection received, by connection (accept order = generation order).
fn runs(log: &[String]) -> Vec<Vec<u32>> {
    let mut runs: Vec<Vec<u32>> = Vec::new();
    for line in log {
        let (index, n) = line.split_once(' ').unwrap();
        let index: usize = index.parse().unwrap();
        if runs.len() <= index {
            runs.resize(index + 1, Vec::new());
        }
        runs[index].push(n.parse().unwrap());
    }
    runs
}

/// Whether `run` counts up by one.
fn consecutive(run: &[u32]) -> bool {
    run.windows(2).all(|pair| pair[1] == pair[0] + 1)
}

/// The innermost error under a failure, as text.
fn root_cause(failure: &stream_tungstenite::Failure) -> String {
    let Some(mut error) = failure.source_error().map(|e| e as &dyn std::error::Error) else {
        return failure.to_string();
    };
    while let Some(source) = error.source() {
        error = source;
    }
    error.to_string()
}

/// [`lockstep::echo_numbers`] over `range`, with fixed-width numbers: sends each number, waits for its echo,
/// and sends it again if the connection changed meanwhile. Returns the echoes (in a row, duplicates collapsed)
/// and how many numbers were resent.
async fn echo_range<W>(
    ws: &mut W,
    generation: impl Fn(&W) -> u64,
    connected: &mut futures::channel::mpsc::UnboundedReceiver<u64>,
    range: std::ops::Range<u32>,
) -> (Vec<u32>, usize)
where
    W: futures::Stream<Item = Result<Message, stream_tungstenite::Error>>
        + futures::Sink<Message, Error = stream_tungstenite::Error>
        + Unpin,
{
    let (mut echoed, mut resent) = (Vec::<u32>::new(), 0);
    for n in range {
        ws.send(numbered(n)).await.unwrap();
        let mut sent_on = generation(ws);
        loop {
            match select(ws.next(), connected.next()).await {
                Either::Left((Some(Ok(message)), _)) => {
                    let Some(echo) = number(&message) else { continue };
                    assert!(echo <= n, "echo {echo} from the future (waiting for {n})");
                    if echoed.last() != Some(&echo) {
                        echoed.push(echo);
                    }
                    if echo == n {
                        break;
                    }
                }
                Either::Left((other, _)) => panic!("stream ended: {other:?}"),
                Either::Right((Some(new), _)) if new > sent_on => {
                    ws.send(numbered(n)).await.unwrap();
                    sent_on = generation(ws);
                    resent += 1;
                }
                Either::Right(_) => {}
            }
        }
    }
    (echoed, resent)
}

const TRUNCATIONS: u32 = 40;
const PER_ROUND: u32 = 10;
/// A server frame of [`numbered`]: 2 header bytes and 6 of payload; a client frame adds a 4-byte mask.
const SERVER_FRAME: usize = 8;
const CLIENT_FRAME: usize = 12;

/// Lockstep numbered echoes; before each round of 10 the proxy arms a truncation on the live link, so the very
/// next frame (the client's number, or the server's echo of it) is cut 1 to len-1 bytes in, then the link is
/// ended (alternately towards the client and the server, with FIN and RST). Each truncation must cost exactly
/// one reconnection reported as a read failure, no partial frame may surface as an item, and every number must
/// reach the server and come back in order. On the server, each connection receives a consecutive run; the
/// next starts with the cut number again where the server had it (its echo was truncated) and after it
/// where it had not (its own frame was truncated): the only repeat is the number whose exchange was cut.
#[test]
fn truncated_frames_reconnect_and_lose_nothing() {
    let _serial = serial();
    let server = logging_echo_server();
    let proxy = Proxy::start(server.addr);
    let url = proxy.url();
    let timeline = Timeline::default();
    let (observer, mut connected) = lockstep::connected_channel();
    let mut ws = ReconnectingStream::new(move || connect(url.clone()))
        .with_retry(ExponentialBackoff::new(ms(1), ms(10)).with_seed(1))
        .with_observer(observer)
        .with_observer(timeline.observer());
    let mut rng = fastrand::Rng::with_seed(7);
    let start = Instant::now();
    let mut echoed = Vec::new();
    let mut resent = 0;
    let mut plan = Vec::new();
    support::block_on(async {
        // A first round to connect.
        let (echoes, again) = echo_range(&mut ws, |w| w.generation(), &mut connected, 0..PER_ROUND).await;
        echoed.extend(echoes);
        resent += again;
        for round in 0..TRUNCATIONS {
            let direction = if round % 2 == 0 {
                Direction::ToClient
            } else {
                Direction::ToServer
            };
            let cut = if round % 4 < 2 { Cut::Fin } else { Cut::Rst };
            let frame = if direction == Direction::ToClient {
                SERVER_FRAME
            } else {
                CLIENT_FRAME
            };
            let keep = rng.usize(1..frame);
            // The path is quiet in lockstep: the next bytes in `direction` are the next number's frame.
            assert_eq!(proxy.truncate(direction, keep, cut), 1, "round {round}");
            plan.push((direction, cut, keep));
            let first = (round + 1) * PER_ROUND;
            let generation = ws.generation();
            let (echoes, again) =
                echo_range(&mut ws, |w| w.generation(), &mut connected, first..first + PER_ROUND).await;
            assert_eq!(ws.generation(), generation + 1, "round {round}: one reconnection");
            assert_eq!(again, 1, "round {round}: the cut number is resent once");
            echoed.extend(echoes);
            resent += again;
        }
    });
    let elapsed = start.elapsed();
    let total = (TRUNCATIONS + 1) * PER_ROUND;
    let reasons: Vec<String> = timeline
        .events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Disconnected { reason, .. } => Some(reason),
            _ => None,
        })
        .map(|reason| {
            assert!(matches!(reason, stream_tungstenite::Failure::Read { .. }), "{reason:?}");
            root_cause(&reason)
        })
        .collect();
    let mut kinds = reasons.clone();
    kinds.sort();
    kinds.dedup();
    let runs = runs(&server.log());
    let repeats = runs
        .windows(2)
        .filter(|pair| pair[0].last().is_some() && pair[0].last() == pair[1].first())
        .count();
    println!(
        "truncated frames: {TRUNCATIONS} truncations in {elapsed:?}; {total} numbers echoed in order, {resent} \
         resent; generation {}; {} disconnects ({kinds:?}); {} server connections, {repeats} numbers received twice",
        ws.generation(),
        reasons.len(),
        runs.len()
    );
    assert_eq!(echoed, (0..total).collect::<Vec<_>>());
    assert_eq!(proxy.truncated(), TRUNCATIONS as usize);
    assert_eq!(reasons.len(), TRUNCATIONS as usize);
    assert_eq!(ws.generation(), u64::from(TRUNCATIONS) + 1);
    assert_eq!(runs.len(), TRUNCATIONS as usize + 1);
    assert_eq!(runs[0].first(), Some(&0));
    assert_eq!(runs[TRUNCATIONS as usize].last(), Some(&(total - 1)));
    for (index, run) in runs.iter().enumerate() {
        assert!(consecutive(run), "connection {index} received {run:?}");
    }
    for (round, ((direction, cut, keep), pair)) in plan.iter().zip(runs.windows(2)).enumerate() {
        let cut_number = (round as u32 + 1) * PER_ROUND;
        let (before, after) = (&pair[0], &pair[1]);
        assert_eq!(
            after.first(),
            Some(&cut_number),
            "round {round} ({direction:?} {cut:?} after {keep} bytes)"
        );
        let expected_last = if *direction == Direction::ToClient {
            cut_number
        } else {
            cut_number - 1
        };
        assert_eq!(
            before.last(),
            Some(&expected_last),
            "round {round} ({direction:?} {cut:?} after {keep} bytes)"
        );
    }
    assert_eq!(repeats, TRUNCATIONS as usize / 2);
}

const STREAM_TRUNCATIONS: usize = 30;

/// Numbers streamed through the sink, one `send` at a time (each returns once its flush completed), while the
/// reader takes the echoes; a thread arms a truncation towards the client 2-10 ms into each new connection's
/// life, so the echo stream is cut 1 to 20 bytes further on (inside a frame unless the count happens to end
/// one: the frames are 8 bytes), alternately with FIN and RST. No item may be a partial frame. Checked on the
/// server, connection by connection, against the generation on which each `send` completed: each connection
/// gets a consecutive run starting exactly at the first number whose send had not completed before it
/// (nothing accepted is skipped); a number is received twice only if its send had not completed on the first
/// connection; and what a connection lacks of the numbers flushed to it is a tail lost in flight when the link
/// was cut (TCP promises nothing for bytes in a dying connection; the library promises a completed flush).
#[test]
fn truncated_stream_resends_only_what_was_not_flushed() {
    let _serial = serial();
    let server = logging_echo_server();
    let proxy = Proxy::start(server.addr);
    let url = proxy.url();
    let generation = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&generation);
    let (new_connection, connections) = std::sync::mpsc::channel();
    let timeline = Timeline::default();
    let ws: ReconnectingStream<_, Message> = ReconnectingStream::new(move || connect(url.clone()))
        .with_retry(ExponentialBackoff::new(ms(1), ms(10)).with_seed(2))
        .with_observer(timeline.observer())
        .with_observer(move |event: &Event| {
            if let Event::Connected { generation, .. } = event {
                seen.store(*generation, Ordering::SeqCst);
                let _ = new_connection.send(*generation);
            }
        });
    let (mut tx, mut rx) = ws.split();
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let (truncations, sent_on) = std::thread::scope(|scope| {
        // Arms one truncation per connection, at a random moment 2-10 ms into its life, and finishes once the
        // connection after the last one is up (so every truncation has fired).
        let (proxy, done) = (&proxy, &done);
        let truncator = scope.spawn(move || {
            let mut rng = fastrand::Rng::with_seed(11);
            let mut armed = 0;
            let result = loop {
                let Ok(generation) = connections.recv_timeout(Duration::from_secs(3)) else {
                    break Err(format!("no new connection within 3 s after {armed} truncations"));
                };
                if armed == STREAM_TRUNCATIONS {
                    break Ok(armed);
                }
                std::thread::sleep(ms(rng.u64(2..=10)));
                let cut = if armed % 2 == 0 { Cut::Fin } else { Cut::Rst };
                if proxy.truncate(Direction::ToClient, rng.usize(1..=20), cut) != 1 {
                    break Err(format!("connection {generation} was not live"));
                }
                armed += 1;
            };
            done.store(true, Ordering::SeqCst);
            result
        });
        let sent_on = support::block_on(async {
            // sent_on[n]: the generation on which the send of n completed.
            let mut sent_on = Vec::new();
            let send = async {
                let mut n = 0;
                while !done.load(Ordering::SeqCst) {
                    tx.send(numbered(n)).await.unwrap();
                    sent_on.push(generation.load(Ordering::SeqCst));
                    n += 1;
                    if n % 50 == 0 {
                        // Let the reader in (a send into a free socket never returns Pending).
                        smol::future::yield_now().await;
                    }
                }
            };
            let receive = async {
                while let Some(item) = rx.next().await {
                    match item {
                        // Every item is a whole echo (`number` panics on anything else in a text frame).
                        Ok(message) => drop(number(&message)),
                        Err(error) => panic!("{error}"),
                    }
                }
            };
            // The reader runs until the sender is done (it never ends on its own).
            select(Box::pin(send), Box::pin(receive)).await;
            sent_on
        });
        (truncator.join().unwrap().unwrap(), sent_on)
    });
    // A last exchange on the final connection: once its echo is back, the server has everything before it.
    let mut ws = tx.reunite(rx).unwrap();
    let total = sent_on.len() as u32;
    support::block_on(async {
        ws.send(numbered(total)).await.unwrap();
        while next_number(&mut ws).await != total {}
    });
    let elapsed = start.elapsed();
    let last_generation = ws.generation();
    let runs = runs(&server.log());
    let mut lost = 0;
    let mut repeats = 0;
    for (index, run) in runs.iter().enumerate() {
        let g = index as u64 + 1;
        assert!(consecutive(run), "connection {g} received {run:?}");
        // The first number whose send had not completed before this connection.
        let expected_first = (0..total).find(|&n| sent_on[n as usize] >= g).unwrap_or(total);
        // Numbers whose send completed on this connection.
        let flushed: Vec<u32> = (0..total).filter(|&n| sent_on[n as usize] == g).collect();
        let Some(&first) = run.first() else {
            // Cut before anything arrived: everything flushed to it was lost in flight.
            lost += flushed.len();
            continue;
        };
        assert_eq!(
            first, expected_first,
            "connection {g} starts at the first number not flushed before"
        );
        let last = *run.last().unwrap();
        for n in run.iter().copied().filter(|&n| n < total) {
            assert!(
                sent_on[n as usize] >= g,
                "{n} reached connection {g} but its send completed on {}",
                sent_on[n as usize]
            );
            if sent_on[n as usize] > g {
                repeats += 1;
            }
        }
        // (The run is consecutive: what it lacks lies outside first..=last.)
        let missing: Vec<u32> = flushed
            .iter()
            .copied()
            .filter(|n| !(first..=last).contains(n))
            .collect();
        assert!(
            missing.iter().all(|&n| n > last),
            "connection {g} lacks {missing:?} before its last number {last}"
        );
        lost += missing.len();
    }
    let disconnects = timeline.count(|e| matches!(e, Event::Disconnected { .. }));
    let write_failures = timeline.count(|e| {
        matches!(e, Event::Disconnected { reason, .. } if matches!(reason, stream_tungstenite::Failure::Write { .. }))
    });
    println!(
        "truncated stream: {truncations} truncations in {elapsed:?}; {total} numbers sent over {last_generation} \
         connections; {disconnects} disconnects ({write_failures} found by a write); {repeats} received twice \
         (send not completed), {lost} flushed but lost in flight at a cut"
    );
    assert_eq!(truncations, STREAM_TRUNCATIONS);
    assert_eq!(proxy.truncated(), STREAM_TRUNCATIONS);
    assert_eq!(disconnects, STREAM_TRUNCATIONS);
    assert_eq!(last_generation, STREAM_TRUNCATIONS as u64 + 1);
    assert_eq!(runs.len() as u64, last_generation);
    assert_eq!(
        runs.last().unwrap().last(),
        Some(&total),
        "the final connection got everything"
    );
}
