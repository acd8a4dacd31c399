//! The client's state: what its handles and its driver share, and the [`ClientState`] snapshot read from it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_tungstenite::tungstenite::Message;
use event_listener::Event as Notify;

use super::config::ClientConfig;
use super::fanout::Publisher;
use super::outbox::Outbox;
use crate::event::{ConnectionState, Event};
use crate::time::Timer;

/// State shared by the client, its senders and its driver.
pub(super) struct Shared {
    pub(super) config: ClientConfig,
    pub(super) timer: Arc<dyn Timer>,
    pub(super) running: AtomicBool,
    /// Starts and ends runs, and aims shutdowns at the run in progress.
    pub(super) runs: Mutex<Runs>,
    /// The run a shutdown was asked of (its number), 0 for none: read by the driver without the lock.
    pub(super) shutdown_for: AtomicU64,
    pub(super) close_timeout_ms: AtomicU64,
    pub(super) stopped: Notify,
    pub(super) messages: Publisher<Message>,
    /// The same messages with their connection's generation, for `subscribe_with_generation`.
    pub(super) tagged: Publisher<(u64, Message)>,
    /// The same messages with continuity reports in front, for `subscribe_resumed`.
    pub(super) resumed: Publisher<crate::delivery::Resumed<Message>>,
    /// Reports of the resume layer not yet put in front of their message.
    pub(super) continuity: super::connector::ContinuitySlot,
    pub(super) events: Publisher<Event>,
    pub(super) outbox: Arc<Outbox>,
    pub(super) leftover: Mutex<VecDeque<Message>>,
    /// What the queue policy dropped, for `take_dropped`.
    pub(super) dropped: Mutex<Vec<Message>>,
    pub(super) messages_in: AtomicU64,
    pub(super) messages_out: AtomicU64,
    pub(super) bytes_in: AtomicU64,
    pub(super) bytes_out: AtomicU64,
    pub(super) detail: Mutex<Detail>,
}

/// Which run is in progress, if any.
#[derive(Debug, Default)]
pub(super) struct Runs {
    /// The number of the run in progress or the last one (the first is 1).
    pub(super) current: u64,
    pub(super) running: bool,
}

#[derive(Debug, Default)]
pub(super) struct Detail {
    pub(super) status: Option<ConnectionState>,
    pub(super) generation: u64,
    pub(super) connected_at: Option<SystemTime>,
    pub(super) connections: u64,
    pub(super) failed_attempts: u64,
    pub(super) last_error: Option<String>,
    pub(super) last_disconnect: Option<DisconnectReason>,
}

impl Shared {
    pub(super) fn detail(&self) -> MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // The counters have one writer, the running driver (a second run() is refused), so a load and a store do
    // instead of a locked read-modify-write per message; readers see a recent value either way.
    fn bump(counter: &AtomicU64, by: u64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
    }

    pub(super) fn count_in(&self, messages: usize, bytes: u64) {
        Self::bump(&self.messages_in, messages as u64);
        Self::bump(&self.bytes_in, bytes);
    }

    pub(super) fn count_out(&self, message: &Message) {
        Self::bump(&self.messages_out, 1);
        Self::bump(&self.bytes_out, message.len() as u64);
    }

    /// A message counted as sent came back unsent.
    pub(super) fn uncount_out(&self, message: &Message) {
        let less = |counter: &AtomicU64, by: u64| {
            counter.store(counter.load(Ordering::Relaxed).saturating_sub(by), Ordering::Relaxed);
        };
        less(&self.messages_out, 1);
        less(&self.bytes_out, message.len() as u64);
    }

    fn runs(&self) -> MutexGuard<'_, Runs> {
        self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A run starts: its number, or `None` if one is in progress.
    pub(super) fn start_run(&self) -> Option<u64> {
        let mut runs = self.runs();
        if runs.running {
            return None;
        }
        runs.running = true;
        runs.current += 1;
        self.running.store(true, Ordering::SeqCst);
        Some(runs.current)
    }

    /// Run `run` has ended (however it ended).
    pub(super) fn end_run(&self, run: u64) {
        let mut runs = self.runs();
        runs.running = false;
        let _ = self
            .shutdown_for
            .compare_exchange(run, 0, Ordering::SeqCst, Ordering::SeqCst);
        self.running.store(false, Ordering::SeqCst);
    }

    /// Asks the run in progress to shut down: `false` if none is.
    pub(super) fn request_shutdown(&self) -> bool {
        let runs = self.runs();
        if runs.running {
            self.shutdown_for.store(runs.current, Ordering::SeqCst);
        }
        runs.running
    }

    pub(super) fn continuity(&self) -> MutexGuard<'_, VecDeque<crate::delivery::Continuity>> {
        self.continuity.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn dropped(&self) -> MutexGuard<'_, Vec<Message>> {
        self.dropped.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn leftover(&self) -> MutexGuard<'_, VecDeque<Message>> {
        self.leftover.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an event in the state and forwards it to event subscribers (never blocking); returns it as
    /// they get it (with the client's generation).
    pub(super) fn on_event(&self, event: &Event) -> Event {
        // Each run has its own stream, whose generations start at 1: events carry the client's count instead.
        let mut event = event.clone();
        {
            let mut detail = self.detail();
            match &mut event {
                Event::Connecting { attempt } => {
                    detail.status = Some(ConnectionState::Connecting { attempt: *attempt })
                }
                Event::Connected { generation, .. } => {
                    detail.connections += 1;
                    detail.generation = detail.connections;
                    *generation = detail.generation;
                    detail.connected_at = Some(SystemTime::now());
                    detail.status = Some(ConnectionState::Connected {
                        generation: detail.generation,
                    });
                }
                Event::ConnectFailed { failure } | Event::HandshakeFailed { failure, .. } => {
                    detail.failed_attempts += 1;
                    detail.last_error = Some(failure.cause().to_string());
                }
                Event::Disconnected {
                    generation,
                    uptime,
                    reason,
                } => {
                    *generation = detail.generation;
                    detail.connected_at = None;
                    detail.last_error = Some(reason.cause().to_string());
                    detail.last_disconnect = Some(DisconnectReason {
                        generation: detail.generation,
                        close_code: reason.close_code(),
                        reason: reason.cause().to_string(),
                        uptime: *uptime,
                    });
                }
                Event::RetryScheduled { attempt, delay, .. } => {
                    detail.status = Some(ConnectionState::Backoff {
                        attempt: *attempt,
                        delay: *delay,
                    })
                }
                Event::GaveUp { reason, .. } => {
                    detail.connected_at = None;
                    detail.last_error = Some(reason.cause().to_string());
                    detail.status = Some(ConnectionState::Terminated);
                }
                Event::Dropped { generation, .. } => *generation = detail.generation,
                Event::Closed { .. } => {
                    detail.connected_at = None;
                    detail.status = Some(ConnectionState::Closed);
                }
            }
        }
        self.events.publish(event.clone());
        event
    }
}

impl Shared {
    /// A snapshot of the state and counters.
    pub(super) fn snapshot(&self) -> ClientState {
        let detail = self.detail();
        ClientState {
            status: detail.status.unwrap_or(ConnectionState::Idle),
            generation: detail.generation,
            connected_at: detail.connected_at,
            reconnects: detail.connections.saturating_sub(1),
            failed_attempts: detail.failed_attempts,
            messages_sent: self.messages_out.load(Ordering::Relaxed),
            messages_received: self.messages_in.load(Ordering::Relaxed),
            bytes_sent: self.bytes_out.load(Ordering::Relaxed),
            bytes_received: self.bytes_in.load(Ordering::Relaxed),
            last_error: detail.last_error.clone(),
            last_disconnect: detail.last_disconnect.clone(),
            running: self.running.load(Ordering::SeqCst),
        }
    }
}

/// Why the last connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DisconnectReason {
    /// The connection's generation.
    pub generation: u64,
    /// The WebSocket close code (the server's, or 1006 for a connection lost without a close handshake).
    pub close_code: Option<u16>,
    /// What happened, in words.
    pub reason: String,
    /// How long the connection had been up.
    pub uptime: Duration,
}

/// A snapshot of a client's state and counters; see [`WebSocketClient::state`](super::WebSocketClient::state).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClientState {
    /// Where the connection is.
    pub status: ConnectionState,
    /// The current or last connection's generation (1 for the first connection of the client).
    pub generation: u64,
    /// When the current connection came up.
    pub connected_at: Option<SystemTime>,
    /// Successful reconnections: connections after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed (including handshake failures).
    pub failed_attempts: u64,
    /// Messages handed to the connection for sending.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// Why the last connection ended.
    pub last_disconnect: Option<DisconnectReason>,
    /// Whether `run()` is running.
    pub running: bool,
}

impl ClientState {
    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.status.is_connected()
    }

    /// The close code of the last disconnect, if any.
    pub fn last_close_code(&self) -> Option<u16> {
        self.last_disconnect.as_ref().and_then(|d| d.close_code)
    }
}
