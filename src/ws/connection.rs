//! [`WsConnection`]: one WebSocket connection, with Close frames turned into a typed end.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::client::Response;
use async_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{self, Message, WebSocket};
use futures_core::Stream;
use futures_io::{AsyncRead, AsyncWrite};

use self::bridge::{pending_on_would_block, register, would_block, SyncIo, Wakers};
use super::error::ConnectionError;
use super::transport::{MaybeTlsStream, Transport};
use crate::extension::Heartbeat;
use crate::hook::{Hook, Tick};
use crate::time::{AsyncIoTimer, Sleep, Timer};

mod bridge;
mod sink;

/// The default heartbeat of a WebSocket connection: a Ping every 20 s ...
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// ... and the connection declared dead when no frame arrives within 20 s of one: a half-open connection is
/// detected within 40 s (as python websockets does, and the older stream-tungstenite's 20 s receive timeout).
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What a connection is given besides its transport: its heartbeat, clock and reply grace.
#[derive(Clone)]
pub(crate) struct Liveness {
    /// `(interval, timeout)`: ping every `interval`; no frame within `timeout` of a ping ends the connection.
    pub(crate) heartbeat: Option<(Duration, Duration)>,
    pub(crate) timer: Arc<dyn Timer>,
    /// How long a Close from the server that arrives right behind a message waits for the application's reply.
    pub(crate) reply_grace: Option<Duration>,
    /// The Close frame `poll_close` sends, shared with the connector (and the client) that made the
    /// connection; `None` sends a Close without a code.
    pub(crate) close_frame: Arc<Mutex<Option<CloseFrame>>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            heartbeat: Some((DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT)),
            timer: Arc::new(AsyncIoTimer),
            reply_grace: None,
            close_frame: Arc::default(),
        }
    }
}

/// One WebSocket connection: `Stream<Item = Result<Message, ConnectionError>> + Sink<Message>`.
///
/// Made by [`connect`](crate::connect) or a [`WsConnector`](super::WsConnector). It differs from the bare
/// async-tungstenite stream in one way: a Close frame from the server is not an item. The connection ends
/// with [`ConnectionError::Closed`] carrying the code and reason, so that
/// [`ReconnectingStream`](crate::ReconnectingStream) reports it as a disconnect with a close code and
/// decides by the code whether to reconnect. Pings are answered automatically (by tungstenite, on the next
/// read or write); they and the application's pongs are still yielded as items (the heartbeat's are not).
///
/// `poll_close` performs the close handshake: it sends a Close frame, then waits for the server's Close (or
/// the end of the connection). Bound the wait from outside, as `ReconnectingStream`'s close timeout does.
///
/// The stream and the sink may be polled from different tasks (e.g. after `StreamExt::split`): socket
/// readiness wakes the last task that read and the last task that wrote.
///
/// # Heartbeat
///
/// A connection pings the server every [`DEFAULT_PING_INTERVAL`] and fails with
/// [`ConnectionError::Silent`] when no frame arrives within [`DEFAULT_PING_TIMEOUT`] of a ping, so a half-open
/// connection is detected within their sum (40 s); set or turn off with
/// [`WsConnectorBuilder::with_heartbeat`](super::WsConnectorBuilder::with_heartbeat). The timer runs while the
/// connection is read (as [`ReconnectingStream`](crate::ReconnectingStream) and the client do). Its pings
/// carry a payload of their own, and the Pongs answering them are not items: the reader sees no Pong it did
/// not ask for.
///
/// # Cancel safety
///
/// Dropping a pending `next()` loses nothing: a message is taken from tungstenite only when it is returned.
/// A pending `send()` dropped after `start_send` has handed its message over: it is written (or queued in
/// tungstenite's buffer, flushed by the next write or flush).
///
/// # Messages written after the server's end
///
/// Before a message is written, what tungstenite has already received is looked at (without a system call).
/// If the server's Close (or a frame that fails the connection) is there, the message is still written, ahead
/// of the Close reply, as the bare connection would write it; but the server may discard it (it sent its
/// Close first), so the flush fails with [`ConnectionError::WrittenAfterEnd`]: a `ReconnectingStream` then
/// sends it again on the next connection, or hands it back. Such a message may arrive twice. The messages
/// received before the end are still delivered.
///
/// # Memory
///
/// An idle connection holds about 5 KiB: tungstenite's read buffer is [`DEFAULT_READ_BUFFER`] (2 KiB) and
/// a burst of data is read ahead into a larger buffer that exists only while data keeps arriving. The
/// connection itself is a small handle to one allocation, so that a
/// [`ReconnectingStream`](crate::ReconnectingStream), which keeps room for a connection and a draining one,
/// stays small too.
///
/// [`DEFAULT_READ_BUFFER`]: super::DEFAULT_READ_BUFFER
pub struct WsConnection {
    /// The connection's state, boxed (see [Memory](Self#memory)).
    conn: Box<Conn>,
    /// Set by a [`WsConnector`](super::WsConnector) of several endpoints: dropped before the connection was
    /// stable, it moves the connector's endpoint ring on.
    pub(super) rotation: Option<super::ring::RotateOnEarlyDrop>,
    /// The upgrade's response (none for a connection made by `from_raw_socket`).
    pub(super) response: Option<Box<Response>>,
}

/// A [`WsConnection`]'s state.
struct Conn {
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
    /// tungstenite may hold a complete frame: a read returned a message, and no read found the buffer empty
    /// since.
    buffered: bool,
    /// A write is in tungstenite's buffer, not flushed yet.
    unflushed: bool,
    /// The read takes the slow path: something was read ahead (`ahead`, `peer_closed`, `failed`).
    detour: bool,
    /// Messages read ahead of the reader (while looking for the server's end before a write).
    ahead: VecDeque<Message>,
    /// tungstenite has read the server's Close (its reply is queued).
    peer_closed: bool,
    /// A read error found ahead of the reader, returned after `ahead`.
    failed: Option<Box<tungstenite::Error>>,
    /// Frames written after the end had arrived, not yet on the socket (they go before the Close reply).
    late: Vec<u8>,
    /// Messages were written after the end had arrived: the flush reports it.
    wrote_late: bool,
    /// The application wrote since the last message it was given.
    replied: bool,
    heartbeat: Option<Heartbeat>,
    timer: Arc<dyn Timer>,
    reply_grace: Option<Duration>,
    /// While a Close that arrived right behind a message waits for the reply.
    grace: Option<Sleep>,
    /// The Close frame of [`close_with`](Self::close_with), else the connector's.
    close_frame: Option<CloseFrame>,
    shared_close_frame: Arc<Mutex<Option<CloseFrame>>>,
}

impl std::fmt::Debug for WsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let conn = &self.conn;
        f.debug_struct("WsConnection")
            .field("protocol", &conn.protocol)
            .field("ended", &conn.ended)
            .field("peer_closed", &conn.peer_closed)
            .field("read_ahead", &conn.ahead.len())
            .field("heartbeat", &conn.heartbeat)
            .finish_non_exhaustive()
    }
}

impl WsConnection {
    /// Wraps a transport whose WebSocket handshake is done.
    pub(crate) fn new(
        transport: Transport,
        config: WebSocketConfig,
        protocol: Option<String>,
        liveness: Liveness,
    ) -> Self {
        let wakers = Arc::new(Wakers::default());
        let io = SyncIo {
            transport,
            waker: Waker::from(Arc::clone(&wakers)),
            peek: false,
        };
        let heartbeat = liveness.heartbeat.map(|(interval, timeout)| {
            let mut heartbeat = Heartbeat::new(interval, timeout)
                .with_timer(Arc::clone(&liveness.timer))
                .with_payload(b"stream-tungstenite connection heartbeat");
            Hook::<Message>::on_start(&mut heartbeat);
            heartbeat
        });
        let conn = Conn {
            ws: WebSocket::from_raw_socket(io, Role::Client, Some(config)),
            wakers,
            reader: None,
            writer: None,
            protocol,
            peer_close: None,
            ended: false,
            ready: true,
            closing: false,
            buffered: false,
            unflushed: false,
            detour: false,
            ahead: VecDeque::new(),
            peer_closed: false,
            failed: None,
            late: Vec::new(),
            wrote_late: false,
            replied: true,
            heartbeat,
            timer: liveness.timer,
            reply_grace: liveness.reply_grace,
            grace: None,
            close_frame: None,
            shared_close_frame: liveness.close_frame,
        };
        Self {
            conn: Box::new(conn),
            rotation: None,
            response: None,
        }
    }

    /// A client connection over `stream`, on which the WebSocket upgrade has already been done: by a handshake
    /// of your own, or over a byte stream this crate does not dial (a Unix socket, an in-memory pipe). It has
    /// the default [heartbeat](Self#heartbeat).
    /// [`connect`](crate::connect) and [`WsConnector`](super::WsConnector) make connections over TCP and TLS
    /// themselves. The stream is boxed; reads and writes go through it a buffer at a time, not per message.
    pub fn from_raw_socket<S>(stream: S, config: WebSocketConfig) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
    {
        let transport = Transport::new(MaybeTlsStream::Other(Box::new(stream))).upgraded();
        Self::new(transport, config, None, Liveness::default())
    }

    /// The response to the WebSocket upgrade (status, headers), as tokio-tungstenite's `connect_async` returns
    /// it beside the stream; `None` for a connection made by [`from_raw_socket`](Self::from_raw_socket).
    pub fn response(&self) -> Option<&Response> {
        self.response.as_deref()
    }

    /// Sets the Close frame that closing the connection (`poll_close`, `SinkExt::close`) sends: `code` and
    /// `reason` (at most 123 bytes: a longer reason is cut on a character boundary). Without it the
    /// connector's ([`WsConnectorBuilder::with_close_frame`](super::WsConnectorBuilder::with_close_frame)) is
    /// sent, or a Close without a code.
    pub fn close_with(&mut self, code: u16, reason: &str) {
        self.conn.close_frame = Some(close_frame(code, reason));
    }

    /// The subprotocol the server selected, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.conn.protocol.as_deref()
    }

    /// The TCP socket under the WebSocket (under TLS for `wss://`); `None` for a connection made with
    /// [`from_raw_socket`](Self::from_raw_socket).
    pub fn tcp_stream(&self) -> Option<&std::net::TcpStream> {
        self.conn.ws.get_ref().transport.tcp().map(|tcp| tcp.get_ref())
    }

    /// The WebSocket configuration (limits and buffer sizes) of this connection.
    pub fn config(&self) -> &WebSocketConfig {
        self.conn.ws.get_config()
    }
}

impl Conn {
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
        let this = &mut *self.get_mut().conn;
        if this.ended || this.detour {
            return this.poll_detour(cx);
        }
        this.read(cx)
    }
}

impl Conn {
    /// Reads the next message from tungstenite (and the socket).
    #[inline(always)]
    fn read(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, ConnectionError>>> {
        self.register_reader(cx.waker());
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return self.on_close(frame, cx),
                // The answer to the heartbeat's own ping: it proves the connection alive, and is not an item.
                Ok(Message::Pong(payload)) if self.heartbeat.as_ref().is_some_and(|h| h.answers(&payload)) => {
                    self.received(&Message::Pong(payload));
                }
                Ok(message) => {
                    self.received(&message);
                    return Poll::Ready(Some(Ok(message)));
                }
                Err(error) => return self.on_read_error(error, cx),
            }
        }
    }

    /// A message was read: the buffer may hold more, the heartbeat hears of it, and a reply is awaited.
    #[inline(always)]
    fn received(&mut self, message: &Message) {
        self.buffered = true;
        if message.is_text() || message.is_binary() {
            self.replied = false;
        }
        if let Some(heartbeat) = self.heartbeat.as_mut() {
            heartbeat.saw_frame();
        }
    }

    /// The server's Close, read by the reader: tungstenite has queued the reply. If it came right behind a
    /// message the application has not answered yet and a reply grace is set, the reply waits for the answer
    /// (or the grace); otherwise it is sent if the socket takes it now, and the connection ends at once rather
    /// than wait for a server that may never close TCP.
    #[cold]
    #[inline(never)]
    fn on_close(
        &mut self,
        frame: Option<CloseFrame>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, ConnectionError>>> {
        // Right behind: the Close was in the buffer when the last message was handed out (no read since found
        // it empty).
        let right_behind = self.buffered && !self.replied;
        self.record_close(frame);
        if right_behind {
            self.start_grace();
        }
        self.poll_detour(cx)
    }

    fn record_close(&mut self, frame: Option<CloseFrame>) {
        let (code, reason) = frame.map_or((1005, String::new()), |frame| {
            (u16::from(frame.code), frame.reason.as_str().to_owned())
        });
        self.peer_close = Some((code, reason));
        self.peer_closed = true;
        self.detour = true;
    }

    /// The read's slow path: what was read ahead, then the end (after the reply grace, if one runs).
    #[cold]
    #[inline(never)]
    fn poll_detour(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, ConnectionError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(message) = self.ahead.pop_front() {
            return Poll::Ready(Some(Ok(message)));
        }
        if self.has_ended_ahead() {
            // The end waits out the reply grace, if one runs, unless the reply has been written.
            if let Some(grace) = self.grace.as_mut() {
                if !self.wrote_late && grace.as_mut().poll(cx).is_pending() {
                    self.register_reader(cx.waker());
                    return Poll::Pending;
                }
                self.grace = None;
            }
            self.register_writer(cx.waker());
            let _ = self.write_late();
            if let Some(error) = self.failed.take() {
                return Poll::Ready(self.on_end(Some(*error)));
            }
            let _ = self.ws.flush();
            return Poll::Ready(self.on_end(None));
        }
        self.detour = false;
        self.read(cx)
    }

    /// `WouldBlock` is `Pending` (and the heartbeat's turn); the connection closing is the end; anything else
    /// is an error, and the end.
    #[inline(never)]
    fn on_read_error(
        &mut self,
        error: tungstenite::Error,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, ConnectionError>>> {
        match error {
            error if would_block(&error) => {
                self.buffered = false;
                self.poll_heartbeat(cx)
            }
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => Poll::Ready(self.on_end(None)),
            // A frame that fails the connection, right behind a message not answered yet: as for a Close,
            // the reply grace lets the answer go out first.
            error if self.buffered && !self.replied && self.reply_grace.is_some() => {
                self.failed = Some(Box::new(error));
                self.detour = true;
                self.start_grace();
                self.poll_detour(cx)
            }
            error => Poll::Ready(self.on_end(Some(error))),
        }
    }

    /// Starts the reply grace.
    fn start_grace(&mut self) {
        if let Some(grace) = self.reply_grace {
            self.grace = self.timer.now().checked_add(grace).map(|at| self.timer.sleep_until(at));
        }
    }

    /// While nothing arrives: the heartbeat's ping, or its verdict that the connection is dead.
    fn poll_heartbeat(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, ConnectionError>>> {
        let Some(heartbeat) = self.heartbeat.as_mut() else {
            return Poll::Pending;
        };
        match Hook::<Message>::poll_timer(heartbeat, cx) {
            Poll::Ready(Tick::Send(ping)) => {
                // Queued if the socket takes nothing now; a broken socket shows on the read side.
                self.register_writer(cx.waker());
                let _ = self.ws.write(ping).and_then(|()| self.ws.flush());
                Poll::Pending
            }
            Poll::Ready(Tick::Fail(_)) => {
                let after = heartbeat.timeout();
                self.ended = true;
                Poll::Ready(Some(Err(ConnectionError::Silent { after })))
            }
            Poll::Pending => Poll::Pending,
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
            self.unflushed = false;
        }
        flushed
    }

    /// The server's end (its Close, or a frame that fails the connection) has arrived, read ahead or by the
    /// reader.
    fn has_ended_ahead(&self) -> bool {
        self.peer_closed || self.failed.is_some()
    }

    /// Reads what tungstenite already holds, without a system call, until it holds no complete frame or the
    /// server's end is found: messages are kept for the reader, the end is noted.
    ///
    /// Only once what was written before is flushed, so that those frames go out before a Close reply.
    #[cold]
    #[inline(never)]
    fn look_ahead(&mut self, cx: &mut Context<'_>) {
        if self.unflushed && !self.poll_flush_ws(cx).is_ready() {
            return;
        }
        self.ws.get_mut().peek = true;
        while self.buffered && !self.has_ended_ahead() {
            match self.ws.read() {
                Ok(Message::Close(frame)) => self.record_close(frame),
                Ok(message) => {
                    self.received(&message);
                    self.ahead.push_back(message);
                    self.detour = true;
                }
                Err(error) if would_block(&error) => self.buffered = false,
                Err(error) => {
                    self.failed = Some(Box::new(error));
                    self.detour = true;
                }
            }
        }
        self.ws.get_mut().peek = false;
    }

    /// Writes `message` after the server's end has arrived: as a frame of its own, ahead of the Close reply
    /// (tungstenite takes no data after a Close). The flush reports it.
    #[cold]
    fn write_after_end(&mut self, message: Message) {
        let (opcode, payload) = match message {
            Message::Text(text) => (OpCode::Data(Data::Text), text.into()),
            Message::Binary(data) => (OpCode::Data(Data::Binary), data),
            Message::Ping(data) => (OpCode::Control(Control::Ping), data),
            Message::Pong(data) => (OpCode::Control(Control::Pong), data),
            // tungstenite has queued the reply to the server's Close: nothing more to close.
            Message::Close(_) => return,
            Message::Frame(frame) => {
                self.push_late(frame);
                return;
            }
        };
        self.push_late(Frame::message(payload, opcode, true));
    }

    fn push_late(&mut self, mut frame: Frame) {
        // A client masks every frame (RFC 6455 5.3); this path is rare, so a fast generator does.
        frame.header_mut().mask = Some(fastrand::u32(..).to_ne_bytes());
        if frame.format(&mut self.late).is_ok() {
            self.wrote_late = true;
        }
    }

    /// Puts the frames written after the end on the socket (before tungstenite's Close reply).
    fn write_late(&mut self) -> Poll<io::Result<()>> {
        while !self.late.is_empty() {
            match self.ws.get_mut().write(&self.late) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(written) => drop(self.late.drain(..written)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The flush after writes that followed the server's end: they go out, then the Close reply; the flush
    /// then fails, so that the messages are sent again on the next connection.
    #[cold]
    fn poll_flush_late(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        self.register_writer(cx.waker());
        if self.write_late().is_pending() {
            return Poll::Pending;
        }
        if pending_on_would_block(self.ws.flush()).is_pending() {
            return Poll::Pending;
        }
        let (code, peer) = match (&self.peer_close, &self.failed) {
            (Some((code, _)), _) => (*code, true),
            (None, Some(error)) => (ConnectionError::close_code_of(error).unwrap_or(1006), false),
            (None, None) => (1006, false),
        };
        Poll::Ready(Err(ConnectionError::WrittenAfterEnd { code, peer }))
    }
}

/// A message counts for its payload's length, for a send queue bounded in bytes.
impl crate::reconnect::Weight for Message {
    fn weight(&self) -> usize {
        self.len()
    }
}

/// A Close frame with `code` and `reason`, the reason cut to the 123 bytes a Close frame has room for.
pub(crate) fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let reason = crate::redact::truncate(reason, 123);
    CloseFrame {
        code: code.into(),
        reason: reason.to_owned().into(),
    }
}

#[cfg(test)]
mod tests;
