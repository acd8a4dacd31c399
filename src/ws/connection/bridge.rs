//! The bridge between tungstenite's blocking `Read + Write` and the async transport: a `WouldBlock` is a
//! `Pending`, and the socket's readiness wakes the last reader and the last writer.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use async_tungstenite::tungstenite;
use futures_io::{AsyncRead, AsyncWrite};

use crate::ws::transport::Transport;

/// Whether tungstenite stopped because the socket would block (the transport returned `Pending`).
pub(super) fn would_block(error: &tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Io(error) if error.kind() == io::ErrorKind::WouldBlock)
}

/// `WouldBlock` as `Pending`.
pub(super) fn pending_on_would_block<T>(result: Result<T, tungstenite::Error>) -> Poll<Result<T, tungstenite::Error>> {
    match result {
        Err(error) if would_block(&error) => Poll::Pending,
        other => Poll::Ready(other),
    }
}

/// The tasks to wake when the socket becomes readable or writable: the last task that read and the last that
/// wrote (both on any readiness, as tungstenite reads while writing and writes while reading).
#[derive(Debug, Default)]
pub(super) struct Wakers {
    pub(super) read: Mutex<Option<Waker>>,
    pub(super) write: Mutex<Option<Waker>>,
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Cloned out, so that no lock is held while a task is woken.
        let reader = self.read.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let writer = self.write.lock().unwrap_or_else(PoisonError::into_inner).clone();
        // One task that both reads and writes (the usual case) is woken once.
        if let Some(writer) = writer.filter(|writer| !reader.as_ref().is_some_and(|reader| reader.will_wake(writer))) {
            writer.wake();
        }
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// Puts `waker` into `slot`; returns the copy the connection keeps to compare against.
#[cold]
#[inline(never)]
pub(super) fn register(slot: &Mutex<Option<Waker>>, waker: &Waker) -> Waker {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
    waker.clone()
}

/// The transport as the blocking `Read + Write` tungstenite drives: polled with the connection's own waker,
/// `Pending` becomes `WouldBlock`.
#[derive(Debug)]
pub(super) struct SyncIo {
    pub(super) transport: Transport,
    pub(super) waker: Waker,
    /// Reads serve only what the transport already holds: no system call.
    pub(super) peek: bool,
}

impl SyncIo {
    fn poll<T>(
        &mut self,
        op: impl FnOnce(Pin<&mut Transport>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> io::Result<T> {
        let mut cx = Context::from_waker(&self.waker);
        match op(Pin::new(&mut self.transport), &mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Read for SyncIo {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.peek {
            return self
                .transport
                .read_held(buf)
                .ok_or_else(|| io::ErrorKind::WouldBlock.into());
        }
        self.poll(|transport, cx| transport.poll_read(cx, buf))
    }
}

impl Write for SyncIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.poll(|transport, cx| transport.poll_write(cx, buf))
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.poll(|transport, cx| transport.poll_write_vectored(cx, bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.poll(|transport, cx| transport.poll_flush(cx))
    }
}
