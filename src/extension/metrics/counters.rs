//! The counters behind a [`Metrics`](super::Metrics): atomics in one shared block, plus each live
//! connection's own traffic counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::snapshot::{Disconnects, MetricsSnapshot};
use crate::hook::End;
use crate::time::Timer;

/// Why a connection ended: the index of its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    Normal,
    GoingAway,
    Abnormal,
    OtherClose,
    ReadError,
    Ended,
    WriteError,
    HookFailed,
    Closed,
    Dropped,
}

impl Reason {
    const COUNT: usize = 10;

    /// A server's close code.
    pub(super) fn of_close_code(code: u16) -> Self {
        match code {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            1006 => Self::Abnormal,
            _ => Self::OtherClose,
        }
    }

    /// How a connection ended; `close_frame` is the code of a Close frame it yielded last, if any.
    pub(super) fn of_end(end: &End<'_>, close_frame: Option<u16>) -> Self {
        match end {
            End::ReadFailed(error) => {
                let diagnosis = error.diagnose();
                match diagnosis.close_code() {
                    Some(code) if diagnosis.is_peer_close() => Self::of_close_code(code),
                    // Lost without a close handshake; other faults this side found are read errors.
                    Some(1006) => Self::Abnormal,
                    _ => Self::ReadError,
                }
            }
            End::WriteFailed(_) => Self::WriteError,
            End::HookFailed(_) => Self::HookFailed,
            End::Ended => close_frame.map_or(Self::Ended, Self::of_close_code),
            End::Closed => Self::Closed,
            End::Dropped | End::ConnectFailed(_) | End::Abandoned => Self::Dropped,
        }
    }
}

/// Messages and bytes each way. A connection's own counters have one writer (its hook), so they are bumped
/// with a relaxed load and store, not a locked read-modify-write.
#[derive(Debug, Default)]
pub(super) struct Traffic {
    pub(super) messages_in: AtomicU64,
    pub(super) bytes_in: AtomicU64,
    pub(super) messages_out: AtomicU64,
    pub(super) bytes_out: AtomicU64,
}

impl Traffic {
    fn load(&self) -> [u64; 4] {
        [&self.messages_in, &self.bytes_in, &self.messages_out, &self.bytes_out].map(|c| c.load(Ordering::Relaxed))
    }
}

/// Adds `by` to a counter that only one thread writes at a time.
#[inline]
pub(super) fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
}

/// The shared block.
pub(super) struct Counters {
    timer: Arc<dyn Timer>,
    /// The instant `connected_at` counts from.
    base: Instant,
    attempts: AtomicU64,
    connections: AtomicU64,
    failed: AtomicU64,
    open: AtomicU64,
    disconnects: [AtomicU64; Reason::COUNT],
    /// The traffic of connections that have gone (folded in when each ends).
    finished: Traffic,
    /// The traffic counters of the connections still alive.
    live: Mutex<Vec<Arc<Traffic>>>,
    /// The generation of the latest connection while it is up, 0 when it is down.
    current: AtomicU64,
    /// When the latest connection was made, in nanoseconds since `base`.
    connected_at: AtomicU64,
}

impl Counters {
    pub(super) fn new(timer: Arc<dyn Timer>) -> Self {
        Self {
            base: timer.now(),
            timer,
            attempts: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            open: AtomicU64::new(0),
            disconnects: Default::default(),
            finished: Traffic::default(),
            live: Mutex::new(Vec::new()),
            current: AtomicU64::new(0),
            connected_at: AtomicU64::new(0),
        }
    }

    pub(super) fn on_attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn on_failed_attempt(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a new connection; returns its generation and its traffic counters.
    pub(super) fn on_connected(&self) -> (u64, Arc<Traffic>) {
        let generation = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        let nanos = self.timer.now().saturating_duration_since(self.base).as_nanos();
        self.connected_at
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.current.store(generation, Ordering::Release);
        let traffic = Arc::new(Traffic::default());
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&traffic));
        (generation, traffic)
    }

    /// Counts the end of connection `generation`, and folds its traffic into the finished connections' under
    /// the lock, so that a snapshot sees it exactly once.
    pub(super) fn on_disconnected(&self, generation: u64, reason: Reason, traffic: &Arc<Traffic>) {
        self.disconnects[reason as usize].fetch_add(1, Ordering::Relaxed);
        self.open.fetch_sub(1, Ordering::Relaxed);
        // Only the latest connection's end marks the stream down; an older one may end after a newer began.
        let _ = self
            .current
            .compare_exchange(generation, 0, Ordering::AcqRel, Ordering::Relaxed);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = live.iter().position(|t| Arc::ptr_eq(t, traffic)) {
            live.swap_remove(index);
        }
        let [mi, bi, mo, bo] = traffic.load();
        self.finished.messages_in.fetch_add(mi, Ordering::Relaxed);
        self.finished.bytes_in.fetch_add(bi, Ordering::Relaxed);
        self.finished.messages_out.fetch_add(mo, Ordering::Relaxed);
        self.finished.bytes_out.fetch_add(bo, Ordering::Relaxed);
    }

    /// Messages in, bytes in, messages out, bytes out: of every connection, gone or alive.
    fn traffic(&self) -> [u64; 4] {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = self.finished.load();
        for traffic in live.iter() {
            for (sum, n) in total.iter_mut().zip(traffic.load()) {
                *sum += n;
            }
        }
        total
    }

    pub(super) fn snapshot(&self) -> MetricsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let [messages_in, bytes_in, messages_out, bytes_out] = self.traffic();
        let disconnect = |reason: Reason| load(&self.disconnects[reason as usize]);
        MetricsSnapshot {
            attempts: load(&self.attempts),
            connections: load(&self.connections),
            failed_attempts: load(&self.failed),
            open: load(&self.open),
            disconnects: Disconnects {
                normal: disconnect(Reason::Normal),
                going_away: disconnect(Reason::GoingAway),
                abnormal: disconnect(Reason::Abnormal),
                other_close: disconnect(Reason::OtherClose),
                read_error: disconnect(Reason::ReadError),
                ended: disconnect(Reason::Ended),
                write_error: disconnect(Reason::WriteError),
                hook_failed: disconnect(Reason::HookFailed),
                closed: disconnect(Reason::Closed),
                dropped: disconnect(Reason::Dropped),
            },
            messages_in,
            messages_out,
            bytes_in,
            bytes_out,
            uptime: self.uptime(),
        }
    }

    pub(super) fn uptime(&self) -> Option<Duration> {
        if self.current.load(Ordering::Acquire) == 0 {
            return None;
        }
        let since = self.base + Duration::from_nanos(self.connected_at.load(Ordering::Relaxed));
        Some(self.timer.now().saturating_duration_since(since))
    }

    pub(super) fn is_connected(&self) -> bool {
        self.current.load(Ordering::Acquire) != 0
    }

    pub(super) fn generation(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}
