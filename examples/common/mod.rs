//! The local WebSocket echo server shared by the `echo_*` examples.
//!
//! This file is a module, not an example: Cargo only discovers `examples/*.rs` and `examples/*/main.rs`, so
//! `examples/common/mod.rs` is compiled only into the examples that declare `mod common;`.
//!
//! The server runs on its own thread with `async_io::block_on` (no async runtime), one more thread per
//! connection. For each connection it:
//!
//! 1. sends the greeting `welcome to connection N` (N counts connections from 1),
//! 2. echoes every text and binary message,
//! 3. drops the TCP connection without a Close frame when it receives the text `drop`, so the examples can
//!    show a reconnection,
//! 4. answers a Close frame with a Close frame (tungstenite does that on the next read).

use futures::{SinkExt, Stream, StreamExt};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stream_tungstenite::retry::ExponentialBackoff;
use stream_tungstenite::ReconnectingStream;

use async_io::Async;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::Event;

/// Starts the echo server on `127.0.0.1` (a free port) and returns its address.
///
/// # Errors
///
/// If binding the listener or starting its thread fails.
pub(crate) fn start_echo_server() -> std::io::Result<SocketAddr> {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    std::thread::Builder::new()
        .name("echo-server".into())
        .spawn(move || async_io::block_on(accept_loop(listener)))?;
    Ok(addr)
}

/// Ends the process with a failure if it is still running after `limit`: a safety net, so an example never
/// hangs (a healthy run takes well under a second).
pub(crate) fn exit_after(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("[example] still running after {limit:?}: giving up");
        std::process::exit(1);
    });
}

/// Prints the interesting [`Event`]s of a stream: use it as an observer.
pub(crate) fn print_event(event: &Event) {
    match event {
        Event::Connected { generation, .. } => {
            println!("[event] connected (generation {generation})")
        }
        Event::Disconnected { reason, .. } => {
            println!("[event] disconnected: {}", error_chain(reason))
        }
        Event::RetryScheduled { attempt, delay, .. } => {
            println!("[event] attempt {attempt} in {delay:?}")
        }
        Event::Closed { unsent } => println!("[event] closed ({unsent} unsent)"),
        _ => {}
    }
}

/// A message in one short line.
pub(crate) fn describe(message: &Message) -> String {
    match message {
        Message::Text(text) => format!("{:?}", text.as_str()),
        Message::Binary(bytes) => format!("{:?} (binary)", bytes.as_ref()),
        other => format!("{other:?}"),
    }
}

/// An error and its sources, joined with `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source in their own message.
        if !line.ends_with(&cause_text) {
            line.push_str(": ");
            line.push_str(&cause_text);
        }
        source = cause.source();
    }
    line
}

async fn accept_loop(listener: Async<TcpListener>) {
    let connections = Arc::new(AtomicU32::new(0));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _peer)) => tcp,
            Err(error) => {
                eprintln!("[server] accept failed: {error}");
                continue;
            }
        };
        let number = connections.fetch_add(1, Ordering::Relaxed) + 1;
        // One thread per connection keeps the server free of any executor.
        let spawned = std::thread::Builder::new()
            .name(format!("echo-connection-{number}"))
            .spawn(move || async_io::block_on(serve(tcp, number)));
        if let Err(error) = spawned {
            eprintln!("[server] could not start a connection thread: {error}");
        }
    }
}

async fn serve(tcp: Async<TcpStream>, number: u32) {
    let mut ws = match async_tungstenite::accept_async(tcp).await {
        Ok(ws) => ws,
        Err(error) => {
            eprintln!("[server] websocket upgrade failed: {error}");
            return;
        }
    };
    let greeting = Message::text(format!("welcome to connection {number}"));
    if ws.send(greeting).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = ws.next().await {
        let echo = match &message {
            Message::Text(text) if text.as_str() == "drop" => {
                println!("[server] dropping connection {number} as asked (no Close frame)");
                return;
            }
            Message::Text(_) | Message::Binary(_) => true,
            // Pings are answered by tungstenite; a Close is answered on the next read, which then ends.
            _ => false,
        };
        if echo && ws.send(message).await.is_err() {
            return;
        }
    }
}

/// The whole client session every echo example runs, whatever the runtime (the stream names none): greet,
/// echo a few messages, have the server drop the connection, ride through the reconnect, close.
pub(crate) async fn echo_session(runtime: &str) -> Result<(), Box<dyn std::error::Error>> {
    let addr = start_echo_server()?;
    let url = format!("ws://{addr}/");
    println!("[server] echoing on {url}");

    let mut ws = ReconnectingStream::new(move || stream_tungstenite::connect(url.clone()))
        .with_retry(ExponentialBackoff::new(
            Duration::from_millis(50),
            Duration::from_secs(2),
        ))
        .with_observer(print_event);

    println!("[client] {}", describe(&recv(&mut ws).await?));
    for text in ["hello", "from", runtime] {
        ws.send(Message::text(text)).await?;
        println!("[client] sent {text:?}, echo: {}", describe(&recv(&mut ws).await?));
    }

    println!("[client] asking the server to drop the connection");
    ws.send(Message::text("drop")).await?;
    // The drop is not an item: the stream reconnects and yields the new connection's greeting.
    println!("[client] {}", describe(&recv(&mut ws).await?));

    ws.send(Message::binary(vec![1u8, 2, 3])).await?;
    println!("[client] sent 3 bytes, echo: {}", describe(&recv(&mut ws).await?));

    ws.close().await?;
    println!("[client] closed after {} connections", ws.generation());
    Ok(())
}

/// The next message, or an error if the stream ended.
pub(crate) async fn recv<S>(ws: &mut S) -> Result<Message, Box<dyn std::error::Error>>
where
    S: Stream<Item = Result<Message, stream_tungstenite::Error>> + Unpin,
{
    match ws.next().await {
        Some(message) => Ok(message?),
        None => Err("the stream ended".into()),
    }
}
