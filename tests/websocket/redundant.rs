//! Redundant connections against two real servers publishing the same numbered feed: cut one, then the
//! other; every number arrives exactly once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures::StreamExt;
use stream_tungstenite::connectivity::Redundant;
use stream_tungstenite::retry::FixedDelay;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::{connect, ReconnectingStream};

use crate::support::{self, server};

/// A feed server: every connection gets the shared counter's numbers from the moment it is up; bumping
/// `cuts` drops every connection it has.
fn feed_server(counter: Arc<AtomicU64>, cuts: Arc<AtomicU64>) -> server::Server {
    server::serve(move |tcp, _, _| {
        let counter = Arc::clone(&counter);
        let cuts = Arc::clone(&cuts);
        async move {
            let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
                return;
            };
            let cut = cuts.load(Ordering::SeqCst);
            let mut next = counter.load(Ordering::SeqCst) + 1;
            while cuts.load(Ordering::SeqCst) == cut {
                let now = counter.load(Ordering::SeqCst);
                while next <= now {
                    if ws.send(Message::text(next.to_string())).await.is_err() {
                        return;
                    }
                    next += 1;
                }
                Timer::after(Duration::from_millis(1)).await;
            }
            // Cut: dropped without a close handshake.
        }
    })
}

#[test]
fn two_members_cut_in_turn_deliver_every_number_exactly_once() {
    let counter = Arc::new(AtomicU64::new(0));
    {
        let counter = Arc::clone(&counter);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(2));
            counter.fetch_add(1, Ordering::SeqCst);
        });
    }
    let (cuts_a, cuts_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let a = feed_server(Arc::clone(&counter), Arc::clone(&cuts_a));
    let b = feed_server(Arc::clone(&counter), Arc::clone(&cuts_b));
    let (url_a, url_b) = (a.url(), b.url());
    let member = |url: String| move || connect(url.clone());
    let group = Redundant::new(vec![member(url_a), member(url_b)], |message: &Message| {
        message.to_text().ok()?.parse().ok()
    });
    let mut ws = ReconnectingStream::new(group).with_retry(FixedDelay::new(Duration::ZERO));
    let numbers = support::block_on_within(Duration::from_secs(20), "the feed through two cuts", async {
        let mut numbers: Vec<u64> = Vec::new();
        let started = Instant::now();
        let mut phase = 0;
        while started.elapsed() < Duration::from_millis(1200) {
            if phase == 0 && started.elapsed() > Duration::from_millis(400) {
                cuts_a.fetch_add(1, Ordering::SeqCst);
                phase = 1;
            }
            if phase == 1 && started.elapsed() > Duration::from_millis(800) {
                cuts_b.fetch_add(1, Ordering::SeqCst);
                phase = 2;
            }
            let message = ws.next().await.expect("an item").expect("a message");
            numbers.extend(message.to_text().ok().and_then(|text| text.parse::<u64>().ok()));
        }
        numbers
    });
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let repeats = numbers.len() - sorted.len();
    let span = sorted.last().unwrap() - sorted.first().unwrap() + 1;
    let missing = span - sorted.len() as u64;
    let out_of_order = numbers.windows(2).filter(|pair| pair[1] < pair[0]).count();
    println!(
        "redundant: {} numbers, {missing} missing, {repeats} repeats, {out_of_order} out of order; A {} and B {} connections",
        numbers.len(),
        a.accepted(),
        b.accepted()
    );
    assert!(
        a.accepted() >= 2 && b.accepted() >= 2,
        "each member was cut and came back"
    );
    assert_eq!((missing, repeats), (0, 0));
    assert!(numbers.len() > 400);
}
