//! Interop with WebSocket servers this project did not write: Python `websockets` and Node `ws`.
//!
//! Needs the peers installed by `.ci/install-peers` (a venv with `websockets`, and `ws` under
//! tests/peers/node_modules). Without them every test is reported *ignored* (this binary has its own harness,
//! libtest-mimic, which decides at run time), with a note saying what to install; with `CI=true` a missing
//! peer fails the run instead. `cargo test --test interop -- --include-ignored` runs them anyway, each peer
//! that is there.

#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::future::{select, Either};
use futures::{SinkExt, StreamExt};
use stream_tungstenite::retry::{ExponentialBackoff, Jitter};
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::ws::{ConnectError, WsConnector};
use stream_tungstenite::{connect, Event, ReconnectingStream};
use support::peers::{run_needing, Impl, Peer};
use support::{lockstep, Recorder};

fn peers(args: &[&str]) -> Vec<Peer> {
    Impl::ALL.iter().filter_map(|which| Peer::start(*which, args)).collect()
}

fn echo() {
    for peer in peers(&["--mode", "echo"]) {
        let url = peer.url();
        let mut ws = ReconnectingStream::new(move || connect(url.clone()));
        support::block_on(async {
            for n in 0..50 {
                ws.send(Message::text(format!("echo {n} ✓"))).await.unwrap();
                assert_eq!(
                    ws.next().await.unwrap().unwrap(),
                    Message::text(format!("echo {n} ✓")),
                    "{}",
                    peer.which()
                );
            }
            let big = vec![7u8; 256 * 1024];
            ws.send(Message::binary(big.clone())).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
            ws.close().await.unwrap();
        });
    }
}

/// The peer cuts TCP after every 10 messages while the client sends a numbered sequence; every number comes
/// back. (A number flushed into a socket the peer then cuts can die in the kernel: the client sends it again
/// when the connection generation changes while it waits, as an application would.)
fn drop_every_n_loses_nothing_queued() {
    for peer in peers(&["--mode", "drop", "--n", "10"]) {
        let url = peer.url();
        let (observer, mut connected) = lockstep::connected_channel();
        let mut ws = ReconnectingStream::new(move || connect(url.clone()))
            .with_retry(ExponentialBackoff::new(
                Duration::from_millis(2),
                Duration::from_millis(50),
            ))
            .with_observer(observer);
        let label = peer.which().name();
        let exchange = support::block_on(lockstep::echo_numbers(
            &mut ws,
            |w| w.generation(),
            &mut connected,
            100,
            label,
        ));
        assert_eq!(exchange.echoed, (0..100).collect::<Vec<_>>(), "{label}");
        assert!(ws.generation() >= 10, "{label}: generation {}", ws.generation());
        assert!(
            peer.wait_for_stderr(Duration::from_secs(5), |l| l.iter().filter(|l| *l == "drop").count()
                >= 9)
        );
    }
}

fn upgrade_rejected_with_401_is_not_retried() {
    for peer in peers(&["--mode", "reject", "--status", "401"]) {
        let url = peer.url();
        let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(move || connect(url.clone())).with_retry(
            ExponentialBackoff::new(Duration::from_millis(1), Duration::from_millis(5)),
        );
        let error = support::block_on(ws.next()).unwrap().unwrap_err();
        assert!(error.is_fatal(), "{}: {error:?}", peer.which());
        let cause = error.failure().unwrap().downcast_ref::<ConnectError>().unwrap();
        assert_eq!(cause.status(), Some(401));
        assert!(support::block_on(ws.next()).is_none());
        assert!(peer.wait_for_stderr(Duration::from_secs(5), |l| l.iter().any(|l| l == "reject 401")));
        assert_eq!(peer.count("reject 401"), 1, "{}: retried a 401", peer.which());
    }
}

fn upgrade_rejected_with_503_and_retry_after_waits_at_least_that_long() {
    for peer in peers(&["--mode", "reject", "--status", "503", "--retry-after", "1"]) {
        let url = peer.url();
        let log = Recorder::new();
        let ws: ReconnectingStream<_, Message> = ReconnectingStream::new(move || connect(url.clone()))
            .with_retry(
                ExponentialBackoff::new(Duration::from_millis(10), Duration::from_millis(100))
                    .with_jitter(Jitter::None),
            )
            .with_observer(log.observer());
        let (failed_tx, failed_rx) = mpsc::unbounded::<()>();
        let mut ws = ws.with_observer(move |event: &Event| {
            if let Event::ConnectFailed { .. } = event {
                let _ = failed_tx.unbounded_send(());
            }
        });
        support::block_on(async {
            // Drive the stream until the second attempt has failed.
            let two_failures = failed_rx.take(2).collect::<Vec<()>>();
            let _ = select(ws.next(), two_failures).await;
        });
        let log = log.timed();
        let failed: Vec<Instant> = log
            .iter()
            .filter(|(_, e)| matches!(e, Event::ConnectFailed { .. }))
            .map(|(at, _)| *at)
            .collect();
        let delays: Vec<Duration> = log
            .iter()
            .filter_map(|(_, e)| match e {
                Event::RetryScheduled { delay, .. } => Some(*delay),
                _ => None,
            })
            .collect();
        assert_eq!(
            delays[0],
            Duration::from_secs(1),
            "{}: Retry-After overrides the 10 ms policy",
            peer.which()
        );
        assert!(
            failed[1] - failed[0] >= Duration::from_secs(1),
            "{}: retried after {:?}",
            peer.which(),
            failed[1] - failed[0]
        );
    }
}

fn upgrade_rejected_with_500_is_retried_with_backoff() {
    for peer in peers(&["--mode", "reject", "--status", "500"]) {
        let url = peer.url();
        let log = Recorder::new();
        let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(move || connect(url.clone()))
            .with_retry(
                ExponentialBackoff::new(Duration::from_millis(5), Duration::from_secs(1))
                    .with_jitter(Jitter::None)
                    .with_max_attempts(4),
            )
            .with_observer(log.observer());
        let error = support::block_on(ws.next()).unwrap().unwrap_err();
        assert!(error.is_gave_up(), "{}: {error:?}", peer.which());
        let delays: Vec<Duration> = log
            .timed()
            .iter()
            .filter_map(|(_, e)| match e {
                Event::RetryScheduled { delay, .. } => Some(*delay),
                _ => None,
            })
            .collect();
        assert_eq!(delays, [5, 10, 20].map(Duration::from_millis), "{}", peer.which());
        assert!(peer.wait_for_stderr(Duration::from_secs(5), |l| l
            .iter()
            .filter(|l| *l == "reject 500")
            .count()
            == 4));
    }
}

fn a_server_close_with_1012_reconnects() {
    for peer in peers(&["--mode", "close", "--close-code", "1012", "--n", "1"]) {
        let url = peer.url();
        let log = Recorder::new();
        let ws = ReconnectingStream::new(move || connect(url.clone()))
            .with_retry(ExponentialBackoff::new(
                Duration::from_millis(1),
                Duration::from_millis(5),
            ))
            .with_observer(log.observer());
        let (tx, mut connected) = mpsc::unbounded::<u64>();
        let mut ws = ws.with_observer(move |event: &Event| {
            if let Event::Connected { generation, .. } = event {
                let _ = tx.unbounded_send(*generation);
            }
        });
        support::block_on(async {
            // Each connection closes with 1012 after one message: send one per connection until the third.
            while ws.generation() < 3 {
                ws.send(Message::text("ping")).await.unwrap();
                let current = ws.generation();
                loop {
                    match select(ws.next(), connected.next()).await {
                        Either::Right((Some(generation), _)) if generation > current => break,
                        Either::Left((Some(Err(error)), _)) => panic!("{}: {error:?}", peer.which()),
                        _ => {}
                    }
                }
            }
        });
        let codes: Vec<Option<u16>> = log
            .timed()
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Disconnected { reason, .. } => Some(reason.close_code()),
                _ => None,
            })
            .collect();
        assert!(codes.len() >= 2, "{}: {codes:?}", peer.which());
        assert!(codes.iter().all(|c| *c == Some(1012)), "{}: {codes:?}", peer.which());
    }
}

struct TempCert {
    dir: std::path::PathBuf,
    der: Vec<u8>,
}

impl TempCert {
    fn new() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!("stream-tungstenite-interop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
        Self {
            der: certified.cert.der().to_vec(),
            dir,
        }
    }

    fn args(&self) -> [String; 2] {
        [
            self.dir.join("cert.pem").display().to_string(),
            self.dir.join("key.pem").display().to_string(),
        ]
    }
}

impl Drop for TempCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wss_with_a_self_signed_certificate_trusted_through_a_custom_root_and_refused_without() {
    let cert = TempCert::new();
    let [cert_path, key_path] = cert.args();
    for peer in peers(&["--mode", "echo", "--cert", &cert_path, "--key", &key_path]) {
        let connector = WsConnector::builder(peer.url())
            .with_root_certificate(cert.der.clone().into())
            .build();
        let mut trusted = ReconnectingStream::new(connector);
        support::block_on(async {
            trusted.send(Message::text("over tls")).await.unwrap();
            assert_eq!(
                trusted.next().await.unwrap().unwrap(),
                Message::text("over tls"),
                "{}",
                peer.which()
            );
        });

        let url = peer.url();
        let mut untrusted: ReconnectingStream<_, Message> = ReconnectingStream::new(move || connect(url.clone()));
        let error = support::block_on(untrusted.next()).unwrap().unwrap_err();
        assert!(error.is_fatal(), "{}: {error:?}", peer.which());
        let cause = error.failure().unwrap().downcast_ref::<ConnectError>().unwrap();
        assert!(cause.is_certificate_error(), "{}: {cause:?}", peer.which());
    }
}

fn main() {
    let tests: [(&str, fn()); 7] = [
        ("echo", echo as fn()),
        (
            "drop_every_n_loses_nothing_queued",
            drop_every_n_loses_nothing_queued as fn(),
        ),
        (
            "upgrade_rejected_with_401_is_not_retried",
            upgrade_rejected_with_401_is_not_retried as fn(),
        ),
        (
            "upgrade_rejected_with_503_and_retry_after_waits_at_least_that_long",
            upgrade_rejected_with_503_and_retry_after_waits_at_least_that_long as fn(),
        ),
        (
            "upgrade_rejected_with_500_is_retried_with_backoff",
            upgrade_rejected_with_500_is_retried_with_backoff as fn(),
        ),
        (
            "a_server_close_with_1012_reconnects",
            a_server_close_with_1012_reconnects as fn(),
        ),
        (
            "wss_with_a_self_signed_certificate_trusted_through_a_custom_root_and_refused_without",
            wss_with_a_self_signed_certificate_trusted_through_a_custom_root_and_refused_without as fn(),
        ),
    ];
    run_needing("interop", &Impl::ALL, &tests);
}
