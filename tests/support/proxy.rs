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
//!
//! Counters: connections accepted (all of them), refused, forwarded; bytes each way; live links.
//!
//! Threads: one listener thread, and per link one thread per direction. Blocking reads and writes carry a 50 ms
//! timeout so that each pump notices a cut, a stall or the handle's drop even when its socket is quiet (an idle
//! pump thus wakes 20 times a second: no spinning). Dropping the [`Proxy`] shuts every link down and joins
//! every thread before `drop` returns.

#![allow(dead_code, unreachable_pub)]

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

/// How [`Proxy::cut_all`] ends a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A TCP reset to both ends (`SO_LINGER` 0, then close): pending data is discarded, reads fail with
    /// `ECONNRESET`.
    Rst,
    /// An orderly shutdown (FIN) to both ends: reads see end of stream.
    Fin,
}

/// Which way [`Proxy::stall`] stops the bytes.
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
}

const TO_SERVER: u8 = 1;
const TO_CLIENT: u8 = 2;

/// One proxied connection: the client-facing and the server-facing socket.
struct Link {
    client: TcpStream,
    server: TcpStream,
    /// Direction bits currently stalled.
    stalled: AtomicU8,
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
    accepted: AtomicUsize,
    refused: AtomicUsize,
    forwarded: AtomicUsize,
    to_server: AtomicU64,
    to_client: AtomicU64,
}

impl Shared {
    fn live_links(&self) -> Vec<Arc<Link>> {
        let mut links = self.links.lock().unwrap();
        links.retain(|link| link.strong_count() > 0);
        links.iter().filter_map(Weak::upgrade).collect()
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

    /// Connections the listener accepted, refused ones included.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections reset at once because of [`refuse_for`](Self::refuse_for).
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections linked to the target.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Links whose pumps are still running.
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
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = tcp else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
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
        dead: AtomicBool::new(false),
    });
    shared.links.lock().unwrap().push(Arc::downgrade(&link));
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let (up_link, up_shared) = (Arc::clone(&link), Arc::clone(&shared));
    let upstream = std::thread::Builder::new()
        .name("proxy-pump".into())
        .spawn(move || pump(&up_link, TO_SERVER, &up_shared))
        .unwrap();
    pump(&link, TO_CLIENT, &shared);
    let _ = upstream.join();
    // The last `Arc<Link>` (unless `cut_all` holds one for a moment) drops here: both sockets close, with a
    // reset if the link was cut with `Cut::Rst`.
}

/// Copies bytes one way until end of stream, an error, a cut or the proxy's shutdown.
fn pump(link: &Link, direction: u8, shared: &Shared) {
    let (mut from, mut to, counter) = if direction == TO_SERVER {
        (&link.client, &link.server, &shared.to_server)
    } else {
        (&link.server, &link.client, &shared.to_client)
    };
    let stopped = || link.dead.load(Ordering::SeqCst) || shared.shutdown.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !wait_while_stalled(link, direction, shared) {
            return;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                // End of stream: pass the FIN on and let the other direction run until its own end. (Unless the
                // link was cut: a `Cut::Rst` wakes the pumps this way, and must not send a FIN before its RST.)
                if !stopped() {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
            Err(error) if is_timeout(&error) || error.kind() == io::ErrorKind::Interrupted => {
                if stopped() {
                    return;
                }
                continue;
            }
            Err(_) => {
                // A reset or another failure on one end: tear the whole link down.
                link.kill(Cut::Fin);
                shared.notify();
                return;
            }
        };
        // Bytes read after a stall began are held until it is lifted.
        if !wait_while_stalled(link, direction, shared) {
            return;
        }
        let mut written = 0;
        while written < n {
            match to.write(&buf[written..n]) {
                Ok(0) => return,
                Ok(k) => {
                    written += k;
                    counter.fetch_add(k as u64, Ordering::SeqCst);
                }
                Err(error) if is_timeout(&error) || error.kind() == io::ErrorKind::Interrupted => {
                    if stopped() {
                        return;
                    }
                }
                Err(_) => {
                    link.kill(Cut::Fin);
                    shared.notify();
                    return;
                }
            }
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
