//! Delivery guarantees against a real peer (Python `websockets`, tests/peers/python_server.py) through the
//! loopback fault proxy (tests/support/proxy.rs), which cuts the TCP path with resets, FINs and half-open
//! stalls:
//!
//! - acknowledged sends ([`AckLayer`]): 10,000 numbered messages to a peer that acks each one, across a cut
//!   every 400 messages; every outcome acked, none lost, duplicates at the peer within the window per cut;
//! - resume ([`ResumeLayer`]): a peer with a replay buffer; `Recovered` when the buffer covers the outage, a
//!   `Gap` with the peer's exact numbers when it does not;
//! - the TTL queue policy ([`QueuePolicy::DropOlderThan`]): what waited longer than the TTL when the
//!   connection came back is handed back, the rest arrives in order.
//!
//! Its own harness (libtest-mimic), as tests/interop: without the peer (run `.ci/install-peers`) the tests
//! show as `ignored` with a note; under `CI=true` a missing peer fails. The deterministic tests of the same
//! layers, on a scripted connector, are in tests/delivery.

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{join, select, Either};
use futures::{SinkExt, StreamExt};
use stream_tungstenite::delivery::{Ack, AckLayer, Continuity, Outcome, Position, ResumeLayer, Resumed};
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::FixedDelay;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::ws::WsConnector;
use stream_tungstenite::{Event, QueuePolicy, ReconnectingStream};
use support::peers::{run_needing, Impl, Peer};
use support::proxy::{Cut, Direction, Proxy};
use support::serial::{ms, serial};
use support::{block_on_within, within, Recorder};

/// A heartbeat fast enough that a half-open stall is caught within half a second.
const PING_INTERVAL: Duration = Duration::from_millis(100);
const PING_TIMEOUT: Duration = Duration::from_millis(300);

fn connector_to(proxy: &Proxy) -> WsConnector {
    WsConnector::builder(proxy.url())
        .with_heartbeat(PING_INTERVAL, PING_TIMEOUT)
        .with_connect_timeout(Duration::from_secs(5))
        .build()
}

fn text(message: &Message) -> Option<&str> {
    match message {
        Message::Text(text) => Some(text.as_str()),
        _ => None,
    }
}

/// The numbers the peer logged as received (`message N`), in the order it got them.
fn received(peer: &Peer) -> Vec<u32> {
    (peer.stderr_lines().iter())
        .filter_map(|line| line.strip_prefix("message ")?.parse().ok())
        .collect()
}

fn received_count(lines: &[String]) -> usize {
    lines.iter().filter(|line| line.starts_with("message ")).count()
}

// ---- (a) Acknowledged sends across RST, FIN and half-open cuts -------------------------------------------

const TOTAL: u32 = 10_000;
const CUT_EVERY: usize = 400;
/// At least this many cuts come before the last message (the sends go on while the path is cut).
const MIN_CUTS: usize = 12;
const WINDOW: usize = 256;

/// 10,000 numbered messages to a peer that answers `ack N` to each; the fault proxy cuts the path every 400
/// messages the peer received on a connection, in turn with a reset, a FIN and a half-open stall (caught by the heartbeat).
/// Every outcome is `Acked`, the peer got every number (0 lost), and it got at most the window again per cut
/// (a message goes out twice only when the path died before its ack came back).
fn acked_sends_survive_rst_fin_and_half_open_cuts() {
    let _serial = serial();
    let Some(peer) = Peer::start(Impl::Python, &["--mode", "ack"]) else {
        return;
    };
    let proxy = Proxy::start(peer.addr());
    let (layer, acks) = AckLayer::new(
        |message: &Message| text(message)?.parse::<u32>().ok(),
        |message: &Message| Some(Ack::Ack(text(message)?.strip_prefix("ack ")?.parse().ok()?)),
    );
    let layer = (layer.with_window(WINDOW))
        .with_timeout(Duration::from_secs(5))
        .with_attempts(1000);
    let connector = ConnectorBuilder::new(connector_to(&proxy)).layer(layer).build();
    let stream = ReconnectingStream::new(connector).with_retry(FixedDelay::new(ms(10)));
    let (mut sink, mut source) = stream.split();

    let cuts = [Cut::Rst, Cut::Fin].map(Some).into_iter().chain([None]).cycle();
    let done = AtomicBool::new(false);
    let (made, stalls) = std::thread::scope(|scope| {
        let faults = scope.spawn(|| {
            let (mut made, mut stalls) = (Vec::new(), 0);
            // Each cut ends a connection that came up after the previous cut and got `CUT_EVERY` messages
            // since (counted at the peer, resends included).
            let (mut connections, mut since) = (0, 0);
            for cut in cuts {
                let reached = peer.wait_for_stderr(Duration::from_secs(60), |lines| {
                    done.load(Ordering::SeqCst)
                        || (proxy.accepted() > connections && received_count(lines) >= since + CUT_EVERY)
                });
                if !reached || done.load(Ordering::SeqCst) {
                    break;
                }
                connections = proxy.accepted();
                since = received_count(&peer.stderr_lines());
                match cut {
                    Some(cut) => {
                        proxy.cut_all(cut);
                    }
                    None => {
                        proxy.stall(Direction::Both);
                        stalls += 1;
                    }
                }
                made.push(cut);
            }
            (made, stalls)
        });

        block_on_within(Duration::from_secs(180), "10,000 acked sends across cuts", async {
            let send = async {
                for n in 1..=TOTAL {
                    sink.feed(Message::text(n.to_string())).await.expect("accepted");
                }
                sink.flush().await.expect("flushed");
            };
            let outcomes = async {
                for n in 1..=TOTAL {
                    assert_eq!(acks.outcome(&n).await, Outcome::Acked, "message {n}");
                }
            };
            let read = async {
                let item = source.next().await;
                panic!("acks are not delivered to the reader, and nothing else comes: {item:?}");
            };
            match select(Box::pin(read), Box::pin(join(send, outcomes))).await {
                Either::Left(((), _)) => unreachable!(),
                Either::Right(_) => {}
            }
        });
        done.store(true, Ordering::SeqCst);
        faults.join().expect("the fault thread")
    });

    assert_eq!(acks.unacked(), 0);
    assert!(acks.take_failed().is_empty());
    assert!(
        made.len() >= MIN_CUTS && stalls >= MIN_CUTS / 3,
        "{} cuts ({stalls} half-open) before the last message",
        made.len()
    );
    if let Ok(path) = std::env::var("DELIVERY_PEERS_DUMP") {
        std::fs::write(path, peer.stderr_lines().join("\n")).unwrap();
    }
    // Per connection: how many it got that an earlier one had got already.
    let mut got = std::collections::BTreeSet::new();
    let mut again_per_connection = vec![0usize];
    for line in peer.stderr_lines() {
        if line == "connect" {
            again_per_connection.push(0);
        } else if let Some(n) = line.strip_prefix("message ").and_then(|n| n.parse::<u32>().ok()) {
            if !got.insert(n) {
                *again_per_connection.last_mut().unwrap() += 1;
            }
        }
    }
    let worst = again_per_connection.iter().copied().max().unwrap_or(0);
    let received = received(&peer);
    let mut times: BTreeMap<u32, u32> = BTreeMap::new();
    for n in &received {
        *times.entry(*n).or_default() += 1;
    }
    let lost = (1..=TOTAL).filter(|n| !times.contains_key(n)).count();
    let duplicates = received.len() - times.len();
    let bound = WINDOW * made.len();
    eprintln!(
        "acked sends: sent={TOTAL} acked={TOTAL} lost={lost} cuts={} (rst+fin {}, half-open {stalls}) \
         connections={} duplicates={duplicates} (at most {worst} on one connection; bound {WINDOW} each, \
         {bound} in all)",
        made.len(),
        made.len() - stalls,
        proxy.accepted(),
    );
    assert_eq!(lost, 0, "numbers the peer never got");
    assert_eq!(
        times.len(),
        usize::try_from(TOTAL).unwrap(),
        "nothing but 1..=10000 arrived"
    );
    assert!(duplicates <= bound, "{duplicates} duplicates over {} cuts", made.len());
    assert!(
        worst <= WINDOW,
        "a connection got {worst} messages again: {again_per_connection:?}"
    );
    // Each cut waited for a connection newer than the one before it (the last may have landed after the
    // last outcome, before any reconnect).
    assert!(proxy.accepted() >= made.len(), "each cut ended its own connection");
}

// ---- (b) Resume against a replay buffer -------------------------------------------------------------------

fn seq_of(message: &Message) -> Option<Position> {
    let value: serde_json::Value = serde_json::from_str(text(message)?).ok()?;
    Some(Position::new(value.get("seq")?.as_u64()?))
}

fn resume_request(last: Position) -> Vec<Message> {
    vec![Message::text(
        serde_json::json!({"op": "resume", "from": last.seq}).to_string(),
    )]
}

/// The peer's `resume N first M` lines: what each resumed connection asked for and where the peer began.
fn resumes(peer: &Peer) -> Vec<(u64, u64)> {
    (peer.stderr_lines().iter())
        .filter_map(|line| {
            let (from, first) = line.strip_prefix("resume ")?.split_once(" first ")?;
            Some((from.parse().ok()?, first.parse().ok()?))
        })
        .collect()
}

/// What a reader of a [`ResumeLayer`] stream saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every position delivered, in order.
    positions: Vec<u64>,
    /// Every continuity report, with how many positions had been delivered before it.
    reports: Vec<(usize, Continuity)>,
}

/// Reads a feed of 1000 positions a second from a peer whose buffer holds `buffer` of them, through the
/// fault proxy; after every `every` positions it applies the next fault of `faults` (a cut or a stall, with
/// new connections refused for `outage`), until `total` positions have been read.
fn read_resumed_feed(
    buffer: usize,
    faults: &[Option<Cut>],
    every: usize,
    outage: Duration,
) -> Option<(Peer, Seen, Vec<Continuity>)> {
    let buffer = buffer.to_string();
    let peer = Peer::start(
        Impl::Python,
        &["--mode", "replay", "--rate", "1000", "--buffer", &buffer],
    )?;
    let proxy = Proxy::start(peer.addr());
    let observed = Arc::new(Mutex::new(Vec::new()));
    let layer = ResumeLayer::new(seq_of, resume_request).with_observer({
        let observed = Arc::clone(&observed);
        move |report: &Continuity| observed.lock().unwrap().push(*report)
    });
    let connector = ConnectorBuilder::new(connector_to(&proxy)).layer(layer).build();
    let mut stream: ReconnectingStream<_, Message> =
        ReconnectingStream::new(connector).with_retry(FixedDelay::new(ms(10)));
    let total = every * (faults.len() + 1);
    let mut seen = Seen::default();
    let mut faults = faults.iter();
    block_on_within(Duration::from_secs(60), "reading the resumed feed", async {
        while seen.positions.len() < total {
            match stream.next().await {
                Some(Ok(Resumed::Message(message))) => {
                    let position = seq_of(&message).unwrap_or_else(|| panic!("not a feed message: {message:?}"));
                    seen.positions.push(position.seq);
                    if seen.positions.len() % every == 0 {
                        if let Some(fault) = faults.next() {
                            proxy.refuse_for(outage);
                            match fault {
                                Some(cut) => {
                                    proxy.cut_all(*cut);
                                }
                                None => {
                                    proxy.stall(Direction::Both);
                                }
                            }
                        }
                    }
                }
                Some(Ok(Resumed::Continuity(report))) => seen.reports.push((seen.positions.len(), report)),
                other => panic!("the stream ended: {other:?}"),
            }
        }
    });
    let observed = observed.lock().unwrap().clone();
    Some((peer, seen, observed))
}

/// A buffer that covers every outage (100 s of the feed): each cut (a reset, a FIN, a half-open stall) ends
/// with `Recovered` right after the last position read before it, the positions run on without a hole or a
/// repeat, and the peer resumed each connection exactly where the reader stopped.
fn resume_recovers_when_the_replay_buffer_covers_the_outage() {
    let _serial = serial();
    let faults = [Some(Cut::Rst), Some(Cut::Fin), None];
    let Some((peer, seen, observed)) = read_resumed_feed(100_000, &faults, 300, ms(300)) else {
        return;
    };
    let first = seen.positions[0];
    let expected: Vec<u64> = (first..).take(seen.positions.len()).collect();
    assert_eq!(seen.positions, expected, "one run of positions, no hole, no repeat");
    // A report comes where the reader is when the new connection's first message shows: after what the
    // client had already received when the cut came.
    let cuts = [300, 600, 900];
    assert_eq!(seen.reports.len(), cuts.len(), "one report per cut: {:?}", seen.reports);
    let mut asked = Vec::new();
    for ((at, report), cut) in seen.reports.iter().zip(cuts) {
        assert!(*at >= cut, "the report at {at} comes after the cut at {cut}");
        let last = seen.positions[at - 1];
        assert_eq!(
            *report,
            Continuity::Recovered {
                last: Position::new(last)
            },
            "in band, at {at}"
        );
        asked.push((last, last + 1));
    }
    let reports: Vec<Continuity> = seen.reports.iter().map(|(_, report)| *report).collect();
    assert_eq!(observed, reports, "the observer heard the same");
    assert_eq!(
        resumes(&peer),
        asked,
        "the peer resumed each connection right after the last position read"
    );
    eprintln!(
        "resume: {} positions over 3 cuts (rst, fin, half-open), 3 x Recovered, 0 gaps",
        seen.positions.len()
    );
}

/// A buffer of 50 positions (50 ms of the feed) against outages of 300 ms: each reconnect reports a `Gap`
/// whose `expected` is the position after the last one read and whose `got` is the first position the peer
/// still had, as the peer logged it; the positions run on from there.
fn resume_reports_the_exact_gap_when_the_replay_buffer_does_not_cover_the_outage() {
    let _serial = serial();
    let faults = [Some(Cut::Rst), Some(Cut::Fin)];
    let Some((peer, seen, observed)) = read_resumed_feed(50, &faults, 300, ms(300)) else {
        return;
    };
    let resumes = resumes(&peer);
    assert_eq!(resumes.len(), 2, "two resumed connections: {resumes:?}");
    assert_eq!(seen.reports.len(), 2, "one report per cut: {:?}", seen.reports);
    let mut gaps = Vec::new();
    for (((at, report), cut), (from, first)) in seen.reports.iter().zip([300, 600]).zip(&resumes) {
        assert!(*at >= cut, "the report at {at} comes after the cut at {cut}");
        assert_eq!(
            *from,
            seen.positions[at - 1],
            "the peer was asked to resume after the last read"
        );
        assert!(*first > from + 1, "the outage outlasted the buffer: {from} -> {first}");
        let gap = Continuity::Gap {
            expected: Position::new(from + 1),
            got: Position::new(*first),
        };
        assert_eq!(*report, gap, "in band, at {at}, with the peer's numbers");
        assert_eq!(
            seen.positions[*at], *first,
            "the first position after the gap is the one reported"
        );
        gaps.push(gap);
    }
    assert_eq!(observed, gaps, "the observer heard the same");
    for pair in seen.positions.windows(2) {
        assert!(pair[1] > pair[0], "positions only go forward: {pair:?}");
    }
    let missed: Vec<u64> = gaps
        .iter()
        .map(|gap| match gap {
            Continuity::Gap { expected, got } => got.seq - expected.seq,
            Continuity::Recovered { .. } => 0,
        })
        .collect();
    eprintln!("resume: 2 cuts against a 50-position buffer, gaps of {missed:?} positions, reported exactly");
}

// ---- (c) The TTL queue policy -----------------------------------------------------------------------------

/// `DropOlderThan(1 s)` while the path is cut and refused for 2 s: five messages queued at about 0.3 s have
/// waited longer than the TTL when the connection comes back, and are handed back (`take_dropped`, and an
/// `Event::Dropped`); five queued at about 1.5 s arrive, in order, and are the only ones the peer gets.
fn the_ttl_policy_hands_back_what_is_too_old_and_sends_the_rest_in_order() {
    let _serial = serial();
    let Some(peer) = Peer::start(Impl::Python, &["--mode", "echo"]) else {
        return;
    };
    let proxy = Proxy::start(peer.addr());
    let recorder = Recorder::new();
    let mut stream: ReconnectingStream<_, Message> = ReconnectingStream::new(connector_to(&proxy))
        .with_retry(FixedDelay::new(ms(20)))
        .with_queue_policy(QueuePolicy::DropOlderThan(Duration::from_secs(1)))
        .with_observer(recorder.observer());
    let old: Vec<Message> = (1..=5).map(|n| Message::text(format!("old {n}"))).collect();
    let new: Vec<Message> = (1..=5).map(|n| Message::text(format!("new {n}"))).collect();
    block_on_within(Duration::from_secs(30), "the TTL policy", async {
        stream.send(Message::text("warm")).await.unwrap();
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            Message::text("warm"),
            "before any ping is due"
        );
        proxy.refuse_for(Duration::from_secs(2));
        proxy.cut_all(Cut::Rst);
        // Reading notices the cut (and keeps the stream retrying); nothing can arrive.
        assert!(within(ms(300), stream.next()).await.is_err());
        for message in &old {
            stream.feed(message.clone()).await.unwrap();
        }
        assert!(within(ms(1200), stream.next()).await.is_err(), "still refused");
        for message in &new {
            stream.feed(message.clone()).await.unwrap();
        }
        stream.flush().await.unwrap();
        for message in &new {
            assert_eq!(stream.next().await.unwrap().unwrap(), *message);
        }
    });
    assert_eq!(
        std::pin::Pin::new(&mut stream).take_dropped(),
        old,
        "handed back, in order"
    );
    let dropped = recorder.count(|event| matches!(event, Event::Dropped { .. }));
    assert!(
        dropped >= 1,
        "the drop was reported as an event: {:?}",
        recorder.names()
    );
    let got: Vec<String> = (peer.stderr_lines().iter())
        .filter_map(|line| line.strip_prefix("message ").map(str::to_owned))
        .collect();
    assert_eq!(got, ["warm", "new 1", "new 2", "new 3", "new 4", "new 5"]);
}

fn main() {
    let tests: [(&str, fn()); 4] = [
        (
            "acked_sends_survive_rst_fin_and_half_open_cuts",
            acked_sends_survive_rst_fin_and_half_open_cuts,
        ),
        (
            "resume_recovers_when_the_replay_buffer_covers_the_outage",
            resume_recovers_when_the_replay_buffer_covers_the_outage,
        ),
        (
            "resume_reports_the_exact_gap_when_the_replay_buffer_does_not_cover_the_outage",
            resume_reports_the_exact_gap_when_the_replay_buffer_does_not_cover_the_outage,
        ),
        (
            "the_ttl_policy_hands_back_what_is_too_old_and_sends_the_rest_in_order",
            the_ttl_policy_hands_back_what_is_too_old_and_sends_the_rest_in_order,
        ),
    ];
    run_needing("delivery_peers", &[Impl::Python], &tests);
}
