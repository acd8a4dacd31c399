//! Retry policies: how long to wait before each reconnection attempt.
//!
//! Part of the core. When [`ReconnectingStream`](crate::ReconnectingStream) loses its connection (or fails to
//! establish one), it asks its [`RetryPolicy`] for the delay before the next attempt. A policy is a pure
//! function of a [`RetryContext`] (the number of consecutive failures and the time elapsed since the first
//! of them), plus a seedable random number generator for jitter, so every policy here is deterministic under
//! a fixed seed and unit-tested without a runtime or a clock.
//!
//! Returning `None` gives up: the stream then ends instead of reconnecting.
//!
//! Provided policies:
//!
//! * [`ExponentialBackoff`]: `initial * factor^(failures - 1)`, capped at a maximum, with
//!   [`Jitter`] (equal jitter by default). This is the recommended policy; see also its presets
//!   [`ExponentialBackoff::fast`], [`ExponentialBackoff::conservative`] and [`ExponentialBackoff::default`].
//! * [`FixedDelay`]: the same delay every time, optionally jittered.
//! * [`Immediate`]: retry at once.
//! * [`NoRetry`]: give up at the first failure.
//! * [`from_fn`]: any closure of the [`RetryContext`].
//!
//! Any of them takes an attempt or time budget: [`with_max_attempts`](RetryPolicy::with_max_attempts) and
//! [`with_max_elapsed`](RetryPolicy::with_max_elapsed) wrap it in [`Limited`].
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use stream_tungstenite::retry::{ExponentialBackoff, Jitter, RetryContext, RetryPolicy};
//!
//! let mut policy = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(1))
//!     .with_jitter(Jitter::None)
//!     .with_max_attempts(5);
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
//!         None, // the fifth failure exhausts `with_max_attempts(5)`
//!     ]
//! );
//! ```

mod exponential;
mod fixed;
mod jitter;
mod limited;

use std::fmt;
use std::time::Duration;

pub use self::exponential::{ExponentialBackoff, DEFAULT_FACTOR, DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY};
pub use self::fixed::FixedDelay;
pub use self::jitter::Jitter;
pub use self::limited::Limited;

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

    /// This policy, giving up when `ctx.failures >= attempts`: see [`Limited::with_max_attempts`].
    #[must_use]
    fn with_max_attempts(self, attempts: u32) -> Limited<Self>
    where
        Self: Sized,
    {
        Limited::new(self).with_max_attempts(attempts)
    }

    /// This policy, giving up when waiting would end past `budget` from the first failure of the streak: see
    /// [`Limited::with_max_elapsed`].
    #[must_use]
    fn with_max_elapsed(self, budget: Duration) -> Limited<Self>
    where
        Self: Sized,
    {
        Limited::new(self).with_max_elapsed(budget)
    }
}

impl<P: RetryPolicy + ?Sized> RetryPolicy for Box<P> {
    fn next_delay(&mut self, ctx: &RetryContext) -> Option<Duration> {
        (**self).next_delay(ctx)
    }

    fn reset(&mut self) {
        (**self).reset();
    }
}

/// Retries at once, with zero delay; unlimited unless given a budget
/// ([`with_max_attempts`](RetryPolicy::with_max_attempts)).
///
/// Beware that unlimited immediate retries against an unreachable server spin as fast as
/// connection attempts fail.
#[derive(Debug, Clone, Copy, Default)]
pub struct Immediate;

impl Immediate {
    /// Zero delay, unlimited attempts (the same as `Immediate`).
    #[must_use]
    pub const fn new() -> Self {
        Self
    }
}

impl RetryPolicy for Immediate {
    /// Returns `Duration::ZERO`.
    fn next_delay(&mut self, _ctx: &RetryContext) -> Option<Duration> {
        Some(Duration::ZERO)
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
        let mut p = ExponentialBackoff::new(ms(100), ms(1000)).with_jitter(Jitter::None);
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
            .with_factor(1.5)
            .with_jitter(Jitter::None);
        assert_eq!(
            delays(&mut p, 1..=7),
            [100_000, 150_000, 225_000, 337_500, 506_250, 759_375, 1_000_000].map(|us| Some(Duration::from_micros(us)))
        );
    }

    #[test]
    fn degenerate_factors_are_sanitized() {
        for factor in [0.5, 0.0, -3.0, f64::NAN, f64::NEG_INFINITY, 1.0] {
            let mut p = ExponentialBackoff::new(ms(100), ms(1000))
                .with_factor(factor)
                .with_jitter(Jitter::None);
            assert_eq!(delays(&mut p, 1..=4), vec![Some(ms(100)); 4], "factor {factor}");
            assert_eq!(p.next_delay(&ctx(u32::MAX)), Some(ms(100)), "factor {factor}");
        }
        let mut p = ExponentialBackoff::new(ms(100), ms(1000))
            .with_factor(f64::INFINITY)
            .with_jitter(Jitter::None);
        assert_eq!(delays(&mut p, 1..=3), [Some(ms(100)), Some(ms(1000)), Some(ms(1000))]);
        let mut p = ExponentialBackoff::new(ms(100), ms(1000))
            .with_factor(f64::MAX)
            .with_jitter(Jitter::None);
        assert_eq!(delays(&mut p, 1..=3), [Some(ms(100)), Some(ms(1000)), Some(ms(1000))]);
    }

    #[test]
    fn initial_above_max_is_capped_at_max() {
        for jitter in [Jitter::None, Jitter::Decorrelated] {
            let mut p = ExponentialBackoff::new(ms(5000), ms(1000))
                .with_jitter(jitter)
                .with_seed(1);
            assert_eq!(delays(&mut p, 1..=4), vec![Some(ms(1000)); 4], "{jitter:?}");
        }
    }

    #[test]
    fn huge_values_saturate_at_max() {
        let mut p = ExponentialBackoff::new(Duration::from_secs(1), Duration::MAX).with_jitter(Jitter::None);
        assert_eq!(p.next_delay(&ctx(1)), Some(Duration::from_secs(1)));
        assert_eq!(p.next_delay(&ctx(11)), Some(Duration::from_secs(1024)));
        assert_eq!(p.next_delay(&ctx(u32::MAX)), Some(Duration::MAX));

        let mut p = ExponentialBackoff::new(Duration::MAX, Duration::MAX).with_jitter(Jitter::None);
        assert_eq!(p.next_delay(&ctx(1)), Some(Duration::MAX));
        assert_eq!(p.next_delay(&ctx(2)), Some(Duration::MAX));

        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            let mut p = ExponentialBackoff::new(Duration::MAX, Duration::MAX)
                .with_jitter(jitter)
                .with_seed(3);
            for n in [1, 2, 100, u32::MAX] {
                assert!(p.next_delay(&ctx(n)).is_some());
            }
        }
    }

    #[test]
    fn zero_initial_delay_with_every_jitter_is_zero() {
        for jitter in [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            let mut p = ExponentialBackoff::new(Duration::ZERO, ms(1000))
                .with_factor(f64::INFINITY)
                .with_jitter(jitter)
                .with_seed(9);
            assert_eq!(delays(&mut p, 1..=5), vec![Some(Duration::ZERO); 5], "{jitter:?}");
            assert_eq!(p.next_delay(&ctx(u32::MAX)), Some(Duration::ZERO));
        }
        let mut p = ExponentialBackoff::new(ms(100), Duration::ZERO).with_jitter(Jitter::Full);
        assert_eq!(p.next_delay(&ctx(3)), Some(Duration::ZERO));
    }

    /// Draws `n` samples at failure 3 (un-jittered 400 ms) from a seeded 100 ms..10 s policy.
    fn samples(jitter: Jitter, seed: u64, n: usize) -> Vec<Duration> {
        let mut p = ExponentialBackoff::new(ms(100), Duration::from_secs(10))
            .with_jitter(jitter)
            .with_seed(seed);
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
        let mut a = ExponentialBackoff::new(ms(100), Duration::from_secs(10)).with_seed(2);
        let b = samples(Jitter::Equal, 2, 50);
        let a: Vec<_> = (0..50).map(|_| a.next_delay(&ctx(3)).unwrap()).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn decorrelated_jitter_within_bounds_and_varies() {
        let initial = ms(100);
        let max = Duration::from_secs(5);
        let mut p = ExponentialBackoff::new(initial, max)
            .with_jitter(Jitter::Decorrelated)
            .with_seed(3);
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
                    .with_jitter(jitter)
                    .with_seed(seed);
                delays(&mut p, 1..=20)
            };
            assert_eq!(run(7), run(7), "{jitter:?}");
            assert_ne!(run(7), run(8), "{jitter:?}");
        }
    }

    #[test]
    fn clone_of_seeded_policy_repeats_clone_of_unseeded_does_not() {
        let mut a = ExponentialBackoff::new(ms(100), Duration::from_secs(30))
            .with_jitter(Jitter::Full)
            .with_seed(5);
        a.next_delay(&ctx(1));
        let mut b = a.clone();
        assert_eq!(delays(&mut a, 1..=20), delays(&mut b, 1..=20));

        let mut a = ExponentialBackoff::new(ms(100), Duration::from_secs(30)).with_jitter(Jitter::Full);
        let mut b = a.clone();
        assert_ne!(delays(&mut a, 5..=24), delays(&mut b, 5..=24));
    }

    #[test]
    fn max_attempts_boundary() {
        let mut p = ExponentialBackoff::new(ms(100), ms(1000))
            .with_jitter(Jitter::None)
            .with_max_attempts(3);
        assert_eq!(delays(&mut p, 1..=5), [Some(ms(100)), Some(ms(200)), None, None, None]);
        assert_eq!(p.next_delay(&ctx(u32::MAX)), None);

        for attempts in [0, 1] {
            let mut p = ExponentialBackoff::default().with_max_attempts(attempts);
            assert_eq!(p.next_delay(&ctx(1)), None, "max_attempts({attempts})");
        }
        let mut p = ExponentialBackoff::default()
            .with_jitter(Jitter::None)
            .with_max_attempts(u32::MAX);
        assert_eq!(p.next_delay(&ctx(u32::MAX - 1)), Some(Duration::from_secs(30)));
        assert_eq!(p.next_delay(&ctx(u32::MAX)), None);
    }

    #[test]
    fn max_elapsed_boundary() {
        let mut p = ExponentialBackoff::new(ms(100), ms(1000))
            .with_jitter(Jitter::None)
            .with_max_elapsed(ms(1000));
        let at = |p: &mut Limited<ExponentialBackoff>, failures, elapsed| {
            p.next_delay(&RetryContext::new(failures, elapsed))
        };
        assert_eq!(at(&mut p, 1, ms(900)), Some(ms(100)), "ending exactly at the budget");
        assert_eq!(at(&mut p, 1, ms(900) + Duration::from_nanos(1)), None);
        assert_eq!(at(&mut p, 2, ms(800)), Some(ms(200)));
        assert_eq!(at(&mut p, 2, ms(801)), None);
        assert_eq!(at(&mut p, 1, Duration::MAX), None, "no overflow");

        let mut p = ExponentialBackoff::new(ms(100), Duration::MAX)
            .with_jitter(Jitter::None)
            .with_max_elapsed(Duration::MAX);
        assert_eq!(at(&mut p, u32::MAX, Duration::ZERO), Some(Duration::MAX));
        assert_eq!(at(&mut p, u32::MAX, Duration::from_nanos(1)), None);

        let mut p = ExponentialBackoff::new(Duration::ZERO, ms(1)).with_max_elapsed(Duration::ZERO);
        assert_eq!(at(&mut p, 5, Duration::ZERO), Some(Duration::ZERO));
    }

    #[test]
    fn reset_makes_decorrelated_start_over() {
        let initial = ms(100);
        let mut grew_without_reset = false;
        for seed in 0..100 {
            let policy = ExponentialBackoff::new(initial, Duration::from_secs(60))
                .with_jitter(Jitter::Decorrelated)
                .with_seed(seed);
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

        let mut p = FixedDelay::new(ms(250)).with_jitter(Jitter::Decorrelated).with_seed(1);
        assert_eq!(delays(&mut p, 1..=5), vec![Some(ms(250)); 5]);
    }

    #[test]
    fn fixed_delay_jitter_and_budgets() {
        let mut p = FixedDelay::new(ms(400)).with_jitter(Jitter::Full).with_seed(4);
        let s: Vec<_> = (1..=500).map(|n| p.next_delay(&ctx(n)).unwrap()).collect();
        assert!(s.iter().all(|d| *d <= ms(400)));
        assert!(s.iter().collect::<HashSet<_>>().len() > 450);

        let mut p = FixedDelay::new(ms(400)).with_jitter(Jitter::Equal).with_seed(4);
        let s: Vec<_> = (1..=500).map(|n| p.next_delay(&ctx(n)).unwrap()).collect();
        assert!(s.iter().all(|d| ms(200) <= *d && *d <= ms(400)));
        assert!(s.iter().collect::<HashSet<_>>().len() > 450);

        let mut p = FixedDelay::new(ms(400)).with_max_attempts(2);
        assert_eq!(delays(&mut p, 1..=3), [Some(ms(400)), None, None]);

        let mut p = FixedDelay::new(ms(400)).with_max_elapsed(Duration::from_secs(1));
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

        let mut p = Immediate::new().with_max_attempts(3);
        assert_eq!(
            delays(&mut p, 1..=4),
            [Some(Duration::ZERO), Some(Duration::ZERO), None, None]
        );
        assert_eq!(Immediate::new().with_max_attempts(0).next_delay(&ctx(1)), None);
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
            Box::new(ExponentialBackoff::new(ms(5), ms(50)).with_jitter(Jitter::None)),
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
            assert_eq!(p.factor(), DEFAULT_FACTOR);
            assert_eq!(p.jitter(), jitter);
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
        assert_eq!(FixedDelay::new(ms(1)).jitter(), Jitter::None);
        let limited = FixedDelay::new(ms(1)).with_max_attempts(2);
        assert_eq!((limited.max_attempts(), limited.max_elapsed()), (Some(2), None));
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
            let mut unbounded = ExponentialBackoff::new(initial, max).with_factor(factor).with_jitter(jitter).with_seed(seed);
            let mut reference = ExponentialBackoff::new(initial, max).with_factor(factor).with_jitter(Jitter::None);
            let mut bounded = Limited::new(ExponentialBackoff::new(initial, max).with_factor(factor).with_jitter(jitter).with_seed(seed));
            if let Some(a) = attempts {
                bounded = bounded.with_max_attempts(a);
            }
            if let Some(b) = budget {
                bounded = bounded.with_max_elapsed(b);
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
            let mut p = FixedDelay::new(delay).with_jitter(jitter).with_seed(seed);
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
