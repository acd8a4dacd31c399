//! Runtime independence, shown: one end-to-end scenario run under tokio (multi-thread), async-std, smol and
//! `futures::executor`.
//!
//! A loopback WebSocket echo server drops the TCP connection after every `DROP_EVERY` messages. The client sends
//! a numbered sequence in lockstep through a `ReconnectingStream` and must get every echo back. A message
//! flushed to a socket that the server then drops can die in the kernel: the library guarantees delivery to a
//! flushed connection, not end to end. So, as a real application would, the client sends a number again when
//! the connection generation changes while it waits for that number's echo.

#[path = "../support/mod.rs"]
mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;
use async_tungstenite::tungstenite;
use futures::{SinkExt, StreamExt};
use stream_tungstenite::retry::ExponentialBackoff;
use stream_tungstenite::ReconnectingStream;
use support::lockstep;

const MESSAGES: u32 = 200;
const DROP_EVERY: usize = 25;

/// Starts an echo server on 127.0.0.1:0 that drops each connection after `DROP_EVERY` messages.
/// Returns its address and a counter of accepted connections.
fn start_dropping_echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        async_io::block_on(async move {
            let listener = Async::new(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
                    continue;
                };
                let mut echoed = 0;
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        break;
                    }
                    echoed += 1;
                    if echoed == DROP_EVERY {
                        break; // drop TCP without a close handshake
                    }
                }
            }
        })
    });
    (addr, accepted)
}

async fn scenario() {
    let (addr, accepted) = start_dropping_echo_server();
    let (observer, mut connected) = lockstep::connected_channel();
    let mut conn = ReconnectingStream::new(move || async move {
        let tcp = Async::<TcpStream>::connect(addr).await?;
        let (ws, _) = async_tungstenite::client_async(format!("ws://{addr}/"), tcp).await?;
        Ok::<_, tungstenite::Error>(ws)
    })
    .with_retry(ExponentialBackoff::new(
        Duration::from_millis(5),
        Duration::from_millis(50),
    ))
    .with_observer(observer);

    let exchange = lockstep::echo_numbers(&mut conn, |c| c.generation(), &mut connected, MESSAGES, "runtimes").await;
    assert_eq!(exchange.echoed, (0..MESSAGES).collect::<Vec<_>>());
    let drops = MESSAGES as usize / DROP_EVERY;
    assert!(
        conn.generation() as usize >= drops,
        "generation {} after {drops} drops",
        conn.generation()
    );
    assert_eq!(accepted.load(Ordering::SeqCst), conn.generation() as usize);
    assert!(
        exchange.resent <= conn.generation() as usize,
        "resent {} times",
        exchange.resent
    );
    conn.close().await.unwrap();
    assert!(conn.next().await.is_none());
}

/// The scenario, failing instead of hanging (the bound's timer is async-io's: it works on every runtime).
async fn bounded(scenario: impl std::future::Future<Output = ()>) {
    support::within(support::LIMIT, scenario).await.expect("the scenario");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_multi_thread() {
    bounded(scenario()).await;
}

#[async_std::test]
async fn async_std() {
    bounded(scenario()).await;
}

#[test]
fn smol() {
    smol::block_on(bounded(scenario()));
}

#[test]
fn futures_executor() {
    futures::executor::block_on(bounded(scenario()));
}
