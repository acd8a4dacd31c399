//! [`AuthHandshaker`]: sends credentials, waits for the server's verdict.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;

use super::{handshake_layer, Exchange, HandshakeError, HandshakeIo, Handshaker, Predicate, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::redact::truncate;

type TokenProvider = Arc<dyn Fn() -> String + Send + Sync>;
type Builder = Arc<dyn Fn(&str) -> Result<Message, String> + Send + Sync>;
type Judge = Arc<dyn Fn(&Message) -> Option<Result<(), String>> + Send + Sync>;

/// Sends a token on every new connection and waits for the server to accept it.
///
/// The token comes from a provider called once per attempt, so a refreshed token is used on the next dial.
/// It is sent as plain text by default, as JSON (`{"type":"auth","token":"…"}`, built with serde_json) with
/// [`json`](Self::json), or as any message a closure builds.
///
/// Success is decided by the reply predicate of [`with_reply`](Self::with_reply) (or [`with_accept`](Self::with_accept)
/// and [`with_reject`](Self::with_reject)): a rejection is fatal and ends the stream at once, without a retry
/// loop; messages that are neither are kept for the user. A server that closes the connection during auth with
/// a close code other than 1001/1005/1006/1011/1012/1013 counts as a rejection. Without a predicate, the
/// handshake only sends. The token is never logged, nor shown by `Debug`.
///
/// # Examples
///
/// ```
/// use stream_tungstenite::handshake::AuthHandshaker;
///
/// let auth = AuthHandshaker::new(|| std::env::var("FEED_TOKEN").unwrap_or_default())
///     .json()
///     .with_accept(|msg| msg.to_text().is_ok_and(|t| t.contains(r#""type":"auth_ok""#)))
///     .with_reject(|msg| msg.to_text().is_ok_and(|t| t.contains(r#""type":"auth_failed""#)));
/// ```
#[derive(Clone)]
pub struct AuthHandshaker {
    token: TokenProvider,
    build: Builder,
    judge: Option<Judge>,
    accept: Option<Predicate>,
    reject: Option<Predicate>,
    timeout: Option<Duration>,
}

impl AuthHandshaker {
    /// Authenticates with the token `provider` returns, asked once per attempt.
    pub fn new(provider: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self {
            token: Arc::new(provider),
            build: Arc::new(|token| Ok(Message::text(token))),
            judge: None,
            accept: None,
            reject: None,
            timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }

    /// Authenticates with a fixed token.
    pub fn token(token: impl Into<String>) -> Self {
        let token: String = token.into();
        Self::new(move || token.clone())
    }

    /// Sends the token as a text message (the default).
    pub fn text(mut self) -> Self {
        self.build = Arc::new(|token| Ok(Message::text(token)));
        self
    }

    /// Sends `{"type":"auth","token":"<token>"}`, built with serde_json (so the token is escaped properly).
    pub fn json(self) -> Self {
        self.with_json(|token| serde_json::json!({ "type": "auth", "token": token }))
    }

    /// Sends the JSON `build` makes from the token.
    pub fn with_json(mut self, build: impl Fn(&str) -> serde_json::Value + Send + Sync + 'static) -> Self {
        self.build = Arc::new(move |token| Ok(Message::text(build(token).to_string())));
        self
    }

    /// Sends the message `build` makes from the token.
    pub fn with_message(mut self, build: impl Fn(&str) -> Message + Send + Sync + 'static) -> Self {
        self.build = Arc::new(move |token| Ok(build(token)));
        self
    }

    /// Decides on replies: `Some(Ok(()))` accepts, `Some(Err(reason))` rejects (fatal), `None` is not the
    /// reply (the message is kept for the user).
    pub fn with_reply(
        mut self,
        judge: impl Fn(&Message) -> Option<Result<(), String>> + Send + Sync + 'static,
    ) -> Self {
        self.judge = Some(Arc::new(judge));
        self
    }

    /// Accepts on the first message for which `accept` is true.
    pub fn with_accept(mut self, accept: impl Fn(&Message) -> bool + Send + Sync + 'static) -> Self {
        self.accept = Some(Arc::new(accept));
        self
    }

    /// Rejects (fatally) on the first message for which `reject` is true.
    pub fn with_reject(mut self, reject: impl Fn(&Message) -> bool + Send + Sync + 'static) -> Self {
        self.reject = Some(Arc::new(reject));
        self
    }

    /// Sets the timeout for the whole exchange (default [`DEFAULT_HANDSHAKE_TIMEOUT`]); `None` waits forever.
    pub fn with_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    fn verdict(&self, message: &Message) -> Option<Result<(), String>> {
        if let Some(judge) = &self.judge {
            if let Some(verdict) = judge(message) {
                return Some(verdict);
            }
        }
        if self.reject.as_ref().is_some_and(|reject| reject(message)) {
            let text = message.to_text().unwrap_or("<binary>");
            return Some(Err(truncate(text, 200).to_owned()));
        }
        if self.accept.as_ref().is_some_and(|accept| accept(message)) {
            return Some(Ok(()));
        }
        None
    }

    fn waits_for_reply(&self) -> bool {
        self.judge.is_some() || self.accept.is_some() || self.reject.is_some()
    }
}

/// Close codes that mean "try again" rather than "no".
const TRANSIENT_CLOSE_CODES: [u16; 6] = [1001, 1005, 1006, 1011, 1012, 1013];

impl Handshaker for AuthHandshaker {
    fn handshake<'a>(&'a self, io: &'a mut HandshakeIo<'_>) -> Exchange<'a> {
        Box::pin(async move {
            let token = (self.token)();
            let message = (self.build)(&token).map_err(|reason| HandshakeError::Failed {
                step: "auth".into(),
                reason,
            })?;
            drop(token);
            io.send(message).await?;
            tracing::debug!("auth sent");
            if !self.waits_for_reply() {
                return Ok(());
            }
            let outcome = io
                .recv_until(|message| {
                    self.verdict(message)
                        .map(|verdict| verdict.map_err(|reason| HandshakeError::rejected("auth", reason)))
                })
                .await;
            match outcome {
                Err(HandshakeError::ConnectionLost {
                    close_code: Some(code), ..
                }) if !TRANSIENT_CLOSE_CODES.contains(&code) => Err(HandshakeError::rejected(
                    "auth",
                    format!("server closed the connection with code {code}"),
                )),
                other => other,
            }
        })
    }

    fn name(&self) -> &str {
        "auth"
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

handshake_layer!(AuthHandshaker);

impl fmt::Debug for AuthHandshaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHandshaker")
            .field("token", &"<redacted>")
            .field("waits_for_reply", &self.waits_for_reply())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
