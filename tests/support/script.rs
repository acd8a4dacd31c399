//! A scripted connector for the state machine's tests: it plays a queue of [`Outcome`]s, one per attempt: a connect error, a connect that
//! never finishes, or a connection. A connection yields scripted items (and then errors, ends or stalls), and
//! its sink can fail a write, fail a flush or hold writes back. Every connection records what was written to it
//! and how much of that a completed flush covered, so tests can check the "nothing accepted is lost" contract
//! exactly.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::channel::mpsc;
use futures::future::{self, Either};
use futures::{Sink, Stream};
use stream_tungstenite::Connect;

/// What one inbound poll of a scripted connection returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Item(u32),
    Error,
    End,
}

/// How a scripted connection behaves.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Items available at once.
    pub items: Vec<u32>,
    /// What follows the items: `None` stalls (pending until the test pushes more).
    pub then: Option<Inbound>,
    /// The n-th `start_send` (0-based, on this connection) fails.
    pub fail_write_at: Option<usize>,
    /// The n-th `poll_flush` that has something to flush (0-based) fails.
    pub fail_flush_at: Option<usize>,
    /// `poll_ready` stays pending until released with [`ConnHandle::release_writes`].
    pub hold_writes: bool,
    /// `poll_flush` stays pending until released with [`ConnHandle::release_writes`].
    pub hold_flush: bool,
}

impl Plan {
    /// A connection that yields nothing and never fails.
    pub fn healthy() -> Self {
        Self::default()
    }

    /// A connection that ends (as if the server closed it) after `items`.
    pub fn ends_after(items: Vec<u32>) -> Self {
        Self {
            items,
            then: Some(Inbound::End),
            ..Self::default()
        }
    }

    /// A connection whose stream errors after `items`.
    pub fn errors_after(items: Vec<u32>) -> Self {
        Self {
            items,
            then: Some(Inbound::Error),
            ..Self::default()
        }
    }
}

/// One attempt's outcome.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The connector fails with `ConnectionRefused`.
    Refuse,
    /// The connector fails with this error kind.
    Fail(io::ErrorKind),
    /// The connector never finishes.
    Hang,
    /// The connector yields a connection.
    Open(Plan),
}

/// What happened on one connection.
#[derive(Debug, Default)]
pub struct ConnLog {
    /// Every message accepted by `start_send`, in order.
    pub written: Vec<u32>,
    /// How many of `written` a completed flush covered.
    pub flushed: usize,
    /// `poll_close` completed.
    pub closed: bool,
    /// Dropped by the wrapper.
    pub dropped: bool,
    flushes: usize,
    writes: usize,
    write_waker: Option<Waker>,
    released: bool,
}

#[derive(Debug, Default)]
struct Shared {
    script: VecDeque<Outcome>,
    /// Played when the script runs out.
    fallback: Option<Outcome>,
    attempts: usize,
    conns: Vec<ConnLog>,
    inbound: Vec<mpsc::UnboundedSender<Inbound>>,
}

/// The scripted connector. Clones share the script and the logs.
#[derive(Debug, Clone, Default)]
pub struct Script {
    shared: Arc<Mutex<Shared>>,
}

impl Script {
    pub fn new(outcomes: impl IntoIterator<Item = Outcome>) -> Self {
        let script = Self::default();
        script.lock().script.extend(outcomes);
        script
    }

    /// When the script runs out, play `outcome` for every further attempt (default: [`Outcome::Refuse`]).
    pub fn then_always(self, outcome: Outcome) -> Self {
        self.lock().fallback = Some(outcome);
        self
    }

    pub fn push(&self, outcome: Outcome) {
        self.lock().script.push_back(outcome);
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap()
    }

    /// How many times the connector was called.
    pub fn attempts(&self) -> usize {
        self.lock().attempts
    }

    /// How many connections were made.
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    /// A handle on connection `index` (0-based: generation - 1).
    pub fn conn(&self, index: usize) -> ConnHandle {
        ConnHandle {
            script: self.clone(),
            index,
        }
    }

    /// Runs `f` on the logs of every connection.
    pub fn with_logs<R>(&self, f: impl FnOnce(&[ConnLog]) -> R) -> R {
        f(&self.lock().conns)
    }

    /// Every message a completed flush covered, connection by connection.
    pub fn delivered(&self) -> Vec<u32> {
        self.with_logs(|logs| {
            logs.iter()
                .flat_map(|log| log.written[..log.flushed].iter().copied())
                .collect()
        })
    }

    /// Checks the send contract against `accepted` (everything the sink accepted, in order) and `unsent`
    /// (what was handed back at the end): each connection starts exactly where the previous one's last
    /// completed flush ended (so a message repeats only if its write or flush had not completed), and the
    /// delivered messages followed by the unsent ones are exactly the accepted ones.
    pub fn check_send_contract(&self, accepted: &[u32], unsent: &[u32]) -> Result<(), String> {
        self.with_logs(|logs| {
            let mut position = 0;
            for (index, log) in logs.iter().enumerate() {
                let expected = accepted.get(position..position + log.written.len());
                if expected != Some(&log.written[..]) {
                    return Err(format!(
                        "connection {index} got {:?}, expected accepted[{position}..] = {:?}",
                        log.written,
                        &accepted[position.min(accepted.len())..]
                    ));
                }
                position += log.flushed;
            }
            let rest = &accepted[position.min(accepted.len())..];
            if rest != unsent {
                return Err(format!(
                    "after delivery of {position} messages, {rest:?} remain, but unsent = {unsent:?}"
                ));
            }
            Ok(())
        })
    }
}

impl Connect for Script {
    type Connection = ScriptedConn;
    type Error = io::Error;
    type Future = Either<future::Ready<io::Result<ScriptedConn>>, future::Pending<io::Result<ScriptedConn>>>;

    fn connect(&mut self) -> Self::Future {
        let mut shared = self.lock();
        shared.attempts += 1;
        let outcome = match shared.script.pop_front() {
            Some(outcome) => outcome,
            None => shared.fallback.clone().unwrap_or(Outcome::Refuse),
        };
        match outcome {
            Outcome::Refuse => Either::Left(future::ready(Err(io::ErrorKind::ConnectionRefused.into()))),
            Outcome::Fail(kind) => Either::Left(future::ready(Err(kind.into()))),
            Outcome::Hang => Either::Right(future::pending()),
            Outcome::Open(plan) => {
                let (tx, rx) = mpsc::unbounded();
                for item in &plan.items {
                    tx.unbounded_send(Inbound::Item(*item)).unwrap();
                }
                if let Some(then) = &plan.then {
                    tx.unbounded_send(then.clone()).unwrap();
                }
                let index = shared.conns.len();
                shared.conns.push(ConnLog::default());
                shared.inbound.push(tx);
                Either::Left(future::ready(Ok(ScriptedConn {
                    script: self.clone(),
                    index,
                    plan,
                    inbound: rx,
                    ended: false,
                })))
            }
        }
    }
}

/// A test's handle on one scripted connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    script: Script,
    index: usize,
}

impl ConnHandle {
    /// Makes `inbound` available to the connection's stream.
    pub fn push(&self, inbound: Inbound) {
        let _ = self.script.lock().inbound[self.index].unbounded_send(inbound);
    }

    /// Lets held writes and flushes through.
    pub fn release_writes(&self) {
        let waker = {
            let mut shared = self.script.lock();
            let log = &mut shared.conns[self.index];
            log.released = true;
            log.write_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub fn written(&self) -> Vec<u32> {
        self.script.lock().conns[self.index].written.clone()
    }

    pub fn flushed(&self) -> usize {
        self.script.lock().conns[self.index].flushed
    }

    pub fn closed(&self) -> bool {
        self.script.lock().conns[self.index].closed
    }

    pub fn dropped(&self) -> bool {
        self.script.lock().conns[self.index].dropped
    }
}

/// A scripted connection: `Stream<Item = io::Result<u32>> + Sink<u32>`.
#[derive(Debug)]
pub struct ScriptedConn {
    script: Script,
    index: usize,
    plan: Plan,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    ended: bool,
}

impl ScriptedConn {
    fn log(&self) -> MutexGuard<'_, Shared> {
        self.script.lock()
    }

    fn held(&self, hold: bool, cx: &mut Context<'_>) -> bool {
        if !hold {
            return false;
        }
        let mut shared = self.log();
        let log = &mut shared.conns[self.index];
        if log.released {
            return false;
        }
        log.write_waker = Some(cx.waker().clone());
        true
    }
}

impl Drop for ScriptedConn {
    fn drop(&mut self) {
        if let Ok(mut shared) = self.script.shared.lock() {
            shared.conns[self.index].dropped = true;
        }
    }
}

impl Stream for ScriptedConn {
    type Item = io::Result<u32>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<u32>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inbound).poll_next(cx) {
            Poll::Ready(Some(Inbound::Item(item))) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(Some(Inbound::Error)) => {
                self.ended = true;
                Poll::Ready(Some(Err(io::ErrorKind::ConnectionReset.into())))
            }
            Poll::Ready(Some(Inbound::End)) | Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Sink<u32> for ScriptedConn {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held(self.plan.hold_writes, cx) {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: u32) -> io::Result<()> {
        let mut shared = self.script.lock();
        let log = &mut shared.conns[self.index];
        let n = log.writes;
        log.writes += 1;
        if self.plan.fail_write_at == Some(n) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        log.written.push(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let pending_data = {
            let shared = self.log();
            let log = &shared.conns[self.index];
            log.flushed < log.written.len()
        };
        if !pending_data {
            return Poll::Ready(Ok(()));
        }
        if self.held(self.plan.hold_flush, cx) {
            return Poll::Pending;
        }
        let mut shared = self.script.lock();
        let log = &mut shared.conns[self.index];
        let n = log.flushes;
        log.flushes += 1;
        if self.plan.fail_flush_at == Some(n) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        log.flushed = log.written.len();
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.script.lock().conns[self.index].closed = true;
        Poll::Ready(Ok(()))
    }
}

/// Polls `fut` once with `cx`.
pub fn poll_once<F: Future + Unpin>(fut: &mut F, cx: &mut Context<'_>) -> Poll<F::Output> {
    Pin::new(fut).poll(cx)
}
