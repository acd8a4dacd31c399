//! [`SendMessageHandshaker`]: sends one message, optionally waiting for a reply.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;

use super::{handshake_layer, Exchange, HandshakeIo, Handshaker, Predicate, DEFAULT_HANDSHAKE_TIMEOUT};

/// Sends one message on every new connection; with [`with_reply`](Self::with_reply), waits for a reply
/// the predicate accepts (other messages are kept for the user).
///
/// # Examples
///
/// ```
/// use stream_tungstenite::handshake::SendMessageHandshaker;
///
/// let hello = SendMessageHandshaker::json(serde_json::json!({ "op": "hello", "version": 2 }))
///     .with_reply(|msg| msg.to_text().is_ok_and(|t| t.contains("welcome")));
/// ```
#[derive(Clone)]
pub struct SendMessageHandshaker {
    message: Message,
    reply: Option<Predicate>,
    timeout: Option<Duration>,
}

impl SendMessageHandshaker {
    /// Sends `message`.
    pub fn new(message: Message) -> Self {
        Self {
            message,
            reply: None,
            timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }

    /// Sends a text message.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(Message::text(text.into()))
    }

    /// Sends `value` as JSON text.
    pub fn json(value: serde_json::Value) -> Self {
        Self::new(Message::text(value.to_string()))
    }

    /// Waits for a message for which `is_reply` is true.
    pub fn with_reply(mut self, is_reply: impl Fn(&Message) -> bool + Send + Sync + 'static) -> Self {
        self.reply = Some(Arc::new(is_reply));
        self
    }

    /// Sets the timeout (default [`DEFAULT_HANDSHAKE_TIMEOUT`]); `None` waits forever.
    pub fn with_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }
}

impl Handshaker for SendMessageHandshaker {
    fn handshake<'a>(&'a self, io: &'a mut HandshakeIo<'_>) -> Exchange<'a> {
        Box::pin(async move {
            io.send(self.message.clone()).await?;
            if let Some(is_reply) = &self.reply {
                io.recv_until(|message| is_reply(message).then_some(Ok(()))).await?;
            }
            Ok(())
        })
    }

    fn name(&self) -> &str {
        "send-message"
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

handshake_layer!(SendMessageHandshaker);

impl fmt::Debug for SendMessageHandshaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendMessageHandshaker")
            .field("message_len", &self.message.len())
            .field("expects_reply", &self.reply.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}
