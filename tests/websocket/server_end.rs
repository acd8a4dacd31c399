//! The server's end, as it arrives: a message written after the server's Close has arrived is sent again; an
//! echo to a message right in front of a Close (or of a frame that fails the connection) still reaches the
//! server first, as over a bare connection; and a server that goes silent is caught by the default heartbeat
//! within its documented bound.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::{SinkExt, Stream, StreamExt};
use stream_tungstenite::retry::{FixedDelay, NoRetry};
use stream_tungstenite::time::ManualClock;
use stream_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use stream_tungstenite::tungstenite::protocol::CloseFrame;
use stream_tungstenite::tungstenite::{self, Message};
use stream_tungstenite::ws::{ConnectionError, WsConnector, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT};
use stream_tungstenite::{connect, Event, ReconnectingStream};

use crate::support::{self, Recorder};

/// What a blocking test server saw: per connection, the text messages it took (before its own Close) and those
/// that arrived after it had sent its Close (which it discards, as python websockets does).
#[derive(Clone, Default)]
struct Seen(Arc<(Mutex<Vec<Connection>>, Condvar)>);

/// One connection's messages: taken, and discarded after the server's own Close.
type Connection = (Vec<String>, Vec<String>);

impl Seen {
    /// Records `text` on connection `index`: taken, or discarded after the server's own Close.
    fn record(&self, index: usize, text: String, discarded: bool) {
        let mut seen = self.0 .0.lock().unwrap();
        while seen.len() <= index {
            seen.push(Default::default());
        }
        let (taken, after_close) = &mut seen[index];
        if discarded { after_close } else { taken }.push(text);
        self.0 .1.notify_all();
    }

    /// Waits (at most 10 s) until connection `index` has taken a message.
    fn wait_taken(&self, index: usize) {
        let seen = self.0 .0.lock().unwrap();
        let (_seen, timeout) = self
            .0
             .1
            .wait_timeout_while(seen, Duration::from_secs(10), |seen| {
                seen.get(index).map_or(true, |(taken, _)| taken.is_empty())
            })
            .unwrap();
        assert!(!timeout.timed_out(), "connection {index} took nothing within 10 s");
    }

    fn taken(&self) -> Vec<String> {
        self.0
             .0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(taken, _)| taken.clone())
            .collect()
    }

    fn connection(&self, index: usize) -> (Vec<String>, Vec<String>) {
        self.0 .0.lock().unwrap().get(index).cloned().unwrap_or_default()
    }
}

/// A blocking server on its own threads: `handle` runs each accepted TCP connection, with its index.
fn blocking_server(handle: impl Fn(TcpStream, usize) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for (index, tcp) in listener.incoming().enumerate() {
            let Ok(tcp) = tcp else { return };
            let handle = Arc::clone(&handle);
            std::thread::spawn(move || handle(tcp, index));
        }
    });
    url
}

/// Echoes; after every 5th message of a connection it writes the echo and a Close with 1012 in one segment,
/// then discards what follows until the client's Close.
fn echo_then_close_every_5(seen: Seen) -> String {
    blocking_server(move |tcp, index| {
        let Ok(mut ws) = tungstenite::accept(tcp) else { return };
        let record = |text: String, after_close: bool| seen.record(index, text, after_close);
        let mut count = 0;
        let mut closed = false;
        loop {
            match ws.read() {
                Ok(Message::Text(text)) => {
                    record(text.to_string(), closed);
                    if closed {
                        continue;
                    }
                    count += 1;
                    if count < 5 {
                        if ws.send(Message::Text(text)).is_err() {
                            return;
                        }
                        continue;
                    }
                    // The echo stays in tungstenite's buffer; the Close flushes both in one write.
                    let _ = ws.write(Message::Text(text));
                    let frame = CloseFrame {
                        code: CloseCode::Restart,
                        reason: "restart".into(),
                    };
                    let _ = ws.close(Some(frame));
                    closed = true;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    })
}

/// Through `ReconnectingStream` over `connect`, `send(c_i); next()` in turn: the read that brings the echo of
/// every 5th message brings the server's Close too, so the next message is written after the Close arrived.
/// It is sent again on the next connection: every message is taken by the server (before its Close), in
/// order, and every echo comes back. (Before, that message counted as sent and was lost: no echo, no error.)
#[test]
fn a_message_written_after_the_servers_close_arrived_is_sent_again_on_the_next_connection() {
    let seen = Seen::default();
    let url = echo_then_close_every_5(seen.clone());
    let mut ws = ReconnectingStream::new(move || connect(url.clone())).with_retry(FixedDelay::new(Duration::ZERO));
    let expected: Vec<String> = (0..20).map(|n| format!("c{n}")).collect();
    support::block_on_within(Duration::from_secs(30), "20 messages, each echoed", async {
        for text in &expected {
            ws.send(Message::text(text.as_str())).await.unwrap();
            let echo = ws.next().await.unwrap().unwrap();
            assert_eq!(echo, Message::text(text.as_str()));
        }
    });
    assert_eq!(seen.taken(), expected, "every message taken once, in order");
    // The one written after each Close reached the closing connection too, and was discarded there.
    for (index, discarded) in ["c5", "c10", "c15"].into_iter().enumerate() {
        assert_eq!(seen.connection(index).1, [discarded], "connection {index}");
    }
    assert_eq!(ws.generation(), 4);
}

/// On connecting, writes `first` then `then` (raw frames) in one segment; records the text messages that
/// arrive on this connection before it ends.
fn greet_then(first: &'static [u8], then: &'static [u8], seen: Seen) -> String {
    blocking_server(move |tcp, index| {
        let Ok(mut ws) = tungstenite::accept(tcp) else { return };
        let mut segment = first.to_vec();
        segment.extend_from_slice(then);
        if index == 0 && ws.get_mut().write_all(&segment).is_err() {
            return;
        }
        loop {
            match ws.read() {
                Ok(Message::Text(text)) => seen.record(index, text.to_string(), false),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    })
}

/// An unmasked text frame "hello" (server to client).
const HELLO: &[u8] = b"\x81\x05hello";
/// A Close frame with code 1000.
const CLOSE_1000: &[u8] = b"\x88\x02\x03\xe8";
/// A text frame with the reserved bit RSV1 set: a protocol error that fails the connection.
const RESERVED_BIT: &[u8] = b"\xc1\x03bad";

/// Reads "hello", echoes it: the echo reaches the server on that connection, before the end that came right
/// behind "hello" completes, as over a bare connection.
fn echo_reaches_the_server_before_the_end(end: &'static [u8]) {
    let seen = Seen::default();
    let url = greet_then(HELLO, end, seen.clone());
    let mut ws = ReconnectingStream::new(move || connect(url.clone())).with_retry(FixedDelay::new(Duration::ZERO));
    support::block_on_within(Duration::from_secs(10), "the echo", async {
        let hello = ws.next().await.unwrap().unwrap();
        assert_eq!(hello, Message::text("hello"));
        ws.send(Message::text("echo hello")).await.unwrap();
    });
    seen.wait_taken(0);
    assert_eq!(
        seen.connection(0).0,
        ["echo hello"],
        "on the connection the end came on"
    );
}

#[test]
fn an_echo_to_a_message_right_before_a_close_reaches_the_server_first() {
    echo_reaches_the_server_before_the_end(CLOSE_1000);
}

#[test]
fn an_echo_to_a_message_right_before_a_failing_frame_reaches_the_server_first() {
    echo_reaches_the_server_before_the_end(RESERVED_BIT);
}

/// Completes the upgrade, then neither sends nor reads (so never answers a ping) until the test ends.
fn silent_server() -> (String, std::sync::mpsc::Sender<()>) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Mutex::new(Some(released));
    let url = blocking_server(move |tcp, _| {
        let Ok(_ws) = tungstenite::accept(tcp) else { return };
        if let Some(released) = released.lock().unwrap().take() {
            let _ = released.recv();
        }
    });
    (url, release)
}

/// With the defaults, a connection whose peer goes silent is declared dead exactly at
/// `DEFAULT_PING_INTERVAL + DEFAULT_PING_TIMEOUT` (40 s) of the connection's clock, not before. (Before, with
/// no heartbeat by default, the stream stayed on its first connection forever.)
#[test]
fn a_silent_peer_is_caught_by_the_default_heartbeat_within_40s() {
    assert_eq!(DEFAULT_PING_INTERVAL + DEFAULT_PING_TIMEOUT, Duration::from_secs(40));
    let (url, release) = silent_server();
    let clock = ManualClock::new();
    let log = Recorder::new();
    let connector = WsConnector::builder(url).with_timer(clock.clone()).build();
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector)
        .with_timer(clock.clone())
        .with_retry(NoRetry)
        .with_observer(log.observer());
    let connected = |log: &Recorder| log.count(|e| matches!(e, Event::Connected { .. })) == 1;
    // Up, and the heartbeat's first sleep registered.
    support::block_on_within(
        Duration::from_secs(10),
        "connected",
        futures::future::poll_fn(|cx| {
            assert!(Pin::new(&mut ws).poll_next(cx).is_pending());
            if connected(&log) && clock.next_deadline() == Some(DEFAULT_PING_INTERVAL) {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }),
    );
    let mut poll = || {
        support::block_on(futures::future::poll_fn(|cx| {
            Poll::Ready(Pin::new(&mut ws).poll_next(cx))
        }))
    };
    clock.advance(DEFAULT_PING_INTERVAL);
    assert!(poll().is_pending(), "the ping goes out");
    clock.advance(DEFAULT_PING_TIMEOUT - Duration::from_millis(1));
    assert!(poll().is_pending(), "still up 1 ms before the bound");
    assert_eq!(log.count(|e| matches!(e, Event::Disconnected { .. })), 0);
    clock.advance(Duration::from_millis(1));
    let Poll::Ready(Some(Err(error))) = poll() else {
        panic!("the silent connection is declared dead at the bound");
    };
    let failure = error.failure().expect("a failure ended it");
    assert!(
        matches!(failure.downcast_ref::<ConnectionError>(), Some(ConnectionError::Silent { after }) if *after == DEFAULT_PING_TIMEOUT),
        "{failure}"
    );
    let _ = release.send(());
}
