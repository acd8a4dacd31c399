//! An authenticated, subscribed feed over a connection that keeps dropping: the handshakes run again on every
//! connection, with a fresh token each time.
//!
//! Run it with `cargo run --example auth_subscribe`. No outside server is needed: the example starts a feed
//! server on 127.0.0.1 that speaks a small JSON protocol:
//!
//! ```text
//! client                                         server
//! {"type":"auth","token":"token-7"}          ->
//!                                            <-  {"type":"auth_ok","conn":4}      ({"type":"auth_failed"} if bad)
//! {"type":"subscribe","channel":"trades"}    ->
//! {"type":"subscribe","channel":"book"}      ->
//!                                            <-  {"type":"subscribed","channel":"trades","conn":4}
//!                                            <-  {"type":"subscribed","channel":"book","conn":4}
//!                                            <-  {"type":"update","channel":"trades","conn":4,"seq":0}  every 4 ms
//!                                            <-  ...                                  (TCP cut after 30 to 50)
//! ```
//!
//! It accepts `token-<n>` for any `n` (a token that rotates on every dial, as a refreshed credential would),
//! and refuses anything else. `conn` is the server's index of the connection, so the client can tell which
//! connection an update came from.
//!
//! The client first shows that a bad token is fatal (one attempt, no retry loop). Then it runs a
//! [`ReconnectingStream`] whose connector is built from hooks and layers:
//!
//! ```text
//! ConnectorBuilder::new(dial)
//!     .hook(Metrics)     outermost: counts user traffic only, not handshake frames or pings
//!     .hook(Heartbeat)   pings every 50 ms; a connection silent for 500 ms after a ping is replaced
//!                        (the two hooks run in one wrapper)
//!     .layer(chain_handshakers!(auth, subscribe))   innermost: runs first on each new connection
//!     .build()
//! ```
//!
//! It prints every event on one line, reads updates until it has 400 of them over at least 6 connections, and
//! ends with a one-line summary. Both sides check the contracts as they go, and the example exits non-zero if
//! any check failed:
//!
//! - server: no update, and no message from the client's user code, before auth and every subscription on
//!   that connection; no subscription before auth; every accepted token newer than the one before (rotation);
//! - client: no update arrives while a handshake still waits for its reply (the reply predicates see every
//!   data message); every update comes from a connection whose auth and subscriptions the handshakes
//!   confirmed; within a connection, `seq` runs 0, 1, 2, ... without a gap; each server connection is one
//!   generation; every dial asks for a new token; the metrics hook counts as many connections as the stream
//!   has generations.
//!
//! The server also cuts one connection in the middle of the subscribe handshake, to show a handshake failure
//! and its retry with a new token. The client acknowledges every 50 updates (user traffic, queued while
//! disconnected and sent after the next connection's handshakes); an acknowledgement flushed just before the
//! server cuts the connection is lost with it, as anything in flight on a dropped TCP connection is, so the
//! server may count one fewer than were sent. No async runtime is involved: sockets and timers come from
//! `async-io`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Value};
use stream_tungstenite::extension::{Heartbeat, Metrics, MetricsSnapshot};
use stream_tungstenite::handshake::{AuthHandshaker, SubscribeHandshaker};
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::ExponentialBackoff;
use stream_tungstenite::{chain_handshakers, Event, Failure, ReconnectingStream};

/// The channels the client subscribes to (and the server streams).
const CHANNELS: [&str; 2] = ["trades", "book"];
/// How often the server sends an update.
const UPDATE_EVERY: Duration = Duration::from_millis(4);
/// The server cuts each connection after this many updates (a random number in the range).
const DROP_AFTER: std::ops::RangeInclusive<u64> = 30..=50;
/// The server connection cut during the subscribe handshake (0 is the bad-token check, 1 the first of the run).
const CUT_DURING_SUBSCRIBE: u64 = 3;
/// The client stops once it has this many updates ...
const TARGET_UPDATES: u64 = 400;
/// ... over at least this many connections.
const MIN_CONNECTIONS: u64 = 6;
/// The client acknowledges every this many updates (user traffic, checked by the server).
const ACK_EVERY: u64 = 50;
/// A safety net: a healthy run takes about two seconds.
const TIME_LIMIT: Duration = Duration::from_secs(9);
/// Failed checks printed (all are counted).
const MAX_PRINTED: usize = 20;

fn main() -> ExitCode {
    let server = Arc::new(Mutex::new(ServerLog::default()));
    let addr = match start_feed_server(Arc::clone(&server)) {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("could not start the feed server: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "[server] feed on ws://{addr}/feed: auth, subscribe, an update every {UPDATE_EVERY:?}, a TCP cut \
         after {} to {} updates",
        DROP_AFTER.start(),
        DROP_AFTER.end()
    );

    let started = Instant::now();
    let mut report = match async_io::block_on(run_client(addr)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("[client] the stream ended: {error}");
            return ExitCode::FAILURE;
        }
    };
    report.elapsed = started.elapsed();
    // Let the server finish with the last connection (the client closed it) before reading its log.
    let wait_until = Instant::now() + Duration::from_secs(1);
    while lock(&server).serving && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(5));
    }
    report.check_server(&lock(&server));

    if report.violations.len() > MAX_PRINTED {
        println!("[check] ... and {} more", report.violations.len() - MAX_PRINTED);
    }
    println!("{report}");
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------------------------

/// What the handshakes confirmed, by server connection index: recorded by their reply predicates, which see
/// every data message that arrives while they wait.
#[derive(Debug, Default)]
struct Confirmed {
    auth: BTreeSet<u64>,
    channels: BTreeMap<u64, BTreeSet<String>>,
    /// Updates (server connection, seq) that arrived while a handshake was still waiting for its reply.
    early: BTreeSet<(u64, u64)>,
}

impl Confirmed {
    /// Records `message` if it is an update: one that came before the handshakes were done.
    fn note_early(&mut self, message: &Value) {
        if message["type"] == "update" {
            let conn = message["conn"].as_u64().unwrap_or(u64::MAX);
            self.early.insert((conn, message["seq"].as_u64().unwrap_or(u64::MAX)));
        }
    }
}

/// Lifecycle events, counted by the observer.
#[derive(Debug, Default)]
struct EventCounts {
    connected: u64,
    disconnected: u64,
    handshake_failed: u64,
    retries: u64,
}

async fn run_client(addr: SocketAddr) -> Result<Report, stream_tungstenite::Error> {
    let url = format!("ws://{addr}/feed");
    let mut report = Report::default();

    // 1. A bad token: the server answers auth_failed, `with_reject` makes that fatal, and the stream ends at
    //    once with an error instead of retrying a credential that cannot work.
    let dial = {
        let url = url.clone();
        move || stream_tungstenite::connect(url.clone())
    };
    let refused = ConnectorBuilder::new(dial)
        .layer(
            AuthHandshaker::token("expired")
                .json()
                .with_accept(|message| type_of(message).as_deref() == Some("auth_ok"))
                .with_reject(|message| type_of(message).as_deref() == Some("auth_failed")),
        )
        .build();
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(refused).with_retry(
        // Even with retries allowed, a rejection is not retried.
        ExponentialBackoff::new(Duration::from_millis(10), Duration::from_millis(100)),
    );
    match ws.next().await {
        Some(Err(error)) if error.is_fatal() => {
            let cause = error.failure().map(with_cause).unwrap_or_default();
            println!("[client] bad token: {error}, no retry: {cause}");
        }
        other => report.violation(format!("a bad token should end the stream fatally, got {other:?}")),
    }
    if ws.next().await.is_some() {
        report.violation("the stream went on after a fatal rejection");
    }
    drop(ws);

    // 2. The feed. The token provider is called once per attempt: token-1, token-2, ... as if refreshed.
    let issued = Arc::new(AtomicU64::new(0));
    let provider = {
        let issued = Arc::clone(&issued);
        move || format!("token-{}", issued.fetch_add(1, Ordering::Relaxed) + 1)
    };
    // The reply predicates record what they confirmed, per server connection, for the checks below.
    let confirmed = Arc::new(Mutex::new(Confirmed::default()));
    let auth = {
        let confirmed = Arc::clone(&confirmed);
        AuthHandshaker::new(provider)
            .json()
            .with_accept(move |message| match parse(message) {
                Some(reply) if reply["type"] == "auth_ok" => {
                    lock(&confirmed).auth.insert(reply["conn"].as_u64().unwrap_or(u64::MAX));
                    true
                }
                Some(other) => {
                    lock(&confirmed).note_early(&other);
                    false
                }
                None => false,
            })
            .with_reject(|message| type_of(message).as_deref() == Some("auth_failed"))
    };
    let subscribe = {
        let confirmed = Arc::clone(&confirmed);
        SubscribeHandshaker::new(CHANNELS).with_confirm_channel(move |channel, message| match parse(message) {
            Some(reply) if reply["type"] == "subscribed" && reply["channel"] == channel => {
                let conn = reply["conn"].as_u64().unwrap_or(u64::MAX);
                lock(&confirmed)
                    .channels
                    .entry(conn)
                    .or_default()
                    .insert(channel.to_owned());
                true
            }
            Some(other) => {
                lock(&confirmed).note_early(&other);
                false
            }
            None => false,
        })
    };

    let metrics = Metrics::new();
    let connector = ConnectorBuilder::new(move || stream_tungstenite::connect(url.clone()))
        .hook(metrics.clone())
        .hook(Heartbeat::new(Duration::from_millis(50), Duration::from_millis(500)))
        .layer(chain_handshakers!(auth, subscribe))
        .build();

    let counts = Arc::new(Mutex::new(EventCounts::default()));
    let observer = {
        let counts = Arc::clone(&counts);
        move |event: &Event| observe(event, &mut lock(&counts))
    };
    // Connections here live for about 120 to 200 ms: `stable_after` is set below that, so a connection that
    // delivered its updates resets the backoff, while one cut during its handshake makes the next delay grow.
    let mut ws = ReconnectingStream::new(connector)
        .with_retry(ExponentialBackoff::new(
            Duration::from_millis(10),
            Duration::from_millis(200),
        ))
        .with_stable_after(Duration::from_millis(100))
        .with_observer(observer);

    let mut deadline = FutureExt::fuse(Timer::after(TIME_LIMIT)); // (a Timer is also a Stream)
    while report.updates < TARGET_UPDATES || lock(&counts).connected < MIN_CONNECTIONS {
        let item = futures::select_biased! {
            item = ws.next() => item,
            _ = deadline => {
                report.violation(format!("time limit of {TIME_LIMIT:?} reached"));
                break;
            }
        };
        let text = match item {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue, // pongs answering the heartbeat's pings
            Some(Err(error)) => return Err(error),
            None => break,
        };
        let Ok(update) = serde_json::from_str::<Value>(&text) else {
            report.violation(format!("not JSON: {text}"));
            continue;
        };
        if update["type"] != "update" {
            report.violation(format!("a handshake reply or other frame reached the user: {text}"));
            continue;
        }
        report.check_update(&update, ws.generation(), &lock(&confirmed));
        if report.updates % ACK_EVERY == 0 {
            // User traffic: queued while disconnected, it goes out after the next connection's handshakes.
            let ack = json!({ "type": "ack", "updates": report.updates }).to_string();
            ws.send(Message::text(ack)).await?;
            report.acks += 1;
        }
        if report.updates % 100 == 0 {
            println!(
                "[client] {} updates so far (generation {}, last: {})",
                report.updates,
                ws.generation(),
                text
            );
        }
    }

    // Close: flush, send a Close frame, never reconnect.
    if let Err(error) = ws.close().await {
        println!("[client] close: {error}");
    }
    let counts = lock(&counts);
    report.connections = counts.connected;
    report.reconnects = counts.disconnected;
    report.handshake_failures = counts.handshake_failed;
    report.retries = counts.retries;
    report.tokens_issued = issued.load(Ordering::Relaxed);
    report.metrics = metrics.snapshot();
    report.check_client(ws.generation(), &lock(&confirmed));
    Ok(report)
}

/// Prints one line per event, and counts them.
fn observe(event: &Event, counts: &mut EventCounts) {
    match event {
        Event::Connecting { .. } => {}
        Event::Connected { generation, attempt } => {
            counts.connected += 1;
            println!("[client] connected: generation {generation} (attempt {attempt}), authenticated and subscribed");
        }
        Event::Disconnected {
            generation,
            uptime,
            reason,
        } => {
            counts.disconnected += 1;
            let code = reason
                .close_code()
                .map_or_else(|| "no close code".to_owned(), |code| format!("close code {code}"));
            println!(
                "[client] disconnected: generation {generation} after {} ms, {code}: {}",
                uptime.as_millis(),
                with_cause(reason)
            );
        }
        Event::HandshakeFailed { attempt, failure } => {
            counts.handshake_failed += 1;
            println!("[client] handshake failed (attempt {attempt}): {}", with_cause(failure));
        }
        Event::RetryScheduled { attempt, delay, .. } => {
            counts.retries += 1;
            println!("[client] retry: attempt {attempt} in {} ms", delay.as_millis());
        }
        Event::ConnectFailed { failure } => println!("[client] connect failed: {}", with_cause(failure)),
        Event::GaveUp { reason, .. } => println!("[client] gave up: {}", with_cause(reason)),
        Event::Closed { unsent } => println!("[client] closed ({unsent} unsent)"),
        other => println!("[client] {other:?}"),
    }
}

/// A failure with its chain of underlying errors, e.g. "connection 3 failed: ...: connection reset".
fn with_cause(failure: &Failure) -> String {
    let mut text = failure.to_string();
    let mut next: Option<&(dyn std::error::Error + 'static)> = match failure.source_error() {
        Some(cause) => Some(cause),
        None => None,
    };
    while let Some(cause) = next {
        // Some errors repeat their source's text in their own: show each text once.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        next = cause.source();
    }
    text
}

fn parse(message: &Message) -> Option<Value> {
    serde_json::from_str(message.to_text().ok()?).ok()
}

fn type_of(message: &Message) -> Option<String> {
    parse(message)?["type"].as_str().map(str::to_owned)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------------------------
// The checks and the summary
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Report {
    updates: u64,
    acks: u64,
    /// Per server connection: the next `seq` expected.
    next_seq: BTreeMap<u64, u64>,
    /// Per server connection: the stream generation its updates arrived under.
    generation_of: BTreeMap<u64, u64>,
    connections: u64,
    reconnects: u64,
    handshake_failures: u64,
    retries: u64,
    tokens_issued: u64,
    tokens_accepted: Vec<u64>,
    /// Channels confirmed on each connection that delivered updates.
    resubscribed: Vec<usize>,
    acks_received: u64,
    metrics: MetricsSnapshot,
    elapsed: Duration,
    violations: Vec<String>,
}

impl Report {
    fn violation(&mut self, what: impl Into<String>) {
        let what = what.into();
        if self.violations.len() < MAX_PRINTED {
            println!("[check] FAILED: {what}");
        }
        self.violations.push(what);
    }

    /// Checks one update against what the handshakes confirmed and the updates before it.
    fn check_update(&mut self, update: &Value, generation: u64, confirmed: &Confirmed) {
        self.updates += 1;
        let (Some(conn), Some(channel), Some(seq)) = (
            update["conn"].as_u64(),
            update["channel"].as_str(),
            update["seq"].as_u64(),
        ) else {
            return self.violation(format!("malformed update {update}"));
        };
        if !confirmed.auth.contains(&conn) {
            self.violation(format!(
                "update on server connection {conn} before its auth was confirmed"
            ));
        }
        let subscribed = confirmed.channels.get(&conn);
        if !CHANNELS.iter().all(|c| subscribed.is_some_and(|s| s.contains(*c))) || !CHANNELS.contains(&channel) {
            self.violation(format!(
                "update on server connection {conn} ({channel}) before its subscriptions were confirmed"
            ));
        }
        let expected = self.next_seq.entry(conn).or_insert(0);
        if seq != *expected {
            let expected = *expected;
            self.violation(format!("server connection {conn}: seq {seq}, expected {expected}"));
        }
        self.next_seq.insert(conn, seq + 1);
        match self.generation_of.get(&conn) {
            Some(&seen) if seen != generation => self.violation(format!(
                "server connection {conn} delivered under generations {seen} and {generation}"
            )),
            Some(_) => {}
            None => {
                if let Some((&previous_conn, &previous)) = self.generation_of.last_key_value() {
                    if previous_conn > conn || previous >= generation {
                        self.violation(format!(
                            "server connection {conn} (generation {generation}) after connection \
                             {previous_conn} (generation {previous})"
                        ));
                    }
                }
                self.generation_of.insert(conn, generation);
            }
        }
    }

    /// Checks the run as a whole, from the client's side.
    fn check_client(&mut self, generation: u64, confirmed: &Confirmed) {
        if !confirmed.early.is_empty() {
            self.violation(format!(
                "updates (connection, seq) before the handshakes were done: {:?}",
                confirmed.early
            ));
        }
        if self.metrics.connections != generation || self.connections != generation {
            self.violation(format!(
                "connections: metrics {}, events {}, generation {generation}",
                self.metrics.connections, self.connections
            ));
        }
        if self.handshake_failures != 1 {
            self.violation(format!(
                "{} handshake failures, expected 1 (the server cuts one connection during subscribe)",
                self.handshake_failures
            ));
        }
        // Every attempt asked for a new token, and every attempt reached auth.
        if self.tokens_issued != self.connections + self.handshake_failures {
            self.violation(format!(
                "{} tokens issued for {} connections and {} failed handshakes",
                self.tokens_issued, self.connections, self.handshake_failures
            ));
        }
        if confirmed.auth.len() as u64 != self.tokens_issued {
            self.violation(format!(
                "{} auths confirmed, {} tokens issued",
                confirmed.auth.len(),
                self.tokens_issued
            ));
        }
        if self.generation_of.len() as u64 != self.connections {
            self.violation(format!(
                "updates from {} server connections, {} connections made",
                self.generation_of.len(),
                self.connections
            ));
        }
        // Channels confirmed on each connection that delivered updates: every one, every time.
        self.resubscribed = self
            .generation_of
            .keys()
            .map(|conn| confirmed.channels.get(conn).map_or(0, BTreeSet::len))
            .collect();
        if self.resubscribed.iter().any(|&n| n != CHANNELS.len()) {
            self.violation(format!(
                "channels confirmed per connection: {:?}, expected {} each",
                self.resubscribed,
                CHANNELS.len()
            ));
        }
    }

    /// Takes in the server's own checks and counts.
    fn check_server(&mut self, server: &ServerLog) {
        for violation in &server.violations {
            self.violation(format!("server: {violation}"));
        }
        self.tokens_accepted.clone_from(&server.tokens_accepted);
        self.acks_received = server.acks;
        if server.tokens_refused != 1 {
            self.violation(format!("server refused {} tokens, expected 1", server.tokens_refused));
        }
        let distinct: BTreeSet<u64> = server.tokens_accepted.iter().copied().collect();
        if distinct.len() < 2 || distinct.len() != server.tokens_accepted.len() {
            self.violation(format!(
                "tokens accepted: {:?}, expected several, all different",
                server.tokens_accepted
            ));
        }
        if server.tokens_accepted.len() as u64 != self.tokens_issued {
            self.violation(format!(
                "server accepted {} tokens, client issued {}",
                server.tokens_accepted.len(),
                self.tokens_issued
            ));
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tokens = match (self.tokens_accepted.first(), self.tokens_accepted.last()) {
            (Some(first), Some(last)) => format!("token-{first}..token-{last}"),
            _ => "none".to_owned(),
        };
        let min_subs = self.resubscribed.iter().min().copied().unwrap_or(0);
        let max_subs = self.resubscribed.iter().max().copied().unwrap_or(0);
        let subs = if min_subs == max_subs {
            format!("{min_subs}")
        } else {
            format!("{min_subs} to {max_subs}")
        };
        let m = &self.metrics;
        write!(
            f,
            "summary: {} updates in {:.1} s over {} connections ({} auths with rotated tokens {tokens}, \
             {} handshake failed), {} reconnects ({} retries), re-subscribed {subs} channels per connection, \
             {} acks sent / {} received, metrics: in {} msgs / {} B, out {} msgs / {} B; invariants: {}",
            self.updates,
            self.elapsed.as_secs_f64(),
            self.connections,
            self.tokens_accepted.len(),
            self.handshake_failures,
            self.reconnects,
            self.retries,
            self.acks,
            self.acks_received,
            m.messages_in,
            m.bytes_in,
            m.messages_out,
            m.bytes_out,
            if self.violations.is_empty() {
                "all hold".to_owned()
            } else {
                format!("{} FAILED", self.violations.len())
            }
        )
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The feed server
// ---------------------------------------------------------------------------------------------------------------

/// What the server saw and checked.
#[derive(Debug, Default)]
struct ServerLog {
    /// A connection is being served.
    serving: bool,
    tokens_accepted: Vec<u64>,
    tokens_refused: u64,
    acks: u64,
    violations: Vec<String>,
}

/// Starts the feed server on its own thread and returns its address.
fn start_feed_server(log: Arc<Mutex<ServerLog>>) -> std::io::Result<SocketAddr> {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let addr = listener.get_ref().local_addr()?;
    std::thread::spawn(move || {
        async_io::block_on(async {
            // One connection at a time is enough for one client.
            let mut index = 0;
            loop {
                let Ok((tcp, _peer)) = listener.accept().await else {
                    continue;
                };
                lock(&log).serving = true;
                let served = serve(tcp, index, &log).await;
                lock(&log).serving = false;
                match served {
                    // The client went away without a Close frame (after a fatal rejection, say).
                    Ok(()) | Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {}
                    Err(error) => println!("[server] connection {index}: {error}"),
                }
                index += 1;
            }
        })
    });
    Ok(addr)
}

/// One connection's protocol state.
struct Session {
    index: u64,
    authed: bool,
    subscribed: Vec<String>,
    /// Set when the last subscription is acknowledged: the update ticker runs from then on.
    streaming: bool,
    seq: u64,
    drop_after: u64,
}

impl Session {
    fn ready(&self) -> bool {
        self.authed && CHANNELS.iter().all(|c| self.subscribed.iter().any(|s| s == c))
    }
}

/// Serves one connection: the handshake replies, then updates until the connection is cut.
async fn serve(tcp: Async<TcpStream>, index: u64, log: &Mutex<ServerLog>) -> Result<(), WsError> {
    // Each update goes out at once, not held back by Nagle's algorithm until the client acknowledges the last.
    tcp.get_ref().set_nodelay(true)?;
    let mut ws = async_tungstenite::accept_async(tcp).await?;
    let mut session = Session {
        index,
        authed: false,
        subscribed: Vec::new(),
        streaming: false,
        seq: 0,
        drop_after: fastrand::u64(DROP_AFTER),
    };
    // Started once the client is subscribed.
    let mut ticks = Timer::never();
    loop {
        let message = futures::select_biased! {
            message = ws.next().fuse() => message,
            _ = ticks.next().fuse() => {
                if session.streaming {
                    send_update(&mut ws, &mut session, log).await?;
                    if session.seq == session.drop_after {
                        println!("[server] connection {index}: cutting TCP after {} updates", session.seq);
                        return Ok(()); // `ws` is dropped: no Close frame
                    }
                }
                continue;
            }
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => return Ok(()),
            Some(Ok(_)) => continue, // pings: tungstenite answers them
            Some(Err(error)) => return Err(error),
        };
        let request: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match request["type"].as_str() {
            Some("auth") => {
                let token = request["token"].as_str().unwrap_or("");
                let Some(n) = token.strip_prefix("token-").and_then(|n| n.parse::<u64>().ok()) else {
                    lock(log).tokens_refused += 1;
                    reply(&mut ws, json!({ "type": "auth_failed", "reason": "unknown token" })).await?;
                    continue;
                };
                {
                    let mut log = lock(log);
                    if let Some(&previous) = log.tokens_accepted.last() {
                        if n <= previous {
                            log.violations.push(format!(
                                "connection {index}: token-{n} after token-{previous}: not rotated"
                            ));
                        }
                    }
                    log.tokens_accepted.push(n);
                }
                session.authed = true;
                reply(&mut ws, json!({ "type": "auth_ok", "conn": index })).await?;
            }
            Some("subscribe") => {
                let channel = request["channel"].as_str().unwrap_or("").to_owned();
                if !session.authed {
                    lock(log)
                        .violations
                        .push(format!("connection {index}: subscribe to {channel} before auth"));
                    continue;
                }
                if index == CUT_DURING_SUBSCRIBE && !session.subscribed.is_empty() {
                    println!("[server] connection {index}: cutting TCP in the middle of the subscribe handshake");
                    return Ok(());
                }
                let ack = json!({ "type": "subscribed", "channel": channel, "conn": index });
                session.subscribed.push(channel);
                reply(&mut ws, ack).await?;
                if session.subscribed.len() == CHANNELS.len() {
                    session.streaming = true;
                    ticks = Timer::interval(UPDATE_EVERY);
                }
            }
            Some("ack") => {
                let mut log = lock(log);
                log.acks += 1;
                if !session.ready() {
                    log.violations.push(format!(
                        "connection {index}: user message before auth and subscribe: {text}"
                    ));
                }
            }
            _ => {
                lock(log)
                    .violations
                    .push(format!("connection {index}: unexpected message {text}"));
            }
        }
    }
}

async fn reply(ws: &mut WebSocketStream<Async<TcpStream>>, value: Value) -> Result<(), WsError> {
    ws.send(Message::text(value.to_string())).await
}

/// Sends the next update; the guard: never before auth and every subscription.
async fn send_update(
    ws: &mut WebSocketStream<Async<TcpStream>>,
    session: &mut Session,
    log: &Mutex<ServerLog>,
) -> Result<(), WsError> {
    if !session.ready() {
        lock(log).violations.push(format!(
            "connection {}: update {} before auth and subscribe",
            session.index, session.seq
        ));
    }
    let channel = CHANNELS[(session.seq % CHANNELS.len() as u64) as usize];
    let update = json!({ "type": "update", "channel": channel, "conn": session.index, "seq": session.seq });
    session.seq += 1;
    reply(ws, update).await
}
