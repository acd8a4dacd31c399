//! AckLayer and ResumeLayer against their contracts on the scripted connector (deterministic).
//!
//! The three scripted tests first are regression tests for two defects, both fixed in commit 1e4018b (they
//! failed before it):
//!
//! 1. **The window deadlocked when more was queued than the window had room for.** `AckConnection::poll_ready`
//!    returned `Pending` when `unacked + failed + written >= window`, counting `written` (messages handed to it
//!    since its last completed flush, not yet tracked), and the reconnecting stream's queue writes every queued
//!    message before it flushes: once the connection's own unflushed writes filled the window, nothing was
//!    flushed, nothing became tracked, no ack could make room, and sending stopped for good. Now what fills
//!    the window is flushed (and so tracked) before the room is looked at again.
//! 2. **Resends after a reconnect ignored the attempt limit.** `AckFuture::poll` sent every unacked message
//!    again whatever its attempts: with `with_attempts(1)` a message went out once per connection, although
//!    the docs say it is sent "in all" that many times ("Sends after a reconnect count too"). A message whose
//!    attempts are spent now fails instead.
//!
//! Then the model-based property tests (proptest):
//!
//! - `acked_sends_follow_the_model`: random sends, acks, nacks (of the k-th unacked id, or late ones), dropped
//!   connections, clock moves and takes of failed outcomes, with a random window (1..=8) and attempts (1..=4),
//!   against a model of the queued and unacked messages, their attempts and the outcomes. After every
//!   operation: the unacked count, every known outcome (variant and message handed back) and that nothing else
//!   is known, exactly what each connection was written (the unacked again first, in order, then new sends;
//!   timed-out resends on the same connection), the window, and that a message is written again only by a
//!   reconnect or after its ack timeout, never more often than the attempts. At the end: every message sent
//!   has exactly one fate (an outcome, or taken back unacked, in order).
//! - `resumed_streams_follow_the_model`: random per-connection replays (overlapping, continuing, jumping,
//!   changing epoch, with messages without a position) against a model of the last position: the delivered
//!   items with the in-band reports and their exact positions, the observer's reports, no replayed position
//!   delivered again, and each connection's resume request (none before a position is known).
//!
//! `the_model_run_of_a_message_the_window_took_over_before_a_reconnect` is the ack property's shrunk
//! reproduction of a third defect, which 1e4018b's window fix introduced: its `poll_ready` flushed the
//! connection itself when the window was full of unflushed writes, so messages became tracked (and could be
//! acked or fail) while the reconnecting stream still held them as unflushed, and the stream sent them again
//! after a reconnect. It fails on 1e4018b; it passes with the layer waiting for the caller's flush instead.
//!
//! `PROPTEST_CASES` sets the number of cases of each property (default 512).

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use stream_tungstenite::delivery::{Continuity, Position, ResumeLayer, Resumed};

use super::*;

/// Three queued, window 2: 1 and 2 fit, so they must be flushed (and tracked); 3 waits for an ack.
#[test]
fn a_full_window_still_flushes_what_it_was_given() {
    let script = Script::new([]).then_always(Attempt::Open(Plan::healthy()));
    let (mut h, acks) = harness(script, |layer| layer.with_window(2));
    for n in 1..=3 {
        h.feed(n);
    }
    assert!(h.flush().is_pending(), "3 must wait for room");
    for _ in 0..3 {
        let _ = h.next();
        let _ = h.flush();
    }
    assert_eq!(h.written(0), [1, 2]);
    assert_eq!(
        (h.script.conn(0).flushed(), acks.unacked()),
        (2, 2),
        "1 and 2 were written but never flushed, so never tracked: no ack can ever make room (deadlock)"
    );
}

/// The same after a reconnect: the replay of what is unacked fills the window, acks make room one message at
/// a time, and the queue behind it is larger than the window.
#[test]
fn the_replay_after_a_reconnect_does_not_deadlock_the_window() {
    let script = Script::new([]).then_always(Attempt::Open(Plan::healthy()));
    let (mut h, acks) = harness(script, |layer| layer.with_window(2));
    h.feed(1);
    h.feed(2);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    h.script.conn(0).push(Inbound::End);
    assert!(h.next().is_pending(), "the connection ends; the next one is up");
    for n in 3..=5 {
        h.feed(n);
    }
    let _ = h.flush();
    assert_eq!(h.written(1), [1, 2], "the unacked ones go out again first");
    for n in [1, 2, 3, 4, 5] {
        h.script.conn(1).push(Inbound::Item(1000 + n));
        let _ = h.next();
        let _ = h.flush();
    }
    assert_eq!(
        (h.written(1), acks.unacked()),
        (vec![1, 2, 3, 4, 5], 0),
        "3 and 4 were written after the acks of 1 and 2 but never flushed, so never acked; 5 never went out"
    );
}

/// `with_attempts(1)`: a message is sent once in all; a reconnect must not send it again (it fails instead).
#[test]
fn resends_after_a_reconnect_count_against_the_attempts() {
    let script = Script::new([]).then_always(Attempt::Open(Plan::healthy()));
    let (mut h, acks) = harness(script, |layer| layer.with_attempts(1));
    h.feed(1);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    for conn in 0..3 {
        h.script.conn(conn).push(Inbound::End);
        let _ = h.next();
        let _ = h.flush();
    }
    let sends: usize = (0..h.script.connections()).map(|conn| h.written(conn).len()).sum();
    assert_eq!(
        (sends, acks.try_outcome(&1)),
        (1, Some(Outcome::Failed(1))),
        "sent once per connection (4 connections), its outcome still unknown"
    );
}

// The ack model.

/// The ack timeout of the model runs, in milliseconds of the manual clock.
const ACK_TIMEOUT_MS: u64 = 100;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One step of the ack model run.
#[derive(Debug, Clone)]
enum AckOp {
    /// Feed the next id and flush.
    Send,
    /// The peer acks the k-th unacked id (modulo their count; with none unacked, a late ack of some id sent).
    Ack(usize),
    /// The same with a nack.
    Nack(usize),
    /// The current connection ends; the next one comes up.
    Drop,
    /// The clock moves on by this many milliseconds.
    Advance(u16),
    /// The failed and nacked outcomes are taken (they count against the window until then).
    Take,
}

fn ack_op() -> impl Strategy<Value = AckOp> {
    prop_oneof![
        6 => Just(AckOp::Send),
        4 => any::<usize>().prop_map(AckOp::Ack),
        1 => any::<usize>().prop_map(AckOp::Nack),
        1 => Just(AckOp::Drop),
        1 => (0u16..100).prop_map(AckOp::Advance),
        2 => prop_oneof![Just(100u16), 100u16..=250].prop_map(AckOp::Advance),
        1 => Just(AckOp::Take),
    ]
}

/// A tracked message of the model.
#[derive(Debug, Clone)]
struct Tracked {
    id: u32,
    /// How many times it was written.
    attempts: u32,
    /// When it was last written (model milliseconds).
    sent: u64,
}

/// What the docs of `AckLayer` say happens, one operation at a time.
#[derive(Debug, Default)]
struct AckModel {
    window: usize,
    attempts: u32,
    /// Model milliseconds.
    now: u64,
    /// The last id sent (ids are 1, 2, ...).
    last_id: u32,
    /// Accepted by the stream, not written yet (no room in the window).
    queued: VecDeque<u32>,
    /// Tracked and not acked, oldest first.
    unacked: Vec<Tracked>,
    /// Outcomes known and not taken yet.
    known: BTreeMap<u32, Outcome<u32>>,
    /// What each connection was written.
    conns: Vec<Vec<u32>>,
}

impl AckModel {
    fn failed(&self) -> usize {
        self.known.values().filter(|o| !matches!(o, Outcome::Acked)).count()
    }

    fn write(&mut self, id: u32) {
        self.conns.last_mut().expect("a connection is up").push(id);
    }

    /// The writer flushes: what is queued goes out as far as the window has room, and is tracked.
    fn flush(&mut self) {
        while !self.queued.is_empty() && self.unacked.len() + self.failed() < self.window {
            let id = self.queued.pop_front().expect("not empty");
            self.write(id);
            self.unacked.push(Tracked {
                id,
                attempts: 1,
                sent: self.now,
            });
        }
    }

    fn resolve(&mut self, id: u32, nack: bool) {
        if let Some(at) = self.unacked.iter().position(|t| t.id == id) {
            self.unacked.remove(at);
            let outcome = if nack { Outcome::Nacked(id) } else { Outcome::Acked };
            self.known.insert(id, outcome);
        }
    }

    fn fail(&mut self, spent: Vec<u32>) {
        self.unacked.retain(|t| !spent.contains(&t.id));
        for id in spent {
            self.known.insert(id, Outcome::Failed(id));
        }
    }

    /// The id the peer acks for `AckOp::Ack(k)`, if any was sent.
    fn target(&self, k: usize) -> Option<u32> {
        if !self.unacked.is_empty() {
            return Some(self.unacked[k % self.unacked.len()].id);
        }
        let written: Vec<u32> = self.conns.iter().flatten().copied().collect();
        (!written.is_empty()).then(|| written[k % written.len()])
    }

    /// A new connection: what has had every attempt fails, the rest goes out again first, in order.
    fn reconnect(&mut self) {
        self.conns.push(Vec::new());
        let spent: Vec<u32> = (self.unacked.iter())
            .filter(|t| t.attempts >= self.attempts)
            .map(|t| t.id)
            .collect();
        self.fail(spent);
        let now = self.now;
        for t in &mut self.unacked {
            t.attempts += 1;
            t.sent = now;
        }
        let resend: Vec<u32> = self.unacked.iter().map(|t| t.id).collect();
        for id in resend {
            self.write(id);
        }
    }

    /// The clock moves on: what waited a timeout for its ack goes out again on this connection, or fails once
    /// out of attempts.
    fn advance(&mut self, ms: u64) {
        self.now += ms;
        let (now, attempts) = (self.now, self.attempts);
        let mut spent = Vec::new();
        let mut resend = Vec::new();
        for t in &mut self.unacked {
            if t.sent + ACK_TIMEOUT_MS <= now {
                if t.attempts >= attempts {
                    spent.push(t.id);
                } else {
                    t.attempts += 1;
                    t.sent = now;
                    resend.push(t.id);
                }
            }
        }
        for id in resend {
            self.write(id);
        }
        self.fail(spent);
    }
}

/// One write seen on a connection: which id, on which connection, by which operation, at what model time.
#[derive(Debug, Clone, Copy)]
struct Write {
    conn: usize,
    op: usize,
    at: u64,
}

/// The ack model run: the harness, the model, and what was observed of the implementation.
struct AckRun<S> {
    h: Harness<S>,
    acks: Acks<u32, u32>,
    model: AckModel,
    /// Outcomes returned by `try_outcome` or `take_unacked` (as `None`), by id.
    fates: BTreeMap<u32, Vec<Option<Outcome<u32>>>>,
    /// Every write on every connection, by id.
    writes: BTreeMap<u32, Vec<Write>>,
    /// How much of each connection's log `writes` covers.
    seen: Vec<usize>,
}

impl<S> AckRun<S>
where
    S: Stream<Item = Result<u32, Error>> + Sink<u32, Error = Error> + Unpin,
{
    fn poll_pending(&mut self, what: &AckOp) -> Result<(), TestCaseError> {
        let polled = self.h.next();
        prop_assert!(polled.is_pending(), "{:?}: the reader got {:?}", what, polled);
        Ok(())
    }

    fn current(&self) -> usize {
        self.h.script.connections() - 1
    }

    fn apply(&mut self, index: usize, op: &AckOp) -> Result<(), TestCaseError> {
        match op {
            AckOp::Send => {
                let id = self.model.last_id + 1;
                self.model.last_id = id;
                self.h.feed(id);
                self.model.queued.push_back(id);
                let flushed = self.h.flush();
                self.model.flush();
                prop_assert_eq!(
                    flushed.is_ready(),
                    self.model.queued.is_empty(),
                    "the flush waits exactly while the window has no room for what is queued"
                );
            }
            AckOp::Ack(k) | AckOp::Nack(k) => {
                let nack = matches!(op, AckOp::Nack(_));
                if let Some(id) = self.model.target(*k) {
                    let inbound = if nack { 2000 + id } else { 1000 + id };
                    self.h.script.conn(self.current()).push(Inbound::Item(inbound));
                    self.poll_pending(op)?;
                    self.model.resolve(id, nack);
                }
            }
            AckOp::Drop => {
                self.h.script.conn(self.current()).push(Inbound::End);
                self.poll_pending(op)?;
                self.model.reconnect();
            }
            AckOp::Advance(ms) => {
                self.h.clock.advance(Duration::from_millis(u64::from(*ms)));
                self.poll_pending(op)?;
                self.model.advance(u64::from(*ms));
            }
            AckOp::Take => self.take_known(true)?,
        }
        self.record(index, op)
    }

    /// Checks every outcome the model knows with `try_outcome` (taking it); the failed and nacked ones only if
    /// `failed_too` (taking them makes room in the window). What the model does not know must be unknown.
    fn take_known(&mut self, failed_too: bool) -> Result<(), TestCaseError> {
        let known: Vec<(u32, Outcome<u32>)> = (self.model.known.iter())
            .filter(|(_, o)| failed_too || matches!(o, Outcome::Acked))
            .map(|(id, o)| (*id, o.clone()))
            .collect();
        for (id, expected) in known {
            let got = self.acks.try_outcome(&id);
            prop_assert_eq!(got.as_ref(), Some(&expected), "the outcome of {}", id);
            self.fates.entry(id).or_default().push(got);
            self.model.known.remove(&id);
        }
        for id in 1..=self.model.last_id {
            if !self.model.known.contains_key(&id) {
                prop_assert_eq!(self.acks.try_outcome(&id), None, "no outcome (or no longer) for {}", id);
            }
        }
        Ok(())
    }

    /// Records the new writes of operation `index`, and checks that a message is written again only by a
    /// reconnect (on the new connection) or after its ack timeout, and never more often than the attempts.
    fn record(&mut self, index: usize, op: &AckOp) -> Result<(), TestCaseError> {
        let conns = self.h.script.connections();
        self.seen.resize(conns, 0);
        for conn in 0..conns {
            let log = self.h.written(conn);
            for &id in &log[self.seen[conn]..] {
                let write = Write {
                    conn,
                    op: index,
                    at: self.model.now,
                };
                let before = self.writes.entry(id).or_default();
                if let Some(last) = before.last() {
                    let resend = match op {
                        AckOp::Drop => conn > last.conn,
                        AckOp::Advance(_) => conn == last.conn && write.at >= last.at + ACK_TIMEOUT_MS,
                        _ => false,
                    };
                    prop_assert!(
                        resend,
                        "{} written again by op {} {:?} on connection {}, after op {} on connection {} at {} ms",
                        id,
                        index,
                        op,
                        conn,
                        last.op,
                        last.conn,
                        last.at
                    );
                }
                before.push(write);
                prop_assert!(
                    before.len() <= self.model.attempts as usize,
                    "{} written {} times, attempts {}",
                    id,
                    before.len(),
                    self.model.attempts
                );
            }
            self.seen[conn] = log.len();
        }
        Ok(())
    }

    /// What is checked after every operation.
    fn check(&mut self) -> Result<(), TestCaseError> {
        let m = &self.model;
        prop_assert_eq!(self.h.script.connections(), m.conns.len(), "connections");
        prop_assert_eq!(self.acks.unacked(), m.unacked.len(), "unacked; model {:?}", m.unacked);
        for (conn, expected) in m.conns.iter().enumerate() {
            prop_assert_eq!(&self.h.written(conn), expected, "written to connection {}", conn);
        }
        prop_assert!(
            m.unacked.len() + m.failed() <= m.window,
            "window {} exceeded: {} unacked, {} failed",
            m.window,
            m.unacked.len(),
            m.failed()
        );
        // On the wire: what was written and has no outcome yet is at most what the window leaves.
        let in_flight = (self.writes.keys())
            .filter(|id| !self.fates.contains_key(id) && !m.known.contains_key(id))
            .count();
        prop_assert!(in_flight + m.failed() <= m.window, "{} in flight", in_flight);
        Ok(())
    }

    /// At the end: the outcomes left are taken, then the unacked are taken back (and what the window held
    /// back is written, tracked and taken back in turn) until nothing is left.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        self.take_known(true)?;
        for _ in 0..=self.model.last_id {
            if self.model.unacked.is_empty() && self.model.queued.is_empty() {
                break;
            }
            let back = self.acks.take_unacked();
            let expected: Vec<u32> = self.model.unacked.drain(..).map(|t| t.id).collect();
            prop_assert_eq!(&back, &expected, "taken back, in order");
            for id in back {
                self.fates.entry(id).or_default().push(None);
            }
            let _ = self.h.flush();
            self.model.flush();
            self.check()?;
        }
        prop_assert_eq!(self.acks.unacked(), 0);
        // Nothing vanished: every id sent has exactly one fate (an outcome, or taken back unacked).
        for id in 1..=self.model.last_id {
            let fates = self.fates.get(&id).map_or(0, Vec::len);
            prop_assert_eq!(fates, 1, "{} has {} fates: {:?}", id, fates, self.fates.get(&id));
        }
        Ok(())
    }
}

/// Runs `ops` against the model with this window, attempts and taking of failed outcomes (`eager`: after
/// every operation; otherwise at `AckOp::Take` and at the end).
fn run_ack_model(window: usize, attempts: u32, eager: bool, ops: &[AckOp]) -> Result<(), TestCaseError> {
    let script = Script::new([]).then_always(Attempt::Open(Plan::healthy()));
    let (h, acks) = harness(script, |layer| {
        layer
            .with_window(window)
            .with_attempts(attempts)
            .with_timeout(Duration::from_millis(ACK_TIMEOUT_MS))
    });
    let model = AckModel {
        window,
        attempts,
        ..AckModel::default()
    };
    let mut run = AckRun {
        h,
        acks,
        model,
        fates: BTreeMap::new(),
        writes: BTreeMap::new(),
        seen: Vec::new(),
    };
    // The first connection comes up.
    prop_assert!(run.h.next().is_pending());
    run.model.conns.push(Vec::new());
    for (index, op) in ops.iter().enumerate() {
        run.apply(index, op)?;
        // Eagerly, or at a Take: failed and nacked outcomes are taken, making room in the window.
        run.take_known(eager)?;
        // The writer, woken by the room made, flushes (as its task would).
        let _ = run.h.flush();
        run.model.flush();
        run.record(index, op)?;
        run.check()?;
    }
    run.finish()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(512),
        // Shrunk failures are reported, not written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Acked sends against the model (see the module docs).
    #[test]
    fn acked_sends_follow_the_model(
        window in 1usize..=8,
        attempts in 1u32..=4,
        eager in any::<bool>(),
        ops in prop::collection::vec(ack_op(), 1..60),
    ) {
        run_ack_model(window, attempts, eager, &ops)?;
    }
}

/// The property's shrunk reproduction of a defect of 1e4018b's window fix (found against that commit): with
/// the window full, `AckConnection::poll_ready` flushed the connection itself, so 2 was tracked while the
/// reconnecting stream still held it as unflushed. After the reconnect 2 failed (its one attempt spent), and
/// the stream wrote it again all the same, once the window had room: a second send beyond the attempts,
/// tracked a second time.
#[test]
fn the_model_run_of_a_message_the_window_took_over_before_a_reconnect() {
    use AckOp::{Advance, Drop, Send, Take};
    let ops = [Send, Advance(100), Send, Send, Take, Send, Send, Drop];
    if let Err(error) = run_ack_model(1, 1, false, &ops) {
        panic!("{error}");
    }
    // The same with outcomes taken at once, and an ack that makes room before the reconnect.
    let ops = [
        Send,
        Send,
        Send,
        Send,
        AckOp::Ack(0),
        Drop,
        AckOp::Ack(0),
        AckOp::Ack(0),
        AckOp::Ack(0),
    ];
    if let Err(error) = run_ack_model(2, 4, true, &ops) {
        panic!("{error}");
    }
}

// The resume model.

/// Positioned messages are `epoch code * 1000 + seq` (code 0: no epoch, e + 1: epoch e), under `PLAIN`.
const PLAIN: u32 = 50_000;
/// A resume request is `REQUEST + ` the last position's message.
const REQUEST: u32 = 100_000;

fn encode(position: Position) -> u32 {
    let code = position.epoch.map_or(0, |e| e + 1);
    u32::try_from(code * 1000 + position.seq).expect("small positions")
}

fn decode(n: u32) -> Option<Position> {
    (n < PLAIN).then(|| {
        let (code, seq) = (u64::from(n / 1000), u64::from(n % 1000));
        Position {
            seq,
            epoch: code.checked_sub(1),
        }
    })
}

/// Where a connection's replay starts, from the last position delivered (or from 0 before any).
#[derive(Debug, Clone)]
enum Start {
    /// `last - k`: a replay overlapping what was delivered (`k = 0` replays the last one).
    Overlap(u64),
    /// `last + 1`: exactly where it stopped.
    Exact,
    /// `last + 1 + d`: positions missed.
    Jump(u64),
}

/// What follows in a connection.
#[derive(Debug, Clone)]
enum Step {
    Next,
    Repeat,
    Back(u64),
    Jump(u64),
    /// A new epoch (without epochs: taken as `Next`), counting from 1.
    Epoch,
    /// A message without a position.
    Plain,
}

#[derive(Debug, Clone)]
struct Replay {
    /// `None`: the connection ends without a message.
    start: Option<Start>,
    /// The replay starts in a new epoch (counting from `start` over 0).
    new_epoch: bool,
    steps: Vec<Step>,
}

fn replay() -> impl Strategy<Value = Replay> {
    let start = prop_oneof![
        3 => (0u64..4).prop_map(Start::Overlap),
        4 => Just(Start::Exact),
        2 => (1u64..4).prop_map(Start::Jump),
    ];
    let step = prop_oneof![
        8 => Just(Step::Next),
        1 => Just(Step::Repeat),
        1 => (1u64..4).prop_map(Step::Back),
        1 => (1u64..4).prop_map(Step::Jump),
        1 => Just(Step::Epoch),
        1 => Just(Step::Plain),
    ];
    (
        prop::option::weighted(0.9, start),
        prop::bool::weighted(0.15),
        prop::collection::vec(step, 0..6),
    )
        .prop_map(|(start, new_epoch, steps)| Replay {
            start,
            new_epoch,
            steps,
        })
}

/// What the docs of `ResumeLayer` say the reader gets.
#[derive(Debug, Default)]
struct ResumeModel {
    last: Option<Position>,
    resuming: bool,
    items: Vec<Resumed<u32>>,
    reports: Vec<Continuity>,
    /// What each connection was written: the resume request once a position is known.
    requests: Vec<Vec<u32>>,
}

impl ResumeModel {
    fn connect(&mut self) {
        self.resuming = self.last.is_some();
        self.requests
            .push(self.last.map(|last| REQUEST + encode(last)).into_iter().collect());
    }

    fn receive(&mut self, n: u32) {
        let Some(got) = decode(n) else {
            self.items.push(Resumed::Message(n));
            return;
        };
        let Some(last) = self.last else {
            self.last = Some(got);
            self.items.push(Resumed::Message(n));
            return;
        };
        let expected = Position {
            seq: last.seq + 1,
            epoch: last.epoch,
        };
        let report = if got.epoch != last.epoch {
            Some(Continuity::Gap { expected, got })
        } else if got.seq <= last.seq {
            // A replay of what was delivered: dropped; the next message still says whether it recovered.
            return;
        } else if got == expected {
            self.resuming.then_some(Continuity::Recovered { last })
        } else {
            Some(Continuity::Gap { expected, got })
        };
        self.resuming = false;
        self.last = Some(got);
        if let Some(report) = report {
            self.items.push(Resumed::Continuity(report));
            self.reports.push(report);
        }
        self.items.push(Resumed::Message(n));
    }

    /// The messages of `replay` on a connection that comes up now (the model reads them as it goes, so that
    /// the starts are relative to what was delivered).
    fn play(&mut self, replay: &Replay, epochs: bool, plain: &mut u32) -> Vec<u32> {
        self.connect();
        let Some(start) = &replay.start else {
            return Vec::new();
        };
        let last = self.last.unwrap_or(Position {
            seq: 0,
            epoch: epochs.then_some(0),
        });
        let (mut epoch, from) = match (epochs && replay.new_epoch, last.epoch) {
            (true, Some(e)) => (Some(e + 1), 0),
            (_, epoch) => (epoch, last.seq),
        };
        let mut seq = match start {
            Start::Overlap(k) => from.saturating_sub(*k),
            Start::Exact => from + 1,
            Start::Jump(d) => from + 1 + d,
        };
        let mut messages = vec![encode(Position { seq, epoch })];
        for step in &replay.steps {
            match step {
                Step::Next => seq += 1,
                Step::Repeat => {}
                Step::Back(k) => seq = seq.saturating_sub(*k),
                Step::Jump(d) => seq += 1 + d,
                Step::Epoch if epochs => {
                    epoch = epoch.map(|e| e + 1);
                    seq = 1;
                }
                Step::Epoch => seq += 1,
                Step::Plain => {
                    *plain += 1;
                    messages.push(PLAIN + *plain);
                    continue;
                }
            }
            messages.push(encode(Position { seq, epoch }));
        }
        for &n in &messages {
            self.receive(n);
        }
        messages
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Resume positions against the model (see the module docs).
    #[test]
    fn resumed_streams_follow_the_model(
        epochs in any::<bool>(),
        replays in prop::collection::vec(replay(), 1..8),
    ) {
        let mut model = ResumeModel::default();
        let mut plain = 0;
        let plans: Vec<Vec<u32>> = replays.iter().map(|r| model.play(r, epochs, &mut plain)).collect();
        // Every connection ends after its replay, but the last, which stays up.
        let count = plans.len();
        let script = Script::new(plans.iter().enumerate().map(|(index, items)| {
            let mut plan = Plan::ends_after(items.clone());
            if index + 1 == count {
                plan.then = None;
            }
            Attempt::Open(plan)
        }));
        let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let layer = ResumeLayer::new(|n: &u32| decode(*n), |last: Position| vec![REQUEST + encode(last)]).with_observer({
            let reports = std::sync::Arc::clone(&reports);
            move |report: &Continuity| reports.lock().unwrap().push(*report)
        });
        let connector = ConnectorBuilder::new(script.clone()).layer(layer.clone()).build();
        let mut stream = ReconnectingStream::<_, u32>::new(connector)
            .with_retry(FixedDelay::new(Duration::ZERO))
            .with_timer(ManualClock::new());
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut items = Vec::new();
        loop {
            match Pin::new(&mut stream).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(item))) => items.push(item),
                Poll::Pending => break,
                other => prop_assert!(false, "unexpected {:?} after {:?}", other, items),
            }
            prop_assert!(items.len() <= model.items.len() + 1, "more items than the model: {:?}", items);
        }
        prop_assert_eq!(script.connections(), count, "every connection came up; read {:?}", items);
        prop_assert_eq!(&items, &model.items, "the reader's items; connections {:?}", plans);
        let in_band: Vec<Continuity> = (items.iter())
            .filter_map(|item| match item {
                Resumed::Continuity(report) => Some(*report),
                Resumed::Message(_) => None,
            })
            .collect();
        prop_assert_eq!(&*reports.lock().unwrap(), &in_band, "the observer's reports are the in-band ones");
        prop_assert_eq!(&in_band, &model.reports);
        // No position at or before the last one delivered (same epoch) is delivered again.
        let mut last: Option<Position> = None;
        for got in items.iter().filter_map(|item| match item {
            Resumed::Message(n) => decode(*n),
            Resumed::Continuity(_) => None,
        }) {
            if let Some(last) = last.filter(|last| last.epoch == got.epoch) {
                prop_assert!(got.seq > last.seq, "{:?} delivered after {:?}", got, last);
            }
            last = Some(got);
        }
        prop_assert_eq!(layer.last_position(), model.last);
        // Each connection was written exactly its resume request, none before a position was known.
        for (conn, expected) in model.requests.iter().enumerate() {
            prop_assert_eq!(&script.conn(conn).written(), expected, "written to connection {}", conn);
        }
    }
}
