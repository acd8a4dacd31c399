//! [`Jitter`]: the random spread added to a delay, and the seedable generator behind it.

use std::time::Duration;

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
    /// This mode ignores the computed delay `d` (and so an
    /// [`ExponentialBackoff`](super::ExponentialBackoff)'s factor): growth comes from `prev * 3`.
    /// [`RetryPolicy::reset`](super::RetryPolicy::reset) forgets `prev`. With a zero `initial` delay every
    /// delay is zero. For [`FixedDelay`](super::FixedDelay), `initial` and `max` are both the fixed delay, so
    /// this mode degenerates to no jitter.
    Decorrelated,
}

/// The random number generator: a seeded generator clones its exact state (deterministic), an
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

/// A jitter mode plus the state it needs, shared by [`ExponentialBackoff`](super::ExponentialBackoff) and
/// [`FixedDelay`](super::FixedDelay).
#[derive(Debug, Clone)]
pub(super) struct JitterState {
    pub(super) mode: Jitter,
    rng: JitterRng,
    /// Previous delay, for [`Jitter::Decorrelated`]; `None` means "start at `initial`".
    prev: Option<Duration>,
}

impl JitterState {
    pub(super) fn new(mode: Jitter) -> Self {
        Self {
            mode,
            rng: JitterRng::from_entropy(),
            prev: None,
        }
    }

    /// Seeds the generator, making the delays deterministic.
    pub(super) fn seed(&mut self, seed: u64) {
        self.rng = JitterRng::with_seed(seed);
    }

    /// Applies the jitter mode to the computed delay `d` (already at most `cap`).
    /// `initial` is only used by [`Jitter::Decorrelated`]. The result never exceeds `cap`
    /// (nor `d`, except for decorrelated jitter, which ignores `d`).
    pub(super) fn apply(&mut self, d: Duration, initial: Duration, cap: Duration) -> Duration {
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

    pub(super) fn reset(&mut self) {
        self.prev = None;
    }
}
