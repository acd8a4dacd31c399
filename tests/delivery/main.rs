//! Delivery guarantees beyond "flushed", on a scripted connector and a manual clock (deterministic):
//! acknowledged sends (outcomes, resends after a reconnect and after an ack timeout, the window, nacks) and
//! resume positions with gap reports. The proofs against a real peer through a fault proxy that cuts connections
//! are in tests/delivery_peers/main.rs.

#[path = "../support/mod.rs"]
mod support;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Sink, Stream};
use futures_test::task::noop_waker;
use stream_tungstenite::delivery::{Ack, AckLayer, Acks, Outcome};
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::FixedDelay;
use stream_tungstenite::time::ManualClock;
use stream_tungstenite::{Error, ReconnectingStream};
use support::{Inbound, Outcome as Attempt, Plan, Script};

/// Messages under 1000 are tracked by their number; inbound 1000 + n acks n, 2000 + n nacks it.
fn ack_layer(clock: &ManualClock) -> (AckLayer<u32, u32>, Acks<u32, u32>) {
    let (layer, acks) = AckLayer::new(
        |n: &u32| (*n < 1000).then_some(*n),
        |n: &u32| match *n {
            1000..=1999 => Some(Ack::Ack(n - 1000)),
            2000..=2999 => Some(Ack::Nack(n - 2000)),
            _ => None,
        },
    );
    (layer.with_timer(clock.clone()), acks)
}

struct Harness<S> {
    stream: S,
    script: Script,
    clock: ManualClock,
}

impl<S> Harness<S>
where
    S: Stream<Item = Result<u32, Error>> + Sink<u32, Error = Error> + Unpin,
{
    fn next(&mut self) -> Poll<Option<Result<u32, Error>>> {
        let waker = noop_waker();
        Pin::new(&mut self.stream).poll_next(&mut Context::from_waker(&waker))
    }

    fn flush(&mut self) -> Poll<Result<(), Error>> {
        let waker = noop_waker();
        Pin::new(&mut self.stream).poll_flush(&mut Context::from_waker(&waker))
    }

    fn feed(&mut self, n: u32) {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            Pin::new(&mut self.stream).poll_ready(&mut cx),
            Poll::Ready(Ok(()))
        ));
        Pin::new(&mut self.stream).start_send(n).unwrap();
    }

    fn written(&self, conn: usize) -> Vec<u32> {
        self.script.conn(conn).written()
    }
}

#[allow(clippy::type_complexity)] // an opaque stream and its handle
fn harness(
    script: Script,
    configure: impl FnOnce(AckLayer<u32, u32>) -> AckLayer<u32, u32>,
) -> (
    Harness<impl Stream<Item = Result<u32, Error>> + Sink<u32, Error = Error> + Unpin>,
    Acks<u32, u32>,
) {
    let clock = ManualClock::new();
    let (layer, acks) = ack_layer(&clock);
    let connector = ConnectorBuilder::new(script.clone()).layer(configure(layer)).build();
    let stream = ReconnectingStream::new(connector)
        .with_timer(clock.clone())
        .with_retry(FixedDelay::new(Duration::ZERO));
    (Harness { stream, script, clock }, acks)
}

/// Acked sends resolve; on a reconnect the unacked ones go out again first, in order, then what follows.
#[test]
fn unacked_messages_are_sent_again_first_on_the_next_connection() {
    let script = Script::new([Attempt::Open(Plan::healthy())]).then_always(Attempt::Open(Plan::healthy()));
    let (mut h, acks) = harness(script, |layer| layer);
    for n in 1..=3 {
        h.feed(n);
    }
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.written(0), [1, 2, 3]);
    assert_eq!(acks.unacked(), 3);
    h.script.conn(0).push(Inbound::Item(1001));
    assert!(h.next().is_pending(), "the ack is not delivered to the reader");
    assert_eq!(acks.try_outcome(&1), Some(Outcome::Acked));
    assert_eq!(acks.unacked(), 2);
    // The connection ends: 2 and 3 go out again first on the next one, then 4.
    h.script.conn(0).push(Inbound::End);
    assert!(h.next().is_pending());
    h.feed(4);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.written(1), [2, 3, 4]);
    for n in [2, 3, 4] {
        h.script.conn(1).push(Inbound::Item(1000 + n));
    }
    h.script.conn(1).push(Inbound::Item(7));
    assert!(
        matches!(h.next(), Poll::Ready(Some(Ok(7)))),
        "other messages reach the reader"
    );
    for n in [2, 3, 4] {
        assert_eq!(acks.try_outcome(&n), Some(Outcome::Acked), "{n}");
    }
    assert_eq!(acks.unacked(), 0);
}

/// A message with no ack in time goes out again on the same connection; once out of attempts its outcome
/// is `Failed` with the message handed back. A nack ends it at once, `Nacked`, without a resend.
#[test]
fn timeouts_resend_until_the_attempts_are_spent_and_nacks_end_at_once() {
    let script = Script::new([]).then_always(Attempt::Open(Plan::healthy()));
    let (mut h, acks) = harness(script, |layer| {
        layer.with_timeout(Duration::from_secs(1)).with_attempts(2)
    });
    h.feed(1);
    h.feed(2);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    h.script.conn(0).push(Inbound::Item(2002));
    assert!(h.next().is_pending());
    assert_eq!(acks.try_outcome(&2), Some(Outcome::Nacked(2)));
    h.clock.advance(Duration::from_secs(1));
    assert!(h.next().is_pending());
    assert_eq!(
        h.written(0),
        [1, 2, 1],
        "1 sent again after its timeout; 2 not (nacked)"
    );
    assert_eq!(acks.try_outcome(&1), None, "one attempt left");
    h.clock.advance(Duration::from_secs(1));
    assert!(h.next().is_pending());
    assert_eq!(acks.try_outcome(&1), Some(Outcome::Failed(1)));
    assert_eq!(h.written(0), [1, 2, 1], "no third attempt");
}

/// At most `window` unacked: the next flush waits until an ack makes room.
#[test]
fn the_window_bounds_what_is_unacked() {
    let script = Script::new([]).then_always(Attempt::Open(Plan::healthy()));
    let (mut h, acks) = harness(script, |layer| layer.with_window(2));
    h.feed(1);
    h.feed(2);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    h.feed(3);
    assert!(h.flush().is_pending(), "two unacked: the window is full");
    assert_eq!(h.written(0), [1, 2]);
    h.script.conn(0).push(Inbound::Item(1001));
    assert!(h.next().is_pending());
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.written(0), [1, 2, 3]);
    assert_eq!(acks.unacked(), 2);
    let futures_outcome = futures::executor::block_on(acks.outcome(&1));
    assert_eq!(futures_outcome, Outcome::Acked);
}

/// Resume: each new connection first sends the resume request for the last position; the reader gets
/// `Recovered` when the stream goes on where it stopped, `Gap` with the exact positions when it does not, in
/// band, right before the message that showed it; a replayed position already delivered is not delivered
/// again.
#[test]
fn resume_requests_recoveries_and_gaps_in_band() {
    use stream_tungstenite::delivery::{Continuity, Position, ResumeLayer, Resumed};
    let script = Script::new([
        Attempt::Open(Plan::ends_after(vec![1, 2, 3])),
        Attempt::Open(Plan::ends_after(vec![3, 4, 5])),
        Attempt::Open(Plan::healthy()),
    ]);
    let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let layer = ResumeLayer::new(
        |n: &u32| (*n < 1000).then(|| Position::new(u64::from(*n))),
        |last: Position| vec![5000 + u32::try_from(last.seq).unwrap()],
    )
    .with_observer({
        let reports = std::sync::Arc::clone(&reports);
        move |report: &Continuity| reports.lock().unwrap().push(*report)
    });
    let connector = ConnectorBuilder::new(script.clone()).layer(layer).build();
    let mut stream = ReconnectingStream::<_, u32>::new(connector)
        .with_retry(FixedDelay::new(Duration::ZERO))
        .with_timer(ManualClock::new());
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut items = Vec::new();
    while items.len() < 8 {
        match Pin::new(&mut stream).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(item))) => items.push(item),
            Poll::Pending if script.connections() == 3 && items.len() == 6 => {
                script.conn(2).push(Inbound::Item(9));
            }
            other => panic!("unexpected {other:?} after {items:?}"),
        }
    }
    let recovered = Continuity::Recovered { last: Position::new(3) };
    let gap = Continuity::Gap {
        expected: Position::new(6),
        got: Position::new(9),
    };
    assert_eq!(
        items,
        [
            Resumed::Message(1),
            Resumed::Message(2),
            Resumed::Message(3),
            Resumed::Continuity(recovered),
            Resumed::Message(4),
            Resumed::Message(5),
            Resumed::Continuity(gap),
            Resumed::Message(9),
        ]
    );
    assert_eq!(
        *reports.lock().unwrap(),
        [recovered, gap],
        "reported to the observer too"
    );
    assert_eq!(script.conn(1).written(), [5003], "the resume request, first");
    assert_eq!(script.conn(2).written(), [5005]);
}
/// What the window takes over is the layer's alone: the stream must not send it again after a reconnect.
/// (The layer once flushed on its own when its window was full of what it had been handed: the messages
/// were tracked, and acked, while the stream still held them as unflushed, and replayed them on the next
/// connection. Against a real peer that cut connections, 10,131 duplicates for 10,000 messages.)
#[test]
fn what_the_window_took_over_is_not_sent_again_by_the_stream_after_a_reconnect() {
    let script = Script::new([]).then_always(Attempt::Open(Plan::healthy()));
    let (mut h, acks) = harness(script, |layer| layer.with_window(2));
    for n in 1..=3 {
        h.feed(n);
    }
    assert!(h.flush().is_pending(), "3 waits for room");
    assert_eq!((h.written(0), acks.unacked()), (vec![1, 2], 2));
    h.script.conn(0).push(Inbound::Item(1001));
    h.script.conn(0).push(Inbound::Item(1002));
    h.script.conn(0).push(Inbound::End);
    for _ in 0..3 {
        let _ = h.next();
        let _ = h.flush();
    }
    assert_eq!(acks.try_outcome(&1), Some(Outcome::Acked));
    assert_eq!(acks.try_outcome(&2), Some(Outcome::Acked));
    let all: Vec<u32> = (0..h.script.connections()).flat_map(|conn| h.written(conn)).collect();
    assert_eq!(
        all.iter().filter(|n| **n <= 2).count(),
        2,
        "1 and 2, acked on the first connection, went out once: {all:?}"
    );
    assert!(all.contains(&3), "3 went out once there was room: {all:?}");
}

/// A flush beside the stream's own (a hook's ping, say, flushing the connection beneath it) tracks what the
/// stream wrote before the stream knows it was flushed. If the stream's own flush then fails, the stream
/// replays it while the layer resends it: the layer sends it once, not twice.
#[test]
fn what_a_foreign_flush_tracked_is_sent_once_after_a_reconnect() {
    let script = Script::new([Attempt::Open(Plan {
        hold_flush: true,
        fail_flush_at: Some(1),
        ..Plan::healthy()
    })])
    .then_always(Attempt::Open(Plan::healthy()));
    let clock = ManualClock::new();
    let (layer, acks) = ack_layer(&clock);
    let connector = ConnectorBuilder::new(script.clone()).layer(layer).build();
    let mut stream = ReconnectingStream::new(connector)
        .with_timer(clock.clone())
        .with_retry(FixedDelay::new(Duration::ZERO));
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    for n in [1, 2] {
        assert!(Pin::new(&mut stream).poll_ready(&mut cx).is_ready());
        Pin::new(&mut stream).start_send(n).unwrap();
    }
    assert!(
        Pin::new(&mut stream).poll_flush(&mut cx).is_pending(),
        "the flush is held"
    );
    assert_eq!(script.conn(0).written(), [1, 2]);
    // Someone else flushes the connection: 1 and 2 are tracked; the stream still counts them unflushed.
    script.conn(0).release_writes();
    let conn = stream.get_mut().expect("connected");
    assert!(matches!(Pin::new(conn).poll_flush(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(acks.unacked(), 2);
    // The stream's own next flush (with 3) fails: the connection is replaced.
    assert!(Pin::new(&mut stream).poll_ready(&mut cx).is_ready());
    Pin::new(&mut stream).start_send(3).unwrap();
    let _ = Pin::new(&mut stream).poll_flush(&mut cx);
    let _ = Pin::new(&mut stream).poll_flush(&mut cx);
    assert_eq!(script.connections(), 2, "reconnected");
    assert_eq!(
        script.conn(1).written(),
        [1, 2, 3],
        "1 and 2 once each (the layer's resend, not the stream's replay too), then 3"
    );
    assert_eq!(acks.unacked(), 3);
}

/// A window larger than 1024, acked in one go: every outcome can still be taken, in order (the acked ones
/// nobody asked for yet were kept only up to 1024, so awaiting the oldest waited forever).
#[test]
fn a_window_of_acks_landing_at_once_keeps_every_outcome() {
    let script = Script::new([]).then_always(Attempt::Open(Plan::healthy()));
    let (layer, acks) = AckLayer::new(
        |n: &u32| (*n < 100_000).then_some(*n),
        |n: &u32| (*n >= 100_000).then(|| Ack::Ack(n - 100_000)),
    );
    let connector = ConnectorBuilder::new(script.clone())
        .layer(layer.with_window(1500))
        .build();
    let mut stream = ReconnectingStream::new(connector)
        .with_queue_capacity(2048)
        .with_retry(FixedDelay::new(Duration::ZERO));
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    for n in 1..=1500 {
        assert!(Pin::new(&mut stream).poll_ready(&mut cx).is_ready());
        Pin::new(&mut stream).start_send(n).unwrap();
    }
    assert!(matches!(Pin::new(&mut stream).poll_flush(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(acks.unacked(), 1500);
    for n in 1..=1500 {
        script.conn(0).push(Inbound::Item(100_000 + n));
    }
    assert!(Pin::new(&mut stream).poll_next(&mut cx).is_pending());
    assert_eq!(acks.unacked(), 0);
    let missing: Vec<u32> = (1..=1500)
        .filter(|n| acks.try_outcome(n) != Some(Outcome::Acked))
        .collect();
    assert!(
        missing.is_empty(),
        "{} outcomes forgotten, from {:?}",
        missing.len(),
        missing.first()
    );
}

mod model;
