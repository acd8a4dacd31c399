//! [`handshake_fn`]: a closure as a handshake.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Exchange, HandshakeIo, Handshaker, DEFAULT_HANDSHAKE_TIMEOUT};

/// A handshake made from a closure; built by [`handshake_fn`].
pub struct FnHandshaker<F> {
    name: String,
    f: Arc<F>,
    timeout: Option<Duration>,
}

impl<F> Clone for FnHandshaker<F> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            f: Arc::clone(&self.f),
            timeout: self.timeout,
        }
    }
}

/// Makes a handshake from a closure that returns a boxed future (`Box::pin(async move { … })`).
///
/// # Examples
///
/// ```
/// use stream_tungstenite::handshake::{handshake_fn, HandshakeError};
/// use stream_tungstenite::tungstenite::Message;
///
/// let hello = handshake_fn("hello", |io| {
///     Box::pin(async move {
///         io.send(Message::text("hello")).await?;
///         let reply = io.recv().await?;
///         match reply.to_text() {
///             Ok("welcome") => Ok(()),
///             _ => Err(HandshakeError::rejected("hello", "not welcome")),
///         }
///     })
/// });
/// ```
pub fn handshake_fn<F>(name: impl Into<String>, f: F) -> FnHandshaker<F>
where
    F: for<'a, 'c> Fn(&'a mut HandshakeIo<'c>) -> Exchange<'a> + Send + Sync + 'static,
{
    FnHandshaker {
        name: name.into(),
        f: Arc::new(f),
        timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
    }
}

impl<F> FnHandshaker<F> {
    /// Sets the timeout (default [`DEFAULT_HANDSHAKE_TIMEOUT`]); `None` waits forever.
    pub fn with_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }
}

impl<F> Handshaker for FnHandshaker<F>
where
    F: for<'a, 'c> Fn(&'a mut HandshakeIo<'c>) -> Exchange<'a> + Send + Sync + 'static,
{
    fn handshake<'a>(&'a self, io: &'a mut HandshakeIo<'_>) -> Exchange<'a> {
        (self.f)(io)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

impl<F, C> tower_layer::Layer<C> for FnHandshaker<F>
where
    F: for<'a, 'c> Fn(&'a mut HandshakeIo<'c>) -> Exchange<'a> + Send + Sync + 'static,
{
    type Service = super::Handshake<C, Self>;

    fn layer(&self, inner: C) -> Self::Service {
        super::HandshakeLayer::new(self.clone()).layer(inner)
    }
}

impl<F> fmt::Debug for FnHandshaker<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHandshaker")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
