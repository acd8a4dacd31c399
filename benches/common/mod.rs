//! Shared by the benches: the run [`Mode`], and for the in-memory benches (overhead, layers) a byte pipe whose
//! peer is infinitely fast and the frames a server would send.

#![allow(dead_code)]

use std::fmt::Debug;
use std::hint::black_box;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::{Role, WebSocket};
use async_tungstenite::tungstenite::{Bytes, Message};
use futures::executor::block_on;
use futures::io::{AsyncRead, AsyncWrite};
use futures::{Sink, SinkExt, Stream, StreamExt};

/// An in-memory byte connection: reads replay `incoming` (whole frames) forever, writes are accepted and
/// dropped. Like a socket whose peer is infinitely fast.
#[derive(Debug)]
pub(crate) struct MemPipe {
    incoming: Vec<u8>,
    pos: usize,
}

impl MemPipe {
    /// A pipe replaying `incoming` forever.
    pub(crate) fn new(incoming: Vec<u8>) -> Self {
        Self { incoming, pos: 0 }
    }
}

impl AsyncRead for MemPipe {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.incoming.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut filled = 0;
        while filled < buf.len() {
            let chunk = &this.incoming[this.pos..];
            let n = chunk.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&chunk[..n]);
            filled += n;
            this.pos = (this.pos + n) % this.incoming.len();
        }
        Poll::Ready(Ok(filled))
    }
}

impl AsyncWrite for MemPipe {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(black_box(buf).len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// 1024 binary messages of `message_len` bytes as a server sends them (unmasked frames), encoded by
/// tungstenite itself.
pub(crate) fn server_frames(message_len: usize) -> Vec<u8> {
    let mut server = WebSocket::from_raw_socket(io::Cursor::new(Vec::new()), Role::Server, None);
    for i in 0..1024_usize {
        let payload = vec![i as u8; message_len];
        server.send(Message::binary(payload)).expect("writing to memory");
    }
    server.get_ref().get_ref().clone()
}

/// How long a bench runs: a smoke test under `cargo test --benches`, a short run with `BENCH_QUICK=1` (or
/// `-- --quick`), or the full run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `cargo test --benches`: check that everything runs.
    Test,
    /// `BENCH_QUICK=1` or `-- --quick`.
    Quick,
    /// `cargo bench`.
    Full,
}

impl Mode {
    pub(crate) fn from_env() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
            || args.iter().any(|arg| arg == "--quick");
        let benchmarking = args.iter().any(|arg| arg == "--bench");
        if !benchmarking || args.iter().any(|arg| arg == "--test") {
            Self::Test
        } else if quick {
            Self::Quick
        } else {
            Self::Full
        }
    }

    /// The value for this mode.
    pub(crate) fn pick<T>(self, test: T, quick: T, full: T) -> T {
        match self {
            Self::Test => test,
            Self::Quick => quick,
            Self::Full => full,
        }
    }
}

/// The benchmark filter given on the command line (`cargo bench --bench overhead -- receive`), if any: the
/// ratio loops skip the cases whose label does not contain it, as criterion skips its benchmarks.
pub(crate) fn selected(label: &str) -> bool {
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    filter.map_or(true, |filter| label.contains(filter.as_str()))
}

/// Reads `n` messages; returns the time taken.
pub(crate) fn receive<S, T, E>(conn: &mut S, n: u64) -> Duration
where
    S: Stream<Item = Result<T, E>> + Unpin,
    E: Debug,
{
    block_on(async {
        let start = Instant::now();
        for _ in 0..n {
            let item = conn
                .next()
                .await
                .expect("the stream never ends")
                .expect("no read error");
            black_box(item);
        }
        start.elapsed()
    })
}

/// Sends `n` messages made by `make` with `feed`, then `flush`es once; returns the time taken.
pub(crate) fn send<S, M>(conn: &mut S, n: u64, mut make: impl FnMut() -> M) -> Duration
where
    S: Sink<M> + Unpin,
    S::Error: Debug,
{
    block_on(async {
        let start = Instant::now();
        for _ in 0..n {
            conn.feed(make()).await.expect("feed");
        }
        conn.flush().await.expect("flush");
        start.elapsed()
    })
}

/// A `len`-byte message whose payload is shared with a template: a clone is a reference-count increment.
pub(crate) fn shared_message(len: usize) -> impl FnMut() -> Message {
    let template = Bytes::from(vec![0x5a; len]);
    let _promote_to_shared = template.clone();
    move || Message::Binary(template.clone())
}

/// `samples` runs of `op` on each variant, rotating which goes first (after `warm_up` rounds not counted):
/// the median of each.
pub(crate) fn interleaved<V: Copy>(
    variants: &[V],
    warm_up: usize,
    samples: usize,
    mut op: impl FnMut(V) -> Duration,
) -> Vec<Duration> {
    let mut times: Vec<Vec<Duration>> = variants.iter().map(|_| Vec::with_capacity(samples)).collect();
    for sample in 0..warm_up + samples {
        for turn in 0..variants.len() {
            let which = (sample + turn) % variants.len();
            let elapsed = op(variants[which]);
            if sample >= warm_up {
                times[which].push(elapsed);
            }
        }
    }
    times.into_iter().map(median).collect()
}

pub(crate) fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

pub(crate) fn ns_per(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1e9 / n as f64
}

/// Starts a loopback server on a thread of its own (a smol `LocalExecutor`, no runtime) and returns its
/// address: `make` runs on that thread and gives the handler each accepted connection is served by (so the
/// handler may share `Rc` state between connections).
pub(crate) fn local_server<F, Fut>(make: impl FnOnce() -> F + Send + 'static) -> std::net::SocketAddr
where
    F: Fn(async_io::Async<std::net::TcpStream>) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    let listener = async_io::Async::new(listener).expect("async listener");
    std::thread::Builder::new()
        .name("bench-server".into())
        .spawn(move || {
            let executor = smol::LocalExecutor::new();
            let handler = make();
            async_io::block_on(executor.run(async {
                loop {
                    match listener.accept().await {
                        Ok((tcp, _)) => executor.spawn(handler(tcp)).detach(),
                        Err(error) => eprintln!("[bench server] accept failed: {error}"),
                    }
                }
            }))
        })
        .expect("server thread");
    addr
}
