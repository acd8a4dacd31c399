//! Soak: a client riding out random network faults for a long time, every message accounted for.
//!
//! A `ReconnectingStream` over [`stream_tungstenite::connect`], with a `Heartbeat hook` (so a half-open path is
//! detected) and a fast `ExponentialBackoff`, talks through the loopback fault proxy (tests/support/proxy.rs) to
//! a local echo server that records every number it receives. The client sends a numbered sequence
//! continuously (at most [`WINDOW`] numbers awaiting their echo) and reads the echoes, the two halves of a
//! `split` stream polled side by side. A fault thread injects, at random intervals from a seeded RNG: RST and
//! FIN cuts, half-open stalls (one way or both), refusal periods (a cut, then every new connection reset for a
//! while), truncations (a link forwards a few more bytes, most likely part of a frame, then ends), and slow
//! periods (latency and a bandwidth cap on every link, which the connection should ride out). After each fault
//! the client must deliver again within [`RECOVERY_BOUND`] of the fault's end, on a new connection if the fault
//! ended the old one.
//!
//! Two ledgers:
//! - **The library's contract** ("nothing accepted is lost" and "ordering" in `ReconnectingStream`'s docs),
//!   checked on every write as it happens: the stream's writes to each connection are exactly the accepted
//!   sequence, each connection starting where the previous one's last completed flush ended; at the end, what
//!   no completed flush covered is exactly what `take_unsent` hands back. A second tap on the socket itself,
//!   beneath every layer, sees who wrote each number: in echo mode only the stream may write one.
//! - **End to end.** A number flushed into a socket that is then cut can die on the way (the library promises a
//!   completed flush, not delivery), so something must send it again. A number is *delivered* once the server
//!   has received it, *lost* if it was accepted and neither delivered nor handed back (must be 0),
//!   *duplicated* if the server received it more than once.
//!
//! Two modes decide who sends again (`SOAK_MODE=echo`, the default, or `SOAK_MODE=ack`):
//! - **echo**: the client does what an application does with the generation: when a new connection comes up, it
//!   sends again every number sent before it that has no echo yet.
//! - **ack**: the client never sends anything again; the library's acknowledged sends do
//!   ([`AckLayer`], outermost, right beneath the audit: the echo of `n` is the ack of `n`, the window is
//!   [`WINDOW`], the timeout [`ACK_TIMEOUT`], the attempts unlimited). The reader takes each number's outcome
//!   as its echo passes (`try_outcome`; the echoes are delivered too), so that none is left for `Acks` to
//!   forget. The audit above the layer still sees exactly the stream's calls; the layer's own resends are
//!   written beneath it, and the socket tap checks them instead: on each new connection the first numbers
//!   written are exactly those the layer tracks (accepted, covered by a completed flush, no `Acked` outcome
//!   yet), in order, before any write of the stream's; any other resend (an ack timeout) is of a tracked
//!   number. Checked at the end: every outcome `Acked` (none failed or nacked, none twice), nothing unacked
//!   after the drain, and at most [`WINDOW`] duplicates per connection that ended (a number is delivered twice
//!   only if its ack was lost, and at most the window is in flight when a connection ends).
//!
//! At the end the faults stop, every number gets its echo, then the path is cut and refused and the client sends
//! [`HANDBACK`] more numbers, closes, and must get them back (in ack mode, with whatever the layer still tracks:
//! `take_unacked`). One figure line sums it up:
//! `soak: mode=.. secs=.. seed=.. faults=.. sent=.. delivered=.. handed_back=.. lost=0 duplicated=..
//! reconnects=.. peak_rss_kib=.. panics=0` (panics in any thread are counted by a panic hook; in ack mode also
//! `ended=.. dup_bound=.. acked=..`), with a line of progress every minute before it.
//!
//! `soak_long` is ignored: `SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture` (`SOAK_SECS`
//! defaults to 60; `SOAK_MODE` picks the mode). `soak_short` (echo) and `soak_short_ack` run the same code for
//! 8 s each in the quick suite. `SOAK_SEED` sets the fault schedule's seed (default: random, printed).

#[path = "../support/mod.rs"]
mod support;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::{self, select, Either};
use futures::{Sink, SinkExt, Stream, StreamExt};
use stream_tungstenite::delivery::{Ack, AckLayer, Acks, Outcome};
use stream_tungstenite::extension::Heartbeat;
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::ExponentialBackoff;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::{connect, BoxError, Connect, Error, Event, ReconnectingStream};
use support::proxy::{Cut, Direction, Proxy};
use support::serial::{ms, serial};
use support::server;
use support::within;

/// Numbers awaiting their echo, at most (in ack mode the layer's window too).
const WINDOW: usize = 64;
/// Ack mode: how long a number waits for its echo before the layer sends it again on the same connection.
/// Well above any echo's round trip here: a half-open link is the heartbeat's to detect, long before this.
const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// Numbers sent while the path is refused, just before the close: they must all be handed back.
const HANDBACK: u32 = 16;
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(250);
const BACKOFF_INITIAL: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Healthy time between faults: uniform in this range of milliseconds.
const HEALTHY_MS: std::ops::RangeInclusive<u64> = 20..=1500;
/// How long a refusal period lasts: uniform in this range of milliseconds.
const REFUSE_MS: std::ops::RangeInclusive<u64> = 200..=2000;
/// How many bytes a truncated link still forwards: uniform in this range.
const TRUNCATE_BYTES: std::ops::RangeInclusive<usize> = 0..=200;
/// A slow period: how long (ms), the latency each way (ms; the heartbeat's ping must still come back within
/// its timeout), and the bandwidth cap each way when there is one (bytes per second).
const SLOW_MS: std::ops::RangeInclusive<u64> = 500..=3000;
const DELAY_MS: std::ops::RangeInclusive<u64> = 5..=80;
const RATE: std::ops::RangeInclusive<u64> = 20_000..=500_000;
/// After a fault ends (a cut, the start of a stall, the end of a refusal), an echo must arrive on a new
/// connection within this: heartbeat detection (interval + timeout) plus the largest backoff plus the dial,
/// with a wide margin for a loaded 2-core machine.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
/// Once the faults stop, every outstanding number must be echoed within this.
const DRAIN_BOUND: Duration = Duration::from_secs(30);
/// A sanity bound on the process's peak resident memory.
const PEAK_RSS_BOUND_KIB: u64 = 256 * 1024;

/// Panics in any thread of the process (client, fault thread, proxy pumps, server connections).
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Installs (once) a panic hook that counts every panic, then reports it as usual.
fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            report(info);
        }));
    });
}

/// The process's peak resident set size (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// Who sends again what a cut connection may have lost (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The client, on each new generation, every number without an echo yet.
    Echo,
    /// The [`AckLayer`]: every tracked number without its ack, first on each new connection.
    Ack,
}

impl Mode {
    /// `SOAK_MODE`: `echo` (or unset) or `ack`.
    fn from_env() -> Self {
        match std::env::var("SOAK_MODE").as_deref() {
            Err(_) | Ok("echo") => Self::Echo,
            Ok("ack") => Self::Ack,
            Ok(other) => panic!("SOAK_MODE={other:?} is neither echo nor ack"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Ack => "ack",
        }
    }
}

/// The ack mode's handle to the outcomes: tracked by number, acked by the number's echo.
type Outcomes = Acks<Message, u32>;

fn number(message: &Message) -> Option<u32> {
    match message {
        Message::Text(text) => text.as_str().parse().ok(),
        _ => None,
    }
}

// ---- The server's ledger ------------------------------------------------------------------------------------

/// Every number the server received: a bit per number, and the extra receptions of the few received again.
#[derive(Debug, Default)]
struct Ledger {
    seen: Vec<u64>,
    distinct: u64,
    again: BTreeMap<u32, u32>,
}

impl Ledger {
    fn record(&mut self, n: u32) {
        let (word, bit) = (n as usize / 64, 1u64 << (n % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit == 0 {
            self.seen[word] |= bit;
            self.distinct += 1;
        } else {
            *self.again.entry(n).or_default() += 1;
        }
    }

    fn contains(&self, n: u32) -> bool {
        self.seen
            .get(n as usize / 64)
            .is_some_and(|word| word & (1 << (n % 64)) != 0)
    }
}

/// An echo server that records every number it receives before echoing it.
fn recording_echo_server(ledger: &Arc<Mutex<Ledger>>) -> server::Server {
    let ledger = Arc::clone(ledger);
    server::serve(move |tcp, _, _| {
        let ledger = Arc::clone(&ledger);
        async move {
            let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if let Some(n) = number(&message) {
                    ledger.lock().unwrap().record(n);
                    if ws.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

// ---- The library's ledger -----------------------------------------------------------------------------------

/// Checks the send contract as the stream writes, and who writes what on the socket beneath it (see the
/// module docs). Positions count accepted messages (every send, first or again) from the start of the run.
#[derive(Debug, Default)]
struct Audit {
    /// Accepted messages from position `base` on; the ones before are covered by completed flushes.
    accepted: VecDeque<u32>,
    base: u64,
    /// Where the current connection started.
    start: u64,
    /// Writes to the current connection, and how many of them a completed flush covered.
    written: u64,
    flushed: u64,
    /// The current connection (1 for the first).
    connection: u64,
    checked: u64,
    /// Every violation counted; the first few described.
    violations: u64,
    described: Vec<String>,
    /// Every number accepted so far is below this.
    below: u32,
    /// Ack mode: accepted numbers whose `Acked` outcome the reader has not taken yet.
    unacked: BTreeSet<u32>,
    /// The number the stream is writing (set around its `start_send`): on the socket, a number written while
    /// it is not set was written by a layer beneath the stream.
    passing: Option<u32>,
    /// The current socket (1 for the first), and what the ack layer must write on it first, in order.
    wire: u64,
    resend_first: VecDeque<u32>,
    /// Numbers a layer wrote on the socket: first on a new one (after a reconnect), after an ack timeout, and
    /// on a socket the stream had already given up on.
    resent_first: u64,
    resent_timeout: u64,
    resent_stale: u64,
}

impl Audit {
    fn accept(&mut self, n: u32) {
        self.accepted.push_back(n);
        self.below = self.below.max(n + 1);
    }

    fn violation(&mut self, report: String) {
        self.violations += 1;
        if self.described.len() < 10 {
            self.described.push(report);
        }
    }

    /// A new connection starts where the previous one's last completed flush ended.
    fn new_connection(&mut self) -> u64 {
        self.start += self.flushed;
        self.written = 0;
        self.flushed = 0;
        self.connection += 1;
        self.connection
    }

    fn write(&mut self, connection: u64, n: u32) {
        if connection != self.connection {
            let current = self.connection;
            self.violation(format!(
                "{n} written to connection {connection} while {current} is current"
            ));
            return;
        }
        let position = self.start + self.written;
        let expected = self.accepted.get((position - self.base) as usize).copied();
        if expected != Some(n) {
            self.violation(format!(
                "connection {connection}: write {} is {n}, expected accepted[{position}] = {expected:?}",
                self.written
            ));
        }
        self.written += 1;
        self.checked += 1;
    }

    fn flushed(&mut self, connection: u64) {
        if connection == self.connection {
            self.flushed = self.written;
            while self.base < self.start + self.flushed && self.accepted.pop_front().is_some() {
                self.base += 1;
            }
        }
    }

    /// Accepted and not covered by a completed flush: what must be handed back once the stream has ended.
    fn outstanding(&self) -> Vec<u32> {
        let from = (self.start + self.flushed).saturating_sub(self.base) as usize;
        self.accepted.iter().skip(from).copied().collect()
    }

    /// Ack mode: what the ack layer tracks, oldest first: accepted, covered by a completed flush (the layer
    /// takes a number on when the flush of the connection it was written to completes, and the audit sits
    /// right above the layer, so it sees those flushes), and no `Acked` outcome yet.
    fn tracked(&self) -> Vec<u32> {
        let unflushed: BTreeSet<u32> = self.outstanding().into_iter().collect();
        (self.unacked.iter())
            .filter(|n| !unflushed.contains(n))
            .copied()
            .collect()
    }

    /// A new socket, before the layers above it see its connection: in ack mode, the layer must first write
    /// again everything it tracks.
    fn new_wire(&mut self, mode: Mode) -> u64 {
        self.resend_first = match mode {
            Mode::Echo => VecDeque::new(),
            Mode::Ack => self.tracked().into(),
        };
        self.wire += 1;
        self.wire
    }

    /// `n` written on socket `wire`: by the stream (passing through the layers), or by a layer beneath it.
    fn wire_write(&mut self, wire: u64, n: u32, mode: Mode) {
        let by_stream = self.passing.take() == Some(n);
        if wire != self.wire {
            // A socket the stream has given up on, read to its end: a layer's writes there go nowhere.
            self.resent_stale += u64::from(!by_stream);
            return;
        }
        if let Some(&first) = self.resend_first.front() {
            if by_stream || n != first {
                let due = std::mem::take(&mut self.resend_first);
                let by = if by_stream { "the stream" } else { "the ack layer" };
                self.violation(format!(
                    "socket {wire}: {n} written by {by} while the ack layer's resends {due:?} were due first"
                ));
            } else {
                self.resend_first.pop_front();
                self.resent_first += 1;
            }
            return;
        }
        if by_stream {
            return;
        }
        self.resent_timeout += 1;
        match mode {
            Mode::Echo => self.violation(format!("socket {wire}: {n} written beneath the stream")),
            // After an ack timeout, only what the layer tracks goes out again.
            Mode::Ack => {
                if n >= self.below || self.outstanding().contains(&n) {
                    self.violation(format!(
                        "socket {wire}: the ack layer wrote {n}, which it does not track"
                    ));
                }
            }
        }
    }
}

/// A connection whose numbered writes and completed flushes are checked by an [`Audit`]. It wraps the whole
/// layered connection, so it sees exactly the calls the stream makes (in ack mode, above the ack layer: the
/// layer's resends are not among them, the [`Wire`] tap beneath checks those).
struct Audited<S> {
    inner: S,
    audit: Arc<Mutex<Audit>>,
    connection: u64,
}

impl<S> Audited<S> {
    fn new(inner: S, audit: Arc<Mutex<Audit>>) -> Self {
        let connection = audit.lock().unwrap().new_connection();
        Self {
            inner,
            audit,
            connection,
        }
    }
}

impl<S: Stream + Unpin> Stream for Audited<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<S: Sink<Message> + Unpin> Sink<Message> for Audited<S> {
    type Error = S::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), S::Error> {
        let n = number(&item);
        self.audit.lock().unwrap().passing = n;
        let sent = Pin::new(&mut self.inner).start_send(item);
        let mut audit = self.audit.lock().unwrap();
        audit.passing = None;
        sent?;
        if let Some(n) = n {
            audit.write(self.connection, n);
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let flushed = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        if flushed.is_ok() {
            self.audit.lock().unwrap().flushed(self.connection);
        }
        Poll::Ready(flushed)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // A completed close has flushed everything written before it.
        let closed = ready!(Pin::new(&mut self.inner).poll_close(cx));
        if closed.is_ok() {
            self.audit.lock().unwrap().flushed(self.connection);
        }
        Poll::Ready(closed)
    }
}

/// The socket, beneath every layer: each number written to it goes to [`Audit::wire_write`].
struct Wire<S> {
    inner: S,
    audit: Arc<Mutex<Audit>>,
    wire: u64,
    mode: Mode,
}

impl<S> Wire<S> {
    fn new(inner: S, audit: Arc<Mutex<Audit>>, mode: Mode) -> Self {
        let wire = audit.lock().unwrap().new_wire(mode);
        Self {
            inner,
            audit,
            wire,
            mode,
        }
    }
}

impl<S: Stream + Unpin> Stream for Wire<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<S: Sink<Message> + Unpin> Sink<Message> for Wire<S> {
    type Error = S::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), S::Error> {
        if let Some(n) = number(&item) {
            let (wire, mode) = (self.wire, self.mode);
            self.audit.lock().unwrap().wire_write(wire, n, mode);
        }
        Pin::new(&mut self.inner).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

// ---- Signals between the observer, the reader, the writer and the fault thread --------------------------------

/// What the writer hears about.
#[derive(Debug)]
enum Signal {
    Connected(u64),
    Disconnected(u64),
    /// An echo arrived: the window has room.
    Echo,
}

/// The echoes seen, for the fault thread: the generation of the last one, and how many.
#[derive(Debug, Default)]
struct Progress {
    state: Mutex<(u64, u64)>,
    changed: Condvar,
}

impl Progress {
    fn echo(&self, generation: u64) {
        let mut state = self.state.lock().unwrap();
        *state = (generation, state.1 + 1);
        self.changed.notify_all();
    }

    fn echoes(&self) -> u64 {
        self.state.lock().unwrap().1
    }

    /// Waits until `done(generation of the last echo, echoes)` holds, at most until `deadline`; the instant it
    /// was seen to hold.
    fn wait_until(&self, deadline: Instant, done: impl Fn(u64, u64) -> bool) -> Option<Instant> {
        let mut state = self.state.lock().unwrap();
        loop {
            if done(state.0, state.1) {
                return Some(Instant::now());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
    }
}

// ---- The fault thread ----------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Every live link ends at once.
    Cut(Cut),
    /// The live links stop forwarding (half-open) until the client has moved on.
    Stall(Direction),
    /// Every new connection is reset for this long; the live links are cut.
    Refuse(Duration, Cut),
    /// The live links forward this many more bytes (a partial frame, most likely), then end.
    Truncate(Direction, usize, Cut),
    /// For this long, every link gets this latency each way and, optionally, this bandwidth cap (bytes per
    /// second) each way. The connection should ride it out.
    Slow(Duration, Duration, Option<u64>),
}

#[derive(Debug, Default)]
struct FaultStats {
    rst: usize,
    fin: usize,
    stall: usize,
    refuse: usize,
    truncate: usize,
    slow: usize,
    /// Faults that ended a live link.
    hits: usize,
    /// Slow periods during which the client reconnected (the heartbeat gave up on a slow link).
    slow_reconnects: usize,
    slowest_recovery: Duration,
}

impl FaultStats {
    fn total(&self) -> usize {
        self.rst + self.fin + self.stall + self.refuse + self.truncate + self.slow
    }
}

fn pick_fault(rng: &mut fastrand::Rng) -> Fault {
    let cut = if rng.bool() { Cut::Rst } else { Cut::Fin };
    let direction = *rng
        .choice(&[Direction::ToServer, Direction::ToClient, Direction::Both])
        .unwrap();
    match rng.u8(0..6) {
        0 => Fault::Cut(Cut::Rst),
        1 => Fault::Cut(Cut::Fin),
        2 => Fault::Stall(direction),
        3 => Fault::Refuse(ms(rng.u64(REFUSE_MS)), cut),
        4 => Fault::Truncate(direction, rng.usize(TRUNCATE_BYTES), cut),
        _ => Fault::Slow(
            ms(rng.u64(SLOW_MS)),
            ms(rng.u64(DELAY_MS)),
            rng.bool().then(|| rng.u64(RATE)),
        ),
    }
}

/// Injects faults until `until` (or `abort`): waits a random healthy time, then injects one. After a fault that
/// ends the live links, an echo must arrive on a newer connection within [`RECOVERY_BOUND`] of the fault's end;
/// during a slow period echoes must keep arriving, and after it, within the same bound. A stall is lifted once
/// the client has moved on (the abandoned link then delivers what it held, late).
fn inject_faults(
    proxy: &Proxy,
    progress: &Progress,
    generation: &AtomicU64,
    seed: u64,
    until: Instant,
    abort: &AtomicBool,
) -> Result<FaultStats, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut stats = FaultStats::default();
    let started = Instant::now();
    let mut report_at = started + Duration::from_secs(60);
    if progress
        .wait_until(started + RECOVERY_BOUND, |_, echoes| echoes > 0)
        .is_none()
    {
        return Err(format!("no echo within {RECOVERY_BOUND:?} of the start"));
    }
    while Instant::now() < until && !abort.load(Ordering::SeqCst) {
        // The fault schedule itself: a random healthy time.
        std::thread::sleep(ms(rng.u64(HEALTHY_MS)));
        let before = generation.load(Ordering::SeqCst);
        let fault = pick_fault(&mut rng);
        let (live, ended) = match fault {
            Fault::Cut(cut) => (proxy.cut_all(cut), Instant::now()),
            Fault::Stall(direction) => (proxy.stall(direction), Instant::now()),
            Fault::Refuse(duration, cut) => {
                let ends = proxy.refuse_for(duration);
                (proxy.cut_all(cut), ends)
            }
            Fault::Truncate(direction, bytes, cut) => (proxy.truncate(direction, bytes, cut), Instant::now()),
            Fault::Slow(period, delay, rate) => {
                proxy.set_delay(Direction::Both, delay);
                proxy.set_rate(Direction::Both, rate);
                let echoes = progress.echoes();
                // The period itself is part of the schedule; echoes must have kept coming through it.
                std::thread::sleep(period);
                let during = progress.echoes() - echoes;
                proxy.set_delay(Direction::Both, Duration::ZERO);
                proxy.set_rate(Direction::Both, None);
                if during == 0 {
                    return Err(format!(
                        "fault {} ({fault:?}): no echo during the slow period",
                        stats.total()
                    ));
                }
                if generation.load(Ordering::SeqCst) != before {
                    stats.slow_reconnects += 1;
                }
                (0, Instant::now())
            }
        };
        match fault {
            Fault::Cut(Cut::Rst) => stats.rst += 1,
            Fault::Cut(Cut::Fin) => stats.fin += 1,
            Fault::Stall(_) => stats.stall += 1,
            Fault::Refuse(..) => stats.refuse += 1,
            Fault::Truncate(..) => stats.truncate += 1,
            Fault::Slow(..) => stats.slow += 1,
        }
        if live > 0 {
            stats.hits += 1;
        }
        let echoes = progress.echoes();
        let recovered = progress.wait_until(ended + RECOVERY_BOUND, |last, now| {
            if live > 0 {
                last > before
            } else {
                now > echoes
            }
        });
        if let Fault::Stall(_) = fault {
            proxy.resume();
        }
        let Some(at) = recovered else {
            return Err(format!(
                "fault {} ({fault:?}, {live} live links, generation {before}): no echo{} within {RECOVERY_BOUND:?} \
                 of its end (generation now {})",
                stats.total(),
                if live > 0 { " on a new connection" } else { "" },
                generation.load(Ordering::SeqCst)
            ));
        };
        stats.slowest_recovery = stats.slowest_recovery.max(at.saturating_duration_since(ended));
        if Instant::now() >= report_at {
            report_at += Duration::from_secs(60);
            println!(
                "soak progress: {:?} faults={} echoes={} generation={} slowest_recovery_ms={}",
                started.elapsed(),
                stats.total(),
                progress.echoes(),
                generation.load(Ordering::SeqCst),
                stats.slowest_recovery.as_millis()
            );
        }
    }
    Ok(stats)
}

// ---- The client ------------------------------------------------------------------------------------------------

/// The client's own book, shared by its reader and writer (polled side by side on one thread).
#[derive(Debug, Default)]
struct Book {
    /// Numbers awaiting their echo, with the generation current when they were last sent.
    pending: RefCell<BTreeMap<u32, u64>>,
    /// The next new number: every number below it has been accepted.
    next: Cell<u32>,
    /// Numbers sent again after a new connection came up (echo mode).
    resent: Cell<u64>,
    echoes: Cell<u64>,
    /// Ack mode: `Acked` outcomes taken; echoes that found no outcome for a number without one yet (the echo
    /// came before the layer tracked the number: it is sent again after the ack timeout); outcomes found for a
    /// number that already had one (tracked twice); and every outcome other than `Acked`.
    acked: Cell<u64>,
    early_echoes: Cell<u64>,
    acked_twice: Cell<u64>,
    failed: RefCell<Vec<String>>,
    /// Ack mode: the layer's outcomes.
    outcomes: Option<Outcomes>,
}

/// The writer's context.
struct Writer<'a, W> {
    mode: Mode,
    sink: &'a mut W,
    book: &'a Book,
    audit: &'a Mutex<Audit>,
    generation: &'a AtomicU64,
    signals: &'a mut mpsc::UnboundedReceiver<Signal>,
    /// The newest `Disconnected` generation heard of.
    disconnected: u64,
}

impl<W: Sink<Message, Error = Error> + Unpin> Writer<'_, W> {
    /// Sends `n` (accepted once `feed` returns) and notes it as awaiting its echo.
    async fn feed(&mut self, n: u32) {
        self.sink
            .feed(Message::text(n.to_string()))
            .await
            .expect("the stream never ends while the soak runs");
        {
            let mut audit = self.audit.lock().unwrap();
            audit.accept(n);
            if self.mode == Mode::Ack {
                audit.unacked.insert(n);
            }
        }
        let generation = self.generation.load(Ordering::SeqCst);
        self.book.pending.borrow_mut().insert(n, generation);
    }

    async fn flush(&mut self) {
        self.sink
            .flush()
            .await
            .expect("the stream never ends while the soak runs");
    }

    /// Handles the signals waiting (with `wait`, waits for one first). In echo mode, when a new connection came
    /// up, sends again, in order, every number sent before it that has no echo yet (in ack mode the layer does).
    async fn handle_signals(&mut self, wait: bool) {
        let mut newest = None;
        let mut note = |signal, disconnected: &mut u64| match signal {
            Signal::Connected(generation) => newest = newest.max(Some(generation)),
            Signal::Disconnected(generation) => *disconnected = generation,
            Signal::Echo => {}
        };
        if wait {
            let signal = self
                .signals
                .next()
                .await
                .expect("the observer lives as long as the stream");
            note(signal, &mut self.disconnected);
        }
        while let Ok(signal) = self.signals.try_recv() {
            note(signal, &mut self.disconnected);
        }
        let Some(newest) = newest.filter(|_| self.mode == Mode::Echo) else {
            return;
        };
        let again: Vec<u32> = self
            .book
            .pending
            .borrow()
            .iter()
            .filter(|(_, sent_on)| **sent_on < newest)
            .map(|(n, _)| *n)
            .collect();
        for n in again {
            if self.book.pending.borrow().contains_key(&n) {
                self.feed(n).await;
                self.book.resent.set(self.book.resent.get() + 1);
            }
        }
        self.flush().await;
    }

    /// New numbers until the faults are over; then every echo; then [`HANDBACK`] numbers into a refused path.
    async fn run(&mut self, proxy: &Proxy, faults_over: &AtomicBool) {
        while !faults_over.load(Ordering::SeqCst) {
            self.handle_signals(false).await;
            if self.book.pending.borrow().len() >= WINDOW {
                self.handle_signals(true).await;
                continue;
            }
            let n = self.book.next.get();
            self.book.next.set(n + 1);
            self.feed(n).await;
            self.flush().await;
        }

        let drained = within(DRAIN_BOUND, async {
            while !self.book.pending.borrow().is_empty() {
                self.handle_signals(true).await;
            }
        })
        .await;
        let pending = self.book.pending.borrow().len();
        assert!(
            drained.is_ok(),
            "{pending} numbers still without an echo {DRAIN_BOUND:?} after the faults stopped"
        );
        if let Some(outcomes) = &self.book.outcomes {
            assert_eq!(
                outcomes.unacked(),
                0,
                "every echo came, yet the ack layer still tracks numbers"
            );
        }

        // Cut off for good: these stay queued and must be handed back by the close.
        proxy.refuse_for(Duration::from_secs(3600));
        let cut_generation = self.generation.load(Ordering::SeqCst);
        proxy.cut_all(Cut::Rst);
        let disconnected = within(RECOVERY_BOUND, async {
            while self.disconnected < cut_generation {
                self.handle_signals(true).await;
            }
        })
        .await;
        assert!(disconnected.is_ok(), "the final cut was not noticed");
        for _ in 0..HANDBACK {
            let n = self.book.next.get();
            self.book.next.set(n + 1);
            self.feed(n).await;
        }
        // Hand the last one from the split sink's slot to the stream (it has room: this does not flush).
        future::poll_fn(|cx| Pin::new(&mut *self.sink).poll_ready(cx))
            .await
            .expect("the stream has not ended");
    }
}

/// Reads echoes until `stop`: each one takes its number off the pending list (in ack mode, once its outcome
/// is taken) and shows progress.
async fn read_echoes<R>(
    stream: &mut R,
    book: &Book,
    audit: &Mutex<Audit>,
    generation: &AtomicU64,
    progress: &Progress,
    signals: &mpsc::UnboundedSender<Signal>,
    mut stop: oneshot::Receiver<()>,
) where
    R: Stream<Item = Result<Message, Error>> + Unpin,
{
    loop {
        let item = match select(stream.next(), &mut stop).await {
            Either::Left((item, _)) => item,
            Either::Right(_) => return,
        };
        match item {
            Some(Ok(message)) => {
                let Some(n) = number(&message) else { continue };
                let next = book.next.get();
                assert!(n < next, "echo {n} from the future (next number {next})");
                match &book.outcomes {
                    None => {
                        book.pending.borrow_mut().remove(&n);
                    }
                    Some(outcomes) => take_outcome(book, outcomes, audit, n),
                }
                book.echoes.set(book.echoes.get() + 1);
                progress.echo(generation.load(Ordering::SeqCst));
                let _ = signals.unbounded_send(Signal::Echo);
            }
            Some(Err(error)) => panic!("the stream ended: {error}"),
            None => panic!("the stream ended"),
        }
    }
}

/// Ack mode: the echo of `n` has passed the layer, which resolved `n` if it tracked it: takes the outcome.
fn take_outcome(book: &Book, outcomes: &Outcomes, audit: &Mutex<Audit>, n: u32) {
    let outcome = outcomes.try_outcome(&n);
    let pending = book.pending.borrow().contains_key(&n);
    match outcome {
        // A duplicate's echo.
        None if !pending => return,
        None => {
            book.early_echoes.set(book.early_echoes.get() + 1);
            return;
        }
        Some(_) if !pending => {
            book.acked_twice.set(book.acked_twice.get() + 1);
            return;
        }
        Some(Outcome::Acked) => book.acked.set(book.acked.get() + 1),
        Some(other) => book.failed.borrow_mut().push(format!("{n}: {other:?}")),
    }
    book.pending.borrow_mut().remove(&n);
    audit.lock().unwrap().unacked.remove(&n);
}

// ---- The run -----------------------------------------------------------------------------------------------------

/// Runs the soak for `secs` seconds in `mode` with the fault schedule `seed`, prints the figure line and
/// checks it.
fn soak(secs: u64, seed: u64, mode: Mode) {
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let server = recording_echo_server(&ledger);
    let proxy = Proxy::start(server.addr);
    let url = proxy.url();

    let audit = Arc::new(Mutex::new(Audit::default()));
    let generation = Arc::new(AtomicU64::new(0));
    // Connections that ended (the faults that hit a live link, and any the heartbeat gave up on).
    let ended = Arc::new(AtomicU64::new(0));
    let (signal_tx, mut signal_rx) = mpsc::unbounded();
    let observer = {
        let (generation, ended, signals) = (Arc::clone(&generation), Arc::clone(&ended), signal_tx.clone());
        move |event: &Event| match event {
            Event::Connected { generation: g, .. } => {
                generation.store(*g, Ordering::SeqCst);
                let _ = signals.unbounded_send(Signal::Connected(*g));
            }
            Event::Disconnected { generation: g, .. } => {
                ended.fetch_add(1, Ordering::SeqCst);
                let _ = signals.unbounded_send(Signal::Disconnected(*g));
            }
            _ => {}
        }
    };
    // The socket, tapped beneath every layer.
    let dial = {
        let audit = Arc::clone(&audit);
        move || {
            let attempt = connect(url.clone());
            let audit = Arc::clone(&audit);
            async move { attempt.await.map(|conn| Wire::new(conn, audit, mode)) }
        }
    };
    let heartbeat = Heartbeat::new(HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT);
    // Ack mode: the ack layer added first, so outermost (right beneath the audit). It then takes numbers on at
    // exactly the stream's completed flushes, which the audit sees; the heartbeat's flushes of its pings are
    // beneath it, and it sees the echoes before the heartbeat does.
    let (mut layered, outcomes) = match mode {
        Mode::Echo => (Either::Left(ConnectorBuilder::new(dial).hook(heartbeat).build()), None),
        Mode::Ack => {
            let (layer, outcomes) = AckLayer::new(number, |echo: &Message| number(echo).map(Ack::Ack));
            let layer = (layer.with_window(WINDOW).with_timeout(ACK_TIMEOUT))
                .with_attempts(u32::MAX)
                .deliver_acks(true);
            let layered = ConnectorBuilder::new(dial).layer(layer).hook(heartbeat).build();
            (Either::Right(layered), Some(outcomes))
        }
    };
    let connector = {
        let audit = Arc::clone(&audit);
        move || {
            let attempt = match &mut layered {
                Either::Left(plain) => Either::Left(plain.connect()),
                Either::Right(acked) => Either::Right(acked.connect()),
            };
            let audit = Arc::clone(&audit);
            async move {
                let conn = match attempt {
                    Either::Left(attempt) => Either::Left(attempt.await?),
                    Either::Right(attempt) => Either::Right(attempt.await?),
                };
                Ok::<_, BoxError>(Audited::new(conn, audit))
            }
        }
    };
    let ws = Box::pin(
        ReconnectingStream::<_, Message>::new(connector)
            .with_retry(ExponentialBackoff::new(BACKOFF_INITIAL, BACKOFF_MAX).with_seed(seed))
            .with_stable_after(Duration::from_secs(1))
            .with_connect_timeout(Duration::from_secs(2))
            .with_close_timeout(Duration::from_secs(2))
            .with_observer(observer),
    );
    let (mut sink, mut stream) = ws.split();

    let book = Book {
        outcomes,
        ..Book::default()
    };
    let progress = Progress::default();
    let faults_over = AtomicBool::new(false);
    let abort = AtomicBool::new(false);
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);

    let faults = std::thread::scope(|scope| {
        let injector = scope.spawn(|| {
            let stats = inject_faults(&proxy, &progress, &generation, seed, until, &abort);
            proxy.resume();
            proxy.set_delay(Direction::Both, Duration::ZERO);
            proxy.set_rate(Direction::Both, None);
            faults_over.store(true, Ordering::SeqCst);
            stats
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let mut writer = Writer {
            mode,
            sink: &mut sink,
            book: &book,
            audit: &audit,
            generation: &generation,
            signals: &mut signal_rx,
            disconnected: 0,
        };
        let client = async {
            let reading = read_echoes(&mut stream, &book, &audit, &generation, &progress, &signal_tx, stop_rx);
            let writing = async {
                writer.run(&proxy, &faults_over).await;
                let _ = stop_tx.send(());
            };
            future::join(reading, writing).await;
        };
        let hang_bound = Duration::from_secs(secs) + RECOVERY_BOUND + DRAIN_BOUND + Duration::from_secs(30);
        let finished = async_io::block_on(within(hang_bound, client));
        if finished.is_err() {
            abort.store(true, Ordering::SeqCst);
        }
        let faults = injector.join().expect("the fault thread panicked");
        assert!(finished.is_ok(), "the client hung (seed {seed}; faults: {faults:?})");
        faults
    });
    let faults = faults.unwrap_or_else(|error| panic!("seed {seed}: {error}"));

    let mut ws = sink.reunite(stream).expect("the halves of one stream");
    let closed = async_io::block_on(within(Duration::from_secs(5), ws.close())).expect("close() hung");
    let reported = match closed {
        Ok(()) => 0,
        Err(Error::Closed { unsent }) => unsent,
        Err(other) => panic!("close: {other:?}"),
    };
    let unsent: Vec<u32> = ws.as_mut().take_unsent().iter().filter_map(number).collect();
    // Ack mode: what the layer still tracks is handed back too (nothing, once every echo came).
    let (unacked, failed): (Vec<u32>, Vec<String>) = match &book.outcomes {
        None => (Vec::new(), Vec::new()),
        Some(outcomes) => {
            let failed = outcomes.take_failed().into_iter();
            let mut described = book.failed.take();
            described.extend(failed.map(|(n, outcome)| format!("{n}: {outcome:?}")));
            (outcomes.take_unacked().iter().filter_map(number).collect(), described)
        }
    };
    let elapsed = started.elapsed();
    let reconnects = ws.generation().saturating_sub(1);
    drop(ws);
    drop(proxy);

    let ledger = ledger.lock().unwrap();
    let audit = audit.lock().unwrap();
    let sent = book.next.get();
    let returned: BTreeSet<u32> = unsent.iter().chain(&unacked).copied().collect();
    let handed_back = unsent.len() + unacked.len();
    let lost: Vec<u32> = (0..sent)
        .filter(|n| !ledger.contains(*n) && !returned.contains(n))
        .collect();
    let duplicated = ledger.again.len();
    let ended = ended.load(Ordering::SeqCst);
    let dup_bound = WINDOW as u64 * ended;
    let panics = PANICS.load(Ordering::SeqCst) - panics_before;
    let peak_rss_kib = peak_rss_kib();
    let (resent, ack_figures) = match mode {
        Mode::Echo => (book.resent.get(), String::new()),
        Mode::Ack => (
            audit.resent_first + audit.resent_timeout + audit.resent_stale,
            format!(
                " ended={ended} dup_bound={dup_bound} acked={} failed={} unacked_back={} resent_on_timeout={} \
                 resent_stale={} early_echoes={}",
                book.acked.get(),
                failed.len(),
                unacked.len(),
                audit.resent_timeout,
                audit.resent_stale,
                book.early_echoes.get(),
            ),
        ),
    };
    println!(
        "soak: mode={} secs={secs} seed={seed} faults={} (rst={} fin={} stall={} refuse={} truncate={} slow={}) \
         sent={sent} resent={resent} delivered={} echoes={} handed_back={handed_back} lost={} \
         duplicated={duplicated}{ack_figures} reconnects={reconnects} slow_reconnects={} slowest_recovery_ms={} \
         checked_writes={} contract_violations={} peak_rss_kib={peak_rss_kib} panics={panics} ({elapsed:.1?})",
        mode.name(),
        faults.total(),
        faults.rst,
        faults.fin,
        faults.stall,
        faults.refuse,
        faults.truncate,
        faults.slow,
        ledger.distinct,
        book.echoes.get(),
        lost.len(),
        faults.slow_reconnects,
        faults.slowest_recovery.as_millis(),
        audit.checked,
        audit.violations,
    );

    assert!(failed.is_empty(), "seed {seed}: outcomes other than Acked: {failed:?}");
    assert!(lost.is_empty(), "seed {seed}: lost {:?}", &lost[..lost.len().min(20)]);
    assert_eq!(panics, 0, "seed {seed}: panics");
    assert_eq!(audit.violations, 0, "seed {seed}: {:#?}", audit.described);
    assert_eq!(
        unsent,
        audit.outstanding(),
        "seed {seed}: handed back is not what no completed flush covered"
    );
    assert_eq!(reported, unsent.len(), "seed {seed}: Error::Closed's count");
    let last: Vec<u32> = (sent - HANDBACK..sent).collect();
    assert!(
        unsent.ends_with(&last),
        "seed {seed}: the numbers sent while refused were not handed back: {unsent:?}"
    );
    if mode == Mode::Ack {
        assert_eq!(book.acked_twice.get(), 0, "seed {seed}: numbers acked twice");
        assert_eq!(
            book.acked.get(),
            u64::from(sent - HANDBACK),
            "seed {seed}: every number sent before the hand-back has its Acked outcome"
        );
        assert!(
            duplicated as u64 <= dup_bound,
            "seed {seed}: {duplicated} numbers duplicated, more than {WINDOW} for each of the {ended} connections \
             that ended"
        );
    }
    assert!(
        faults.total() > 0 && faults.hits > 0,
        "seed {seed}: no fault hit a live link"
    );
    assert!(
        reconnects >= faults.hits as u64,
        "seed {seed}: {reconnects} reconnects for {} faults on a live link",
        faults.hits
    );
    assert!(
        peak_rss_kib < PEAK_RSS_BOUND_KIB,
        "seed {seed}: peak RSS {peak_rss_kib} KiB"
    );
}

fn seed() -> u64 {
    env_u64("SOAK_SEED").unwrap_or_else(|| fastrand::u64(..))
}

/// The soak: `SOAK_SECS` seconds (default 60) of random faults in `SOAK_MODE`; see the module docs.
#[test]
#[ignore = "long: SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture"]
fn soak_long() {
    let _serial = serial();
    soak(env_u64("SOAK_SECS").unwrap_or(60), seed(), Mode::from_env());
}

/// The same soak for 8 s in echo mode, in the quick suite.
#[test]
fn soak_short() {
    let _serial = serial();
    soak(8, seed(), Mode::Echo);
}

/// The same soak for 8 s in ack mode, in the quick suite.
#[test]
fn soak_short_ack() {
    let _serial = serial();
    soak(8, seed(), Mode::Ack);
}
