//! What `ReconnectingStream` costs per message over the same connection used bare, in memory.
//!
//! Run it with `cargo bench --bench overhead` (add `BENCH_QUICK=1`, or `-- --quick`, for a run of a few
//! seconds). It measures, for 64-byte messages:
//!
//! - **receive**: messages read with `next()`, through the wrapper and bare;
//! - **send**: messages written with `feed()` and one final `flush()`, through the wrapper and bare;
//!
//! over these inner connections:
//!
//! - **ws** (the headline): a [`WsConnection`] (what `stream_tungstenite::connect` returns; client role: frames
//!   are parsed, built and masked) over [`MemPipe`], an in-memory byte connection whose reads replay server
//!   frames and whose writes are dropped;
//! - **async-tungstenite** (a diagnostic): async-tungstenite's own `WebSocketStream` over the same pipe;
//! - **trivial** (a diagnostic): `join(stream::repeat(..), sink::drain())`, which does no work at all: the worst
//!   case, where the wrapper's own bookkeeping is all there is to measure.
//!
//! Targets: receive >= 0.95 and send >= 0.90 of the bare connection, for **ws**.
//!
//! Criterion reports each benchmark on its own. The headline ratios come from a separate loop that interleaves
//! bare and wrapped runs over the same connections and compares medians, so drift on the machine affects both
//! sides alike. A ratio is `bare time / wrapped time`, i.e. the wrapper's relative throughput: 1.00 means no
//! overhead.
#[path = "common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::fmt::Debug;

use std::io;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Bytes, Message};
use async_tungstenite::WebSocketStream;
use common::{receive, send, server_frames, shared_message, MemPipe};
use criterion::{Criterion, Throughput};
use futures::executor::block_on;
use futures::{future, sink, stream, Sink, Stream, StreamExt};
use stream_tungstenite::retry::NoRetry;
use stream_tungstenite::ws::WsConnection;
use stream_tungstenite::{join, BoxError, Connect, Diagnose, ReconnectingStream};

/// Payload size of every message.
const MESSAGE_LEN: usize = 64;
/// Messages per timed run in the interleaved ratio loop (below the default queue capacity of 1024, so the
/// wrapper queues a whole batch and writes it on `flush`, as the bare connection buffers it until `flush`).
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
        "\noverhead of ReconnectingStream: throughput ratio bare/wrapped (1.00 = no overhead), \
         medians of {samples} interleaved runs of {BATCH} messages{}",
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
}

// ---------------------------------------------------------------------------------------------------------------
// The connections
// ---------------------------------------------------------------------------------------------------------------

/// A client [`WsConnection`] over a [`MemPipe`], as after the upgrade.
fn ws() -> WsConnection {
    WsConnection::from_raw_socket(MemPipe::new(server_frames(MESSAGE_LEN)), WebSocketConfig::default())
}

/// async-tungstenite's client-role `WebSocketStream` over a [`MemPipe`], as after the handshake.
fn ws_in_memory() -> WebSocketStream<MemPipe> {
    let pipe = MemPipe::new(server_frames(MESSAGE_LEN));
    block_on(WebSocketStream::from_raw_socket(pipe, Role::Client, None))
}

/// The trivial connection: an endless stream of one message, and a sink that drops everything.
fn trivial() -> impl Stream<Item = Result<Bytes, Infallible>> + Sink<Bytes, Error = Infallible> + Unpin {
    let message = Bytes::from_static(&[0x5a; MESSAGE_LEN]);
    join(stream::repeat(message).map(Ok), sink::drain())
}

/// `conn` behind a `ReconnectingStream`. Its connector hands out `conn` once; with [`NoRetry`], any failure
/// would end the stream (and the benchmark) instead of hiding in a retry.
fn wrap<S: Unpin, I: Unpin>(conn: S) -> ReconnectingStream<impl Connect<Connection = S> + Unpin, I> {
    let mut slot = Some(conn);
    let connect = move || {
        future::ready(
            slot.take()
                .ok_or_else(|| io::Error::other("the in-memory connection is made once")),
        )
    };
    ReconnectingStream::new(connect).with_retry(NoRetry)
}

// ---------------------------------------------------------------------------------------------------------------
// The measured operations
// ---------------------------------------------------------------------------------------------------------------

/// A 64-byte message freshly allocated for each send, as `Message::binary(vec)` makes it: the wrapper's copy
/// (kept until the flush completes, to resend on failure) is the payload's first clone, which allocates.
fn fresh_message() -> impl FnMut() -> Message {
    || Message::binary(vec![0x5a; MESSAGE_LEN])
}

/// Which way a case is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The connection used directly.
    Bare,
    /// A connection made alike, behind a `ReconnectingStream`.
    Wrapped,
}

/// Receiving: `run(side, n)` reads `n` messages and returns the time taken.
///
/// Each side has its own connection, made alike; the wrapper owns its connection, as an application's does
/// (wrapping a `&mut` to a shared one would add a forwarding layer no application has). The wrapper is made
/// and connected once, outside the timing.
fn receive_case<S, I, T, E>(mut bare: S, inner: S) -> impl FnMut(Side, u64) -> Duration
where
    S: Stream<Item = Result<T, E>> + Sink<I> + Unpin,
    E: Into<BoxError> + Diagnose + Debug,
    <S as Sink<I>>::Error: Into<BoxError> + Diagnose,
    I: Clone + Unpin,
{
    let mut wrapped = wrap::<_, I>(inner);
    receive(&mut wrapped, 1); // connects
    receive(&mut bare, 1);
    move |side, n| match side {
        Side::Bare => receive(&mut bare, n),
        Side::Wrapped => receive(&mut wrapped, n),
    }
}

/// Sending messages made by `make`: `run(side, n)` sends `n` messages and returns the time taken.
///
/// As in [`receive_case`], each side has its own connection and the wrapper owns its. Before the timing, the
/// wrapper connects and sends one batch, which grows its queue to its working size.
fn send_case<S, M, T, E>(mut bare: S, inner: S, mut make: impl FnMut() -> M) -> impl FnMut(Side, u64) -> Duration
where
    S: Stream<Item = Result<T, E>> + Sink<M> + Unpin,
    E: Into<BoxError> + Diagnose,
    S::Error: Into<BoxError> + Diagnose + Debug,
    M: Clone + Unpin,
{
    let mut wrapped = wrap::<_, M>(inner);
    send(&mut wrapped, BATCH as u64, &mut make); // connects, and sizes the queue
    send(&mut bare, BATCH as u64, &mut make);
    move |side, n| match side {
        Side::Bare => send(&mut bare, n, &mut make),
        Side::Wrapped => send(&mut wrapped, n, &mut make),
    }
}

/// Calls `visit` with each case's label and runner.
fn cases(mut visit: impl FnMut(&str, &mut dyn FnMut(Side, u64) -> Duration)) {
    visit("receive ws 64B", &mut receive_case::<_, Message, _, _>(ws(), ws()));
    visit("send ws 64B", &mut send_case(ws(), ws(), shared_message(MESSAGE_LEN)));
    visit("send ws 64B fresh", &mut send_case(ws(), ws(), fresh_message()));
    visit(
        "receive async-tungstenite 64B",
        &mut receive_case::<_, Message, _, _>(ws_in_memory(), ws_in_memory()),
    );
    visit(
        "send async-tungstenite 64B",
        &mut send_case(ws_in_memory(), ws_in_memory(), shared_message(MESSAGE_LEN)),
    );
    visit(
        "receive trivial 64B",
        &mut receive_case::<_, Bytes, _, _>(trivial(), trivial()),
    );
    let message = Bytes::from_static(&[0x5a; MESSAGE_LEN]);
    visit(
        "send trivial 64B",
        &mut send_case(trivial(), trivial(), move || message.clone()),
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Criterion: each side on its own
// ---------------------------------------------------------------------------------------------------------------

/// One criterion benchmark per side; an iteration is one message.
fn criterion_pair(c: &mut Criterion, label: &str, run: &mut dyn FnMut(Side, u64) -> Duration) {
    let mut group = c.benchmark_group(label);
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare", |b| b.iter_custom(|n| run(Side::Bare, n)));
    group.bench_function("wrapped", |b| b.iter_custom(|n| run(Side::Wrapped, n)));
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
        run(Side::Bare, batch);
        run(Side::Wrapped, batch);
    }
    let (mut bare, mut wrapped) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for i in 0..samples {
        if i % 2 == 0 {
            bare.push(run(Side::Bare, batch));
            wrapped.push(run(Side::Wrapped, batch));
        } else {
            wrapped.push(run(Side::Wrapped, batch));
            bare.push(run(Side::Bare, batch));
        }
    }
    let median_per_message = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        times[times.len() / 2].as_secs_f64() * 1e9 / BATCH as f64
    };
    let (bare_ns, wrapped_ns) = (median_per_message(&mut bare), median_per_message(&mut wrapped));
    println!(
        "ratio {label}: {:.2} (bare {bare_ns:.1} ns/msg, wrapped {wrapped_ns:.1} ns/msg)",
        bare_ns / wrapped_ns
    );
}
