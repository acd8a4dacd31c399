//! What the test binaries share, included once by each as `#[path = "../support/mod.rs"] mod support;`.
//!
//! - [`script`]: a scripted connector (attempt outcomes, connections with scripted items and sink faults) for
//!   the state machine's contracts and properties.
//! - [`events`]: a recording observer.
//! - [`server`]: loopback WebSocket servers; [`feed`]: one that requires auth and subscriptions.
//! - [`proxy`]: a loopback fault proxy; [`lockstep`]: a numbered echo exchange across cuts.
//! - [`peers`]: the third-party interop servers; [`serial`]: one real-time test at a time;
//!   [`log_buffer`]: tracing output in memory.
//! - [`within`]: a bound on any future, so that no test hangs instead of failing.

#![allow(dead_code, unreachable_pub)]

pub mod events;
pub mod feed;
pub mod lockstep;
pub mod log_buffer;
pub mod peers;
pub mod proxy;
pub mod script;
pub mod serial;
pub mod server;

use std::future::Future;
use std::time::Duration;

use futures::future::{select, Either};

#[allow(unused_imports)]
pub use self::events::Recorder;
#[allow(unused_imports)]
pub use self::script::{poll_once, ConnHandle, ConnLog, Inbound, Outcome, Plan, Script, ScriptedConn};

/// A future did not finish within its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut(pub Duration);

/// `fut`'s output, or [`TimedOut`] once `limit` of real time has passed: the one bound every test that waits
/// on the network or on another thread puts on its wait.
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Result<T, TimedOut> {
    let fut = std::pin::pin!(fut);
    match select(fut, async_io::Timer::after(limit)).await {
        Either::Left((value, _)) => Ok(value),
        Either::Right(_) => Err(TimedOut(limit)),
    }
}

/// Runs `fut` to completion on this thread, or panics naming `what` after `limit`: for tests that drive a
/// stream with `block_on`.
pub fn block_on_within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    async_io::block_on(within(limit, fut)).unwrap_or_else(|TimedOut(limit)| panic!("{what}: not done within {limit:?}"))
}

/// The bound on a whole test's wait when nothing tighter is meant: generous, so that a slow machine passes,
/// and finite, so that a regression fails instead of hanging.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Runs `fut` to completion on this thread (async-io's executor, which smol's `block_on` is), or panics after
/// [`LIMIT`].
pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
    block_on_within(LIMIT, "the test", fut)
}
