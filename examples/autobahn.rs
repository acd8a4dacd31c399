//! An Autobahn|Testsuite client agent: runs every case of a fuzzingserver against one of four clients, so that
//! their verdicts can be compared with bare async-tungstenite's.
//!
//! ```sh
//! cargo run --release --example autobahn -- <agent> <server-url>   # e.g. bare ws://127.0.0.1:9001
//! ```
//!
//! `.ci/autobahn` starts the fuzzingserver (on 127.0.0.1), runs this example once per agent and compares the
//! verdicts; see the README's "Conformance (Autobahn)". The agents:
//!
//! - `bare`: async-tungstenite's own client over an `async_io::Async<TcpStream>` (`TCP_NODELAY`, as
//!   [`connect`](stream_tungstenite::connect) sets it), with the limits and read buffer that `connect` uses;
//! - `connect`: one [`WsConnection`](stream_tungstenite::WsConnection) from
//!   [`stream_tungstenite::connect`] per case;
//! - `reconnecting`: a [`ReconnectingStream`] over `connect` with [`NoRetry`], so that a case is not run again
//!   after the server closes it;
//! - `client`: a [`WebSocketClient`] with `no_retry()`, echoing through a subscription and a sender while its
//!   `run()` is driven on the same thread.
//!
//! Each asks the server for its case count, runs every case (`/runCase?case=N&agent=<agent>`), echoing every
//! text and binary message unchanged until the connection ends, then asks the server to write its reports
//! (`/updateReports?agent=<agent>`). The two control calls go through the bare client whatever the agent:
//! only the cases are under test. The example exits non-zero if a case could not even be connected.
//!
//! Nothing here is bounded by a timer: the fuzzingserver ends every case, and the caller bounds the whole
//! run (`.ci/run` uses `timeout`).

use std::error::Error;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::pin;
use std::time::Instant;

use async_io::Async;
use async_tungstenite::WebSocketStream;
use futures::future::{self, Either};
use futures::{Sink, SinkExt, Stream, StreamExt};
use stream_tungstenite::client::ReceiveError;
use stream_tungstenite::retry::NoRetry;
use stream_tungstenite::tungstenite::http::Uri;
use stream_tungstenite::tungstenite::protocol::WebSocketConfig;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::ws::DEFAULT_READ_BUFFER;
use stream_tungstenite::{ReconnectingStream, WebSocketClient};

/// A progress line every this many cases.
const PROGRESS_EVERY: usize = 50;

/// The clients under test: the first argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agent {
    /// async-tungstenite's client, the reference.
    Bare,
    /// [`stream_tungstenite::connect`].
    Connect,
    /// [`ReconnectingStream`] over `connect`, without retries.
    Reconnecting,
    /// [`WebSocketClient`], without retries.
    Client,
}

impl Agent {
    /// Every agent, in the order `.ci/autobahn` runs them.
    const ALL: [Agent; 4] = [Agent::Bare, Agent::Connect, Agent::Reconnecting, Agent::Client];

    /// The agent's name: on the command line, and in the server's reports.
    fn name(self) -> &'static str {
        match self {
            Agent::Bare => "bare",
            Agent::Connect => "connect",
            Agent::Reconnecting => "reconnecting",
            Agent::Client => "client",
        }
    }

    /// The agent called `name`, if there is one.
    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|agent| agent.name() == name)
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names = Agent::ALL.map(Agent::name).join("|");
    let (agent, server) = match args.as_slice() {
        [agent, server] => match Agent::parse(agent) {
            Some(agent) => (agent, server.trim_end_matches('/').to_owned()),
            None => return Err(format!("unknown agent {agent:?}: expected one of {names}").into()),
        },
        _ => return Err(format!("usage: autobahn <{names}> <server-url, e.g. ws://127.0.0.1:9001>").into()),
    };
    async_io::block_on(run_all(agent, &server))
}

/// Runs every case of the server at `server` with `agent`, then has the server update its reports.
async fn run_all(agent: Agent, server: &str) -> Result<(), Box<dyn Error>> {
    let name = agent.name();
    let count = case_count(server).await?;
    println!("[autobahn] {name}: {count} cases");
    let start = Instant::now();
    let mut unreachable = Vec::new();
    for case in 1..=count {
        let url = format!("{server}/runCase?case={case}&agent={name}");
        if let Err(error) = run_case(agent, url).await {
            eprintln!("[autobahn] {name}: case {case}: could not connect: {error}");
            unreachable.push(case);
        }
        if case % PROGRESS_EVERY == 0 || case == count {
            println!("[autobahn] {name}: {case}/{count} cases run ({:.1?})", start.elapsed());
        }
    }
    update_reports(server, name).await?;
    if unreachable.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{name}: {} cases could not be connected: {unreachable:?}",
            unreachable.len()
        )
        .into())
    }
}

/// One case with `agent`: connect to `url`, echo until the connection ends.
async fn run_case(agent: Agent, url: String) -> Result<(), Box<dyn Error>> {
    match agent {
        Agent::Bare => echo(bare_dial(&url).await?).await,
        Agent::Connect => echo(stream_tungstenite::connect(url).await?).await,
        Agent::Reconnecting => {
            let ws = ReconnectingStream::new(move || stream_tungstenite::connect(url.clone())).with_retry(NoRetry);
            echo(ws).await;
        }
        Agent::Client => client_echo(url).await,
    }
    Ok(())
}

/// Echoes every text and binary message until the stream ends or fails, then closes the sink.
async fn echo<S, E>(mut ws: S)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
    // The close handshake, or nothing if the connection is already gone: either way the case is over.
    let _ = ws.close().await;
}

/// A [`WebSocketClient`] for `url`, without retries: echoes through a subscription and a sender while its
/// `run()` is polled on this thread, until the run ends with the connection.
async fn client_echo(url: String) {
    let client = WebSocketClient::builder(url).no_retry().build();
    let mut messages = client.subscribe();
    let sender = client.sender();
    let echo = pin!(async {
        loop {
            match messages.recv().await {
                Ok(msg) if msg.is_text() || msg.is_binary() => {
                    if sender.send(msg).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                // A lag loses messages: the case's verdict will say so; keep echoing what is left.
                Err(ReceiveError::Lagged(missed)) => {
                    eprintln!("[autobahn] client: subscriber missed {missed} messages")
                }
                Err(_) => break,
            }
        }
    });
    let run = pin!(client.run());
    // The run ends when the connection does (no retry); if the echo loop ends first, the run still finishes
    // the connection.
    if let Either::Right(((), run)) = future::select(run, echo).await {
        let _ = run.await;
    }
}

/// async-tungstenite's client over an `Async<TcpStream>`, configured as `stream_tungstenite::connect` is.
async fn bare_dial(url: &str) -> Result<WebSocketStream<Async<TcpStream>>, Box<dyn Error>> {
    let tcp = Async::<TcpStream>::connect(socket_addr(url)?).await?;
    tcp.get_ref().set_nodelay(true)?;
    let (ws, _response) = async_tungstenite::client_async_with_config(url, tcp, Some(ws_config())).await?;
    Ok(ws)
}

/// The `WebSocketConfig` of `stream_tungstenite::connect`: tungstenite's limits (64 MiB per message, 16 MiB
/// per frame) and a [`DEFAULT_READ_BUFFER`] read buffer.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(DEFAULT_READ_BUFFER)
}

/// The address a `ws://host:port/...` URL names.
fn socket_addr(url: &str) -> Result<SocketAddr, Box<dyn Error>> {
    let uri: Uri = url.parse()?;
    let host = uri.host().ok_or_else(|| format!("no host in {url}"))?;
    let port = uri.port_u16().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("{url}: no address").into())
}

/// The server's case count: the text of the first message on `/getCaseCount`.
async fn case_count(server: &str) -> Result<usize, Box<dyn Error>> {
    let mut ws = bare_dial(&format!("{server}/getCaseCount")).await?;
    let count = loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => break text.trim().parse()?,
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => return Err("the server closed /getCaseCount without a count".into()),
        }
    };
    let _ = ws.close(None).await;
    Ok(count)
}

/// Asks the server to write its reports for `agent` and waits until it closes the connection.
async fn update_reports(server: &str, agent: &str) -> Result<(), Box<dyn Error>> {
    let mut ws = bare_dial(&format!("{server}/updateReports?agent={agent}")).await?;
    while let Some(Ok(_)) = ws.next().await {}
    let _ = ws.close(None).await;
    Ok(())
}
