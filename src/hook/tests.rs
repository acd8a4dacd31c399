//! Unit tests of hooks: the order of a group, drops, timers and the one end each instance is told.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::executor::block_on;
use futures::{SinkExt, Stream, StreamExt};
use futures_util::task::noop_waker;
use tower_layer::Layer;

use super::*;
use crate::layer::ConnectorBuilder;
use crate::{join, Connect, Join};

type Conn = Join<UnboundedReceiver<Result<String, std::io::Error>>, UnboundedSender<String>>;

/// What the recording hooks saw, in order: `"<name> <callback>"`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Records every callback; drops messages equal to `drop`; its timer sends `tick` once, if set.
#[derive(Clone)]
struct Recording {
    name: &'static str,
    log: Log,
    drop: Option<&'static str>,
    tick: Option<Tick<String>>,
}

impl Clone for Tick<String> {
    fn clone(&self) -> Self {
        match self {
            Tick::Send(message) => Tick::Send(message.clone()),
            Tick::Fail(error) => Tick::Fail(error.to_string().into()),
        }
    }
}

fn recording(name: &'static str, log: &Log) -> Recording {
    Recording {
        name,
        log: log.clone(),
        drop: None,
        tick: None,
    }
}

impl Hook<String> for Recording {
    fn on_attempt(&mut self) {
        self.log.push(format!("{} attempt", self.name));
    }

    fn on_start(&mut self) {
        self.log.push(format!("{} start", self.name));
    }

    fn on_inbound(&mut self, message: &mut String) -> Verdict {
        self.log.push(format!("{} in {message}", self.name));
        message.push_str(self.name);
        if self.drop.is_some_and(|drop| message.starts_with(drop)) {
            return Verdict::Drop;
        }
        Verdict::Pass
    }

    fn on_outbound(&mut self, message: &mut String) -> Verdict {
        self.log.push(format!("{} out {message}", self.name));
        message.push_str(self.name);
        if self.drop.is_some_and(|drop| message.starts_with(drop)) {
            return Verdict::Drop;
        }
        Verdict::Pass
    }

    fn on_end(&mut self, end: &End<'_>) {
        self.log.push(format!("{} end {end:?}", self.name));
    }

    fn poll_timer(&mut self, _cx: &mut Context<'_>) -> Poll<Tick<String>> {
        match self.tick.take() {
            Some(tick) => Poll::Ready(tick),
            None => Poll::Pending,
        }
    }
}

/// The test's ends of one in-memory connection.
struct Peer {
    feed: UnboundedSender<Result<String, std::io::Error>>,
    written: UnboundedReceiver<String>,
}

fn pipe() -> (Conn, Peer) {
    let (feed, read) = mpsc::unbounded();
    let (write, written) = mpsc::unbounded();
    (join(read, write), Peer { feed, written })
}

/// A connector handing out `conns` in turn, then refusing.
fn connector(conns: Vec<Conn>) -> impl FnMut() -> futures::future::Ready<Result<Conn, std::io::Error>> {
    let mut conns = VecDeque::from(conns);
    move || futures::future::ready(conns.pop_front().ok_or_else(|| std::io::Error::other("refused")))
}

#[test]
fn a_group_runs_outbound_first_to_last_and_inbound_last_to_first() {
    let log = Log::default();
    let (conn, mut peer) = pipe();
    let group = (recording("A", &log), recording("B", &log), recording("C", &log));
    let mut connector = HooksLayer::new(group).layer(connector(vec![conn]));
    block_on(async {
        let mut conn = connector.connect().await.unwrap();
        conn.send("m".to_owned()).await.unwrap();
        assert_eq!(peer.written.next().await.as_deref(), Some("mABC"));
        peer.feed.unbounded_send(Ok("n".to_owned())).unwrap();
        assert_eq!(conn.next().await.unwrap().unwrap(), "nCBA");
        drop(peer.feed);
        assert!(conn.next().await.is_none());
    });
    assert_eq!(
        log.take(),
        [
            "A attempt",
            "B attempt",
            "C attempt",
            "C start",
            "B start",
            "A start",
            "A out m",
            "B out mA",
            "C out mAB",
            "C in n",
            "B in nC",
            "A in nCB",
            "C end Ended",
            "B end Ended",
            "A end Ended",
        ]
    );
}

#[test]
fn hooks_added_one_after_the_other_run_as_one_group_in_the_same_order() {
    let log = Log::default();
    let (conn, mut peer) = pipe();
    let mut connector = ConnectorBuilder::new(connector(vec![conn]))
        .hook(recording("A", &log))
        .hook(recording("B", &log))
        .build();
    block_on(async {
        let mut conn = connector.connect().await.unwrap();
        conn.send("m".to_owned()).await.unwrap();
        assert_eq!(peer.written.next().await.as_deref(), Some("mAB"));
        peer.feed.unbounded_send(Ok("n".to_owned())).unwrap();
        assert_eq!(conn.next().await.unwrap().unwrap(), "nBA");
    });
    let seen = log.take();
    assert_eq!(
        &seen[..6],
        ["A attempt", "B attempt", "B start", "A start", "A out m", "B out mA"]
    );
    assert_eq!(&seen[6..8], ["B in n", "A in nB"]);
    // Dropped while up: each hook is told once.
    assert_eq!(&seen[8..], ["B end Dropped", "A end Dropped"]);
}

#[test]
fn a_dropped_message_goes_no_further() {
    let log = Log::default();
    let (conn, mut peer) = pipe();
    let mut b = recording("B", &log);
    b.drop = Some("skip");
    let mut connector = HooksLayer::new((recording("A", &log), b)).layer(connector(vec![conn]));
    block_on(async {
        let mut conn = connector.connect().await.unwrap();
        conn.send("skip".to_owned()).await.unwrap();
        conn.send("keep".to_owned()).await.unwrap();
        assert_eq!(peer.written.next().await.as_deref(), Some("keepAB"));
        peer.feed.unbounded_send(Ok("skip".to_owned())).unwrap();
        peer.feed.unbounded_send(Ok("next".to_owned())).unwrap();
        assert_eq!(conn.next().await.unwrap().unwrap(), "nextBA");
    });
    let seen = log.take();
    assert!(!seen.iter().any(|entry| entry == "A in skipB"), "{seen:?}");
    assert!(seen.iter().any(|entry| entry == "B in skip"), "{seen:?}");
}

#[test]
fn a_timers_message_passes_the_hooks_after_it_and_goes_out() {
    let log = Log::default();
    let (conn, mut peer) = pipe();
    let mut a = recording("A", &log);
    a.tick = Some(Tick::Send("ping".to_owned()));
    let mut connector = HooksLayer::new((a, recording("B", &log))).layer(connector(vec![conn]));
    block_on(async {
        let mut conn = connector.connect().await.unwrap();
        let waker = noop_waker();
        // Nothing to read: the timers run, and A's message goes out through B.
        assert!(Pin::new(&mut conn)
            .poll_next(&mut Context::from_waker(&waker))
            .is_pending());
        assert_eq!(peer.written.next().await.as_deref(), Some("pingB"));
    });
    assert!(log.take().contains(&"B out ping".to_owned()));
}

#[test]
fn a_timer_that_fails_the_connection_ends_it_with_its_error() {
    let log = Log::default();
    let (conn, _peer) = pipe();
    let mut a = recording("A", &log);
    a.tick = Some(Tick::Fail("silent".into()));
    let mut connector = HooksLayer::new((a, recording("B", &log))).layer(connector(vec![conn]));
    block_on(async {
        let mut conn = connector.connect().await.unwrap();
        let error = conn.next().await.unwrap().unwrap_err();
        assert_eq!(error.to_string(), "silent");
        drop(conn);
    });
    let seen = log.take();
    let ends: Vec<&String> = seen.iter().filter(|entry| entry.contains(" end ")).collect();
    assert_eq!(
        ends,
        ["B end HookFailed(silent)", "A end HookFailed(silent)"],
        "told once, not again on drop"
    );
}

#[test]
fn failed_and_abandoned_attempts_are_ends_too() {
    let log = Log::default();
    let mut connector = HooksLayer::new(recording("A", &log)).layer(connector(vec![]));
    block_on(async {
        assert!(connector.connect().await.is_err());
    });
    let mut pending =
        HooksLayer::new((recording("P", &log),)).layer(futures::future::pending::<Result<Conn, std::io::Error>>);
    drop(pending.connect());
    assert_eq!(
        log.take(),
        [
            "A attempt",
            "A end ConnectFailed(refused)",
            "P attempt",
            "P end Abandoned"
        ]
    );
}

#[test]
fn an_error_of_the_connection_passes_with_its_diagnosis() {
    use crate::{Classification, Diagnosis};

    #[derive(Debug, thiserror::Error)]
    #[error("closed with 1008")]
    struct Policy;
    impl Diagnose for Policy {
        fn diagnose(&self) -> Diagnosis {
            Diagnosis::classified(Classification::Fatal).with_peer_close(1008)
        }
    }
    let (feed, read) = mpsc::unbounded::<Result<String, Policy>>();
    let (write, _written) = mpsc::unbounded::<String>();
    let mut conn = Some(join(read, write));
    let log = Log::default();
    let mut connector = HooksLayer::new(recording("A", &log))
        .layer(move || futures::future::ready(conn.take().ok_or_else(|| std::io::Error::other("once"))));
    block_on(async {
        let mut conn = connector.connect().await.unwrap();
        feed.unbounded_send(Err(Policy)).unwrap();
        let error = conn.next().await.unwrap().unwrap_err();
        assert_eq!(error.diagnose().close_code(), Some(1008));
        assert_eq!(error.diagnose().classification(), Some(Classification::Fatal));
        assert!(std::error::Error::source(&error).is_some_and(|source| source.is::<Policy>()));
    });
    assert!(log.take().contains(&"A end ReadFailed(closed with 1008)".to_owned()));
}
