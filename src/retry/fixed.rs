//! [`FixedDelay`]: the same delay before every attempt.

use std::time::Duration;

use super::jitter::{Jitter, JitterState};
use super::{RetryContext, RetryPolicy};

/// The same delay before every attempt, optionally jittered (and, like any policy, budgeted with
/// [`with_max_attempts`](RetryPolicy::with_max_attempts) and
/// [`with_max_elapsed`](RetryPolicy::with_max_elapsed)).
///
/// Jitter is [`Jitter::None`] by default. Whatever the jitter mode, the delay never exceeds
/// the configured delay: [`Jitter::Full`] picks from `[0, delay]`, [`Jitter::Equal`] from
/// `[delay/2, delay]`, and [`Jitter::Decorrelated`] degenerates to the fixed delay (its
/// `initial` and `max` are both `delay`).
#[derive(Debug, Clone)]
pub struct FixedDelay {
    delay: Duration,
    jitter: JitterState,
}

impl FixedDelay {
    /// Waits `delay` before every attempt, without jitter or budget.
    #[must_use]
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            jitter: JitterState::new(Jitter::None),
        }
    }

    /// Sets how random spread is added to the delay ([`Jitter::None`] by default).
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter.mode = jitter;
        self
    }

    /// Seeds the jitter's random number generator, making the delays deterministic (for
    /// tests).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.jitter.seed(seed);
        self
    }

    /// The jitter mode.
    #[must_use]
    pub fn jitter(&self) -> Jitter {
        self.jitter.mode
    }
}

impl RetryPolicy for FixedDelay {
    /// Returns the (jittered) delay, never above the configured one.
    fn next_delay(&mut self, _ctx: &RetryContext) -> Option<Duration> {
        Some(self.jitter.apply(self.delay, self.delay, self.delay))
    }

    fn reset(&mut self) {
        self.jitter.reset();
    }
}
