//! Entry points for the fuzz targets in `fuzz/`: thin wrappers around crate-private parsers and scanners.
//!
//! Compiled only with the internal `fuzzing` feature, hidden from the docs, and not part of the API: names and
//! signatures change with the fuzz targets. The state machine needs nothing here (its target drives the public
//! [`ReconnectingStream`](crate::ReconnectingStream)).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

/// What the upgrade's response head scanner made of a response read in chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadEnd {
    /// Where the head ends, counted from the start of the first chunk: just past the first `\r\n\r\n` or
    /// `\n\n`. `None` if no chunk held the end.
    pub end: Option<usize>,
    /// Whether the response may still be a `101 Switching Protocols` once the scan stopped (at the head's end,
    /// or after the last chunk).
    pub may_switch: bool,
}

/// Feeds `chunks`, in order, to the scanner the transport runs during the upgrade, as successive reads
/// would, and stops at the first chunk that holds the end of the head (as the transport does).
pub fn scan_head(chunks: &[&[u8]]) -> HeadEnd {
    let mut scan = crate::ws::HeadScan::default();
    let mut offset = 0;
    for chunk in chunks {
        if let Some(end) = scan.end_in(chunk) {
            return HeadEnd {
                end: Some(offset + end),
                may_switch: scan.may_switch(),
            };
        }
        offset += chunk.len();
    }
    HeadEnd {
        end: None,
        may_switch: scan.may_switch(),
    }
}

/// A `Retry-After` header value as a wait from `now`, as a rejected upgrade reads it (before the connector's
/// cap): delay-seconds or an HTTP-date; `None` for anything else.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    crate::ws::parse_retry_after(value, now)
}

/// `url` as errors and `Debug` show it: its query, fragment and user info hidden.
pub fn redact_url(url: &str) -> String {
    crate::redact::redact_url(url)
}

/// `text` cut to at most `max` bytes on a char boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    crate::redact::truncate(text, max)
}

/// A message body as the logging hook shows it: redacted, then cut to at most `max` bytes; the flag says
/// whether anything was cut.
pub fn format_body<'a>(text: &'a str, max: usize, keys: &[Box<str>]) -> (Cow<'a, str>, bool) {
    let body = crate::redact::format_body(text, max, keys);
    (body.text, body.truncated)
}
