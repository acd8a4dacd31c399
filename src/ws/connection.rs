//! [`WsConnection`]: one WebSocket connection, with Close frames turned into a typed end.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{self, Message, WebSocket};
use futures_core::Stream;
use futures_io::{AsyncRead, AsyncWrite};
use futures_sink::Sink;

use super::error::ConnectionError;
use super::transport::{MaybeTlsStream, Transport};

/// One WebSocket connection: `Stream<Item = Result<Message, ConnectionError>> + Sink<Message>`.
///
/// Made by [`connect`](crate::connect) or a [`WsConnector`](super::WsConnector). It differs from the bare
/// async-tungstenite stream in one way: a Close frame from the server is not an item. The connection ends
/// with [`ConnectionError::Closed`] carrying the code and reason, so that
/// [`ReconnectingStream`](crate::ReconnectingStream) reports it as a disconnect with a close code and
/// decides by the code whether to reconnect. Pings are answered automatically (by tungstenite, on the next
/// read or write); they and pongs are still yielded as items.
///
/// `poll_close` performs the close handshake: it sends a Close frame, then waits for the server's Close (or
/// the end of the connection). Bound the wait from outside, as `ReconnectingStream`'s close timeout does.
///
/// The stream and the sink may be polled from different tasks (e.g. after `StreamExt::split`): socket
/// readiness wakes the last task that read and the last task that wrote.
#[derive(Debug)]
pub struct WsConnection {
    /// tungstenite's WebSocket over the transport, driven here directly (as async-tungstenite's
    /// `WebSocketStream` would), so that a message goes from tungstenite's `read` to the caller without
    /// passing through another function's return value.
    ws: WebSocket<SyncIo>,
    /// The wakers that socket readiness wakes, shared with the waker the transport is polled with.
    wakers: Arc<Wakers>,
    /// What was last put into `wakers.read` and `wakers.write`: while the task's waker stays the same,
    /// nothing needs registering (a registered waker is never taken out, only replaced).
    reader: Option<Waker>,
    writer: Option<Waker>,
    protocol: Option<String>,
    peer_close: Option<(u16, String)>,
    /// The stream has returned its end.
    ended: bool,
    /// tungstenite probably takes another message: false after a write was only queued (`WouldBlock`),
    /// until a flush goes through.
    ready: bool,
    /// The Close frame is queued: `poll_close` only flushes it.
    closing: bool,
    /// Set by a [`WsConnector`](super::WsConnector) of several endpoints: dropped before the connection was
    /// stable, it moves the connector's endpoint ring on.
    pub(super) rotation: Option<super::ring::RotateOnEarlyDrop>,
}

impl WsConnection {
    /// Wraps a transport whose WebSocket handshake is done.
    pub(crate) fn new(transport: Transport, config: WebSocketConfig, protocol: Option<String>) -> Self {
        let wakers = Arc::new(Wakers::default());
        let io = SyncIo {
            transport,
            waker: Waker::from(Arc::clone(&wakers)),
        };
        Self {
            ws: WebSocket::from_raw_socket(io, Role::Client, Some(config)),
            wakers,
            reader: None,
            writer: None,
            protocol,
            peer_close: None,
            ended: false,
            ready: true,
            closing: false,
            rotation: None,
        }
    }

    /// A client connection over `stream`, on which the WebSocket upgrade has already been done: by a handshake
    /// of your own, or over a byte stream this crate does not dial (a Unix socket, an in-memory pipe).
    /// [`connect`](crate::connect) and [`WsConnector`](super::WsConnector) make connections over TCP and TLS
    /// themselves. The stream is boxed; reads and writes go through it a buffer at a time, not per message.
    pub fn from_raw_socket<S>(stream: S, config: WebSocketConfig) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
    {
        let transport = Transport::new(MaybeTlsStream::Other(Box::new(stream))).upgraded();
        Self::new(transport, config, None)
    }

    /// The subprotocol the server selected, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The TCP socket under the WebSocket (under TLS for `wss://`); `None` for a connection made with
    /// [`from_raw_socket`](Self::from_raw_socket).
    pub fn tcp_stream(&self) -> Option<&std::net::TcpStream> {
        self.ws.get_ref().transport.tcp().map(|tcp| tcp.get_ref())
    }

    /// The WebSocket configuration (limits and buffer sizes) of this connection.
    pub fn config(&self) -> &WebSocketConfig {
        self.ws.get_config()
    }

    #[inline(always)]
    fn register_reader(&mut self, waker: &Waker) {
        if !self.reader.as_ref().is_some_and(|reader| reader.will_wake(waker)) {
            self.reader = Some(register(&self.wakers.read, waker));
        }
    }

    fn register_writer(&mut self, waker: &Waker) {
        if !self.writer.as_ref().is_some_and(|writer| writer.will_wake(waker)) {
            self.writer = Some(register(&self.wakers.write, waker));
        }
    }

    fn closed_error(&mut self) -> Option<ConnectionError> {
        self.peer_close
            .take()
            .map(|(code, reason)| ConnectionError::Closed { code, reason })
    }
}

impl Stream for WsConnection {
    type Item = Result<Message, ConnectionError>;

    // Inlined into the caller (`ReconnectingStream`'s fast path), so that the message is moved once, from
    // tungstenite's result to the caller's; the rare paths are out of line.
    #[inline(always)]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        this.register_reader(cx.waker());
        match this.ws.read() {
            Ok(Message::Close(frame)) => Poll::Ready(this.on_close(frame)),
            Ok(message) => Poll::Ready(Some(Ok(message))),
            Err(error) => this.on_read_error(error),
        }
    }
}

impl WsConnection {
    /// The server's Close: tungstenite has queued the reply. Send it if the socket takes it now, then end at
    /// once rather than wait for a server that may never close TCP.
    #[cold]
    #[inline(never)]
    fn on_close(&mut self, frame: Option<CloseFrame>) -> Option<Result<Message, ConnectionError>> {
        let (code, reason) = frame.map_or((1005, String::new()), |frame| {
            (u16::from(frame.code), frame.reason.as_str().to_owned())
        });
        self.peer_close = Some((code, reason));
        let _ = self.ws.flush();
        self.on_end(None)
    }

    /// `WouldBlock` is `Pending`; the connection closing is the end; anything else is an error, and the end.
    #[inline(never)]
    fn on_read_error(&mut self, error: tungstenite::Error) -> Poll<Option<Result<Message, ConnectionError>>> {
        match error {
            error if would_block(&error) => Poll::Pending,
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => Poll::Ready(self.on_end(None)),
            error => Poll::Ready(self.on_end(Some(error))),
        }
    }

    #[cold]
    fn on_end(&mut self, error: Option<tungstenite::Error>) -> Option<Result<Message, ConnectionError>> {
        self.ended = true;
        match error {
            Some(error) => Some(Err(self.closed_error().unwrap_or(ConnectionError::Protocol(error)))),
            None => self.closed_error().map(Err),
        }
    }

    /// Flushes tungstenite's write buffer; `Pending` while the socket takes no more.
    fn poll_flush_ws(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tungstenite::Error>> {
        self.register_writer(cx.waker());
        let flushed = pending_on_would_block(self.ws.flush());
        if flushed.is_ready() {
            self.ready = true;
        }
        flushed
    }
}

impl Sink<Message> for WsConnection {
    type Error = ConnectionError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        let this = self.get_mut();
        if this.ready {
            return Poll::Ready(Ok(()));
        }
        // A write was only queued: flush until the socket has taken it.
        this.poll_flush_ws(cx).map_err(Into::into)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), ConnectionError> {
        let this = self.get_mut();
        match this.ws.write(item) {
            Ok(()) => {
                this.ready = true;
                Ok(())
            }
            Err(error) if would_block(&error) => {
                // Queued, not an error: `poll_ready` flushes before the next one.
                this.ready = false;
                Ok(())
            }
            Err(error) => {
                this.ready = true;
                Err(error.into())
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        match self.get_mut().poll_flush_ws(cx) {
            // The close handshake just completed: nothing is left to flush.
            Poll::Ready(Err(tungstenite::Error::ConnectionClosed)) => Poll::Ready(Ok(())),
            other => other.map_err(Into::into),
        }
    }

    /// Sends a Close frame, then waits for the server's Close or the end of the connection.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        let this = self.get_mut();
        this.ready = true;
        this.register_writer(cx.waker());
        let sent = if this.closing {
            this.ws.flush()
        } else {
            this.ws.close(None)
        };
        match pending_on_would_block(sent) {
            Poll::Ready(Ok(()) | Err(tungstenite::Error::ConnectionClosed)) => {}
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
            Poll::Pending => {
                this.closing = true;
                return Poll::Pending;
            }
        }
        this.closing = true;
        this.register_reader(cx.waker());
        while !this.ended {
            match this.ws.read() {
                Ok(_) => {}
                Err(error) if would_block(&error) => return Poll::Pending,
                Err(_) => this.ended = true,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Whether tungstenite stopped because the socket would block (the transport returned `Pending`).
fn would_block(error: &tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Io(error) if error.kind() == io::ErrorKind::WouldBlock)
}

/// `WouldBlock` as `Pending`.
fn pending_on_would_block<T>(result: Result<T, tungstenite::Error>) -> Poll<Result<T, tungstenite::Error>> {
    match result {
        Err(error) if would_block(&error) => Poll::Pending,
        other => Poll::Ready(other),
    }
}

/// The tasks to wake when the socket becomes readable or writable: the last task that read and the last that
/// wrote (both on any readiness, as tungstenite reads while writing and writes while reading).
#[derive(Debug, Default)]
struct Wakers {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
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
fn register(slot: &Mutex<Option<Waker>>, waker: &Waker) -> Waker {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
    waker.clone()
}

/// The transport as the blocking `Read + Write` tungstenite drives: polled with the connection's own waker,
/// `Pending` becomes `WouldBlock`.
#[derive(Debug)]
struct SyncIo {
    transport: Transport,
    waker: Waker,
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
