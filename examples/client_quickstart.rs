//! The quick start of stream-tungstenite 0.6.1, on [`WebSocketClient`], with `run()` spawned on smol.
//!
//! Run it with `cargo run --example client_quickstart`. No outside server is needed: it starts a small feed
//! server on 127.0.0.1 (a thread running `async_io::block_on`, one more per connection). The client code is the
//! 0.6.1 quick start, word for word but for three things: the runtime's spawn call (`smol::spawn`), the 0.7
//! name of the builder's setter (`with_receive_timeout` for `receive_timeout`), and an end, so that the example
//! stops by itself (the loop ends on the server's `bye`, then `shutdown()`).
//!
//! The server, per connection:
//!
//! - connection 1 waits for the client's first message and echoes it, sends `tick 1.1` to `tick 1.3`, then
//!   drops the TCP connection (no Close frame): the client reconnects by itself, with backoff;
//! - connection 2 sends `tick 2.1` to `tick 2.3` and `bye`, then answers the client's Close.
//!
//! The client prints every message as it arrives, then the connection's events and a summary from
//! `client.state()`.

use std::error::Error;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;
use futures::StreamExt;
use stream_tungstenite::prelude::*;

/// A safety net: a healthy run takes a fraction of a second.
const TIME_LIMIT: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn Error>> {
    std::thread::spawn(|| {
        std::thread::sleep(TIME_LIMIT);
        eprintln!("[example] still running after {TIME_LIMIT:?}: giving up");
        std::process::exit(1);
    });
    let addr = start_feed_server()?;
    println!("[server] listening on ws://{addr}/ws");
    smol::block_on(quick_start(format!("ws://{addr}/ws")))
}

async fn quick_start(url: String) -> Result<(), Box<dyn Error>> {
    // The 0.6.1 quick start.
    let client = WebSocketClient::builder(url)
        .with_receive_timeout(Duration::from_secs(30))
        .build();
    let mut messages = client.subscribe();
    let client = Arc::new(client);
    let driver = smol::spawn({
        let client = client.clone();
        async move { client.run().await }
    });

    // Not in the quick start: watch the connection's events (printed at the end), and send one message (it is
    // queued until a connection is up).
    let mut events = client.subscribe_events();
    client.sender().send_text("hello from the client").await?;

    while let Ok(msg) = messages.recv().await {
        println!("Received: {:?}", msg);
        // The end of this server's feed: stop (the 0.6.1 loop runs for as long as the client lives).
        if msg.to_text().ok() == Some("bye") {
            break;
        }
    }

    client.shutdown().await;
    driver.await?;
    println!("[events]");
    while let Ok(Some(event)) = events.try_recv() {
        print_event(&event);
    }
    let state = client.state();
    println!(
        "[summary] {} connections ({} reconnect), {} failed attempts; received {} messages ({} bytes), sent {} ({} bytes); status {:?}, running: {}",
        state.generation,
        state.reconnects,
        state.failed_attempts,
        state.messages_received,
        state.bytes_received,
        state.messages_sent,
        state.bytes_sent,
        state.status,
        state.running,
    );
    if let Some(last) = &state.last_disconnect {
        println!(
            "[summary] last disconnect: connection {} after {:?}, close code {:?}: {}",
            last.generation, last.uptime, last.close_code, last.reason
        );
    }
    Ok(())
}

fn print_event(event: &Event) {
    match event {
        Event::Connecting { attempt } => println!("  connecting (attempt {attempt})"),
        Event::Connected { attempt, .. } => println!("  connected (attempt {attempt})"),
        Event::Disconnected { reason, uptime, .. } => println!(
            "  disconnected after {uptime:?}: {reason} (close code {:?})",
            reason.close_code()
        ),
        Event::RetryScheduled { attempt, delay, .. } => println!("  attempt {attempt} in {delay:?}"),
        Event::Closed { unsent } => println!("  closed ({unsent} unsent)"),
        other => println!("  {other:?}"),
    }
}

/// Starts the feed server described in the module docs; returns its address.
fn start_feed_server() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let connections = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("feed-server".into()).spawn(move || {
        for tcp in listener.incoming().flatten() {
            let number = connections.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::spawn(move || async_io::block_on(serve(tcp, number)));
        }
    })?;
    Ok(addr)
}

/// One connection of the feed server.
async fn serve(tcp: TcpStream, number: usize) {
    let Ok(tcp) = Async::new(tcp) else { return };
    let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
        return;
    };
    if number == 1 {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                if ws.send(Message::text(format!("echo: {text}"))).await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
    for tick in 1..=3 {
        if ws.send(Message::text(format!("tick {number}.{tick}"))).await.is_err() {
            return;
        }
    }
    if number == 1 {
        println!("[server] dropping connection 1");
        return;
    }
    if ws.send(Message::text("bye")).await.is_err() {
        return;
    }
    // Read until the client's Close (tungstenite answers it) or the end of the connection.
    while let Some(Ok(_)) = ws.next().await {}
}
