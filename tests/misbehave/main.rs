//! Misbehaving servers: raw TCP servers (tests/support/server.rs `serve`) that write bytes by hand, and the
//! promise that the client answers every misbehaviour with a typed error, an event and a reconnect (or a typed
//! end), never a panic, a hang or unbounded memory.
//!
//! - Before the upgrade: a server that accepts and closes at once, one that never answers the upgrade
//!   (connect timeout on a `ManualClock` and on real time).
//! - After a valid upgrade: invalid frames (reserved bits, unknown opcodes, a masked frame from the server,
//!   fragmented or oversized control frames, stray continuations), invalid UTF-8, oversized messages (with
//!   the resident memory measured), and a property test sending random bytes and mutated valid frames.
//! - `close()` during a connect, a backoff and a handshake returns at once and nothing dials afterwards.
//!
//! The tests take a lock and run one at a time: the timing bounds and the memory figures of one test must not
//! be disturbed by another. Figures are printed; see them with `cargo test --test misbehave -- --nocapture`.
//! The property test runs `PROPTEST_CASES` cases (default 500).

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt, SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use stream_tungstenite::handshake::{AuthHandshaker, HandshakeError};
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::{FixedDelay, Immediate, NoRetry};
use stream_tungstenite::time::ManualClock;
use stream_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use stream_tungstenite::tungstenite::handshake::derive_accept_key;
use stream_tungstenite::tungstenite::protocol::WebSocketConfig;
use stream_tungstenite::tungstenite::{self, Message};
use stream_tungstenite::ws::ConnectionError;
use stream_tungstenite::ws::WsConnector;
use stream_tungstenite::{
    Classification, Classify, ConnectError, ConnectTimeout, ConnectionState, DefaultClassifier, Error, Event, Failure,
    ReconnectingStream,
};
use support::events::Recorder as Events;
use support::serial::{ms, serial};
use support::server::{serve, Server};
use support::within;

/// The attempt and the timeout of a failure that is a connect timeout.
fn timed_out(failure: &Failure) -> Option<(u32, Duration)> {
    match failure {
        Failure::Connect { attempt, .. } => failure.downcast_ref::<ConnectTimeout>().map(|t| (*attempt, t.after)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A hand-written server side.

/// Reads the client's upgrade request and answers 101 by hand. `false` if the client went away first.
async fn upgrade(tcp: &mut Async<TcpStream>) -> bool {
    upgrade_then(tcp, &[]).await
}

/// As [`upgrade`], with `then` written in the same write as the 101 response (a server's greeting).
async fn upgrade_then(tcp: &mut Async<TcpStream>, then: &[u8]) -> bool {
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > 64 * 1024 {
            return false;
        }
    }
    let text = String::from_utf8_lossy(&request);
    let Some(key) = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    }) else {
        return false;
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    tcp.write_all(&[response.as_bytes(), then].concat()).await.is_ok()
}

/// Reads and discards until the peer closes (or `limit` passes); `true` on EOF or error.
async fn drain(tcp: &mut Async<TcpStream>, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    within(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A server-to-client frame: `first` is FIN/RSV/opcode, the length is encoded minimally, `mask` masks it (which a
/// server must never do).
fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        None => out.extend_from_slice(payload),
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
    }
    out
}

fn text_frame(text: &str) -> Vec<u8> {
    frame(0x81, text.as_bytes(), None)
}

/// A server whose first connection gets `bad` after a valid upgrade; later connections get a text "ok".
fn bad_then_ok_server(bad: Arc<Vec<u8>>) -> Server {
    serve(move |mut tcp, index, _| {
        let bad = Arc::clone(&bad);
        async move {
            if !upgrade(&mut tcp).await {
                return;
            }
            if index == 0 {
                // Written from the shared buffer: no server-side copy inflates the RSS figures.
                let _ = tcp.write_all(&bad).await;
                drain(&mut tcp, Duration::from_secs(10)).await;
            } else {
                // "ok", then hang up when the client sends anything (its Close), so that close() ends at once.
                let _ = tcp.write_all(&text_frame("ok")).await;
                let mut buf = [0u8; 256];
                let _ = within(Duration::from_secs(10), tcp.read(&mut buf)).await;
            }
        }
    })
}

/// Frames a server writes in the same segment as its 101 response (a greeting) are delivered, in order: the
/// connection is rebuilt after the upgrade (to get a read buffer of the configured size) from exactly the
/// bytes that followed the response head, with nothing lost or repeated.
#[test]
fn frames_in_the_same_write_as_the_upgrade_response_are_delivered() {
    let _serial = serial();
    let greeting: Arc<Vec<u8>> = Arc::new((0..200).flat_map(|n| text_frame(&format!("m{n}"))).collect());
    let server = serve(move |mut tcp, _, _| {
        let greeting = Arc::clone(&greeting);
        async move {
            if upgrade_then(&mut tcp, &greeting).await {
                drain(&mut tcp, Duration::from_secs(10)).await;
            }
        }
    });
    let received = support::block_on(within(Duration::from_secs(5), async {
        let mut ws = stream_tungstenite::connect(server.url()).await.expect("upgrade");
        let mut received = Vec::new();
        while received.len() < 200 {
            // Held, not dropped: they share the connection's read buffer, as a subscriber's would.
            received.push(ws.next().await.expect("not ended").expect("a message"));
        }
        received
    }))
    .expect("200 messages within 5 s");
    let expected: Vec<Message> = (0..200).map(|n| Message::text(format!("m{n}"))).collect();
    assert_eq!(received, expected);
}

/// Resident set size of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn ws_stream(connector: WsConnector, events: &Events) -> ReconnectingStream<WsConnector, Message> {
    ReconnectingStream::new(connector)
        .with_retry(FixedDelay::new(ms(10)))
        .with_observer(events.observer())
}

// ---------------------------------------------------------------------------------------------------------------
// Before the upgrade.

/// Accept, then close before any HTTP response: a typed `ConnectError::Handshake` (tungstenite's handshake
/// ended early), classified retry. With `NoRetry` the stream ends with `GaveUp`; with a budget of 3 the server
/// sees 3 attempts.
#[test]
fn accept_then_close_is_a_retryable_handshake_error() {
    let _serial = serial();
    let server = serve(|tcp, _, _| async move { drop(tcp) });
    let events = Events::new();
    let mut ws = ReconnectingStream::<_, Message>::new(WsConnector::new(server.url()))
        .with_retry(NoRetry)
        .with_observer(events.observer());
    let item = support::block_on(within(Duration::from_secs(5), ws.next())).expect("no outcome within 5 s");
    let Some(Err(Error::GaveUp { attempts, unsent, last })) = item else {
        panic!("expected GaveUp, got {item:?}");
    };
    assert_eq!((attempts, unsent), (1, 0));
    assert!(matches!(*last, Failure::Connect { attempt: 1, .. }), "{last:?}");
    let error = last.downcast_ref::<ConnectError>().expect("a typed ConnectError");
    println!("accept-then-close: {error:?}");
    assert!(
        matches!(
            error,
            ConnectError::Upgrade(
                tungstenite::Error::Protocol(ProtocolError::HandshakeIncomplete) | tungstenite::Error::Io(_)
            )
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(DefaultClassifier.classify(&last), Classification::Retry);
    assert_eq!(last.close_code(), None);
    assert_eq!(events.names(), ["connecting", "connect-failed", "gave-up"]);
    assert!(support::block_on(ws.next()).is_none());
    assert_eq!(server.accepted(), 1);

    // Retried: three attempts, three accepts, then GaveUp.
    let events = Events::new();
    let mut ws = ReconnectingStream::<_, Message>::new(WsConnector::new(server.url()))
        .with_retry(FixedDelay::new(ms(5)).with_max_attempts(3))
        .with_observer(events.observer());
    let item = support::block_on(within(Duration::from_secs(5), ws.next())).expect("no outcome within 5 s");
    assert!(matches!(item, Some(Err(Error::GaveUp { attempts: 3, .. }))), "{item:?}");
    assert_eq!(events.connecting(), 3);
    assert_eq!(events.count(|e| matches!(e, Event::RetryScheduled { .. })), 2);
    assert_eq!(server.accepted(), 4);
}

/// A server that accepts and reads but never answers the upgrade; it logs "eof" when the client goes away.
fn silent_server() -> Server {
    serve(|mut tcp, _, log| async move {
        drain(&mut tcp, Duration::from_secs(60)).await;
        log.lock().unwrap().push("eof".to_owned());
    })
}

/// Never answering the upgrade: the per-attempt timeout on a `ManualClock` fires (only when the clock is
/// advanced) with `Failure::ConnectTimeout`, then a retry is scheduled and the next attempt dials again.
#[test]
fn unanswered_upgrade_times_out_on_a_manual_clock_and_retries() {
    let _serial = serial();
    let server = silent_server();
    let clock = ManualClock::new();
    let events = Events::new();
    let mut ws = ReconnectingStream::<_, Message>::new(WsConnector::new(server.url()))
        .with_retry(FixedDelay::new(Duration::from_secs(1)))
        .with_connect_timeout(Duration::from_secs(5))
        .with_timer(clock.clone())
        .with_observer(events.observer());
    let started = Instant::now();
    let timeouts = || {
        events.count(|e| {
            matches!(
                e,
                Event::ConnectFailed { failure } if timed_out(failure).is_some()
            )
        })
    };
    // Advance the clock only once the server holds attempt n (so the timeout fires while it is waiting for the
    // upgrade), and to end each backoff.
    let driver = async {
        while timeouts() < 2 {
            Timer::after(ms(2)).await;
            let Some(due) = clock.next_deadline() else { continue };
            let last = events.names().last().copied();
            let holding = last == Some("connecting") && server.accepted() >= events.connecting();
            if holding || last == Some("retry") {
                clock.advance(due);
            }
        }
    };
    let outcome = support::block_on(within(
        Duration::from_secs(5),
        select(Box::pin(ws.next()), Box::pin(driver)),
    ));
    assert!(
        matches!(outcome, Ok(Either::Right(_))),
        "the stream yielded or the driver hung"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "real time drove the timeout: {:?}",
        started.elapsed()
    );
    let seen: Vec<String> = events
        .events()
        .iter()
        .map(|event| match event {
            Event::Connecting { attempt } => format!("connecting {attempt}"),
            Event::ConnectFailed { failure } if timed_out(failure).is_some() => {
                let (attempt, after) = timed_out(failure).unwrap_or_default();
                format!("timeout {attempt} {after:?}")
            }
            Event::RetryScheduled { attempt, delay, .. } => format!("retry {attempt} {delay:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    // The second timeout schedules the third attempt in the same poll: compare the first five events.
    assert_eq!(
        seen.get(..5),
        Some(
            &[
                "connecting 1",
                "timeout 1 5s",
                "retry 2 1s",
                "connecting 2",
                "timeout 2 5s"
            ]
            .map(String::from)[..]
        ),
        "{seen:?}"
    );
    let failure = events.first_connect_failure().unwrap();
    assert_eq!(DefaultClassifier.classify(&failure), Classification::Retry);
    assert_eq!(server.accepted(), 2);
    // The abandoned attempts were dropped: the server sees both sockets close.
    drop(ws);
    let closed = support::block_on(within(Duration::from_secs(2), async {
        while server.log().len() < 2 {
            Timer::after(ms(5)).await;
        }
    }));
    assert!(closed.is_ok(), "abandoned attempts still open: {:?}", server.log());
}

/// The same on real time, short: `GaveUp` carrying `ConnectTimeout` after about the timeout.
#[test]
fn unanswered_upgrade_times_out_on_real_time() {
    let _serial = serial();
    let server = silent_server();
    let mut ws = ReconnectingStream::<_, Message>::new(WsConnector::new(server.url()))
        .with_retry(NoRetry)
        .with_connect_timeout(ms(100));
    let started = Instant::now();
    let item = support::block_on(within(Duration::from_secs(5), ws.next())).expect("no outcome within 5 s");
    let elapsed = started.elapsed();
    assert!(
        matches!(&item, Some(Err(Error::GaveUp { last, .. })) if timed_out(last) == Some((1, ms(100)))),
        "{item:?}"
    );
    assert!(elapsed >= ms(100) && elapsed < Duration::from_secs(1), "{elapsed:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// After a valid upgrade: invalid frames.

/// Sends `bad` on the first connection; expects the connection to fail with a typed `ConnectionError` that
/// `expected` accepts, with `code` as its close code, a `Disconnected` event, a retry classification, and a
/// reconnect that delivers "ok" from generation 2.
fn assert_bad_bytes_reconnect(
    label: &str,
    bad: Vec<u8>,
    config: Option<WebSocketConfig>,
    code: u16,
) -> ConnectionError {
    let server = bad_then_ok_server(Arc::new(bad));
    let events = Events::new();
    let mut builder = WsConnector::builder(server.url());
    if let Some(config) = config {
        builder = builder.with_websocket_config(config);
    }
    let mut ws = ws_stream(builder.build(), &events);
    let item = support::block_on(within(Duration::from_secs(5), ws.next()))
        .unwrap_or_else(|_| panic!("{label}: no item within 5 s; events {:?}", events.names()));
    assert!(
        matches!(&item, Some(Ok(Message::Text(text))) if text.as_str() == "ok"),
        "{label}: {item:?}"
    );
    assert_eq!(ws.generation(), 2, "{label}");
    assert_eq!(
        events.names(),
        [
            "connecting",
            "connected",
            "disconnected",
            "retry",
            "connecting",
            "connected"
        ],
        "{label}"
    );
    let reason = events.first_disconnect().unwrap();
    assert!(
        matches!(reason, Failure::Read { generation: 1, .. }),
        "{label}: {reason:?}"
    );
    assert_eq!(reason.close_code(), Some(code), "{label}: {reason:?}");
    assert_eq!(DefaultClassifier.classify(&reason), Classification::Retry, "{label}");
    let error = reason
        .downcast_ref::<ConnectionError>()
        .expect("a typed ConnectionError");
    assert_eq!(error.close_code(), Some(code), "{label}");
    println!("{label}: {error:?} -> close code {code}");
    let closed = support::block_on(within(Duration::from_secs(2), ws.close()));
    assert!(matches!(closed, Ok(Ok(()))), "{label}: close {closed:?}");
    // Rebuild the error for the caller's own checks (ConnectionError is not Clone).
    match error {
        ConnectionError::Protocol(inner) => ConnectionError::Protocol(clone_tungstenite(inner)),
        ConnectionError::Closed { code, reason } => ConnectionError::Closed {
            code: *code,
            reason: reason.clone(),
        },
        _ => panic!("unknown ConnectionError {error:?}"),
    }
}

fn clone_tungstenite(error: &tungstenite::Error) -> tungstenite::Error {
    match error {
        tungstenite::Error::Protocol(p) => tungstenite::Error::Protocol(p.clone()),
        tungstenite::Error::Capacity(c) => tungstenite::Error::Capacity(*c),
        tungstenite::Error::Utf8(s) => tungstenite::Error::Utf8(s.clone()),
        other => tungstenite::Error::Io(std::io::Error::other(other.to_string())),
    }
}

fn protocol_error(error: &ConnectionError) -> Option<&ProtocolError> {
    match error {
        ConnectionError::Protocol(tungstenite::Error::Protocol(p)) => Some(p),
        _ => None,
    }
}

/// Every frame-level protocol violation: `ConnectionError::Protocol`, close code 1002, reconnect.
#[test]
fn invalid_frames_fail_with_1002_and_reconnect() {
    let _serial = serial();
    let mut long_ping = vec![0x89, 126, 0, 126];
    long_ping.extend(std::iter::repeat_n(b'p', 126));
    let cases: Vec<(&str, Vec<u8>, ProtocolError)> = vec![
        (
            "rsv1-3 set",
            frame(0xF1, b"hi", None),
            ProtocolError::NonZeroReservedBits,
        ),
        (
            "rsv1 without deflate",
            frame(0xC1, b"hi", None),
            ProtocolError::NonZeroReservedBits,
        ),
        ("data opcode 3", frame(0x83, b"", None), ProtocolError::InvalidOpcode(3)),
        (
            "control opcode 0xB",
            frame(0x8B, b"", None),
            ProtocolError::InvalidOpcode(11),
        ),
        (
            "masked frame from server",
            frame(0x81, b"hi", Some([1, 2, 3, 4])),
            ProtocolError::MaskedFrameFromServer,
        ),
        (
            "fragmented ping",
            frame(0x09, b"", None),
            ProtocolError::FragmentedControlFrame,
        ),
        ("126-byte ping", long_ping, ProtocolError::ControlFrameTooBig),
        (
            "continuation first",
            frame(0x80, b"x", None),
            ProtocolError::UnexpectedContinueFrame,
        ),
        (
            "new message inside a fragmented one",
            [frame(0x01, b"a", None), frame(0x81, b"b", None)].concat(),
            ProtocolError::ExpectedFragment(tungstenite::protocol::frame::coding::Data::Text),
        ),
        (
            "1-byte close payload",
            frame(0x88, &[3], None),
            ProtocolError::InvalidCloseSequence,
        ),
    ];
    for (label, bytes, expected) in cases {
        let error = assert_bad_bytes_reconnect(label, bytes, None, 1002);
        assert_eq!(protocol_error(&error), Some(&expected), "{label}: {error:?}");
    }
}

/// Invalid UTF-8 in a text frame (and in a fragmented text message): a typed `Utf8` error, close code 1007,
/// reconnect.
#[test]
fn invalid_utf8_fails_with_1007_and_reconnects() {
    let _serial = serial();
    let cases = [
        ("text frame", frame(0x81, &[b'a', 0xC3, 0x28], None)),
        ("lone continuation byte", frame(0x81, &[0x80], None)),
        (
            "fragmented text",
            [frame(0x01, &[0xE2, 0x82], None), frame(0x80, &[0x28], None)].concat(),
        ),
    ];
    for (label, bytes) in cases {
        let error = assert_bad_bytes_reconnect(label, bytes, None, 1007);
        assert!(
            matches!(error, ConnectionError::Protocol(tungstenite::Error::Utf8(_))),
            "{label}: {error:?}"
        );
    }
}

/// A server Close whose reason is invalid UTF-8: a typed `Utf8` error (1007) and a reconnect, not a `Closed`.
#[test]
fn close_with_invalid_utf8_reason_is_a_1007_error() {
    let _serial = serial();
    let error = assert_bad_bytes_reconnect(
        "close reason not utf-8",
        frame(0x88, &[0x03, 0xE8, 0xC3, 0x28], None),
        None,
        1007,
    );
    assert!(
        matches!(error, ConnectionError::Protocol(tungstenite::Error::Utf8(_))),
        "{error:?}"
    );
}

/// A server that sends `close` (a raw Close frame) on its first connection, then hangs up once the client
/// replies; later connections get "ok".
fn closing_then_ok_server(close: Vec<u8>, hold_open: bool) -> Server {
    serve(move |mut tcp, index, log| {
        let close = close.clone();
        async move {
            if !upgrade(&mut tcp).await {
                return;
            }
            let first = if index == 0 { close } else { text_frame("ok") };
            let _ = tcp.write_all(&first).await;
            if index == 0 && hold_open {
                drain(&mut tcp, Duration::from_secs(30)).await;
                log.lock().unwrap().push("eof".to_owned());
            } else {
                let mut buf = [0u8; 256];
                let _ = within(Duration::from_secs(10), tcp.read(&mut buf)).await;
            }
        }
    })
}

/// A Close carrying 1005 (which may not be sent on the wire): tungstenite replaces it with 1002 "Protocol
/// violation", so the client reports `ConnectionError::Closed { code: 1002 }` as if the server had sent 1002, and
/// 1002 is a fatal close code: the stream ends with `Error::Fatal`, typed, without a panic.
#[test]
fn close_code_1005_on_the_wire_ends_as_fatal_1002() {
    let _serial = serial();
    let server = closing_then_ok_server(frame(0x88, &[0x03, 0xED], None), false);
    let events = Events::new();
    let mut ws = ws_stream(WsConnector::new(server.url()), &events);
    let item = support::block_on(within(Duration::from_secs(5), ws.next())).expect("no outcome within 5 s");
    println!("close 1005 on the wire: {item:?}");
    let Some(Err(Error::Fatal { cause, .. })) = item else {
        panic!("expected Fatal, got {item:?}");
    };
    assert!(
        matches!(
            cause.downcast_ref::<ConnectionError>(),
            Some(ConnectionError::Closed { code: 1002, .. })
        ),
        "{cause:?}"
    );
    assert_eq!(cause.close_code(), Some(1002));
    assert_eq!(events.names(), ["connecting", "connected", "disconnected", "gave-up"]);
    assert!(support::block_on(ws.next()).is_none());
    assert_eq!(server.accepted(), 1);
}

/// A server that sends a valid Close 1001 ("going away": reconnect) and then keeps the TCP connection open. The
/// client should see the close, give up waiting for the TCP close after a bounded time, report `Disconnected`
/// with code 1001 and reconnect.
///
/// Today it waits forever: `WsConnection::poll_next` (src/ws/connection.rs) stores the peer's Close and keeps
/// reading until the stream ends, with no bound, and tungstenite (client role) only ends the stream when the
/// server closes TCP. No event, no reconnect, no timeout; only a heartbeat layer (if any) could end it.
#[test]

fn server_close_then_holding_tcp_open_reconnects() {
    let _serial = serial();
    let server = closing_then_ok_server(frame(0x88, &[0x03, 0xE9], None), true);
    let events = Events::new();
    let mut ws = ws_stream(WsConnector::new(server.url()), &events);
    let item = support::block_on(within(Duration::from_secs(10), ws.next()));
    assert!(
        matches!(&item, Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "ok"),
        "{item:?}; events {:?}",
        events.names()
    );
    let reason = events.first_disconnect().unwrap();
    assert_eq!(reason.close_code(), Some(1001));
}

// ---------------------------------------------------------------------------------------------------------------
// Oversized messages and memory.

fn limits_64k() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(64 * 1024))
}

/// Runs `assert_bad_bytes_reconnect` while an observer samples the RSS at the `Disconnected` event (the failed
/// connection and its buffers are still alive then); returns the growth over the baseline, in bytes.
fn rss_growth_of(
    label: &str,
    bad: Vec<u8>,
    config: WebSocketConfig,
    expected: impl Fn(&ConnectionError) -> bool,
) -> usize {
    let bad = Arc::new(bad);
    let server = bad_then_ok_server(Arc::clone(&bad));
    let peak = Arc::new(AtomicUsize::new(0));
    let peak_in = Arc::clone(&peak);
    let events = Events::new();
    let mut ws = ws_stream(
        WsConnector::builder(server.url()).with_websocket_config(config).build(),
        &events,
    )
    .with_observer(move |event: &Event| {
        if matches!(event, Event::Disconnected { .. }) {
            peak_in.fetch_max(rss(), Ordering::SeqCst);
        }
    });
    let before = rss();
    let item = support::block_on(within(Duration::from_secs(10), ws.next())).expect("no item within 10 s");
    assert!(
        matches!(&item, Some(Ok(Message::Text(t))) if t.as_str() == "ok"),
        "{label}: {item:?}"
    );
    let reason = events.first_disconnect().unwrap();
    let error = reason.downcast_ref::<ConnectionError>().expect("typed");
    assert!(expected(error), "{label}: {error:?}");
    assert_eq!(error.close_code(), Some(1009), "{label}");
    assert_eq!(reason.close_code(), Some(1009), "{label}");
    assert_eq!(DefaultClassifier.classify(&reason), Classification::Retry, "{label}");
    let growth = peak.load(Ordering::SeqCst).saturating_sub(before);
    println!("{label}: {error:?}; RSS growth at the failure {} KiB", growth / 1024);
    drop(bad);
    growth
}

fn too_long(size: usize, max: usize) -> impl Fn(&ConnectionError) -> bool {
    move |error| {
        matches!(
            error,
            ConnectionError::Protocol(tungstenite::Error::Capacity(CapacityError::MessageTooLong { size: s, max_size: m }))
                if *s == size && *m == max
        )
    }
}

/// A frame header announcing 2^40 bytes, then nothing: rejected from the header alone (the frame limit), close
/// code 1009, reconnect, and no memory reserved for it.
#[test]
fn frame_announcing_a_terabyte_is_rejected_from_its_header() {
    let _serial = serial();
    let mut header = vec![0x82, 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    let growth = rss_growth_of("2^40 header", header, limits_64k(), too_long(1 << 40, 16 << 20));
    assert!(growth < 8 << 20, "RSS grew by {growth} bytes");
}

/// A 1 MiB binary message with a 64 KiB message limit: `Capacity(MessageTooLong)`, 1009, reconnect. The frame
/// limit stays tungstenite's 16 MiB, so tungstenite reads the whole frame before the message limit applies:
/// the growth is reported, and bounded by the frame limit.
#[test]
fn one_mib_message_over_a_64k_limit_fails_with_1009() {
    let _serial = serial();
    let payload = vec![0xAB; 1 << 20];
    let growth = rss_growth_of(
        "1 MiB frame, 64 KiB message limit",
        frame(0x82, &payload, None),
        limits_64k(),
        too_long(1 << 20, 64 * 1024),
    );
    assert!(growth < 16 << 20, "RSS grew by {growth} bytes");
    // The same as fragments: the message limit applies as they arrive.
    let fragments: Vec<u8> = (0..16)
        .flat_map(|i| {
            frame(
                if i == 0 {
                    0x02
                } else if i == 15 {
                    0x80
                } else {
                    0x00
                },
                &payload[..64 * 1024],
                None,
            )
        })
        .collect();
    let growth = rss_growth_of(
        "16 x 64 KiB fragments",
        fragments,
        limits_64k(),
        |error| matches!(error, ConnectionError::Protocol(tungstenite::Error::Capacity(CapacityError::MessageTooLong { max_size, .. })) if *max_size == 64 * 1024),
    );
    assert!(growth < 8 << 20, "RSS grew by {growth} bytes");
}

/// With the frame limit set to the message limit too, a 1 MiB frame is rejected from its header: memory stays
/// far below the announced size.
#[test]
fn frame_limit_rejects_a_one_mib_frame_from_its_header() {
    let _serial = serial();
    let payload = vec![0xCD; 1 << 20];
    let config = limits_64k().max_frame_size(Some(64 * 1024));
    let growth = rss_growth_of(
        "1 MiB frame, 64 KiB frame limit",
        frame(0x82, &payload, None),
        config,
        too_long(1 << 20, 64 * 1024),
    );
    assert!(growth < 1 << 20, "RSS grew by {growth} bytes");
}

// ---------------------------------------------------------------------------------------------------------------
// Close during connect, backoff and handshake.

/// Polls `ws.next()` in short slices until `ready` holds (at most 5 s).
fn drive_until<C>(
    ws: &mut ReconnectingStream<C, Message>,
    mut ready: impl FnMut(&ReconnectingStream<C, Message>) -> bool,
) where
    C: stream_tungstenite::Connect,
    ReconnectingStream<C, Message>: futures::Stream<Item = Result<Message, Error>> + Unpin,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready(ws) {
        assert!(
            Instant::now() < deadline,
            "condition not reached; state {:?}",
            ws.state()
        );
        let item = support::block_on(within(ms(5), ws.next()));
        assert!(item.is_err(), "unexpected item {item:?}");
    }
}

/// `close()` returns within `limit` (real time); the result.
fn close_promptly<C>(ws: &mut ReconnectingStream<C, Message>, limit: Duration) -> Result<(), Error>
where
    ReconnectingStream<C, Message>: futures::Sink<Message, Error = Error> + Unpin,
    C: stream_tungstenite::Connect,
{
    let started = Instant::now();
    let result = support::block_on(within(Duration::from_secs(5), ws.close())).expect("close() hung for 5 s");
    let took = started.elapsed();
    assert!(took < limit, "close() took {took:?}");
    println!("close() returned in {took:?}: {result:?}");
    result
}

/// After a close: no connection for 300 ms, the stream yields `None`, the state is `Closed`.
fn assert_stays_closed<C>(ws: &mut ReconnectingStream<C, Message>, server: Option<&Server>, events: &Events)
where
    C: stream_tungstenite::Connect,
    ReconnectingStream<C, Message>: futures::Stream<Item = Result<Message, Error>> + Unpin,
{
    let accepted = server.map(Server::accepted);
    let connecting = events.connecting();
    assert_eq!(ws.state(), ConnectionState::Closed);
    assert!(support::block_on(within(ms(300), ws.next()))
        .expect("next() after close hangs")
        .is_none());
    std::thread::sleep(ms(300));
    assert_eq!(
        server.map(Server::accepted),
        accepted,
        "the server saw a connection after close()"
    );
    assert_eq!(events.connecting(), connecting, "an attempt started after close()");
    assert_eq!(events.names().last(), Some(&"closed"));
}

/// Close while the server holds the upgrade unanswered: returns at once with the queued message handed back,
/// the socket is dropped, nothing dials again.
#[test]
fn close_during_connect_returns_promptly() {
    let _serial = serial();
    let server = silent_server();
    let events = Events::new();
    let mut ws = ws_stream(WsConnector::new(server.url()), &events);
    support::block_on(ws.feed(Message::text("queued"))).unwrap();
    drive_until(&mut ws, |_| server.accepted() == 1);
    assert!(
        matches!(ws.state(), ConnectionState::Connecting { attempt: 1 }),
        "{:?}",
        ws.state()
    );
    let result = close_promptly(&mut ws, ms(500));
    assert!(matches!(result, Err(Error::Closed { unsent: 1 })), "{result:?}");
    assert_eq!(std::pin::Pin::new(&mut ws).take_unsent(), [Message::text("queued")]);
    assert_stays_closed(&mut ws, Some(&server), &events);
    assert_eq!(server.log(), ["eof"], "the abandoned socket was not closed");
}

/// Close during a long backoff after accept-and-drop, and after a refused connect.
#[test]
fn close_during_backoff_returns_promptly() {
    let _serial = serial();
    let server = serve(|tcp, _, _| async move { drop(tcp) });
    let events = Events::new();
    let mut ws = ReconnectingStream::<_, Message>::new(WsConnector::new(server.url()))
        .with_retry(FixedDelay::new(Duration::from_secs(30)))
        .with_observer(events.observer());
    drive_until(&mut ws, |ws| matches!(ws.state(), ConnectionState::Backoff { .. }));
    assert_eq!(server.accepted(), 1);
    assert!(close_promptly(&mut ws, ms(500)).is_ok());
    assert_stays_closed(&mut ws, Some(&server), &events);

    let refused = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let events = Events::new();
    let mut ws = ReconnectingStream::<_, Message>::new(WsConnector::new(format!("ws://{refused}/")))
        .with_retry(FixedDelay::new(Duration::from_secs(30)))
        .with_observer(events.observer());
    drive_until(&mut ws, |ws| matches!(ws.state(), ConnectionState::Backoff { .. }));
    let failure = events.first_connect_failure().unwrap();
    assert!(
        matches!(failure.downcast_ref::<ConnectError>(), Some(ConnectError::Tcp { .. })),
        "{failure:?}"
    );
    assert!(close_promptly(&mut ws, ms(500)).is_ok());
    assert_stays_closed(&mut ws, None, &events);
}

/// An auth server that upgrades, logs "auth" when the client's frame arrives, then replies `reply` (or nothing)
/// and holds the connection.
fn auth_server(reply: Option<Vec<u8>>) -> Server {
    serve(move |mut tcp, _, log| {
        let reply = reply.clone();
        async move {
            if !upgrade(&mut tcp).await {
                return;
            }
            let mut buf = [0u8; 1024];
            if !matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
            log.lock().unwrap().push("auth".to_owned());
            if let Some(reply) = reply {
                let _ = tcp.write_all(&reply).await;
            }
            drain(&mut tcp, Duration::from_secs(30)).await;
            log.lock().unwrap().push("eof".to_owned());
        }
    })
}

/// Close while an `AuthHandshaker` waits for a reply that never comes: returns at once, nothing dials again.
#[test]
fn close_during_handshake_returns_promptly() {
    let _serial = serial();
    let server = auth_server(None);
    let events = Events::new();
    let connector = ConnectorBuilder::new(WsConnector::new(server.url()))
        .layer(
            AuthHandshaker::token("t0ken")
                .with_accept(|m| m.to_text().is_ok_and(|t| t == "auth_ok"))
                .with_timeout(Duration::from_secs(30)),
        )
        .build();
    let mut ws = ReconnectingStream::<_, Message>::new(connector)
        .with_retry(FixedDelay::new(ms(10)))
        .with_observer(events.observer());
    drive_until(&mut ws, |_| server.log().contains(&"auth".to_owned()));
    assert!(
        matches!(ws.state(), ConnectionState::Connecting { attempt: 1 }),
        "{:?}",
        ws.state()
    );
    assert!(close_promptly(&mut ws, ms(500)).is_ok());
    assert_stays_closed(&mut ws, Some(&server), &events);
    assert_eq!(server.accepted(), 1);
    assert_eq!(server.log(), ["auth", "eof"]);
}

/// An invalid frame during the auth handshake is a connection lost without a server Close: per
/// `HandshakeError`'s docs it should retry (only a *server Close* with a fatal code is fatal).
///
/// Today it is `HandshakeError::Rejected { reason: "server closed the connection with code 1002" }` and the
/// stream ends with `Error::Fatal` at once: `HandshakeIo::lost` (src/handshake/mod.rs) fills
/// `ConnectionLost::close_code` from `ConnectionError::close_code`, which also gives 1002/1007/1009 for errors the
/// client detected itself, and `AuthHandshaker` (src/handshake/auth.rs, the `ConnectionLost` match after
/// `recv_until`) turns every non-transient code into a rejection (`HandshakeError::is_fatal` would make it fatal
/// for any handshaker).
#[test]

fn invalid_frame_during_handshake_retries() {
    let _serial = serial();
    let server = auth_server(Some(frame(0xF1, b"auth_ok", None)));
    let events = Events::new();
    let connector = ConnectorBuilder::new(WsConnector::new(server.url()))
        .layer(
            AuthHandshaker::token("t0ken")
                .with_accept(|m| m.to_text().is_ok_and(|t| t == "auth_ok"))
                .with_timeout(Duration::from_secs(30)),
        )
        .build();
    let mut ws = ReconnectingStream::<_, Message>::new(connector)
        .with_retry(FixedDelay::new(ms(10)).with_max_attempts(2))
        .with_observer(events.observer());
    let item = support::block_on(within(Duration::from_secs(5), ws.next())).expect("no outcome");
    let failure = events
        .events()
        .into_iter()
        .find_map(|e| match e {
            Event::HandshakeFailed { failure, .. } => Some(failure),
            _ => None,
        })
        .expect("a HandshakeFailed event");
    let error = failure.downcast_ref::<HandshakeError>().expect("typed HandshakeError");
    println!(
        "invalid frame during auth: {error:?}; events {:?}; item {item:?}",
        events.names()
    );
    assert!(matches!(error, HandshakeError::ConnectionLost { .. }), "{error:?}");
    assert!(
        !error.is_fatal(),
        "a local protocol error during the handshake is fatal: {error:?}"
    );
    assert!(matches!(item, Some(Err(Error::GaveUp { attempts: 2, .. }))), "{item:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Property test: random bytes after a valid upgrade.

const SENTINEL: &str = "\u{0}sentinel";

/// One server for every case: connection 0 of a case gets the case's bytes, then FIN; later connections get
/// the sentinel text and close when the client sends anything.
struct FuzzServer {
    server: Server,
    case: Arc<Mutex<(Arc<Vec<u8>>, usize)>>,
}

impl FuzzServer {
    fn start() -> Self {
        let case = Arc::new(Mutex::new((Arc::new(Vec::new()), 0usize)));
        let shared = Arc::clone(&case);
        let server = serve(move |mut tcp, _, _| {
            let (payload, index) = {
                let mut case = shared.lock().unwrap();
                case.1 += 1;
                (Arc::clone(&case.0), case.1 - 1)
            };
            async move {
                if !upgrade(&mut tcp).await {
                    return;
                }
                if index == 0 {
                    let _ = tcp.write_all(&payload).await;
                    let _ = tcp.get_ref().shutdown(std::net::Shutdown::Write);
                    drain(&mut tcp, Duration::from_secs(5)).await;
                } else {
                    let _ = tcp.write_all(&text_frame(SENTINEL)).await;
                    let mut buf = [0u8; 256];
                    let _ = within(Duration::from_secs(5), tcp.read(&mut buf)).await;
                }
            }
        });
        Self { server, case }
    }

    fn set(&self, payload: Vec<u8>) {
        *self.case.lock().unwrap() = (Arc::new(payload), 0);
    }
}

/// A frame description: FIN/RSV/opcode byte, payload, mask.
fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    let opcode = prop_oneof![
        6 => prop::sample::select(vec![0x0u8, 0x1, 0x2, 0x8, 0x9, 0xA]),
        1 => 0u8..16,
    ];
    let close_code = prop::sample::select(vec![
        1000u16, 1001, 1002, 1003, 1005, 1006, 1007, 1009, 1011, 1013, 999, 4000, 5000,
    ]);
    let payload = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..200),
        2 => "[a-zé€😀 ]{0,40}".prop_map(String::into_bytes),
        1 => (close_code, "[a-z]{0,10}").prop_map(|(code, reason)| [code.to_be_bytes().to_vec(), reason.into_bytes()].concat()),
    ];
    let rsv = prop_oneof![8 => Just(0u8), 1 => 0u8..8];
    let fin = prop::bool::weighted(0.8);
    (fin, rsv, opcode, payload, prop::option::weighted(0.1, any::<[u8; 4]>()))
        .prop_map(|(fin, rsv, opcode, payload, mask)| frame(u8::from(fin) << 7 | rsv << 4 | opcode, &payload, mask))
}

fn payload_strategy() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        prop::collection::vec(frame_strategy(), 1..5),
        prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(frames, flips, cut)| {
            let mut bytes = frames.concat();
            if !bytes.is_empty() {
                for (at, xor) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= xor;
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
            }
            bytes
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        1 => prop::collection::vec(frame_strategy(), 1..5).prop_map(|frames| frames.concat()),
        3 => mutated,
    ]
}

/// How one case ended, for the summary.
fn describe_failure(failure: &Failure) -> String {
    match failure.downcast_ref::<ConnectionError>() {
        Some(ConnectionError::Closed { code, .. }) => format!("closed {code}"),
        Some(ConnectionError::Protocol(tungstenite::Error::Protocol(p))) => {
            let name = format!("{p:?}");
            format!("protocol {}", name.split('(').next().unwrap_or_default())
        }
        Some(ConnectionError::Protocol(tungstenite::Error::Capacity(_))) => "capacity".to_owned(),
        Some(ConnectionError::Protocol(tungstenite::Error::Utf8(_))) => "utf8".to_owned(),
        Some(ConnectionError::Protocol(tungstenite::Error::Io(e))) => format!("io {:?}", e.kind()),
        Some(ConnectionError::Protocol(other)) => format!("other {other}"),
        Some(other) => format!("{other:?}"),
        None if matches!(failure, Failure::Ended { .. }) => "ended".to_owned(),
        None => format!("untyped {failure:?}"),
    }
}

fn run_case(fuzz: &FuzzServer, payload: Vec<u8>, stats: &Mutex<BTreeMap<String, usize>>) -> Result<(), TestCaseError> {
    fuzz.set(payload);
    let events = Events::new();
    let config = WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let mut ws = ReconnectingStream::<_, Message>::new(
        WsConnector::builder(fuzz.server.url())
            .with_websocket_config(config)
            .build(),
    )
    .with_retry(Immediate::new().with_max_attempts(4))
    .with_close_timeout(Duration::from_secs(1))
    .with_observer(events.observer());
    let mut items = 0usize;
    let outcome = support::block_on(within(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == SENTINEL && ws.generation() >= 2 => {
                    return Ok("reconnected".to_owned());
                }
                Some(Ok(_)) => items += 1,
                Some(Err(error)) => return Err(error),
                None => return Ok("ended without an error".to_owned()),
            }
        }
    }));
    let Ok(outcome) = outcome else {
        return Err(TestCaseError::fail(format!("hung; events {:?}", events.names())));
    };
    // Every failure is typed: a ConnectionError (or the end of the stream) on the lost connection.
    let mut first = None;
    for event in events.events() {
        if let Event::Disconnected {
            reason, generation: 1, ..
        } = &event
        {
            prop_assert!(
                matches!(reason, Failure::Ended { .. }) || reason.downcast_ref::<ConnectionError>().is_some(),
                "untyped disconnect {:?}",
                reason
            );
            first.get_or_insert_with(|| describe_failure(reason));
        }
        if let Event::ConnectFailed { failure } = &event {
            prop_assert!(
                failure.downcast_ref::<ConnectError>().is_some(),
                "untyped connect failure {:?}",
                failure
            );
        }
    }
    let first = first.unwrap_or_else(|| "no disconnect".to_owned());
    let kind = match &outcome {
        Ok(kind) if kind == "reconnected" => kind.clone(),
        Ok(other) => return Err(TestCaseError::fail(format!("{other}; events {:?}", events.names()))),
        Err(Error::Fatal { cause, .. }) => {
            prop_assert_eq!(DefaultClassifier.classify(cause), Classification::Fatal);
            let code = cause.close_code();
            prop_assert!(
                code.is_some_and(|c| stream_tungstenite::ws::FATAL_CLOSE_CODES.contains(&c)),
                "fatal without a fatal close code: {:?}",
                cause
            );
            prop_assert!(support::block_on(ws.next()).is_none());
            "fatal".to_owned()
        }
        Err(error) => {
            return Err(TestCaseError::fail(format!(
                "unexpected end {error:?}; events {:?}",
                events.names()
            )))
        }
    };
    let closed = support::block_on(within(Duration::from_secs(3), ws.close()));
    prop_assert!(closed.is_ok(), "close() hung");
    *stats
        .lock()
        .unwrap()
        .entry(format!(
            "{kind} after {first}{}",
            if items > 0 { " (with items)" } else { "" }
        ))
        .or_default() += 1;
    Ok(())
}

/// Random bytes and mutated valid frames after a valid upgrade: never a panic or a hang; each case ends in
/// items, a typed failure in a `Disconnected` event and a reconnect, or a typed fatal end (a server Close
/// with a fatal code).
#[test]
fn random_bytes_after_upgrade_never_panic() {
    let _serial = serial();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(500);
    let fuzz = FuzzServer::start();
    let stats = Mutex::new(BTreeMap::new());
    let ran = AtomicUsize::new(0);
    let started = Instant::now();
    let before = rss();
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&payload_strategy(), |payload| {
        ran.fetch_add(1, Ordering::SeqCst);
        run_case(&fuzz, payload, &stats)
    });
    let growth = rss().saturating_sub(before);
    println!(
        "{} cases (incl. shrinking) in {:?}; RSS growth {} KiB",
        ran.load(Ordering::SeqCst),
        started.elapsed(),
        growth / 1024
    );
    for (outcome, count) in stats.lock().unwrap().iter() {
        println!("{count:6}  {outcome}");
    }
    if let Err(error) = result {
        panic!("{error}");
    }
    assert!(growth < 64 << 20, "RSS grew by {growth} bytes");
}
