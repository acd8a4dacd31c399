//! AckLayer against its own contract on the scripted connector (deterministic). These tests FAIL on the
//! current src/delivery/ack.rs; they are the evidence for two defects found while preparing the model-based
//! property test (which is not written yet: it would only rediscover the first one).
//!
//! 1. **The window deadlocks when more is queued than the window has room for.** `AckConnection::poll_ready`
//!    returns `Pending` when `unacked + failed + written >= window`, counting `written` (messages it was
//!    handed since its last completed flush, not yet tracked). The reconnecting stream's `SendQueue::poll_write`
//!    writes every queued message before it calls `poll_flush`; on that `Pending` it returns without flushing.
//!    So once the window is filled by the connection's own unflushed writes, nothing is ever flushed, nothing
//!    becomes tracked, no ack can arrive to make room, and the flush (and every later send) waits forever.
//!    Any writer that queues more than the free room (`feed` several then `flush`, `send_all`, the client's
//!    run taking a batch from its outbox, or simply the replay after a reconnect) hits it.
//! 2. **Resends after a reconnect ignore the attempt limit.** `AckFuture::poll` adds an attempt to every
//!    unacked message and sends it again, without checking `with_attempts`: with `with_attempts(1)` a message
//!    goes out once per connection, although the docs say it is sent "in all" that many times ("Sends after a
//!    reconnect count too"); it fails only once an ack timeout passes on some connection.

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
