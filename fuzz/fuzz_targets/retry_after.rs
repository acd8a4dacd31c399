//! The `Retry-After` parser (`ws::error::parse_retry_after`), as a rejected upgrade reads the header.
//!
//! Invariants:
//! - it never panics, whatever the value and the clock;
//! - it answers only for delay-seconds or an HTTP-date (after trimming): any other value is `None`;
//! - delay-seconds, with any leading zeros and padding, are exactly that many seconds, saturating at `u64::MAX`;
//! - an HTTP-date made by `httpdate::fmt_http_date` (and the same instant in the RFC 850 and asctime forms) is
//!   read back as the wait from `now` to that instant, zero if it is past.

#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use stream_tungstenite::fuzzing::parse_retry_after;

/// The last second `httpdate` can format: 9999-12-31T23:59:59Z.
const LAST_DATE: u64 = 253_402_300_799;
/// The first second of 2070, where the RFC 850 form's two-digit years wrap around.
const RFC850_END: u64 = 3_155_760_000;

#[derive(Debug, Arbitrary)]
enum Input {
    /// Any text.
    Raw { value: String, now: i64 },
    /// Digits, with padding.
    Seconds { digits: Vec<u8>, pad: Pad, now: i64 },
    /// An instant written as an HTTP-date, in one of its three forms.
    Date { at: u64, now: i64, form: Form, pad: Pad },
}

#[derive(Debug, Arbitrary)]
struct Pad {
    before: Vec<Blank>,
    after: Vec<Blank>,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Blank {
    Space,
    Tab,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Form {
    Imf,
    Rfc850,
    Asctime,
}

impl Pad {
    fn around(&self, value: &str) -> String {
        let blank = |b: &Blank| match b {
            Blank::Space => ' ',
            Blank::Tab => '\t',
        };
        let mut out: String = self.before.iter().map(blank).collect();
        out.push_str(value);
        out.extend(self.after.iter().map(blank));
        out
    }
}

/// A clock reading anywhere within a few thousand years of the epoch, before or after it.
fn clock(now: i64) -> SystemTime {
    let offset = Duration::from_secs(now.unsigned_abs() % (LAST_DATE * 2));
    if now < 0 {
        UNIX_EPOCH.checked_sub(offset).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH + offset
    }
}

/// The wait from `now` until `at`: zero if `at` is past.
fn wait(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or(Duration::ZERO)
}

/// The value of ASCII digits, saturating at `u64::MAX`.
fn seconds(digits: &str) -> u64 {
    digits
        .bytes()
        .fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0')))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` rewritten in the RFC 850 form, `Sunday, 06-Nov-94 08:49:37 GMT`.
fn rfc850(imf: &str) -> String {
    let day = match &imf[..3] {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    format!(
        "{day}, {}-{}-{} {} GMT",
        &imf[5..7],
        &imf[8..11],
        &imf[14..16],
        &imf[17..25]
    )
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` rewritten in the asctime form, `Sun Nov  6 08:49:37 1994`.
fn asctime(imf: &str) -> String {
    let day = imf[5..7].trim_start_matches('0');
    format!(
        "{} {} {day:>2} {} {}",
        &imf[..3],
        &imf[8..11],
        &imf[17..25],
        &imf[12..16]
    )
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { value, now } => {
            let now = clock(now);
            let parsed = parse_retry_after(&value, now);
            let trimmed = value.trim();
            if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
                assert_eq!(parsed, Some(Duration::from_secs(seconds(trimmed))), "{value:?}");
            } else {
                let date = httpdate::parse_http_date(trimmed).ok();
                assert_eq!(
                    parsed,
                    date.map(|at| wait(at, now)),
                    "{value:?}: neither delay-seconds nor the HTTP-date httpdate reads"
                );
            }
        }
        Input::Seconds { digits, pad, now } => {
            let digits: String = digits.iter().map(|d| char::from(b'0' + d % 10)).collect();
            if digits.is_empty() {
                return;
            }
            let expected = seconds(&digits);
            let value = pad.around(&digits);
            assert_eq!(
                parse_retry_after(&value, clock(now)),
                Some(Duration::from_secs(expected)),
                "{value:?}"
            );
        }
        Input::Date { at, now, form, pad } => {
            let (form, at) = match form {
                Form::Rfc850 => (form, at % RFC850_END),
                Form::Imf | Form::Asctime => (form, at % (LAST_DATE + 1)),
            };
            let at = UNIX_EPOCH + Duration::from_secs(at);
            let imf = httpdate::fmt_http_date(at);
            let text = match form {
                Form::Imf => imf.clone(),
                Form::Rfc850 => rfc850(&imf),
                Form::Asctime => asctime(&imf),
            };
            let now = clock(now);
            let value = pad.around(&text);
            assert_eq!(
                parse_retry_after(&value, now),
                Some(wait(at, now)),
                "{value:?} (from {imf:?})"
            );
        }
    }
});
