//! Redaction: URLs, JSON and query strings with their credentials hidden, for every `Debug`, log line and
//! error message that could otherwise show one.
//!
//! Used by the WebSocket connector (URLs in errors and `Debug`), the logging hook (message bodies and error
//! texts) and the client. Nothing here knows a connection.

use std::borrow::Cow;
use std::fmt;

/// The keys whose values are redacted by default: JSON keys (`"token": ...`) and query parameters
/// (`token=...`), matched ignoring ASCII case.
pub const DEFAULT_REDACT_KEYS: [&str; 7] = [
    "token",
    "access_token",
    "password",
    "secret",
    "authorization",
    "api_key",
    "apikey",
];

/// `url` with its query and user info hidden: they may carry credentials (`?token=…`, `user:pass@`).
pub(crate) fn redact_url(url: &str) -> String {
    let without_query = match url.find(['?', '#']) {
        Some(at) => format!("{}?<redacted>", &url[..at]),
        None => url.to_owned(),
    };
    // User info is in the authority only: between `://` and the path.
    let Some(scheme_end) = without_query.find("://") else {
        return without_query;
    };
    let authority_start = scheme_end + 3;
    let authority_end = without_query[authority_start..]
        .find('/')
        .map_or(without_query.len(), |end| authority_start + end);
    match without_query[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}<redacted>@{}",
            &without_query[..authority_start],
            &without_query[authority_start + at + 1..]
        ),
        None => without_query,
    }
}

/// Truncates `text` to at most `max` bytes on a char boundary, for error messages and logs.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub(crate) struct Redacted<'a, E: ?Sized>(pub(crate) &'a E, pub(crate) &'a [Box<str>]);

impl<E: fmt::Display + ?Sized> fmt::Display for Redacted<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        f.write_str(&redact(&text, self.1, usize::MAX))
    }
}

/// A message body ready to log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Body<'a> {
    pub(crate) text: Cow<'a, str>,
    /// Some of the (redacted) text was cut.
    pub(crate) truncated: bool,
}

/// Redacts `text`, then cuts it to at most `max` bytes on a character boundary.
///
/// Allocates only when a value was redacted.
pub(crate) fn format_body<'a>(text: &'a str, max: usize, keys: &[Box<str>]) -> Body<'a> {
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
pub(crate) fn redact<'a>(text: &'a str, keys: &[Box<str>], keep: usize) -> Cow<'a, str> {
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
    use super::*;

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
        let body = format_body(r#"{"session":"s","token":"t"}"#, 100, &keys(&["session"]));
        assert_eq!(body.text, r#"{"session":"***","token":"t"}"#);
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(redact_url("wss://example.com/feed"), "wss://example.com/feed");
        assert_eq!(
            redact_url("wss://example.com/feed?token=s3cret"),
            "wss://example.com/feed?<redacted>"
        );
        assert_eq!(
            redact_url("wss://user:pw@example.com/"),
            "wss://<redacted>@example.com/"
        );
    }

    #[test]
    fn an_error_is_shown_redacted() {
        let error = std::io::Error::other("refused, apikey=K-9");
        assert_eq!(Redacted(&error, &defaults()).to_string(), "refused, apikey=***");
    }
}
