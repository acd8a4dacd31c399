//! Redaction (`src/redact.rs`): URLs, message bodies and error texts with their credentials hidden.
//!
//! Invariants:
//! - nothing panics, on any text (bytes are read as lossy UTF-8), any keys and any bound;
//! - `truncate` returns the longest prefix of at most `max` bytes that ends on a char boundary;
//! - `format_body` is the full redaction cut by `truncate`, flagged as cut exactly when it was longer than
//!   `max` (scanning stops early, but never changes the result);
//! - a secret in a query parameter whose key is one of `DEFAULT_REDACT_KEYS` (any ASCII case, as a whole word:
//!   `...&token=SECRET&...`) never appears in a body or error text redacted with the default keys, at any bound;
//! - a URL's user info (`user:pass@`) and its query never appear in `redact_url`'s output.
//!
//! A secret is kept recognisable by a marker character that the rest of the input never holds: the output
//! cannot show the secret by accident (the redaction inserts only `*`, `"`, `\` and `<redacted>`).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use stream_tungstenite::extension::DEFAULT_REDACT_KEYS;
use stream_tungstenite::fuzzing::{format_body, redact_url, truncate};

/// In every secret, and nowhere else in the input.
const MARKER: char = '§';

#[derive(Debug, Arbitrary)]
enum Input {
    /// Any bytes, any keys, any bound.
    Anything {
        bytes: Vec<u8>,
        keys: Vec<String>,
        max: u16,
    },
    /// A text with a secret query parameter somewhere in it.
    Query {
        before: String,
        separator: Separator,
        key: u8,
        /// Which letters of the key are upper case.
        case: u16,
        secret: Secret,
        end: End,
        after: String,
        max: u16,
    },
    /// A URL with credentials in its user info and its query.
    Url {
        scheme: String,
        user: Secret,
        password: Secret,
        host: String,
        query: String,
        secret: Secret,
    },
}

/// What stands right before the key: anything but a word character.
#[derive(Debug, Arbitrary, Clone, Copy)]
enum Separator {
    Start,
    Question,
    Ampersand,
    Space,
    Quote,
    Semicolon,
}

/// What ends the value.
#[derive(Debug, Arbitrary, Clone, Copy)]
enum End {
    Text,
    Ampersand,
    Space,
    Quote,
    Comma,
}

/// A secret value: URL-safe characters and the marker.
#[derive(Debug, Arbitrary)]
struct Secret {
    chars: Vec<u8>,
    marker_at: u8,
}

impl Secret {
    /// Characters a query value holds (unreserved, sub-delimiters that do not end a value, `%`), none of the
    /// redaction's own.
    const ALPHABET: &'static [u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$+:/=@";

    fn text(&self) -> String {
        let mut text: String = self
            .chars
            .iter()
            .map(|&c| char::from(Self::ALPHABET[usize::from(c) % Self::ALPHABET.len()]))
            .collect();
        let at = usize::from(self.marker_at) % (text.len() + 1);
        text.insert(at, MARKER);
        text
    }

    /// The secret without the characters a URL's user info cannot hold unescaped.
    fn userinfo(&self) -> String {
        self.text()
            .chars()
            .filter(|c| !matches!(c, '@' | '/' | '?' | '#'))
            .collect()
    }
}

fn unmarked(text: &str) -> String {
    text.chars().filter(|&c| c != MARKER).collect()
}

fn default_keys() -> Vec<Box<str>> {
    DEFAULT_REDACT_KEYS.iter().map(|&key| Box::from(key)).collect()
}

/// Checks `truncate` and `format_body` on `text` with `keys` and the bound `max`; returns the body.
fn check_body(text: &str, keys: &[Box<str>], max: usize) -> String {
    let cut = truncate(text, max);
    assert!(
        cut.len() <= max && text.starts_with(cut),
        "truncate({text:?}, {max}) = {cut:?}"
    );
    if let Some(next) = text[cut.len()..].chars().next() {
        assert!(
            cut.len() + next.len_utf8() > max,
            "truncate({text:?}, {max}) = {cut:?} is not the longest"
        );
    }
    let (full, cut_full) = format_body(text, usize::MAX, keys);
    assert!(!cut_full);
    let (body, truncated) = format_body(text, max, keys);
    assert_eq!(
        &*body,
        truncate(&full, max),
        "format_body({text:?}, {max}) is not the full redaction, cut"
    );
    assert_eq!(
        truncated,
        full.len() > max,
        "format_body({text:?}, {max}): wrong truncation flag"
    );
    body.into_owned()
}

fuzz_target!(|input: Input| {
    match input {
        Input::Anything { bytes, keys, max } => {
            let text = String::from_utf8_lossy(&bytes);
            let keys: Vec<Box<str>> = keys.into_iter().map(String::into_boxed_str).collect();
            check_body(&text, &keys, usize::from(max));
            check_body(&text, &default_keys(), usize::from(max));
            let shown = redact_url(&text);
            if !text.contains(['?', '#', '@']) {
                assert_eq!(shown, text, "nothing to hide");
            }
        }
        Input::Query {
            before,
            separator,
            key,
            case,
            secret,
            end,
            after,
            max,
        } => {
            let key = DEFAULT_REDACT_KEYS[usize::from(key) % DEFAULT_REDACT_KEYS.len()];
            let key: String = key
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if case >> (i % 16) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            let secret = secret.text();
            let mut text = match separator {
                Separator::Start => String::new(),
                _ => unmarked(&before),
            };
            text.push_str(match separator {
                Separator::Start => "",
                Separator::Question => "?",
                Separator::Ampersand => "&",
                Separator::Space => " ",
                Separator::Quote => "\"",
                Separator::Semicolon => ";",
            });
            text.push_str(&key);
            text.push('=');
            text.push_str(&secret);
            match end {
                End::Text => {}
                End::Ampersand => text.push('&'),
                End::Space => text.push(' '),
                End::Quote => text.push('"'),
                End::Comma => text.push(','),
            }
            if !matches!(end, End::Text) {
                text.push_str(&unmarked(&after));
            }
            for max in [usize::from(max), usize::MAX] {
                let body = check_body(&text, &default_keys(), max);
                assert!(!body.contains(MARKER), "secret {secret:?} shown: {text:?} -> {body:?}");
            }
        }
        Input::Url {
            scheme,
            user,
            password,
            host,
            query,
            secret,
        } => {
            let scheme: String = scheme.chars().filter(char::is_ascii_alphabetic).take(8).collect();
            let user = user.userinfo();
            let host: String = unmarked(&host).chars().filter(|c| !matches!(c, '?' | '#')).collect();
            let query = unmarked(&query);
            let password = password.userinfo();
            let secret = secret.text();
            let url = format!("{scheme}://{user}:{password}@{host}?{query}&token={secret}");
            let shown = redact_url(&url);
            assert!(!shown.contains(MARKER), "{url:?} -> {shown:?}");
        }
    }
});
