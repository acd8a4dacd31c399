//! What hooks cost per message: a `ReconnectingStream` whose connector runs a heartbeat, metrics and a
//! pass-through filter (one hook group, one wrapper), against the plain `ReconnectingStream` over the same kind
//! of connection, in memory.
//!
//! Run it with `cargo bench --bench layers` (add `BENCH_QUICK=1`, or `-- --quick`, for a run of a few
//! seconds). It measures, for 64-byte binary messages:
//!
//! - **receive**: messages read with `next()`;
//! - **send**: messages written with `feed()` and one final `flush()`;
//!
//! on two streams:
//!
//! - **plain**: `ReconnectingStream::new(connector)`, where the connector hands out a fresh in-memory
//!   connection: a [`WsConnection`] (what `connect` returns; client role: frames are parsed, built and masked)
//!   over [`MemPipe`], whose reads replay pre-encoded server frames forever and whose writes are dropped;
//! - **hooked**: the same connector behind
//!   `ConnectorBuilder::new(connector).hook(Heartbeat::new(15 s, 10 s)).hook(Metrics::new())
//!   .hook(Filter::inbound(|_| Verdict::Pass)).build()`.
//!
//! Each stream connects (outside the timing) and then stays on its one connection. The heartbeat's timers are
//! checked as in real use (every 64 messages while data flows); a ping goes out once per 15 s of a stream's
//! life, which costs nothing measurable.
//!
//! Criterion reports each benchmark on its own. The headline ratios come from a separate loop that interleaves
//! plain and hooked runs and compares medians, so drift on the machine affects both sides alike. A ratio is
//! `plain time / hooked time`, i.e. the hooked stream's relative throughput: 1.00 means the hooks cost nothing;
//! the target is >= 0.95. Diagnostic ratios follow: each hook alone, and the three hooks as three groups (three
//! wrappers, as three separate layers were before hooks were fused). Expect a few percent of noise between
//! builds and runs: code layout alone moves these ratios by that much.
#[path = "common/mod.rs"]
mod common;

use std::fmt::Debug;

use std::io;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use common::{receive, send, server_frames, shared_message, MemPipe};
use criterion::{Criterion, Throughput};

use futures::{Sink, Stream};
use stream_tungstenite::extension::{Filter, Heartbeat, Metrics};
use stream_tungstenite::hook::{HooksLayer, Verdict};
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::NoRetry;
use stream_tungstenite::ws::WsConnection;
use stream_tungstenite::{Error, ReconnectingStream};

/// Payload size of every message.
const MESSAGE_LEN: usize = 64;
/// Messages per timed run in the interleaved ratio loop (below the default queue capacity of 1024, so a send
/// run queues the whole batch and writes it on `flush`).
const BATCH: usize = 1000;

fn main() {
    let mode = common::Mode::from_env();
    let quick = mode != common::Mode::Full;
    let test_mode = mode == common::Mode::Test;

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(if quick { 200 } else { 1000 }))
        .measurement_time(Duration::from_millis(if quick { 500 } else { 3000 }))
        .sample_size(if quick { 10 } else { 50 })
        .configure_from_args();
    cases(|label, run| criterion_pair(&mut criterion, label, run));
    criterion.final_summary();

    // Interleaved samples of BATCH messages each, for the ratios.
    let samples = match (test_mode, quick) {
        (true, _) => 3,
        (false, true) => 101,
        (false, false) => 1001,
    };
    println!(
        "\ncost of hooks (heartbeat + metrics + pass-through filter, one wrapper): throughput ratio \
         plain/hooked (1.00 = no overhead, target >= 0.95), medians of {samples} interleaved runs of {BATCH} \
         messages{}",
        if test_mode {
            " (test mode: a smoke test, the numbers mean nothing)"
        } else {
            ""
        }
    );
    cases(|label, run| {
        if common::selected(label) {
            ratio(label, samples, run);
        }
    });
    println!("diagnostics: each hook alone, and the three in three wrappers (same measure)");
    diagnostics(|label, run| ratio(label, samples, run));
}

// ---------------------------------------------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------------------------------------------

/// The connector both streams use: each call makes a fresh client [`WsConnection`] (what
/// `stream_tungstenite::connect` returns) over a [`MemPipe`], as after the upgrade.
async fn dial() -> Result<WsConnection, io::Error> {
    let pipe = MemPipe::new(server_frames(MESSAGE_LEN));
    Ok(WsConnection::from_raw_socket(pipe, WebSocketConfig::default()))
}

// ---------------------------------------------------------------------------------------------------------------
// The two streams
// ---------------------------------------------------------------------------------------------------------------

/// The bare `ReconnectingStream`. With [`NoRetry`], any failure would end the stream (and the benchmark)
/// instead of hiding in a retry.
fn plain() -> impl Stream<Item = Result<Message, Error>> + Sink<Message, Error = Error> + Unpin {
    ReconnectingStream::new(dial).with_retry(NoRetry)
}

fn heartbeat() -> Heartbeat {
    Heartbeat::new(Duration::from_secs(15), Duration::from_secs(10))
}

fn pass() -> Filter<impl FnMut(&mut Message) -> Verdict + Clone + Send> {
    Filter::inbound(|_: &mut Message| Verdict::Pass)
}

/// The same, with a heartbeat, metrics and a pass-through filter: one group of hooks, one wrapper.
fn hooked() -> impl Stream<Item = Result<Message, Error>> + Sink<Message, Error = Error> + Unpin {
    let connector = ConnectorBuilder::new(dial)
        .hook(heartbeat())
        .hook(Metrics::new())
        .hook(pass())
        .build();
    ReconnectingStream::new(connector).with_retry(NoRetry)
}

/// A `ReconnectingStream` whose connector runs one hook group.
macro_rules! with_group {
    ($group:expr) => {{
        let connector = ConnectorBuilder::new(dial).layer(HooksLayer::new($group)).build();
        ReconnectingStream::new(connector).with_retry(NoRetry)
    }};
}

// ---------------------------------------------------------------------------------------------------------------
// The measured operations
// ---------------------------------------------------------------------------------------------------------------

/// Which stream a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The bare `ReconnectingStream`.
    Plain,
    /// The `ReconnectingStream` with hooks.
    Hooked,
}

/// Receiving: `run(side, n)` reads `n` messages from that side's stream and returns the time taken.
///
/// Each side's stream is made once and connected before any timing (by reading one message); every run then
/// reads from the same connection.
fn receive_case<P, L>(mut plain: P, mut hooked: L) -> impl FnMut(Side, u64) -> Duration
where
    P: Stream<Item = Result<Message, Error>> + Unpin,
    L: Stream<Item = Result<Message, Error>> + Unpin,
{
    receive(&mut plain, 1);
    receive(&mut hooked, 1);
    move |side, n| match side {
        Side::Plain => receive(&mut plain, n),
        Side::Hooked => receive(&mut hooked, n),
    }
}

/// Sending: `run(side, n)` sends `n` messages on that side's stream and returns the time taken.
///
/// Each side's stream is made once, connected, and sends one batch before any timing, which grows its queue to
/// its working size.
fn send_case<P, L>(mut plain: P, mut hooked: L) -> impl FnMut(Side, u64) -> Duration
where
    P: Sink<Message, Error = Error> + Unpin,
    L: Sink<Message, Error = Error> + Unpin,
{
    let mut make = shared_message(MESSAGE_LEN);
    send(&mut plain, BATCH as u64, &mut make);
    send(&mut hooked, BATCH as u64, &mut make);
    move |side, n| match side {
        Side::Plain => send(&mut plain, n, &mut make),
        Side::Hooked => send(&mut hooked, n, &mut make),
    }
}

/// Calls `visit` with each headline case's label and runner.
fn cases(mut visit: impl FnMut(&str, &mut dyn FnMut(Side, u64) -> Duration)) {
    visit("hooks receive 64B", &mut receive_case(plain(), hooked()));
    visit("hooks send 64B", &mut send_case(plain(), hooked()));
}

/// Calls `visit` with diagnostic cases: each hook alone, and the three as three separate wrappers.
fn diagnostics(mut visit: impl FnMut(&str, &mut dyn FnMut(Side, u64) -> Duration)) {
    visit(
        "hooks receive 64B [heartbeat only]",
        &mut receive_case(plain(), with_group!(heartbeat())),
    );
    visit(
        "hooks receive 64B [metrics only]",
        &mut receive_case(plain(), with_group!(Metrics::new())),
    );
    visit(
        "hooks receive 64B [filter only]",
        &mut receive_case(plain(), with_group!(pass())),
    );
    let three_wrappers = || {
        let connector = ConnectorBuilder::new(dial)
            .layer(HooksLayer::new(heartbeat()))
            .layer(HooksLayer::new(Metrics::new()))
            .layer(HooksLayer::new(pass()))
            .build();
        ReconnectingStream::new(connector).with_retry(NoRetry)
    };
    visit(
        "hooks receive 64B [three wrappers, one hook each]",
        &mut receive_case(plain(), three_wrappers()),
    );
    visit(
        "hooks send 64B [three wrappers, one hook each]",
        &mut send_case(plain(), three_wrappers()),
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Criterion: each side on its own
// ---------------------------------------------------------------------------------------------------------------

/// One criterion benchmark per side; an iteration is one message.
fn criterion_pair(c: &mut Criterion, label: &str, run: &mut dyn FnMut(Side, u64) -> Duration) {
    let mut group = c.benchmark_group(label);
    group.throughput(Throughput::Elements(1));
    group.bench_function("plain", |b| b.iter_custom(|n| run(Side::Plain, n)));
    group.bench_function("hooked", |b| b.iter_custom(|n| run(Side::Hooked, n)));
    group.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// Interleaved ratios
// ---------------------------------------------------------------------------------------------------------------

/// Times `samples` runs of [`BATCH`] messages on each side, alternating which side goes first, and prints the
/// ratio of the medians.
fn ratio(label: &str, samples: usize, run: &mut dyn FnMut(Side, u64) -> Duration) {
    let batch = BATCH as u64;
    // Warm up: fill buffers and caches.
    for _ in 0..samples.min(20) {
        run(Side::Plain, batch);
        run(Side::Hooked, batch);
    }
    let (mut plain, mut hooked) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for i in 0..samples {
        if i % 2 == 0 {
            plain.push(run(Side::Plain, batch));
            hooked.push(run(Side::Hooked, batch));
        } else {
            hooked.push(run(Side::Hooked, batch));
            plain.push(run(Side::Plain, batch));
        }
    }
    let median_per_message = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        times[times.len() / 2].as_secs_f64() * 1e9 / BATCH as f64
    };
    let (plain_ns, hooked_ns) = (median_per_message(&mut plain), median_per_message(&mut hooked));
    println!(
        "ratio {label}: {:.2} (plain {plain_ns:.1} ns/msg, hooked {hooked_ns:.1} ns/msg)",
        plain_ns / hooked_ns
    );
}
