//! Launches third-party WebSocket servers (peers) for the interop tests: Python `websockets` and Node `ws`.
//!
//! Part of the shared support module (`support::peers`). The servers are
//! `tests/peers/python_server.py` and `tests/peers/node_server.js` (same command line, see there), installed by
//! `.ci/install-peers` (a venv at `<repo>/.venv` and `tests/peers/node_modules`). When a peer is not installed,
//! [`Peer::start`] returns `None` after printing a "skipping" note, except under `CI=true`, where it panics.
//!
//! Std only. A peer's stdin is a pipe held by [`Peer`]: the server exits when it reaches EOF, so a server whose
//! test died (even by `SIGKILL`) goes away too. Set `PEERS_VERBOSE=1` to echo the peers' stderr as it comes.

#![allow(dead_code, unreachable_pub)]

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

/// How long a peer may take to print its `PORT` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which third-party implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Impl {
    /// Python `websockets` (new asyncio API), via `<repo>/.venv/bin/python`.
    Python,
    /// Node `ws` v8, via `node` on `PATH`.
    Node,
}

impl Impl {
    /// Both implementations, for tests that run against each.
    pub const ALL: [Impl; 2] = [Impl::Python, Impl::Node];

    /// Short lowercase name (`python`, `node`).
    pub fn name(self) -> &'static str {
        match self {
            Impl::Python => "python",
            Impl::Node => "node",
        }
    }
}

impl fmt::Display for Impl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A running peer server; killed (and reaped) on drop.
pub struct Peer {
    which: Impl,
    child: Child,
    /// Held open so the server keeps running; the server exits on EOF.
    stdin: Option<ChildStdin>,
    port: u16,
    tls: bool,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("which", &self.which)
            .field("pid", &self.child.id())
            .field("port", &self.port)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// The repository root (where `Cargo.toml`, `.venv` and `tests/peers` are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn peers_dir() -> PathBuf {
    repo_root().join("tests").join("peers")
}

fn venv_python() -> PathBuf {
    repo_root().join(".venv").join("bin").join("python")
}

/// Whether `which`'s interpreter and WebSocket package are installed (checked once per process).
pub fn installed(which: Impl) -> bool {
    static PYTHON: OnceLock<bool> = OnceLock::new();
    static NODE: OnceLock<bool> = OnceLock::new();
    match which {
        Impl::Python => *PYTHON.get_or_init(|| {
            let python = venv_python();
            python.exists() && runs_ok(Command::new(&python).args(["-c", "import websockets.asyncio.server"]))
        }),
        Impl::Node => *NODE.get_or_init(|| {
            peers_dir()
                .join("node_modules")
                .join("ws")
                .join("package.json")
                .exists()
                && runs_ok(Command::new("node").arg("--version"))
        }),
    }
}

fn runs_ok(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

fn on_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

impl Peer {
    /// Starts the `which` peer with these arguments (e.g. `["--mode", "echo"]`) and waits for it to listen.
    ///
    /// Returns `None`, after printing "skipping: <impl> peer not installed; run .ci/install-peers" to stderr,
    /// when the interpreter or package is missing and `CI` is not `true`; panics with that message under
    /// `CI=true`. Panics, with the peer's stderr, when the peer exits or prints no `PORT` line within 10 s.
    pub fn start(which: Impl, args: &[&str]) -> Option<Peer> {
        if !installed(which) {
            let message = format!("{which} peer not installed; run .ci/install-peers");
            if on_ci() {
                panic!("{message} (CI=true, so not skipping)");
            }
            eprintln!("skipping: {message}");
            return None;
        }

        let root = repo_root();
        let peers = peers_dir();
        let mut command = match which {
            Impl::Python => {
                let mut command = Command::new(venv_python());
                command.arg("-u").arg(peers.join("python_server.py"));
                command
            }
            Impl::Node => {
                let mut command = Command::new("node");
                command.arg(peers.join("node_server.js"));
                // `require('ws')` resolves from the script's own directory anyway; NODE_PATH makes sure.
                command.env("NODE_PATH", peers.join("node_modules"));
                command
            }
        };
        command
            .args(args)
            .current_dir(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {which} peer ({command:?}): {e}"));

        let verbose = std::env::var_os("PEERS_VERBOSE").is_some_and(|v| !v.is_empty() && v != "0");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_done = {
            let pipe = child.stderr.take().expect("piped stderr");
            let lines = Arc::clone(&stderr);
            let (done_tx, done_rx) = mpsc::channel::<()>();
            thread::Builder::new()
                .name(format!("{which}-peer-stderr"))
                .spawn(move || {
                    for line in BufReader::new(pipe).lines() {
                        let Ok(line) = line else { break };
                        if verbose {
                            eprintln!("[{which} peer] {line}");
                        }
                        lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                    }
                    drop(done_tx);
                })
                .expect("spawn stderr reader");
            done_rx
        };

        let (port_tx, port_rx) = mpsc::channel::<Result<u16, String>>();
        {
            let pipe = child.stdout.take().expect("piped stdout");
            thread::Builder::new()
                .name(format!("{which}-peer-stdout"))
                .spawn(move || {
                    let mut reader = BufReader::new(pipe);
                    let mut line = String::new();
                    let result = match reader.read_line(&mut line) {
                        Ok(0) => Err("exited (stdout closed) before printing its PORT line".to_owned()),
                        Ok(_) => line
                            .trim()
                            .strip_prefix("PORT ")
                            .and_then(|port| port.trim().parse::<u16>().ok())
                            .ok_or_else(|| format!("printed {:?} instead of `PORT <number>`", line.trim_end())),
                        Err(e) => Err(format!("stdout unreadable: {e}")),
                    };
                    let _ = port_tx.send(result);
                    // Keep draining so the peer never blocks on a full pipe.
                    let _ = std::io::copy(&mut reader, &mut std::io::sink());
                })
                .expect("spawn stdout reader");
        }

        let failure = match port_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(port)) => {
                let tls = args.iter().any(|a| *a == "--cert" || a.starts_with("--cert="));
                let stdin = child.stdin.take();
                return Some(Peer {
                    which,
                    child,
                    stdin,
                    port,
                    tls,
                    stderr,
                });
            }
            Ok(Err(reason)) => reason,
            Err(_) => format!("printed no PORT line within {STARTUP_TIMEOUT:?}"),
        };

        // Failed: stop it, let the stderr reader finish, and report everything the peer said.
        let _ = child.kill();
        let status = child.wait().ok();
        let _ = stderr_done.recv_timeout(Duration::from_secs(2));
        let log = stderr.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
        panic!(
            "the {which} peer ({command:?}) {failure}; exit status: {}\n--- peer stderr ---\n{log}\n--- end ---",
            status.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
        );
    }

    /// Which implementation this is.
    pub fn which(&self) -> Impl {
        self.which
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ws://127.0.0.1:PORT/`, or `wss://localhost:PORT/` when started with `--cert` (so certificate names
    /// match; `localhost` must resolve to 127.0.0.1, the only address the peer listens on).
    pub fn url(&self) -> String {
        if self.tls {
            format!("wss://localhost:{}/", self.port)
        } else {
            format!("ws://127.0.0.1:{}/", self.port)
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// What the peer has logged to stderr so far, one event a line (`connect`, `message <text>`, `drop`,
    /// `reject <status>`, `close <code>`, `disconnect <code>`, or a `log ...` line from the library).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many lines of [`stderr_lines`](Self::stderr_lines) are exactly `event` (e.g. `"connect"`, `"drop"`).
    pub fn count(&self, event: &str) -> usize {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| *l == event)
            .count()
    }

    /// Waits up to `timeout` until `pred` holds for the peer's stderr lines (events are logged asynchronously,
    /// so a test that just saw a reply may need to wait a moment for the matching log line). Returns whether it did.
    pub fn wait_for_stderr(&self, timeout: Duration, mut pred: impl FnMut(&[String]) -> bool) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if pred(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Paths of the peer scripts, for messages and for tests that want to check they exist.
pub fn script(which: Impl) -> PathBuf {
    let dir = peers_dir();
    match which {
        Impl::Python => dir.join("python_server.py"),
        Impl::Node => dir.join("node_server.js"),
    }
}

/// The `main` of a test binary whose tests need peers (its own harness, libtest-mimic): runs `tests`,
/// reported as **ignored** with a note naming what to install when one of `needed` is missing, except under
/// `CI=true`, where they run (and a missing peer fails them).
pub fn run_needing(binary: &str, needed: &[Impl], tests: &[(&'static str, fn())]) -> ! {
    let args = libtest_mimic::Arguments::from_args();
    let missing: Vec<&str> = (needed.iter())
        .filter(|which| !installed(**which))
        .map(|which| which.name())
        .collect();
    let ignored = !missing.is_empty() && !on_ci();
    if ignored {
        eprintln!(
            "{binary}: tests ignored: peers not installed ({}); run .ci/install-peers, then cargo test --test {binary}",
            missing.join(", ")
        );
    }
    let trials = (tests.iter())
        .map(|&(name, test)| {
            libtest_mimic::Trial::test(name, move || {
                test();
                Ok(())
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}
