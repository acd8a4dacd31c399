//! Retry policies: how long to wait before each reconnection attempt.
//!
//! When `ReconnectingStream` loses its connection (or fails to establish one), it asks its
//! [`RetryPolicy`] for the delay before the next attempt. A policy is a pure function of a
//! [`RetryContext`] (the number of consecutive failures and the time elapsed since the first
//! of them), plus a seedable random number generator for jitter, so every policy here is
//! deterministic under a fixed seed and unit-tested without a runtime or a clock.
//!
//! Returning `None` gives up: the stream then ends instead of reconnecting.
//!
//! Provided policies:
//!
//! * [`ExponentialBackoff`]: `initial * factor^(failures - 1)`, capped at a maximum, with
//!   [`Jitter`] (equal jitter by default) and optional attempt and time budgets. This is the
//!   recommended policy; see also its presets [`ExponentialBackoff::fast`],
//!   [`ExponentialBackoff::conservative`] and [`ExponentialBackoff::default`].
//! * [`FixedDelay`]: the same delay every time, optionally jittered and budgeted.
//! * [`Immediate`]: retry at once, optionally a limited number of times.
//! * [`NoRetry`]: give up at the first failure.
//! * [`from_fn`]: any closure of the [`RetryContext`].
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use stream_tungstenite::retry::{ExponentialBackoff, Jitter, RetryContext, RetryPolicy};
//!
//! let mut policy = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(1))
//!     .jitter(Jitter::None)
//!     .max_attempts(5);
//!
//! let delays: Vec<_> = (1..=5)
//!     .map(|failures| policy.next_delay(&RetryContext::new(failures, Duration::ZERO)))
//!     .collect();
//! assert_eq!(
//!     delays,
//!     [
//!         Some(Duration::from_millis(100)),
//!         Some(Duration::from_millis(200)),
//!         Some(Duration::from_millis(400)),
//!         Some(Duration::from_millis(800)),
//!         None, // the fifth failure exhausts `max_attempts(5)`
//!     ]
//! );
//! ```

use std::fmt;
use std::time::Duration;

/// What a policy is told when asked for the delay before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryContext {
    /// Consecutive failed attempts in the current streak, at least 1. (A connection that
    /// dropped before it was stable counts as a failed attempt; the streak restarts after a
    /// stable connection.)
    pub failures: u32,
    /// Time since the first failure of the current streak.
    pub elapsed: Duration,
}

impl RetryContext {
    /// Creates a context for the given number of consecutive `failures` (at least 1 in
    /// practice) and the time `elapsed` since the first of them.
    ///
    /// Useful for testing policies, including your own.
    #[must_use]
    pub fn new(failures: u32, elapsed: Duration) -> Self {
        Self { failures, elapsed }
    }
}

/// Decides the delay before each reconnection attempt.
///
/// `ReconnectingStream` calls [`next_delay`](RetryPolicy::next_delay) once after every failed
/// attempt, with `failures` counting up from 1 within a streak, and calls
/// [`reset`](RetryPolicy::reset) once a connection has stayed up long enough to be considered
/// stable, after which the next failure starts a new streak at `failures == 1`.
///
/// Implementations must not panic on any context value, including `failures == 0` or
/// `u32::MAX` and `elapsed == Duration::MAX`.
pub trait RetryPolicy: Send {
    /// The delay before the next attempt, or `None` to give up.
    fn next_delay(&mut self, ctx: &RetryContext) -> Option<Duration>;

    /// Called after a connection stayed up for `stable_after`: forget the streak (e.g.
    /// decorrelated jitter's previous delay).
    ///
    /// The default implementation does nothing, which is right for policies that are pure
    /// functions of the [`RetryContext`].
    fn reset(&mut self) {}
}

impl<P: RetryPolicy + ?Sized> RetryPolicy for Box<P> {
    fn next_delay(&mut self, ctx: &RetryContext) -> Option<Duration> {
        (**self).next_delay(ctx)
    }

    fn reset(&mut self) {
        (**self).reset();
    }
}

/// How random spread is added to a computed delay `d`.
///
/// The modes follow the AWS Architecture Blog article "Exponential Backoff And Jitter".
/// Jitter keeps many clients that lost their connection at the same moment (for example
/// because the server restarted) from all reconnecting at the same moment again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No jitter: wait exactly `d`.
    None,
    /// Full jitter: uniform in `[0, d]`.
    Full,
    /// Equal jitter: `d/2` plus uniform in `[0, d/2]`, i.e. uniform in `[d/2, d]`.
    ///
    /// Never waits less than half the computed delay. This is the default.
    #[default]
    Equal,
    /// Decorrelated jitter: `min(max, uniform in [initial, prev * 3])`, where `prev` is the
    /// previous delay returned and starts at `initial`.
    ///
    /// This mode ignores the computed delay `d` (and so an [`ExponentialBackoff`]'s factor):
    /// growth comes from `prev * 3`. [`RetryPolicy::reset`] forgets `prev`. With a zero
    /// `initial` delay every delay is zero. For [`FixedDelay`], `initial` and `max` are both
    /// the fixed delay, so this mode degenerates to no jitter.
    Decorrelated,
}

/// Private RNG wrapper: a seeded generator clones its exact state (deterministic), an
/// entropy-seeded one gets a fresh entropy seed when cloned, so that clones of one policy do
/// not all jitter in lockstep.
#[derive(Debug)]
struct JitterRng {
    rng: fastrand::Rng,
    seeded: bool,
}

impl JitterRng {
    fn from_entropy() -> Self {
        Self {
            rng: fastrand::Rng::new(),
            seeded: false,
        }
    }

    fn with_seed(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            seeded: true,
        }
    }

    /// Uniform in `[lo, hi]` with nanosecond resolution; `lo <= hi` is required.
    fn uniform(&mut self, lo: Duration, hi: Duration) -> Duration {
        debug_assert!(lo <= hi);
        duration_from_nanos(self.rng.u128(lo.as_nanos()..=hi.as_nanos()))
    }
}

impl Clone for JitterRng {
    fn clone(&self) -> Self {
        if self.seeded {
            Self {
                rng: self.rng.clone(),
                seeded: true,
            }
        } else {
            Self::from_entropy()
        }
    }
}

/// Converts nanoseconds back into a `Duration`, saturating at `Duration::MAX`.
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let subsec = (nanos % NANOS_PER_SEC) as u32; // < 1e9, lossless
    match u64::try_from(nanos / NANOS_PER_SEC) {
        Ok(secs) => Duration::new(secs, subsec),
        Err(_) => Duration::MAX,
    }
}

/// Jitter mode plus the state it needs, shared by [`ExponentialBackoff`] and [`FixedDelay`].
#[derive(Debug, Clone)]
struct JitterState {
    mode: Jitter,
    rng: JitterRng,
    /// Previous delay, for [`Jitter::Decorrelated`]; `None` means "start at `initial`".
    prev: Option<Duration>,
}

impl JitterState {
    fn new(mode: Jitter) -> Self {
        Self {
            mode,
            rng: JitterRng::from_entropy(),
            prev: None,
        }
    }

    /// Applies the jitter mode to the computed delay `d` (already at most `cap`).
    /// `initial` is only used by [`Jitter::Decorrelated`]. The result never exceeds `cap`
    /// (nor `d`, except for decorrelated jitter, which ignores `d`).
    fn apply(&mut self, d: Duration, initial: Duration, cap: Duration) -> Duration {
        let d = d.min(cap);
        match self.mode {
            Jitter::None => d,
            Jitter::Full => self.rng.uniform(Duration::ZERO, d),
            Jitter::Equal => self.rng.uniform(d / 2, d),
            Jitter::Decorrelated => {
                let lo = initial.min(cap);
                let prev = self.prev.unwrap_or(lo);
                let hi = prev.saturating_mul(3).max(lo);
                let delay = self.rng.uniform(lo, hi).min(cap);
                self.prev = Some(delay);
                delay
            }
        }
    }

    fn reset(&mut self) {
        self.prev = None;
    }
}

/// Attempt and time budgets, shared by the policies that support them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Budget {
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
}

impl Budget {
    /// Gives up (`None`) when `ctx.failures >= max_attempts`, before computing the delay, or
    /// when `ctx.elapsed + delay > max_elapsed`; otherwise returns the computed delay.
    fn admit(&self, ctx: &RetryContext, compute: impl FnOnce() -> Duration) -> Option<Duration> {
        if self.max_attempts.is_some_and(|max| ctx.failures >= max) {
            return None;
        }
        let delay = compute();
        if let Some(budget) = self.max_elapsed {
            match ctx.elapsed.checked_add(delay) {
                Some(total) if total <= budget => {}
                _ => return None,
            }
        }
        Some(delay)
    }
}

/// Exponential backoff: the delay doubles (by default) after each consecutive failure, up to
/// a maximum, with [`Jitter`] added.
///
/// The un-jittered delay for failure `n` is `min(max, initial * factor^(n - 1))`; the
/// [`Jitter`] mode (by default [`Jitter::Equal`]) then spreads it. The result never exceeds
/// `max`, whatever the parameters: if `initial > max`, `max` is still the cap, and the
/// computation saturates instead of overflowing or panicking.
///
/// By default there is no budget: the policy retries forever. Use
/// [`max_attempts`](Self::max_attempts) and [`max_elapsed`](Self::max_elapsed) to give up.
///
/// Presets: [`ExponentialBackoff::default`] (100 ms to 30 s), [`ExponentialBackoff::fast`]
/// (10 ms to 2 s) and [`ExponentialBackoff::conservative`] (1 s to 60 s, full jitter).
///
/// Cloning a policy that was [`seed`](Self::seed)ed copies its generator state, so the clone
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
///     .factor(3.0)
///     .jitter(Jitter::Full)
///     .max_elapsed(Duration::from_secs(60))
///     .seed(42);
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
    budget: Budget,
}

impl ExponentialBackoff {
    /// Starts at `initial` and grows up to `max`, with factor 2.0, [`Jitter::Equal`], no
    /// attempt or time budget, and a random number generator seeded from entropy.
    ///
    /// `max` is the cap even if `initial` is larger. `Duration::ZERO` and `Duration::MAX` are
    /// both fine for either.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            factor: 2.0,
            jitter: JitterState::new(Jitter::Equal),
            budget: Budget::default(),
        }
    }

    /// Sets the growth factor (2.0 by default).
    ///
    /// A factor below 1.0 (including negative ones) or NaN is treated as 1.0, a constant
    /// delay. Positive infinity is accepted: the first delay is `initial`, every later one is
    /// `max`. Ignored by [`Jitter::Decorrelated`], which grows by `prev * 3` instead.
    #[must_use]
    pub fn factor(mut self, factor: f64) -> Self {
        // `!(factor >= 1.0)` also catches NaN.
        self.factor = if factor >= 1.0 { factor } else { 1.0 };
        self
    }

    /// Sets how random spread is added to each delay ([`Jitter::Equal`] by default).
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter.mode = jitter;
        self
    }

    /// Gives up when `ctx.failures >= attempts`.
    ///
    /// `max_attempts(3)` thus allows three attempts in total: the first one plus two
    /// retries, and `next_delay` returns `None` on the third failure. `max_attempts(0)` and
    /// `max_attempts(1)` give up at the first failure.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.budget.max_attempts = Some(attempts);
        self
    }

    /// Gives up when `ctx.elapsed + delay > budget`, where `delay` is the (jittered) delay
    /// that would otherwise be returned: the next attempt must start within `budget` of the
    /// first failure of the streak. A delay ending exactly at the budget is allowed.
    #[must_use]
    pub fn max_elapsed(mut self, budget: Duration) -> Self {
        self.budget.max_elapsed = Some(budget);
        self
    }

    /// Seeds the jitter's random number generator, making the delays deterministic (for
    /// tests).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.jitter.rng = JitterRng::with_seed(seed);
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
        Self::new(Duration::from_secs(1), Duration::from_secs(60)).jitter(Jitter::Full)
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
    /// The general-purpose preset: 100 ms growing to 30 s, factor 2, [`Jitter::Equal`],
    /// unlimited attempts and time.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl RetryPolicy for ExponentialBackoff {
    /// Returns the jittered delay, never above `max`; `None` once the attempt or time budget
    /// is exhausted (see [`max_attempts`](Self::max_attempts) and
    /// [`max_elapsed`](Self::max_elapsed)).
    fn next_delay(&mut self, ctx: &RetryContext) -> Option<Duration> {
        let budget = self.budget;
        budget.admit(ctx, || {
            let d = self.unjittered(ctx.failures);
            self.jitter.apply(d, self.initial, self.max)
        })
    }

    /// Forgets the previous delay of [`Jitter::Decorrelated`].
    fn reset(&mut self) {
        self.jitter.reset();
    }
}

/// The same delay before every attempt, optionally jittered and budgeted.
///
/// Jitter is [`Jitter::None`] by default. Whatever the jitter mode, the delay never exceeds
/// the configured delay: [`Jitter::Full`] picks from `[0, delay]`, [`Jitter::Equal`] from
/// `[delay/2, delay]`, and [`Jitter::Decorrelated`] degenerates to the fixed delay (its
/// `initial` and `max` are both `delay`).
#[derive(Debug, Clone)]
pub struct FixedDelay {
    delay: Duration,
    jitter: JitterState,
    budget: Budget,
}

impl FixedDelay {
    /// Waits `delay` before every attempt, without jitter or budget.
    #[must_use]
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            jitter: JitterState::new(Jitter::None),
            budget: Budget::default(),
        }
    }

    /// Sets how random spread is added to the delay ([`Jitter::None`] by default).
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter.mode = jitter;
        self
    }

    /// Gives up when `ctx.failures >= attempts`, exactly like
    /// [`ExponentialBackoff::max_attempts`]: `max_attempts(3)` allows three attempts in
    /// total, and `0` gives up at the first failure.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.budget.max_attempts = Some(attempts);
        self
    }

    /// Gives up when `ctx.elapsed + delay > budget`, exactly like
    /// [`ExponentialBackoff::max_elapsed`].
    #[must_use]
    pub fn max_elapsed(mut self, budget: Duration) -> Self {
        self.budget.max_elapsed = Some(budget);
        self
    }

    /// Seeds the jitter's random number generator, making the delays deterministic (for
    /// tests).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.jitter.rng = JitterRng::with_seed(seed);
        self
    }
}

impl RetryPolicy for FixedDelay {
    /// Returns the (jittered) delay, never above the configured one; `None` once the attempt
    /// or time budget is exhausted.
    fn next_delay(&mut self, ctx: &RetryContext) -> Option<Duration> {
        let budget = self.budget;
        budget.admit(ctx, || self.jitter.apply(self.delay, self.delay, self.delay))
    }

    fn reset(&mut self) {
        self.jitter.reset();
    }
}

/// Retries at once, with zero delay; unlimited unless [`max_attempts`](Self::max_attempts)
/// is set.
///
/// Beware that unlimited immediate retries against an unreachable server spin as fast as
/// connection attempts fail.
#[derive(Debug, Clone, Default)]
pub struct Immediate {
    budget: Budget,
}

impl Immediate {
    /// Zero delay, unlimited attempts.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives up when `ctx.failures >= attempts`, exactly like
    /// [`ExponentialBackoff::max_attempts`]: `max_attempts(3)` allows three attempts in
    /// total, and `0` gives up at the first failure.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.budget.max_attempts = Some(attempts);
        self
    }
}

impl RetryPolicy for Immediate {
    /// Returns `Duration::ZERO`, or `None` once the attempt budget is exhausted.
    fn next_delay(&mut self, ctx: &RetryContext) -> Option<Duration> {
        self.budget.admit(ctx, || Duration::ZERO)
    }
}

/// Never retries: gives up at the first failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRetry;

impl NoRetry {
    /// Creates the policy (the same as `NoRetry`).
    #[must_use]
    pub const fn new() -> Self {
        Self
    }
}

impl RetryPolicy for NoRetry {
    /// Always `None`.
    fn next_delay(&mut self, _ctx: &RetryContext) -> Option<Duration> {
        None
    }
}

/// A policy backed by a closure; created by [`from_fn`].
#[derive(Clone)]
pub struct FnPolicy<F> {
    f: F,
}

impl<F> fmt::Debug for FnPolicy<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnPolicy").finish_non_exhaustive()
    }
}

/// Creates a policy from a closure that maps each [`RetryContext`] to a delay, or to `None`
/// to give up.
///
/// The closure may keep state (it is `FnMut`); [`RetryPolicy::reset`] is a no-op for the
/// resulting policy, so base decisions on the context if they should restart with a new
/// streak.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stream_tungstenite::retry::{from_fn, RetryContext, RetryPolicy};
///
/// // Linear backoff: 1 s, 2 s, 3 s, ... and give up after a minute.
/// let mut policy = from_fn(|ctx: &RetryContext| {
///     if ctx.elapsed >= Duration::from_secs(60) {
///         None
///     } else {
///         Some(Duration::from_secs(u64::from(ctx.failures)))
///     }
/// });
///
/// assert_eq!(
///     policy.next_delay(&RetryContext::new(3, Duration::from_secs(5))),
///     Some(Duration::from_secs(3))
/// );
/// assert_eq!(policy.next_delay(&RetryContext::new(9, Duration::from_secs(61))), None);
/// ```
#[must_use]
pub fn from_fn<F>(f: F) -> FnPolicy<F>
where
    F: FnMut(&RetryContext) -> Option<Duration> + Send,
{
    FnPolicy { f }
}

impl<F> RetryPolicy for FnPolicy<F>
where
    F: FnMut(&RetryContext) -> Option<Duration> + Send,
{
    /// Returns whatever the closure returns.
    fn next_delay(&mut self, ctx: &RetryContext) -> Option<Duration> {
        (self.f)(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const MS: Duration = Duration::from_millis(1);

    fn ctx(failures: u32) -> RetryContext {
        RetryContext::new(failures, Duration::ZERO)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn delays(policy: &mut impl RetryPolicy, failures: std::ops::RangeInclusive<u32>) -> Vec<Option<Duration>> {
        failures.map(|n| policy.next_delay(&ctx(n))).collect()
    }

    #[test]
    fn retry_context_new_sets_fields() {
        let c = RetryContext::new(7, ms(1500));
        assert_eq!(c.failures, 7);
        assert_eq!(c.elapsed, ms(1500));
    }

    #[test]
    fn exponential_sequence_without_jitter() {
        let mut p = ExponentialBackoff::new(ms(100), ms(1000)).jitter(Jitter::None);
        assert_eq!(
            delays(&mut p, 1..=6),
            [100, 200, 400, 800, 1000, 1000].map(|n| Some(ms(n)))
        );
        assert_eq!(p.next_delay(&ctx(u32::MAX)), Some(ms(1000)));
        // failures == 0 is out of contract but treated as 1.
        assert_eq!(p.next_delay(&ctx(0)), Some(ms(100)));
    }

    #[test]
    fn exponential_custom_factor() {
        let mut p = ExponentialBackoff::new(ms(100), ms(1000))
            .factor(1.5)
            .jitter(Jitter::None);
        assert_eq!(
            delays(&mut p, 1..=7),
            [100_000, 150_000, 225_000, 337_500, 506_250, 759_375, 1_000_000].map(|us| Some(Duration::from_micros(us)))
        );
    }

    #[test]
    fn degenerate_factors_are_sanitized() {
        for factor in [0.5, 0.0, -3.0, f64::NAN, f64::NEG_INFINITY, 1.0] {
            let mut p = ExponentialBackoff::new(ms(100), ms(1000))
                .factor(factor)
                .jitter(Jitter::None);
            assert_eq!(delays(&mut p, 1..=4), vec![Some(ms(100)); 4], "factor {factor}");
            assert_eq!(p.next_delay(&ctx(u32::MAX)), Some(ms(100)), "factor {factor}");
        }
        let mut p = ExponentialBackoff::new(ms(100), ms(1000))
            .factor(f64::INFINITY)
            .jitter(Jitter::None);
        assert_eq!(delays(&mut p, 1..=3), [Some(ms(100)), Some(ms(1000)), Some(ms(1000))]);
        let mut p = ExponentialBackoff::new(ms(100), ms(1000))
            .factor(f64::MAX)
            .jitter(Jitter::None);
        assert_eq!(delays(&mut p, 1..=3), [Some(ms(100)), Some(ms(1000)), Some(ms(1000))]);
    }

    #[test]
    fn initial_above_max_is_capped_at_max() {
        for jitter in [Jitter::None, Jitter::Decorrelated] {
            let mut p = ExponentialBackoff::new(ms(5000), ms(1000)).jitter(jitter).seed(1);
            assert_eq!(delays(&mut p, 1..=4), vec![Some(ms(1000)); 4], "{jitter:?}");
        }
    }

    #[test]
    fn huge_values_saturate_at_max() {
        let mut p = ExponentialBackoff::new(Duration::from_secs(1), Duration::MAX).jitter(Jitter::None);
        assert_eq!(p.next_delay(&ctx(1)), Some(Duration::from_secs(1)));
        assert_eq!(p.next_delay(&ctx(11)), Some(Duration::from_secs(1024)));
        assert_eq!(p.next_delay(&ctx(u32::MAX)), Some(Duration::MAX));

        let mut p = ExponentialBackoff::new(Duration::MAX, Duration::MAX).jitter(Jitter::None);
        assert_eq!(p.next_delay(&ctx(1)), Some(Duration::MAX));
        assert_eq!(p.next_delay(&ctx(2)), Some(Duration::MAX));

        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            let mut p = ExponentialBackoff::new(Duration::MAX, Duration::MAX)
                .jitter(jitter)
                .seed(3);
            for n in [1, 2, 100, u32::MAX] {
                assert!(p.next_delay(&ctx(n)).is_some());
            }
        }
    }

    #[test]
    fn zero_initial_delay_with_every_jitter_is_zero() {
        for jitter in [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            let mut p = ExponentialBackoff::new(Duration::ZERO, ms(1000))
                .factor(f64::INFINITY)
                .jitter(jitter)
                .seed(9);
            assert_eq!(delays(&mut p, 1..=5), vec![Some(Duration::ZERO); 5], "{jitter:?}");
            assert_eq!(p.next_delay(&ctx(u32::MAX)), Some(Duration::ZERO));
        }
        let mut p = ExponentialBackoff::new(ms(100), Duration::ZERO).jitter(Jitter::Full);
        assert_eq!(p.next_delay(&ctx(3)), Some(Duration::ZERO));
    }

    /// Draws `n` samples at failure 3 (un-jittered 400 ms) from a seeded 100 ms..10 s policy.
    fn samples(jitter: Jitter, seed: u64, n: usize) -> Vec<Duration> {
        let mut p = ExponentialBackoff::new(ms(100), Duration::from_secs(10))
            .jitter(jitter)
            .seed(seed);
        (0..n).map(|_| p.next_delay(&ctx(3)).unwrap()).collect()
    }

    #[test]
    fn full_jitter_within_zero_and_d_and_varies() {
        let s = samples(Jitter::Full, 1, 2000);
        assert!(s.iter().all(|d| *d <= ms(400)));
        assert!(s.iter().any(|d| *d < ms(40)), "reaches the low end");
        assert!(s.iter().any(|d| *d > ms(360)), "reaches the high end");
        assert!(s.iter().collect::<HashSet<_>>().len() > 1900);
    }

    #[test]
    fn equal_jitter_within_half_d_and_d_and_varies() {
        let s = samples(Jitter::Equal, 2, 2000);
        assert!(s.iter().all(|d| ms(200) <= *d && *d <= ms(400)));
        assert!(s.iter().any(|d| *d < ms(220)), "reaches the low end");
        assert!(s.iter().any(|d| *d > ms(380)), "reaches the high end");
        assert!(s.iter().collect::<HashSet<_>>().len() > 1900);
    }

    #[test]
    fn default_jitter_is_equal() {
        assert_eq!(Jitter::default(), Jitter::Equal);
        let mut a = ExponentialBackoff::new(ms(100), Duration::from_secs(10)).seed(2);
        let b = samples(Jitter::Equal, 2, 50);
        let a: Vec<_> = (0..50).map(|_| a.next_delay(&ctx(3)).unwrap()).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn decorrelated_jitter_within_bounds_and_varies() {
        let initial = ms(100);
        let max = Duration::from_secs(5);
        let mut p = ExponentialBackoff::new(initial, max)
            .jitter(Jitter::Decorrelated)
            .seed(3);
        let mut prev = initial;
        let mut seen = Vec::new();
        for n in 1..=2000 {
            let d = p.next_delay(&ctx(n)).unwrap();
            assert!(d >= initial, "{d:?} below initial");
            assert!(d <= max, "{d:?} above max");
            assert!(d <= prev * 3, "{d:?} above 3 * previous {prev:?}");
            prev = d;
            seen.push(d);
        }
        assert!(seen.contains(&max), "reaches the cap");
        assert!(seen.iter().any(|d| *d < ms(300)), "comes back down");
        assert!(seen.iter().collect::<HashSet<_>>().len() > 1000);
    }

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            let run = |seed| {
                let mut p = ExponentialBackoff::new(ms(100), Duration::from_secs(30))
                    .jitter(jitter)
                    .seed(seed);
                delays(&mut p, 1..=20)
            };
            assert_eq!(run(7), run(7), "{jitter:?}");
            assert_ne!(run(7), run(8), "{jitter:?}");
        }
    }

    #[test]
    fn clone_of_seeded_policy_repeats_clone_of_unseeded_does_not() {
        let mut a = ExponentialBackoff::new(ms(100), Duration::from_secs(30))
            .jitter(Jitter::Full)
            .seed(5);
        a.next_delay(&ctx(1));
        let mut b = a.clone();
        assert_eq!(delays(&mut a, 1..=20), delays(&mut b, 1..=20));

        let mut a = ExponentialBackoff::new(ms(100), Duration::from_secs(30)).jitter(Jitter::Full);
        let mut b = a.clone();
        assert_ne!(delays(&mut a, 5..=24), delays(&mut b, 5..=24));
    }

    #[test]
    fn max_attempts_boundary() {
        let mut p = ExponentialBackoff::new(ms(100), ms(1000))
            .jitter(Jitter::None)
            .max_attempts(3);
        assert_eq!(delays(&mut p, 1..=5), [Some(ms(100)), Some(ms(200)), None, None, None]);
        assert_eq!(p.next_delay(&ctx(u32::MAX)), None);

        for attempts in [0, 1] {
            let mut p = ExponentialBackoff::default().max_attempts(attempts);
            assert_eq!(p.next_delay(&ctx(1)), None, "max_attempts({attempts})");
        }
        let mut p = ExponentialBackoff::default()
            .jitter(Jitter::None)
            .max_attempts(u32::MAX);
        assert_eq!(p.next_delay(&ctx(u32::MAX - 1)), Some(Duration::from_secs(30)));
        assert_eq!(p.next_delay(&ctx(u32::MAX)), None);
    }

    #[test]
    fn max_elapsed_boundary() {
        let mut p = ExponentialBackoff::new(ms(100), ms(1000))
            .jitter(Jitter::None)
            .max_elapsed(ms(1000));
        let at = |p: &mut ExponentialBackoff, failures, elapsed| p.next_delay(&RetryContext::new(failures, elapsed));
        assert_eq!(at(&mut p, 1, ms(900)), Some(ms(100)), "ending exactly at the budget");
        assert_eq!(at(&mut p, 1, ms(900) + Duration::from_nanos(1)), None);
        assert_eq!(at(&mut p, 2, ms(800)), Some(ms(200)));
        assert_eq!(at(&mut p, 2, ms(801)), None);
        assert_eq!(at(&mut p, 1, Duration::MAX), None, "no overflow");

        let mut p = ExponentialBackoff::new(ms(100), Duration::MAX)
            .jitter(Jitter::None)
            .max_elapsed(Duration::MAX);
        assert_eq!(at(&mut p, u32::MAX, Duration::ZERO), Some(Duration::MAX));
        assert_eq!(at(&mut p, u32::MAX, Duration::from_nanos(1)), None);

        let mut p = ExponentialBackoff::new(Duration::ZERO, ms(1)).max_elapsed(Duration::ZERO);
        assert_eq!(at(&mut p, 5, Duration::ZERO), Some(Duration::ZERO));
    }

    #[test]
    fn reset_makes_decorrelated_start_over() {
        let initial = ms(100);
        let mut grew_without_reset = false;
        for seed in 0..100 {
            let policy = ExponentialBackoff::new(initial, Duration::from_secs(60))
                .jitter(Jitter::Decorrelated)
                .seed(seed);
            let warm_up = |mut p: ExponentialBackoff| {
                for n in 1..=20 {
                    p.next_delay(&ctx(n));
                }
                p
            };
            let mut p = warm_up(policy.clone());
            // Without reset, the next delay may be up to 3 * the previous one.
            grew_without_reset |= p.clone().next_delay(&ctx(21)).unwrap() > initial * 3;

            p.reset();
            let first = p.next_delay(&ctx(1)).unwrap();
            assert!(
                initial <= first && first <= initial * 3,
                "seed {seed}: {first:?} after reset"
            );
            // Boxed policies forward reset too.
            let mut boxed: Box<dyn RetryPolicy> = Box::new(warm_up(policy));
            boxed.reset();
            assert!(boxed.next_delay(&ctx(1)).unwrap() <= initial * 3);
        }
        assert!(grew_without_reset, "the test would pass without reset");
    }

    #[test]
    fn fixed_delay_is_constant() {
        let mut p = FixedDelay::new(ms(250));
        assert_eq!(delays(&mut p, 1..=5), vec![Some(ms(250)); 5]);
        assert_eq!(p.next_delay(&ctx(u32::MAX)), Some(ms(250)));
        p.reset();
        assert_eq!(p.next_delay(&ctx(1)), Some(ms(250)));

        let mut p = FixedDelay::new(ms(250)).jitter(Jitter::Decorrelated).seed(1);
        assert_eq!(delays(&mut p, 1..=5), vec![Some(ms(250)); 5]);
    }

    #[test]
    fn fixed_delay_jitter_and_budgets() {
        let mut p = FixedDelay::new(ms(400)).jitter(Jitter::Full).seed(4);
        let s: Vec<_> = (1..=500).map(|n| p.next_delay(&ctx(n)).unwrap()).collect();
        assert!(s.iter().all(|d| *d <= ms(400)));
        assert!(s.iter().collect::<HashSet<_>>().len() > 450);

        let mut p = FixedDelay::new(ms(400)).jitter(Jitter::Equal).seed(4);
        let s: Vec<_> = (1..=500).map(|n| p.next_delay(&ctx(n)).unwrap()).collect();
        assert!(s.iter().all(|d| ms(200) <= *d && *d <= ms(400)));
        assert!(s.iter().collect::<HashSet<_>>().len() > 450);

        let mut p = FixedDelay::new(ms(400)).max_attempts(2);
        assert_eq!(delays(&mut p, 1..=3), [Some(ms(400)), None, None]);

        let mut p = FixedDelay::new(ms(400)).max_elapsed(Duration::from_secs(1));
        assert_eq!(p.next_delay(&RetryContext::new(3, ms(600))), Some(ms(400)));
        assert_eq!(p.next_delay(&RetryContext::new(3, ms(601))), None);
    }

    #[test]
    fn immediate_is_zero_and_honours_max_attempts() {
        let mut p = Immediate::new();
        assert_eq!(delays(&mut p, 1..=3), vec![Some(Duration::ZERO); 3]);
        assert_eq!(
            p.next_delay(&RetryContext::new(u32::MAX, Duration::MAX)),
            Some(Duration::ZERO)
        );

        let mut p = Immediate::new().max_attempts(3);
        assert_eq!(
            delays(&mut p, 1..=4),
            [Some(Duration::ZERO), Some(Duration::ZERO), None, None]
        );
        assert_eq!(Immediate::new().max_attempts(0).next_delay(&ctx(1)), None);
    }

    #[test]
    fn no_retry_gives_up() {
        let mut p = NoRetry::new();
        assert_eq!(p.next_delay(&ctx(1)), None);
        assert_eq!(p.next_delay(&RetryContext::new(u32::MAX, Duration::MAX)), None);
        const _CONST: NoRetry = NoRetry::new();
        assert_eq!(NoRetry.next_delay(&ctx(1)), None);
    }

    #[test]
    fn from_fn_passes_the_context_through() {
        let mut seen = Vec::new();
        {
            let mut p = from_fn(|c: &RetryContext| {
                seen.push(*c);
                (c.failures < 3).then_some(c.elapsed * 2)
            });
            assert_eq!(p.next_delay(&RetryContext::new(1, ms(10))), Some(ms(20)));
            assert_eq!(p.next_delay(&RetryContext::new(2, ms(30))), Some(ms(60)));
            assert_eq!(p.next_delay(&RetryContext::new(3, ms(90))), None);
            p.reset();
            assert_eq!(format!("{p:?}"), "FnPolicy { .. }");
        }
        assert_eq!(
            seen,
            [
                RetryContext::new(1, ms(10)),
                RetryContext::new(2, ms(30)),
                RetryContext::new(3, ms(90)),
            ]
        );
    }

    #[test]
    fn boxed_dyn_policies_forward() {
        let mut policies: Vec<Box<dyn RetryPolicy>> = vec![
            Box::new(NoRetry),
            Box::new(Immediate::new()),
            Box::new(FixedDelay::new(ms(5))),
            Box::new(ExponentialBackoff::new(ms(5), ms(50)).jitter(Jitter::None)),
            Box::new(from_fn(|c: &RetryContext| Some(MS * c.failures))),
        ];
        let got: Vec<_> = policies.iter_mut().map(|p| p.next_delay(&ctx(3))).collect();
        assert_eq!(
            got,
            [None, Some(Duration::ZERO), Some(ms(5)), Some(ms(20)), Some(ms(3))]
        );
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&policies);
    }

    #[test]
    fn presets_have_documented_values() {
        let check = |p: ExponentialBackoff, initial, max, jitter| {
            assert_eq!(p.initial(), initial);
            assert_eq!(p.max(), max);
            assert_eq!(p.factor, 2.0);
            assert_eq!(p.jitter.mode, jitter);
            assert_eq!(p.budget, Budget::default());
            assert_eq!(p.budget.max_attempts, None);
            assert_eq!(p.budget.max_elapsed, None);
        };
        check(
            ExponentialBackoff::default(),
            ms(100),
            Duration::from_secs(30),
            Jitter::Equal,
        );
        check(
            ExponentialBackoff::fast(),
            ms(10),
            Duration::from_secs(2),
            Jitter::Equal,
        );
        check(
            ExponentialBackoff::conservative(),
            Duration::from_secs(1),
            Duration::from_secs(60),
            Jitter::Full,
        );
        check(ExponentialBackoff::new(ms(1), ms(2)), ms(1), ms(2), Jitter::Equal);
        assert_eq!(FixedDelay::new(ms(1)).jitter.mode, Jitter::None);
        assert_eq!(FixedDelay::new(ms(1)).budget, Budget::default());
    }

    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            Just(Duration::new(u64::MAX, 0)),
            Just(Duration::from_nanos(1)),
            (0u64..=600_000).prop_map(Duration::from_millis),
            any::<u64>().prop_map(Duration::from_nanos),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    fn any_factor() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(-1.0),
            Just(0.0),
            Just(1.0),
            Just(2.0),
            0.0..10.0f64,
            any::<f64>(),
        ]
    }

    fn any_jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
        ]
    }

    fn any_failures() -> impl Strategy<Value = u32> {
        prop_oneof![1u32..=64, Just(u32::MAX), Just(u32::MAX - 3), 1u32..=u32::MAX]
    }

    proptest! {
        /// For any parameters, `next_delay` never panics, never exceeds `max` (even when
        /// `initial > max`), respects its jitter mode's bounds around the un-jittered delay
        /// and respects both budgets.
        #[test]
        fn exponential_never_panics_and_respects_bounds(
            initial in any_duration(),
            max in any_duration(),
            factor in any_factor(),
            jitter in any_jitter(),
            seed in any::<u64>(),
            first_failure in any_failures(),
            elapsed in any_duration(),
            attempts in proptest::option::of(any_failures()),
            budget in proptest::option::of(any_duration()),
        ) {
            let mut unbounded = ExponentialBackoff::new(initial, max).factor(factor).jitter(jitter).seed(seed);
            let mut reference = ExponentialBackoff::new(initial, max).factor(factor).jitter(Jitter::None);
            let mut bounded = ExponentialBackoff::new(initial, max).factor(factor).jitter(jitter).seed(seed);
            if let Some(a) = attempts {
                bounded = bounded.max_attempts(a);
            }
            if let Some(b) = budget {
                bounded = bounded.max_elapsed(b);
            }
            let mut prev_d = Duration::ZERO;
            for i in 0..8u32 {
                let failures = first_failure.saturating_add(i);
                let c = RetryContext::new(failures, elapsed);
                let d = reference.next_delay(&c).unwrap();
                prop_assert!(d <= max);
                prop_assert!(d >= prev_d, "un-jittered delay is non-decreasing");
                prev_d = d;
                if failures == 1 {
                    prop_assert_eq!(d, initial.min(max));
                }
                let x = unbounded.next_delay(&c).unwrap();
                prop_assert!(x <= max, "{:?} > max {:?}", x, max);
                match jitter {
                    Jitter::None => prop_assert_eq!(x, d),
                    Jitter::Full => prop_assert!(x <= d),
                    Jitter::Equal => prop_assert!(d / 2 <= x && x <= d),
                    Jitter::Decorrelated => prop_assert!(initial.min(max) <= x),
                }
                if let Some(x) = bounded.next_delay(&c) {
                    if let Some(a) = attempts {
                        prop_assert!(failures < a);
                    }
                    if let Some(b) = budget {
                        prop_assert!(elapsed.checked_add(x).is_some_and(|t| t <= b));
                    }
                    prop_assert!(x <= max);
                    if jitter == Jitter::None {
                        prop_assert_eq!(x, d);
                    }
                } else {
                    let out_of_attempts = attempts.is_some_and(|a| failures >= a);
                    prop_assert!(out_of_attempts || budget.is_some(), "gave up without a budget");
                    if !out_of_attempts && jitter == Jitter::None {
                        // Without jitter the rejected delay is known exactly.
                        let b = budget.unwrap();
                        prop_assert!(elapsed.checked_add(d).map_or(true, |t| t > b));
                    }
                }
                if i == 4 {
                    unbounded.reset();
                    bounded.reset();
                }
            }
        }

        /// `FixedDelay` never panics and never exceeds its delay, whatever the jitter.
        #[test]
        fn fixed_delay_never_exceeds_its_delay(
            delay in any_duration(),
            jitter in any_jitter(),
            seed in any::<u64>(),
            first_failure in any_failures(),
        ) {
            let mut p = FixedDelay::new(delay).jitter(jitter).seed(seed);
            for i in 0..8u32 {
                let x = p.next_delay(&ctx(first_failure.saturating_add(i))).unwrap();
                prop_assert!(x <= delay);
                match jitter {
                    Jitter::None | Jitter::Decorrelated => prop_assert_eq!(x, delay),
                    Jitter::Equal => prop_assert!(delay / 2 <= x),
                    Jitter::Full => {}
                }
            }
        }
    }
}
