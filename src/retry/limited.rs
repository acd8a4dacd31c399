//! [`Limited`]: attempt and time budgets on any policy; built by
//! [`RetryPolicy::with_max_attempts`] and [`RetryPolicy::with_max_elapsed`].

use std::time::Duration;

use super::{RetryContext, RetryPolicy};

/// A policy that gives up when a budget is spent: after `max_attempts` attempts, or when waiting would take
/// the streak past `max_elapsed`. Otherwise it delays as the inner policy says.
///
/// Built by [`RetryPolicy::with_max_attempts`] and [`RetryPolicy::with_max_elapsed`]; calling either again on
/// a `Limited` sets that budget of the same wrapper.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stream_tungstenite::retry::{FixedDelay, RetryContext, RetryPolicy};
///
/// let mut policy = FixedDelay::new(Duration::from_secs(1))
///     .with_max_attempts(3)
///     .with_max_elapsed(Duration::from_secs(60));
/// assert_eq!(policy.next_delay(&RetryContext::new(2, Duration::ZERO)), Some(Duration::from_secs(1)));
/// assert_eq!(policy.next_delay(&RetryContext::new(3, Duration::ZERO)), None);
/// ```
#[derive(Debug, Clone)]
pub struct Limited<P> {
    inner: P,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
}

impl<P> Limited<P> {
    /// `inner`, without a budget yet.
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            max_attempts: None,
            max_elapsed: None,
        }
    }

    /// Gives up when `ctx.failures >= attempts`, before asking the inner policy.
    ///
    /// `with_max_attempts(3)` thus allows three attempts in total: the first one plus two retries, and
    /// `next_delay` returns `None` on the third failure. `0` and `1` give up at the first failure.
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Gives up when `ctx.elapsed + delay > budget`, where `delay` is what the inner policy would wait: the
    /// next attempt must start within `budget` of the first failure of the streak. A delay ending exactly at
    /// the budget is allowed.
    #[must_use]
    pub fn with_max_elapsed(mut self, budget: Duration) -> Self {
        self.max_elapsed = Some(budget);
        self
    }

    /// The attempt budget, if any.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The time budget, if any.
    pub fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// The inner policy.
    pub fn get_ref(&self) -> &P {
        &self.inner
    }
}

impl<P: RetryPolicy> RetryPolicy for Limited<P> {
    fn next_delay(&mut self, ctx: &RetryContext) -> Option<Duration> {
        if self.max_attempts.is_some_and(|max| ctx.failures >= max) {
            return None;
        }
        let delay = self.inner.next_delay(ctx)?;
        match self.max_elapsed {
            Some(budget) if ctx.elapsed.checked_add(delay).map_or(true, |total| total > budget) => None,
            _ => Some(delay),
        }
    }

    fn reset(&mut self) {
        self.inner.reset();
    }
}

/// Gives a policy type the budget setters of [`RetryPolicy`] as inherent methods too, so that they work
/// without the trait in scope. They only wrap the policy in [`Limited`], where the budgets live.
macro_rules! budget_setters {
    ($($ty:ident $(<$param:ident>)?),+ $(,)?) => {$(
        impl$(<$param>)? $ty$(<$param>)? {
            /// This policy, giving up when `ctx.failures >= attempts`: see [`Limited::with_max_attempts`].
            #[must_use]
            pub fn with_max_attempts(self, attempts: u32) -> Limited<Self> {
                Limited::new(self).with_max_attempts(attempts)
            }

            /// This policy, giving up when waiting would end past `budget` from the first failure of the
            /// streak: see [`Limited::with_max_elapsed`].
            #[must_use]
            pub fn with_max_elapsed(self, budget: Duration) -> Limited<Self> {
                Limited::new(self).with_max_elapsed(budget)
            }
        }
    )+};
}

use super::{ExponentialBackoff, FixedDelay, FnPolicy, Immediate};

budget_setters!(ExponentialBackoff, FixedDelay, Immediate, FnPolicy<F>);
