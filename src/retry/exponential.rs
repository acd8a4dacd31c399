//! [`ExponentialBackoff`]: a delay that grows by a factor after each consecutive failure.

use std::time::Duration;

use super::jitter::{Jitter, JitterState};
use super::{RetryContext, RetryPolicy};

/// The default preset's first delay: 100 ms.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_millis(100);
/// The default preset's longest delay: 30 s.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);
/// The default growth factor: 2.
pub const DEFAULT_FACTOR: f64 = 2.0;

/// Exponential backoff: the delay doubles (by default) after each consecutive failure, up to
/// a maximum, with [`Jitter`] added.
///
/// The un-jittered delay for failure `n` is `min(max, initial * factor^(n - 1))`; the
/// [`Jitter`] mode (by default [`Jitter::Equal`]) then spreads it. The result never exceeds
/// `max`, whatever the parameters: if `initial > max`, `max` is still the cap, and the
/// computation saturates instead of overflowing or panicking.
///
/// By itself the policy retries forever; give it a budget with
/// [`with_max_attempts`](RetryPolicy::with_max_attempts) and
/// [`with_max_elapsed`](RetryPolicy::with_max_elapsed).
///
/// Presets: [`ExponentialBackoff::default`] (100 ms to 30 s), [`ExponentialBackoff::fast`]
/// (10 ms to 2 s) and [`ExponentialBackoff::conservative`] (1 s to 60 s, full jitter).
///
/// Cloning a policy that was [seeded](Self::with_seed) copies its generator state, so the clone
/// produces the same delays; cloning an unseeded policy gives the clone a fresh random seed,
/// so that clones do not jitter in lockstep.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stream_tungstenite::retry::{ExponentialBackoff, Jitter, RetryContext, RetryPolicy};
///
/// let mut policy = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(10))
///     .with_factor(3.0)
///     .with_jitter(Jitter::Full)
///     .with_seed(42)
///     .with_max_elapsed(Duration::from_secs(60));
///
/// // Third failure: un-jittered delay 100 ms * 3^2 = 900 ms, full jitter picks from [0, 900 ms].
/// let delay = policy.next_delay(&RetryContext::new(3, Duration::from_secs(1))).unwrap();
/// assert!(delay <= Duration::from_millis(900));
///
/// // Waiting would exceed the 60 s budget: give up.
/// let ctx = RetryContext::new(4, Duration::from_secs(60));
/// assert_eq!(policy.next_delay(&ctx), None);
/// ```
#[derive(Debug, Clone)]
pub struct ExponentialBackoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: JitterState,
}

impl ExponentialBackoff {
    /// Starts at `initial` and grows up to `max`, with factor [`DEFAULT_FACTOR`], [`Jitter::Equal`], and a
    /// random number generator seeded from entropy.
    ///
    /// `max` is the cap even if `initial` is larger. `Duration::ZERO` and `Duration::MAX` are
    /// both fine for either.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            factor: DEFAULT_FACTOR,
            jitter: JitterState::new(Jitter::default()),
        }
    }

    /// Sets the growth factor ([`DEFAULT_FACTOR`] by default).
    ///
    /// A factor below 1.0 (including negative ones) or NaN is treated as 1.0, a constant
    /// delay. Positive infinity is accepted: the first delay is `initial`, every later one is
    /// `max`. Ignored by [`Jitter::Decorrelated`], which grows by `prev * 3` instead.
    #[must_use]
    pub fn with_factor(mut self, factor: f64) -> Self {
        // `!(factor >= 1.0)` also catches NaN.
        self.factor = if factor >= 1.0 { factor } else { 1.0 };
        self
    }

    /// Sets how random spread is added to each delay ([`Jitter::Equal`] by default).
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

    /// Preset for quick recovery: 10 ms growing to 2 s, factor 2, [`Jitter::Equal`],
    /// unlimited attempts and time.
    #[must_use]
    pub fn fast() -> Self {
        Self::new(Duration::from_millis(10), Duration::from_secs(2))
    }

    /// Preset that goes easy on the server: 1 s growing to 60 s, factor 2, [`Jitter::Full`],
    /// unlimited attempts and time.
    #[must_use]
    pub fn conservative() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(60)).with_jitter(Jitter::Full)
    }

    /// The delay before the first retry, before jitter.
    #[must_use]
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The cap on every delay.
    #[must_use]
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The growth factor.
    #[must_use]
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The jitter mode.
    #[must_use]
    pub fn jitter(&self) -> Jitter {
        self.jitter.mode
    }

    /// `min(max, initial * factor^(failures - 1))`, saturating; `failures == 0` counts as 1.
    fn unjittered(&self, failures: u32) -> Duration {
        let cap = self.max;
        let exponent = failures.saturating_sub(1);
        // Exact shortcuts; the zero case also avoids `0 * inf = NaN`.
        if exponent == 0 || self.initial.is_zero() || self.factor == 1.0 {
            return self.initial.min(cap);
        }
        let secs = self.initial.as_secs_f64() * self.factor.powf(f64::from(exponent));
        // With `factor >= 1` the delay never shrinks; the clamp guards against the rounding
        // of huge `initial` values in f64.
        let floor = self.initial.min(cap);
        Duration::try_from_secs_f64(secs).map_or(cap, |d| d.clamp(floor, cap))
    }
}

impl Default for ExponentialBackoff {
    /// The general-purpose preset: [`DEFAULT_INITIAL_DELAY`] growing to [`DEFAULT_MAX_DELAY`], factor
    /// [`DEFAULT_FACTOR`], [`Jitter::Equal`], unlimited attempts and time.
    fn default() -> Self {
        Self::new(DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY)
    }
}

impl RetryPolicy for ExponentialBackoff {
    /// Returns the jittered delay, never above `max`.
    fn next_delay(&mut self, ctx: &RetryContext) -> Option<Duration> {
        let d = self.unjittered(ctx.failures);
        Some(self.jitter.apply(d, self.initial, self.max))
    }

    /// Forgets the previous delay of [`Jitter::Decorrelated`].
    fn reset(&mut self) {
        self.jitter.reset();
    }
}
