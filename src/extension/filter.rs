//! [`Filter`]: a closure that changes or drops messages in one direction.

use std::fmt;

use crate::hook::{Hook, Verdict};

/// A hook from a closure over inbound ([`Filter::inbound`]) or outbound ([`Filter::outbound`]) messages: it
/// changes a message in place and returns [`Verdict::Pass`] to let it through, or [`Verdict::Drop`] to drop
/// it (a dropped outbound message counts as sent).
///
/// # Examples
///
/// ```
/// use stream_tungstenite::extension::Filter;
/// use stream_tungstenite::hook::Verdict;
/// use stream_tungstenite::tungstenite::Message;
///
/// // Pongs are not delivered.
/// let no_pongs = Filter::inbound(|message: &mut Message| match message {
///     Message::Pong(_) => Verdict::Drop,
///     _ => Verdict::Pass,
/// });
/// # drop(no_pongs);
/// ```
#[derive(Clone)]
pub struct Filter<F> {
    f: F,
    inbound: bool,
}

impl<F> Filter<F> {
    /// Runs `f` on each inbound message.
    pub fn inbound(f: F) -> Self {
        Self { f, inbound: true }
    }

    /// Runs `f` on each outbound message.
    pub fn outbound(f: F) -> Self {
        Self { f, inbound: false }
    }
}

impl<T, F> Hook<T> for Filter<F>
where
    F: FnMut(&mut T) -> Verdict + Send,
{
    #[inline]
    fn on_inbound(&mut self, message: &mut T) -> Verdict {
        if self.inbound {
            (self.f)(message)
        } else {
            Verdict::Pass
        }
    }

    #[inline]
    fn on_outbound(&mut self, message: &mut T) -> Verdict {
        if self.inbound {
            Verdict::Pass
        } else {
            (self.f)(message)
        }
    }
}

impl<F> fmt::Debug for Filter<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let direction = if self.inbound { "inbound" } else { "outbound" };
        f.debug_struct("Filter")
            .field("direction", &direction)
            .finish_non_exhaustive()
    }
}
