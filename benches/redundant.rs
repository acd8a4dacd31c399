//! What redundancy costs per received message: a feed read through [`Redundant`] (two connections, each
//! message arriving twice, the second copy dropped by the de-duplication) against the same feed over one
//! connection, over loopback; and the de-duplication step alone, in memory; all in the same run.
//!
//! Run it with `cargo bench --bench redundant` (under a minute; `BENCH_QUICK=1` or `-- --quick` for a run of
//! a few seconds). It prints criterion's report for each benchmark, then the headline line
//!
//! ```text
//! redundant receive 64B: single X msg/s, redundant(2) Y msg/s, ratio Y/X = 0.NN; dedup alone: Z ns/message
//! ```
//!
//! and a breakdown below it:
//!
//! - **receive 64B** (throughput ratio, redundant / single; 1.00 = redundancy is free, 0.50 = it halves the
//!   rate): an in-process server publishes a numbered feed, [`FEED`] binary messages of 64 bytes whose first 8
//!   bytes are the message's number (little-endian), which is the de-duplication key. *single* is a
//!   [`ReconnectingStream`] over [`connect`]; *redundant(2)* is a [`ReconnectingStream`] over a [`Redundant`]
//!   of two members dialling the same server, which floods both connections at once, so that every number
//!   arrives twice and the de-duplication drops the second copy. Both read the same [`FEED`] distinct
//!   messages, timed from the first message's arrival to the last's.
//! - **dedup alone** (ns per delivered message): the same messages, pre-built in memory, read through a
//!   [`RedundantConnection`] whose two members are `futures::stream::iter` streams of the same numbers (made by
//!   a connector that hands them out), minus the same messages read from one such stream directly. That is the
//!   de-duplication step for both copies (the second member's poll, the key of each copy, remembering the
//!   first, rejecting the second) and dropping the second copy, with no socket. Two one-member groups split
//!   it: one whose key function returns `None` (the group's polling alone: nothing remembered), and one keyed
//!   (every message fresh, nothing dropped: remembering a key); the two-member group adds the duplicate. It
//!   is measured with the window full (after [`DEFAULT_DEDUPE_WINDOW`] messages, so each fresh key also evicts
//!   the oldest: a long-lived connection), and on a fresh connection over its first [`FEED`] messages (the
//!   window still filling, its tables growing: what the loopback figure does).
//!
//! The rest of the loopback difference is the second connection's own receive path: a second socket to
//! read, and every duplicate parsed by tungstenite into a message before the de-duplication sees it.
//!
//! # Method
//!
//! - **The server** runs on a thread of this process (smol's `LocalExecutor` on `async_io::block_on`), on
//!   127.0.0.1. Each client connection names a session, its group's size and the feed's length in its path
//!   (`/feed/<session>/<members>/<n>`); once every member of the session is upgraded, it writes the
//!   pre-encoded frames straight to each member's socket, concurrently. So both copies are in flight from the
//!   start and the client, not the server, is what is measured.
//! - **A fresh stream per sample** (connecting is not timed): over loopback a long-lived connection settles
//!   into a fast or a slow regime (see `benches/websocket.rs`), and each sample of each variant starts from
//!   the same state. The client runs on `async_io::block_on`.
//! - **Checked.** Each sample checks that it read the numbers `0..n` in order, each once (the de-duplication
//!   delivers a number the first time it arrives, from either member), and that both members were up.
//! - **Interleaved medians.** Each figure comes from a loop that runs the variants in turn, rotating which goes
//!   first, and compares medians, so drift on the machine hits every variant alike. Criterion's report comes
//!   from separate runs.
//! - **Noise.** On a shared 2-CPU machine the absolute numbers move a lot with other load (and the server
//!   thread competes with the client for the two CPUs); the ratio moves less, but run it twice.
//!
//! [`Redundant`]: stream_tungstenite::connectivity::Redundant
//! [`RedundantConnection`]: stream_tungstenite::connectivity::RedundantConnection
//! [`DEFAULT_DEDUPE_WINDOW`]: stream_tungstenite::connectivity::DEFAULT_DEDUPE_WINDOW
//! [`ReconnectingStream`]: stream_tungstenite::ReconnectingStream
//! [`connect`]: stream_tungstenite::connect

#[path = "common/mod.rs"]
mod common;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::{block_on, Async};
use async_tungstenite::tungstenite::{Bytes, Message};
use common::{receive, Mode};
use criterion::{Criterion, Throughput};
use futures::{future, stream, Stream, StreamExt};
use stream_tungstenite::connectivity::{Redundant, DEFAULT_DEDUPE_WINDOW};
use stream_tungstenite::retry::NoRetry;
use stream_tungstenite::{connect, Connect, ReconnectingStream};

/// Payload size of every message.
const MESSAGE_LEN: usize = 64;
/// Messages per loopback sample, and per sample of the in-memory figure on a fresh connection.
const FEED: usize = 1000;
/// Messages per sample of the in-memory figure with the window full (read after the window's worth).
const STEADY: usize = 4096;

/// The de-duplication key: the message's number, its first 8 bytes.
fn key(message: &Message) -> Option<u64> {
    match message {
        Message::Binary(payload) => Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?)),
        _ => None,
    }
}

/// Message `number`'s payload: the number, then filler.
fn payload(number: u64) -> [u8; MESSAGE_LEN] {
    let mut payload = [0x5a; MESSAGE_LEN];
    payload[..8].copy_from_slice(&number.to_le_bytes());
    payload
}

fn main() {
    let mode = Mode::from_env();
    let addr = server::start();

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(if mode == Mode::Full { 500 } else { 200 }))
        .measurement_time(Duration::from_millis(if mode == Mode::Full { 2000 } else { 400 }))
        .sample_size(if mode == Mode::Full { 30 } else { 10 })
        .configure_from_args();
    criterion_benches(&mut criterion, addr, mode);
    criterion.final_summary();

    if mode == Mode::Test {
        println!("\n(test mode: a smoke run of a few samples; the figures below mean nothing)");
    }
    println!("\nredundancy vs a single connection, 64-byte messages (medians of interleaved runs; {mode:?} mode)");
    figures::print(addr, mode);
}

// ---------------------------------------------------------------------------------------------------------------
// What is timed
// ---------------------------------------------------------------------------------------------------------------

/// How the loopback feed is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// A `ReconnectingStream` over `connect`.
    Single,
    /// A `ReconnectingStream` over a `Redundant` of two members to the same server.
    Redundant,
}

impl Feed {
    const ALL: [Self; 2] = [Self::Single, Self::Redundant];

    fn label(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Redundant => "redundant(2)",
        }
    }

    fn members(self) -> usize {
        match self {
            Self::Single => 1,
            Self::Redundant => 2,
        }
    }
}

/// A fresh stream of `feed` over `n` numbered messages (connecting is not timed), then the time from the
/// first message's arrival to the last's.
async fn loopback(addr: SocketAddr, feed: Feed, n: usize) -> Duration {
    static SESSION: AtomicU64 = AtomicU64::new(0);
    let session = SESSION.fetch_add(1, Ordering::Relaxed);
    let url = format!("ws://{addr}/feed/{session}/{}/{n}", feed.members());
    let member = move || connect(url.clone());
    match feed {
        Feed::Single => {
            let mut stream = ReconnectingStream::<_, Message>::new(member).with_retry(NoRetry);
            read_feed(&mut stream, n).await
        }
        Feed::Redundant => {
            let group = Redundant::new(vec![member.clone(), member], key);
            let mut stream = ReconnectingStream::<_, Message>::new(group).with_retry(NoRetry);
            let elapsed = read_feed(&mut stream, n).await;
            let up = stream.get_ref().map_or(0, |group| group.up());
            assert_eq!(up, 2, "both members were up");
            elapsed
        }
    }
}

/// Reads messages `0..n` from `stream`, timed from the first one's arrival; checks they came in order.
async fn read_feed<S, E>(stream: &mut S, n: usize) -> Duration
where
    S: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Debug,
{
    let mut last = stream.next().await.expect("the feed").expect("no read error");
    assert_eq!(key(&last), Some(0), "the feed starts at 0");
    let start = Instant::now();
    for _ in 1..n {
        last = stream.next().await.expect("the feed").expect("no read error");
    }
    let elapsed = start.elapsed();
    assert_eq!(key(&last), Some(n as u64 - 1), "every number once, in order");
    elapsed
}

/// How the in-memory feed is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// One `futures::stream::iter` stream, read directly.
    Plain,
    /// A `RedundantConnection` of one such stream whose key function returns `None`: the group's polling,
    /// without the de-duplication's bookkeeping.
    Unkeyed,
    /// A `RedundantConnection` of this many such streams, each with every number.
    Group(usize),
}

impl Memory {
    const ALL: [Self; 4] = [Self::Plain, Self::Unkeyed, Self::Group(1), Self::Group(2)];

    fn label(self) -> String {
        match self {
            Self::Plain => "plain".to_owned(),
            Self::Unkeyed => "redundant(1) unkeyed".to_owned(),
            Self::Group(members) => format!("redundant({members})"),
        }
    }
}

/// An in-memory connection: messages pre-built, handed out as they are.
type MemoryFeed = stream::Iter<std::vec::IntoIter<Result<Message, io::Error>>>;

/// Messages `0..len`, their payloads slices of one buffer (as tungstenite's are of its read buffer).
fn memory_feed(len: usize) -> MemoryFeed {
    let buffer: Vec<u8> = (0..len as u64).flat_map(payload).collect();
    let buffer = Bytes::from(buffer);
    let messages: Vec<_> = (0..len)
        .map(|i| Ok(Message::Binary(buffer.slice(i * MESSAGE_LEN..(i + 1) * MESSAGE_LEN))))
        .collect();
    stream::iter(messages)
}

/// A fresh in-memory connection of `variant` (made and connected untimed), `skip` messages read untimed,
/// then the time to read `n` more.
fn in_memory(variant: Memory, skip: usize, n: usize) -> Duration {
    match variant {
        Memory::Plain => {
            let mut feed = memory_feed(skip + n);
            receive(&mut feed, skip as u64);
            receive(&mut feed, n as u64)
        }
        Memory::Unkeyed => in_memory_group(1, |_| None, skip, n),
        Memory::Group(members) => in_memory_group(members, key, skip, n),
    }
}

/// [`in_memory`] for a group of `members` in-memory feeds, de-duplicated by `key_of`.
fn in_memory_group(
    members: usize,
    key_of: impl Fn(&Message) -> Option<u64> + Send + Sync + 'static,
    skip: usize,
    n: usize,
) -> Duration {
    // The connector hands out the feeds, one per member.
    let feeds: Arc<Mutex<Vec<MemoryFeed>>> =
        Arc::new(Mutex::new((0..members).map(|_| memory_feed(skip + n)).collect()));
    let member = move || {
        let feed = feeds.lock().expect("not poisoned").pop();
        future::ready(feed.ok_or_else(|| io::Error::other("each member's feed is made once")))
    };
    let mut group = Redundant::new(vec![member; members], key_of);
    let mut conn = futures::executor::block_on(group.connect()).expect("in memory");
    assert_eq!(conn.up(), members);
    receive(&mut conn, skip as u64);
    receive(&mut conn, n as u64)
}

// ---------------------------------------------------------------------------------------------------------------
// Criterion
// ---------------------------------------------------------------------------------------------------------------

fn criterion_benches(criterion: &mut Criterion, addr: SocketAddr, mode: Mode) {
    let n = mode.pick(50, FEED, FEED);
    let mut group = criterion.benchmark_group("receive_64B");
    group.throughput(Throughput::Elements(n as u64 - 1));
    for feed in Feed::ALL {
        group.bench_function(feed.label(), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| block_on(loopback(addr, feed, n))).sum())
        });
    }
    group.finish();

    let n = mode.pick(50, STEADY, STEADY);
    let skip = DEFAULT_DEDUPE_WINDOW;
    let mut group = criterion.benchmark_group("dedup_64B_window_full");
    group.throughput(Throughput::Elements(n as u64));
    for variant in Memory::ALL {
        group.bench_function(variant.label(), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| in_memory(variant, skip, n)).sum())
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

    /// Prints the figures whose names (`receive`, `dedup`) match the command line's filter, if any; the
    /// headline line when both do.
    pub(super) fn print(addr: SocketAddr, mode: Mode) {
        let n = mode.pick(50, FEED, FEED);
        let warm_up = mode.pick(1, 10, 20);
        // Loopback: n messages, n - 1 intervals timed.
        let loopback = common::selected("receive").then(|| {
            let medians = interleaved(&Feed::ALL, warm_up, mode.pick(3, 151, 501), |feed| {
                block_on(super::loopback(addr, feed, n))
            });
            [0, 1].map(|i| ns_per(medians[i], n - 1))
        });
        // In memory, with the window full, and on a fresh connection, per delivered message.
        let memory = common::selected("dedup").then(|| {
            let samples = mode.pick(3, 101, 401);
            let steady_n = mode.pick(50, STEADY, STEADY);
            let skip = DEFAULT_DEDUPE_WINDOW;
            let per_message = |medians: Vec<Duration>, n| medians.into_iter().map(|t| ns_per(t, n)).collect();
            let steady: Vec<f64> = per_message(
                interleaved(&Memory::ALL, warm_up, samples, |variant| {
                    in_memory(variant, skip, steady_n)
                }),
                steady_n,
            );
            let fresh: Vec<f64> = per_message(
                interleaved(&Memory::ALL, warm_up, samples, |variant| in_memory(variant, 0, n)),
                n,
            );
            (steady, fresh)
        });
        // Plain, unkeyed, redundant(1), redundant(2): the de-duplication is redundant(2) over plain.
        let dedup = |ns: &[f64]| ns[3] - ns[0];

        if let (Some([single, redundant]), Some((steady, _))) = (&loopback, &memory) {
            let per_second = |ns: f64| 1e9 / ns;
            println!(
                "redundant receive 64B: single {:.0} msg/s, redundant(2) {:.0} msg/s, ratio Y/X = {:.2}; dedup alone: {:.1} ns/message",
                per_second(*single),
                per_second(*redundant),
                single / redundant,
                dedup(steady),
            );
        }
        if let Some([single, redundant]) = loopback {
            let share = match &memory {
                Some((_, fresh)) => format!(
                    ", of which the dedup {:.0} ns (in memory, fresh connection) and the second connection's receive path the rest",
                    dedup(fresh)
                ),
                None => String::new(),
            };
            println!(
                "  loopback, {n} messages per fresh stream: single {single:.0} ns/msg, redundant(2) {redundant:.0} ns/msg: +{:.0} ns per message{share}",
                redundant - single,
            );
        }
        if let Some((steady, fresh)) = &memory {
            for (what, ns) in [
                (
                    format!("window full ({DEFAULT_DEDUPE_WINDOW} keys, each fresh key evicts one)"),
                    steady,
                ),
                (format!("fresh connection, first {n} messages"), fresh),
            ] {
                println!(
                    "  dedup alone in memory, {what}: plain {:.1} ns/msg, redundant(1) unkeyed {:.1}, redundant(1) {:.1}, redundant(2) {:.1}: +{:.1} ns the group's polling, +{:.1} ns remembering a fresh key, +{:.1} ns per duplicate; {:.1} ns per delivered message in all",
                    ns[0],
                    ns[1],
                    ns[2],
                    ns[3],
                    ns[1] - ns[0],
                    ns[2] - ns[1],
                    ns[3] - ns[2],
                    dedup(ns),
                );
            }
        }
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
    use async_tungstenite::WebSocketStream;
    use futures::io::AsyncWriteExt;

    use super::*;

    type Ws = WebSocketStream<Async<TcpStream>>;
    /// Per session, its members upgraded so far, waiting for the others.
    type Sessions = Rc<RefCell<HashMap<u64, Vec<Ws>>>>;

    /// Starts the server on a thread of its own; its address. A connection to `/feed/<session>/<members>/<n>`
    /// waits for the session's other members; once all are upgraded, each gets messages `0..n` (see
    /// [`payload`]), written straight to its socket, and is kept open until the client goes.
    pub(super) fn start() -> SocketAddr {
        common::local_server(|| {
            let sessions = Sessions::default();
            move |tcp| serve(tcp, Rc::clone(&sessions))
        })
    }

    async fn serve(tcp: Async<TcpStream>, sessions: Sessions) {
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
        let mut words = path.strip_prefix("/feed/").unwrap_or_default().split('/');
        let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
        let (Some(session), Some(members), Some(n)) = (number(), number(), number()) else {
            eprintln!("[bench server] unknown path {path}");
            return;
        };
        let group = {
            let mut sessions = sessions.borrow_mut();
            let waiting = sessions.entry(session).or_default();
            waiting.push(ws);
            if (waiting.len() as u64) < members {
                return;
            }
            sessions.remove(&session).unwrap_or_default()
        };
        let frames = encode_feed(n);
        let frames = &frames;
        future::join_all(group.into_iter().map(|mut ws| async move {
            if ws.get_mut().write_all(frames).await.is_ok() {
                while let Some(Ok(_)) = ws.next().await {}
            }
        }))
        .await;
    }

    /// Messages `0..n` as unmasked binary frames (server to client).
    fn encode_feed(n: u64) -> Vec<u8> {
        let mut frames = Vec::with_capacity(n as usize * (2 + MESSAGE_LEN));
        for number in 0..n {
            frames.extend_from_slice(&[0x82, MESSAGE_LEN as u8]);
            frames.extend_from_slice(&payload(number));
        }
        frames
    }
}
