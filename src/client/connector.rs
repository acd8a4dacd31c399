//! The connector of a client run: the transport alone, or the stack its builder describes, type-erased
//! ([`BoxConnector`]) so that the stack can be chosen at run time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_tungstenite::tungstenite::Message;
use futures_core::Stream;
use futures_sink::Sink;
use tower_layer::Layer;

use crate::connect::Connect;
use crate::delivery::{Continuity, Resumed};
use crate::diagnose::Diagnose;
use crate::error::{BoxError, DiagnosedError};
use crate::hook::{End, Hook, HooksLayer, Tick, Verdict};
use crate::ws::WsConnector;

/// A connection as an erased stack carries it.
trait Channel:
    Stream<Item = Result<Message, DiagnosedError>> + Sink<Message, Error = DiagnosedError> + Send + Unpin
{
}

impl<T> Channel for T where
    T: Stream<Item = Result<Message, DiagnosedError>> + Sink<Message, Error = DiagnosedError> + Send + Unpin
{
}

/// Keeps a connection's errors with their diagnosis.
struct Diagnosed<S>(S);

impl<S, E> Stream for Diagnosed<S>
where
    S: Stream<Item = Result<Message, E>> + Unpin,
    E: Into<BoxError> + Diagnose,
{
    type Item = Result<Message, DiagnosedError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|item| item.map(|result| result.map_err(DiagnosedError::new)))
    }
}

impl<S> Sink<Message> for Diagnosed<S>
where
    S: Sink<Message> + Unpin,
    S::Error: Into<BoxError> + Diagnose,
{
    type Error = DiagnosedError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), DiagnosedError>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(DiagnosedError::new)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), DiagnosedError> {
        Pin::new(&mut self.0).start_send(item).map_err(DiagnosedError::new)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), DiagnosedError>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(DiagnosedError::new)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), DiagnosedError>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(DiagnosedError::new)
    }
}

/// A WebSocket connection of any stack, boxed: what a [`BoxConnector`] makes.
pub struct BoxConnection(Pin<Box<dyn Channel>>);

impl fmt::Debug for BoxConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxConnection").finish_non_exhaustive()
    }
}

impl Stream for BoxConnection {
    type Item = Result<Message, DiagnosedError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

impl Sink<Message> for BoxConnection {
    type Error = DiagnosedError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), DiagnosedError>> {
        self.0.as_mut().poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), DiagnosedError> {
        self.0.as_mut().start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), DiagnosedError>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), DiagnosedError>> {
        self.0.as_mut().poll_close(cx)
    }
}

/// The attempt future of a [`BoxConnector`].
///
/// # Cancel safety
///
/// Dropping it abandons the attempt: what it had opened (TCP, TLS) is closed, nothing is retried by it.
pub type BoxConnectFuture = Pin<Box<dyn Future<Output = Result<BoxConnection, DiagnosedError>> + Send>>;

/// A WebSocket connector stack of any type, boxed: what the layers given to
/// [`ClientBuilder::layer`](super::ClientBuilder::layer) wrap and make.
pub struct BoxConnector {
    connect: Box<dyn FnMut() -> BoxConnectFuture + Send>,
}

impl BoxConnector {
    /// Erases `inner`'s type; its errors keep their diagnosis.
    pub fn new<C, E>(mut inner: C) -> Self
    where
        C: Connect + Send + 'static,
        C::Future: Send + 'static,
        C::Connection: Stream<Item = Result<Message, E>> + Sink<Message> + Send + Unpin + 'static,
        <C::Connection as Sink<Message>>::Error: Into<BoxError> + Diagnose,
        E: Into<BoxError> + Diagnose,
    {
        Self {
            connect: Box::new(move || {
                let attempt = inner.connect();
                Box::pin(async move {
                    let conn = attempt.await.map_err(DiagnosedError::new)?;
                    Ok(BoxConnection(Box::pin(Diagnosed(conn))))
                })
            }),
        }
    }
}

impl Connect for BoxConnector {
    type Connection = BoxConnection;
    type Error = DiagnosedError;
    type Future = BoxConnectFuture;

    fn connect(&mut self) -> BoxConnectFuture {
        (self.connect)()
    }
}

impl fmt::Debug for BoxConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxConnector").finish_non_exhaustive()
    }
}

/// A hook the client keeps boxed, and clones per attempt.
pub(super) trait ClientHook: Hook<Message> + Sync {
    fn clone_box(&self) -> Box<dyn ClientHook>;
}

impl<H: Hook<Message> + Clone + Sync + 'static> ClientHook for H {
    fn clone_box(&self) -> Box<dyn ClientHook> {
        Box::new(self.clone())
    }
}

/// A group of boxed hooks, the first outermost, as a tuple of them would run.
#[derive(Default)]
pub(super) struct HookList(pub(super) Vec<Box<dyn ClientHook>>);

impl Clone for HookList {
    fn clone(&self) -> Self {
        Self(self.0.iter().map(|hook| hook.clone_box()).collect())
    }
}

impl Hook<Message> for HookList {
    fn on_attempt(&mut self) {
        self.0.iter_mut().for_each(|hook| hook.on_attempt());
    }

    fn on_start(&mut self) {
        self.0.iter_mut().rev().for_each(|hook| hook.on_start());
    }

    fn on_inbound(&mut self, message: &mut Message) -> Verdict {
        for hook in self.0.iter_mut().rev() {
            if let Verdict::Drop = hook.on_inbound(message) {
                return Verdict::Drop;
            }
        }
        Verdict::Pass
    }

    fn on_outbound(&mut self, message: &mut Message) -> Verdict {
        for hook in &mut self.0 {
            if let Verdict::Drop = hook.on_outbound(message) {
                return Verdict::Drop;
            }
        }
        Verdict::Pass
    }

    fn on_end(&mut self, end: &End<'_>) {
        self.0.iter_mut().rev().for_each(|hook| hook.on_end(end));
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Tick<Message>> {
        let mut index = 0;
        while index < self.0.len() {
            match self.0[index].poll_timer(cx) {
                Poll::Ready(Tick::Send(mut message)) => {
                    // A message a hook sends passes the hooks after it; dropped, the hook is polled again.
                    let dropped = self.0[index + 1..]
                        .iter_mut()
                        .any(|hook| matches!(hook.on_outbound(&mut message), Verdict::Drop));
                    if !dropped {
                        return Poll::Ready(Tick::Send(message));
                    }
                }
                Poll::Ready(tick) => return Poll::Ready(tick),
                Poll::Pending => index += 1,
            }
        }
        Poll::Pending
    }
}

/// The continuity reports of a client's [`ResumeLayer`], taken out of the items and kept for the driver,
/// which puts each in front of the message read after it.
pub(super) type ContinuitySlot = Arc<std::sync::Mutex<std::collections::VecDeque<Continuity>>>;

/// A connector whose connections yield [`Resumed`] items, as one that yields messages: reports go to the slot.
pub(super) struct Tap<C> {
    pub(super) inner: C,
    pub(super) slot: ContinuitySlot,
}

impl<C> Connect for Tap<C>
where
    C: Connect,
    C::Future: Unpin,
{
    type Connection = Tapped<C::Connection>;
    type Error = C::Error;
    type Future = TapFuture<C::Future>;

    fn connect(&mut self) -> Self::Future {
        TapFuture {
            inner: self.inner.connect(),
            slot: Arc::clone(&self.slot),
        }
    }
}

/// The attempt future of a [`Tap`].
pub(super) struct TapFuture<F> {
    inner: F,
    slot: ContinuitySlot,
}

impl<F: Future<Output = Result<S, E>> + Unpin, S, E> Future for TapFuture<F> {
    type Output = Result<Tapped<S>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let conn = std::task::ready!(Pin::new(&mut self.inner).poll(cx))?;
        Poll::Ready(Ok(Tapped {
            inner: conn,
            slot: Arc::clone(&self.slot),
        }))
    }
}

/// A connection of a [`Tap`].
pub(super) struct Tapped<S> {
    inner: S,
    slot: ContinuitySlot,
}

impl<S, E> Stream for Tapped<S>
where
    S: Stream<Item = Result<Resumed<Message>, E>> + Unpin,
{
    type Item = Result<Message, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match std::task::ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(Resumed::Message(message))) => return Poll::Ready(Some(Ok(message))),
                Some(Ok(Resumed::Continuity(report))) => {
                    self.slot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push_back(report);
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            }
        }
    }
}

impl<S: Sink<Message> + Unpin> Sink<Message> for Tapped<S> {
    type Error = S::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), S::Error> {
        Pin::new(&mut self.inner).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// One step of a client's stack, in the order its builder was given them (the first outermost).
pub(super) enum Step {
    Hook(Box<dyn ClientHook>),
    Layer(LayerFn),
}

/// A user layer, applied to an erased stack.
pub(super) type LayerFn = Arc<dyn Fn(BoxConnector) -> BoxConnector + Send + Sync>;

/// Applies `steps` around `inner`, inside out, with `innermost` hooks joining the group closest to `inner`:
/// consecutive hooks form one group, run by one wrapper, as in a
/// [`ConnectorBuilder`](crate::layer::ConnectorBuilder).
pub(super) fn stack(inner: BoxConnector, steps: &[Step], innermost: HookList) -> BoxConnector {
    let mut connector = inner;
    let mut group = innermost;
    for step in steps.iter().rev() {
        match step {
            Step::Hook(hook) => group.0.insert(0, hook.clone_box()),
            Step::Layer(layer) => {
                connector = wrap(connector, std::mem::take(&mut group));
                connector = layer(connector);
            }
        }
    }
    wrap(connector, group)
}

/// Wraps `connector` with a hook group, unless it is empty.
fn wrap(connector: BoxConnector, group: HookList) -> BoxConnector {
    if group.0.is_empty() {
        return connector;
    }
    BoxConnector::new(HooksLayer::new(group).layer(connector))
}

/// The connector of a client run: the transport alone when nothing is stacked on it (the default), so that
/// the run is compiled for it and messages are read without dynamic dispatch; otherwise the erased stack.
// One per run: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum ClientConnector {
    Direct(WsConnector),
    Stacked(BoxConnector),
}
