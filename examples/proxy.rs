//! A reconnecting WebSocket client through an HTTP `CONNECT` proxy with Basic authentication.
//!
//! Run it with `cargo run --example proxy`. It starts, on 127.0.0.1, a WebSocket echo server (see
//! `examples/common/mod.rs`) and a small HTTP `CONNECT` proxy written below that requires the user `demo`
//! with the password `s3cr:et` and prints every tunnel it opens. Then:
//!
//! 1. a [`ReconnectingStream`] over a [`WsConnector`] built `with_proxy("http://demo:s3cr%3Aet@...")` (the
//!    password percent-encoded in the URL, decoded for the proxy) reads the greeting and echoes a few
//!    messages, all through the tunnel;
//! 2. the server drops the connection: the stream reconnects by itself, through the proxy again (a second
//!    tunnel), and the next item is the new connection's greeting;
//! 3. a second client with a wrong password gets `407`, which is fatal: its stream ends at once with an error
//!    that shows the proxy as `http://<redacted>@127.0.0.1:PORT`, never the credentials.
//!
//! It exits non-zero if the proxy did not see the tunnels it should have. Without `with_proxy`, a connector
//! reads the proxy from the environment as python websockets does (`wss_proxy`, `https_proxy`, `no_proxy`,
//! ...); `without_proxy()` opts out.

#[allow(dead_code)]
mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use stream_tungstenite::retry::ExponentialBackoff;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::ws::WsConnector;
use stream_tungstenite::ReconnectingStream;

const USER: &str = "demo";
const PASSWORD: &str = "s3cr:et";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::exit_after(Duration::from_secs(20));
    let server = common::start_echo_server()?;
    let url = format!("ws://{server}/");
    println!("[server] echoing on {url}");
    let tunnels = Arc::new(AtomicU32::new(0));
    let proxy = start_proxy(Arc::clone(&tunnels))?;
    println!("[proxy] HTTP CONNECT on 127.0.0.1:{proxy}, Basic authentication as {USER:?}");

    async_io::block_on(async {
        let connector = WsConnector::builder(url.clone())
            .with_proxy(&format!("http://{USER}:s3cr%3Aet@127.0.0.1:{proxy}"))
            .build();
        let mut ws = ReconnectingStream::new(connector)
            .with_retry(ExponentialBackoff::new(
                Duration::from_millis(50),
                Duration::from_secs(2),
            ))
            .with_observer(common::print_event);

        println!("[client] {}", common::describe(&common::recv(&mut ws).await?));
        for text in ["hello", "through", "the proxy"] {
            ws.send(Message::text(text)).await?;
            println!(
                "[client] sent {text:?}, echo: {}",
                common::describe(&common::recv(&mut ws).await?)
            );
        }
        println!("[client] asking the server to drop the connection");
        ws.send(Message::text("drop")).await?;
        println!("[client] {}", common::describe(&common::recv(&mut ws).await?));
        ws.close().await?;
        println!("[client] closed after {} connections", ws.generation());

        let wrong = WsConnector::builder(url.clone())
            .with_proxy(&format!("http://{USER}:not-the-password@127.0.0.1:{proxy}"))
            .build();
        let mut rejected = ReconnectingStream::new(wrong);
        match rejected.next().await {
            Some(Err(error)) => println!("[client] with a wrong password: {error}"),
            other => return Err(format!("a wrong password should end the stream, got {other:?}").into()),
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;

    let opened = tunnels.load(Ordering::SeqCst);
    println!("summary: the proxy opened {opened} tunnels (2 expected: the first connection and the reconnect)");
    if opened != 2 {
        return Err("the proxy did not see the connections it should have".into());
    }
    Ok(())
}

/// Starts the proxy on a free port of 127.0.0.1: a thread per client, two more per tunnel.
fn start_proxy(tunnels: Arc<AtomicU32>) -> io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let port = listener.local_addr()?.port();
    let expected = format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("{USER}:{PASSWORD}").as_bytes())
    );
    std::thread::Builder::new().name("proxy".into()).spawn(move || {
        for client in listener.incoming().flatten() {
            let expected = expected.clone();
            let tunnels = Arc::clone(&tunnels);
            std::thread::spawn(move || {
                if let Err(error) = serve(client, &expected, &tunnels) {
                    println!("[proxy] client failed: {error}");
                }
            });
        }
    })?;
    Ok(port)
}

/// One client: read the `CONNECT` head, check the credentials, dial the target and relay both ways.
fn serve(mut client: TcpStream, expected: &str, tunnels: &AtomicU32) -> io::Result<()> {
    // The client sends nothing past its head before the answer, so reading in chunks loses nothing.
    let mut head = Vec::new();
    let mut chunk = [0; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = client.read(&mut chunk)?;
        if read == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let target = match lines.next().map(|line| line.split(' ').collect::<Vec<_>>()) {
        Some(parts) if parts.len() == 3 && parts[0] == "CONNECT" => parts[1].to_owned(),
        _ => {
            client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
    };
    let authorized = lines.any(|line| {
        line.split_once(':')
            .is_some_and(|(name, value)| name.eq_ignore_ascii_case("proxy-authorization") && value.trim() == expected)
    });
    if !authorized {
        println!("[proxy] CONNECT {target}: 407, wrong or missing credentials");
        client.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"example\"\r\n\
              Content-Length: 0\r\n\r\n",
        )?;
        return Ok(());
    }
    let upstream = match TcpStream::connect(&target) {
        Ok(upstream) => upstream,
        Err(error) => {
            println!("[proxy] CONNECT {target}: 502, {error}");
            client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
    };
    let number = tunnels.fetch_add(1, Ordering::SeqCst) + 1;
    println!("[proxy] tunnel {number}: {} -> {target}", client.peer_addr()?);
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (mut client_in, mut upstream_out) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut client_in, &mut upstream_out);
        let _ = upstream_out.shutdown(Shutdown::Write);
    });
    let (mut upstream_in, mut client_out) = (upstream, client);
    let _ = io::copy(&mut upstream_in, &mut client_out);
    let _ = client_out.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}
