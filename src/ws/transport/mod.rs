//! The byte stream under a WebSocket: TCP (async-io) or TLS over TCP (rustls via futures-rustls), or a stream
//! of the application's own; with a read-ahead buffer while busy, and the upgrade's response head kept
//! apart. No runtime named.

mod head;
mod tcp;
mod tls;

use std::cell::Cell;
use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_io::Async;
use futures_io::{AsyncRead, AsyncWrite};

pub(crate) use self::head::HeadScan;
pub(crate) use self::tcp::{dial_tcp, Target, TcpOptions};
pub(crate) use self::tls::{client_config, default_client_config, default_roots, handshake_tls};

/// The byte stream under a [`WsConnection`](crate::WsConnection): plain TCP or TLS over TCP, or a stream of
/// the application's own ([`WsConnection::from_raw_socket`](crate::WsConnection::from_raw_socket)).
#[non_exhaustive]
pub(crate) enum MaybeTlsStream {
    /// `ws://`.
    Plain(Async<TcpStream>),
    /// `wss://`.
    Tls(Box<futures_rustls::client::TlsStream<Async<TcpStream>>>),
    /// Any other byte stream.
    Other(Box<dyn RawStream>),
}

/// A byte stream a [`WsConnection`](crate::WsConnection) can run on: anything `AsyncRead + AsyncWrite + Send +
/// Sync + Unpin` (`Sync` so that a connection stays `Sync` whatever it runs on).
pub(crate) trait RawStream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

impl<S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> RawStream for S {}

impl std::fmt::Debug for MaybeTlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(tcp) => f.debug_tuple("Plain").field(tcp).finish(),
            Self::Tls(tls) => f.debug_tuple("Tls").field(tls).finish(),
            Self::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl MaybeTlsStream {
    /// The TCP socket, unless the stream is [`Other`](Self::Other).
    pub(crate) fn tcp(&self) -> Option<&Async<TcpStream>> {
        match self {
            Self::Plain(tcp) => Some(tcp),
            Self::Tls(tls) => Some(tls.get_ref().0),
            Self::Other(_) => None,
        }
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Other(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Other(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Self::Other(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Other(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_close(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Self::Other(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// The byte stream a [`WsConnection`](crate::WsConnection) runs on: a [`MaybeTlsStream`] that, during the
/// upgrade, hands the handshake no byte past the end of a `101` response's head.
///
/// Why: tungstenite keeps any bytes read past the response head and builds its read buffer from them, and a
/// buffer built that way forgets its configured size. Once the application holds on to received messages
/// (which share that buffer), every refill then allocates a buffer just big enough for the next frame, and
/// reads shrink to a few kilobytes. Stopping at the head lets the connection start from a fresh buffer of the
/// configured size ([`WebSocketConfig::read_buffer_size`]), with the bytes that followed the head served first.
///
/// [`WebSocketConfig::read_buffer_size`]: async_tungstenite::tungstenite::protocol::WebSocketConfig::read_buffer_size
#[derive(Debug)]
pub(crate) struct Transport {
    inner: MaybeTlsStream,
    /// While the response head is being read: what has been seen of it.
    head: Option<HeadScan>,
    /// Read ahead of the WebSocket's own buffer (and, first, what followed the response head): served before
    /// the stream. Allocated only while data arrives faster than it is read (see `poll_read`).
    pending: Vec<u8>,
    /// `pending[consumed..filled]` is still to be served.
    consumed: usize,
    filled: usize,
}

/// The read-ahead buffer's size while a connection is busy. Below glibc's mmap threshold (128 KiB), so
/// allocating it is cheap.
const READ_AHEAD: usize = 96 * 1024;
/// A direct read that fills the caller's buffer, of at least this much, means more is waiting: read ahead.
/// (A smaller read is the tail of the WebSocket's buffer, which says little.)
const BUSY_READ: usize = 1024;

thread_local! {
    /// One spare read-ahead buffer per thread, so that a connection that turns busy again does not allocate
    /// and zero-fill a new one (what a burst of a few dozen kilobytes would otherwise spend most on). Idle
    /// connections hold none; a thread holds at most this one.
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A read-ahead buffer: the thread's spare, or a new one.
fn take_buffer() -> Vec<u8> {
    // `try_with`: during thread teardown the spare may be gone already; then a new buffer it is.
    let spare = SPARE.try_with(Cell::take).unwrap_or_default();
    if spare.len() == READ_AHEAD {
        spare
    } else {
        vec![0; READ_AHEAD]
    }
}

/// The thread's spare read-ahead buffer, if it has one (never allocates).
fn take_spare() -> Option<Vec<u8>> {
    let spare = SPARE.try_with(Cell::take).ok()?;
    (spare.len() == READ_AHEAD).then_some(spare)
}

/// Keeps `buffer` as the thread's spare (dropping the one there, if any).
fn give_back(buffer: Vec<u8>) {
    if buffer.len() == READ_AHEAD {
        // During thread teardown the spare may be gone: then the buffer is simply dropped.
        let _ = SPARE.try_with(|spare| drop(spare.replace(buffer)));
    }
}

impl Transport {
    /// `inner`, ready for the upgrade.
    pub(crate) fn new(inner: MaybeTlsStream) -> Self {
        Self {
            inner,
            head: Some(HeadScan::default()),
            pending: Vec::new(),
            consumed: 0,
            filled: 0,
        }
    }

    /// After the upgrade: the bytes read past the response head are served first.
    pub(crate) fn upgraded(mut self) -> Self {
        self.head = None;
        self
    }

    /// The TCP socket, unless the stream is [`MaybeTlsStream::Other`].
    pub(crate) fn tcp(&self) -> Option<&Async<TcpStream>> {
        self.inner.tcp()
    }

    /// Serves what was read ahead, if anything is: never reads the socket.
    pub(crate) fn read_held(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.consumed >= self.filled {
            return None;
        }
        let n = buf.len().min(self.filled - self.consumed);
        buf[..n].copy_from_slice(&self.pending[self.consumed..self.consumed + n]);
        self.consumed += n;
        Some(n)
    }
}

impl AsyncRead for Transport {
    /// Serves what was read ahead, else reads. The read-ahead buffer exists only while the socket has more
    /// data than the caller's buffer takes: then one system call reads up to 96 KiB, which the WebSocket's
    /// small buffer takes in turn. It is let go as soon as the socket has nothing more (`Pending`), kept as
    /// the thread's one spare, so an idle connection holds no read-ahead memory.
    ///
    /// A read is made into the thread's spare when there is one (so a burst is read whole, in one system
    /// call, however small the caller's buffer), and what it got copied out if it fits: the spare goes back
    /// at once, and the connection stays without a buffer of its own. Without a spare (the thread's first
    /// burst, or another connection of the thread holds it), a direct read that fills the caller's buffer
    /// starts the read-ahead.
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.consumed < this.filled {
                let n = buf.len().min(this.filled - this.consumed);
                buf[..n].copy_from_slice(&this.pending[this.consumed..this.consumed + n]);
                this.consumed += n;
                return Poll::Ready(Ok(n));
            }
            if this.pending.len() != READ_AHEAD {
                // No read-ahead buffer (or only the bytes that followed the response head, now served).
                if !this.pending.is_empty() {
                    this.pending = Vec::new();
                }
                // Through the thread's spare, if it has one and the caller's buffer is small: whatever has
                // arrived is read in one system call; the spare is kept only if it got more than `buf` takes.
                let spare = match this.head {
                    None if buf.len() <= READ_AHEAD / 4 => take_spare(),
                    _ => None,
                };
                let Some(mut spare) = spare else {
                    return this.poll_read_direct(cx, buf);
                };
                match Pin::new(&mut this.inner).poll_read(cx, &mut spare) {
                    Poll::Ready(Ok(read)) if read > buf.len() => {
                        this.pending = spare;
                        this.consumed = 0;
                        this.filled = read;
                        continue;
                    }
                    Poll::Ready(Ok(read)) => {
                        buf[..read].copy_from_slice(&spare[..read]);
                        give_back(spare);
                        return Poll::Ready(Ok(read));
                    }
                    other => {
                        give_back(spare);
                        return other;
                    }
                }
            }
            // Refill the read-ahead buffer.
            let read = match Pin::new(&mut this.inner).poll_read(cx, &mut this.pending) {
                Poll::Pending => {
                    give_back(std::mem::take(&mut this.pending));
                    this.consumed = 0;
                    this.filled = 0;
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(read)) => read,
            };
            if read == 0 {
                return Poll::Ready(Ok(0));
            }
            this.consumed = 0;
            this.filled = read;
        }
    }
}

impl Transport {
    /// Reads into `buf` itself; during the upgrade, stops at the end of a 101's head.
    fn poll_read_direct(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let read = std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if let Some(scan) = self.head.as_mut() {
            match scan.end_in(&buf[..read]) {
                Some(end) if scan.may_switch() => {
                    // Keep what follows the head for the connection.
                    self.pending = buf[end..read].to_vec();
                    self.consumed = 0;
                    self.filled = self.pending.len();
                    self.head = None;
                    return Poll::Ready(Ok(end));
                }
                Some(_) => self.head = None,
                None if !scan.may_switch() => self.head = None,
                None => {}
            }
        } else if read == buf.len() && read >= BUSY_READ {
            // More is probably waiting than the caller takes at once: read ahead from now on (until the
            // socket has nothing more).
            self.pending = take_buffer();
            self.consumed = 0;
            self.filled = 0;
        }
        Poll::Ready(Ok(read))
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        // A connection that ends busy hands its read-ahead buffer to the next one on this thread.
        give_back(std::mem::take(&mut self.pending));
    }
}

impl AsyncWrite for Transport {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use async_io::Async;
    use futures_io::AsyncRead;

    use super::{MaybeTlsStream, Transport, READ_AHEAD};

    /// Bytes come out whole and in order through the read-ahead buffer, which exists only while more is
    /// waiting than a read takes, and is freed once the socket has nothing more.
    #[test]
    fn read_ahead_serves_every_byte_in_order_and_is_freed_when_the_socket_runs_dry() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sent: Vec<u8> = (0..1_000_000_u32).map(|i| (i % 251) as u8).collect();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, start) = std::sync::mpsc::channel::<()>();
        let writer = {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let (mut peer, _) = listener.accept().unwrap();
                // A first part before the reader starts: more than one read's worth is waiting.
                peer.write_all(&sent[..200_000]).unwrap();
                started.send(()).unwrap();
                peer.write_all(&sent[200_000..]).unwrap();
                // Stay open (no EOF) until the reader has seen the socket run dry.
                let _ = released.recv();
            })
        };
        let tcp = async_io::block_on(Async::<TcpStream>::connect(addr)).unwrap();
        let mut transport = Transport::new(MaybeTlsStream::Plain(tcp)).upgraded();
        start.recv().unwrap();
        let mut received = Vec::new();
        // What tungstenite asks for with the default configuration.
        let mut buf = vec![0; crate::ws::DEFAULT_READ_BUFFER];
        let mut read_ahead = false;
        async_io::block_on(futures_util::future::poll_fn(|cx: &mut Context<'_>| {
            while received.len() < sent.len() {
                match Pin::new(&mut transport).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(n)) => {
                        assert!(n > 0, "the peer is still open");
                        received.extend_from_slice(&buf[..n]);
                        read_ahead |= transport.pending.len() == READ_AHEAD;
                    }
                    Poll::Ready(Err(error)) => panic!("{error}"),
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(())
        }));
        assert!(received == sent, "every byte, in order");
        assert!(
            read_ahead,
            "a million bytes waiting: the reads went through the read-ahead buffer"
        );
        let waker = futures_util::task::noop_waker();
        let pending = Pin::new(&mut transport).poll_read(&mut Context::from_waker(&waker), &mut buf);
        assert!(pending.is_pending());
        assert!(transport.pending.is_empty(), "freed once the socket ran dry");
        release.send(()).unwrap();
        writer.join().unwrap();
    }
}
