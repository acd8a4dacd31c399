//! The endpoint ring of a [`WsConnector`](super::WsConnector): its URL sources, tried in turn.
//!
//! Each source is a fixed URL or a provider asked for one. An attempt takes the current source and a
//! [`Turn`], its claim on the ring's position; the ring moves on to the next source when the attempt fails,
//! or when its connection is dropped before it was stable ([`RotateOnEarlyDrop`]). It moves on only from the
//! position the attempt was made at: when two attempts of one position fail (two clones dialling at once,
//! say), it moves once, and a report that comes late, after the ring went round, moves nothing.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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

/// Consecutive failures after which a source is skipped for a while.
const SKIP_AFTER: u32 = 2;
/// The first skip; each further failure doubles it, up to [`MAX_SKIP`].
const FIRST_SKIP: Duration = Duration::from_secs(1);
/// The longest a failing source is skipped.
const MAX_SKIP: Duration = Duration::from_secs(60);

/// A source's recent record.
#[derive(Debug, Clone, Copy, Default)]
struct Health {
    /// Consecutive failed attempts (or early drops).
    failures: u32,
    /// Not tried before this, unless every source is skipped.
    skip_until: Option<Instant>,
}

/// The sources, their health and the position, shared by every clone of the connector (so that
/// [`set`](Self::set) takes effect on the stream's own clone).
struct Inner {
    sources: Vec<Source>,
    health: Vec<Health>,
}

/// The sources in order, and the position shared by every clone of the connector.
#[derive(Clone)]
pub(super) struct Ring {
    inner: Arc<Mutex<Inner>>,
    /// How often the ring has moved on; the current source is this modulo the number of sources.
    position: Arc<AtomicUsize>,
}

impl Ring {
    /// A ring of one source.
    pub(super) fn new(source: Source) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                sources: vec![source],
                health: vec![Health::default()],
            })),
            position: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a source, tried after those before it.
    pub(super) fn push(&mut self, source: Source) {
        let mut inner = self.inner();
        inner.sources.push(source);
        inner.health.push(Health::default());
    }

    /// Replaces every source (from the next attempt on), starting again at the first.
    pub(super) fn set(&self, sources: Vec<Source>) {
        let mut inner = self.inner();
        inner.health = vec![Health::default(); sources.len()];
        inner.sources = sources;
        self.position.store(0, Ordering::Release);
    }

    /// The URL of the current source (a provider is asked now), with the claim of an attempt on it: `None`
    /// when the ring has a single source, which there is nothing to move on from. A source that keeps
    /// failing is passed over while it is skipped, unless every source is.
    pub(super) fn current(&self) -> (String, Option<Turn>) {
        let inner = self.inner();
        let count = inner.sources.len().max(1);
        let mut position = self.position.load(Ordering::Acquire);
        let now = Instant::now();
        let skipped = |at: usize| {
            inner
                .health
                .get(at % count)
                .and_then(|health| health.skip_until)
                .is_some_and(|until| until > now)
        };
        if skipped(position) {
            if let Some(ahead) = (1..count).find(|ahead| !skipped(position.wrapping_add(*ahead))) {
                let next = position.wrapping_add(ahead);
                if self
                    .position
                    .compare_exchange(position, next, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    debug!(position = next, "endpoint ring passes over skipped sources");
                    position = next;
                }
            }
        }
        let source = inner.sources.get(position % count).cloned();
        drop(inner);
        let url = match source {
            Some(Source::Fixed(url)) => url,
            Some(Source::Provider(provider)) => provider(),
            None => String::new(),
        };
        let turn = (count > 1).then(|| Turn {
            ring: self.clone(),
            at: position,
        });
        (url, turn)
    }
}

impl fmt::Debug for Ring {
    /// URLs may carry credentials in their query or user info: those are hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.inner().sources.iter().map(|source| match source {
                Source::Fixed(url) => redact_url(url),
                Source::Provider(_) => "<provider>".to_owned(),
            }))
            .finish()
    }
}

/// An attempt's claim on the ring position it was made at.
pub(super) struct Turn {
    ring: Ring,
    at: usize,
}

impl fmt::Debug for Turn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn").field("at", &self.at).finish()
    }
}

impl Turn {
    /// The attempt failed (or its connection dropped early): the source's record counts it (after
    /// [`SKIP_AFTER`] in a row it is skipped for a while, longer each time), and the ring moves on to the next
    /// source, if it is still where this attempt found it.
    pub(super) fn advance(&self) {
        let next = self.at.wrapping_add(1);
        if self
            .ring
            .position
            .compare_exchange(self.at, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let mut inner = self.ring.inner();
            let count = inner.sources.len().max(1);
            if let Some(health) = inner.health.get_mut(self.at % count) {
                health.failures = health.failures.saturating_add(1);
                if health.failures >= SKIP_AFTER {
                    let doublings = (health.failures - SKIP_AFTER).min(6);
                    let skip = FIRST_SKIP.saturating_mul(1 << doublings).min(MAX_SKIP);
                    health.skip_until = Instant::now().checked_add(skip);
                    debug!(position = self.at, ?skip, "endpoint skipped for a while");
                }
            }
            debug!(position = next, "endpoint ring moves on");
        }
    }

    /// The attempt's connection was stable: the source's record starts clean.
    fn succeeded(&self) {
        let mut inner = self.ring.inner();
        let count = inner.sources.len().max(1);
        if let Some(health) = inner.health.get_mut(self.at % count) {
            *health = Health::default();
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
        } else {
            self.turn.succeeded();
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
    fn a_source_that_keeps_failing_is_skipped_for_a_while() {
        let ring = ring(&["ws://a/", "ws://b/", "ws://c/"]);
        // a fails twice (once per lap), b and c once each.
        for _ in 0..4 {
            ring.current().1.expect("a claim").advance();
        }
        // Back at b after a's second failure: a is skipped now.
        assert_eq!(current_url(&ring), "ws://b/");
        ring.current().1.expect("a claim").advance(); // b's second failure: skipped too
        assert_eq!(current_url(&ring), "ws://c/");
        ring.current().1.expect("a claim").advance(); // c's second: every source skipped
        assert_eq!(current_url(&ring), "ws://a/", "all skipped: the ring goes on in turn");
    }

    #[test]
    fn the_sources_can_be_replaced_and_take_effect_on_the_next_attempt() {
        let ring = ring(&["ws://a/", "ws://b/"]);
        ring.current().1.expect("a claim").advance();
        let clone = ring.clone();
        clone.set(vec![Source::Fixed("ws://new/".to_owned())]);
        let (url, turn) = ring.current();
        assert_eq!((url.as_str(), turn.is_none()), ("ws://new/", true));
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
