//! [`WsConnection`]'s write half.

use std::pin::Pin;
use std::sync::PoisonError;
use std::task::{Context, Poll};

use async_tungstenite::tungstenite::{self, Message};
use futures_sink::Sink;

use super::bridge::{pending_on_would_block, would_block};
use super::WsConnection;
use crate::ws::error::ConnectionError;

impl Sink<Message> for WsConnection {
    type Error = ConnectionError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        let this = &mut *self.get_mut().conn;
        if this.buffered {
            // What has arrived may hold the server's end: look before writing (see the type's docs).
            this.look_ahead(cx);
        }
        if this.ready || this.has_ended_ahead() {
            return Poll::Ready(Ok(()));
        }
        // A write was only queued: flush until the socket has taken it.
        this.poll_flush_ws(cx).map_err(Into::into)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), ConnectionError> {
        let this = &mut *self.get_mut().conn;
        if this.has_ended_ahead() {
            this.write_after_end(item);
            return Ok(());
        }
        this.replied = true;
        match this.ws.write(item) {
            Ok(()) => {
                this.ready = true;
                this.unflushed = true;
                Ok(())
            }
            Err(error) if would_block(&error) => {
                // Queued, not an error: `poll_ready` flushes before the next one.
                this.ready = false;
                this.unflushed = true;
                Ok(())
            }
            Err(error) => {
                this.ready = true;
                Err(error.into())
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        let this = &mut *self.get_mut().conn;
        if this.wrote_late {
            return this.poll_flush_late(cx);
        }
        match this.poll_flush_ws(cx) {
            // The close handshake just completed: nothing is left to flush.
            Poll::Ready(Err(tungstenite::Error::ConnectionClosed)) => Poll::Ready(Ok(())),
            other => other.map_err(Into::into),
        }
    }

    /// Sends a Close frame, then waits for the server's Close or the end of the connection.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        let this = &mut *self.get_mut().conn;
        this.ready = true;
        this.register_writer(cx.waker());
        let sent = if this.closing {
            this.ws.flush()
        } else {
            let frame = this.close_frame.take().or_else(|| {
                this.shared_close_frame
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            });
            this.ws.close(frame)
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
