//! Acknowledged sends across dropped connections: every order gets an outcome, none is lost.
//!
//! Run it with `cargo run --example acked_feed`. No outside server is needed: the example starts a local
//! WebSocket server on 127.0.0.1 that answers every order `order N` with `ack N`, and drops the TCP
//! connection (no Close frame) after a random 50 to 150 orders, half the time *before* acking the last one,
//! so that its ack is lost. The client sends 1,000 orders through a [`ReconnectingStream`] with an
//! [`AckLayer`] (window 64): unacked orders go out again first on each new connection, so an order whose
//! ack was lost reaches the server twice (at least once, never zero times). The client awaits every order's
//! outcome, prints progress and every reconnect, and ends with a summary line:
//!
//! `summary: sent 1000, acked 1000, failed 0, lost 0, duplicates at the server 9 (window 64), connections 11`
//!
//! It exits non-zero if an order was lost or failed. No async runtime: sockets and timers come from
//! `async-io`; the same code runs unchanged inside tokio, async-std or smol.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_io::Async;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures::future::{join, select, Either};
use futures::{SinkExt, StreamExt};
use stream_tungstenite::delivery::{Ack, AckLayer, Outcome};
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::ExponentialBackoff;
use stream_tungstenite::{Event, ReconnectingStream};

/// How many orders the client sends.
const ORDERS: u32 = 1000;
/// At most this many orders are unacked at once.
const WINDOW: usize = 64;
/// A safety net: a healthy run takes about a second.
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// What the server received: how many times each order.
type Received = Arc<Mutex<BTreeMap<u32, u32>>>;

fn main() -> ExitCode {
    let received = Received::default();
    let addr = match start_server(Arc::clone(&received)) {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("could not start the server: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("[server] acking orders on ws://{addr}/, dropping each connection after 50 to 150 of them");
    std::thread::spawn(|| {
        std::thread::sleep(TIME_LIMIT);
        eprintln!("[client] not done after {TIME_LIMIT:?}: giving up");
        std::process::exit(1);
    });

    let (acked, failed) = async_io::block_on(run_client(addr));
    let received = received.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let lost = (1..=ORDERS).filter(|n| !received.contains_key(n)).count();
    let duplicates: u32 = received.values().map(|times| times - 1).sum();
    let connections = CONNECTIONS.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "summary: sent {ORDERS}, acked {acked}, failed {failed}, lost {lost}, duplicates at the server \
         {duplicates} (window {WINDOW}), connections {connections}"
    );
    if lost == 0 && failed == 0 && acked == ORDERS {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Sends every order and awaits every outcome; returns how many were acked and how many failed.
async fn run_client(addr: SocketAddr) -> (u32, u32) {
    let number = |message: &Message, prefix: &str| -> Option<u32> {
        match message {
            Message::Text(text) => text.as_str().strip_prefix(prefix)?.parse().ok(),
            _ => None,
        }
    };
    // `order N` is tracked as N; `ack N` acknowledges it.
    let (layer, acks) = AckLayer::new(
        move |message: &Message| number(message, "order "),
        move |message: &Message| number(message, "ack ").map(Ack::Ack),
    );
    let layer = layer.with_window(WINDOW).with_timeout(Duration::from_secs(2));
    let url = format!("ws://{addr}/");
    let connector = ConnectorBuilder::new(move || stream_tungstenite::connect(url.clone()))
        .layer(layer)
        .build();
    let stream = ReconnectingStream::new(connector)
        .with_retry(ExponentialBackoff::new(
            Duration::from_millis(5),
            Duration::from_millis(100),
        ))
        .with_observer(|event: &Event| {
            if let Event::Connected { generation, .. } = event {
                if *generation > 1 {
                    println!("[client] reconnected (connection {generation}); unacked orders go out again first");
                }
            }
        });
    let (mut sink, mut source) = stream.split();

    let send = async {
        for n in 1..=ORDERS {
            if let Err(error) = sink.feed(Message::text(format!("order {n}"))).await {
                eprintln!("[client] the stream ended: {error}");
                return;
            }
        }
        let _ = sink.flush().await;
    };
    let outcomes = async {
        let (mut acked, mut failed) = (0, 0);
        for n in 1..=ORDERS {
            match acks.outcome(&n).await {
                Outcome::Acked => acked += 1,
                Outcome::Nacked(message) | Outcome::Failed(message) => {
                    println!("[client] order {n} failed; handed back: {message:?}");
                    failed += 1;
                }
            }
            if n % 250 == 0 {
                println!("[client] {n} orders have an outcome ({acked} acked, {failed} failed)");
            }
        }
        (acked, failed)
    };
    // Reading is what takes the acks in (they are not delivered: nothing else comes).
    let read = async {
        while let Some(item) = source.next().await {
            if let Err(error) = item {
                eprintln!("[client] the stream ended: {error}");
                break;
            }
        }
    };
    let counts = match select(Box::pin(read), Box::pin(join(send, outcomes))).await {
        Either::Right((((), counts), _)) => counts,
        Either::Left(((), _)) => (0, ORDERS),
    };
    counts
}

static CONNECTIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn start_server(received: Received) -> std::io::Result<SocketAddr> {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    std::thread::spawn(move || {
        async_io::block_on(async {
            loop {
                let Ok((tcp, _peer)) = listener.accept().await else {
                    continue;
                };
                CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let Err(error) = serve(tcp, &received).await {
                    println!("[server] connection failed: {error}");
                }
            }
        })
    });
    Ok(addr)
}

/// Acks every order; after a random 50 to 150, drops the connection without a Close frame, half the time
/// before acking the last order it got.
async fn serve(tcp: Async<TcpStream>, received: &Received) -> Result<(), WsError> {
    let mut ws = async_tungstenite::accept_async(tcp).await?;
    let limit = fastrand::u32(50..=150);
    let mut count = 0;
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let Some(n) = text.as_str().strip_prefix("order ").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        *received.lock().unwrap_or_else(|e| e.into_inner()).entry(n).or_default() += 1;
        count += 1;
        if count == limit && fastrand::bool() {
            println!("[server] dropping the connection after order {n}, before its ack");
            return Ok(());
        }
        ws.send(Message::text(format!("ack {n}"))).await?;
        if count == limit {
            println!("[server] dropping the connection after order {n} and its ack");
            return Ok(());
        }
    }
    Ok(())
}
