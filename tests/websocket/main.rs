//! WebSocket transport against loopback servers written here: connect, failure classes (as `ws::diagnose` states them),
//! close frames, pings, the close handshake, TLS with a custom root, and the connector builder. Echo and
//! drop scenarios run under tokio, async-std and smol.

#[path = "../support/mod.rs"]
mod support;

mod config_errors;
mod make_before_break;
mod redundant;
mod retry_after;
mod rotation;
mod server_end;
mod upgrade;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use async_tungstenite::tungstenite::Message as ServerMessage;
use futures::{SinkExt, Stream, StreamExt};
use stream_tungstenite::retry::{ExponentialBackoff, Jitter, NoRetry};
use stream_tungstenite::time::ManualClock;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::ws::{ConnectError, ConnectionError, WsConnector};
use stream_tungstenite::{connect, Error, Event, Failure, ReconnectingStream};
use support::{lockstep, server, Recorder};

// ---- Echo and drop on each runtime --------------------------------------------------------------------------

async fn echo_scenario() {
    let server = server::echo_server(None);
    let url = server.url();
    let mut ws = ReconnectingStream::new(move || connect(url.clone()));
    for n in 0..100 {
        ws.send(Message::text(format!("echo {n}"))).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply, Message::text(format!("echo {n}")));
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(vec![1u8, 2, 3]));
    assert_eq!(ws.generation(), 1);
    ws.close().await.unwrap();
    assert!(ws.next().await.is_none());
}

/// The server drops TCP after every 10 echoes; the client sends 100 numbers in lockstep and sends a number
/// again when the generation changes while it waits (delivery is guaranteed to a flushed connection, not end
/// to end: a number flushed into a socket the server then drops may die in the kernel).
async fn drop_scenario() {
    let server = server::echo_server(Some(10));
    let url = server.url();
    let (observer, mut connected) = lockstep::connected_channel();
    let mut ws = ReconnectingStream::new(move || connect(url.clone()))
        .with_retry(ExponentialBackoff::new(
            Duration::from_millis(2),
            Duration::from_millis(20),
        ))
        .with_observer(observer);
    let exchange = lockstep::echo_numbers(&mut ws, |w| w.generation(), &mut connected, 100, "websocket").await;
    assert_eq!(exchange.echoed, (0..100).collect::<Vec<_>>());
    assert!(ws.generation() >= 10, "generation {}", ws.generation());
    assert_eq!(server.accepted(), ws.generation() as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_on_tokio() {
    support::within(support::LIMIT, echo_scenario())
        .await
        .expect("the echo scenario");
}

#[async_std::test]
async fn echo_on_async_std() {
    support::within(support::LIMIT, echo_scenario())
        .await
        .expect("the echo scenario");
}

#[test]
fn echo_on_smol() {
    support::block_on(echo_scenario());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_on_tokio() {
    support::within(support::LIMIT, drop_scenario())
        .await
        .expect("the drop scenario");
}

#[async_std::test]
async fn drop_on_async_std() {
    support::within(support::LIMIT, drop_scenario())
        .await
        .expect("the drop scenario");
}

#[test]
fn drop_on_smol() {
    support::block_on(drop_scenario());
}

/// The stream and the sink of one connection on two tasks of a multi-threaded runtime, with enough data in
/// flight (200 messages of 64 KiB) that writes block on a full socket while the other task reads: each side
/// must be woken when the socket is ready for it, whichever task polled last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_connection_reads_and_writes_on_two_tasks() {
    let server = server::echo_server(None);
    let connection = connect(server.url()).await.unwrap();
    let (mut sink, mut stream) = connection.split();
    const COUNT: usize = 200;
    let payload = |n: usize| vec![(n % 251) as u8; 64 * 1024];
    let writer = tokio::spawn(async move {
        for n in 0..COUNT {
            sink.feed(Message::binary(payload(n))).await.unwrap();
        }
        sink.flush().await.unwrap();
        sink
    });
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < COUNT {
            match stream.next().await {
                Some(Ok(Message::Binary(data))) => {
                    assert_eq!(data, payload(seen), "message {seen}");
                    seen += 1;
                }
                other => panic!("message {seen}: {other:?}"),
            }
        }
        seen
    });
    let both = async { (writer.await.unwrap(), reader.await.unwrap()) };
    let (_sink, seen) = tokio::time::timeout(Duration::from_secs(30), both)
        .await
        .expect("a side was never woken");
    assert_eq!(seen, COUNT);
}

/// A connection can be moved to and shared between threads, whatever byte stream it runs on.
#[test]
fn a_connection_is_send_and_sync() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<stream_tungstenite::ws::WsConnection>();
}

/// `WsConnection::from_raw_socket` over a byte stream this crate does not dial (one end of a Unix socket
/// pair, whose other end is an async-tungstenite server): messages go both ways, and the server's Close ends
/// the stream with its code.
#[cfg(unix)]
#[test]
fn a_connection_over_a_stream_of_your_own() {
    use async_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig};
    use stream_tungstenite::ws::WsConnection;
    support::block_on(async {
        let (client, server) = std::os::unix::net::UnixStream::pair().unwrap();
        let client = async_io::Async::new(client).unwrap();
        let server = async_io::Async::new(server).unwrap();
        let mut server = async_tungstenite::WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        let mut connection = WsConnection::from_raw_socket(client, WebSocketConfig::default());
        assert!(connection.tcp_stream().is_none());

        connection.send(Message::text("ping?")).await.unwrap();
        assert_eq!(server.next().await.unwrap().unwrap(), ServerMessage::text("ping?"));
        server.send(ServerMessage::binary(vec![7u8; 3])).await.unwrap();
        assert_eq!(connection.next().await.unwrap().unwrap(), Message::binary(vec![7u8; 3]));

        let frame = CloseFrame {
            code: CloseCode::Restart,
            reason: "bye".into(),
        };
        server.send(ServerMessage::Close(Some(frame))).await.unwrap();
        match connection.next().await {
            Some(Err(ConnectionError::Closed { code: 1012, reason })) => assert_eq!(reason, "bye"),
            other => panic!("expected the close, got {other:?}"),
        }
        assert!(connection.next().await.is_none());
    });
}

// ---- Failure classes ----------------------------------------------------------------------------------------

fn fatal_connect_error(error: Error) -> u16 {
    let Error::Fatal { cause, .. } = &error else {
        panic!("expected a fatal error, got {error:?}");
    };
    let connect_error = cause.downcast_ref::<ConnectError>().expect("a ConnectError");
    assert!(!connect_error.is_retryable());
    connect_error.status().unwrap_or(0)
}

#[test]
fn upgrade_rejected_with_401_403_404_is_fatal_at_once() {
    for (status, reason) in [
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (400, "Bad Request"),
    ] {
        let server = server::rejecting_server(status, reason, "");
        let url = server.url();
        let mut ws = ReconnectingStream::new(move || connect(url.clone()));
        let error = support::block_on(ws.next()).unwrap().unwrap_err();
        assert_eq!(fatal_connect_error(error), status);
        assert!(support::block_on(ws.next()).is_none());
        assert_eq!(server.accepted(), 1, "HTTP {status} must not be retried");
    }
}

/// Runs the stream until its first retry is scheduled, with a manual clock so nothing waits.
fn first_delay(server: &server::Server) -> (Duration, Failure) {
    let url = server.url();
    let clock = ManualClock::new();
    let log = Recorder::new();
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(move || connect(url.clone()))
        .with_timer(clock)
        .with_observer(log.observer())
        .with_retry(
            ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(10)).with_jitter(Jitter::None),
        );
    support::block_on(futures::future::poll_fn(|cx| {
        let _ = Pin::new(&mut ws).poll_next(cx);
        if log.delays().is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }));
    let failure = log.first_connect_failure().unwrap();
    (log.delays()[0], failure)
}

#[test]
fn rejected_with_503_and_retry_after_waits_at_least_that_long() {
    let server = server::rejecting_server(503, "Service Unavailable", "Retry-After: 1\r\n");
    let (delay, failure) = first_delay(&server);
    assert_eq!(
        delay,
        Duration::from_secs(1),
        "policy says 100 ms, Retry-After says 1 s"
    );
    let error = failure.downcast_ref::<ConnectError>().unwrap();
    assert_eq!(error.status(), Some(503));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
    assert!(error.is_retryable());
}

#[test]
fn rejected_with_500_is_retried_with_backoff() {
    let server = server::rejecting_server(500, "Internal Server Error", "");
    let (delay, failure) = first_delay(&server);
    assert_eq!(delay, Duration::from_millis(100));
    assert_eq!(failure.downcast_ref::<ConnectError>().unwrap().status(), Some(500));
}

#[test]
fn a_refused_tcp_connection_is_retried() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = server::Server {
        addr: ([127, 0, 0, 1], port).into(),
        accepted: Arc::default(),
        log: Arc::default(),
    };
    let (delay, failure) = first_delay(&server);
    assert_eq!(delay, Duration::from_millis(100));
    assert!(matches!(
        failure.downcast_ref::<ConnectError>(),
        Some(ConnectError::Tcp { .. })
    ));
}

#[test]
fn an_invalid_url_is_fatal() {
    for url in ["http://127.0.0.1:1/", "not a url", "ws:///nohost"] {
        let mut ws = ReconnectingStream::new(move || connect(url));
        let error = support::block_on(ws.next()).unwrap().unwrap_err();
        assert!(error.is_fatal(), "{url}: {error:?}");
        let cause = error.failure().unwrap().downcast_ref::<ConnectError>().unwrap();
        assert!(matches!(cause, ConnectError::InvalidUrl { .. }), "{url}: {cause:?}");
    }
}

// ---- Close frames -------------------------------------------------------------------------------------------

#[test]
fn a_server_close_with_1012_is_an_event_with_its_code_and_reconnects() {
    let server = server::closing_server(1012, false);
    let url = server.url();
    let clock = ManualClock::new();
    let log = Recorder::new();
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(move || connect(url.clone()))
        .with_timer(clock.clone())
        .with_observer(log.observer())
        .with_retry(
            ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(Jitter::None),
        );
    support::block_on(futures::future::poll_fn(|cx| {
        let _ = Pin::new(&mut ws).poll_next(cx);
        if server.accepted() >= 2 && ws.generation() >= 2 {
            return Poll::Ready(());
        }
        if clock.next_deadline().is_some() {
            clock.advance(Duration::from_secs(1));
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }));
    let events = log.events();
    let reason = events
        .iter()
        .find_map(|e| match e {
            Event::Disconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(reason.close_code(), Some(1012));
    assert!(matches!(
        reason.downcast_ref::<ConnectionError>(),
        Some(ConnectionError::Closed { code: 1012, reason }) if reason == "restart"
    ));
}

#[test]
fn a_server_close_with_1008_policy_violation_is_fatal() {
    let server = server::closing_server(1008, false);
    let url = server.url();
    let mut ws = ReconnectingStream::new(move || connect(url.clone()));
    let error = support::block_on(ws.next()).unwrap().unwrap_err();
    assert!(error.is_fatal());
    assert_eq!(error.failure().unwrap().close_code(), Some(1008));
    assert_eq!(server.accepted(), 1);
}

#[test]
fn a_dropped_tcp_connection_reports_close_code_1006() {
    let server = server::echo_server(Some(1));
    let url = server.url();
    let log = Recorder::new();
    let mut ws = ReconnectingStream::new(move || connect(url.clone()))
        .with_observer(log.observer())
        .with_retry(NoRetry);
    support::block_on(async {
        ws.send(Message::text("x")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("x"));
        assert!(ws.next().await.unwrap().is_err(), "NoRetry: the drop ends the stream");
    });
    let code = log.events().iter().find_map(|e| match e {
        Event::Disconnected { reason, .. } => reason.close_code(),
        _ => None,
    });
    assert_eq!(code, Some(1006));
}

// ---- Pings and the close handshake --------------------------------------------------------------------------

#[test]
fn server_pings_are_answered_while_the_client_only_reads() {
    let server = server::serve(|tcp, _, log| async move {
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        ws.send(ServerMessage::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if let ServerMessage::Pong(payload) = message {
                log.lock()
                    .unwrap()
                    .push(format!("pong {}", String::from_utf8_lossy(&payload)));
                ws.send(ServerMessage::text("got pong")).await.unwrap();
            }
        }
    });
    let url = server.url();
    let mut ws = ReconnectingStream::new(move || connect(url.clone()));
    support::block_on(async {
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(text) if text == "got pong" => break,
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    assert_eq!(server.log(), ["pong are you there"]);
}

/// The heartbeat's pings (every 50 ms here) are answered and their Pongs are no items; the application's own
/// Ping gets its Pong as an item, payload and all.
#[test]
fn the_heartbeats_pongs_are_no_items_but_the_applications_are() {
    let server = server::echo_server(None);
    let connector = WsConnector::builder(server.url())
        .with_heartbeat(Duration::from_millis(50), Duration::from_secs(5))
        .build();
    let mut ws = ReconnectingStream::new(connector);
    support::block_on(async {
        ws.send(Message::text("up")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("up"));
        // Several heartbeat pings go out and are answered while the stream is read: nothing comes.
        assert!(support::within(Duration::from_millis(300), ws.next()).await.is_err());
        ws.send(Message::Ping(b"mine".to_vec().into())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Pong(b"mine".to_vec().into())
        );
    });
    assert_eq!(ws.generation(), 1);
}

#[test]
fn close_performs_the_websocket_close_handshake() {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Vec<String>>();
    let done_tx = Mutex::new(done_tx);
    let server = server::serve(move |tcp, _, _| {
        let done = done_tx.lock().unwrap().clone();
        async move {
            let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
                return;
            };
            let mut seen = Vec::new();
            while let Some(Ok(message)) = ws.next().await {
                match message {
                    ServerMessage::Close(_) => seen.push("close".to_owned()),
                    other => seen.push(format!("message {}", other.to_text().unwrap_or(""))),
                }
            }
            let _ = done.send(seen);
        }
    });
    let url = server.url();
    // A manual clock never advanced: close can only finish through the server's reply, not the timeout.
    let mut ws = ReconnectingStream::new(move || connect(url.clone())).with_timer(ManualClock::new());
    support::block_on(async {
        ws.send(Message::text("bye")).await.unwrap();
        ws.close().await.unwrap();
        assert!(ws.next().await.is_none());
    });
    // The server saw the message, then our Close, then the end of the connection.
    let seen = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(seen, ["message bye", "close"]);
}

// ---- TLS ----------------------------------------------------------------------------------------------------

#[test]
fn wss_with_a_self_signed_certificate_trusted_through_a_custom_root() {
    let (server, cert) = server::tls_echo_server();
    let url = format!("wss://localhost:{}/", server.addr.port());
    let connector = WsConnector::builder(url).with_root_certificate(cert).build();
    let mut ws = ReconnectingStream::new(connector);
    support::block_on(async {
        ws.send(Message::text("over tls")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over tls"));
    });
}

#[test]
fn wss_with_an_untrusted_certificate_is_fatal_at_once() {
    let (server, _) = server::tls_echo_server();
    let url = format!("wss://localhost:{}/", server.addr.port());
    let mut ws = ReconnectingStream::new(move || connect(url.clone()));
    let error = support::block_on(ws.next()).unwrap().unwrap_err();
    assert!(error.is_fatal(), "{error:?}");
    let cause = error.failure().unwrap().downcast_ref::<ConnectError>().unwrap();
    assert!(cause.is_certificate_error(), "{cause:?}");
    assert_eq!(server.accepted(), 1, "a certificate error is not retried");
}

// ---- The connector builder ----------------------------------------------------------------------------------

#[test]
fn the_header_provider_is_called_per_attempt_and_its_token_used_on_the_next_dial() {
    let server = server::serve(|tcp, index, log| async move {
        let Some(mut ws) = server::accept_logging_headers(tcp, &log).await else {
            return;
        };
        // Greet, and drop the first connection at once: forces a reconnect.
        let _ = ws.send(ServerMessage::text(format!("hello {index}"))).await;
        if index > 0 {
            while let Some(Ok(_)) = ws.next().await {}
        }
    });
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tokens = Arc::clone(&counter);
    let connector = WsConnector::builder(server.url())
        .with_header("x-static", "yes")
        .with_header_provider(move || {
            let n = tokens.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut headers = stream_tungstenite::tungstenite::http::HeaderMap::new();
            headers.insert("authorization", format!("Bearer token-{n}").parse().unwrap());
            headers
        })
        .with_subprotocol("feed.v2")
        .build();
    assert!(
        !format!("{connector:?}").contains("Bearer"),
        "Debug must not show credentials"
    );
    let mut ws = ReconnectingStream::new(connector).with_retry(ExponentialBackoff::new(
        Duration::from_millis(1),
        Duration::from_millis(5),
    ));
    support::block_on(async {
        for n in 0..2u64 {
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(format!("hello {n}")));
            assert_eq!(ws.generation(), n + 1);
        }
    });
    let log = server.log();
    let auth: Vec<&String> = log.iter().filter(|l| l.starts_with("header authorization")).collect();
    assert_eq!(auth.len(), 2, "{log:?}");
    assert_eq!(auth[0], "header authorization: Bearer token-0");
    assert_eq!(auth[1], "header authorization: Bearer token-1");
    assert_eq!(log.iter().filter(|l| *l == "header x-static: yes").count(), 2);
    assert!(log.contains(&"header sec-websocket-protocol: feed.v2".to_owned()));
}

#[test]
fn endpoints_are_rotated_on_failure() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ws://{}/", listener.local_addr().unwrap())
    };
    let server = server::echo_server(None);
    let connector = WsConnector::builder(dead).with_endpoint(server.url()).build();
    let log = Recorder::new();
    let mut ws = ReconnectingStream::new(connector)
        .with_observer(log.observer())
        .with_retry(ExponentialBackoff::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
        ));
    support::block_on(async {
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    });
    let failures = log.count(|e| matches!(e, Event::ConnectFailed { .. }));
    assert_eq!(failures, 1, "the dead endpoint once, then the live one");
}

#[test]
fn the_negotiated_subprotocol_is_readable() {
    let server = server::serve(|tcp, _, log| async move {
        let Some(mut ws) = server::accept_logging_headers(tcp, &log).await else {
            return;
        };
        while let Some(Ok(_)) = ws.next().await {}
    });
    let connector = WsConnector::builder(server.url())
        .with_subprotocol("a.v1")
        .with_subprotocol("b.v1")
        .build();
    let mut connector2 = connector.clone();
    let connection = support::block_on(stream_tungstenite::Connect::connect(&mut connector2)).unwrap();
    assert_eq!(connection.protocol(), Some("a.v1"));
}

#[test]
fn a_url_provider_is_asked_on_every_attempt() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ws://{}/", listener.local_addr().unwrap())
    };
    let server = server::echo_server(None);
    let live = server.url();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    // The first attempt goes to a dead address, every later one to the live server.
    let connector = WsConnector::builder_with_url_provider(move || {
        match counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => dead.clone(),
            _ => live.clone(),
        }
    })
    .build();
    let mut ws = ReconnectingStream::new(connector).with_retry(ExponentialBackoff::new(
        Duration::from_millis(1),
        Duration::from_millis(5),
    ));
    support::block_on(async {
        ws.send(Message::text("via provider")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("via provider"));
    });
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(server.accepted(), 1);
}

#[test]
fn tcp_nodelay_is_on_and_keepalive_is_set_when_asked() {
    let server = server::echo_server(None);
    let mut plain = WsConnector::new(server.url());
    let mut keepalive = WsConnector::builder(server.url())
        .with_tcp_keepalive(Duration::from_secs(30))
        .build();
    let options = |connector: &mut WsConnector| {
        let connection = support::block_on(stream_tungstenite::Connect::connect(connector)).unwrap();
        let socket = socket2::SockRef::from(connection.tcp_stream().expect("a TCP connection"));
        (socket.tcp_nodelay().unwrap(), socket.keepalive().unwrap())
    };
    assert_eq!(options(&mut plain), (true, false));
    assert_eq!(options(&mut keepalive), (true, true));
}
