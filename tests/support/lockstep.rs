//! A numbered echo exchange over a `ReconnectingStream` whose connections get cut: the shape an application
//! uses to turn "delivered to a flushed connection" into "delivered end to end".

#![allow(dead_code, unreachable_pub)]

use futures::channel::mpsc;
use futures::future::{select, Either};
use futures::{Sink, SinkExt, Stream, StreamExt};
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::{Error, Event};

/// An observer that forwards each `Connected` generation into a channel, and that channel.
pub fn connected_channel() -> (impl FnMut(&Event) + Send + 'static, mpsc::UnboundedReceiver<u64>) {
    let (tx, rx) = mpsc::unbounded();
    let observer = move |event: &Event| {
        if let Event::Connected { generation, .. } = event {
            let _ = tx.unbounded_send(*generation);
        }
    };
    (observer, rx)
}

/// What a lockstep exchange saw.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Every echo, duplicates of the same number in a row collapsed.
    pub echoed: Vec<u32>,
    /// Numbers sent again because the connection changed while their echo was awaited.
    pub resent: usize,
}

/// Sends `0..count` one at a time, waiting for each echo. A number flushed into a socket that the server
/// then cuts can die in the kernel (the library guarantees delivery to a flushed connection, not end to
/// end), so when the connection generation changes while an echo is awaited, the number is sent again:
/// exactly what the generation number is for. `label` names the peer in failure messages.
pub async fn echo_numbers<W>(
    ws: &mut W,
    generation: impl Fn(&W) -> u64,
    connected: &mut mpsc::UnboundedReceiver<u64>,
    count: u32,
    label: &str,
) -> Exchange
where
    W: Stream<Item = Result<Message, Error>> + Sink<Message, Error = Error> + Unpin,
{
    let mut exchange = Exchange::default();
    for n in 0..count {
        ws.send(Message::text(n.to_string())).await.unwrap();
        let mut sent_on = generation(ws);
        loop {
            match select(ws.next(), connected.next()).await {
                Either::Left((Some(Ok(Message::Text(text))), _)) => {
                    let echoed: u32 = text.parse().unwrap();
                    assert!(echoed <= n, "{label}: echo {echoed} from the future (waiting for {n})");
                    if exchange.echoed.last() != Some(&echoed) {
                        exchange.echoed.push(echoed);
                    }
                    if echoed == n {
                        break;
                    }
                }
                Either::Left((Some(Ok(_)), _)) => {}
                Either::Left((other, _)) => panic!("{label}: stream ended: {other:?}"),
                Either::Right((Some(new), _)) if new > sent_on => {
                    ws.send(Message::text(n.to_string())).await.unwrap();
                    sent_on = generation(ws);
                    exchange.resent += 1;
                }
                Either::Right(_) => {}
            }
        }
    }
    exchange
}
