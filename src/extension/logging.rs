//! [`LoggingLayer`]: a tracing span per connection, with its lifecycle and every message, redacted and truncated.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};
use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tracing::{Level, Span};

use crate::handshake::truncate;
use crate::Connect;

/// The default [`LoggingLayer::max_body`]: 256 bytes of each text message are logged.
pub const DEFAULT_MAX_BODY: usize = 256;

/// The default [`LoggingLayer::redact_keys`]: the values of these JSON keys (and query parameters) are
/// replaced with `***` in logged text.
pub const DEFAULT_REDACT_KEYS: [&str; 7] = [
    "token",
    "access_token",
    "password",
    "secret",
    "authorization",
    "api_key",
    "apikey",
];

/// What [`LoggingLayer`] logs of a message: its kind, its length and, for text, the text itself.
///
/// Implemented for tungstenite's [`Message`] (text is logged; binary, ping and pong payloads only by length;
/// a Close frame's reason as text), for `String` and [`Utf8Bytes`] (text), and for `Vec<u8>` and [`Bytes`]
/// (length only). Implement it for your own message type to log it.
pub trait LogMessage {
    /// A short name for the kind of message (`"text"`, `"binary"`, `"ping"`, ...).
    fn kind(&self) -> &'static str;

    /// The payload length in bytes.
    fn payload_len(&self) -> usize;

    /// The text to log (after redaction and truncation), or `None` to log the length only.
    fn text(&self) -> Option<&str>;
}

impl LogMessage for Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Text(_) => "text",
            Message::Binary(_) => "binary",
            Message::Ping(_) => "ping",
            Message::Pong(_) => "pong",
            Message::Close(_) => "close",
            Message::Frame(_) => "frame",
        }
    }

    fn payload_len(&self) -> usize {
        self.len()
    }

    fn text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text.as_str()),
            Message::Close(Some(frame)) => Some(frame.reason.as_str()),
            _ => None,
        }
    }
}

impl LogMessage for String {
    fn kind(&self) -> &'static str {
        "text"
    }

    fn payload_len(&self) -> usize {
        self.len()
    }

    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl LogMessage for Utf8Bytes {
    fn kind(&self) -> &'static str {
        "text"
    }

    fn payload_len(&self) -> usize {
        self.len()
    }

    fn text(&self) -> Option<&str> {
        Some(self.as_str())
    }
}

impl LogMessage for Vec<u8> {
    fn kind(&self) -> &'static str {
        "binary"
    }

    fn payload_len(&self) -> usize {
        self.len()
    }

    fn text(&self) -> Option<&str> {
        None
    }
}

impl LogMessage for Bytes {
    fn kind(&self) -> &'static str {
        "binary"
    }

    fn payload_len(&self) -> usize {
        self.len()
    }

    fn text(&self) -> Option<&str> {
        None
    }
}

/// Logs each connection through [`tracing`]: one `ws_connection` span per attempt, its outcome, every
/// message in and out, and how the connection ended.
///
/// - **Span.** `ws_connection` (INFO) with a field `conn`: the attempt's number through this layer (and its
///   clones), counted from 1. Everything below, including the events of inner layers, is inside it.
/// - **Lifecycle.** `connecting` (DEBUG), `connected` or `connect failed` with the error (INFO),
///   `disconnected` with `reason` (`"read error"`, `"ended"` or `"write error"`), the error and the
///   connection's message counts (INFO), `closed` when closed from this side and `dropped` when dropped
///   while up (DEBUG). Each connection logs exactly one end.
/// - **Messages** at [`level`](Self::level) (default DEBUG), with `direction` (`"in"` or `"out"`), `kind`,
///   `len` and, for text, `body`: the text with credentials [redacted](Self::redact_keys), then cut to
///   [`max_body`](Self::max_body) bytes on a character boundary (`truncated = true` says so). Binary
///   payloads are logged by length only. Nothing is formatted unless the event is enabled.
///
/// Credentials never reach the log: message bodies and error texts are redacted, and no header is ever
/// logged. Errors are logged through `Display`, so the connector's and the connection's error types must
/// implement it (every `std::error::Error` does).
///
/// # Order
///
/// Added first to a [`ConnectorBuilder`](crate::layer::ConnectorBuilder) (outermost), it logs the messages
/// the user sends and receives, after handshakes; added after a handshake layer, it also logs the
/// handshake's frames (redacted like any other).
///
/// # Examples
///
/// ```
/// use futures::{SinkExt, StreamExt};
/// use stream_tungstenite::extension::LoggingLayer;
/// use stream_tungstenite::layer::ConnectorBuilder;
/// use stream_tungstenite::tungstenite::Message;
/// use stream_tungstenite::ReconnectingStream;
///
/// # futures::executor::block_on(async {
/// let logging = LoggingLayer::new()
///     .max_body(128)
///     .redact_keys(["token", "session_id"])
///     .level(tracing::Level::TRACE);
/// // An in-memory echo connection; usually `stream_tungstenite::connect(url)`.
/// let connector = ConnectorBuilder::new(|| async {
///     let (tx, rx) = futures::channel::mpsc::unbounded::<Message>();
///     Ok::<_, std::io::Error>(stream_tungstenite::join(rx.map(Ok::<_, std::io::Error>), tx))
/// })
/// .layer(logging);
/// let mut stream = ReconnectingStream::new(connector);
/// // Logged as {"op":"auth","token":"***"}.
/// stream.send(Message::text(r#"{"op":"auth","token":"s3cr3t"}"#)).await?;
/// assert!(stream.next().await.is_some());
/// # Ok::<_, stream_tungstenite::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct LoggingLayer {
    max_body: usize,
    redact_keys: Arc<[Box<str>]>,
    level: Level,
    // Shared by clones, so that `conn` numbers stay unique per layer.
    connections: Arc<AtomicU64>,
}

impl Default for LoggingLayer {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            redact_keys: DEFAULT_REDACT_KEYS.iter().map(|&key| Box::from(key)).collect(),
            level: Level::DEBUG,
            connections: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl LoggingLayer {
    /// Logs with the defaults: [`DEFAULT_MAX_BODY`], [`DEFAULT_REDACT_KEYS`], messages at DEBUG.
    pub fn new() -> Self {
        Self::default()
    }

    /// Logs at most `max` bytes of each text message (default [`DEFAULT_MAX_BODY`]); 0 logs lengths only.
    pub fn max_body(mut self, max: usize) -> Self {
        self.max_body = max;
        self
    }

    /// Sets the keys whose values are redacted, replacing the defaults ([`DEFAULT_REDACT_KEYS`]; chain them
    /// in to keep them). Matching ignores ASCII case.
    ///
    /// In logged text, each `"key": value` pair (any whitespace around the colon, any JSON value: string,
    /// number, object, ...) has its value replaced with `"***"`, at any depth and also inside JSON that is
    /// itself encoded in a JSON string; each `key=value` (as in a query string) has its value replaced
    /// with `***`. Redaction happens before truncation, so a cut never reveals part of a value.
    pub fn redact_keys<I>(mut self, keys: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.redact_keys = keys.into_iter().map(|key| Box::from(key.as_ref())).collect();
        self
    }

    /// Logs messages at `level` (default DEBUG). Lifecycle events keep their own levels.
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }
}

impl<C> Layer<C> for LoggingLayer {
    type Service = Logging<C>;

    fn layer(&self, inner: C) -> Logging<C> {
        Logging {
            inner,
            layer: self.clone(),
        }
    }
}

/// A connector whose attempts and connections are logged; made by [`LoggingLayer`].
#[derive(Debug, Clone)]
pub struct Logging<C> {
    inner: C,
    layer: LoggingLayer,
}

impl<C> Connect for Logging<C>
where
    C: Connect,
    C::Error: fmt::Display,
{
    type Connection = LoggingConnection<C::Connection>;
    type Error = C::Error;
    type Future = LoggingFuture<C::Future>;

    fn connect(&mut self) -> Self::Future {
        let conn = self.layer.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let span = tracing::info_span!("ws_connection", conn);
        let inner = span.in_scope(|| {
            tracing::debug!("connecting");
            self.inner.connect()
        });
        LoggingFuture {
            inner,
            span,
            layer: Some(self.layer.clone()),
        }
    }
}

pin_project! {
    /// The attempt future of a [`Logging`] connector: polls the inner attempt inside the connection's span.
    #[derive(Debug)]
    pub struct LoggingFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        layer: Option<LoggingLayer>,
    }
}

impl<F, S, E> Future for LoggingFuture<F>
where
    F: Future<Output = Result<S, E>>,
    E: fmt::Display,
{
    type Output = Result<LoggingConnection<S>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let outcome = ready!(this.inner.poll(cx));
        let Some(layer) = this.layer.take() else {
            // Polled after completion.
            return Poll::Pending;
        };
        match outcome {
            Ok(inner) => {
                tracing::info!("connected");
                Poll::Ready(Ok(LoggingConnection {
                    inner,
                    span: this.span.clone(),
                    layer,
                    messages_in: 0,
                    messages_out: 0,
                    ended: false,
                }))
            }
            Err(error) => {
                tracing::info!(error = %Redacted(&error, &layer.redact_keys), "connect failed");
                Poll::Ready(Err(error))
            }
        }
    }
}

pin_project! {
    /// A connection whose messages and end are logged inside its `ws_connection` span; see
    /// [`LoggingLayer`].
    pub struct LoggingConnection<S> {
        #[pin]
        inner: S,
        span: Span,
        layer: LoggingLayer,
        messages_in: u64,
        messages_out: u64,
        // The end is logged.
        ended: bool,
    }

    impl<S> PinnedDrop for LoggingConnection<S> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.ended {
                let _entered = this.span.enter();
                tracing::debug!(messages_in = *this.messages_in, messages_out = *this.messages_out, "dropped");
            }
        }
    }
}

impl<S> LoggingConnection<S> {
    /// The connection's span.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> fmt::Debug for LoggingConnection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoggingConnection")
            .field("span", &self.span)
            .field("messages_in", &self.messages_in)
            .field("messages_out", &self.messages_out)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// Logs the end of a connection, once.
fn log_end(
    layer: &LoggingLayer,
    ended: &mut bool,
    counts: (u64, u64),
    reason: &'static str,
    error: Option<&dyn fmt::Display>,
) {
    if std::mem::replace(ended, true) {
        return;
    }
    let (messages_in, messages_out) = counts;
    match error {
        Some(error) => tracing::info!(
            reason,
            error = %Redacted(error, &layer.redact_keys),
            messages_in,
            messages_out,
            "disconnected"
        ),
        None => tracing::info!(reason, messages_in, messages_out, "disconnected"),
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

/// Logs one message; formats nothing unless the event is enabled.
fn log_message<T: LogMessage>(layer: &LoggingLayer, direction: &'static str, message: &T) {
    if !enabled(layer.level) {
        return;
    }
    let kind = message.kind();
    let len = message.payload_len();
    match message.text().filter(|_| layer.max_body > 0) {
        Some(text) => {
            let body = format_body(text, layer.max_body, &layer.redact_keys);
            let truncated = body.truncated;
            // Debug formatting quotes and escapes the body: a message cannot forge log lines.
            let body = &*body.text;
            event_at!(layer.level, direction, kind, len, body, truncated, "message");
        }
        None => event_at!(layer.level, direction, kind, len, "message"),
    }
}

impl<S, T, E> Stream for LoggingConnection<S>
where
    S: Stream<Item = Result<T, E>>,
    T: LogMessage,
    E: fmt::Display,
{
    type Item = Result<T, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let _entered = this.span.enter();
        let item = ready!(this.inner.poll_next(cx));
        let counts = (*this.messages_in, *this.messages_out);
        match &item {
            Some(Ok(message)) => {
                *this.messages_in += 1;
                log_message(this.layer, "in", message);
            }
            Some(Err(error)) => log_end(this.layer, this.ended, counts, "read error", Some(error)),
            None => log_end(this.layer, this.ended, counts, "ended", None),
        }
        Poll::Ready(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<S, T> Sink<T> for LoggingConnection<S>
where
    S: Sink<T>,
    S::Error: fmt::Display,
    T: LogMessage,
{
    type Error = S::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll_ready(cx));
        if let Err(error) = &result {
            let counts = (*this.messages_in, *this.messages_out);
            log_end(this.layer, this.ended, counts, "write error", Some(error));
        }
        Poll::Ready(result)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), S::Error> {
        let this = self.project();
        let _entered = this.span.enter();
        log_message(this.layer, "out", &item);
        let result = this.inner.start_send(item);
        match &result {
            Ok(()) => *this.messages_out += 1,
            Err(error) => {
                let counts = (*this.messages_in, *this.messages_out);
                log_end(this.layer, this.ended, counts, "write error", Some(error));
            }
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll_flush(cx));
        if let Err(error) = &result {
            let counts = (*this.messages_in, *this.messages_out);
            log_end(this.layer, this.ended, counts, "write error", Some(error));
        }
        Poll::Ready(result)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll_close(cx));
        let counts = (*this.messages_in, *this.messages_out);
        match &result {
            Ok(()) => {
                if !std::mem::replace(this.ended, true) {
                    tracing::debug!(messages_in = counts.0, messages_out = counts.1, "closed");
                }
            }
            Err(error) => log_end(this.layer, this.ended, counts, "write error", Some(error)),
        }
        Poll::Ready(result)
    }
}

/// Displays an error with credentials redacted (formatting it to a string first: lifecycle events only).
struct Redacted<'a, E: ?Sized>(&'a E, &'a [Box<str>]);

impl<E: fmt::Display + ?Sized> fmt::Display for Redacted<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        f.write_str(&redact(&text, self.1, usize::MAX))
    }
}

/// A message body ready to log.
#[derive(Debug, PartialEq, Eq)]
struct Body<'a> {
    text: Cow<'a, str>,
    /// Some of the (redacted) text was cut.
    truncated: bool,
}

/// Redacts `text`, then cuts it to at most `max` bytes on a character boundary.
///
/// Allocates only when a value was redacted.
fn format_body<'a>(text: &'a str, max: usize, keys: &[Box<str>]) -> Body<'a> {
    let text = redact(text, keys, max);
    if text.len() <= max {
        return Body { text, truncated: false };
    }
    let text = match text {
        Cow::Borrowed(text) => Cow::Borrowed(truncate(text, max)),
        Cow::Owned(mut text) => {
            let end = truncate(&text, max).len();
            text.truncate(end);
            Cow::Owned(text)
        }
    };
    Body { text, truncated: true }
}

/// Replaces the values of `keys` in `text`: `"key": value` (JSON, at any nesting of JSON-in-a-string)
/// becomes `"key": "***"`, `key=value` becomes `key=***`. Keys match ignoring ASCII case.
///
/// Scanning stops once the output is longer than `keep` bytes, since the caller cuts the rest: a redacted
/// output then ends there; an unchanged one is returned whole. A pair starting before that point is still
/// redacted whole.
fn redact<'a>(text: &'a str, keys: &[Box<str>], keep: usize) -> Cow<'a, str> {
    if keys.is_empty() {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    // `text[..copied]` has been handled (copied to `out`, or redacted).
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let produced = out.as_ref().map_or(0, String::len) + (i - copied);
        if produced > keep {
            // The output is already longer than what is kept: leave the rest out.
            while !text.is_char_boundary(i) {
                i += 1;
            }
            return match out {
                None => Cow::Borrowed(text),
                Some(mut out) => {
                    out.push_str(&text[copied..i]);
                    Cow::Owned(out)
                }
            };
        }
        let found = match bytes[i] {
            b'"' => json_value(bytes, i, keys),
            b'=' => query_value(bytes, i, keys).map(|(start, end)| (start, end, None)),
            _ => None,
        };
        let Some((start, end, level)) = found else {
            i += 1;
            continue;
        };
        // Every position used to slice is at an ASCII byte or the end: always a char boundary.
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..start]);
        match level {
            Some(level) => {
                (0..level).for_each(|_| out.push('\\'));
                out.push_str("\"***");
                (0..level).for_each(|_| out.push('\\'));
                out.push('"');
            }
            None => out.push_str("***"),
        }
        copied = end;
        i = end;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
    }
}

/// The number of backslashes right before `i`.
fn backslashes_before(bytes: &[u8], i: usize) -> usize {
    bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count()
}

/// Whether the quote at `i` delimits a string at nesting `level` (0: plain JSON, 1: JSON inside a JSON
/// string, 3: one level deeper, ...). At level `q` a delimiting quote follows `q` backslashes, give or take
/// escaped backslashes (pairs at the level below): the count is `q` modulo `2q + 2`.
fn is_quote_at(bytes: &[u8], i: usize, level: usize) -> bool {
    bytes[i] == b'"' && backslashes_before(bytes, i) % (2 * level + 2) == level
}

/// At a quote: if it opens one of `keys` followed by a colon, the span of the value and the nesting level.
fn json_value(bytes: &[u8], quote: usize, keys: &[Box<str>]) -> Option<(usize, usize, Option<usize>)> {
    let level = backslashes_before(bytes, quote);
    if !(level + 1).is_power_of_two() {
        return None;
    }
    let name_start = quote + 1;
    for key in keys {
        let key = key.as_bytes();
        let name_end = name_start + key.len();
        if key.is_empty()
            || !bytes
                .get(name_start..name_end)
                .is_some_and(|name| name.eq_ignore_ascii_case(key))
        {
            continue;
        }
        let close = name_end + level;
        if !bytes
            .get(name_end..close)
            .is_some_and(|run| run.iter().all(|&b| b == b'\\'))
            || bytes.get(close) != Some(&b'"')
        {
            continue;
        }
        let colon = skip_whitespace(bytes, close + 1);
        if bytes.get(colon) != Some(&b':') {
            continue;
        }
        let start = skip_whitespace(bytes, colon + 1);
        let end = value_end(bytes, start, level);
        if end > start {
            return Some((start, end, Some(level)));
        }
    }
    None
}

fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The end of the JSON value starting at `start`, at nesting `level`; unterminated values run to the end.
fn value_end(bytes: &[u8], start: usize, level: usize) -> usize {
    let opening = start + level;
    let string_opens = bytes
        .get(start..opening)
        .is_some_and(|run| run.iter().all(|&b| b == b'\\'))
        && bytes.get(opening) == Some(&b'"');
    if string_opens {
        return string_end(bytes, opening + 1, level);
    }
    match bytes.get(start) {
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = start;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' if is_quote_at(bytes, i, level) => {
                        i = string_end(bytes, i + 1, level);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            bytes.len()
        }
        // A number, `true`, `false`, `null` (or anything else up to a delimiter).
        _ => {
            let mut i = start;
            while i < bytes.len()
                && !matches!(bytes[i], b',' | b'}' | b']' | b'"' | b'\\')
                && !bytes[i].is_ascii_whitespace()
            {
                i += 1;
            }
            i
        }
    }
}

/// The position after the quote that closes a string at `level`, searching from `from`.
fn string_end(bytes: &[u8], from: usize, level: usize) -> usize {
    (from..bytes.len())
        .find(|&i| is_quote_at(bytes, i, level))
        .map_or(bytes.len(), |i| i + 1)
}

/// At an `=`: if one of `keys` (as a whole word) comes right before it, the span of the value.
fn query_value(bytes: &[u8], equals: usize, keys: &[Box<str>]) -> Option<(usize, usize)> {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let matched = keys.iter().any(|key| {
        let key = key.as_bytes();
        let Some(name_start) = equals.checked_sub(key.len()) else {
            return false;
        };
        !key.is_empty()
            && bytes[name_start..equals].eq_ignore_ascii_case(key)
            && (name_start == 0 || !is_word(bytes[name_start - 1]))
    });
    if !matched {
        return None;
    }
    let start = equals + 1;
    let end = (start..bytes.len())
        .find(|&i| {
            matches!(bytes[i], b'&' | b'"' | b'\'' | b',' | b';' | b'<' | b'>' | b')' | b'\\')
                || bytes[i].is_ascii_whitespace()
        })
        .unwrap_or(bytes.len());
    (end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use futures::channel::mpsc;
    use futures::executor::block_on;
    use futures::{SinkExt, StreamExt};

    use super::*;
    use crate::layer::ConnectorBuilder;

    fn keys(keys: &[&str]) -> Vec<Box<str>> {
        keys.iter().map(|&key| Box::from(key)).collect()
    }

    fn defaults() -> Vec<Box<str>> {
        keys(&DEFAULT_REDACT_KEYS)
    }

    fn redacted(text: &str) -> String {
        format_body(text, usize::MAX, &defaults()).text.into_owned()
    }

    #[test]
    fn truncates_on_char_boundaries_at_every_length() {
        // 1-, 2-, 3- and 4-byte characters.
        let text = "héllo ✓ 日本語 😀!";
        for max in 0..=text.len() + 1 {
            let body = format_body(text, max, &[]);
            assert!(body.text.len() <= max, "{max}: {body:?}");
            assert!(text.starts_with(&*body.text), "{max}: {body:?}");
            assert_eq!(body.truncated, max < text.len(), "{max}");
            // The longest prefix that fits: the next char would overflow.
            let next = text[body.text.len()..].chars().next();
            assert!(
                next.map_or(true, |c| body.text.len() + c.len_utf8() > max),
                "{max}: {body:?}"
            );
        }
        let emoji = "😀😀";
        for max in 0..4 {
            assert_eq!(format_body(emoji, max, &[]).text, "");
        }
        assert_eq!(format_body(emoji, 7, &[]).text, "😀");
        assert_eq!(format_body(emoji, 8, &[]).text, "😀😀");
    }

    #[test]
    fn truncates_redacted_text_on_char_boundaries() {
        let text = r#"{"token":"abc","note":"日本語😀日本語"}"#;
        let full = redacted(text);
        assert_eq!(full, r#"{"token":"***","note":"日本語😀日本語"}"#);
        for max in 0..=full.len() {
            let body = format_body(text, max, &defaults());
            assert!(full.starts_with(&*body.text), "{max}: {body:?}");
            assert!(!body.text.contains("abc"));
        }
    }

    #[test]
    fn redacts_one_key() {
        assert_eq!(
            redacted(r#"{"op":"auth","token":"s3cr3t","id":7}"#),
            r#"{"op":"auth","token":"***","id":7}"#
        );
    }

    #[test]
    fn redacts_several_keys_with_any_whitespace_and_case() {
        let text = "{\"Password\" :\n\t\"hunter2\", \"user\": \"bob\", \"API_KEY\":\"k-123\",\"SeCrEt\"  :  \"x\"}";
        assert_eq!(
            redacted(text),
            "{\"Password\" :\n\t\"***\", \"user\": \"bob\", \"API_KEY\":\"***\",\"SeCrEt\"  :  \"***\"}"
        );
    }

    #[test]
    fn redacts_values_with_escaped_quotes_and_backslashes() {
        assert_eq!(
            redacted(r#"{"token":"ab\"cd\\","next":"keep"}"#),
            r#"{"token":"***","next":"keep"}"#
        );
        assert_eq!(redacted(r#"{"secret":"a\\\"b"}"#), r#"{"secret":"***"}"#);
    }

    #[test]
    fn redacts_keys_in_nested_objects_and_arrays() {
        assert_eq!(
            redacted(r#"{"data":{"auth":{"access_token":"t1"},"list":[{"token":"t2"}]}}"#),
            r#"{"data":{"auth":{"access_token":"***"},"list":[{"token":"***"}]}}"#
        );
    }

    #[test]
    fn redacts_non_string_values_whole() {
        assert_eq!(redacted(r#"{"token": 12345, "a": 1}"#), r#"{"token": "***", "a": 1}"#);
        assert_eq!(redacted(r#"{"secret":null}"#), r#"{"secret":"***"}"#);
        assert_eq!(
            redacted(r#"{"secret":{"k":"v","n":["}",1]},"a":1}"#),
            r#"{"secret":"***","a":1}"#
        );
        assert_eq!(redacted(r#"{"token":["a","b"]}"#), r#"{"token":"***"}"#);
    }

    #[test]
    fn redacts_json_encoded_inside_a_json_string() {
        assert_eq!(
            redacted(r#"{"payload":"{\"token\":\"abc\\\"d\",\"x\":1}"}"#),
            r#"{"payload":"{\"token\":\"***\",\"x\":1}"}"#
        );
    }

    #[test]
    fn redacts_query_parameters() {
        assert_eq!(
            redacted("GET wss://h/feed?apikey=K1&x=1&Token=T2 failed"),
            "GET wss://h/feed?apikey=***&x=1&Token=*** failed"
        );
        assert_eq!(
            redacted(r#"{"url":"wss://h/?access_token=abc"}"#),
            r#"{"url":"wss://h/?access_token=***"}"#
        );
        // Only whole keys.
        assert_eq!(redacted("mytoken=1 token_type=bearer"), "mytoken=1 token_type=bearer");
    }

    #[test]
    fn leaves_other_text_alone_without_allocating() {
        for text in [
            "",
            "hello world",
            "the token is not here",
            r#"{"tokens":"x","a_token":"y"}"#,
            r#"["token", "password"]"#,
            r#"{"note":"token"}"#,
            "héllo ✓ 日本語",
            "unterminated \"token",
            "\"token\"",
            "=token=",
        ] {
            let body = format_body(text, usize::MAX, &defaults());
            assert!(matches!(body.text, Cow::Borrowed(t) if t == text), "{text:?}: {body:?}");
        }
        // No keys: nothing is redacted.
        assert_eq!(format_body(r#"{"token":"x"}"#, 100, &[]).text, r#"{"token":"x"}"#);
    }

    #[test]
    fn unterminated_values_are_redacted_to_the_end() {
        assert_eq!(redacted(r#"{"token":"abc"#), r#"{"token":"***""#);
        assert_eq!(redacted(r#"{"token":{"a":"b""#), r#"{"token":"***""#);
        assert_eq!(redacted(r#"{"token":"#), r#"{"token":"#);
    }

    #[test]
    fn redaction_comes_before_truncation() {
        let text = r#"{"token":"0123456789abcdef","rest":"..."}"#;
        for max in 0..text.len() {
            let body = format_body(text, max, &defaults());
            assert!(!body.text.contains("0123"), "{max}: {body:?}");
            assert!(r#"{"token":"***","rest":"..."}"#.starts_with(&*body.text));
        }
    }

    #[test]
    fn custom_keys_replace_the_defaults() {
        let layer = LoggingLayer::new().redact_keys(["session"]);
        let body = format_body(r#"{"session":"s","token":"t"}"#, 100, &layer.redact_keys);
        assert_eq!(body.text, r#"{"session":"***","token":"t"}"#);
        let debug = format!("{layer:?}");
        assert!(debug.contains("session") && debug.contains("max_body"), "{debug}");
    }

    #[test]
    fn message_kinds() {
        let frame = async_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        };
        let cases: [(Message, &str, usize, Option<&str>); 5] = [
            (Message::text("hi"), "text", 2, Some("hi")),
            (Message::binary(vec![1, 2, 3]), "binary", 3, None),
            (Message::Ping(Bytes::from_static(b"p")), "ping", 1, None),
            (Message::Pong(Bytes::new()), "pong", 0, None),
            (Message::Close(Some(frame)), "close", 3, Some("bye")),
        ];
        for (message, kind, len, text) in cases {
            assert_eq!(
                (message.kind(), message.payload_len(), message.text()),
                (kind, len, text)
            );
        }
        assert_eq!(String::from("ab").text(), Some("ab"));
        assert_eq!(vec![1u8].text(), None);
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn capture<R>(f: impl FnOnce() -> R) -> (R, String) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(Level::TRACE)
            .finish();
        let result = tracing::subscriber::with_default(subscriber, f);
        (result, captured.text())
    }

    #[test]
    fn logs_through_tracing_without_credentials() {
        type Item = Result<Message, io::Error>;
        let (feed, read) = mpsc::unbounded::<Item>();
        let (write, mut written) = mpsc::unbounded::<Message>();
        let mut conn = Some(crate::join(read, write));
        let mut connector = ConnectorBuilder::new(move || {
            futures::future::ready(conn.take().ok_or_else(|| io::Error::other("refused, apikey=K-9")))
        })
        .layer(LoggingLayer::new().max_body(80));

        let ((), logs) = capture(|| {
            block_on(async {
                let mut conn = connector.connect().await.unwrap();
                let inbound = Message::text(r#"{"type":"welcome","token":"tok-INBOUND-1","motd":"hello there"}"#);
                feed.unbounded_send(Ok(inbound.clone())).unwrap();
                assert_eq!(conn.next().await.unwrap().unwrap(), inbound);
                conn.send(Message::text(
                    r#"{"op":"login","user":"alice","password":"pw-OUTBOUND-2"}"#,
                ))
                .await
                .unwrap();
                assert!(written.next().await.is_some());
                conn.send(Message::binary(vec![0xde, 0xad, 0xbe, 0xef])).await.unwrap();
                // Multi-byte text cut at 80 bytes, mid-character.
                let long = format!("{}{}", "x".repeat(78), "日本語");
                feed.unbounded_send(Ok(Message::text(long))).unwrap();
                conn.next().await.unwrap().unwrap();
                drop(feed);
                assert!(conn.next().await.is_none());
                drop(conn);
                // A failed attempt: its error is redacted too.
                assert!(connector.connect().await.is_err());
            })
        });

        for secret in ["tok-INBOUND-1", "pw-OUTBOUND-2", "K-9"] {
            assert!(!logs.contains(secret), "{secret} leaked:\n{logs}");
        }
        for expected in [
            "ws_connection{conn=1}",
            "ws_connection{conn=2}",
            "connecting",
            "connected",
            r#"direction="in""#,
            r#"direction="out""#,
            r#"kind="text""#,
            "message direction=\"out\" kind=\"binary\" len=4\n",
            r#"\"type\":\"welcome\""#,
            r#"\"motd\":\"hello there\""#,
            r#"\"token\":\"***\""#,
            r#"\"user\":\"alice\""#,
            r#"\"password\":\"***\""#,
            "truncated=true",
            r#"disconnected reason="ended" messages_in=2 messages_out=2"#,
            "connect failed",
            "apikey=***",
        ] {
            assert!(logs.contains(expected), "missing {expected:?} in:\n{logs}");
        }
        // The binary payload is logged by length only; the long text is cut before the multi-byte tail.
        assert!(!logs.contains("222, 173"), "{logs}");
        assert!(
            logs.contains(&format!("body=\"{}\" truncated=true", "x".repeat(78))),
            "{logs}"
        );
        // Exactly one end per connection: no `dropped` after `ended`.
        assert!(!logs.contains("dropped"), "{logs}");
    }

    #[test]
    fn logs_nothing_of_messages_when_the_level_is_off() {
        let (feed, read) = mpsc::unbounded::<Result<Message, io::Error>>();
        let (write, _written) = mpsc::unbounded::<Message>();
        let mut conn = Some(crate::join(read, write));
        let mut connector = LoggingLayer::new()
            .level(Level::TRACE)
            .layer(move || futures::future::ready(conn.take().ok_or_else(|| io::Error::other("once"))));
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(Level::DEBUG)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            block_on(async {
                let mut conn = connector.connect().await.unwrap();
                feed.unbounded_send(Ok(Message::text("quiet"))).unwrap();
                conn.next().await.unwrap().unwrap();
                drop(conn);
            })
        });
        let logs = captured.text();
        assert!(logs.contains("connected") && logs.contains("dropped"), "{logs}");
        assert!(!logs.contains("quiet"), "{logs}");
    }
}
