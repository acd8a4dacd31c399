//! WebSocketClient: the 0.6.1-style API on any runtime, and the defects of 0.6.1 pinned.
//!
//! Each `defect_*` test pins one defect of the tokio-only stream-tungstenite 0.6.1 (letters in the order they were found) and
//! says in a comment how 0.6.1 fails it. Synchronisation is by signals only: the client's events, channels
//! from the test servers, and a [`ManualClock`] wherever a delay matters. Real time appears only as generous
//! upper bounds ([`prompt`]) so that a regression fails instead of hanging.

#[path = "../support/mod.rs"]
mod support;

use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future;
use futures::{AsyncReadExt, StreamExt};
use stream_tungstenite::extension::{LivenessTimeout, Logging};
use stream_tungstenite::prelude::*;
use stream_tungstenite::retry::Jitter;
use stream_tungstenite::time::ManualClock;

use support::feed::{feed_server, is_type, Feed};
use support::log_buffer::LogBuffer;
use support::server;

/// Upper bound for anything that should happen promptly (it normally takes milliseconds).
const PROMPT: Duration = Duration::from_secs(5);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A retry policy for tests where the delay does not matter.
fn fast_retry() -> ExponentialBackoff {
    ExponentialBackoff::new(ms(1), ms(10))
}

/// A `ws://` URL on a loopback port with nothing listening: every attempt is refused.
fn refusing_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("ws://{addr}/")
}

/// `fut`, or a panic naming `what` if it is not done within [`PROMPT`].
async fn prompt<T>(what: &str, fut: impl Future<Output = T>) -> T {
    support::within(PROMPT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {PROMPT:?}"))
}

/// The next event that `matches`, skipping others (a lag report is skipped too).
async fn wait_for(events: &mut Subscription<Event>, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
    prompt(what, async {
        loop {
            match events.recv().await {
                Ok(event) if matches(&event) => return event,
                Ok(_) | Err(ReceiveError::Lagged(_)) => {}
                Err(error) => panic!("waiting for {what}: {error}"),
            }
        }
    })
    .await
}

fn is_connected_event(event: &Event) -> bool {
    matches!(event, Event::Connected { .. })
}

/// The events buffered so far.
fn drain(events: &mut Subscription<Event>) -> Vec<Event> {
    let mut drained = Vec::new();
    while let Ok(Some(event)) = events.try_recv() {
        drained.push(event);
    }
    drained
}

/// The next message's text.
async fn recv_text(messages: &mut Subscription<Message>) -> String {
    let message = prompt("a message", messages.recv()).await.unwrap();
    message.to_text().unwrap().to_owned()
}

/// An echo server that logs each text it receives as `conn <i>: <text>`. Connections with an index below
/// `refuse_first` are dropped before the upgrade (the attempt fails); connection `drop_after_echo` is dropped
/// (TCP, no close handshake) right after its first echo.
fn logging_echo_server(refuse_first: usize, drop_after_echo: Option<usize>) -> server::Server {
    server::serve(move |tcp, index, log| async move {
        if index < refuse_first {
            return;
        }
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            if !(message.is_text() || message.is_binary()) {
                continue;
            }
            if let Ok(text) = message.to_text() {
                log.lock().unwrap().push(format!("conn {index}: {text}"));
            }
            if ws.send(message).await.is_err() || Some(index) == drop_after_echo {
                return;
            }
        }
    })
}

// ---- The quick start of 0.6.1, with run() spawned on each runtime --------------------------------------------

/// The quick start's client and subscription, against a local server.
fn quick_start(url: String) -> (Arc<WebSocketClient>, Subscription<Message>) {
    let client = WebSocketClient::builder(url)
        .with_receive_timeout(Duration::from_secs(30))
        .build();
    let messages = client.subscribe();
    (Arc::new(client), messages)
}

/// The quick start's loop: send through `sender()`, receive with `while let Ok(msg) = messages.recv().await`,
/// then shut down.
async fn quick_start_exchange(client: &WebSocketClient, messages: &mut Subscription<Message>) {
    let sender = client.sender();
    for n in 0..3 {
        sender.send_text(format!("hello {n}")).await.unwrap();
    }
    let mut received = Vec::new();
    while let Ok(msg) = messages.recv().await {
        received.push(msg.to_text().unwrap().to_owned());
        if received.len() == 3 {
            break;
        }
    }
    assert_eq!(received, ["hello 0", "hello 1", "hello 2"]);
    client.shutdown().await;
    assert!(!client.state().running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_run_spawned_on_tokio() {
    let server = server::echo_server(None);
    let (client, mut messages) = quick_start(server.url());
    let handle = tokio::spawn({
        let client = client.clone();
        async move { client.run().await }
    });
    prompt("quick start", quick_start_exchange(&client, &mut messages)).await;
    prompt("run() after shutdown", handle).await.unwrap().unwrap();
}

#[async_std::test]
async fn quickstart_run_spawned_on_async_std() {
    let server = server::echo_server(None);
    let (client, mut messages) = quick_start(server.url());
    let handle = async_std::task::spawn({
        let client = client.clone();
        async move { client.run().await }
    });
    prompt("quick start", quick_start_exchange(&client, &mut messages)).await;
    prompt("run() after shutdown", handle).await.unwrap();
}

#[test]
fn quickstart_run_spawned_on_smol() {
    support::block_on(async {
        let server = server::echo_server(None);
        let (client, mut messages) = quick_start(server.url());
        let task = smol::spawn({
            let client = client.clone();
            async move { client.run().await }
        });
        prompt("quick start", quick_start_exchange(&client, &mut messages)).await;
        prompt("run() after shutdown", task).await.unwrap();
    });
}

/// The whole quick start in one `smol::block_on`, run twice on the same client.
#[test]
fn quickstart_on_smol_joined_and_run_twice() {
    support::block_on(async {
        let server = server::echo_server(None);
        let client = WebSocketClient::builder(server.url())
            .with_receive_timeout(Duration::from_secs(30))
            .build();
        let mut messages = client.subscribe();
        let client = Arc::new(client);
        let sender = client.sender();
        let test = async {
            for n in 0..10 {
                sender.send_text(format!("m{n}")).await.unwrap();
                assert_eq!(recv_text(&mut messages).await, format!("m{n}"));
            }
            assert!(client.is_connected());
            assert!(matches!(client.run().await, Err(ClientError::AlreadyRunning)));
            client.shutdown().await;
            assert!(!client.state().running);
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
        let test = async {
            sender.send_text("again").await.unwrap();
            assert_eq!(recv_text(&mut messages).await, "again");
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
        let state = client.state();
        assert_eq!(state.generation, 2);
        assert_eq!(state.reconnects, 1);
        assert_eq!(state.messages_received, 11);
    });
}

// ---- a. Backoff after an established connection drops ----------------------------------------------------------

/// 0.6.1 reconnected at once, resetting its backoff, whenever an established connection dropped: this server
/// (upgrade, then drop) saw a new connection every few milliseconds without end, so `accepted` would pass 4
/// and the delays would not grow. Here each connection dies before `stable_after`, so it counts as a failed
/// attempt: the delays grow 100, 200, 400 ms and the policy's 4 attempts are all the server sees.
#[test]
fn defect_a_backoff_grows_and_the_budget_holds_when_accepted_connections_drop_at_once() {
    let server = server::serve(|tcp, _, _| async move {
        let _upgraded = async_tungstenite::accept_async(tcp).await;
    });
    let clock = ManualClock::new();
    let client = WebSocketClient::builder(server.url())
        .with_retry(
            ExponentialBackoff::new(ms(100), Duration::from_secs(1))
                .with_jitter(Jitter::None)
                .with_max_attempts(4),
        )
        .with_timer(clock.clone())
        .build();
    let mut events = client.subscribe_events();
    let (outcome, (delays, connected)) = support::block_on(async {
        let watch = async {
            let (mut delays, mut connected) = (Vec::new(), 0);
            loop {
                match events.recv().await.unwrap() {
                    Event::Connected { .. } => connected += 1,
                    Event::RetryScheduled { delay, .. } => {
                        delays.push(delay);
                        // The manual clock only moves here: no attempt can start before its delay.
                        clock.advance(delay);
                    }
                    Event::GaveUp { .. } => return (delays, connected),
                    _ => {}
                }
            }
        };
        prompt("run() giving up", future::join(client.run(), watch)).await
    });
    assert_eq!(delays, [ms(100), ms(200), ms(400)]);
    assert_eq!(connected, 4);
    assert_eq!(server.accepted(), 4, "the policy allows 4 attempts");
    match outcome {
        Err(ClientError::Terminated(error)) => assert!(error.is_gave_up(), "{error:?}"),
        other => panic!("expected the policy to give up, got {other:?}"),
    }
    assert!(!client.state().running);
}

// ---- b. Graceful shutdown ------------------------------------------------------------------------------------

/// 0.6.1's shutdown only set a flag and returned, while `run()` went on (and reconnected): `ended` would still
/// be false when `shutdown()` returned.
#[test]
fn defect_b_shutdown_returns_only_after_run_has_ended() {
    let server = server::echo_server(None);
    let client = WebSocketClient::new(server.url());
    let mut events = client.subscribe_events();
    let ended = AtomicBool::new(false);
    support::block_on(async {
        let driver = async {
            let outcome = client.run().await;
            ended.store(true, Ordering::SeqCst);
            outcome
        };
        let test = async {
            wait_for(&mut events, "connected", is_connected_event).await;
            prompt("shutdown", client.shutdown()).await;
            assert!(ended.load(Ordering::SeqCst), "shutdown() returned before run() ended");
            assert!(!client.state().running);
            assert_eq!(client.state().status, ConnectionState::Closed);
        };
        let (outcome, ()) = future::join(driver, test).await;
        outcome.unwrap();
    });
}

/// `spawn(run)` then `shutdown()` at once: if the shutdown lands before the spawned `run()` is first polled,
/// 0.6.1's `shutdown()` returned ("not running") and `run()` then started and ran on. Here a run begins when
/// `run()` is called, so a shutdown issued after that and before its first poll stops it. (A shutdown before
/// `run()` is called is meant for no run: see `a_shutdown_while_not_running_does_not_stop_the_next_run`.)
#[test]
fn defect_b_shutdown_before_run_is_first_polled_still_stops_it() {
    let server = server::echo_server(None);
    let client = WebSocketClient::new(server.url());
    support::block_on(async {
        // As a spawned `run()` whose task has not been polled yet: the shutdown is polled first.
        let run = client.run();
        assert!(client.state().running);
        let ((), outcome) = prompt("shutdown and run", future::join(client.shutdown(), run)).await;
        outcome.unwrap();
    });
    assert_eq!(server.accepted(), 0);
}

// ---- c. Shutdown during backoff and during a connect ---------------------------------------------------------

/// 0.6.1 only checked its shutdown flag between attempts: a shutdown during a long backoff waited out the whole
/// delay (here an hour) and then dialled again.
#[test]
fn defect_c_shutdown_interrupts_a_backoff() {
    let client = WebSocketClient::builder(refusing_url())
        .with_retry(
            ExponentialBackoff::new(Duration::from_secs(3600), Duration::from_secs(3600)).with_jitter(Jitter::None),
        )
        .build();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            let scheduled = wait_for(&mut events, "a retry scheduled", |e| {
                matches!(e, Event::RetryScheduled { .. })
            })
            .await;
            assert!(
                matches!(scheduled, Event::RetryScheduled { attempt: 2, .. }),
                "{scheduled:?}"
            );
            assert!(matches!(client.state().status, ConnectionState::Backoff { .. }));
            prompt("shutdown during a backoff", client.shutdown()).await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    let after: Vec<Event> = drain(&mut events);
    assert!(
        !after.iter().any(|e| matches!(e, Event::Connecting { .. })),
        "no attempt after the shutdown: {after:?}"
    );
    assert!(matches!(after.last(), Some(Event::Closed { .. })), "{after:?}");
    assert_eq!(client.state().failed_attempts, 1);
}

/// 0.6.1 awaited a connect in progress before looking at its shutdown flag: against a server that never
/// answers the upgrade, shutdown waited for the whole connect timeout, then retried. Here shutdown returns
/// promptly, the half-made connection is dropped (the server sees EOF) and no further attempt is made.
#[test]
fn defect_c_shutdown_interrupts_a_connect_in_progress() {
    let (request_tx, request_rx) = async_channel::unbounded::<()>();
    let (eof_tx, eof_rx) = async_channel::unbounded::<()>();
    let server = server::serve(move |mut tcp, _, _| {
        let (request_tx, eof_tx) = (request_tx.clone(), eof_tx.clone());
        async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = request_tx.send(()).await;
            // Never answer; wait for the client to go away.
            while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
            let _ = eof_tx.send(()).await;
        }
    });
    let client = WebSocketClient::builder(server.url()).build();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            prompt("the upgrade request", request_rx.recv()).await.unwrap();
            assert!(matches!(
                client.state().status,
                ConnectionState::Connecting { attempt: 1 }
            ));
            prompt("shutdown during a connect", client.shutdown()).await;
            prompt("the server seeing the connection dropped", eof_rx.recv())
                .await
                .unwrap();
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    assert_eq!(server.accepted(), 1, "no attempt after the shutdown");
    let events = drain(&mut events);
    assert_eq!(
        events.iter().filter(|e| matches!(e, Event::Connecting { .. })).count(),
        1,
        "{events:?}"
    );
}

// ---- d. A Sender stays valid across reconnects ----------------------------------------------------------------

/// 0.6.1's sender wrote into the current connection's channel: after a reconnect a sender obtained before it
/// sent into the dead connection, and "after" never reached the server.
#[test]
fn defect_d_a_sender_made_before_a_reconnect_still_delivers_after_it() {
    // Connection 0 is dropped right after echoing its first message.
    let server = logging_echo_server(0, Some(0));
    let client = WebSocketClient::builder(server.url()).with_retry(fast_retry()).build();
    let sender = client.sender();
    let mut messages = client.subscribe();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            sender.send_text("before").await.unwrap();
            assert_eq!(recv_text(&mut messages).await, "before");
            wait_for(&mut events, "the reconnect", |e| {
                matches!(e, Event::Connected { generation: 2, .. })
            })
            .await;
            sender.send_text("after").await.unwrap();
            assert_eq!(recv_text(&mut messages).await, "after");
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    assert_eq!(server.log(), ["conn 0: before", "conn 1: after"]);
}

// ---- e. Logging non-ASCII text ---------------------------------------------------------------------------------

/// Every prefix and suffix of `text` that is valid UTF-8.
fn cuts(text: &str) -> Vec<String> {
    let boundaries: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
    boundaries
        .iter()
        .flat_map(|&i| [text[..i].to_owned(), text[i..].to_owned()])
        .collect()
}

/// 0.6.1 truncated logged bodies with `&text[..n]` at a byte count, which panics when byte n falls inside a
/// multi-byte character ("byte index 5 is not a char boundary"). Here bodies are cut at 1 to 8 bytes (the
/// stacked layers), the texts themselves cut at every character boundary, under a TRACE subscriber.
#[test]
fn defect_e_logging_non_ascii_text_cut_anywhere_does_not_panic() {
    let mut texts = cuts("héllo ✓ 日本語 🚀");
    // Redaction runs before truncation: exercise it on non-ASCII values too.
    texts.extend(cuts(r#"{"token":"日本語🚀","msg":"héllo ✓","password":"✓✓"}"#));
    let server = server::echo_server(None);
    let mut builder = WebSocketClient::builder(server.url()).hook(Logging::new().with_max_body(5));
    for max in [1, 2, 3, 4, 6, 7, 8] {
        builder = builder.hook(Logging::new().with_max_body(max).with_level(tracing::Level::TRACE));
    }
    let client = builder.build();
    let mut messages = client.subscribe();
    let output = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(output.clone())
        .finish();
    let received = tracing::subscriber::with_default(subscriber, || {
        support::block_on(async {
            let test = async {
                let sender = client.sender();
                for text in &texts {
                    sender.send_text(text.clone()).await.unwrap();
                }
                let mut received = Vec::new();
                for _ in &texts {
                    received.push(recv_text(&mut messages).await);
                }
                client.shutdown().await;
                received
            };
            let (outcome, received) = future::join(client.run(), test).await;
            outcome.unwrap();
            received
        })
    });
    assert_eq!(received, texts);
    // The bodies were formatted and cut: the path under test ran.
    let output = output.text();
    assert!(output.contains("truncated=true"), "{output}");
    assert!(output.contains('日'), "{output}");
}

// ---- f. A zero initial delay ------------------------------------------------------------------------------------

/// 0.6.1 panicked with a zero initial delay (an empty jitter range). Here a zero backoff against a refusing
/// server keeps retrying without panic, and without a busy loop: driver and test share one thread, so the test
/// only sees 50 attempts, and its shutdown only completes, if `run()` yields between attempts.
#[test]
fn defect_f_a_zero_backoff_retries_without_panic_or_busy_loop() {
    let client = WebSocketClient::builder(refusing_url())
        .with_retry(ExponentialBackoff::new(Duration::ZERO, Duration::ZERO).with_factor(2.0))
        .build();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            let mut attempts = 0;
            prompt("50 attempts", async {
                while attempts < 50 {
                    match events.recv().await {
                        Ok(Event::ConnectFailed { .. }) => attempts += 1,
                        Ok(Event::RetryScheduled { delay, .. }) => assert_eq!(delay, Duration::ZERO),
                        Ok(Event::GaveUp { reason, .. }) => panic!("gave up: {reason}"),
                        Ok(_) | Err(ReceiveError::Lagged(_)) => {}
                        Err(error) => panic!("{error}"),
                    }
                }
            })
            .await;
            prompt("shutdown during zero-delay retries", client.shutdown()).await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    assert!(client.state().failed_attempts >= 50);
}

// ---- g. Running again after shutdown -----------------------------------------------------------------------------

/// 0.6.1 consumed its connection state in `run()`: a second `run()` after shutdown returned at once without
/// connecting. Here the second run connects: generation 2.
#[test]
fn defect_g_the_client_runs_again_after_shutdown() {
    let server = logging_echo_server(0, None);
    let client = WebSocketClient::new(server.url());
    let mut messages = client.subscribe();
    let mut events = client.subscribe_events();
    support::block_on(async {
        for run in 1..=2u64 {
            let test = async {
                wait_for(&mut events, "connected", is_connected_event).await;
                assert_eq!(client.state().generation, run);
                client.send_text(format!("run {run}")).await.unwrap();
                assert_eq!(recv_text(&mut messages).await, format!("run {run}"));
                prompt("shutdown", client.shutdown()).await;
            };
            let (outcome, ()) = future::join(client.run(), test).await;
            outcome.unwrap();
            assert!(!client.state().running);
        }
    });
    let state = client.state();
    assert_eq!((state.generation, state.reconnects), (2, 1));
    assert_eq!(server.accepted(), 2);
    assert_eq!(server.log(), ["conn 0: run 1", "conn 1: run 2"]);
}

/// The generation is "visible in the Connected event and the state": after a restart they must agree.
#[test]

fn defect_g_events_and_state_agree_on_the_generation_after_a_restart() {
    let server = server::echo_server(None);
    let client = WebSocketClient::new(server.url());
    let mut events = client.subscribe_events();
    support::block_on(async {
        for _ in 0..2 {
            let test = async {
                let connected = wait_for(&mut events, "connected", is_connected_event).await;
                let Event::Connected { generation, .. } = connected else {
                    unreachable!()
                };
                assert_eq!(generation, client.state().generation, "event and state disagree");
                client.shutdown().await;
            };
            let (outcome, ()) = future::join(client.run(), test).await;
            outcome.unwrap();
        }
    });
}

// ---- h. Nothing sent is dropped at a disconnect ------------------------------------------------------------------

/// 0.6.1 dropped messages sent while disconnected. Here 20 messages queued while the server is down (its first
/// connection fails; the manual clock holds the retry) all arrive, in order, once the connection comes up, and
/// before a message sent afterwards.
#[test]
fn defect_h_messages_queued_while_down_arrive_in_order_after_connecting() {
    let server = logging_echo_server(1, None);
    let clock = ManualClock::new();
    let client = WebSocketClient::builder(server.url())
        .with_retry(FixedDelay::new(Duration::from_secs(1)))
        .with_timer(clock.clone())
        .build();
    let sender = client.sender();
    let mut messages = client.subscribe();
    let mut events = client.subscribe_events();
    let expected: Vec<String> = (0..21).map(|n| format!("m{n}")).collect();
    support::block_on(async {
        let test = async {
            let scheduled = wait_for(&mut events, "the retry after a failed attempt", |e| {
                matches!(e, Event::RetryScheduled { .. })
            })
            .await;
            assert!(!client.is_connected());
            for text in &expected[..20] {
                sender.send_text(text.clone()).await.unwrap();
            }
            let Event::RetryScheduled { delay, .. } = scheduled else {
                unreachable!()
            };
            clock.advance(delay);
            wait_for(&mut events, "connected", is_connected_event).await;
            sender.send_text(expected[20].clone()).await.unwrap();
            let mut received = Vec::new();
            for _ in &expected {
                received.push(recv_text(&mut messages).await);
            }
            client.shutdown().await;
            received
        };
        let (outcome, received) = future::join(client.run(), test).await;
        outcome.unwrap();
        assert_eq!(received, expected);
    });
    let log: Vec<String> = expected.iter().map(|text| format!("conn 1: {text}")).collect();
    assert_eq!(server.log(), log);
}

/// A refusing server, messages accepted and taken in by the driver, then shutdown: `take_unsent()` returns them
/// all, in order (0.6.1 dropped them with the task).
#[test]
fn defect_h_messages_left_at_shutdown_are_returned_by_take_unsent() {
    let clock = ManualClock::new();
    let client = WebSocketClient::builder(refusing_url())
        .with_retry(FixedDelay::new(Duration::from_secs(60)))
        .with_timer(clock)
        .build();
    let sender = client.sender();
    let mut events = client.subscribe_events();
    let expected: Vec<Message> = (0..5).map(|n| Message::text(format!("m{n}"))).collect();
    support::block_on(async {
        let test = async {
            wait_for(&mut events, "backoff", |e| matches!(e, Event::RetryScheduled { .. })).await;
            for message in &expected {
                sender.send(message.clone()).await.unwrap();
            }
            // Let the driver take them from the queue.
            prompt("the driver taking the messages", async {
                while sender.queued() > 0 {
                    smol::future::yield_now().await;
                }
            })
            .await;
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    assert_eq!(client.take_unsent(), expected);
    assert!(client.take_unsent().is_empty());
}

/// Messages sent right before `shutdown()` (the driver has not looked at the queue since) must be sent by the
/// graceful shutdown or handed back by `take_unsent()`, as `Sender` documents.
#[test]

fn defect_h_messages_sent_right_before_shutdown_are_delivered_or_returned() {
    let server = logging_echo_server(0, None);
    let client = WebSocketClient::new(server.url());
    let sender = client.sender();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            wait_for(&mut events, "connected", is_connected_event).await;
            sender.try_send(Message::text("last 1")).unwrap();
            sender.try_send(Message::text("last 2")).unwrap();
            prompt("shutdown", client.shutdown()).await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    let mut delivered: Vec<String> = server
        .log()
        .iter()
        .map(|line| line.trim_start_matches("conn 0: ").to_owned())
        .collect();
    delivered.extend(client.take_unsent().iter().map(|m| m.to_text().unwrap().to_owned()));
    assert_eq!(delivered, ["last 1", "last 2"], "queued: {}", sender.queued());
}

/// `run()`'s documented cancel safety: dropping the future keeps the accepted messages for `take_unsent()`.
#[test]

fn dropping_the_run_future_keeps_accepted_messages() {
    let clock = ManualClock::new();
    let client = WebSocketClient::builder(refusing_url())
        .with_retry(FixedDelay::new(Duration::from_secs(60)))
        .with_timer(clock)
        .build();
    let expected: Vec<Message> = (0..3).map(|n| Message::text(format!("m{n}"))).collect();
    for message in &expected {
        client.try_send(message.clone()).unwrap();
    }
    support::block_on(async {
        let mut run = Box::pin(client.run());
        // One poll: the driver takes the messages from the queue and starts dialling.
        assert!(futures::poll!(run.as_mut()).is_pending());
        drop(run);
    });
    assert!(!client.state().running);
    assert_eq!(client.sender().queued(), 0, "the driver took the messages");
    assert_eq!(client.take_unsent(), expected);
}

// ---- i. A slow subscriber --------------------------------------------------------------------------------------

/// 0.6.1's slow subscriber lost messages silently (or stalled the others). Here, with room for 4, the fast
/// subscriber gets all 10 messages while the one not reading is told it missed exactly 6, then gets the last
/// 4, then keeps receiving.
#[test]
fn defect_i_a_slow_subscriber_is_told_exactly_how_many_it_missed() {
    let server = server::echo_server(None);
    let client = WebSocketClient::builder(server.url())
        .with_config(ClientConfig::default().with_subscriber_capacity(4))
        .build();
    let mut fast = client.subscribe();
    let mut slow = client.subscribe();
    support::block_on(async {
        let test = async {
            // One at a time, so that the fast subscriber is never 4 behind.
            for n in 0..10 {
                client.send_text(format!("m{n}")).await.unwrap();
                assert_eq!(recv_text(&mut fast).await, format!("m{n}"));
            }
            assert_eq!(slow.recv().await.unwrap_err(), ReceiveError::Lagged(6));
            for n in 6..10 {
                assert_eq!(recv_text(&mut slow).await, format!("m{n}"));
            }
            client.send_text("m10").await.unwrap();
            assert_eq!(recv_text(&mut fast).await, "m10");
            assert_eq!(recv_text(&mut slow).await, "m10");
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    assert_eq!(client.state().messages_received, 11);
}

// ---- j. Fatal failures end run() ---------------------------------------------------------------------------------

/// 0.6.1 retried an HTTP 401 or 403 forever (with the default policy here, that would never end). Here `run()`
/// ends with a fatal `Terminated` after the server saw exactly one request.
#[test]
fn defect_j_http_401_and_403_end_run_after_one_request() {
    for (status, reason) in [(401, "Unauthorized"), (403, "Forbidden")] {
        let server = server::rejecting_server(status, reason, "");
        let client = WebSocketClient::new(server.url());
        let outcome = support::block_on(prompt("run() ending", client.run()));
        let Err(ClientError::Terminated(error)) = outcome else {
            panic!("{status}: expected Terminated, got {outcome:?}")
        };
        assert!(error.is_fatal(), "{status}: {error:?}");
        let cause = error.failure().unwrap().downcast_ref::<ConnectError>().unwrap();
        assert_eq!(cause.status(), Some(status));
        assert_eq!(server.accepted(), 1, "{status}: one request, no retry");
        assert_eq!(client.state().status, ConnectionState::Terminated);
        assert!(!client.state().running);
    }
}

/// 0.6.1 retried a certificate failure forever. Here an untrusted certificate ends `run()` at once; the same
/// server trusted through a custom root works.
#[test]
fn defect_j_an_untrusted_certificate_ends_run_after_one_attempt() {
    let (server, cert) = server::tls_echo_server();
    let url = format!("wss://localhost:{}/", server.addr.port());
    let client = WebSocketClient::new(url.clone());
    let outcome = support::block_on(prompt("run() ending", client.run()));
    let Err(ClientError::Terminated(error)) = outcome else {
        panic!("expected Terminated, got {outcome:?}")
    };
    assert!(error.is_fatal(), "{error:?}");
    let cause = error.failure().unwrap().downcast_ref::<ConnectError>().unwrap();
    assert!(cause.is_certificate_error(), "{cause:?}");
    assert_eq!(server.accepted(), 1, "a certificate error is not retried");

    let client = WebSocketClient::builder(url).with_root_certificate(cert).build();
    let mut messages = client.subscribe();
    support::block_on(async {
        let test = async {
            client.send_text("over tls").await.unwrap();
            assert_eq!(recv_text(&mut messages).await, "over tls");
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
}

// ---- k. Connected only after the application handshake -----------------------------------------------------------

fn auth(token: &'static str) -> AuthHandshaker {
    AuthHandshaker::token(token)
        .with_timeout(None)
        .json()
        .with_accept(|m| is_type(m, "auth_ok"))
        .with_reject(|m| is_type(m, "auth_failed"))
}

/// 0.6.1 reported `Connected` as soon as the upgrade completed, before its auth and subscribe messages had even
/// been sent. Here, when `Connected` arrives, the feed server has already logged them, and the handshake's
/// replies never reach subscribers.
#[test]
fn defect_k_connected_arrives_after_the_server_logged_auth_and_subscribe() {
    let server = feed_server(Feed::default());
    let client = WebSocketClient::builder(server.url())
        .with_handshaker(auth("good"))
        .with_handshaker(SubscribeHandshaker::new(["trades", "book"]).with_confirm(|m| is_type(m, "subscribed")))
        .build();
    let mut messages = client.subscribe();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            wait_for(&mut events, "connected", is_connected_event).await;
            let log = server.log();
            assert_eq!(log.len(), 3, "{log:?}");
            assert!(log[0].contains(r#""type":"auth""#), "{log:?}");
            assert!(log[1].contains(r#""channel":"trades""#), "{log:?}");
            assert!(log[2].contains(r#""channel":"book""#), "{log:?}");
            for _ in 0..3 {
                let message = prompt("an update", messages.recv()).await.unwrap();
                assert!(is_type(&message, "update"), "{message:?}");
            }
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
}

/// While the server holds back its `auth_ok`, the client is not connected and no `Connected` event has been
/// sent; once the test releases the reply, it is.
#[test]
fn defect_k_not_connected_while_the_auth_reply_is_pending() {
    let (auth_tx, auth_rx) = async_channel::unbounded::<String>();
    let (release_tx, release_rx) = async_channel::unbounded::<()>();
    let server = server::serve(move |tcp, _, _| {
        let (auth_tx, release_rx) = (auth_tx.clone(), release_rx.clone());
        async move {
            let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
                return;
            };
            let Some(Ok(auth)) = ws.next().await else {
                return;
            };
            let _ = auth_tx.send(auth.to_text().unwrap_or("").to_owned()).await;
            if release_rx.recv().await.is_err() {
                return;
            }
            let _ = ws.send(Message::text(r#"{"type":"auth_ok"}"#)).await;
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() && ws.send(message).await.is_err() {
                    return;
                }
            }
        }
    });
    let client = WebSocketClient::builder(server.url())
        .with_handshaker(auth("good"))
        .build();
    let mut messages = client.subscribe();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            let auth = prompt("the auth message", auth_rx.recv()).await.unwrap();
            assert!(auth.contains(r#""token":"good""#), "{auth}");
            // The upgrade is done, the handshake is not.
            assert!(!client.is_connected());
            assert!(matches!(
                client.state().status,
                ConnectionState::Connecting { attempt: 1 }
            ));
            let so_far = drain(&mut events);
            assert!(!so_far.iter().any(is_connected_event), "{so_far:?}");
            release_tx.send(()).await.unwrap();
            wait_for(&mut events, "connected", is_connected_event).await;
            assert!(client.is_connected());
            client.send_text("hi").await.unwrap();
            assert_eq!(recv_text(&mut messages).await, "hi");
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
}

// ---- l. Counting reconnects ----------------------------------------------------------------------------------------

/// 0.6.1 counted every attempt as a reconnect: after 3 failed attempts and a success it reported 3 (or 4)
/// reconnects. Here `reconnects` counts successful connections after the first, `failed_attempts` the failures.
#[test]
fn defect_l_reconnects_count_successful_reconnections_only() {
    // Connections 0-2 are dropped before the upgrade (failed attempts); 3 drops after its first echo.
    let server = logging_echo_server(3, Some(3));
    let client = WebSocketClient::builder(server.url()).with_retry(fast_retry()).build();
    let mut messages = client.subscribe();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            wait_for(&mut events, "connected", is_connected_event).await;
            let state = client.state();
            assert_eq!((state.reconnects, state.failed_attempts, state.generation), (0, 3, 1));
            client.send_text("x").await.unwrap();
            assert_eq!(recv_text(&mut messages).await, "x");
            wait_for(&mut events, "reconnected", is_connected_event).await;
            let state = client.state();
            assert_eq!((state.reconnects, state.failed_attempts, state.generation), (1, 3, 2));
            assert_eq!(state.last_disconnect.as_ref().map(|d| d.generation), Some(1));
            assert_eq!(state.last_close_code(), Some(1006));
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    assert_eq!(server.accepted(), 5);
}

// ---- The quick start's receive timeout ---------------------------------------------------------------------------

/// `receive_timeout(30 s)` of the quick start: a connection silent for a whole window is declared dead and
/// replaced (on the manual clock: nothing happens until the test moves it).
#[test]
fn receive_timeout_replaces_a_silent_connection() {
    // Upgrades, then reads (and answers nothing) until the client goes away.
    let server = server::serve(|tcp, _, _| async move {
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        while let Some(Ok(_)) = ws.next().await {}
    });
    let clock = ManualClock::new();
    // The receive timeout alone: the heartbeat's pongs would be frames too.
    let client = WebSocketClient::builder(server.url())
        .with_receive_timeout(Duration::from_secs(30))
        .without_heartbeat()
        .with_retry(FixedDelay::new(Duration::from_secs(1)))
        .with_timer(clock.clone())
        .build();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            wait_for(&mut events, "connected", is_connected_event).await;
            clock.advance(Duration::from_secs(29));
            // Let the driver run: nothing is due before the full window.
            for _ in 0..10 {
                smol::future::yield_now().await;
            }
            assert!(drain(&mut events).is_empty());
            clock.advance(Duration::from_secs(1));
            let Event::Disconnected { reason, .. } =
                wait_for(&mut events, "disconnected", |e| matches!(e, Event::Disconnected { .. })).await
            else {
                unreachable!()
            };
            assert!(reason.downcast_ref::<LivenessTimeout>().is_some(), "{reason:?}");
            clock.advance(Duration::from_secs(1));
            wait_for(&mut events, "reconnected", |e| {
                matches!(e, Event::Connected { generation: 2, .. })
            })
            .await;
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    assert_eq!(server.accepted(), 2);
}

// ---- Sender, events and state ----------------------------------------------------------------------------------

#[test]
fn try_send_on_a_full_queue_hands_the_message_back() {
    // Not running: nothing takes messages from the queue.
    let client = WebSocketClient::builder(refusing_url())
        .with_config(ClientConfig::default().with_send_capacity(2))
        .build();
    client.try_send(Message::text("a")).unwrap();
    client.sender().try_send(Message::text("b")).unwrap();
    let error = client.try_send(Message::text("c")).unwrap_err();
    assert_eq!(error, SendError::Full(Message::text("c")));
    assert_eq!(error.into_inner(), Message::text("c"));
    assert_eq!(client.sender().queued(), 2);
}

#[test]
fn send_timeout_hands_the_message_back_on_timeout() {
    let clock = ManualClock::new();
    let client = WebSocketClient::builder(refusing_url())
        .with_config(ClientConfig::default().with_send_capacity(1))
        .with_timer(clock.clone())
        .build();
    let sender = client.sender();
    support::block_on(async {
        // Room: queued at once.
        sender.send_timeout(Message::text("a"), ms(10)).await.unwrap();
        let send = sender.send_timeout(Message::text("b"), Duration::from_secs(1));
        futures::pin_mut!(send);
        assert!(futures::poll!(send.as_mut()).is_pending());
        clock.advance(ms(999));
        assert!(futures::poll!(send.as_mut()).is_pending());
        clock.advance(ms(1));
        assert_eq!(send.await, Err(SendError::Timeout(Message::text("b"))));
    });
    assert_eq!(sender.queued(), 1);
}

#[test]
fn events_report_connecting_then_connected() {
    let server = server::echo_server(None);
    let client = WebSocketClient::new(server.url());
    let mut events = client.subscribe_events();
    assert_eq!(client.state().status, ConnectionState::Idle);
    support::block_on(async {
        let test = async {
            let first = prompt("an event", events.recv()).await.unwrap();
            assert!(matches!(first, Event::Connecting { attempt: 1 }), "{first:?}");
            let second = prompt("an event", events.recv()).await.unwrap();
            assert!(
                matches!(
                    second,
                    Event::Connected {
                        generation: 1,
                        attempt: 1
                    }
                ),
                "{second:?}"
            );
            assert!(client.is_connected());
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    let rest = drain(&mut events);
    assert!(matches!(rest[..], [Event::Closed { unsent: 0 }]), "{rest:?}");
}

#[test]
fn state_counts_messages_and_bytes_both_ways_exactly() {
    let server = server::echo_server(None);
    let client = WebSocketClient::new(server.url());
    let mut messages = client.subscribe();
    let sent = [
        Message::text("abc"),
        Message::binary(vec![7u8; 10]),
        Message::text("héllo ✓"),
    ];
    let bytes: u64 = sent.iter().map(|m| m.len() as u64).sum();
    assert_eq!(bytes, 3 + 10 + 10);
    support::block_on(async {
        let test = async {
            for message in &sent {
                client.send(message.clone()).await.unwrap();
            }
            for message in &sent {
                let echoed = prompt("an echo", messages.recv()).await.unwrap();
                assert_eq!(&echoed, message);
            }
            let state = client.state();
            assert_eq!((state.messages_sent, state.bytes_sent), (3, bytes));
            assert_eq!((state.messages_received, state.bytes_received), (3, bytes));
            assert!(state.connected_at.is_some());
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    // The close handshake is not counted.
    let state = client.state();
    assert_eq!((state.messages_sent, state.bytes_sent), (3, bytes));
    assert_eq!((state.messages_received, state.bytes_received), (3, bytes));
    assert_eq!(state.connected_at, None);
}

/// `messages_sent` is documented as "messages handed to the connection for sending": messages that never
/// reached a connection (and came back through `take_unsent`) are not sent.
#[test]

fn messages_sent_does_not_count_messages_that_were_never_sent() {
    let clock = ManualClock::new();
    let client = WebSocketClient::builder(refusing_url())
        .with_retry(FixedDelay::new(Duration::from_secs(60)))
        .with_timer(clock)
        .build();
    let sender = client.sender();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            wait_for(&mut events, "backoff", |e| matches!(e, Event::RetryScheduled { .. })).await;
            for n in 0..3 {
                sender.send_text(format!("m{n}")).await.unwrap();
            }
            while sender.queued() > 0 {
                smol::future::yield_now().await;
            }
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    assert_eq!(client.take_unsent().len(), 3);
    let state = client.state();
    assert_eq!((state.messages_sent, state.bytes_sent), (0, 0));
}

/// `send_capacity` bounds what senders can queue while disconnected: the senders' queue and the connection's
/// send queue hold up to that many each, plus one in the driver's hand; then senders must wait.
#[test]
fn send_capacity_bounds_what_a_disconnected_running_client_accepts() {
    let clock = ManualClock::new();
    let client = WebSocketClient::builder(refusing_url())
        .with_config(ClientConfig::default().with_send_capacity(2))
        .with_retry(FixedDelay::new(Duration::from_secs(60)))
        .with_timer(clock.clone())
        .build();
    let sender = client.sender();
    let mut events = client.subscribe_events();
    let accepted = support::block_on(async {
        let test = async {
            wait_for(&mut events, "backoff", |e| matches!(e, Event::RetryScheduled { .. })).await;
            let mut accepted = 0;
            // Each send may wait for room while the driver (same thread) runs; the queue is full once a
            // send is still pending after the driver has had every chance to make room.
            while accepted < 2000 {
                let send = sender.send(Message::text(format!("m{accepted}")));
                futures::pin_mut!(send);
                let mut done = false;
                for _ in 0..100 {
                    if futures::poll!(send.as_mut()).is_ready() {
                        done = true;
                        break;
                    }
                    smol::future::yield_now().await;
                }
                if !done {
                    break;
                }
                accepted += 1;
            }
            client.shutdown().await;
            accepted
        };
        let (outcome, accepted) = future::join(client.run(), test).await;
        outcome.unwrap();
        accepted
    });
    assert_eq!(accepted, 2 + 2 + 1, "a send capacity of 2 let {accepted} messages in");
}

/// `SendError::Closed` is documented for "the client is gone"; a sender of a dropped client must not queue
/// messages that nothing will ever send.
#[test]

fn a_sender_of_a_dropped_client_reports_closed() {
    let client = WebSocketClient::new(refusing_url());
    let sender = client.sender();
    drop(client);
    assert_eq!(
        sender.try_send(Message::text("lost")),
        Err(SendError::Closed(Message::text("lost")))
    );
}

/// Subscribers learn that a dropped client is gone (the quick start's `while let Ok(msg)` loop then ends).
#[test]
fn subscriptions_end_when_the_client_is_dropped() {
    let client = WebSocketClient::new(refusing_url());
    let mut messages = client.subscribe();
    let mut events = client.subscribe_events();
    drop(client);
    support::block_on(async {
        assert_eq!(messages.recv().await.unwrap_err(), ReceiveError::Closed);
        assert_eq!(events.recv().await.unwrap_err(), ReceiveError::Closed);
    });
}

// ---- Hardening: what a Sender accepted, and shutdowns aimed at one run ----------------------------------------

/// Send capacity 2, no retry, a refusing port: two messages queued before `run()`, two sent while it dials.
/// All four were accepted, so all four come back from `take_unsent`, in order, with what is sent after the
/// run ended. (Before, the one still in the senders' queue when the run gave up was lost to `take_unsent`.)
#[test]
fn every_message_a_sender_accepted_is_handed_back_after_the_run_gives_up() {
    let client = WebSocketClient::builder(refusing_url())
        .with_config(ClientConfig::default().with_send_capacity(2))
        .no_retry()
        .build();
    let sender = client.sender();
    let text = |n: u32| Message::text(format!("m{n}"));
    sender.try_send(text(1)).unwrap();
    sender.try_send(text(2)).unwrap();
    support::block_on(async {
        let sends = async {
            prompt("send m3", sender.send(text(3))).await.unwrap();
            prompt("send m4", sender.send(text(4))).await.unwrap();
        };
        let (outcome, ()) = future::join(client.run(), sends).await;
        assert!(matches!(outcome, Err(ClientError::Terminated(_))), "{outcome:?}");
    });
    sender.try_send(text(5)).unwrap();
    assert_eq!(client.take_unsent(), (1..=5).map(text).collect::<Vec<_>>());
    assert_eq!(sender.queued(), 0);
    assert!(client.take_unsent().is_empty());
}

/// A shutdown of a client that is not running stops nothing later: the next `run()` connects and runs until
/// a shutdown meant for it. (Before, it returned `Ok(())` at once without connecting.)
#[test]
fn a_shutdown_while_not_running_does_not_stop_the_next_run() {
    let server = server::echo_server(None);
    let client = WebSocketClient::new(server.url());
    let mut events = client.subscribe_events();
    support::block_on(async {
        prompt("shutdown of an idle client", client.shutdown()).await;
        let test = async {
            wait_for(&mut events, "connected", is_connected_event).await;
            assert!(client.state().running);
            prompt("shutdown", client.shutdown()).await;
        };
        let (outcome, ()) = prompt("run and shutdown", future::join(client.run(), test)).await;
        outcome.unwrap();
    });
    assert_eq!(server.accepted(), 1);
}

// ---- Hardening: the server's end, and the default heartbeat ----------------------------------------------------

/// A server writes "hello" and, in the same segment, a Close 1000 (or a frame with a reserved bit set, which
/// fails the connection). A subscriber that answers gets its answer to the server on that connection, before
/// the end completes, as over a bare connection. (Before, the driver had already read the end, so the answer
/// never went out on it.)
fn reply_goes_out_before_the_end(end: &'static [u8]) {
    let (heard, hearing) = async_channel::unbounded::<(usize, String)>();
    let server = server::serve(move |tcp, index, _| {
        let heard = heard.clone();
        async move {
            let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
                return;
            };
            if index == 0 {
                use futures::AsyncWriteExt;
                // Unmasked "hello", then the end: one write, one segment.
                let mut segment = b"\x81\x05hello".to_vec();
                segment.extend_from_slice(end);
                if ws.get_mut().write_all(&segment).await.is_err() {
                    return;
                }
            }
            while let Some(Ok(message)) = ws.next().await {
                if let Ok(text) = message.to_text() {
                    let _ = heard.send((index, text.to_owned())).await;
                }
            }
        }
    });
    let client = WebSocketClient::new(server.url());
    let mut messages = client.subscribe();
    let sender = client.sender();
    support::block_on(async {
        let test = async {
            let hello = prompt("hello", messages.recv()).await.unwrap();
            assert_eq!(hello, Message::text("hello"));
            sender.send(Message::text("echo hello")).await.unwrap();
            let first = prompt("the server hearing the answer", hearing.recv()).await.unwrap();
            assert_eq!(first, (0, "echo hello".to_owned()), "on the connection that closed");
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
}

#[test]
fn a_reply_to_a_message_right_before_a_close_goes_out_on_that_connection() {
    reply_goes_out_before_the_end(b"\x88\x02\x03\xe8");
}

#[test]
fn a_reply_to_a_message_right_before_a_failing_frame_goes_out_on_that_connection() {
    reply_goes_out_before_the_end(b"\xc1\x03bad");
}

/// With the defaults, a client whose server goes silent (no frames, no pongs) replaces the connection at
/// `DEFAULT_PING_INTERVAL + DEFAULT_PING_TIMEOUT` (40 s) of its clock. (Before, it had no heartbeat by default
/// and stayed on its first connection forever.)
#[test]
fn a_silent_server_is_caught_by_the_default_heartbeat_within_40s() {
    use stream_tungstenite::ws::{ConnectionError, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT};
    let (release, released) = async_channel::bounded::<()>(1);
    let server = server::serve(move |tcp, _, _| {
        let released = released.clone();
        async move {
            // Upgrade, then neither send nor read (so never answer a ping) until the test ends.
            let _ws = async_tungstenite::accept_async(tcp).await;
            let _ = released.recv().await;
        }
    });
    let clock = ManualClock::new();
    let client = WebSocketClient::builder(server.url())
        .with_retry(FixedDelay::new(Duration::from_secs(3600)))
        .with_timer(clock.clone())
        .build();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            wait_for(&mut events, "connected", is_connected_event).await;
            let settled = |due: Duration| {
                let clock = clock.clone();
                prompt("the heartbeat's next sleep", async move {
                    while clock.next_deadline() != Some(due) {
                        smol::future::yield_now().await;
                    }
                })
            };
            settled(DEFAULT_PING_INTERVAL).await;
            clock.advance(DEFAULT_PING_INTERVAL);
            // The ping went out: the deadline for an answer is now the nearest sleep.
            settled(DEFAULT_PING_TIMEOUT).await;
            clock.advance(DEFAULT_PING_TIMEOUT - ms(1));
            assert!(drain(&mut events)
                .iter()
                .all(|e| !matches!(e, Event::Disconnected { .. })));
            clock.advance(ms(1));
            let lost = wait_for(&mut events, "disconnected", |e| matches!(e, Event::Disconnected { .. })).await;
            let Event::Disconnected { reason, .. } = lost else {
                unreachable!()
            };
            assert!(
                matches!(
                    reason.downcast_ref::<ConnectionError>(),
                    Some(ConnectionError::Silent { .. })
                ),
                "{reason}"
            );
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    let _ = release.try_send(());
}

// ---- Parity: what ReconnectingStream and WsConnector offer, the client's builder offers ---------------------

/// Endpoints, an observer and a URL provider; subscribers that read each message's generation.
#[test]
fn the_builder_has_endpoints_observers_url_providers_and_generations() {
    let server = server::echo_server(Some(1));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let client = WebSocketClient::builder(refusing_url())
        .with_endpoint(server.url())
        .with_retry(fast_retry())
        .with_tcp_nodelay(false)
        .with_tcp_keepalive(Duration::from_secs(30))
        .with_observer({
            let seen = Arc::clone(&seen);
            move |event: &Event| {
                let name = match event {
                    Event::ConnectFailed { .. } => "connect failed",
                    Event::Connected { generation, .. } => {
                        seen.lock().unwrap().push(format!("connected {generation}"));
                        return;
                    }
                    _ => return,
                };
                seen.lock().unwrap().push(name.to_owned());
            }
        })
        .build();
    let mut tagged = client.subscribe_with_generation();
    let mut events = client.subscribe_events();
    support::block_on(async {
        let test = async {
            for n in 1..=2_u64 {
                // The server echoes once per connection, then drops it: each echo comes on a new one (sent
                // once it is up: what is sent into a dying connection may be lost on the way).
                wait_for(
                    &mut events,
                    "connected",
                    |e| matches!(e, Event::Connected { generation, .. } if *generation == n),
                )
                .await;
                client.send(Message::text(format!("m{n}"))).await.unwrap();
                let (generation, message) = prompt("an echo", tagged.recv()).await.unwrap();
                assert_eq!((generation, message), (n, Message::text(format!("m{n}"))));
            }
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("connect failed"),
        "the refusing endpoint first: {seen:?}"
    );
    assert!(
        seen.contains(&"connected 1".to_owned()) && seen.contains(&"connected 2".to_owned()),
        "{seen:?}"
    );

    let url = server.url();
    let client = WebSocketClient::builder_with_url_provider(move || url.clone()).build();
    let mut messages = client.subscribe();
    support::block_on(async {
        let test = async {
            client.send(Message::text("via provider")).await.unwrap();
            assert_eq!(
                prompt("echo", messages.recv()).await.unwrap(),
                Message::text("via provider")
            );
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    assert_eq!(client.uri(), "<url provider>");
}

/// A classifier override and the connect timeout, from the client's builder.
#[test]
fn the_builder_has_a_classifier_and_a_connect_timeout() {
    // Every failure fatal: a refused dial ends the run after one attempt, though the policy would retry.
    let client = WebSocketClient::builder(refusing_url())
        .with_retry(fast_retry())
        .with_classifier(|_: &stream_tungstenite::Failure| stream_tungstenite::Classification::Fatal)
        .build();
    let outcome = support::block_on(prompt("run", client.run()));
    assert!(
        matches!(&outcome, Err(ClientError::Terminated(error)) if error.is_fatal()),
        "{outcome:?}"
    );
    assert_eq!(client.state().failed_attempts, 1);

    // A server that accepts TCP and never answers the upgrade: the connect timeout ends each attempt.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let client = WebSocketClient::builder(url)
        .no_retry()
        .with_connect_timeout(ms(200))
        .build();
    let outcome = support::block_on(prompt("run", client.run()));
    let Err(ClientError::Terminated(error)) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(error.to_string().contains("timed out"), "{error}");
    drop(listener);
}

/// The client with a resume layer: the resume request goes out first on the new connection, and
/// `subscribe_resumed` has `Recovered` in band, in front of the first message after the reconnect.
#[test]
fn the_client_resumes_and_reports_continuity_in_band() {
    use stream_tungstenite::delivery::{Continuity, Position, ResumeLayer, Resumed};
    let server = server::serve(|tcp, index, log| async move {
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        let numbers: Vec<u64> = if index == 0 {
            vec![1, 2, 3]
        } else {
            // The resume request comes first.
            let Some(Ok(request)) = ws.next().await else { return };
            log.lock().unwrap().push(request.to_text().unwrap_or("?").to_owned());
            vec![4, 5]
        };
        for n in numbers {
            let _ = ws.send(Message::text(format!("seq {n}"))).await;
        }
        if index == 0 {
            return; // dropped: the client reconnects
        }
        while let Some(Ok(_)) = ws.next().await {}
    });
    let position = |message: &Message| {
        let seq = message.to_text().ok()?.strip_prefix("seq ")?.parse().ok()?;
        Some(Position::new(seq))
    };
    let resume = ResumeLayer::new(position, |last: Position| {
        vec![Message::text(format!("resume from {}", last.seq + 1))]
    });
    let client = WebSocketClient::builder(server.url())
        .with_retry(fast_retry())
        .with_resume(resume)
        .build();
    let mut resumed = client.subscribe_resumed();
    support::block_on(async {
        let test = async {
            let mut items = Vec::new();
            while items.len() < 6 {
                items.push(prompt("an item", resumed.recv()).await.unwrap());
            }
            let message = |n: u64| Resumed::Message(Message::text(format!("seq {n}")));
            assert_eq!(
                items,
                [
                    message(1),
                    message(2),
                    message(3),
                    Resumed::Continuity(Continuity::Recovered { last: Position::new(3) }),
                    message(4),
                    message(5),
                ]
            );
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    assert_eq!(server.log(), ["resume from 4"]);
}

/// The client with an `AckLayer` (given to `ClientBuilder::layer`): the server takes orders 1 to 3 on its
/// first connection and drops it before acking 3; 3 goes out again first on the next connection, every
/// order's outcome is `Acked`, and the acks never reach the subscribers.
#[test]
fn the_client_with_acked_sends_resends_what_was_not_acked_and_every_outcome_is_acked() {
    use stream_tungstenite::delivery::{Ack, AckLayer, Outcome};
    let server = server::serve(|tcp, index, log| async move {
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        let mut taken = 0;
        while let Some(Ok(message)) = ws.next().await {
            let Some(order) = message.to_text().ok().and_then(|t| t.strip_prefix("order ")) else {
                continue;
            };
            log.lock().unwrap().push(format!("{index}: {order}"));
            taken += 1;
            if index == 0 && taken == 3 {
                return; // dropped before the ack of the third
            }
            let _ = ws.send(Message::text(format!("ack {order}"))).await;
            let _ = ws.send(Message::text(format!("filled {order}"))).await;
        }
    });
    let number =
        |message: &Message, prefix: &str| -> Option<u32> { message.to_text().ok()?.strip_prefix(prefix)?.parse().ok() };
    let (layer, acks) = AckLayer::new(
        move |m: &Message| number(m, "order "),
        move |m: &Message| number(m, "ack ").map(Ack::Ack),
    );
    let client = WebSocketClient::builder(server.url())
        .with_retry(fast_retry())
        .layer(layer)
        .build();
    let mut messages = client.subscribe();
    support::block_on(async {
        let test = async {
            for n in 1..=3 {
                client.send_text(format!("order {n}")).await.unwrap();
            }
            for n in 1..=3 {
                assert_eq!(
                    prompt("an outcome", acks.outcome(&n)).await,
                    Outcome::Acked,
                    "order {n}"
                );
            }
            for n in 4..=5 {
                client.send_text(format!("order {n}")).await.unwrap();
                assert_eq!(
                    prompt("an outcome", acks.outcome(&n)).await,
                    Outcome::Acked,
                    "order {n}"
                );
            }
            let mut seen = Vec::new();
            while seen.len() < 4 {
                let message = prompt("a message", messages.recv()).await.unwrap();
                seen.push(message.to_text().unwrap().to_owned());
            }
            assert!(seen.iter().all(|m| m.starts_with("filled ")), "no ack among {seen:?}");
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), test).await;
        outcome.unwrap();
    });
    let log = server.log();
    assert_eq!(&log[..3], ["0: 1", "0: 2", "0: 3"], "{log:?}");
    assert_eq!(
        log[3], "1: 3",
        "the unacked order goes out first on the new connection: {log:?}"
    );
    assert!(
        !log.contains(&"1: 1".to_owned()) && !log.contains(&"1: 2".to_owned()),
        "acked: {log:?}"
    );
    assert_eq!(acks.unacked(), 0);
}

/// The client's queue policy and first messages: while the server refuses, `old` waits longer than the TTL
/// and is handed back (`take_dropped`, `Event::Dropped`); `new` goes out after the connection's first message.
#[test]
fn the_clients_ttl_hands_back_what_is_too_old_and_first_messages_go_first() {
    use std::time::Instant;
    let opened = Instant::now();
    let server = server::serve(move |tcp, index, log| async move {
        if opened.elapsed() < ms(1200) {
            return; // refused (dropped before the upgrade) for the first 1.2 s
        }
        let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = &message {
                log.lock().unwrap().push(format!("conn {index}: {text}"));
            }
        }
    });
    let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = WebSocketClient::builder(server.url())
        .with_retry(stream_tungstenite::retry::FixedDelay::new(ms(20)))
        .with_queue_policy(stream_tungstenite::QueuePolicy::DropOlderThan(ms(700)))
        .with_first_messages(|generation| vec![Message::text(format!("hello {generation}"))])
        .with_observer({
            let dropped = Arc::clone(&dropped);
            move |event: &Event| {
                if let Event::Dropped { count, .. } = event {
                    dropped.fetch_add(*count, Ordering::SeqCst);
                }
            }
        })
        .build();
    support::block_on(async {
        let test = async {
            client.send_text("old").await.unwrap();
            async_io::Timer::after(ms(900)).await; // ageing is what is tested: real time passes
            client.send_text("new").await.unwrap();
            let logged = |line: &str| server.log().iter().any(|l| l.ends_with(line));
            while !logged(": new") {
                async_io::Timer::after(ms(10)).await;
            }
            client.shutdown().await;
        };
        let (outcome, ()) = future::join(client.run(), prompt("the run", test)).await;
        outcome.unwrap();
    });
    let log: Vec<String> = server
        .log()
        .iter()
        .map(|l| l.split(": ").nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(log, ["hello 1", "new"]);
    assert_eq!(client.take_dropped(), [Message::text("old")]);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}
