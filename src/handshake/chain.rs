//! [`ChainedHandshaker`] and [`chain_handshakers!`](crate::chain_handshakers): handshakes run in order.

use std::fmt;
use std::sync::Arc;

use super::{handshake_layer, Exchange, HandshakeIo, Handshaker};

/// Runs handshakes one after the other on the same connection, each with its own timeout; stops at the
/// first failure. Built with [`new`](Self::new) and [`then`](Self::then), or the
/// [`chain_handshakers!`](crate::chain_handshakers) macro.
#[derive(Clone)]
pub struct ChainedHandshaker {
    steps: Vec<Arc<dyn Handshaker>>,
}

impl ChainedHandshaker {
    /// A chain starting with `first`.
    pub fn new(first: impl Handshaker) -> Self {
        Self {
            steps: vec![Arc::new(first)],
        }
    }

    /// A chain of already shared steps (run in order).
    pub fn from_steps(steps: Vec<Arc<dyn Handshaker>>) -> Self {
        Self { steps }
    }

    /// Adds `next` after the steps so far.
    pub fn then(mut self, next: impl Handshaker) -> Self {
        self.steps.push(Arc::new(next));
        self
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the chain is empty (never: it starts with one step).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl Handshaker for ChainedHandshaker {
    fn handshake<'a>(&'a self, io: &'a mut HandshakeIo<'_>) -> Exchange<'a> {
        Box::pin(async move {
            for step in &self.steps {
                io.run(step.as_ref()).await?;
            }
            Ok(())
        })
    }

    fn name(&self) -> &str {
        "chain"
    }
}

handshake_layer!(ChainedHandshaker);

impl fmt::Debug for ChainedHandshaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.steps.iter().map(|step| step.name()).collect();
        f.debug_struct("ChainedHandshaker").field("steps", &names).finish()
    }
}

/// Chains handshakers: `chain_handshakers!(a, b, c)` runs `a`, then `b`, then `c` on every new connection.
///
/// # Examples
///
/// ```
/// use stream_tungstenite::chain_handshakers;
/// use stream_tungstenite::handshake::{AuthHandshaker, SubscribeHandshaker};
///
/// let chain = chain_handshakers!(
///     AuthHandshaker::token("secret").json(),
///     SubscribeHandshaker::new(["trades"]),
/// );
/// assert_eq!(chain.len(), 2);
/// ```
#[macro_export]
macro_rules! chain_handshakers {
    ($first:expr $(, $rest:expr)* $(,)?) => {
        $crate::handshake::ChainedHandshaker::new($first)$(.then($rest))*
    };
}
