//! Handshake layers and hooks over loopback WebSocket servers: order and re-runs across reconnects, fatal
//! rejections, per-attempt tokens, confirmation timeouts with backoff, heartbeat detection of a stalled peer,
//! message filters in both directions, and the order of hooks, pinned alike for the connector builder and the
//! client.

#[path = "../support/mod.rs"]
mod support;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::{SinkExt, Stream, StreamExt};
use stream_tungstenite::extension::{Filter, Heartbeat, LivenessTimeout};
use stream_tungstenite::handshake::{AuthHandshaker, HandshakeError, HandshakeLayer, SubscribeHandshaker};
use stream_tungstenite::hook::Verdict;
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::{ExponentialBackoff, Jitter};
use stream_tungstenite::time::ManualClock;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::{chain_handshakers, connect, Event, ReconnectingStream};
use support::feed::{feed_server, is_type, Feed};
use support::log_buffer::LogBuffer;
use support::{server, Recorder};

fn auth(token: &'static str) -> AuthHandshaker {
    AuthHandshaker::token(token)
        .with_timeout(None)
        .json()
        .with_accept(|m| is_type(m, "auth_ok"))
        .with_reject(|m| is_type(m, "auth_failed"))
}

fn subscribe() -> SubscribeHandshaker {
    SubscribeHandshaker::new(["trades", "book"]).with_confirm(|m| is_type(m, "subscribed"))
}

fn fast_retry() -> ExponentialBackoff {
    ExponentialBackoff::new(Duration::from_millis(1), Duration::from_millis(10))
}

#[test]
fn handshakes_run_in_order_on_every_connection_before_user_traffic() {
    let server = feed_server(Feed {
        drop_after_echo: vec![0],
        ..Feed::default()
    });
    let url = server.url();
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .layer(chain_handshakers!(auth("good"), subscribe()))
        .build();
    let events = Recorder::new();
    let mut ws = ReconnectingStream::new(connector)
        .with_retry(fast_retry())
        .with_observer(events.observer());
    let received: Vec<String> = support::block_on(async {
        // Queued before anything connects: must go out after the handshakes.
        ws.send(Message::text(r#"{"type":"hello"}"#)).await.unwrap();
        let mut received: Vec<String> = Vec::new();
        while received.iter().filter(|m| m.contains("update")).count() < 6 {
            let message = ws.next().await.unwrap().unwrap();
            received.push(message.to_text().unwrap().to_owned());
        }
        received
    });
    // Connection 0: 3 updates, then the hello is echoed and the connection dropped (the echo may die with
    // it); connection 1: 3 updates. Handshake frames (auth_ok, subscribed) are never delivered.
    assert!(
        received
            .iter()
            .all(|m| !m.contains("auth_ok") && !m.contains("subscribed")),
        "{received:?}"
    );
    let updates = |conn: u64| {
        received
            .iter()
            .filter(|m| m.contains(&format!(r#""conn":{conn}"#)))
            .count()
    };
    assert_eq!((updates(0), updates(1)), (3, 3), "{received:?}");
    let log = server.log();
    for conn in 0..2 {
        let sent: Vec<&String> = log
            .iter()
            .filter(|l| l.starts_with(&format!("conn {conn}: ")))
            .collect();
        assert!(sent[0].contains(r#""type":"auth""#), "{sent:?}");
        assert!(sent[1].contains(r#""channel":"trades""#), "{sent:?}");
        assert!(sent[2].contains(r#""channel":"book""#), "{sent:?}");
    }
    assert!(
        log[3].ends_with(r#"{"type":"hello"}"#),
        "user traffic after the handshakes: {log:?}"
    );
    // Connected is reported only after the handshakes.
    let connected = events
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count();
    assert_eq!(connected, 2);
}

#[test]
fn a_rejected_auth_is_fatal_without_a_retry_loop() {
    let server = feed_server(Feed::default());
    let url = server.url();
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .layer(auth("bad"))
        .build();
    let events = Recorder::new();
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector)
        .with_retry(fast_retry())
        .with_observer(events.observer());
    let error = support::block_on(ws.next()).unwrap().unwrap_err();
    assert!(error.is_fatal(), "{error:?}");
    assert!(matches!(
        error.failure().unwrap().downcast_ref::<HandshakeError>(),
        Some(HandshakeError::Rejected { .. })
    ));
    assert!(support::block_on(ws.next()).is_none());
    assert_eq!(server.accepted(), 1);
    let events = events.events();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::HandshakeFailed { attempt: 1, .. })));
    assert!(!events.iter().any(|e| matches!(e, Event::RetryScheduled { .. })));
}

#[test]
fn the_token_provider_is_called_per_attempt_and_the_new_token_used_after_a_reconnect() {
    let server = feed_server(Feed {
        drop_connections: vec![0],
        updates: 1,
        ..Feed::default()
    });
    let url = server.url();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let auth = AuthHandshaker::new(move || format!("token-{}", counter.fetch_add(1, Ordering::SeqCst)))
        .json()
        .with_accept(|m| is_type(m, "auth_ok"));
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .layer(chain_handshakers!(auth, subscribe()))
        .build();
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector).with_retry(fast_retry());
    support::block_on(async {
        for _ in 0..2 {
            assert!(is_type(&ws.next().await.unwrap().unwrap(), "update"));
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let log = server.log();
    assert!(
        log.contains(&r#"conn 0: {"token":"token-0","type":"auth"}"#.to_owned()),
        "{log:?}"
    );
    assert!(
        log.contains(&r#"conn 1: {"token":"token-1","type":"auth"}"#.to_owned()),
        "{log:?}"
    );
}

/// Polls the stream; whenever it is pending with a sleep due on `clock`, moves the clock to that sleep.
/// Stops once `done` says so. Bounded: it panics after 10,000 moves of the clock or [`support::LIMIT`] of real
/// time, whichever comes first, instead of spinning on a regression.
fn drive_with_clock<S: Stream + Unpin>(ws: &mut S, clock: &ManualClock, mut done: impl FnMut() -> bool) {
    let mut moves = 0;
    support::block_on(futures::future::poll_fn(|cx| loop {
        if done() {
            return Poll::Ready(());
        }
        match Pin::new(&mut *ws).poll_next(cx) {
            Poll::Ready(Some(_)) => continue,
            Poll::Ready(None) => return Poll::Ready(()),
            Poll::Pending => match clock.next_deadline() {
                Some(due) => {
                    moves += 1;
                    assert!(moves <= 10_000, "not done after {moves} moves of the clock");
                    clock.advance(due);
                }
                None => return Poll::Pending,
            },
        }
    }));
}

#[test]
fn a_subscribe_confirmation_timeout_retries_with_backoff() {
    let server = feed_server(Feed {
        confirm: false,
        ..Feed::default()
    });
    let url = server.url();
    let clock = ManualClock::new();
    let subscribe = SubscribeHandshaker::new(["trades", "book"])
        .with_confirm(|m| is_type(m, "subscribed"))
        .with_timeout(Duration::from_secs(5));
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .layer(HandshakeLayer::new(chain_handshakers!(auth("good"), subscribe)).with_timer(clock.clone()))
        .build();
    let events = Recorder::new();
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector)
        .with_timer(clock.clone())
        .with_connect_timeout(None)
        .with_retry(
            ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(10)).with_jitter(Jitter::None),
        )
        .with_observer(events.observer());
    let log = events.clone();
    drive_with_clock(&mut ws, &clock, || {
        log.events()
            .iter()
            .filter(|e| matches!(e, Event::RetryScheduled { .. }))
            .count()
            >= 3
    });
    let events = events.events();
    let timeouts = events
        .iter()
        .filter(|e| match e {
            Event::HandshakeFailed { failure, .. } => matches!(
                failure.downcast_ref::<HandshakeError>(),
                Some(HandshakeError::Timeout { step, .. }) if step == "subscribe"
            ),
            _ => false,
        })
        .count();
    assert_eq!(timeouts, 3);
    let delays: Vec<Duration> = events
        .iter()
        .filter_map(|e| match e {
            Event::RetryScheduled { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [100, 200, 400].map(Duration::from_millis));
    assert_eq!(ws.generation(), 0, "never connected: the handshake never finished");
    assert_eq!(server.accepted(), 3);
}

#[test]
fn heartbeat_detects_a_stalled_peer_within_interval_plus_timeout_and_reconnects() {
    // The first connection's server stops reading (so never answers pings) but keeps TCP open.
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let hold_rx = Arc::new(Mutex::new(hold_rx));
    let server = server::serve(move |tcp, index, _| {
        let hold = Arc::clone(&hold_rx);
        async move {
            let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
                return;
            };
            ws.send(Message::text(format!("hello {index}"))).await.unwrap();
            if index == 0 {
                // Stall: hold the socket open without reading until the test ends.
                let _ = hold.lock().unwrap().recv();
                return;
            }
            while let Some(Ok(_)) = ws.next().await {}
        }
    });
    let url = server.url();
    let clock = ManualClock::new();
    let interval = Duration::from_secs(10);
    let timeout = Duration::from_secs(5);
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .hook(Heartbeat::new(interval, timeout).with_timer(clock.clone()))
        .build();
    let events = Recorder::new();
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector)
        .with_timer(clock.clone())
        .with_connect_timeout(None)
        .with_retry(
            ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(Jitter::None),
        )
        .with_observer(events.observer());
    support::block_on(async {
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello 0"));
    });
    let start = std::time::Instant::now();
    let _ = start;
    let mut seen = Vec::new();
    drive_with_clock(&mut ws, &clock, || {
        seen = events.events().clone();
        seen.iter().filter(|e| matches!(e, Event::Connected { .. })).count() >= 2
    });
    drop(hold_tx);
    let (uptime, reason) = seen
        .iter()
        .find_map(|e| match e {
            Event::Disconnected { uptime, reason, .. } => Some((*uptime, reason.clone())),
            _ => None,
        })
        .unwrap();
    assert!(reason.downcast_ref::<LivenessTimeout>().is_some(), "{reason:?}");
    assert!(uptime <= interval + timeout, "detected after {uptime:?}");
    assert!(uptime >= timeout, "not before a ping went unanswered: {uptime:?}");
    assert_eq!(ws.generation(), 2);
}

#[test]
fn heartbeat_keeps_a_responsive_connection() {
    let server = server::echo_server(None);
    let url = server.url();
    let clock = ManualClock::new();
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .hook(Heartbeat::new(Duration::from_secs(10), Duration::from_secs(5)).with_timer(clock.clone()))
        .build();
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector)
        .with_timer(clock.clone())
        .with_connect_timeout(None);
    support::block_on(async {
        ws.send(Message::text("up")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("up"));
        for n in 0..5 {
            clock.advance(Duration::from_secs(10));
            // The ping goes out on this read; its pong is taken out of the stream: nothing comes.
            assert!(
                support::within(Duration::from_millis(100), ws.next()).await.is_err(),
                "nothing comes"
            );
            // A text sent after the ping: its echo is the next item (the pong, answered first, is no item).
            ws.send(Message::text(format!("after ping {n}"))).await.unwrap();
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text(format!("after ping {n}"))
            );
        }
        // A ping, then its timeout passes with only its pong coming back: the pong kept the connection alive.
        clock.advance(Duration::from_secs(10));
        assert!(
            support::within(Duration::from_millis(100), ws.next()).await.is_err(),
            "nothing comes"
        );
        clock.advance(Duration::from_secs(6));
        assert!(
            support::within(Duration::from_millis(100), ws.next()).await.is_err(),
            "nothing comes"
        );
    });
    assert_eq!(ws.generation(), 1);
}

#[test]
fn extensions_transform_and_drop_messages_in_both_directions() {
    let server = server::echo_server(None);
    let url = server.url();
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .hook(Filter::outbound(|m: &mut Message| match m.to_text() {
            Ok("secret") => Verdict::Drop,
            Ok(text) => {
                *m = Message::text(format!("out:{text}"));
                Verdict::Pass
            }
            Err(_) => Verdict::Pass,
        }))
        .hook(Filter::inbound(|m: &mut Message| match m.to_text() {
            Ok(text) if text.contains("skip") => Verdict::Drop,
            Ok(text) => {
                *m = Message::text(format!("{text}:in"));
                Verdict::Pass
            }
            Err(_) => Verdict::Pass,
        }))
        .build();
    let mut ws = ReconnectingStream::new(connector);
    support::block_on(async {
        ws.send(Message::text("secret")).await.unwrap();
        ws.send(Message::text("skip")).await.unwrap();
        ws.send(Message::text("a")).await.unwrap();
        // "secret" never left; "out:skip" came back and was dropped inbound; "out:a" came back transformed.
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("out:a:in"));
    });
}

#[test]
fn logging_never_shows_the_token_even_when_it_sees_the_auth_frames() {
    use stream_tungstenite::extension::Logging;
    const TOKEN: &str = "s3cr3t-t0ken-value";
    let server = feed_server(Feed {
        updates: 2,
        ..Feed::default()
    });
    let url = server.url();
    let capture = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        // The logging hook sits inside the handshakes: it sees the auth frame with the token in it.
        let connector = ConnectorBuilder::new(move || connect(url.clone()))
            .layer(chain_handshakers!(auth(TOKEN), subscribe()))
            .hook(Logging::new())
            .build();
        let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector);
        support::block_on(async {
            for _ in 0..2 {
                assert!(is_type(&ws.next().await.unwrap().unwrap(), "update"));
            }
        });
    });
    let output = capture.text();
    assert!(output.contains("auth"), "the auth frame was logged: {output}");
    assert!(output.contains("update"), "{output}");
    assert!(!output.contains(TOKEN), "the token leaked into the log:\n{output}");
    assert!(
        server.log().iter().any(|l| l.contains(TOKEN)),
        "the server did get the token"
    );
}

/// A server's close code reaches the stream through every hook: 1008 (policy violation) ends the stream as
/// fatal with that code at once, as it does without layers, instead of being lost and retried as a plain end.
#[test]
fn a_server_close_code_passes_through_every_hook() {
    use stream_tungstenite::extension::{Logging, Metrics};
    macro_rules! check {
        ($name:literal, $layer:expr) => {{
            let server = server::closing_server(1008, false);
            let url = server.url();
            let connector = ConnectorBuilder::new(move || connect(url.clone())).hook($layer).build();
            let mut ws = ReconnectingStream::new(connector).with_retry(fast_retry());
            let error = support::block_on(ws.next()).unwrap().unwrap_err();
            assert!(error.is_fatal(), "{}: {error:?}", $name);
            assert_eq!(error.failure().and_then(|f| f.close_code()), Some(1008), "{}", $name);
            assert_eq!(server.accepted(), 1, "{}: reconnected", $name);
        }};
    }
    check!(
        "heartbeat",
        Heartbeat::new(Duration::from_secs(15), Duration::from_secs(10))
    );
    check!("metrics", Metrics::new());
    check!("filter", Filter::inbound(|_: &mut Message| Verdict::Pass));
    check!("logging", Logging::new());
    check!(
        "all together",
        (
            Heartbeat::new(Duration::from_secs(15), Duration::from_secs(10)),
            Metrics::new(),
            Filter::inbound(|_: &mut Message| Verdict::Pass),
            Logging::new()
        )
    );
}

/// A hook that notes each message it sees, by name and direction.
#[derive(Clone)]
struct Note {
    name: &'static str,
    seen: Arc<Mutex<Vec<String>>>,
}

impl stream_tungstenite::hook::Hook<Message> for Note {
    fn on_inbound(&mut self, message: &mut Message) -> Verdict {
        if message.is_text() {
            self.seen.lock().unwrap().push(format!("in {}", self.name));
        }
        Verdict::Pass
    }

    fn on_outbound(&mut self, message: &mut Message) -> Verdict {
        if message.is_text() {
            self.seen.lock().unwrap().push(format!("out {}", self.name));
        }
        Verdict::Pass
    }
}

/// The same hooks and layer, added in the same order to a connector builder and to a client, see a message
/// in the same order: the first added outermost (outbound first, inbound last), as documented.
#[test]
fn hooks_and_layers_run_in_the_same_order_in_the_connector_builder_and_the_client() {
    use stream_tungstenite::hook::HooksLayer;
    use stream_tungstenite::WebSocketClient;

    let server = server::echo_server(None);
    let note = |name, seen: &Arc<Mutex<Vec<String>>>| Note {
        name,
        seen: Arc::clone(seen),
    };
    let expected = ["out A", "out C", "out B", "in B", "in C", "in A"];

    let seen = Arc::new(Mutex::new(Vec::new()));
    let url = server.url();
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .hook(note("A", &seen))
        .layer(HooksLayer::new(note("C", &seen)))
        .hook(note("B", &seen))
        .build();
    let mut ws = ReconnectingStream::new(connector);
    support::block_on(async {
        ws.send(Message::text("order")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("order"));
    });
    assert_eq!(*seen.lock().unwrap(), expected, "connector builder");

    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = Arc::new(
        WebSocketClient::builder(server.url())
            .hook(note("A", &seen))
            .layer(HooksLayer::new(note("C", &seen)))
            .hook(note("B", &seen))
            .build(),
    );
    let mut messages = client.subscribe();
    support::block_on(async {
        let run = client.run();
        let exchange = async {
            client.send_text("order").await.unwrap();
            let echo = messages.recv().await.unwrap();
            client.shutdown().await;
            echo
        };
        let (outcome, echo) = futures::future::join(run, exchange).await;
        outcome.unwrap();
        assert_eq!(echo, Message::text("order"));
    });
    assert_eq!(*seen.lock().unwrap(), expected, "client");
}
