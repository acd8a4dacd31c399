//! The contracts of `ReconnectingStream` (its docs list them; the sections below follow that order) pinned on
//! generic streams: a scripted connector, a manual clock and
//! counting wakers. No test waits on real time.

#[path = "../support/mod.rs"]
mod support;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::FusedStream;
use futures::{Sink, SinkExt, Stream, StreamExt};
use futures_test::task::{new_count_waker, AwokenCount};
use stream_tungstenite::retry::{ExponentialBackoff, Jitter, NoRetry};
use stream_tungstenite::time::ManualClock;
use stream_tungstenite::{
    Classification, ConnectTimeout, ConnectionState, Error, Event, Failure, QueuePolicy, ReconnectingStream,
};
use support::{Inbound, Outcome, Plan, Recorder, Script};

type Conn = ReconnectingStream<Script, u32>;

const MS: Duration = Duration::from_millis(1);

/// A harness: the stream, its script, clock, event record and a counting waker.
struct Harness {
    stream: Conn,
    script: Script,
    clock: ManualClock,
    events: Recorder,
    waker: std::task::Waker,
    wakes: AwokenCount,
}

impl Harness {
    /// Exponential backoff 100 ms -> 10 s without jitter, stable after 5 s.
    fn new(script: Script) -> Self {
        Self::with(script, |s| s)
    }

    fn with(script: Script, configure: impl FnOnce(Conn) -> Conn) -> Self {
        let clock = ManualClock::new();
        let events = Recorder::new();
        let stream = ReconnectingStream::new(script.clone())
            .with_timer(clock.clone())
            .with_observer(events.observer())
            .with_retry(ExponentialBackoff::new(100 * MS, Duration::from_secs(10)).with_jitter(Jitter::None))
            .with_stable_after(Duration::from_secs(5));
        let (waker, wakes) = new_count_waker();
        Self {
            stream: configure(stream),
            script,
            clock,
            events,
            waker,
            wakes,
        }
    }

    fn cx(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }

    fn next(&mut self) -> Poll<Option<Result<u32, Error>>> {
        let waker = self.waker.clone();
        Pin::new(&mut self.stream).poll_next(&mut Context::from_waker(&waker))
    }

    fn ready(&mut self) -> Poll<Result<(), Error>> {
        let waker = self.waker.clone();
        Pin::new(&mut self.stream).poll_ready(&mut Context::from_waker(&waker))
    }

    fn feed(&mut self, item: u32) {
        assert!(matches!(self.ready(), Poll::Ready(Ok(()))), "queue unexpectedly full");
        Pin::new(&mut self.stream).start_send(item).unwrap();
    }

    fn flush(&mut self) -> Poll<Result<(), Error>> {
        let waker = self.waker.clone();
        Pin::new(&mut self.stream).poll_flush(&mut Context::from_waker(&waker))
    }

    fn close(&mut self) -> Poll<Result<(), Error>> {
        let waker = self.waker.clone();
        Pin::new(&mut self.stream).poll_close(&mut Context::from_waker(&waker))
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn unsent(&mut self) -> Vec<u32> {
        Pin::new(&mut self.stream).take_unsent()
    }
}

fn refused_then_healthy(refusals: usize) -> Script {
    Script::new(std::iter::repeat(Outcome::Refuse).take(refusals)).then_always(Outcome::Open(Plan::healthy()))
}

// ---- 1. Lazy ------------------------------------------------------------------------------------------------

#[test]
fn c1_nothing_connects_until_first_poll() {
    for first_poll in ["next", "ready", "flush"] {
        let mut h = Harness::new(refused_then_healthy(0));
        assert_eq!(h.script.attempts(), 0);
        assert_eq!(h.stream.state(), ConnectionState::Idle);
        assert!(h.events.events().is_empty());
        match first_poll {
            "next" => assert!(h.next().is_pending()),
            "ready" => assert!(h.ready().is_ready()),
            _ => assert!(h.flush().is_ready()),
        }
        assert_eq!(h.script.attempts(), 1, "first poll of {first_poll} dials once");
    }
}

// ---- 2. Items -----------------------------------------------------------------------------------------------

#[test]
fn c2_transient_failures_are_events_not_items() {
    let script = Script::new([
        Outcome::Open(Plan::errors_after(vec![1, 2])),
        Outcome::Refuse,
        Outcome::Open(Plan::ends_after(vec![3])),
    ])
    .then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::new(script);
    assert!(matches!(h.next(), Poll::Ready(Some(Ok(1)))));
    assert!(matches!(h.next(), Poll::Ready(Some(Ok(2)))));
    // The read error is a disconnect, not an item: backoff.
    assert!(h.next().is_pending());
    h.advance(100 * MS);
    assert!(h.next().is_pending(), "refused: backing off again");
    h.advance(200 * MS);
    assert!(matches!(h.next(), Poll::Ready(Some(Ok(3)))));
    assert!(h.next().is_pending());
    assert_eq!(h.stream.generation(), 2);
    let names = h.events.names();
    assert_eq!(names.iter().filter(|n| **n == "disconnected").count(), 2, "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "connect-failed").count(), 1, "{names:?}");
}

#[test]
fn c2_give_up_yields_one_error_with_last_cause_then_none_forever() {
    let mut h = Harness::with(Script::new([]), |s| {
        s.with_retry(
            ExponentialBackoff::new(100 * MS, Duration::from_secs(1))
                .with_jitter(Jitter::None)
                .with_max_attempts(3),
        )
    });
    assert!(h.next().is_pending());
    h.advance(100 * MS);
    assert!(h.next().is_pending());
    h.advance(200 * MS);
    let Poll::Ready(Some(Err(error))) = h.next() else {
        panic!("expected the give-up error");
    };
    assert!(error.is_gave_up());
    assert!(matches!(
        &error,
        Error::GaveUp {
            attempts: 3,
            unsent: 0,
            ..
        }
    ));
    let failure = error.failure().unwrap();
    assert!(matches!(failure, Failure::Connect { attempt: 3, .. }));
    assert_eq!(
        failure.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    for _ in 0..3 {
        assert!(matches!(h.next(), Poll::Ready(None)));
    }
    assert!(h.stream.is_terminated());
    assert_eq!(h.stream.state(), ConnectionState::Terminated);
    assert_eq!(h.script.attempts(), 3);
    h.advance(Duration::from_secs(60));
    assert_eq!(h.script.attempts(), 3, "never dials again");
    assert!(matches!(h.ready(), Poll::Ready(Err(Error::GaveUp { .. }))));
}

#[test]
fn c2_after_close_the_stream_yields_none() {
    let mut h = Harness::new(refused_then_healthy(0));
    assert!(h.next().is_pending());
    assert!(matches!(h.close(), Poll::Ready(Ok(()))));
    assert!(matches!(h.next(), Poll::Ready(None)));
    assert!(h.stream.is_terminated());
}

// ---- 3. Nothing accepted is lost ----------------------------------------------------------------------------

#[test]
fn c3_failed_flush_is_sent_again_on_the_next_connection() {
    let script = Script::new([Outcome::Open(Plan {
        fail_flush_at: Some(0),
        ..Plan::default()
    })])
    .then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::new(script);
    for n in 1..=3 {
        h.feed(n);
    }
    assert!(h.flush().is_pending(), "flush failed: backing off");
    assert_eq!(h.stream.queued(), 3);
    h.advance(100 * MS);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.script.conn(0).written(), [1, 2, 3]);
    assert_eq!(h.script.conn(0).flushed(), 0);
    assert_eq!(h.script.conn(1).written(), [1, 2, 3]);
    assert_eq!(h.script.conn(1).flushed(), 3);
    h.script.check_send_contract(&[1, 2, 3], &[]).unwrap();
}

#[test]
fn c3_failed_write_is_sent_again_on_the_next_connection() {
    let script = Script::new([Outcome::Open(Plan {
        fail_write_at: Some(1),
        ..Plan::default()
    })])
    .then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::new(script);
    for n in 1..=3 {
        h.feed(n);
    }
    assert!(h.flush().is_pending());
    h.advance(100 * MS);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.script.conn(0).written(), [1]);
    assert_eq!(h.script.conn(1).written(), [1, 2, 3]);
    h.script.check_send_contract(&[1, 2, 3], &[]).unwrap();
}

#[test]
fn c3_messages_written_but_unflushed_when_the_read_side_fails_are_sent_again() {
    let script = Script::new([Outcome::Open(Plan {
        hold_flush: true,
        ..Plan::default()
    })])
    .then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::new(script);
    h.feed(1);
    h.feed(2);
    assert!(h.flush().is_pending(), "flush held");
    assert_eq!(h.script.conn(0).written(), [1, 2]);
    h.script.conn(0).push(Inbound::Error);
    assert!(h.next().is_pending(), "read error: backing off");
    h.advance(100 * MS);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.script.conn(1).written(), [1, 2]);
    h.script.check_send_contract(&[1, 2], &[]).unwrap();
}

#[test]
fn c3_queued_while_disconnected_go_out_in_order_before_later_sends() {
    let mut h = Harness::new(refused_then_healthy(1));
    h.feed(1);
    h.feed(2);
    assert!(h.flush().is_pending(), "refused: backing off");
    h.feed(3);
    h.advance(100 * MS);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    h.feed(4);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.script.conn(0).written(), [1, 2, 3, 4]);
    h.script.check_send_contract(&[1, 2, 3, 4], &[]).unwrap();
}

#[test]
fn c3_give_up_hands_back_every_unsent_message_and_says_how_many() {
    let mut h = Harness::with(Script::new([]), |s| {
        s.with_retry(stream_tungstenite::retry::FixedDelay::new(100 * MS).with_max_attempts(2))
    });
    h.feed(1);
    h.feed(2);
    h.feed(3);
    assert!(h.flush().is_pending(), "first attempt refused");
    h.advance(100 * MS);
    let Poll::Ready(Err(error)) = h.flush() else {
        panic!("expected give-up");
    };
    assert_eq!(error.unsent(), 3);
    assert!(matches!(
        h.next(),
        Poll::Ready(Some(Err(Error::GaveUp { unsent: 3, .. })))
    ));
    assert_eq!(h.unsent(), [1, 2, 3]);
    assert!(matches!(
        h.events.events().last(),
        Some(Event::GaveUp { unsent: 3, .. })
    ));
}

/// Once the unsent messages are taken back, the end says so: its count is what is left, not what was.
#[test]
fn c3_the_end_reports_what_is_left_after_take_unsent() {
    let mut h = Harness::with(Script::new([]), |s| {
        s.with_retry(stream_tungstenite::retry::FixedDelay::new(100 * MS).with_max_attempts(2))
    });
    h.feed(1);
    h.feed(2);
    assert!(h.flush().is_pending(), "first attempt refused");
    h.advance(100 * MS);
    assert!(matches!(h.flush(), Poll::Ready(Err(Error::GaveUp { unsent: 2, .. }))));
    assert_eq!(h.unsent(), [1, 2]);
    let Poll::Ready(Err(error)) = h.flush() else {
        panic!("the sink reports the end");
    };
    assert_eq!(error.unsent(), 0, "{error}");
    assert!(error.to_string().contains("(0 unsent)"), "{error}");
    let Poll::Ready(Some(Err(error))) = h.next() else {
        panic!("the stream yields the end once");
    };
    assert_eq!(error.unsent(), 0, "{error}");
}

#[test]
fn c3_start_send_after_the_end_keeps_the_message() {
    let mut h = Harness::with(Script::new([]), |s| s.with_retry(NoRetry));
    assert!(matches!(h.next(), Poll::Ready(Some(Err(_)))));
    assert!(h.ready().is_ready());
    // A caller that ignores poll_ready's error still loses nothing.
    Pin::new(&mut h.stream).start_send(9).unwrap();
    assert_eq!(h.unsent(), [9]);
}

// ---- 4. Bounded ---------------------------------------------------------------------------------------------

/// `start_send` without a `poll_ready` that found room is refused, with a typed error: the queue never grows
/// past its capacity, and what it holds is untouched.
#[test]
fn c4_start_send_on_a_full_queue_is_refused_and_the_bound_holds() {
    let mut h = Harness::with(refused_then_healthy(1), |s| s.with_queue_capacity(2));
    h.feed(1);
    h.feed(2);
    let refused = Pin::new(&mut h.stream).start_send(3);
    assert!(matches!(refused, Err(Error::Full { capacity: 2 })), "{refused:?}");
    assert!(refused.unwrap_err().to_string().contains("poll_ready"));
    assert_eq!(h.stream.queued(), 2);
    assert_eq!(h.unsent(), [1, 2]);
}

#[test]
fn c4_full_queue_is_backpressure_that_keeps_driving_the_reconnection() {
    let mut h = Harness::with(refused_then_healthy(1), |s| s.with_queue_capacity(2));
    h.feed(1);
    h.feed(2);
    assert!(h.ready().is_pending(), "full while disconnected");
    assert_eq!(h.stream.queued(), 2);
    assert_eq!(h.wakes.get(), 0);
    assert!(h.ready().is_pending());
    assert_eq!(h.wakes.get(), 0, "no self-wake while waiting");
    h.advance(100 * MS);
    assert_eq!(h.wakes.get(), 1, "the backoff timer wakes the blocked sender");
    assert!(
        matches!(h.ready(), Poll::Ready(Ok(()))),
        "reconnected and flushed by poll_ready"
    );
    assert_eq!(h.script.conn(0).flushed(), 2);
}

#[test]
fn c4_full_queue_waits_for_a_slow_connection() {
    let script = Script::new([Outcome::Open(Plan {
        hold_flush: true,
        ..Plan::default()
    })]);
    let mut h = Harness::with(script, |s| s.with_queue_capacity(2));
    h.feed(1);
    h.feed(2);
    assert!(
        h.ready().is_pending(),
        "written but unflushed still count against the capacity"
    );
    assert_eq!(h.script.conn(0).written(), [1, 2]);
    let before = h.wakes.get();
    h.script.conn(0).release_writes();
    assert_eq!(h.wakes.get(), before + 1);
    assert!(matches!(h.ready(), Poll::Ready(Ok(()))));
    assert_eq!(h.stream.queued(), 0);
}

// ---- 5. Ordering and generations ----------------------------------------------------------------------------

#[test]
fn c5_each_connection_has_the_next_generation_in_events_and_state() {
    let script = Script::new([
        Outcome::Open(Plan::ends_after(vec![10])),
        Outcome::Open(Plan::ends_after(vec![20])),
    ])
    .then_always(Outcome::Open(Plan::ends_after(vec![30])));
    let mut h = Harness::with(script, |s| s.with_retry(stream_tungstenite::retry::Immediate::new()));
    let mut items = Vec::new();
    for _ in 0..3 {
        let Poll::Ready(Some(Ok(item))) = h.next() else {
            panic!("expected an item");
        };
        items.push((item, h.stream.generation()));
        assert_eq!(
            h.stream.state(),
            ConnectionState::Connected {
                generation: h.stream.generation()
            }
        );
    }
    assert_eq!(items, [(10, 1), (20, 2), (30, 3)]);
    let generations: Vec<u64> = h
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Connected { generation, .. } => Some(generation),
            _ => None,
        })
        .collect();
    assert_eq!(generations, [1, 2, 3]);
}

#[test]
fn c5_sends_keep_their_order_across_reconnects() {
    // Three connections fail at different points; every message still arrives in order.
    let script = Script::new([
        Outcome::Open(Plan {
            fail_flush_at: Some(1),
            ..Plan::default()
        }),
        Outcome::Refuse,
        Outcome::Open(Plan {
            fail_write_at: Some(2),
            ..Plan::default()
        }),
    ])
    .then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::with(script, |s| s.with_retry(stream_tungstenite::retry::Immediate::new()));
    let mut accepted = Vec::new();
    for n in 0..10 {
        h.feed(n);
        accepted.push(n);
        if n % 3 == 2 {
            while h.flush().is_pending() {}
        }
    }
    while h.flush().is_pending() {}
    assert!(h.script.connections() >= 3);
    h.script.check_send_contract(&accepted, &[]).unwrap();
    assert_eq!(h.script.delivered().last(), Some(&9));
}

// ---- 6. Flap-aware backoff ----------------------------------------------------------------------------------

#[test]
fn c6_a_connection_that_drops_before_stable_after_keeps_the_backoff_growing() {
    let script = Script::new([]).then_always(Outcome::Open(Plan::ends_after(vec![])));
    let mut h = Harness::new(script);
    assert!(h.next().is_pending());
    for expected in [100, 200, 400, 800] {
        assert_eq!(h.events.delays().last(), Some(&(expected * MS)));
        h.advance(expected * MS);
        assert!(h.next().is_pending());
    }
    assert_eq!(h.script.connections(), 5, "accepted every time, dropped every time");
}

#[test]
fn c6_backoff_resets_only_after_a_stable_connection() {
    let script = Script::new([
        Outcome::Refuse,
        Outcome::Refuse,
        Outcome::Open(Plan::healthy()),
        Outcome::Refuse,
    ])
    .then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::new(script);
    assert!(h.next().is_pending());
    h.advance(100 * MS);
    assert!(h.next().is_pending());
    h.advance(200 * MS);
    assert!(h.next().is_pending());
    assert_eq!(h.stream.generation(), 1);
    // Up for longer than stable_after (5 s), then dropped.
    h.advance(Duration::from_secs(6));
    h.script.conn(0).push(Inbound::End);
    assert!(h.next().is_pending());
    assert_eq!(h.events.delays(), [100 * MS, 200 * MS, 100 * MS]);
    h.advance(100 * MS);
    assert!(h.next().is_pending(), "refused once more");
    assert_eq!(h.events.delays().last(), Some(&(200 * MS)));
}

#[test]
fn c6_jitter_is_on_by_default() {
    let clock = ManualClock::new();
    let events = Recorder::new();
    let mut stream: Conn = ReconnectingStream::new(Script::new([]))
        .with_timer(clock.clone())
        .with_observer(events.observer());
    let (waker, _) = new_count_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut stream).poll_next(&mut cx).is_pending());
    for _ in 0..20 {
        clock.advance(Duration::from_secs(60));
        assert!(Pin::new(&mut stream).poll_next(&mut cx).is_pending());
    }
    let delays = events.delays();
    // ExponentialBackoff::default(): 100 ms x 2^n, equal jitter: within [d/2, d], and not all at d.
    for (n, delay) in delays.iter().enumerate() {
        let d = (100 * MS * 2u32.pow(n.min(20) as u32)).min(Duration::from_secs(30));
        assert!(
            *delay >= d / 2 && *delay <= d,
            "delay {n} = {delay:?}, expected within [{:?}, {d:?}]",
            d / 2
        );
    }
    assert!(delays
        .iter()
        .enumerate()
        .any(|(n, delay)| *delay != (100 * MS * 2u32.pow(n as u32)).min(Duration::from_secs(30))));
}

#[test]
fn c6_max_elapsed_budget_gives_up() {
    let mut h = Harness::with(Script::new([]), |s| {
        s.with_retry(
            stream_tungstenite::retry::FixedDelay::new(Duration::from_secs(1)).with_max_elapsed(Duration::from_secs(3)),
        )
    });
    assert!(h.next().is_pending());
    let mut polls = 0;
    let error = loop {
        h.advance(Duration::from_secs(1));
        match h.next() {
            Poll::Ready(Some(Err(error))) => break error,
            Poll::Pending => polls += 1,
            other => panic!("unexpected {other:?}"),
        }
        assert!(polls < 10);
    };
    assert!(error.is_gave_up());
    // Failures at t = 0, 1, 2, 3 s: the fourth would retry at 4 s, past the 3 s budget.
    assert_eq!(h.script.attempts(), 4);
}

// ---- 7. Failure classes -------------------------------------------------------------------------------------

fn denied_is_fatal(failure: &Failure) -> Classification {
    match failure.downcast_ref::<std::io::Error>() {
        Some(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Classification::Fatal,
        _ => Classification::Retry,
    }
}

#[test]
fn c7_a_fatal_failure_ends_the_stream_at_once_without_retry() {
    let script = Script::new([Outcome::Fail(std::io::ErrorKind::PermissionDenied)]);
    let mut h = Harness::with(script, |s| s.with_classifier(denied_is_fatal));
    let Poll::Ready(Some(Err(error))) = h.next() else {
        panic!("expected a fatal error at once");
    };
    assert!(error.is_fatal());
    assert_eq!(h.script.attempts(), 1);
    assert!(h.events.delays().is_empty(), "no retry was scheduled");
    assert!(matches!(h.next(), Poll::Ready(None)));
}

#[test]
fn c7_a_fatal_failure_on_an_established_connection_ends_the_stream() {
    let script = Script::new([Outcome::Open(Plan::errors_after(vec![1]))]);
    let mut h = Harness::with(script, |s| {
        s.with_classifier(|f: &Failure| match f {
            Failure::Read { .. } => Classification::Fatal,
            _ => Classification::Retry,
        })
    });
    assert!(matches!(h.next(), Poll::Ready(Some(Ok(1)))));
    assert!(matches!(h.next(), Poll::Ready(Some(Err(Error::Fatal { .. })))));
    assert_eq!(h.script.attempts(), 1);
}

#[test]
fn c7_retry_after_waits_at_least_that_long_or_longer_if_the_policy_says_so() {
    let mut h = Harness::with(refused_then_healthy(3), |s| {
        s.with_classifier(|_: &Failure| Classification::RetryAfter(Duration::from_millis(250)))
    });
    assert!(h.next().is_pending());
    h.advance(250 * MS);
    assert!(h.next().is_pending());
    h.advance(250 * MS);
    assert!(h.next().is_pending());
    h.advance(400 * MS);
    assert!(h.next().is_pending());
    // Policy: 100, 200, 400 ms; Retry-After 250 ms is the floor.
    assert_eq!(h.events.delays(), [250 * MS, 250 * MS, 400 * MS]);
    assert_eq!(h.stream.generation(), 1);
}

#[test]
fn c7_connect_timeout_covers_the_whole_attempt() {
    let script = Script::new([Outcome::Hang]).then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::with(script, |s| s.with_connect_timeout(Duration::from_secs(2)));
    assert!(h.next().is_pending());
    h.advance(1999 * MS);
    assert_eq!(h.wakes.get(), 0);
    h.advance(MS);
    assert_eq!(h.wakes.get(), 1);
    assert!(h.next().is_pending());
    assert!(h.events.events().iter().any(|e| matches!(
        e,
        Event::ConnectFailed {
            failure: failure @ Failure::Connect { attempt: 1, .. }
        } if failure.downcast_ref::<ConnectTimeout>().is_some()
    )));
    h.advance(100 * MS);
    assert!(h.next().is_pending());
    assert_eq!(h.stream.generation(), 1);
}

// ---- 9. Close -----------------------------------------------------------------------------------------------

#[test]
fn c9_close_flushes_the_queue_closes_the_connection_and_never_reconnects() {
    let mut h = Harness::new(refused_then_healthy(0));
    assert!(h.next().is_pending());
    h.feed(1);
    h.feed(2);
    assert!(matches!(h.close(), Poll::Ready(Ok(()))));
    assert_eq!(h.script.conn(0).written(), [1, 2]);
    assert_eq!(h.script.conn(0).flushed(), 2);
    assert!(h.script.conn(0).closed());
    assert_eq!(h.stream.state(), ConnectionState::Closed);
    h.advance(Duration::from_secs(60));
    assert!(matches!(h.next(), Poll::Ready(None)));
    assert!(matches!(h.ready(), Poll::Ready(Err(Error::Closed { unsent: 0 }))));
    assert_eq!(h.script.attempts(), 1);
    assert!(matches!(h.events.events().last(), Some(Event::Closed { unsent: 0 })));
}

#[test]
fn c9_close_during_backoff_or_connect_returns_at_once_and_hands_back_the_queue() {
    for outcome in [Outcome::Refuse, Outcome::Hang] {
        let mut h = Harness::new(Script::new([outcome]).then_always(Outcome::Open(Plan::healthy())));
        h.feed(1);
        h.feed(2);
        assert!(h.flush().is_pending());
        assert!(matches!(h.close(), Poll::Ready(Err(Error::Closed { unsent: 2 }))));
        assert_eq!(h.unsent(), [1, 2]);
        h.advance(Duration::from_secs(60));
        assert!(matches!(h.next(), Poll::Ready(None)));
        assert_eq!(h.script.attempts(), 1, "never reconnects");
    }
}

#[test]
fn c9_close_is_bounded_by_the_close_timeout() {
    let script = Script::new([Outcome::Open(Plan {
        hold_flush: true,
        ..Plan::default()
    })]);
    let mut h = Harness::with(script, |s| s.with_close_timeout(Duration::from_secs(2)));
    h.feed(1);
    assert!(h.close().is_pending());
    h.advance(2 * Duration::from_secs(1));
    assert!(h.wakes.get() >= 1);
    assert!(matches!(h.close(), Poll::Ready(Err(Error::Closed { unsent: 1 }))));
    assert_eq!(h.unsent(), [1]);
}

#[test]
fn c9_a_connection_that_fails_while_closing_is_not_replaced() {
    let script = Script::new([Outcome::Open(Plan {
        fail_flush_at: Some(0),
        ..Plan::default()
    })])
    .then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::new(script);
    h.feed(1);
    assert!(matches!(h.close(), Poll::Ready(Err(Error::Closed { unsent: 1 }))));
    assert_eq!(h.script.attempts(), 1);
    assert_eq!(h.unsent(), [1]);
}

// ---- 10. Observable -----------------------------------------------------------------------------------------

#[test]
fn c10_every_transition_is_an_event_and_the_state_is_readable() {
    let script = Script::new([Outcome::Refuse, Outcome::Open(Plan::ends_after(vec![]))])
        .then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::new(script);
    assert_eq!(h.stream.state(), ConnectionState::Idle);
    assert!(h.next().is_pending());
    assert_eq!(
        h.stream.state(),
        ConnectionState::Backoff {
            attempt: 2,
            delay: 100 * MS
        }
    );
    h.advance(100 * MS);
    assert!(h.next().is_pending());
    assert_eq!(
        h.stream.state(),
        ConnectionState::Backoff {
            attempt: 3,
            delay: 200 * MS
        }
    );
    h.advance(200 * MS);
    assert!(h.next().is_pending());
    assert_eq!(h.stream.state(), ConnectionState::Connected { generation: 2 });
    assert!(matches!(h.close(), Poll::Ready(Ok(()))));
    assert_eq!(
        h.events.names(),
        [
            "connecting",
            "connect-failed",
            "retry",
            "connecting",
            "connected",
            "disconnected",
            "retry",
            "connecting",
            "connected",
            "closed"
        ]
    );
    let events = h.events.events();
    assert!(matches!(
        &events[5],
        Event::Disconnected {
            generation: 1,
            reason: Failure::Ended { generation: 1 },
            ..
        }
    ));
    assert!(matches!(
        &events[6],
        Event::RetryScheduled {
            attempt: 3,
            failures: 2,
            ..
        }
    ));
}

// ---- 11. Cancel safety --------------------------------------------------------------------------------------

#[test]
fn c11_dropping_a_pending_next_loses_nothing() {
    let mut h = Harness::new(refused_then_healthy(0));
    {
        let mut next = h.stream.next();
        let waker = h.waker.clone();
        assert!(Pin::new(&mut next).poll(&mut Context::from_waker(&waker)).is_pending());
    }
    h.script.conn(0).push(Inbound::Item(5));
    assert!(matches!(h.next(), Poll::Ready(Some(Ok(5)))));
}

#[test]
fn c11_dropping_a_send_after_it_handed_over_its_message_loses_nothing() {
    let script = Script::new([Outcome::Open(Plan {
        hold_flush: true,
        ..Plan::default()
    })]);
    let mut h = Harness::new(script);
    {
        let mut send = h.stream.send(7);
        let waker = h.waker.clone();
        assert!(Pin::new(&mut send).poll(&mut Context::from_waker(&waker)).is_pending());
    }
    assert_eq!(h.stream.queued(), 1);
    h.script.conn(0).release_writes();
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    h.script.check_send_contract(&[7], &[]).unwrap();
}

// ---- 12. Split ----------------------------------------------------------------------------------------------

#[test]
fn c12_either_half_drives_the_reconnection_and_both_are_woken() {
    let script = refused_then_healthy(1);
    let clock = ManualClock::new();
    let stream: Conn = ReconnectingStream::new(script.clone())
        .with_timer(clock.clone())
        .with_retry(ExponentialBackoff::new(100 * MS, Duration::from_secs(1)).with_jitter(Jitter::None));
    let (mut sink, mut stream) = stream.split();
    let (read_waker, read_wakes) = new_count_waker();
    let (write_waker, write_wakes) = new_count_waker();
    let mut read_cx = Context::from_waker(&read_waker);
    let mut write_cx = Context::from_waker(&write_waker);

    // The reader starts the first attempt (refused), then the writer waits on the same backoff.
    assert!(Pin::new(&mut stream).poll_next(&mut read_cx).is_pending());
    let mut send = sink.send(1);
    assert!(Pin::new(&mut send).poll(&mut write_cx).is_pending());
    assert_eq!((read_wakes.get(), write_wakes.get()), (0, 0));
    clock.advance(100 * MS);
    assert_eq!((read_wakes.get(), write_wakes.get()), (1, 1), "both halves are woken");
    // Only the writer is polled: it alone reconnects and delivers.
    assert!(matches!(Pin::new(&mut send).poll(&mut write_cx), Poll::Ready(Ok(()))));
    assert_eq!(script.conn(0).flushed(), 1);
    // The reader finds the connection up, and is woken when it drops.
    assert!(Pin::new(&mut stream).poll_next(&mut read_cx).is_pending());
    script.conn(0).push(Inbound::Item(42));
    assert!(read_wakes.get() >= 2);
    assert!(matches!(
        Pin::new(&mut stream).poll_next(&mut read_cx),
        Poll::Ready(Some(Ok(42)))
    ));
}

#[test]
fn c12_a_disconnect_seen_by_one_half_wakes_the_other() {
    let script = Script::new([Outcome::Open(Plan {
        hold_flush: true,
        ..Plan::default()
    })])
    .then_always(Outcome::Open(Plan::healthy()));
    let clock = ManualClock::new();
    let stream: Conn = ReconnectingStream::new(script.clone())
        .with_timer(clock.clone())
        .with_retry(ExponentialBackoff::new(100 * MS, Duration::from_secs(1)).with_jitter(Jitter::None));
    let (mut sink, mut stream) = stream.split();
    let (read_waker, _) = new_count_waker();
    let (write_waker, write_wakes) = new_count_waker();
    let mut read_cx = Context::from_waker(&read_waker);
    let mut write_cx = Context::from_waker(&write_waker);
    assert!(Pin::new(&mut stream).poll_next(&mut read_cx).is_pending());
    let mut send = sink.send(1);
    assert!(
        Pin::new(&mut send).poll(&mut write_cx).is_pending(),
        "flush held by the connection"
    );
    let before = write_wakes.get();
    // The reader sees the connection fail: the writer, parked on the dead connection, must hear of it.
    script.conn(0).push(Inbound::Error);
    assert!(Pin::new(&mut stream).poll_next(&mut read_cx).is_pending());
    assert!(write_wakes.get() > before, "writer woken by the reader's disconnect");
    clock.advance(100 * MS);
    assert!(matches!(Pin::new(&mut send).poll(&mut write_cx), Poll::Ready(Ok(()))));
    script.check_send_contract(&[1], &[]).unwrap();
}

// ---- No busy loops ------------------------------------------------------------------------------------------

#[test]
fn pending_never_wakes_itself() {
    let mut h = Harness::new(refused_then_healthy(1));
    h.feed(7);
    for _ in 0..5 {
        assert!(h.next().is_pending(), "refused: backing off");
        assert!(h.flush().is_pending(), "a message is queued and no connection is up");
    }
    assert_eq!(h.wakes.get(), 0, "nothing happened: nobody is woken");
    h.advance(100 * MS);
    assert_eq!(
        h.wakes.get(),
        1,
        "the backoff ended: one wake for the task polling both halves"
    );
    assert!(h.next().is_pending());
    assert_eq!(h.stream.generation(), 1);
    assert_eq!(
        h.script.conn(0).flushed(),
        1,
        "the queued message went out on the read side's poll"
    );
    for _ in 0..5 {
        assert!(h.next().is_pending());
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    }
    assert_eq!(h.wakes.get(), 1, "an idle connection wakes nobody");
    let _ = h.cx();
}

// ---- Delivery: queue policies, a byte bound, first messages ---------------------------------------------------

/// Drives the stream until a connection is up (the script's refusals and their backoff included).
fn connect_through(h: &mut Harness) {
    for _ in 0..100 {
        if h.stream.state().is_connected() {
            return;
        }
        let _ = h.flush();
        if let Some(due) = h.clock.next_deadline() {
            h.advance(due);
        }
    }
    panic!("never connected: {:?}", h.stream.state());
}

/// TTL: at the reconnect, what has waited longer than the TTL is handed back and reported; the rest goes out,
/// in order.
#[test]
fn d1_a_ttl_hands_back_what_is_too_old_at_the_reconnect_and_sends_the_rest_in_order() {
    let script = Script::new([Outcome::Open(Plan::ends_after(vec![])), Outcome::Refuse])
        .then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::with(script, |s| {
        s.with_queue_policy(QueuePolicy::DropOlderThan(Duration::from_secs(3)))
    });
    assert!(
        h.next().is_pending(),
        "the first connection ends, the next attempt is refused: backoff"
    );
    h.feed(1);
    h.advance(Duration::from_secs(2));
    h.feed(2);
    h.advance(Duration::from_secs(2));
    h.feed(3);
    // Now 1 waited 4 s, 2 waited 2 s, 3 none: the reconnect drops 1.
    connect_through(&mut h);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    let last = h.script.connections() - 1;
    assert_eq!(h.script.conn(last).written(), [2, 3]);
    assert_eq!(Pin::new(&mut h.stream).take_dropped(), [1]);
    assert!(h
        .events
        .events()
        .iter()
        .any(|e| matches!(e, Event::Dropped { count: 1, .. })));
}

/// Clear on reconnect: what was queued while down is handed back; the first connection sends everything.
#[test]
fn d2_clear_on_reconnect_hands_back_the_queue_but_not_on_the_first_connection() {
    let script = Script::new([Outcome::Refuse, Outcome::Open(Plan::ends_after(vec![]))])
        .then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::with(script, |s| s.with_queue_policy(QueuePolicy::ClearOnReconnect));
    h.feed(1);
    connect_through(&mut h);
    assert!(
        matches!(h.flush(), Poll::Ready(Ok(()))),
        "1 goes out on the first connection"
    );
    assert_eq!(h.script.conn(0).written(), [1]);
    assert!(h.next().is_pending(), "the connection ends");
    h.feed(2);
    h.feed(3);
    connect_through(&mut h);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.script.conn(1).written(), Vec::<u32>::new());
    assert_eq!(Pin::new(&mut h.stream).take_dropped(), [2, 3]);
}

/// A predicate gets each message and its age.
#[test]
fn d3_a_predicate_keeps_what_it_keeps() {
    let mut h = Harness::with(refused_then_healthy(1), |s| {
        s.with_queue_policy(QueuePolicy::keep(|n: &u32, _| n % 2 == 0))
    });
    for n in 1..=4 {
        h.feed(n);
    }
    connect_through(&mut h);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.script.conn(0).written(), [2, 4]);
    assert_eq!(Pin::new(&mut h.stream).take_dropped(), [1, 3]);
}

/// A byte bound beside the count bound: `poll_ready` is pending once it is reached, and a flush makes room.
#[test]
fn d4_a_byte_bound_is_backpressure() {
    // u32 weighs 4 bytes: 12 bytes hold 3 messages.
    let mut h = Harness::with(refused_then_healthy(1), |s| s.with_queue_bytes(12));
    h.feed(1);
    h.feed(2);
    h.feed(3);
    assert_eq!(h.stream.queued_bytes(), Some(12));
    assert!(h.ready().is_pending(), "12 bytes queued: full");
    connect_through(&mut h);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.stream.queued_bytes(), Some(0));
    assert!(matches!(h.ready(), Poll::Ready(Ok(()))));
}

/// Each new connection sends its first messages before the queued ones; `clear` hands the queue back.
#[test]
fn d5_first_messages_go_before_the_queue_on_every_connection() {
    let script = Script::new([Outcome::Open(Plan::ends_after(vec![]))]).then_always(Outcome::Open(Plan::healthy()));
    let mut h = Harness::with(script, |s| {
        s.with_first_messages(|generation| vec![100 + generation as u32])
    });
    h.feed(1);
    connect_through(&mut h);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.script.conn(0).written(), [101, 1]);
    assert!(h.next().is_pending(), "the connection ends");
    h.feed(2);
    h.feed(3);
    assert_eq!(Pin::new(&mut h.stream).clear(), [2, 3], "clear hands the queue back");
    h.feed(4);
    connect_through(&mut h);
    assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
    assert_eq!(h.script.conn(1).written(), [102, 4]);
}

/// Attempts that fail at once with no delay between them (here a zero connect timeout against a connector
/// that never finishes, and a zero backoff) do not keep one poll busy forever: each poll makes at most a
/// couple of attempts and returns `Pending` with the task woken for the next. (Found by the state machine's
/// fuzz target: before, one `poll_next` never returned.)
#[test]
fn attempts_that_fail_at_once_without_delay_yield_between_polls() {
    let script = Script::new([]).then_always(Outcome::Hang);
    let mut h = Harness::with(script, |s| {
        s.with_connect_timeout(Duration::ZERO)
            .with_retry(stream_tungstenite::retry::FixedDelay::new(Duration::ZERO))
    });
    for polls in 1..=3 {
        assert!(h.next().is_pending());
        assert!(
            h.script.attempts() <= 2 * polls + 1,
            "{} attempts in {polls} polls",
            h.script.attempts()
        );
    }
    assert!(
        h.wakes.get() >= 3,
        "the task is woken to go on: {} wakes",
        h.wakes.get()
    );
}
