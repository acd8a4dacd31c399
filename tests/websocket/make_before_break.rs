//! Make-before-break rotation against a real server that closes every connection at a fixed age: with
//! rotation (and a dedupe key) a continuous numbered feed arrives with no gap and no duplicate; without it,
//! the gap at each close is visible.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures::StreamExt;
use stream_tungstenite::connectivity::RotateLayer;
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::FixedDelay;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::{connect, ReconnectingStream};

use crate::support::{self, server};

/// How long the server keeps a connection.
const AGE: Duration = Duration::from_millis(400);

/// A feed: a ticker numbers the messages (one every 2 ms); each connection gets every number from the moment
/// it is up, and is closed (Close 1001) once it is `AGE` old.
fn aging_feed() -> server::Server {
    let counter = Arc::new(AtomicU64::new(0));
    {
        let counter = Arc::clone(&counter);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(2));
            counter.fetch_add(1, Ordering::SeqCst);
        });
    }
    server::serve(move |tcp, _, _| {
        let counter = Arc::clone(&counter);
        async move {
            let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
                return;
            };
            let born = Instant::now();
            let mut next = counter.load(Ordering::SeqCst) + 1;
            while born.elapsed() < AGE {
                let now = counter.load(Ordering::SeqCst);
                while next <= now {
                    if ws.send(Message::text(next.to_string())).await.is_err() {
                        return;
                    }
                    next += 1;
                }
                Timer::after(Duration::from_millis(1)).await;
            }
            let _ = ws.close(None).await;
        }
    })
}

fn number(message: &Message) -> Option<u64> {
    message.to_text().ok()?.parse().ok()
}

/// Reads the feed for `span`; returns the numbers in the order they came.
fn read_feed<S>(mut ws: S, span: Duration) -> Vec<u64>
where
    S: futures::Stream<Item = Result<Message, stream_tungstenite::Error>> + Unpin,
{
    support::block_on_within(span + Duration::from_secs(10), "reading the feed", async move {
        let started = Instant::now();
        let mut numbers = Vec::new();
        while started.elapsed() < span {
            match ws.next().await {
                Some(Ok(message)) => numbers.extend(number(&message)),
                other => panic!("the stream ended: {other:?}"),
            }
        }
        numbers
    })
}

/// Missing numbers and repeats between the first and the last.
fn gaps_and_repeats(numbers: &[u64]) -> (u64, usize) {
    let mut gaps = 0;
    let mut repeats = 0;
    for pair in numbers.windows(2) {
        match pair[1].cmp(&(pair[0] + 1)) {
            std::cmp::Ordering::Greater => gaps += pair[1] - pair[0] - 1,
            std::cmp::Ordering::Less => repeats += 1,
            std::cmp::Ordering::Equal => {}
        }
    }
    (gaps, repeats)
}

#[test]
fn rotation_before_the_servers_age_limit_keeps_a_feed_without_gaps_or_repeats() {
    let server = aging_feed();
    let url = server.url();
    let (rotate, _rotation) = RotateLayer::<Message>::new();
    let rotate = rotate
        .with_max_age(AGE / 2)
        .with_overlap(Duration::from_millis(120))
        .with_dedupe(|message: &Message| number(message));
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .layer(rotate)
        .build();
    let ws = ReconnectingStream::new(connector).with_retry(FixedDelay::new(Duration::ZERO));
    let numbers = read_feed(ws, Duration::from_millis(1500));
    let (gaps, repeats) = gaps_and_repeats(&numbers);
    println!(
        "rotation: {} numbers, {gaps} missing, {repeats} repeats, {} connections",
        numbers.len(),
        server.accepted()
    );
    assert!(server.accepted() >= 4, "it rotated: {} connections", server.accepted());
    assert!(numbers.len() > 300, "{} numbers", numbers.len());
    assert_eq!((gaps, repeats), (0, 0));
}

#[test]
fn without_rotation_the_gap_at_each_close_is_visible() {
    let server = aging_feed();
    let url = server.url();
    let ws = ReconnectingStream::new(move || connect(url.clone())).with_retry(FixedDelay::new(Duration::ZERO));
    let numbers = read_feed(ws, Duration::from_millis(1500));
    let (gaps, _) = gaps_and_repeats(&numbers);
    println!(
        "no rotation: {} numbers, {gaps} missing, {} connections",
        numbers.len(),
        server.accepted()
    );
    assert!(server.accepted() >= 3, "the server closed at its age limit");
    assert!(gaps > 0, "each reconnect misses what the feed sent meanwhile");
}
