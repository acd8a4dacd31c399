//! The endpoint ring of a [`WsConnector`](super::WsConnector): its URL sources, tried in turn.
//!
//! Each source is a fixed URL or a provider asked for one. An attempt takes the current source and a
//! [`Turn`], its claim on the ring's position; the ring moves on to the next source when the attempt fails,
//! or when its connection is dropped before it was stable ([`RotateOnEarlyDrop`]). It moves on only from the
//! position the attempt was made at: when two attempts of one position fail (two clones dialling at once,
//! say), it moves once, and a report that comes late, after the ring went round, moves nothing.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::redact::redact_url;

/// Gives the URL of an attempt.
pub(super) type UrlProvider = Arc<dyn Fn() -> String + Send + Sync>;

/// Where the URL of an attempt comes from.
#[derive(Clone)]
pub(super) enum Source {
    /// Always this URL.
    Fixed(String),
    /// Asked on each attempt that falls on it.
    Provider(UrlProvider),
}

/// The sources in order, and the position shared by every clone of the connector.
#[derive(Clone)]
pub(super) struct Ring {
    sources: Vec<Source>,
    /// How often the ring has moved on; the current source is this modulo the number of sources.
    position: Arc<AtomicUsize>,
}

impl Ring {
    /// A ring of one source.
    pub(super) fn new(source: Source) -> Self {
        Self {
            sources: vec![source],
            position: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Appends a source, tried after those before it.
    pub(super) fn push(&mut self, source: Source) {
        self.sources.push(source);
    }

    /// The URL of the current source (a provider is asked now), with the claim of an attempt on it: `None`
    /// when the ring has a single source, which there is nothing to move on from.
    pub(super) fn current(&self) -> (String, Option<Turn>) {
        let position = self.position.load(Ordering::Acquire);
        let url = match self.sources.get(position % self.sources.len().max(1)) {
            Some(Source::Fixed(url)) => url.clone(),
            Some(Source::Provider(provider)) => provider(),
            None => String::new(),
        };
        let turn = (self.sources.len() > 1).then(|| Turn {
            position: Arc::clone(&self.position),
            at: position,
        });
        (url, turn)
    }
}

impl fmt::Debug for Ring {
    /// URLs may carry credentials in their query or user info: those are hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.sources.iter().map(|source| match source {
                Source::Fixed(url) => redact_url(url),
                Source::Provider(_) => "<provider>".to_owned(),
            }))
            .finish()
    }
}

/// An attempt's claim on the ring position it was made at.
#[derive(Debug)]
pub(super) struct Turn {
    position: Arc<AtomicUsize>,
    at: usize,
}

impl Turn {
    /// Moves the ring on to the next source, if it is still where this attempt found it.
    pub(super) fn advance(&self) {
        let next = self.at.wrapping_add(1);
        if self
            .position
            .compare_exchange(self.at, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            debug!(position = next, "endpoint ring moves on");
        }
    }

    /// A token for the connection this attempt made, which moves the ring on if dropped within `stable_after`.
    pub(super) fn until_stable(self, stable_after: Duration) -> RotateOnEarlyDrop {
        RotateOnEarlyDrop {
            turn: self,
            since: Instant::now(),
            stable_after,
        }
    }
}

/// Held by a connection from a ring of several sources: dropped before the connection was up for
/// `stable_after`, it moves the ring on (see [`Turn::advance`]), so that a host that accepts the upgrade and
/// then drops the connection is not dialled again and again.
#[derive(Debug)]
pub(super) struct RotateOnEarlyDrop {
    turn: Turn,
    since: Instant,
    stable_after: Duration,
}

impl Drop for RotateOnEarlyDrop {
    fn drop(&mut self) {
        if self.since.elapsed() < self.stable_after {
            self.turn.advance();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(urls: &[&str]) -> Ring {
        let mut ring = Ring::new(Source::Fixed(urls[0].to_owned()));
        for url in &urls[1..] {
            ring.push(Source::Fixed((*url).to_owned()));
        }
        ring
    }

    fn current_url(ring: &Ring) -> String {
        ring.current().0
    }

    #[test]
    fn a_ring_of_one_source_never_moves() {
        let (url, turn) = ring(&["ws://a/"]).current();
        assert_eq!((url.as_str(), turn.is_none()), ("ws://a/", true));
    }

    #[test]
    fn two_failures_at_one_position_move_the_ring_once() {
        let ring = ring(&["ws://a/", "ws://b/", "ws://c/"]);
        let (_, first) = ring.current();
        let (_, second) = ring.current();
        first.expect("a claim").advance();
        second.expect("a claim").advance();
        assert_eq!(current_url(&ring), "ws://b/");
    }

    #[test]
    fn a_late_report_after_the_ring_went_round_moves_nothing() {
        let ring = ring(&["ws://a/", "ws://b/"]);
        let (_, stale) = ring.current();
        for _ in 0..2 {
            ring.current().1.expect("a claim").advance();
        }
        assert_eq!(current_url(&ring), "ws://a/", "round once");
        stale.expect("a claim").advance();
        assert_eq!(current_url(&ring), "ws://a/", "the stale claim is of the last lap");
    }

    #[test]
    fn only_a_connection_dropped_before_it_was_stable_moves_the_ring() {
        let ring = ring(&["ws://a/", "ws://b/"]);
        drop(ring.current().1.expect("a claim").until_stable(Duration::ZERO));
        assert_eq!(current_url(&ring), "ws://a/", "stable at once: no move");
        drop(
            ring.current()
                .1
                .expect("a claim")
                .until_stable(Duration::from_secs(3600)),
        );
        assert_eq!(current_url(&ring), "ws://b/", "dropped within the hour: moved on");
    }

    #[test]
    fn providers_are_asked_on_their_turns_only() {
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&asked);
        let mut ring = Ring::new(Source::Provider(Arc::new(move || {
            format!("ws://p{}/", counter.fetch_add(1, Ordering::SeqCst))
        })));
        ring.push(Source::Fixed("ws://f/".to_owned()));
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (url, turn) = ring.current();
            seen.push(url);
            turn.expect("a claim").advance();
        }
        assert_eq!(seen, ["ws://p0/", "ws://f/", "ws://p1/", "ws://f/"]);
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_ring_is_shown_without_credentials() {
        let mut ring = ring(&["ws://u:p@a/x?token=s3cret"]);
        ring.push(Source::Provider(Arc::new(String::new)));
        let debug = format!("{ring:?}");
        assert!(!debug.contains("s3cret") && !debug.contains("u:p"), "{debug}");
        assert!(debug.contains("<provider>"), "{debug}");
    }
}
