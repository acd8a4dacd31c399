//! The upgrade's response head scanner (`ws::transport::HeadScan`), fed a response in arbitrary reads.
//!
//! Invariants, whatever the bytes and however they are cut into reads:
//! - it never panics;
//! - the head ends just past the first `\r\n\r\n` or `\n\n` of the whole response (its documented ends), and
//!   nowhere if there is none;
//! - it says the response may be a `101` unless the bytes it saw (up to the head's end) hold a status code,
//!   after the first space of the first 12 bytes, that does not start like `101`;
//! - the answer is the same as for one read of the whole response.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use stream_tungstenite::fuzzing::{scan_head, HeadEnd};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Prepended to `bytes`, so that heads of real responses are reached without the fuzzer finding them.
    prefix: Prefix,
    bytes: Vec<u8>,
    /// Where the reads end, as offsets into the response (taken modulo its length, sorted).
    cuts: Vec<u16>,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Prefix {
    None,
    Switching,
    Rejected,
    Short,
}

impl Prefix {
    fn bytes(self) -> &'static [u8] {
        match self {
            Self::None => b"",
            Self::Switching => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
            Self::Rejected => b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n",
            Self::Short => b"HTTP/1.1 1",
        }
    }
}

/// The reference: the first end of a head in the whole response, and what the status says.
fn reference(response: &[u8]) -> HeadEnd {
    let end = (1..=response.len()).find(|&n| {
        let seen = &response[..n];
        seen.ends_with(b"\n\n") || seen.ends_with(b"\r\n\r\n")
    });
    let seen = &response[..end.unwrap_or(response.len())];
    let start = &seen[..seen.len().min(12)];
    let may_switch = match start.iter().position(|&b| b == b' ') {
        None => true,
        Some(space) => start[space + 1..].iter().zip(b"101").all(|(a, b)| a == b),
    };
    HeadEnd { end, may_switch }
}

fuzz_target!(|input: Input| {
    let mut response = input.prefix.bytes().to_vec();
    response.extend_from_slice(&input.bytes);
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&cut| usize::from(cut) % (response.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for cut in cuts {
        chunks.push(&response[from..cut]);
        from = cut;
    }
    chunks.push(&response[from..]);

    let expected = reference(&response);
    let whole = scan_head(&[&response]);
    assert_eq!(whole, expected, "one read of {:?}", String::from_utf8_lossy(&response));
    let split = scan_head(&chunks);
    assert_eq!(split, expected, "reads {chunks:?}");
    if response.starts_with(b"HTTP/1.1 101 ") {
        assert!(split.may_switch);
    }
});
