//! Hooks: per-message extensions, run by one connection wrapper.
//!
//! Sits in the connector stack, right above the transport or the handshakes (see
//! [`ConnectorBuilder`](crate::layer::ConnectorBuilder)). A [`Hook`] sees each inbound and outbound message of
//! a connection *in place* (`&mut`) and can pass, change or drop it; it sees the attempt, the connection's
//! start and its end (with the error by reference); and it may own timers ([`Hook::poll_timer`]) that send
//! messages or fail the connection, as a heartbeat does. A tuple of hooks is a hook: a whole group runs
//! inside **one** [`HooksConnection`], in one pass over each message, so three hooks cost what one wrapper
//! costs. The provided hooks are in [`extension`](crate::extension): heartbeat, metrics, logging, message
//! filters and a receive timeout.
//!
//! # Order
//!
//! As with layers, the first hook is outermost. For a tuple `(A, B, C)` (and for
//! `ConnectorBuilder::new(c).hook(A).hook(B).hook(C)`):
//!
//! ```text
//!   outbound message:  user -> A -> B -> C -> connection
//!   inbound message:   connection -> C -> B -> A -> user
//!   attempt:           A, B, C          start, end:  C, B, A
//!   a message a hook's timer sends passes the hooks after it: A's ping goes through B and C
//! ```
//!
//! A hook that drops a message stops it: hooks further along never see it.
//!
//! # Examples
//!
//! ```
//! use futures::{SinkExt, StreamExt};
//! use stream_tungstenite::hook::{Hook, Verdict};
//! use stream_tungstenite::layer::ConnectorBuilder;
//! use stream_tungstenite::ReconnectingStream;
//!
//! /// Upper-cases what arrives, and drops empty messages.
//! #[derive(Clone)]
//! struct Shout;
//!
//! impl Hook<String> for Shout {
//!     fn on_inbound(&mut self, message: &mut String) -> Verdict {
//!         if message.is_empty() {
//!             return Verdict::Drop;
//!         }
//!         message.make_ascii_uppercase();
//!         Verdict::Pass
//!     }
//! }
//!
//! # futures::executor::block_on(async {
//! let connector = ConnectorBuilder::new(|| async {
//!     let (tx, rx) = futures::channel::mpsc::unbounded::<String>();
//!     Ok::<_, std::io::Error>(stream_tungstenite::join(rx.map(Ok::<_, std::io::Error>), tx))
//! })
//! .hook(Shout)
//! .build();
//! let mut stream = ReconnectingStream::new(connector);
//! stream.send(String::new()).await?;
//! stream.send("hello".to_owned()).await?;
//! assert_eq!(stream.next().await.transpose()?.as_deref(), Some("HELLO"));
//! # Ok::<_, stream_tungstenite::Error>(())
//! # }).unwrap();
//! ```

mod connection;
mod layer;

use std::fmt;
use std::task::{Context, Poll};

pub use self::connection::HooksConnection;
pub use self::layer::{Hooks, HooksFuture, HooksLayer};
use crate::diagnose::Diagnose;
use crate::error::BoxError;

/// What a hook decides about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Pass it on (as it now is).
    Pass,
    /// Drop it: an inbound message is not delivered, an outbound one not sent (it counts as sent).
    Drop,
}

/// What a hook's timer asks for; see [`Hook::poll_timer`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Tick<T> {
    /// Send this message on the connection (a ping, say). It passes the hooks after this one.
    Send(T),
    /// Fail the connection with this error (a liveness timeout, say): the stream reconnects.
    Fail(BoxError),
}

/// An error as a hook sees it: what it says ([`Display`](fmt::Display)) and what it diagnosed of itself
/// ([`Diagnose`]: a close code, say).
pub trait Fault: fmt::Display + Diagnose {}

impl<E: fmt::Display + Diagnose + ?Sized> Fault for E {}

/// How an attempt or a connection ended, as [`Hook::on_end`] is told. Each hook instance is told once.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum End<'a> {
    /// The attempt failed before a connection was up: the connector's error.
    ConnectFailed(&'a dyn Fault),
    /// The attempt was dropped unfinished (by the connect timeout, say).
    Abandoned,
    /// The connection's stream failed: its error (for a WebSocket, a server Close with its code).
    ReadFailed(&'a dyn Fault),
    /// Writing to the connection failed: the sink's error.
    WriteFailed(&'a dyn Fault),
    /// A hook failed the connection ([`Tick::Fail`]): its error.
    HookFailed(&'a dyn Fault),
    /// The connection's stream ended without an error.
    Ended,
    /// The connection was closed from this side.
    Closed,
    /// The connection was dropped while up.
    Dropped,
}

impl<'a> End<'a> {
    /// The error, if the end had one.
    pub fn error(&self) -> Option<&'a dyn Fault> {
        match *self {
            Self::ConnectFailed(error)
            | Self::ReadFailed(error)
            | Self::WriteFailed(error)
            | Self::HookFailed(error) => Some(error),
            Self::Abandoned | Self::Ended | Self::Closed | Self::Dropped => None,
        }
    }

    /// The close code its error diagnosed, if any.
    pub fn close_code(&self) -> Option<u16> {
        self.error().and_then(|error| error.diagnose().close_code())
    }

    /// Whether the attempt ended before a connection was up.
    pub fn is_attempt(&self) -> bool {
        matches!(self, Self::ConnectFailed(_) | Self::Abandoned)
    }
}

impl fmt::Debug for End<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::ConnectFailed(_) => "ConnectFailed",
            Self::Abandoned => "Abandoned",
            Self::ReadFailed(_) => "ReadFailed",
            Self::WriteFailed(_) => "WriteFailed",
            Self::HookFailed(_) => "HookFailed",
            Self::Ended => "Ended",
            Self::Closed => "Closed",
            Self::Dropped => "Dropped",
        };
        match self.error() {
            Some(error) => f.debug_tuple(name).field(&format_args!("{error}")).finish(),
            None => f.write_str(name),
        }
    }
}

/// A per-message extension of a connection. Every method has a no-op default: implement what you need.
///
/// A hook is cloned for each attempt from the one given to the [`HooksLayer`] (so per-connection state
/// starts fresh; share state across connections through an `Arc` inside it), then told, in this order:
/// [`on_attempt`](Self::on_attempt); [`on_start`](Self::on_start) when the connection is up (or
/// [`on_end`](Self::on_end) if the attempt fails); each message; [`on_end`](Self::on_end) once.
///
/// Hooks run inside the poll of the connection: they must not block.
pub trait Hook<T>: Send {
    /// An attempt is starting.
    fn on_attempt(&mut self) {}

    /// The connection is up (made by the inner connector); no message has passed yet.
    fn on_start(&mut self) {}

    /// A message read from the connection, before it is delivered: change it in place, or drop it.
    fn on_inbound(&mut self, message: &mut T) -> Verdict {
        let _ = message;
        Verdict::Pass
    }

    /// A message about to be written to the connection: change it in place, or drop it.
    fn on_outbound(&mut self, message: &mut T) -> Verdict {
        let _ = message;
        Verdict::Pass
    }

    /// The attempt or the connection ended.
    fn on_end(&mut self, end: &End<'_>) {
        let _ = end;
    }

    /// The hook's timers, polled while the connection is read: when nothing has arrived and, while messages
    /// flow, every few dozen messages. `Ready` asks for a message to be sent or the connection failed;
    /// `Pending` (the default: no timer) after registering `cx`'s waker with each timer, as any future does.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Tick<T>> {
        let _ = cx;
        Poll::Pending
    }
}

/// The empty group: a hook that does nothing.
impl<T> Hook<T> for () {}

/// `None` does nothing; `Some(hook)` is `hook`.
impl<T, H: Hook<T>> Hook<T> for Option<H> {
    fn on_attempt(&mut self) {
        if let Some(hook) = self {
            hook.on_attempt();
        }
    }

    fn on_start(&mut self) {
        if let Some(hook) = self {
            hook.on_start();
        }
    }

    #[inline]
    fn on_inbound(&mut self, message: &mut T) -> Verdict {
        match self {
            Some(hook) => hook.on_inbound(message),
            None => Verdict::Pass,
        }
    }

    #[inline]
    fn on_outbound(&mut self, message: &mut T) -> Verdict {
        match self {
            Some(hook) => hook.on_outbound(message),
            None => Verdict::Pass,
        }
    }

    fn on_end(&mut self, end: &End<'_>) {
        if let Some(hook) = self {
            hook.on_end(end);
        }
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Tick<T>> {
        match self {
            Some(hook) => hook.poll_timer(cx),
            None => Poll::Pending,
        }
    }
}

/// A boxed hook (as a client keeps those its builder was given) is the hook it holds.
impl<T, H: Hook<T> + ?Sized> Hook<T> for Box<H> {
    fn on_attempt(&mut self) {
        (**self).on_attempt();
    }

    fn on_start(&mut self) {
        (**self).on_start();
    }

    #[inline]
    fn on_inbound(&mut self, message: &mut T) -> Verdict {
        (**self).on_inbound(message)
    }

    #[inline]
    fn on_outbound(&mut self, message: &mut T) -> Verdict {
        (**self).on_outbound(message)
    }

    fn on_end(&mut self, end: &End<'_>) {
        (**self).on_end(end);
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Tick<T>> {
        (**self).poll_timer(cx)
    }
}

/// Implements [`Hook`] for a tuple: the first element outermost (see the [module docs](self)).
macro_rules! tuple_hook {
    ($($name:ident)+) => { tuple_hook!(@impl [$($name)+] [] $($name)+); };
    // Reverse the list for the inner-first callbacks.
    (@impl [$($name:ident)+] [$($rev:ident)*] $first:ident $($rest:ident)*) => {
        tuple_hook!(@impl [$($name)+] [$first $($rev)*] $($rest)*);
    };
    (@impl [$($name:ident)+] [$($rev:ident)+]) => {
        #[allow(non_snake_case)]
        impl<T, $($name: Hook<T>),+> Hook<T> for ($($name,)+) {
            fn on_attempt(&mut self) {
                let ($($name,)+) = self;
                $($name.on_attempt();)+
            }

            fn on_start(&mut self) {
                let ($($name,)+) = self;
                $($rev.on_start();)+
            }

            #[inline(always)]
            fn on_inbound(&mut self, message: &mut T) -> Verdict {
                let ($($name,)+) = self;
                $(if let Verdict::Drop = $rev.on_inbound(message) {
                    return Verdict::Drop;
                })+
                Verdict::Pass
            }

            #[inline(always)]
            fn on_outbound(&mut self, message: &mut T) -> Verdict {
                let ($($name,)+) = self;
                $(if let Verdict::Drop = $name.on_outbound(message) {
                    return Verdict::Drop;
                })+
                Verdict::Pass
            }

            fn on_end(&mut self, end: &End<'_>) {
                let ($($name,)+) = self;
                $($rev.on_end(end);)+
            }

            fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Tick<T>> {
                tuple_hook!(@timer self cx [$($name)+] [] $($name)+)
            }
        }
    };
    // poll_timer: each hook in turn; a message a hook sends passes the hooks after it (and when one of them
    // drops it, the hook's timer is polled again, so that it registers its next deadline).
    (@timer $self:ident $cx:ident [$($all:ident)+] [$($before:ident)*] $current:ident $($after:ident)*) => {{
        #[allow(unused_variables)]
        let ($($all,)+) = &mut *$self;
        loop {
            match $current.poll_timer($cx) {
                #[allow(unused_mut)]
                Poll::Ready(Tick::Send(mut message)) => {
                    #[allow(unused_mut)]
                    let mut dropped = false;
                    $(dropped = dropped || matches!($after.on_outbound(&mut message), Verdict::Drop);)*
                    if !dropped {
                        return Poll::Ready(Tick::Send(message));
                    }
                }
                Poll::Ready(tick) => return Poll::Ready(tick),
                Poll::Pending => break,
            }
        }
        tuple_hook!(@timer $self $cx [$($all)+] [$($before)* $current] $($after)*)
    }};
    (@timer $self:ident $cx:ident [$($all:ident)+] [$($before:ident)*]) => {
        Poll::Pending
    };
}

tuple_hook!(A);
tuple_hook!(A B);
tuple_hook!(A B C);
tuple_hook!(A B C D);
tuple_hook!(A B C D E);
tuple_hook!(A B C D E F);
tuple_hook!(A B C D E F G);
tuple_hook!(A B C D E F G H);

#[cfg(test)]
mod tests;
