//! What the delivery layers cost, over loopback, in the same run: acknowledged sends ([`AckLayer`], window
//! 1024) against plain sends, and the resume extractor ([`ResumeLayer`]) on receive against a plain read.
//!
//! Run it with `cargo bench --bench delivery` (about a minute; `BENCH_QUICK=1` or `-- --quick` for a run of a
//! few seconds). It prints criterion's report for each benchmark, then the headline lines
//!
//! ```text
//! acked sends 64B: plain X msg/s, acked Y msg/s, acked/plain = 0.NN (aim >= 0.80)
//! resume receive 64B: plain X msg/s, resume Y msg/s, resume/plain = 0.NN (aim >= 0.97)
//! ```
//!
//! with diagnostics below them:
//!
//! - **acked sends 64B** (throughput ratio, plain time / acked time; 1.00 = acks are free): a fresh
//!   [`ReconnectingStream`] over [`connect`] per sample, split into its halves, sends [`SENDS`] numbered text
//!   messages of 64 bytes (`"<n> xxx…"`, built before the timing) with `feed` and one final `flush`, while
//!   its read half runs concurrently (one task, `join`). The server answers each message `n` with `ack n`.
//!   *plain* is done when all the replies have arrived (it counts them and ignores them). *acked* is the same
//!   stream over `ConnectorBuilder::new(connector).layer(AckLayer::new(id_of, ack_of).with_window(1024))`,
//!   done when every outcome is [`Outcome::Acked`], taken in order with [`Acks::outcome`] as they come (the
//!   acks are consumed by the layer, the read half sees none). The wire traffic is the same for both. The
//!   extractors are cheap: `id_of` parses the digits before the first space, `ack_of` the digits after
//!   `ack `. Each sample's stream first sends message 0 and waits for its reply (or outcome), untimed, so
//!   the connection is up when the clock starts.
//! - **resume receive 64B** (throughput ratio, plain time / resume time; 1.00 = resume is free): the server
//!   pushes [`PUSH`] text messages of 64 bytes, `{"seq":<n>,"data":"xxx…"}`, as fast as it can; a fresh
//!   stream per sample reads them, timed from the first message's arrival to the last's. *plain* is a
//!   [`ReconnectingStream`] over [`connect`]; *resume* is the same stream over
//!   `ConnectorBuilder::new(connector).layer(ResumeLayer::new(position_of, resume_request))`, whose items
//!   are [`Resumed`] (a fresh layer per sample: its position lives across connections). Its headline
//!   extractor is cheap: it finds `"seq":` in the text with `str::find` and parses the digits after it (no
//!   JSON parser). Two more variants: *serde_json* parses each message into a `serde_json::Value` and reads
//!   `seq`, as a user who reaches for serde_json would; *prefix* only strips the known `{"seq":` and parses
//!   the digits, about the least an extractor can do, so that the layer's own cost shows.
//! - **in memory** (ns per message): the same messages, pre-built, read from `futures::stream::iter`
//!   directly, with the find extractor called on each (no layer), and through a [`ResumeConnection`] over
//!   that stream with each extractor: the extractor, the position check (a `Mutex` lock per message) and the
//!   [`Resumed`] wrapping, with no socket; so the layer's cost splits into its extractor's and its own.
//!
//! For `perf`, `DELIVERY_BENCH_PROFILE=<workload>` runs one workload alone in a loop (see [`PROFILE_ENV`]).
//!
//! # Method
//!
//! - **The server** runs on a thread of this process (smol's `LocalExecutor` on `async_io::block_on`), on
//!   127.0.0.1. The upgrade is async-tungstenite's; after it the server works on the raw socket, so that it
//!   stays much faster than the client and the client is what is measured: it acks by parsing the client's
//!   masked frames itself and writing each batch of `ack n` frames in one write, and it pushes by writing
//!   pre-encoded frames straight to the socket.
//! - **A fresh stream per sample** (connecting is not timed): over loopback a long-lived connection settles
//!   into a fast or a slow regime (see `benches/websocket.rs`), and each sample of each variant starts from
//!   the same state. The client runs on `async_io::block_on`.
//! - **Checked.** The plain sender counts exactly [`SENDS`] replies; the acked one checks every outcome is
//!   `Acked` and nothing is left unacked; the readers check the first and the last `seq`.
//! - **Interleaved medians.** Each figure comes from a loop that runs the variants in turn, rotating which goes
//!   first, and compares medians, so drift on the machine hits every variant alike. Criterion's report comes
//!   from separate runs.
//! - **Noise.** On a shared 2-CPU machine the absolute numbers move a lot with other load (and the server
//!   thread competes with the client for the two CPUs); the ratios move less, but run it twice.
//!
//! [`AckLayer`]: stream_tungstenite::delivery::AckLayer
//! [`Acks::outcome`]: stream_tungstenite::delivery::Acks::outcome
//! [`Outcome::Acked`]: stream_tungstenite::delivery::Outcome::Acked
//! [`ResumeLayer`]: stream_tungstenite::delivery::ResumeLayer
//! [`ResumeConnection`]: stream_tungstenite::delivery::ResumeConnection
//! [`Resumed`]: stream_tungstenite::delivery::Resumed
//! [`ReconnectingStream`]: stream_tungstenite::ReconnectingStream
//! [`connect`]: stream_tungstenite::connect

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use async_io::{block_on, Async};
use async_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};
use common::Mode;
use criterion::{Criterion, Throughput};
use futures::future::{join, select, Either};
use futures::{future, stream, SinkExt, Stream, StreamExt};
use stream_tungstenite::delivery::{Ack, AckLayer, Outcome, Position, ResumeLayer, Resumed};
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::NoRetry;
use stream_tungstenite::{connect, Connect, ReconnectingStream};

/// Payload size of every sent and pushed message.
const MESSAGE_LEN: usize = 64;
/// Messages per acked-sends sample (several windows' worth).
const SENDS: usize = 10_000;
/// The ack window. No more than the 1024 acked outcomes the layer keeps for whoever has not asked yet: with a
/// larger window the reader can resolve more acks in one poll than that, before the outcomes are taken, and
/// `outcome()` then waits forever for one that was forgotten (a window of 1025 hangs here every time).
const WINDOW: usize = 1024;
/// Messages per receive sample.
const PUSH: usize = 10_000;
/// Filler for the messages.
const FILLER: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

fn text(message: &Message) -> Option<&str> {
    match message {
        Message::Text(text) => Some(text.as_str()),
        _ => None,
    }
}

/// The digits at the start of `s`, as a number.
fn leading_number(s: &str) -> Option<u64> {
    let end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// Message `n` of the acked sends: `"<n> "`, then filler to 64 bytes.
fn numbered(n: u64) -> Message {
    use std::fmt::Write;
    let mut text = String::with_capacity(MESSAGE_LEN);
    let _ = write!(text, "{n} ");
    text.push_str(&FILLER[..MESSAGE_LEN.saturating_sub(text.len())]);
    Message::text(text)
}

/// Pushed message `seq`: `{"seq":<seq>,"data":"xxx…"}`, 64 bytes.
fn pushed(seq: u64) -> String {
    let head = format!("{{\"seq\":{seq},\"data\":\"");
    let filler = MESSAGE_LEN.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", &FILLER[..filler])
}

/// The cheap extractor: the digits after `"seq":`.
fn seq_cheap(message: &Message) -> Option<Position> {
    let text = text(message)?;
    let at = text.find("\"seq\":")? + "\"seq\":".len();
    leading_number(&text[at..]).map(Position::new)
}

/// The cheapest extractor, for the breakdown: `{"seq":` is known to come first; the digits after it.
fn seq_prefix(message: &Message) -> Option<Position> {
    leading_number(text(message)?.strip_prefix("{\"seq\":")?).map(Position::new)
}

/// The serde_json extractor: the message parsed into a `Value`, then `seq`.
fn seq_serde(message: &Message) -> Option<Position> {
    let value: serde_json::Value = serde_json::from_str(text(message)?).ok()?;
    value.get("seq")?.as_u64().map(Position::new)
}

/// What a resumed connection would send first (never used here: no sample reconnects).
fn resume_request(last: Position) -> Vec<Message> {
    vec![Message::text(format!(
        "{{\"op\":\"resume\",\"from\":{}}}",
        last.seq + 1
    ))]
}

/// `DELIVERY_BENCH_PROFILE=<workload>` runs one workload in a loop for `DELIVERY_BENCH_SECONDS` (default 5)
/// and prints nothing else, for `perf record`: `plain-sends`, `acked-sends`, `plain-receive`,
/// `resume-receive`, `serde-receive`, `prefix-receive` (over loopback), `memory-plain`, `memory-extract`,
/// `memory-resume`, `memory-serde`, `memory-prefix` (in memory).
const PROFILE_ENV: &str = "DELIVERY_BENCH_PROFILE";

fn main() {
    let addr = server::start();
    if let Ok(workload) = std::env::var(PROFILE_ENV) {
        return profile(addr, &workload);
    }
    let mode = Mode::from_env();

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(if mode == Mode::Full { 500 } else { 150 }))
        .measurement_time(Duration::from_millis(if mode == Mode::Full { 2000 } else { 400 }))
        .sample_size(if mode == Mode::Full { 30 } else { 10 })
        .configure_from_args();
    criterion_benches(&mut criterion, addr, mode);
    criterion.final_summary();

    if mode == Mode::Test {
        println!("\n(test mode: a smoke run of a few samples; the figures below mean nothing)");
    }
    println!("\ndelivery layers vs plain streams, 64-byte messages over loopback (medians of interleaved runs; {mode:?} mode)");
    figures::acked(addr, mode);
    figures::resume(addr, mode);
}

/// Runs `workload` (see [`PROFILE_ENV`]) in a loop; prints how many runs and the spread of their times.
fn profile(addr: SocketAddr, workload: &str) {
    let seconds: u64 = std::env::var("DELIVERY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let run: Box<dyn Fn() -> Duration> = match workload {
        "plain-sends" => Box::new(move || block_on(sends(addr, Sends::Plain, SENDS))),
        "acked-sends" => Box::new(move || block_on(sends(addr, Sends::Acked, SENDS))),
        "plain-receive" => Box::new(move || block_on(receive(addr, Receive::Plain, PUSH))),
        "resume-receive" => Box::new(move || block_on(receive(addr, Receive::Resume, PUSH))),
        "serde-receive" => Box::new(move || block_on(receive(addr, Receive::ResumeSerde, PUSH))),
        "prefix-receive" => Box::new(move || block_on(receive(addr, Receive::ResumePrefix, PUSH))),
        "memory-plain" => Box::new(|| in_memory(Memory::Plain, PUSH)),
        "memory-extract" => Box::new(|| in_memory(Memory::Extract(Receive::Resume), PUSH)),
        "memory-resume" => Box::new(|| in_memory(Memory::Resume(Receive::Resume), PUSH)),
        "memory-serde" => Box::new(|| in_memory(Memory::Resume(Receive::ResumeSerde), PUSH)),
        "memory-prefix" => Box::new(|| in_memory(Memory::Resume(Receive::ResumePrefix), PUSH)),
        other => panic!("unknown {PROFILE_ENV}={other}"),
    };
    let (start, mut times) = (Instant::now(), Vec::new());
    while start.elapsed() < Duration::from_secs(seconds) {
        times.push(run());
    }
    times.sort_unstable();
    let at = |q: usize| times[(times.len() - 1) * q / 100];
    println!(
        "{workload}: {} runs; timed part p10 {:?}, p50 {:?}, p90 {:?}",
        times.len(),
        at(10),
        at(50),
        at(90)
    );
}

// ---------------------------------------------------------------------------------------------------------------
// What is timed
// ---------------------------------------------------------------------------------------------------------------

/// How the numbered messages are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sends {
    /// A `ReconnectingStream` over `connect`; done when every reply arrived.
    Plain,
    /// The same over an `AckLayer` (window 1024); done when every outcome is `Acked`.
    Acked,
}

impl Sends {
    const ALL: [Self; 2] = [Self::Plain, Self::Acked];

    fn label(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Acked => "acked",
        }
    }
}

/// A fresh stream of `variant` (connected untimed, by message 0 and its reply), then the time to send
/// messages `1..=n` and have every reply (plain) or outcome (acked).
async fn sends(addr: SocketAddr, variant: Sends, n: usize) -> Duration {
    let url = format!("ws://{addr}/ack");
    let dial = move || connect(url.clone());
    // Built before the timing, for both.
    let messages: Vec<Message> = (1..=n as u64).map(numbered).collect();
    match variant {
        Sends::Plain => {
            let stream = ReconnectingStream::<_, Message>::new(dial).with_retry(NoRetry);
            let (mut sink, mut source) = stream.split();
            let (sent, ()) = join(sink.send(numbered(0)), replies(&mut source, 1)).await;
            sent.expect("sent");
            let start = Instant::now();
            let send = async {
                for message in messages {
                    sink.feed(message).await.expect("accepted");
                }
                sink.flush().await.expect("flushed");
            };
            join(send, replies(&mut source, n)).await;
            start.elapsed()
        }
        Sends::Acked => {
            let (layer, acks) = AckLayer::new(
                |message: &Message| leading_number(text(message)?),
                |message: &Message| Some(Ack::Ack(leading_number(text(message)?.strip_prefix("ack ")?)?)),
            );
            let connector = ConnectorBuilder::new(dial).layer(layer.with_window(WINDOW)).build();
            let stream = ReconnectingStream::<_, Message>::new(connector).with_retry(NoRetry);
            let (mut sink, mut source) = stream.split();
            let first = async {
                sink.send(numbered(0)).await.expect("sent");
                assert_eq!(acks.outcome(&0).await, Outcome::Acked);
            };
            if let Either::Left(..) = select(Box::pin(reader(&mut source)), Box::pin(first)).await {
                unreachable!()
            }
            let start = Instant::now();
            let send = async {
                for message in messages {
                    sink.feed(message).await.expect("accepted");
                }
                sink.flush().await.expect("flushed");
            };
            let outcomes = async {
                for id in 1..=n as u64 {
                    assert_eq!(acks.outcome(&id).await, Outcome::Acked, "message {id}");
                }
            };
            if let Either::Left(..) = select(Box::pin(reader(&mut source)), Box::pin(join(send, outcomes))).await {
                unreachable!()
            }
            let elapsed = start.elapsed();
            assert_eq!(acks.unacked(), 0);
            elapsed
        }
    }
}

/// Reads `count` replies (`ack n`).
async fn replies<S, E>(source: &mut S, count: usize)
where
    S: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Debug,
{
    let mut got = 0;
    while got < count {
        match source.next().await {
            Some(Ok(message)) if text(&message).is_some_and(|t| t.starts_with("ack ")) => got += 1,
            Some(Ok(_)) => {}
            other => panic!("the replies: {other:?}"),
        }
    }
}

/// The read half of an acked stream: it drives the acks, and no message reaches it (the acks are consumed by
/// the layer) but the heartbeat's pongs. Never returns.
async fn reader<S, E>(source: &mut S)
where
    S: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Debug,
{
    loop {
        match source.next().await {
            Some(Ok(Message::Pong(_))) => {}
            item => panic!("acks are not delivered to the reader, and nothing else comes: {item:?}"),
        }
    }
}

/// How the pushed messages are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receive {
    /// A `ReconnectingStream` over `connect`.
    Plain,
    /// The same over a `ResumeLayer` with the cheap extractor.
    Resume,
    /// The same over a `ResumeLayer` with the serde_json extractor.
    ResumeSerde,
    /// The same over a `ResumeLayer` whose extractor only strips a known prefix and parses the digits.
    ResumePrefix,
}

impl Receive {
    const ALL: [Self; 4] = [Self::Plain, Self::Resume, Self::ResumeSerde, Self::ResumePrefix];

    fn label(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Resume => "resume",
            Self::ResumeSerde => "resume (serde_json)",
            Self::ResumePrefix => "resume (prefix)",
        }
    }

    fn extractor(self) -> fn(&Message) -> Option<Position> {
        match self {
            Self::Plain | Self::Resume => seq_cheap,
            Self::ResumeSerde => seq_serde,
            Self::ResumePrefix => seq_prefix,
        }
    }
}

/// A fresh stream of `variant` over `n` pushed messages (connecting is not timed), then the time from the
/// first message's arrival to the last's.
async fn receive(addr: SocketAddr, variant: Receive, n: usize) -> Duration {
    let url = format!("ws://{addr}/push/{n}");
    let dial = move || connect(url.clone());
    match variant {
        Receive::Plain => {
            let mut stream = ReconnectingStream::<_, Message>::new(dial).with_retry(NoRetry);
            read_pushed(&mut stream, n, Some).await
        }
        Receive::Resume | Receive::ResumeSerde | Receive::ResumePrefix => {
            let layer = ResumeLayer::new(variant.extractor(), resume_request);
            let connector = ConnectorBuilder::new(dial).layer(layer).build();
            let mut stream = ReconnectingStream::<_, Message>::new(connector).with_retry(NoRetry);
            let message = |item| match item {
                Resumed::Message(message) => Some(message),
                Resumed::Continuity(report) => panic!("no reconnect, no gap: {report:?}"),
            };
            read_pushed(&mut stream, n, message).await
        }
    }
}

/// Reads `n` pushed messages from `stream`, timed from the first one's arrival; checks the first and the last.
async fn read_pushed<S, T, E>(stream: &mut S, n: usize, message: impl Fn(T) -> Option<Message>) -> Duration
where
    S: Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Debug,
{
    let first = message(stream.next().await.expect("the feed").expect("no read error"));
    assert_eq!(
        first.as_ref().and_then(seq_cheap),
        Some(Position::new(0)),
        "the feed starts at 0"
    );
    let start = Instant::now();
    let mut last = first;
    for _ in 1..n {
        last = black_box(message(stream.next().await.expect("the feed").expect("no read error")));
    }
    let elapsed = start.elapsed();
    assert_eq!(
        last.as_ref().and_then(seq_cheap),
        Some(Position::new(n as u64 - 1)),
        "every seq, in order"
    );
    elapsed
}

/// How the in-memory messages are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// `futures::stream::iter`, read directly.
    Plain,
    /// The same, calling this receive variant's extractor on each message (no layer).
    Extract(Receive),
    /// A `ResumeConnection` over it, with this receive variant's extractor.
    Resume(Receive),
}

impl Memory {
    const ALL: [Self; 5] = [
        Self::Plain,
        Self::Extract(Receive::Resume),
        Self::Resume(Receive::Resume),
        Self::Resume(Receive::ResumeSerde),
        Self::Resume(Receive::ResumePrefix),
    ];
}

/// An in-memory connection: the pushed messages pre-built, handed out as they are.
type MemoryFeed = stream::Iter<std::vec::IntoIter<Result<Message, io::Error>>>;

/// Messages `0..n` (see [`pushed`]), their payloads slices of one buffer (as tungstenite's are of its read
/// buffer), built once.
fn memory_feed(n: usize) -> MemoryFeed {
    static TEXT: std::sync::OnceLock<(Bytes, Vec<std::ops::Range<usize>>)> = std::sync::OnceLock::new();
    let (text, ranges) = TEXT.get_or_init(|| {
        let (mut text, mut ranges) = (String::new(), Vec::new());
        for seq in 0..PUSH as u64 {
            let start = text.len();
            text.push_str(&pushed(seq));
            ranges.push(start..text.len());
        }
        (Bytes::from(text), ranges)
    });
    let messages: Vec<_> = (ranges[..n].iter())
        .map(|range| {
            Ok(Message::Text(
                Utf8Bytes::try_from(text.slice(range.clone())).expect("utf-8"),
            ))
        })
        .collect();
    stream::iter(messages)
}

/// A fresh in-memory connection of `variant` (made untimed), then the time to read `n` messages.
fn in_memory(variant: Memory, n: usize) -> Duration {
    let feed = memory_feed(n);
    match variant {
        Memory::Plain => {
            let mut feed = feed;
            common::receive(&mut feed, n as u64)
        }
        Memory::Extract(receive) => {
            let (mut feed, extract) = (feed, receive.extractor());
            futures::executor::block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    let message = feed.next().await.expect("the feed").expect("no read error");
                    black_box(extract(black_box(&message)));
                    black_box(message);
                }
                start.elapsed()
            })
        }
        Memory::Resume(receive) => {
            let mut feed = Some(stream_tungstenite::join(feed, futures::sink::drain()));
            let dial = move || future::ready(feed.take().ok_or_else(|| io::Error::other("made once")));
            let layer = ResumeLayer::new(receive.extractor(), resume_request);
            let mut connector = ConnectorBuilder::new(dial).layer(layer).build();
            let mut conn = block_on(connector.connect()).expect("in memory");
            common::receive(&mut conn, n as u64)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Criterion
// ---------------------------------------------------------------------------------------------------------------

fn criterion_benches(criterion: &mut Criterion, addr: SocketAddr, mode: Mode) {
    let n = mode.pick(50, SENDS, SENDS);
    let mut group = criterion.benchmark_group("acked_sends_64B");
    group.throughput(Throughput::Elements(n as u64));
    for variant in Sends::ALL {
        group.bench_function(variant.label(), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| block_on(sends(addr, variant, n))).sum())
        });
    }
    group.finish();

    let n = mode.pick(50, PUSH, PUSH);
    let mut group = criterion.benchmark_group("resume_receive_64B");
    group.throughput(Throughput::Elements(n as u64 - 1));
    for variant in Receive::ALL {
        group.bench_function(variant.label(), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| block_on(receive(addr, variant, n))).sum())
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// The headline figures
// ---------------------------------------------------------------------------------------------------------------

mod figures {
    use super::*;
    use crate::common::{interleaved, ns_per};

    fn per_second(ns: f64) -> f64 {
        1e9 / ns
    }

    /// Acked sends against plain ones.
    pub(super) fn acked(addr: SocketAddr, mode: Mode) {
        if !common::selected("acked") {
            return;
        }
        let n = mode.pick(50, SENDS, SENDS);
        let samples = mode.pick(3, 31, 151);
        let medians = interleaved(&Sends::ALL, mode.pick(1, 3, 5), samples, |variant| {
            block_on(sends(addr, variant, n))
        });
        let [plain, acked] = [0, 1].map(|i| ns_per(medians[i], n));
        println!(
            "acked sends 64B: plain {:.0} msg/s, acked {:.0} msg/s, acked/plain = {:.2} (aim >= 0.80)",
            per_second(plain),
            per_second(acked),
            plain / acked,
        );
        println!(
            "  {n} messages per fresh stream, window {WINDOW}, {samples} samples: plain {plain:.0} ns/msg, acked {acked:.0} ns/msg: +{:.0} ns per message",
            acked - plain,
        );
    }

    /// Reading through a resume layer against a plain read.
    pub(super) fn resume(addr: SocketAddr, mode: Mode) {
        if !common::selected("resume") {
            return;
        }
        let n = mode.pick(50, PUSH, PUSH);
        let samples = mode.pick(3, 51, 201);
        let medians = interleaved(&Receive::ALL, mode.pick(1, 3, 5), samples, |variant| {
            block_on(receive(addr, variant, n))
        });
        // n messages, n - 1 intervals timed.
        let [plain, resume, serde, prefix] = [0, 1, 2, 3].map(|i| ns_per(medians[i], n - 1));
        println!(
            "resume receive 64B: plain {:.0} msg/s, resume {:.0} msg/s, resume/plain = {:.2} (aim >= 0.97; extractor: find \"seq\": with str::find and parse the digits, no JSON parser)",
            per_second(plain),
            per_second(resume),
            plain / resume,
        );
        println!(
            "  other extractors: serde_json (a serde_json::Value, then \"seq\") {:.0} msg/s, resume/plain = {:.2}; prefix (strip a known `{{\"seq\":`, parse the digits) {:.0} msg/s, resume/plain = {:.2}",
            per_second(serde),
            plain / serde,
            per_second(prefix),
            plain / prefix,
        );
        println!(
            "  {n} messages per fresh stream, {samples} samples: plain {plain:.1} ns/msg, resume {resume:.1} (+{:.1}), serde_json {serde:.1} (+{:.1}), prefix {prefix:.1} (+{:.1})",
            resume - plain,
            serde - plain,
            prefix - plain,
        );
        let memory = interleaved(&Memory::ALL, mode.pick(1, 3, 5), mode.pick(3, 31, 101), |variant| {
            in_memory(variant, n)
        });
        let [plain, extract, resume, serde, prefix] = [0, 1, 2, 3, 4].map(|i| ns_per(memory[i], n));
        println!(
            "  in memory (futures::stream::iter of pre-built messages): plain {plain:.1} ns/msg; the find extractor alone +{:.1}; resume (find) +{:.1}, of which the layer without its extractor +{:.1}; resume (prefix) +{:.1}; resume (serde_json) +{:.1}",
            extract - plain,
            resume - plain,
            resume - extract,
            prefix - plain,
            serde - plain,
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------------------------

mod server {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use futures::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Starts the server on a thread of its own; its address. `/ack` answers each text message `n …` with
    /// `ack n`; `/push/<n>` sends messages `0..n` (see [`pushed`]) and keeps the connection open until the
    /// client goes.
    pub(super) fn start() -> SocketAddr {
        common::local_server(|| {
            let feeds = Feeds::default();
            move |tcp| serve(tcp, Rc::clone(&feeds))
        })
    }

    /// The pushed frames, encoded once per length.
    type Feeds = Rc<RefCell<HashMap<u64, Rc<Vec<u8>>>>>;

    async fn serve(tcp: Async<TcpStream>, feeds: Feeds) {
        let _ = tcp.get_ref().set_nodelay(true);
        let mut path = String::new();
        // The signature is tungstenite's.
        #[allow(clippy::result_large_err)]
        let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            path = request.uri().path().to_owned();
            Ok(response)
        };
        let Ok(ws) = async_tungstenite::accept_hdr_async(tcp, callback).await else {
            return;
        };
        // The client sends nothing before it has read the 101, so tungstenite holds no frame of it yet.
        let mut tcp = ws.into_inner();
        if path == "/ack" {
            let _ = ack(&mut tcp).await;
        } else if let Some(n) = path.strip_prefix("/push/").and_then(|n| n.parse::<u64>().ok()) {
            let frames = Rc::clone(feeds.borrow_mut().entry(n).or_insert_with(|| Rc::new(encode_push(n))));
            if tcp.write_all(&frames).await.is_ok() {
                let mut sink = [0; 1024];
                while let Ok(1..) = tcp.read(&mut sink).await {}
            }
        } else {
            eprintln!("[bench server] unknown path {path}");
        }
    }

    /// Answers each text frame `n …` with `ack n`, a batch of answers per read, until the client closes.
    async fn ack(tcp: &mut Async<TcpStream>) -> io::Result<()> {
        let mut buffer = vec![0; 256 * 1024];
        let (mut filled, mut out) = (0, Vec::with_capacity(64 * 1024));
        loop {
            let read = tcp.read(&mut buffer[filled..]).await?;
            if read == 0 {
                return Ok(());
            }
            filled += read;
            let mut at = 0;
            while let Some((opcode, payload, len)) = client_frame(&mut buffer[at..filled]) {
                let payload = &buffer[at + payload.start..at + payload.end];
                match opcode {
                    // Text: `ack` and the digits it starts with.
                    0x1 => {
                        let digits = payload.iter().take_while(|b| b.is_ascii_digit()).count();
                        out.extend_from_slice(&[0x81, (4 + digits) as u8]);
                        out.extend_from_slice(b"ack ");
                        out.extend_from_slice(&payload[..digits]);
                    }
                    // Close: done.
                    0x8 => return Ok(()),
                    // Ping: pong.
                    0x9 => {
                        out.extend_from_slice(&[0x8a, payload.len() as u8]);
                        out.extend_from_slice(payload);
                    }
                    _ => {}
                }
                at += len;
            }
            buffer.copy_within(at..filled, 0);
            filled -= at;
            if !out.is_empty() {
                tcp.write_all(&out).await?;
                out.clear();
            }
        }
    }

    /// The first complete client frame in `data`: its opcode, where its payload is (unmasked in place, the
    /// first 125 bytes of it: all of a control frame's, more than the digits of a text frame's) and its length
    /// on the wire.
    fn client_frame(data: &mut [u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
        let [first, second, ..] = *data else {
            return None;
        };
        assert!(second & 0x80 != 0, "client frames are masked");
        let (len, head) = match second & 0x7f {
            126 => (u16::from_be_bytes(data.get(2..4)?.try_into().ok()?) as usize, 4),
            127 => (u64::from_be_bytes(data.get(2..10)?.try_into().ok()?) as usize, 10),
            len => (len as usize, 2),
        };
        let mask: [u8; 4] = data.get(head..head + 4)?.try_into().ok()?;
        let payload = head + 4..head + 4 + len;
        let bytes = data.get_mut(payload.clone())?;
        for (i, byte) in bytes.iter_mut().take(125).enumerate() {
            *byte ^= mask[i % 4];
        }
        let end = payload.end;
        Some((first & 0x0f, payload.start..payload.start + len.min(125), end))
    }

    /// Messages `0..n` as unmasked text frames (server to client).
    fn encode_push(n: u64) -> Vec<u8> {
        let mut frames = Vec::with_capacity(n as usize * (2 + MESSAGE_LEN));
        for seq in 0..n {
            let text = pushed(seq);
            frames.extend_from_slice(&[0x81, text.len() as u8]);
            frames.extend_from_slice(text.as_bytes());
        }
        frames
    }
}
