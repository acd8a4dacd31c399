//! [`SubscribeHandshaker`]: subscribes to channels, optionally waiting for each confirmation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;

use super::{handshake_layer, Exchange, HandshakeError, HandshakeIo, Handshaker, DEFAULT_HANDSHAKE_TIMEOUT};

type Builder = Arc<dyn Fn(&str) -> Message + Send + Sync>;
type Confirm = Arc<dyn Fn(&str, &Message) -> bool + Send + Sync>;

/// Subscribes to channels on every new connection.
///
/// Sends one message per channel (by default `{"type":"subscribe","channel":"<name>"}`, built with
/// serde_json), then, if a confirmation predicate is set, waits until every channel is confirmed, within one
/// overall timeout. A timeout retries the connection with backoff. Messages that confirm nothing are kept
/// for the user.
///
/// # Examples
///
/// ```
/// use stream_tungstenite::handshake::SubscribeHandshaker;
///
/// let subscribe = SubscribeHandshaker::new(["trades", "book"])
///     .with_confirm_channel(|channel, msg| {
///         msg.to_text().is_ok_and(|t| t.contains("subscribed") && t.contains(channel))
///     });
/// ```
#[derive(Clone)]
pub struct SubscribeHandshaker {
    channels: Vec<String>,
    build: Builder,
    confirm: Option<Confirm>,
    timeout: Option<Duration>,
}

impl SubscribeHandshaker {
    /// Subscribes to `channels`, in order.
    pub fn new(channels: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            channels: channels.into_iter().map(Into::into).collect(),
            build: Arc::new(|channel| {
                Message::text(serde_json::json!({ "type": "subscribe", "channel": channel }).to_string())
            }),
            confirm: None,
            timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }

    /// Builds each channel's subscribe message.
    pub fn with_message(mut self, build: impl Fn(&str) -> Message + Send + Sync + 'static) -> Self {
        self.build = Arc::new(build);
        self
    }

    /// Builds each channel's subscribe message as JSON.
    pub fn with_json(self, build: impl Fn(&str) -> serde_json::Value + Send + Sync + 'static) -> Self {
        self.with_message(move |channel| Message::text(build(channel).to_string()))
    }

    /// Waits for one message for which `is_ack` is true per channel (in any order).
    pub fn with_confirm(self, is_ack: impl Fn(&Message) -> bool + Send + Sync + 'static) -> Self {
        self.with_confirm_channel(move |_, message| is_ack(message))
    }

    /// Waits until each channel is confirmed by a message for which `confirms(channel, message)` is true.
    pub fn with_confirm_channel(mut self, confirms: impl Fn(&str, &Message) -> bool + Send + Sync + 'static) -> Self {
        self.confirm = Some(Arc::new(confirms));
        self
    }

    /// Sets the one timeout for sending and every confirmation (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// The channels.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }
}

impl Handshaker for SubscribeHandshaker {
    fn handshake<'a>(&'a self, io: &'a mut HandshakeIo<'_>) -> Exchange<'a> {
        Box::pin(async move {
            for channel in &self.channels {
                io.send((self.build)(channel)).await?;
            }
            let Some(confirm) = &self.confirm else {
                return Ok(());
            };
            let mut pending: Vec<&str> = self.channels.iter().map(String::as_str).collect();
            while !pending.is_empty() {
                io.recv_until(|message| {
                    let index = pending.iter().position(|channel| confirm(channel, message))?;
                    pending.remove(index);
                    Some(Ok::<(), HandshakeError>(()))
                })
                .await?;
            }
            Ok(())
        })
    }

    fn name(&self) -> &str {
        "subscribe"
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

handshake_layer!(SubscribeHandshaker);

impl fmt::Debug for SubscribeHandshaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeHandshaker")
            .field("channels", &self.channels)
            .field("confirm", &self.confirm.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
