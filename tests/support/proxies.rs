//! Real proxy servers on loopback for the proxy tests, and small fake ones for the failure classes.
//!
//! - [`ProxyServer::pproxy`]: `pproxy` (PyPI), an HTTP `CONNECT` and SOCKS5 server, run from `<repo>/.venv`
//!   with `-v`, so that it prints one line per tunnel (`http 127.0.0.1:51234 -> localhost:8080`).
//! - [`ProxyServer::microsocks`]: Debian's `microsocks`, a SOCKS5 server that logs
//!   `client[4] 127.0.0.1: connected to localhost:8080` per tunnel on stderr.
//!
//! Both are installed by `.ci/install-peers`. When one is missing, its constructor returns `None` after
//! printing "skipping: ...", except under `CI=true`, where it panics. Each server's stdin is a pipe held here:
//! it exits when that pipe closes, so it goes away with the test process even when that is killed.
//!
//! - [`FakeProxy`]: a listener that answers every connection with fixed bytes (or resets it, or stays
//!   silent), counting connections: for the failure classes that real proxies do not produce on demand.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a proxy may take to start listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs pproxy's `main()` with the command line's arguments, and exits as soon as stdin reaches its end.
const PPROXY_WRAPPER: &str = "\
import os, sys, threading
def watch():
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from pproxy.server import main
main()
";

/// A running proxy server; stopped (and reaped) on drop.
pub struct ProxyServer {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyServer")
            .field("name", &self.name)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn venv_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".venv")
        .join("bin")
        .join("python")
}

fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `None` after a "skipping" note, or a panic under `CI=true`.
fn missing(what: &str) -> Option<ProxyServer> {
    let message = format!("{what} not installed; run .ci/install-peers");
    if on_ci() {
        panic!("{message} (CI=true, so not skipping)");
    }
    eprintln!("skipping: {message}");
    None
}

fn runs_ok(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether pproxy is installed in the repository's venv.
pub fn pproxy_installed() -> bool {
    let python = venv_python();
    python.exists() && runs_ok(Command::new(python).args(["-c", "import pproxy.server"]))
}

/// Whether microsocks is on `PATH` (it has no `--version`: `-h` prints its usage and fails).
pub fn microsocks_installed() -> bool {
    Command::new("microsocks")
        .arg("-h")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Where to send the port that the first line a parser accepts names.
type PortWatch = (mpsc::Sender<u16>, fn(&str) -> Option<u16>);

/// Reads `pipe` line by line into `lines`, sending the port of the first line the watch's parser accepts.
fn collect_lines<R: Read + Send + 'static>(
    pipe: R,
    lines: Arc<Mutex<Vec<String>>>,
    name: &'static str,
    found: Option<PortWatch>,
) {
    let verbose = std::env::var_os("PEERS_VERBOSE").is_some_and(|v| !v.is_empty() && v != "0");
    thread::Builder::new()
        .name(format!("{name}-output"))
        .spawn(move || {
            let mut found = found;
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if verbose {
                    eprintln!("[{name}] {line}");
                }
                if let Some((tx, parse)) = &found {
                    if let Some(port) = parse(&line) {
                        let _ = tx.send(port);
                        found = None;
                    }
                }
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        })
        .expect("spawn an output reader");
}

/// The port of pproxy's `Serving on ipv? 127.0.0.1:PORT by http,socks5` line.
fn pproxy_port(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("Serving on ")?;
    let address = rest.split_whitespace().find(|word| word.starts_with("127.0.0.1:"))?;
    address.rsplit(':').next()?.parse().ok()
}

impl ProxyServer {
    /// pproxy serving `protocols` (`"http"`, `"socks5"` or `"http+socks5"`) on 127.0.0.1 (a free port), with
    /// `auth` (user, password) required when given. Authentication is checked on every connection
    /// (`--auth 0`: pproxy otherwise trusts an address that authenticated once, for 30 days).
    pub fn pproxy(protocols: &str, auth: Option<(&str, &str)>) -> Option<Self> {
        if !pproxy_installed() {
            return missing("pproxy");
        }
        let auth = auth.map_or(String::new(), |(user, password)| format!("#{user}:{password}"));
        let listen = format!("{protocols}://127.0.0.1:0/{auth}");
        let mut command = Command::new(venv_python());
        command
            .args(["-u", "-c", PPROXY_WRAPPER, "-l", &listen, "-v", "--auth", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start pproxy");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        collect_lines(
            child.stdout.take().expect("piped"),
            Arc::clone(&lines),
            "pproxy",
            Some((tx, pproxy_port)),
        );
        collect_lines(child.stderr.take().expect("piped"), Arc::clone(&lines), "pproxy", None);
        let stdin = child.stdin.take();
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(port) => Some(Self {
                name: "pproxy",
                child,
                stdin,
                port,
                lines,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let said = lines.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
                panic!("pproxy printed no `Serving on` line within {STARTUP_TIMEOUT:?}:\n{said}");
            }
        }
    }

    /// microsocks on 127.0.0.1 (a free port), requiring `auth` (user, password) when given.
    pub fn microsocks(auth: Option<(&str, &str)>) -> Option<Self> {
        if !microsocks_installed() {
            return missing("microsocks");
        }
        // microsocks takes a port and prints nothing when it listens: take a free port, then wait until it
        // accepts. (Its stdin is /dev/null as a background job: the shell's `cat` holds the pipe, and stops
        // it when the pipe closes.)
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let auth = auth.map_or(String::new(), |(user, password)| {
            format!(" -u '{user}' -P '{password}'")
        });
        let script = format!("microsocks -i 127.0.0.1 -p {port}{auth} & pid=$!; cat >/dev/null; kill $pid");
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start microsocks");
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect_lines(
            child.stderr.take().expect("piped"),
            Arc::clone(&lines),
            "microsocks",
            None,
        );
        let stdin = child.stdin.take();
        let server = Self {
            name: "microsocks",
            child,
            stdin,
            port,
            lines,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "microsocks did not listen on port {port} within {STARTUP_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `scheme://127.0.0.1:PORT`, with `user_info@` when given (already percent-encoded).
    pub fn url(&self, scheme: &str, user_info: Option<&str>) -> String {
        match user_info {
            Some(user_info) => format!("{scheme}://{user_info}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// Everything it has printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The tunnels it has logged to `target` (`host:port` as the client named it): pproxy's
    /// `<protocol> 127.0.0.1:<port> -> <target>`, microsocks' `... connected to <target>`.
    pub fn tunnels_to(&self, target: &str) -> usize {
        let pproxy_suffix = format!(" -> {target}");
        let microsocks_suffix = format!(": connected to {target}");
        self.lines()
            .iter()
            .filter(|line| match self.name {
                "pproxy" => line.ends_with(&pproxy_suffix) && line.contains(" 127.0.0.1:"),
                _ => line.ends_with(&microsocks_suffix),
            })
            .count()
    }

    /// How many of its lines contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.lines().iter().filter(|line| line.contains(text)).count()
    }

    /// Waits up to `timeout` for `pred` to hold (a proxy logs a tunnel as it opens it, on another thread).
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asserts that it logged exactly `expected` tunnels to `target` (waiting a little for the log).
    #[track_caller]
    pub fn assert_tunnels(&self, target: &str, expected: usize) {
        self.wait_for(Duration::from_secs(5), |proxy| proxy.tunnels_to(target) >= expected);
        // A moment more, so that one too many shows too.
        thread::sleep(Duration::from_millis(50));
        assert_eq!(
            self.tunnels_to(target),
            expected,
            "{} tunnels to {target}; its log:\n{}",
            self.name,
            self.lines().join("\n")
        );
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // The wrapper exits on the closed pipe; give it a moment before killing it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a [`FakeProxy`] does with each connection.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Reads the request (up to a blank line, or a first read for SOCKS), writes these bytes, then closes.
    Reply(&'static [u8]),
    /// Resets the connection at once (`SO_LINGER` 0).
    Reset,
    /// Accepts and never answers (until the client goes away).
    Silent,
}

/// A loopback listener that plays a proxy badly, counting the connections it accepted.
#[derive(Debug, Clone)]
pub struct FakeProxy {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl FakeProxy {
    pub fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("an address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(mut tcp) = tcp else { return };
                count.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || match behaviour {
                    Behaviour::Reset => {
                        let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                    }
                    Behaviour::Silent => {
                        let mut sink = [0; 1024];
                        while matches!(tcp.read(&mut sink), Ok(n) if n > 0) {}
                    }
                    Behaviour::Reply(reply) => {
                        let mut request = Vec::new();
                        let mut buf = [0; 1024];
                        while let Ok(n @ 1..) = tcp.read(&mut buf) {
                            request.extend_from_slice(&buf[..n]);
                            if request.first() == Some(&5) || request.windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                        // A SOCKS5 reply may come in two steps: the method choice, then the connect reply.
                        if request.first() == Some(&5) && reply.len() > 2 {
                            let _ = tcp.write_all(&reply[..2]);
                            let _ = tcp.read(&mut buf);
                            let _ = tcp.write_all(&reply[2..]);
                        } else {
                            let _ = tcp.write_all(reply);
                        }
                        let _ = tcp.flush();
                        thread::sleep(Duration::from_millis(20));
                    }
                });
            }
        });
        Self { addr, accepted }
    }

    /// `scheme://127.0.0.1:PORT`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A port on 127.0.0.1 where nothing listens.
pub fn closed_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The proxy variables of the process environment, cleared for a test and restored when dropped. Hold it
/// with [`serial`](super::support::serial::serial): the environment is the process's.
pub struct EnvGuard {
    saved: Vec<(&'static str, Option<std::ffi::OsString>)>,
}

/// Every variable the proxy selection reads.
pub const PROXY_VARIABLES: [&str; 15] = [
    "wss_proxy",
    "WSS_PROXY",
    "ws_proxy",
    "WS_PROXY",
    "socks_proxy",
    "SOCKS_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",
];

impl EnvGuard {
    /// Clears every proxy variable, then sets `vars`.
    pub fn set(vars: &[(&str, &str)]) -> Self {
        let saved = PROXY_VARIABLES
            .iter()
            .map(|name| (*name, std::env::var_os(name)))
            .collect();
        for name in PROXY_VARIABLES {
            std::env::remove_var(name);
        }
        for (name, value) in vars {
            assert!(PROXY_VARIABLES.contains(name), "{name} is not restored by EnvGuard");
            std::env::set_var(name, value);
        }
        Self { saved }
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        for (name, value) in &self.saved {
            match value {
                Some(value) => std::env::set_var(name, value),
                None => std::env::remove_var(name),
            }
        }
    }
}
