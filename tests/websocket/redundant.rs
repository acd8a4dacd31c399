//! Redundant connections against two real servers publishing the same numbered feed: cut one, then the
//! other; every number arrives exactly once. Writes go to the primary, re-elected when it drops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures::future::{select, Either};
use futures::{SinkExt, StreamExt};
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

/// A server that logs `up` once a connection is upgraded, then every text it receives; while `down` is set
/// it drops what it has and every new connection before the upgrade.
fn logging_server(down: Arc<AtomicBool>) -> server::Server {
    server::serve(move |tcp, _, log| {
        let down = Arc::clone(&down);
        async move {
            if down.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
                return;
            };
            log.lock().unwrap().push("up".to_owned());
            while !down.load(Ordering::SeqCst) {
                match select(ws.next(), Timer::after(Duration::from_millis(5))).await {
                    Either::Left((Some(Ok(Message::Text(text))), _)) => log.lock().unwrap().push(text.to_string()),
                    Either::Left((Some(Ok(_)), _)) | Either::Right(_) => {}
                    Either::Left((None | Some(Err(_)), _)) => return,
                }
            }
        }
    })
}

/// Writes go to one primary, the first member that is up: A; when A drops, B, which stays the primary
/// once A is back (no flapping) until it drops in turn: then A again. Each message reaches one server.
#[test]
fn writes_go_to_the_primary_which_is_re_elected_when_it_drops() {
    let (down_a, down_b) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let a = logging_server(Arc::clone(&down_a));
    let b = logging_server(Arc::clone(&down_b));
    let member = |url: String| move || connect(url.clone());
    let group = Redundant::new(vec![member(a.url()), member(b.url())], |_: &Message| None);
    let mut ws = ReconnectingStream::new(group).with_retry(FixedDelay::new(Duration::ZERO));
    let got = |server: &server::Server, text: &str| server.log().iter().any(|line| line == text);
    let ups = |server: &server::Server| server.log().iter().filter(|line| *line == "up").count();
    support::block_on_within(Duration::from_secs(30), "writes across a re-election", async {
        // Lets the group run (notice drops, redial) for a while; nothing comes.
        async fn run_for<S: futures::Stream + Unpin>(ws: &mut S, time: Duration)
        where
            S::Item: std::fmt::Debug,
        {
            if let Ok(item) = support::within(time, ws.next()).await {
                panic!("nothing comes, but {item:?}");
            }
        }
        while ups(&a) < 1 || ups(&b) < 1 {
            run_for(&mut ws, Duration::from_millis(20)).await;
        }
        ws.send(Message::text("x1")).await.unwrap();
        while !got(&a, "x1") {
            run_for(&mut ws, Duration::from_millis(10)).await;
        }

        down_a.store(true, Ordering::SeqCst);
        run_for(&mut ws, Duration::from_millis(300)).await;
        ws.send(Message::text("x2")).await.unwrap();
        while !got(&b, "x2") {
            run_for(&mut ws, Duration::from_millis(10)).await;
        }

        down_a.store(false, Ordering::SeqCst);
        while ups(&a) < 2 {
            run_for(&mut ws, Duration::from_millis(20)).await;
        }
        // B stays the primary while it is up (no flapping back); once B drops, A is elected again.
        ws.send(Message::text("x3")).await.unwrap();
        while !got(&b, "x3") {
            run_for(&mut ws, Duration::from_millis(10)).await;
        }
        down_b.store(true, Ordering::SeqCst);
        run_for(&mut ws, Duration::from_millis(300)).await;
        ws.send(Message::text("x4")).await.unwrap();
        while !got(&a, "x4") {
            run_for(&mut ws, Duration::from_millis(10)).await;
        }
    });
    let (a, b) = (a.log(), b.log());
    assert_eq!(a, ["up", "x1", "up", "x4"], "B: {b:?}");
    assert_eq!(b, ["up", "x2", "x3"], "A: {a:?}");
}
