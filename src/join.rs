//! [`Join`]: one `Stream + Sink` made of a separate stream and sink, built by [`join`].

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;

pin_project! {
    /// A stream and a sink used as one connection; built by [`join`].
    #[derive(Debug)]
    pub struct Join<St, Si> {
        #[pin]
        stream: St,
        #[pin]
        sink: Si,
    }
}

/// Joins a read half and a write half into one `Stream + Sink` connection.
///
/// Handy for connectors over channels, in-memory pipes and tests.
///
/// # Examples
///
/// ```
/// use futures::{SinkExt, StreamExt};
///
/// # futures::executor::block_on(async {
/// let (tx, rx) = futures::channel::mpsc::unbounded::<u32>();
/// let mut echo = stream_tungstenite::join(rx, tx);
/// echo.send(7).await.unwrap();
/// assert_eq!(echo.next().await, Some(7));
/// # });
/// ```
pub fn join<St, Si>(stream: St, sink: Si) -> Join<St, Si> {
    Join { stream, sink }
}

impl<St, Si> Join<St, Si> {
    /// The two halves.
    pub fn into_inner(self) -> (St, Si) {
        (self.stream, self.sink)
    }
}

impl<St: Stream, Si> Stream for Join<St, Si> {
    type Item = St::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<St::Item>> {
        self.project().stream.poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl<St, Si: Sink<I>, I> Sink<I> for Join<St, Si> {
    type Error = Si::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Si::Error>> {
        self.project().sink.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: I) -> Result<(), Si::Error> {
        self.project().sink.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Si::Error>> {
        self.project().sink.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Si::Error>> {
        self.project().sink.poll_close(cx)
    }
}
