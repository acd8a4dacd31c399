//! [`HooksLayer`] and the connector it makes, [`Hooks`], with its attempt future [`HooksFuture`].

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;
use tower_layer::Layer;

use super::{End, Hook, HooksConnection};
use crate::connect::Connect;

/// A hook group as a [`tower_layer::Layer`]: wraps a connector so that each connection it makes runs the
/// group in one [`HooksConnection`].
///
/// [`ConnectorBuilder::hook`](crate::layer::ConnectorBuilder::hook) builds one from consecutive hooks; use
/// this type directly to add a group (a tuple) as a layer anywhere.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stream_tungstenite::extension::{Heartbeat, Metrics};
/// use stream_tungstenite::hook::HooksLayer;
///
/// let metrics = Metrics::new();
/// let hooks = HooksLayer::new((Heartbeat::new(Duration::from_secs(15), Duration::from_secs(10)), metrics.clone()));
/// # drop(hooks);
/// ```
#[derive(Debug, Clone, Default)]
pub struct HooksLayer<H> {
    hooks: H,
}

impl<H> HooksLayer<H> {
    /// A layer running `hooks` (cloned for each attempt) on every connection.
    pub fn new(hooks: H) -> Self {
        Self { hooks }
    }

    /// The hook group.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }
}

impl<C, H: Clone> Layer<C> for HooksLayer<H> {
    type Service = Hooks<C, H>;

    fn layer(&self, inner: C) -> Hooks<C, H> {
        Hooks {
            inner,
            hooks: self.hooks.clone(),
        }
    }
}

/// A connector whose connections run a hook group; made by [`HooksLayer`].
#[derive(Debug, Clone)]
pub struct Hooks<C, H> {
    inner: C,
    hooks: H,
}

impl<C, H> Hooks<C, H> {
    /// The inner connector.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }
}

impl<C, H, T, E> Connect for Hooks<C, H>
where
    C: Connect,
    C::Connection: Stream<Item = Result<T, E>>,
    C::Error: std::fmt::Display,
    H: Hook<T> + Clone,
{
    type Connection = HooksConnection<C::Connection, H, T>;
    type Error = C::Error;
    type Future = HooksFuture<C::Future, H, T>;

    fn connect(&mut self) -> Self::Future {
        let mut hooks = self.hooks.clone();
        hooks.on_attempt();
        HooksFuture {
            inner: self.inner.connect(),
            hooks: Some(hooks),
            _message: std::marker::PhantomData,
        }
    }
}

pin_project! {
    /// The attempt future of a [`Hooks`] connector: the inner attempt, then the hooks' start.
    ///
    /// Dropped unfinished (by the connect timeout, say), it tells the hooks [`End::Abandoned`].
    ///
    /// # Cancel safety
    ///
    /// Dropping it abandons the attempt (the inner attempt is dropped with it) and tells the hooks so.
    pub struct HooksFuture<F, H, T>
    where
        H: Hook<T>,
    {
        #[pin]
        inner: F,
        // `None` once the outcome is handed over.
        hooks: Option<H>,
        _message: std::marker::PhantomData<fn(T) -> T>,
    }

    impl<F, H, T> PinnedDrop for HooksFuture<F, H, T>
    where
        H: Hook<T>,
    {
        fn drop(this: Pin<&mut Self>) {
            if let Some(mut hooks) = this.project().hooks.take() {
                hooks.on_end(&End::Abandoned);
            }
        }
    }
}

impl<F, H: Hook<T>, T> std::fmt::Debug for HooksFuture<F, H, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HooksFuture")
            .field("finished", &self.hooks.is_none())
            .finish_non_exhaustive()
    }
}

impl<F, H, T, S, E> Future for HooksFuture<F, H, T>
where
    F: Future<Output = Result<S, E>>,
    E: std::fmt::Display + crate::diagnose::Diagnose,
    H: Hook<T>,
{
    type Output = Result<HooksConnection<S, H, T>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = ready!(this.inner.poll(cx));
        let Some(mut hooks) = this.hooks.take() else {
            // Polled after completion: the contract of `Future` allows anything but unsafety; stay pending.
            return Poll::Pending;
        };
        Poll::Ready(match outcome {
            Ok(conn) => {
                hooks.on_start();
                Ok(HooksConnection::new(conn, hooks))
            }
            Err(error) => {
                hooks.on_end(&End::ConnectFailed(&error));
                Err(error)
            }
        })
    }
}
