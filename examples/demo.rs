//! A reconnecting WebSocket client against a flaky local echo server.
//!
//! Run it with `cargo run --example demo`. No outside server is needed: the demo starts a WebSocket echo
//! server on 127.0.0.1 that drops the TCP connection (no Close frame) after a random 20 to 60 messages. The
//! client sends "msg 1", "msg 2", ... through a [`ReconnectingStream`], reads the echoes, prints every event,
//! and exits with a summary: non-zero if any message never came back.
//!
//! No async runtime is involved: sockets and timers come from `async-io`, the client runs in
//! `async_io::block_on`, and the same code runs unchanged inside tokio, async-std or smol.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use async_io::{Async, Timer};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures::channel::mpsc;
use futures::{FutureExt, SinkExt, StreamExt};
use stream_tungstenite::retry::ExponentialBackoff;
use stream_tungstenite::{BoxError, Event, ReconnectingStream};

/// How many numbered messages the client sends.
const MESSAGES: u32 = 400;
/// How many messages may be on their way (sent, echo not yet received) at once.
const WINDOW: usize = 8;
/// A safety net: a healthy run takes a few seconds.
const TIME_LIMIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let addr = match start_echo_server() {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("could not start the echo server: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("[server] echoing on ws://{addr}/, dropping each connection after 20 to 60 messages");

    match async_io::block_on(run_client(addr)) {
        Ok(summary) => {
            println!("{summary}");
            if summary.lost() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("[client] the stream ended: {error}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------------------------

async fn run_client(addr: SocketAddr) -> Result<Summary, stream_tungstenite::Error> {
    // The connector: called once per attempt, it dials TCP and upgrades to WebSocket.
    let url = format!("ws://{addr}/");
    let connect = move || {
        let url = url.clone();
        async move {
            let tcp = Async::<TcpStream>::connect(addr).await?;
            let (ws, _response) = async_tungstenite::client_async(url, tcp).await?;
            Ok::<_, BoxError>(ws)
        }
    };

    // The observer prints every event on one line, and forwards each new connection's generation into a
    // channel so that the loop below can react to it. Observers run inside the stream's poll, so they must not
    // block: an unbounded channel's `unbounded_send` never does.
    let (connected_tx, mut connected) = mpsc::unbounded::<u64>();
    let observer = move |event: &Event| {
        println!("[client] {}", describe(event));
        if let Event::Connected { generation, .. } = event {
            let _ = connected_tx.unbounded_send(*generation);
        }
    };

    // Each connection here lives for a millisecond or so, far less than `stable_after` (5 s by default), so
    // every drop counts as a failed attempt and the retry delays grow towards the 500 ms cap instead of
    // starting over: flap-aware backoff. Only a connection that stays up that long resets them.
    let mut conn = ReconnectingStream::new(connect)
        .with_retry(ExponentialBackoff::new(
            Duration::from_millis(10),
            Duration::from_millis(500),
        ))
        .with_observer(observer);

    // The library delivers every accepted message to a connection whose flush completed (or hands it back),
    // but a flushed message can still be lost: when the server drops the connection, whatever sat in the
    // kernel's socket buffers is gone, and so are echoes on their way back. End-to-end delivery is the
    // application's job, and the generation number exists exactly for it: every connection has one, and a gap
    // can only happen where the generation changes. So the client remembers, for each number whose echo it is
    // waiting for, the generation of the connection it was flushed to; when a newer connection comes up, it
    // sends those numbers again.
    let mut waiting: BTreeMap<u32, u64> = BTreeMap::new(); // number -> generation it was flushed to
    let mut resend: Vec<u32> = Vec::new();
    let mut summary = Summary::default();
    let mut next_number = 1;
    let mut deadline = FutureExt::fuse(Timer::after(TIME_LIMIT)); // (a Timer is also a Stream)

    while next_number <= MESSAGES || !waiting.is_empty() || !resend.is_empty() {
        // Send the numbers to resend, then new ones, keeping at most WINDOW on their way.
        let mut batch = std::mem::take(&mut resend);
        while waiting.len() + batch.len() < WINDOW && next_number <= MESSAGES {
            batch.push(next_number);
            next_number += 1;
        }
        for &number in &batch {
            // `feed` queues without flushing; the `flush` below sends the whole batch.
            conn.feed(Message::text(format!("msg {number}"))).await?;
        }
        conn.flush().await?;
        // `flush` returned: the batch was flushed to the current connection (if one failed on the way, the
        // library re-sent what it had not flushed on the next one).
        let generation = conn.generation();
        for number in batch {
            summary.record_sent(number);
            waiting.insert(number, generation);
        }

        futures::select_biased! {
            // A new connection: whatever was flushed to an older one may be lost, so send it again.
            new_generation = connected.next() => {
                let Some(new_generation) = new_generation else { continue };
                resend = waiting.iter().filter(|&(_, &g)| g < new_generation).map(|(&n, _)| n).collect();
                for number in &resend {
                    waiting.remove(number);
                }
            }
            // An echo. When another branch wins, the pending `next()` is dropped, which loses nothing.
            echo = conn.next() => match echo {
                Some(Ok(Message::Text(text))) => {
                    if let Some(number) = text.strip_prefix("msg ").and_then(|n| n.parse().ok()) {
                        summary.record_echo(number);
                        waiting.remove(&number);
                    }
                }
                Some(Ok(_)) => {} // pings and pongs: tungstenite answers them itself
                Some(Err(error)) => return Err(error), // the retry policy gave up (this one never does)
                None => break,
            },
            _ = deadline => {
                println!("[client] time limit reached, {} echoes missing", waiting.len() + resend.len());
                break;
            }
        }
    }

    summary.reconnects = conn.generation().saturating_sub(1);
    // Close: flush what is queued, send a Close frame, and never reconnect.
    if let Err(error) = conn.close().await {
        println!("[client] close: {error}");
    }
    Ok(summary)
}

/// One line per event.
fn describe(event: &Event) -> String {
    match event {
        Event::Connecting { attempt } => format!("connecting (attempt {attempt})"),
        Event::Connected { generation, attempt } => {
            format!("connected: generation {generation} (attempt {attempt})")
        }
        Event::ConnectFailed { failure } => format!("connect failed: {}", with_cause(failure)),
        Event::Disconnected {
            generation,
            uptime,
            reason,
        } => {
            format!(
                "disconnected: generation {generation} was up {uptime:.1?}: {}",
                with_cause(reason)
            )
        }
        Event::RetryScheduled {
            attempt,
            failures,
            delay,
        } => {
            format!("retry: attempt {attempt} in {delay:.1?} (failures in a row: {failures})")
        }
        Event::GaveUp {
            failures,
            unsent,
            reason,
        } => {
            format!(
                "gave up after {failures} failures, {unsent} unsent: {}",
                with_cause(reason)
            )
        }
        Event::Closed { unsent } => format!("closed ({unsent} unsent)"),
        other => format!("{other:?}"),
    }
}

/// A failure with its underlying error, e.g. "connection 3 ended" or "reading from connection 2 failed: ...".
fn with_cause(failure: &stream_tungstenite::Failure) -> String {
    match failure.source_error() {
        Some(cause) => format!("{failure}: {cause}"),
        None => failure.to_string(),
    }
}

/// What the client saw. Everything is counted, nothing assumed.
#[derive(Debug, Default)]
struct Summary {
    /// Distinct numbers sent.
    sent: BTreeSet<u32>,
    /// Numbers sent again after a reconnect.
    resent: u32,
    /// Distinct numbers echoed.
    echoed: BTreeSet<u32>,
    /// Echoes of a number already echoed.
    duplicates: u32,
    /// Connections after the first.
    reconnects: u64,
}

impl Summary {
    fn record_sent(&mut self, number: u32) {
        if !self.sent.insert(number) {
            self.resent += 1;
        }
    }

    fn record_echo(&mut self, number: u32) {
        if !self.echoed.insert(number) {
            self.duplicates += 1;
        }
    }

    /// Numbers sent whose echo never arrived.
    fn lost(&self) -> usize {
        self.sent.difference(&self.echoed).count()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "summary: sent {} messages ({} resent after a reconnect), echoes received {} unique, \
             {} duplicates, {} reconnects, lost {}",
            self.sent.len(),
            self.resent,
            self.echoed.len(),
            self.duplicates,
            self.reconnects,
            self.lost()
        )
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The flaky echo server
// ---------------------------------------------------------------------------------------------------------------

/// Starts the echo server on its own thread and returns its address.
fn start_echo_server() -> std::io::Result<SocketAddr> {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    std::thread::spawn(move || {
        async_io::block_on(async {
            // One connection at a time is enough for one client.
            loop {
                let Ok((tcp, _peer)) = listener.accept().await else {
                    continue;
                };
                if let Err(error) = echo(tcp).await {
                    println!("[server] connection failed: {error}");
                }
            }
        })
    });
    Ok(addr)
}

/// Echoes text messages, then drops the connection without a Close frame after a random 20 to 60 of them.
async fn echo(tcp: Async<TcpStream>) -> Result<(), WsError> {
    let mut ws = async_tungstenite::accept_async(tcp).await?;
    let limit = fastrand::u32(20..=60);
    let mut echoed = 0;
    while let Some(message) = ws.next().await {
        match message? {
            text @ Message::Text(_) => {
                ws.send(text).await?;
                echoed += 1;
                if echoed == limit {
                    println!("[server] dropping the connection after {echoed} messages");
                    return Ok(()); // `ws` is dropped here: the TCP connection closes abruptly
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}
