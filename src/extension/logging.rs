//! [`Logging`]: a tracing span per connection, with its lifecycle and every message, redacted and truncated.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{Level, Span};

use super::MessageView;
use crate::hook::{End, Hook, Verdict};
use crate::redact::{format_body, Redacted, DEFAULT_REDACT_KEYS};

/// The default [`Logging::with_max_body`]: 256 bytes of each text message are logged.
pub const DEFAULT_MAX_BODY: usize = 256;

/// Logs each connection through [`tracing`]: one `ws_connection` span per attempt, its outcome, every
/// message in and out, and how the connection ended.
///
/// A [hook](crate::hook).
///
/// - **Span.** `ws_connection` (INFO) with a field `conn`: the attempt's number through this hook (and its
///   clones), counted from 1. Every event below is inside it.
/// - **Lifecycle.** `connecting` (DEBUG), `connected` or `connect failed` with the error (INFO),
///   `disconnected` with `reason` (`"read error"`, `"ended"`, `"write error"` or `"hook"`), the error and the
///   connection's message counts (INFO), `closed` when closed from this side and `dropped` when dropped
///   while up (DEBUG). Each connection logs exactly one end.
/// - **Messages** at [`with_level`](Self::with_level) (default DEBUG), with `direction` (`"in"` or `"out"`),
///   `kind`, `len` and, for text, `body`: the text with credentials [redacted](Self::with_redact_keys), then
///   cut to [`with_max_body`](Self::with_max_body) bytes on a character boundary (`truncated = true` says
///   so). Binary payloads are logged by length only. Nothing is formatted unless the event is enabled.
///
/// Credentials never reach the log: message bodies and error texts are redacted, and no header is ever
/// logged.
///
/// # Order
///
/// Added before the handshakes of a [`ConnectorBuilder`](crate::layer::ConnectorBuilder) (outside them), it
/// logs the messages the user sends and receives; added after them, it also logs the handshakes' frames
/// (redacted like any other).
///
/// # Examples
///
/// ```
/// use futures::{SinkExt, StreamExt};
/// use stream_tungstenite::extension::Logging;
/// use stream_tungstenite::layer::ConnectorBuilder;
/// use stream_tungstenite::tungstenite::Message;
/// use stream_tungstenite::ReconnectingStream;
///
/// # futures::executor::block_on(async {
/// let logging = Logging::new()
///     .with_max_body(128)
///     .with_redact_keys(["token", "session_id"])
///     .with_level(tracing::Level::TRACE);
/// // An in-memory echo connection; usually a `WsConnector`.
/// let connector = ConnectorBuilder::new(|| async {
///     let (tx, rx) = futures::channel::mpsc::unbounded::<Message>();
///     Ok::<_, std::io::Error>(stream_tungstenite::join(rx.map(Ok::<_, std::io::Error>), tx))
/// })
/// .hook(logging)
/// .build();
/// let mut stream = ReconnectingStream::new(connector);
/// // Logged as {"op":"auth","token":"***"}.
/// stream.send(Message::text(r#"{"op":"auth","token":"s3cr3t"}"#)).await?;
/// assert!(stream.next().await.is_some());
/// # Ok::<_, stream_tungstenite::Error>(())
/// # }).unwrap();
/// ```
pub struct Logging {
    settings: Settings,
    /// This instance's connection (a clone made for an attempt).
    connection: Option<Connection>,
}

#[derive(Clone)]
struct Settings {
    max_body: usize,
    redact_keys: Arc<[Box<str>]>,
    level: Level,
    /// Attempts so far, shared by clones, so that `conn` numbers stay unique.
    attempts: Arc<AtomicU64>,
}

struct Connection {
    span: Span,
    messages_in: u64,
    messages_out: u64,
    up: bool,
}

impl Logging {
    /// Logs with the defaults: [`DEFAULT_MAX_BODY`], [`DEFAULT_REDACT_KEYS`], messages at DEBUG.
    pub fn new() -> Self {
        Self {
            settings: Settings {
                max_body: DEFAULT_MAX_BODY,
                redact_keys: DEFAULT_REDACT_KEYS.iter().map(|&key| Box::from(key)).collect(),
                level: Level::DEBUG,
                attempts: Arc::new(AtomicU64::new(0)),
            },
            connection: None,
        }
    }

    /// Logs at most `max` bytes of each text message (default [`DEFAULT_MAX_BODY`]); 0 logs lengths only.
    pub fn with_max_body(mut self, max: usize) -> Self {
        self.settings.max_body = max;
        self
    }

    /// Sets the keys whose values are redacted, replacing the defaults ([`DEFAULT_REDACT_KEYS`]; chain them
    /// in to keep them). Matching ignores ASCII case.
    ///
    /// In logged text, each `"key": value` pair (any whitespace around the colon, any JSON value: string,
    /// number, object, ...) has its value replaced with `"***"`, at any depth and also inside JSON that is
    /// itself encoded in a JSON string; each `key=value` (as in a query string) has its value replaced
    /// with `***`. Redaction happens before truncation, so a cut never reveals part of a value.
    pub fn with_redact_keys<I>(mut self, keys: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.settings.redact_keys = keys.into_iter().map(|key| Box::from(key.as_ref())).collect();
        self
    }

    /// Logs messages at `level` (default DEBUG). Lifecycle events keep their own levels.
    pub fn with_level(mut self, level: Level) -> Self {
        self.settings.level = level;
        self
    }

    /// The span of this instance's connection, once an attempt has started.
    pub fn span(&self) -> Option<&Span> {
        self.connection.as_ref().map(|connection| &connection.span)
    }

    /// Logs the end of the connection (once: the hooks connection tells the end once).
    fn log_end(&mut self, reason: &'static str, error: Option<&dyn fmt::Display>) {
        let Some(connection) = self.connection.as_ref() else {
            return;
        };
        let _entered = connection.span.enter();
        let (messages_in, messages_out) = (connection.messages_in, connection.messages_out);
        let keys = &self.settings.redact_keys;
        match error {
            Some(error) => tracing::info!(
                reason,
                error = %Redacted(error, keys),
                messages_in,
                messages_out,
                "disconnected"
            ),
            None => tracing::info!(reason, messages_in, messages_out, "disconnected"),
        }
    }
}

impl Default for Logging {
    fn default() -> Self {
        Self::new()
    }
}

/// A clone shares the settings and the attempt numbering; it logs a connection of its own once used as a
/// hook.
impl Clone for Logging {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            connection: None,
        }
    }
}

impl fmt::Debug for Logging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logging")
            .field("max_body", &self.settings.max_body)
            .field("redact_keys", &self.settings.redact_keys)
            .field("level", &self.settings.level)
            .finish_non_exhaustive()
    }
}

/// Emits an event at a level chosen at run time.
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::error!($($rest)+),
            Level::WARN => tracing::warn!($($rest)+),
            Level::INFO => tracing::info!($($rest)+),
            Level::DEBUG => tracing::debug!($($rest)+),
            _ => tracing::trace!($($rest)+),
        }
    };
}

fn enabled(level: Level) -> bool {
    match level {
        Level::ERROR => tracing::enabled!(Level::ERROR),
        Level::WARN => tracing::enabled!(Level::WARN),
        Level::INFO => tracing::enabled!(Level::INFO),
        Level::DEBUG => tracing::enabled!(Level::DEBUG),
        _ => tracing::enabled!(Level::TRACE),
    }
}

impl Logging {
    /// Logs one message inside the connection's span; formats nothing unless the event is enabled.
    fn log_message<T: MessageView>(&mut self, direction: &'static str, message: &T) {
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        match direction {
            "in" => connection.messages_in += 1,
            _ => connection.messages_out += 1,
        }
        let settings = &self.settings;
        let _entered = connection.span.enter();
        if !enabled(settings.level) {
            return;
        }
        let kind = message.kind();
        let len = message.payload_len();
        match message.text().filter(|_| settings.max_body > 0) {
            Some(text) => {
                let body = format_body(text, settings.max_body, &settings.redact_keys);
                let truncated = body.truncated;
                // Debug formatting quotes and escapes the body: a message cannot forge log lines.
                let body = &*body.text;
                event_at!(settings.level, direction, kind, len, body, truncated, "message");
            }
            None => event_at!(settings.level, direction, kind, len, "message"),
        }
    }
}

impl<T: MessageView> Hook<T> for Logging {
    fn on_attempt(&mut self) {
        let conn = self.settings.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let span = tracing::info_span!("ws_connection", conn);
        span.in_scope(|| tracing::debug!("connecting"));
        self.connection = Some(Connection {
            span,
            messages_in: 0,
            messages_out: 0,
            up: false,
        });
    }

    fn on_start(&mut self) {
        if let Some(connection) = self.connection.as_mut() {
            connection.up = true;
            connection.span.in_scope(|| tracing::info!("connected"));
        }
    }

    fn on_inbound(&mut self, message: &mut T) -> Verdict {
        self.log_message("in", message);
        Verdict::Pass
    }

    fn on_outbound(&mut self, message: &mut T) -> Verdict {
        self.log_message("out", message);
        Verdict::Pass
    }

    fn on_end(&mut self, end: &End<'_>) {
        let Some(connection) = self.connection.as_ref() else {
            return;
        };
        let (messages_in, messages_out) = (connection.messages_in, connection.messages_out);
        match *end {
            End::ConnectFailed(error) => {
                let _entered = connection.span.enter();
                let error = Redacted(&error, &self.settings.redact_keys);
                tracing::info!(error = %error, "connect failed");
            }
            End::Abandoned => connection.span.in_scope(|| tracing::info!("connect abandoned")),
            End::ReadFailed(error) => self.log_end("read error", Some(&error)),
            End::WriteFailed(error) => self.log_end("write error", Some(&error)),
            End::HookFailed(error) => self.log_end("hook", Some(&error)),
            End::Ended => self.log_end("ended", None),
            End::Closed => connection
                .span
                .in_scope(|| tracing::debug!(messages_in, messages_out, "closed")),
            End::Dropped if connection.up => connection
                .span
                .in_scope(|| tracing::debug!(messages_in, messages_out, "dropped")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
