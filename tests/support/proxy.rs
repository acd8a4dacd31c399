//! A loopback TCP fault proxy: sits between a client and a real server and breaks the path on command.
//!
//! [`Proxy::start`] listens on `127.0.0.1:0` and forwards every accepted connection (a *link*) to a target
//! address, byte for byte, with two plain threads per link (std::net, blocking I/O). The test holds the
//! [`Proxy`] handle and injects faults through it:
//!
//! - [`cut_all`](Proxy::cut_all): end every live link at once, with a TCP reset ([`Cut::Rst`], `SO_LINGER` 0 then
//!   close) or an orderly FIN ([`Cut::Fin`]), sent to both the client and the server.
//! - [`stall`](Proxy::stall) / [`resume`](Proxy::resume): stop forwarding on the links that are live at the
//!   moment of the call, in one direction or both, keeping their sockets open: a half-open path, as when a NAT
//!   entry or a route silently dies. Links accepted later are not stalled. Bytes the proxy reads after the stall
//!   are held, not forwarded, until `resume`.
//! - [`refuse_for`](Proxy::refuse_for): while set, a new connection is reset at once (TCP accepts it, the proxy
//!   closes it with a reset before reading anything), which the client sees as a failed connect.
//! - [`set_delay`](Proxy::set_delay): a fixed latency per direction, on every link, live or later. Each chunk
//!   read is forwarded no sooner than `delay` after it was read (an end of stream too), and chunks keep
//!   pipelining behind each other: the latency is added once, not once per message.
//! - [`set_rate`](Proxy::set_rate): a bandwidth cap per direction, in bytes per second, applied to each link
//!   on its own (live or later). Bytes go out in slices of at most 20 ms of the cap, each slice no sooner than
//!   the cap allows after the previous one: over any interval `t` a link forwards at most `rate * t` bytes plus
//!   one slice.
//! - [`truncate`](Proxy::truncate): on the links live now, forward only the next `n` bytes in a direction, then
//!   end the link with a [`Cut`]. Aimed at a stream of WebSocket frames, the receiver sees a partial frame
//!   followed by the cut. (With [`Cut::Rst`] the kernel may discard truncated bytes still unsent when the reset
//!   goes out; on loopback they are normally delivered already. [`Cut::Fin`] always delivers them first.)
//!
//! Faults combine: a delayed, throttled link can be stalled, truncated or cut.
//!
//! Counters: connections accepted (all of them, with the instant of each accept), refused, forwarded, and
//! truncated; bytes each way (counted as they are handed to the socket, so bytes a peer has read are always
//! counted); live links.
//!
//! Threads: one listener thread, and per link one thread per direction. Blocking reads and writes carry a 50 ms
//! timeout (shorter while a delayed chunk falls due) so that each pump notices a cut, a stall or the handle's
//! drop even when its socket is quiet (an idle pump thus wakes 20 times a second: no spinning). Dropping the
//! [`Proxy`] shuts every link down and joins every thread before `drop` returns. Two threads per link suit tens
//! of links, not a thousand: the herd test (tests/herd/main.rs) has its own single-threaded proxy.
//!
//! Memory: a pump holds at most [`MAX_HELD`] bytes read and not yet forwarded (delayed, or waiting for the
//! throttle); beyond that it stops reading and TCP flow control pushes back on the sender.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a quiet pump wakes to look at its link's flags.
const POLL: Duration = Duration::from_millis(50);
/// The bound on dialling the target.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes a pump holds (read, not yet forwarded) before it stops reading.
pub const MAX_HELD: usize = 1024 * 1024;
/// A throttled pump writes slices of at most this much of its rate.
const SLICE: Duration = Duration::from_millis(20);

/// How [`Proxy::cut_all`] and [`Proxy::truncate`] end a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A TCP reset to both ends (`SO_LINGER` 0, then close): pending data is discarded, reads fail with
    /// `ECONNRESET`.
    Rst,
    /// An orderly shutdown (FIN) to both ends: reads see end of stream.
    Fin,
}

/// Which way a fault applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
    /// Both ways.
    Both,
}

impl Direction {
    fn bits(self) -> u8 {
        match self {
            Self::ToServer => TO_SERVER,
            Self::ToClient => TO_CLIENT,
            Self::Both => TO_SERVER | TO_CLIENT,
        }
    }

    /// The per-direction slots (0: to the server, 1: to the client) this direction covers.
    fn slots(self) -> impl Iterator<Item = usize> {
        let bits = self.bits();
        [TO_SERVER, TO_CLIENT]
            .into_iter()
            .filter(move |bit| bits & bit != 0)
            .map(slot)
    }
}

const TO_SERVER: u8 = 1;
const TO_CLIENT: u8 = 2;

/// The index of a direction bit in per-direction arrays.
fn slot(direction: u8) -> usize {
    usize::from(direction == TO_CLIENT)
}

/// An armed [`Proxy::truncate`]: forward `remaining` more bytes, then cut.
#[derive(Debug, Clone, Copy)]
struct Truncation {
    remaining: usize,
    cut: Cut,
}

/// One proxied connection: the client-facing and the server-facing socket.
struct Link {
    client: TcpStream,
    server: TcpStream,
    /// Direction bits currently stalled.
    stalled: AtomicU8,
    /// Armed truncations, per direction slot.
    truncate: [Mutex<Option<Truncation>>; 2],
    /// Set once the link is being torn down; both pumps exit.
    dead: AtomicBool,
}

impl Link {
    fn kill(&self, cut: Cut) {
        self.dead.store(true, Ordering::SeqCst);
        match cut {
            Cut::Rst => {
                // SO_LINGER 0: the close that follows (when both pumps have dropped the link) sends RST. Shutting
                // down the read side sends nothing to the peers but wakes a pump blocked in `read`.
                for socket in [&self.client, &self.server] {
                    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
                    let _ = socket.shutdown(Shutdown::Read);
                }
            }
            Cut::Fin => {
                let _ = self.client.shutdown(Shutdown::Both);
                let _ = self.server.shutdown(Shutdown::Both);
            }
        }
    }
}

#[derive(Default)]
struct Shared {
    shutdown: AtomicBool,
    /// New connections are reset until this instant.
    refuse_until: Mutex<Option<Instant>>,
    links: Mutex<Vec<Weak<Link>>>,
    /// Link threads, joined on drop.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Signalled on `resume`, cuts and shutdown, for pumps waiting out a stall.
    changed: Condvar,
    changed_lock: Mutex<()>,
    /// Added latency in nanoseconds, per direction slot.
    delay: [AtomicU64; 2],
    /// Bandwidth cap in bytes per second (0: none), per direction slot.
    rate: [AtomicU64; 2],
    accepted: AtomicUsize,
    accept_times: Mutex<Vec<Instant>>,
    refused: AtomicUsize,
    forwarded: AtomicUsize,
    truncated: AtomicUsize,
    to_server: AtomicU64,
    to_client: AtomicU64,
}

impl Shared {
    /// Links whose pumps are still running, less those already cut (their pumps are finishing).
    fn live_links(&self) -> Vec<Arc<Link>> {
        let mut links = self.links.lock().unwrap();
        links.retain(|link| link.strong_count() > 0);
        links
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|link| !link.dead.load(Ordering::SeqCst))
            .collect()
    }

    fn notify(&self) {
        let _guard = self.changed_lock.lock().unwrap();
        self.changed.notify_all();
    }
}

/// The handle on a running proxy. Dropping it stops the proxy: every link is shut down and every thread joined.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .field("accepted", &self.accepted())
            .field("live", &self.live())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let accept_shared = Arc::clone(&shared);
        let listener = std::thread::Builder::new()
            .name("proxy-listener".into())
            .spawn(move || accept_loop(listener, target, accept_shared))
            .unwrap();
        Self {
            addr,
            target,
            shared,
            listener: Some(listener),
        }
    }

    /// The address clients dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr>/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Ends every live link at once with `cut`; returns how many links were live.
    pub fn cut_all(&self, cut: Cut) -> usize {
        let links = self.shared.live_links();
        for link in &links {
            link.kill(cut);
        }
        self.shared.notify();
        links.len()
    }

    /// Stops forwarding in `direction` on every link live now (sockets stay open); returns how many.
    pub fn stall(&self, direction: Direction) -> usize {
        let links = self.shared.live_links();
        for link in &links {
            link.stalled.fetch_or(direction.bits(), Ordering::SeqCst);
        }
        links.len()
    }

    /// Lifts every stall; held bytes are forwarded.
    pub fn resume(&self) {
        for link in self.shared.live_links() {
            link.stalled.store(0, Ordering::SeqCst);
        }
        self.shared.notify();
    }

    /// Resets every new connection at once for `duration` from now; returns the instant refusing ends.
    pub fn refuse_for(&self, duration: Duration) -> Instant {
        let until = Instant::now() + duration;
        *self.shared.refuse_until.lock().unwrap() = Some(until);
        until
    }

    /// Adds `delay` of latency in `direction`, on every link, live or later: each chunk read from now on (and
    /// an end of stream) is forwarded no sooner than `delay` after it was read. `Duration::ZERO` removes it.
    pub fn set_delay(&self, direction: Direction, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        for slot in direction.slots() {
            self.shared.delay[slot].store(nanos, Ordering::SeqCst);
        }
    }

    /// Caps the bandwidth in `direction` to `bytes_per_second` per link, on every link, live or later; `None`
    /// (or `Some(0)`) removes the cap.
    pub fn set_rate(&self, direction: Direction, bytes_per_second: Option<u64>) {
        for slot in direction.slots() {
            self.shared.rate[slot].store(bytes_per_second.unwrap_or(0), Ordering::SeqCst);
        }
    }

    /// On every link live now, forwards only the next `bytes` bytes in `direction` (in each direction for
    /// [`Direction::Both`]), then ends the link with `cut`; returns how many links were armed. Links accepted
    /// later are not affected. `bytes == 0` cuts the link when the next bytes arrive, forwarding none.
    pub fn truncate(&self, direction: Direction, bytes: usize, cut: Cut) -> usize {
        let links = self.shared.live_links();
        for link in &links {
            for slot in direction.slots() {
                *link.truncate[slot].lock().unwrap() = Some(Truncation { remaining: bytes, cut });
            }
        }
        links.len()
    }

    /// Connections the listener accepted, refused ones included.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// The instant of every accept counted by [`accepted`](Self::accepted), in order, taken right after the
    /// listener's `accept` returned.
    pub fn accept_times(&self) -> Vec<Instant> {
        self.shared.accept_times.lock().unwrap().clone()
    }

    /// Connections reset at once because of [`refuse_for`](Self::refuse_for).
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections linked to the target.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Links ended by a [`truncate`](Self::truncate) after forwarding their last allowed byte.
    pub fn truncated(&self) -> usize {
        self.shared.truncated.load(Ordering::SeqCst)
    }

    /// Links whose pumps are still running and that were not cut (a cut link counts no more at once, though its
    /// pumps take a moment to finish).
    pub fn live(&self) -> usize {
        self.shared.live_links().len()
    }

    /// Bytes forwarded from clients to the server.
    pub fn bytes_to_server(&self) -> u64 {
        self.shared.to_server.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the server to clients.
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.to_client.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the listener out of `accept`: it sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
        // No link thread is started any more.
        for link in self.shared.live_links() {
            link.kill(Cut::Fin);
        }
        self.shared.notify();
        let threads = std::mem::take(&mut *self.shared.threads.lock().unwrap());
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for tcp in listener.incoming() {
        let at = Instant::now();
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = tcp else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.accept_times.lock().unwrap().push(at);
        let refusing = shared
            .refuse_until
            .lock()
            .unwrap()
            .is_some_and(|until| Instant::now() < until);
        if refusing {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            drop(client);
            continue;
        }
        let link_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("proxy-link".into())
            .spawn(move || run_link(client, target, link_shared))
            .unwrap();
        let mut threads = shared.threads.lock().unwrap();
        threads.retain(|thread| !thread.is_finished());
        threads.push(thread);
    }
}

/// Dials the target, then pumps both ways (the second direction on a thread of its own) until the link dies.
fn run_link(client: TcpStream, target: SocketAddr, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect_timeout(&target, DIAL_TIMEOUT) else {
        let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
        return;
    };
    for socket in [&client, &server] {
        let _ = socket.set_nodelay(true);
        let _ = socket.set_read_timeout(Some(POLL));
        let _ = socket.set_write_timeout(Some(POLL));
    }
    let link = Arc::new(Link {
        client,
        server,
        stalled: AtomicU8::new(0),
        truncate: Default::default(),
        dead: AtomicBool::new(false),
    });
    shared.links.lock().unwrap().push(Arc::downgrade(&link));
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let (up_link, up_shared) = (Arc::clone(&link), Arc::clone(&shared));
    let upstream = std::thread::Builder::new()
        .name("proxy-pump".into())
        .spawn(move || Pump::new(&up_link, TO_SERVER, &up_shared).run())
        .unwrap();
    Pump::new(&link, TO_CLIENT, &shared).run();
    let _ = upstream.join();
    // The last `Arc<Link>` (unless `cut_all` holds one for a moment) drops here: both sockets close, with a
    // reset if the link was cut with `Cut::Rst`.
}

/// Why a pump stops.
struct Stop;

/// One direction of a link: reads chunks into a queue, forwards each once due (delay), in slices (throttle),
/// up to an armed truncation.
struct Pump<'a> {
    link: &'a Link,
    shared: &'a Shared,
    direction: u8,
    from: &'a TcpStream,
    to: &'a TcpStream,
    counter: &'a AtomicU64,
    /// Chunks read and not yet forwarded, each with the instant it is due; an empty chunk is the end of stream.
    held: VecDeque<(Instant, Vec<u8>)>,
    held_bytes: usize,
    /// The throttle lets the next slice start no sooner than this.
    next_slice: Instant,
    read_timeout: Duration,
}

impl<'a> Pump<'a> {
    fn new(link: &'a Link, direction: u8, shared: &'a Shared) -> Self {
        let (from, to, counter) = if direction == TO_SERVER {
            (&link.client, &link.server, &shared.to_server)
        } else {
            (&link.server, &link.client, &shared.to_client)
        };
        Self {
            link,
            shared,
            direction,
            from,
            to,
            counter,
            held: VecDeque::new(),
            held_bytes: 0,
            next_slice: Instant::now(),
            read_timeout: POLL,
        }
    }

    fn stopped(&self) -> bool {
        self.link.dead.load(Ordering::SeqCst) || self.shared.shutdown.load(Ordering::SeqCst)
    }

    /// Tears the whole link down after a reset or another failure on one end.
    fn fail(&self) -> Stop {
        self.link.kill(Cut::Fin);
        self.shared.notify();
        Stop
    }

    /// Copies bytes one way until end of stream, an error, a cut, a truncation or the proxy's shutdown.
    fn run(mut self) {
        let mut buf = vec![0u8; 16 * 1024];
        let mut reading = true;
        loop {
            if !wait_while_stalled(self.link, self.direction, self.shared) || self.forward_due().is_err() {
                return;
            }
            // Wait for more bytes, or for the first held chunk to fall due; at most `POLL`, to notice flags.
            let wait = self.held.front().map_or(POLL, |(due, _)| {
                due.saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(1), POLL)
            });
            if !reading || self.held_bytes >= MAX_HELD {
                // Nothing more to read (end of stream seen), or the queue is full: only forward.
                std::thread::sleep(wait);
                continue;
            }
            if wait != self.read_timeout {
                let _ = self.from.set_read_timeout(Some(wait));
                self.read_timeout = wait;
            }
            let n = match self.from.read(&mut buf) {
                // End of stream: pass the FIN on (after the bytes held before it) and let the other direction
                // run until its own end. (Unless the link was cut: a `Cut::Rst` wakes the pumps this way, and
                // must not send a FIN before its RST.)
                Ok(0) if self.stopped() => return,
                Ok(0) => {
                    reading = false;
                    0
                }
                Ok(n) => n,
                Err(error) if is_timeout(&error) || error.kind() == io::ErrorKind::Interrupted => {
                    if self.stopped() {
                        return;
                    }
                    continue;
                }
                Err(_) => {
                    self.fail();
                    return;
                }
            };
            let delay = Duration::from_nanos(self.shared.delay[slot(self.direction)].load(Ordering::SeqCst));
            self.held.push_back((Instant::now() + delay, buf[..n].to_vec()));
            self.held_bytes += n;
        }
    }

    /// Forwards every held chunk that is due, in order.
    fn forward_due(&mut self) -> Result<(), Stop> {
        while self.held.front().is_some_and(|(due, _)| *due <= Instant::now()) {
            let Some((_, chunk)) = self.held.pop_front() else {
                break;
            };
            self.held_bytes -= chunk.len();
            if chunk.is_empty() {
                if !self.stopped() {
                    let _ = self.to.shutdown(Shutdown::Write);
                }
                return Err(Stop);
            }
            self.forward(&chunk)?;
        }
        Ok(())
    }

    /// Writes `chunk`, in throttled slices, up to an armed truncation (then cuts the link).
    fn forward(&mut self, chunk: &[u8]) -> Result<(), Stop> {
        let mut offset = 0;
        while offset < chunk.len() {
            // Bytes read after a stall began are held until it is lifted.
            if !wait_while_stalled(self.link, self.direction, self.shared) {
                return Err(Stop);
            }
            let mut end = chunk.len();
            let rate = self.shared.rate[slot(self.direction)].load(Ordering::SeqCst);
            if rate > 0 {
                self.sleep_until(self.next_slice)?;
                let slice = (rate as f64 * SLICE.as_secs_f64()) as usize;
                end = end.min(offset + slice.max(1));
            }
            let truncation = *self.link.truncate[slot(self.direction)].lock().unwrap();
            if let Some(truncation) = truncation {
                end = end.min(offset + truncation.remaining);
            }
            let started = Instant::now();
            self.write_all(&chunk[offset..end])?;
            let written = end - offset;
            offset = end;
            if rate > 0 {
                self.next_slice = self.next_slice.max(started) + Duration::from_secs_f64(written as f64 / rate as f64);
            }
            if truncation.is_some() {
                let mut armed = self.link.truncate[slot(self.direction)].lock().unwrap();
                if let Some(truncation) = armed.as_mut() {
                    truncation.remaining = truncation.remaining.saturating_sub(written);
                    if truncation.remaining == 0 {
                        let cut = truncation.cut;
                        *armed = None;
                        drop(armed);
                        // Counted before the cut, so that a peer that sees the cut also sees the count.
                        self.shared.truncated.fetch_add(1, Ordering::SeqCst);
                        self.link.kill(cut);
                        self.shared.notify();
                        return Err(Stop);
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `bytes`, counting them as they are handed to the socket: counted before `write` and uncounted if
    /// refused, so that a peer that has read them always finds them in the counter.
    fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), Stop> {
        while !bytes.is_empty() {
            self.counter.fetch_add(bytes.len() as u64, Ordering::SeqCst);
            let result = self.to.write(bytes);
            let written = *result.as_ref().unwrap_or(&0);
            self.counter.fetch_sub((bytes.len() - written) as u64, Ordering::SeqCst);
            match result {
                Ok(0) => return Err(Stop),
                Ok(k) => bytes = &bytes[k..],
                Err(error) if is_timeout(&error) || error.kind() == io::ErrorKind::Interrupted => {
                    if self.stopped() {
                        return Err(Stop);
                    }
                }
                Err(_) => return Err(self.fail()),
            }
        }
        Ok(())
    }

    /// Sleeps until `at` (the throttle's pace), in steps of at most `POLL` so that a cut is noticed.
    fn sleep_until(&self, at: Instant) -> Result<(), Stop> {
        loop {
            if self.stopped() {
                return Err(Stop);
            }
            let now = Instant::now();
            if now >= at {
                return Ok(());
            }
            std::thread::sleep((at - now).min(POLL));
        }
    }
}

/// Blocks while `direction` is stalled on `link`; false if the link died or the proxy stopped meanwhile.
fn wait_while_stalled(link: &Link, direction: u8, shared: &Shared) -> bool {
    let dead = || link.dead.load(Ordering::SeqCst) || shared.shutdown.load(Ordering::SeqCst);
    if link.stalled.load(Ordering::SeqCst) & direction == 0 {
        return !dead();
    }
    let mut guard = shared.changed_lock.lock().unwrap();
    loop {
        if dead() {
            return false;
        }
        if link.stalled.load(Ordering::SeqCst) & direction == 0 {
            return true;
        }
        guard = shared.changed.wait_timeout(guard, POLL).unwrap().0;
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}
