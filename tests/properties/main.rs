//! Property test of the state machine: random scripts of connect failures, hangs, drops, stalls, failing writes
//! and flushes, interleaved with sends, polls, clock moves and a close.
//!
//! Properties (the contracts "items", "nothing accepted is lost", "ordering" and "flap-aware backoff" of
//! `ReconnectingStream`'s docs):
//! - every accepted message reaches, in order, a connection whose flush succeeded, or is handed back at the end;
//! - a message is sent again only if its write or flush had not completed (each connection starts exactly
//!   where the previous connection's last completed flush ended);
//! - every retry delay is the policy's delay for that failure count;
//! - nothing panics;
//! - the stream ends only after a give-up or a close.

#[path = "../support/mod.rs"]
mod support;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Sink, Stream};
use futures_test::task::noop_waker;
use proptest::prelude::*;
use stream_tungstenite::retry::{ExponentialBackoff, Jitter, Limited};
use stream_tungstenite::time::ManualClock;
use stream_tungstenite::{Event, ReconnectingStream};
use support::{Inbound, Outcome, Plan, Recorder, Script};

const INITIAL: Duration = Duration::from_millis(10);
const MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
enum Op {
    Send(u8),
    Flush,
    Next,
    Advance(u16),
    Push(Inbound),
    Release,
    Close,
}

fn inbound() -> impl Strategy<Value = Inbound> {
    prop_oneof![
        4 => any::<u16>().prop_map(|n| Inbound::Item(n as u32)),
        1 => Just(Inbound::Error),
        1 => Just(Inbound::End),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        prop::collection::vec(0u32..100, 0..4),
        prop::option::of(prop_oneof![Just(Inbound::Error), Just(Inbound::End)]),
        prop::option::weighted(0.2, 0usize..6),
        prop::option::weighted(0.2, 0usize..4),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(items, then, fail_write_at, fail_flush_at, hold_flush)| Plan {
            items,
            then,
            fail_write_at,
            fail_flush_at,
            hold_flush,
            hold_writes: false,
        })
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        2 => Just(Outcome::Refuse),
        1 => Just(Outcome::Hang),
        5 => plan().prop_map(Outcome::Open),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..5).prop_map(Op::Send),
        3 => Just(Op::Flush),
        4 => Just(Op::Next),
        3 => (0u16..1500).prop_map(Op::Advance),
        2 => inbound().prop_map(Op::Push),
        1 => Just(Op::Release),
        1 => prop::bool::weighted(0.3).prop_map(|close| if close { Op::Close } else { Op::Next }),
    ]
}

fn expected_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    (INITIAL * 2u32.pow(exponent)).min(MAX)
}

struct Run {
    stream: ReconnectingStream<Script, u32>,
    script: Script,
    clock: ManualClock,
    events: Recorder,
    accepted: Vec<u32>,
    next_message: u32,
    ended: bool,
}

impl Run {
    fn cx() -> Context<'static> {
        Context::from_waker(futures_test::task::noop_waker_ref())
    }

    fn pin(&mut self) -> Pin<&mut ReconnectingStream<Script, u32>> {
        Pin::new(&mut self.stream)
    }

    fn check_end_is_explained(&self) -> Result<(), TestCaseError> {
        let explained = self
            .events
            .events()
            .iter()
            .any(|e| matches!(e, Event::GaveUp { .. } | Event::Closed { .. }));
        prop_assert!(explained, "the stream ended without a give-up or a close");
        Ok(())
    }

    fn next(&mut self) -> Result<(), TestCaseError> {
        match self.pin().poll_next(&mut Self::cx()) {
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                self.ended = true;
                self.check_end_is_explained()?;
            }
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        Ok(())
    }

    fn send(&mut self, count: u8) {
        for _ in 0..count {
            if let Poll::Ready(Ok(())) = self.pin().poll_ready(&mut Self::cx()) {
                let message = self.next_message;
                self.next_message += 1;
                self.pin().start_send(message).unwrap();
                self.accepted.push(message);
            }
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Send(count) => self.send(*count),
            Op::Flush => {
                let _ = self.pin().poll_flush(&mut Self::cx());
            }
            Op::Next => self.next()?,
            Op::Advance(ms) => self.clock.advance(Duration::from_millis(u64::from(*ms))),
            Op::Push(inbound) => {
                if let Some(last) = self.script.connections().checked_sub(1) {
                    self.script.conn(last).push(inbound.clone());
                }
            }
            Op::Release => {
                if let Some(last) = self.script.connections().checked_sub(1) {
                    self.script.conn(last).release_writes();
                }
            }
            Op::Close => {
                let _ = self.pin().poll_close(&mut Self::cx());
            }
        }
        Ok(())
    }

    /// Lets the stream deliver what it can: the script's fallback is a healthy connection, so unless the
    /// policy gave up or the stream was closed, everything queued must get flushed.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..200 {
            if let Some(last) = self.script.connections().checked_sub(1) {
                self.script.conn(last).release_writes();
            }
            let flushed = self.pin().poll_flush(&mut Self::cx());
            self.next()?;
            match flushed {
                Poll::Ready(Ok(())) if self.stream.queued() == 0 => return Ok(()),
                Poll::Ready(Err(_)) => return Ok(()),
                _ => {}
            }
            if self.stream.state().is_ended() {
                return Ok(());
            }
            self.clock
                .advance(self.clock.next_deadline().unwrap_or(Duration::from_secs(1)));
        }
        prop_assert!(false, "the stream did not settle: state {:?}", self.stream.state());
        Ok(())
    }

    fn close(&mut self) {
        for _ in 0..20 {
            if self.pin().poll_close(&mut Self::cx()).is_ready() {
                return;
            }
            self.clock.advance(Duration::from_secs(10));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn accepted_messages_are_delivered_in_order_or_handed_back(
        outcomes in prop::collection::vec(outcome(), 0..12),
        ops in prop::collection::vec(op(), 1..120),
        max_attempts in prop::option::of(1u32..8),
        capacity in 1usize..8,
    ) {
        let script = Script::new(outcomes).then_always(Outcome::Open(Plan::healthy()));
        let clock = ManualClock::new();
        let events = Recorder::new();
        let mut policy = Limited::new(ExponentialBackoff::new(INITIAL, MAX).with_jitter(Jitter::None));
        if let Some(max) = max_attempts {
            policy = policy.with_max_attempts(max);
        }
        let stream = ReconnectingStream::new(script.clone())
            .with_timer(clock.clone())
            .with_observer(events.observer())
            .with_retry(policy)
            .with_queue_capacity(capacity)
            .with_connect_timeout(Duration::from_millis(500))
            .with_close_timeout(Duration::from_secs(2))
            .with_stable_after(Duration::from_secs(5));
        let mut run = Run { stream, script, clock, events, accepted: Vec::new(), next_message: 0, ended: false };
        let _ = noop_waker();

        for op in &ops {
            run.apply(op)?;
            prop_assert!(run.stream.queued() <= capacity.max(1), "queue over capacity: {}", run.stream.queued());
        }
        run.settle()?;
        let ended_before_close = run.stream.state().is_ended();
        run.close();
        prop_assert!(run.stream.state().is_ended());
        let unsent = run.pin().take_unsent();

        // Every accepted message was delivered in order, or handed back; repeats only after a failed write or flush.
        if let Err(report) = run.script.check_send_contract(&run.accepted, &unsent) {
            prop_assert!(false, "{}", report);
        }
        // Unless the policy gave up (or the user closed early), nothing was left over.
        let gave_up = run.events.events().iter().any(|e| matches!(e, Event::GaveUp { .. }));
        let closed_early = ops.iter().any(|op| matches!(op, Op::Close));
        if !gave_up && !closed_early && !ended_before_close {
            prop_assert!(unsent.is_empty(), "{} messages left over on a healthy end", unsent.len());
        }
        // Every delay is the policy's delay for that failure count, and a give-up respects max_attempts.
        for event in run.events.events() {
            match event {
                Event::RetryScheduled { failures, delay, .. } => {
                    prop_assert_eq!(delay, expected_delay(failures));
                    if let Some(max) = max_attempts {
                        prop_assert!(failures < max);
                    }
                }
                Event::GaveUp { failures, .. } => {
                    prop_assert_eq!(Some(failures), max_attempts.map(|m| m.max(1)));
                }
                _ => {}
            }
        }
        // Generations count connections.
        prop_assert_eq!(run.stream.generation() as usize, run.script.connections());
    }
}
