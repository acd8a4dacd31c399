//! Unit tests of the metrics hook, over in-memory connections.
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::executor::block_on;
use futures::{SinkExt, StreamExt};

use async_tungstenite::tungstenite::{self, Bytes, Message};

use super::*;
use crate::layer::ConnectorBuilder;
use crate::retry::Immediate;
use crate::time::ManualClock;
use crate::ws::ConnectionError;
use crate::{join, Connect, Join, ReconnectingStream};

type Item = Result<Message, ConnectionError>;
type Conn = Join<UnboundedReceiver<Item>, UnboundedSender<Message>>;

/// The test's ends of one in-memory connection: feed what the connection reads, see what it wrote.
struct Peer {
    feed: UnboundedSender<Item>,
    written: UnboundedReceiver<Message>,
}

fn pipe() -> (Conn, Peer) {
    let (feed, read) = mpsc::unbounded();
    let (write, written) = mpsc::unbounded();
    (join(read, write), Peer { feed, written })
}

/// A connector that hands out scripted outcomes: `Some(conn)` connects, `None` fails.
fn scripted(script: Vec<Option<Conn>>) -> impl FnMut() -> futures::future::Ready<Result<Conn, std::io::Error>> {
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    move || {
        let next = script.lock().unwrap().pop_front().flatten();
        futures::future::ready(next.ok_or_else(|| std::io::Error::other("refused")))
    }
}

#[test]
fn composes_with_the_other_layers_in_any_order() {
    use crate::extension::{Heartbeat, Logging};
    use crate::handshake::SubscribeHandshaker;

    fn assert_stream_sink<T: Send + futures::Stream + futures::Sink<Message>>(_: &T) {}
    let metrics = Metrics::new();
    let url = "ws://127.0.0.1:9/feed";
    let second = Duration::from_secs(1);
    // Outermost: counts user traffic only.
    let connector = ConnectorBuilder::new(move || crate::connect(url))
        .hook(metrics.clone())
        .hook(Logging::new())
        .hook(Heartbeat::new(second, second))
        .layer(SubscribeHandshaker::new(["trades"]))
        .build();
    let stream: ReconnectingStream<_, Message> = ReconnectingStream::new(connector);
    assert_stream_sink(&stream);
    // Inside a handshake and a heartbeat: counts their frames too.
    let connector = ConnectorBuilder::new(move || crate::connect(url))
        .layer(SubscribeHandshaker::new(["trades"]))
        .hook(Heartbeat::new(second, second))
        .hook(Logging::new())
        .hook(metrics.clone())
        .build();
    let stream: ReconnectingStream<_, Message> = ReconnectingStream::new(connector);
    assert_stream_sink(&stream);
    // Nothing connects until polled.
    assert_eq!(metrics.snapshot().attempts, 0);
}

fn closed(code: u16) -> Item {
    Err(ConnectionError::Closed {
        code,
        reason: "bye".into(),
    })
}

#[test]
fn counts_attempts_messages_disconnects_and_uptime() {
    let clock = ManualClock::new();
    let metrics = Metrics::new().with_timer(clock.clone());
    let (conn1, mut peer1) = pipe();
    let (conn2, peer2) = pipe();
    let mut connector = ConnectorBuilder::new(scripted(vec![None, Some(conn1), Some(conn2)]))
        .hook(metrics.clone())
        .build();
    assert_eq!(metrics.snapshot(), MetricsSnapshot::default());

    block_on(async {
        // A refused attempt, then a connection.
        assert!(connector.connect().await.is_err());
        assert_eq!(metrics.uptime(), None);
        let mut conn = connector.connect().await.unwrap();
        assert_eq!(metrics.generation(), 1);
        clock.advance(Duration::from_secs(3));
        assert_eq!(metrics.uptime(), Some(Duration::from_secs(3)));

        // Two out (5 + 3 bytes), three in (2 + 4 + a 0-byte ping).
        conn.send(Message::text("hello")).await.unwrap();
        conn.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(peer1.written.next().await, Some(Message::text("hello")));
        for message in [
            Message::text("hi"),
            Message::binary(vec![0; 4]),
            Message::Ping(Bytes::new()),
        ] {
            peer1.feed.unbounded_send(Ok(message.clone())).unwrap();
            assert_eq!(conn.next().await.unwrap().unwrap(), message);
        }
        let snapshot = metrics.snapshot();
        assert_eq!(
            (
                snapshot.attempts,
                snapshot.connections,
                snapshot.failed_attempts,
                snapshot.open
            ),
            (2, 1, 1, 1)
        );
        assert_eq!((snapshot.messages_out, snapshot.bytes_out), (2, 8));
        assert_eq!((snapshot.messages_in, snapshot.bytes_in), (3, 6));
        assert_eq!(snapshot.disconnects.total(), 0);
        assert_eq!(snapshot.uptime, Some(Duration::from_secs(3)));
        assert!(snapshot.is_connected());

        // A read error ends the first connection: counted once, even when polled again and dropped.
        let bad = ConnectionError::Protocol(tungstenite::Error::Utf8("bad".into()));
        peer1.feed.unbounded_send(Err(bad)).unwrap();
        assert!(conn.next().await.unwrap().is_err());
        assert_eq!(metrics.uptime(), None);
        drop(peer1);
        assert!(conn.next().await.is_none());
        drop(conn);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.disconnects.read_error, 1);
        assert_eq!((snapshot.disconnects.total(), snapshot.open), (1, 0));

        // The second connection ends without a Close frame (`None`).
        let mut conn = connector.connect().await.unwrap();
        assert_eq!(metrics.generation(), 2);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(metrics.uptime(), Some(Duration::from_millis(1500)));
        drop(peer2.feed);
        assert!(conn.next().await.is_none());
        assert!(!metrics.is_connected());
    });

    let snapshot = metrics.snapshot();
    assert_eq!(
        (snapshot.attempts, snapshot.connections, snapshot.failed_attempts),
        (3, 2, 1)
    );
    assert_eq!(
        snapshot.disconnects,
        Disconnects {
            read_error: 1,
            ended: 1,
            ..Disconnects::default()
        }
    );
    assert_eq!((snapshot.open, snapshot.uptime), (0, None));
    assert_eq!((snapshot.messages_in, snapshot.messages_out), (3, 2));
}

#[test]
fn classifies_close_codes_write_errors_local_close_and_drops() {
    let metrics = Metrics::new();
    let mut peers = VecDeque::new();
    let mut conns = Vec::new();
    for _ in 0..8 {
        let (conn, peer) = pipe();
        conns.push(Some(conn));
        peers.push_back(peer);
    }
    let mut connector = ConnectorBuilder::new(scripted(conns)).hook(metrics.clone()).build();
    block_on(async {
        // Close codes in a `ConnectionError`, as a `WsConnection` reports them.
        for code in [1000, 1001, 1011, 4000] {
            let mut conn = connector.connect().await.unwrap();
            peers.pop_front().unwrap().feed.unbounded_send(closed(code)).unwrap();
            assert!(conn.next().await.unwrap().is_err());
        }
        // Lost without a close handshake: 1006.
        let mut conn = connector.connect().await.unwrap();
        let reset = ConnectionError::Protocol(tungstenite::Error::ConnectionClosed);
        peers.pop_front().unwrap().feed.unbounded_send(Err(reset)).unwrap();
        assert!(conn.next().await.unwrap().is_err());

        // A write error, counted once: the peer stopped reading.
        let mut conn = connector.connect().await.unwrap();
        drop(peers.pop_front().unwrap().written);
        assert!(conn.send(Message::text("lost")).await.is_err());
        assert!(conn.send(Message::text("lost")).await.is_err());

        // Closed from this side.
        let mut conn = connector.connect().await.unwrap();
        conn.close().await.unwrap();
        drop(conn);

        // Dropped while up.
        let conn = connector.connect().await.unwrap();
        assert!(metrics.is_connected());
        drop(conn);
        assert!(!metrics.is_connected());
    });
    let snapshot = metrics.snapshot();
    assert_eq!(
        snapshot.disconnects,
        Disconnects {
            normal: 1,
            going_away: 1,
            abnormal: 1,
            other_close: 2,
            write_error: 1,
            closed: 1,
            dropped: 1,
            ..Disconnects::default()
        }
    );
    assert_eq!(snapshot.disconnects.server_closed(), 4);
    assert_eq!((snapshot.connections, snapshot.open, snapshot.messages_out), (8, 0, 0));
}

#[test]
fn close_frame_then_end_and_boxed_errors_are_classified() {
    // A bare tungstenite-style stream: the Close frame is an item, then the stream ends.
    let frame = tungstenite::protocol::CloseFrame {
        code: 1001.into(),
        reason: "restart".into(),
    };
    let close = Message::Close(Some(frame));
    assert_eq!(close.close_code(), Some(1001));
    assert_eq!(Reason::of_close_code(1005), Reason::OtherClose);

    // Close codes come from what the error diagnosed, whatever wraps it.
    let closed = ConnectionError::Closed {
        code: 1000,
        reason: String::new(),
    };
    assert_eq!(Reason::of_end(&End::ReadFailed(&closed), None), Reason::Normal);
    let reset = tungstenite::Error::ConnectionClosed;
    assert_eq!(Reason::of_end(&End::ReadFailed(&reset), None), Reason::Abnormal);
    let utf8 = ConnectionError::Protocol(tungstenite::Error::Utf8("bad".into()));
    assert_eq!(Reason::of_end(&End::ReadFailed(&utf8), None), Reason::ReadError);
    let other = std::io::Error::other("x");
    assert_eq!(Reason::of_end(&End::ReadFailed(&other), None), Reason::ReadError);

    let metrics = Metrics::new();
    let (feed, read) = mpsc::unbounded::<Result<Message, std::io::Error>>();
    let (write, _written) = mpsc::unbounded::<Message>();
    let mut conn = Some(join(read, write));
    let mut connector =
        ConnectorBuilder::new(move || futures::future::ready(conn.take().ok_or_else(|| std::io::Error::other("once"))))
            .hook(metrics.clone())
            .build();
    block_on(async {
        let mut conn = connector.connect().await.unwrap();
        feed.unbounded_send(Ok(close.clone())).unwrap();
        drop(feed);
        assert_eq!(conn.next().await.unwrap().unwrap(), close);
        assert!(conn.next().await.is_none());
    });
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.disconnects.going_away, 1);
    assert_eq!((snapshot.messages_in, snapshot.bytes_in), (1, 7));
}

#[test]
fn an_abandoned_attempt_counts_as_failed() {
    let metrics = Metrics::new();
    let mut connector = ConnectorBuilder::new(futures::future::pending::<Result<Conn, std::io::Error>>)
        .hook(metrics.clone())
        .build();
    let attempt = connector.connect();
    assert_eq!(metrics.snapshot().attempts, 1);
    assert_eq!(metrics.snapshot().failed_attempts, 0);
    drop(attempt);
    assert_eq!(metrics.snapshot().failed_attempts, 1);
}

#[test]
fn matches_the_reconnecting_stream() {
    let metrics = Metrics::new();
    let (conn1, peer1) = pipe();
    let (conn2, mut peer2) = pipe();
    let connector = ConnectorBuilder::new(scripted(vec![Some(conn1), None, Some(conn2)]))
        .hook(metrics.clone())
        .build();
    let mut stream = ReconnectingStream::new(connector).with_retry(Immediate::new());
    block_on(async {
        peer1.feed.unbounded_send(Ok(Message::text("one"))).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), Message::text("one"));
        peer1.feed.unbounded_send(closed(1001)).unwrap();
        peer2.feed.unbounded_send(Ok(Message::text("two"))).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), Message::text("two"));
        stream.send(Message::text("out")).await.unwrap();
        assert_eq!(peer2.written.next().await, Some(Message::text("out")));
        assert_eq!(stream.generation(), metrics.generation());
        assert!(metrics.uptime().is_some());
    });
    let snapshot = metrics.snapshot();
    assert_eq!(
        (snapshot.attempts, snapshot.connections, snapshot.failed_attempts),
        (3, 2, 1)
    );
    assert_eq!(snapshot.disconnects.going_away, 1);
    assert_eq!(
        (snapshot.messages_in, snapshot.messages_out, snapshot.bytes_in),
        (2, 1, 6)
    );
    drop(stream);
    let snapshot = metrics.snapshot();
    assert_eq!(
        (snapshot.disconnects.dropped, snapshot.open, snapshot.uptime),
        (1, 0, None)
    );
}
