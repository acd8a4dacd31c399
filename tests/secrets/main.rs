//! Credentials stay out of logs, errors and `Debug`: tungstenite's own `log` records (captured here at TRACE,
//! by a logger this binary installs for the whole process), the URL a client hands out, and the error of an
//! invalid URL; and a URL's `user:pass@` is sent as HTTP Basic authentication instead of being dropped.

#[path = "../support/mod.rs"]
mod support;

use std::sync::{Mutex, OnceLock};

use futures::{SinkExt, StreamExt};
use stream_tungstenite::handshake::AuthHandshaker;
use stream_tungstenite::layer::ConnectorBuilder;
use stream_tungstenite::retry::NoRetry;
use stream_tungstenite::tungstenite::http::HeaderMap;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::ws::{ConnectError, WsConnector};
use stream_tungstenite::{connect, ReconnectingStream, WebSocketClient};
use support::server;

/// Every `log` record of the process: level, target and message.
#[derive(Default)]
struct Capture(Mutex<Vec<(log::Level, String, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = (record.level(), record.target().to_owned(), record.args().to_string());
        self.0.lock().unwrap().push(line);
    }

    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::default());
        log::set_logger(capture).expect("the only logger of this binary");
        log::set_max_level(log::LevelFilter::Trace);
        capture
    })
}

/// The records that mention `secret`.
fn mentioning(secret: &str) -> Vec<(log::Level, String, String)> {
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    (capture().0.lock().unwrap().iter())
        .filter(|(_, _, message)| message.contains(secret) || message.contains(&hex))
        .cloned()
        .collect()
}

/// An echo server that records the upgrade's headers.
fn echo_logging_headers() -> server::Server {
    server::serve(|tcp, _, log| async move {
        let Some(mut ws) = server::accept_logging_headers(tcp, &log).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                return;
            }
        }
    })
}

/// tungstenite logs the whole upgrade request at TRACE when it makes the handshake; this crate makes its own,
/// so the URL's query token, user info, a fixed header and a provider's header appear in no record at any
/// level, while a whole exchange runs with every `log` record enabled.
#[test]
fn the_upgrade_request_is_in_no_log_record_even_at_trace() {
    let _ = capture();
    let server = echo_logging_headers();
    let url = server.url().replace("ws://", "ws://alice:pw-in-user-info@") + "feed?token=query-token-secret";
    let connector = WsConnector::builder(url)
        .with_header("x-api-key", "fixed-header-secret")
        .with_header_provider(|| {
            let mut headers = HeaderMap::new();
            headers.insert("authorization", "Bearer provider-secret".parse().unwrap());
            headers
        })
        .build();
    let mut ws = ReconnectingStream::new(connector).with_retry(NoRetry);
    support::block_on(async {
        ws.send(Message::text("plain")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("plain"));
    });
    let log = server.log();
    assert!(
        log.iter().any(|line| line == "header x-api-key: fixed-header-secret"),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|line| line == "header authorization: Bearer provider-secret"),
        "{log:?}"
    );
    assert!(
        !capture().0.lock().unwrap().is_empty(),
        "tungstenite did log (frames, at TRACE)"
    );
    for secret in [
        "query-token-secret",
        "pw-in-user-info",
        "fixed-header-secret",
        "provider-secret",
    ] {
        assert_eq!(mentioning(secret), [], "{secret} was logged");
    }
}

/// What cannot be kept out: tungstenite logs each frame's payload (hex) and each text message at TRACE, so a
/// token sent in a message (here by `AuthHandshaker`) is there. The README documents the filter that silences
/// it, `tungstenite=debug`: this pins that every such record is at TRACE, under a `tungstenite` target.
#[test]
fn frame_payloads_are_logged_only_at_trace_under_tungstenite_targets() {
    let _ = capture();
    let server = server::echo_server(None);
    let url = server.url();
    let connector = ConnectorBuilder::new(move || connect(url.clone()))
        .layer(stream_tungstenite::handshake::HandshakeLayer::new(AuthHandshaker::new(
            || "frame-token-secret".to_owned(),
        )))
        .build();
    let mut ws = ReconnectingStream::new(connector).with_retry(NoRetry);
    support::block_on(async {
        ws.send(Message::text("after auth")).await.unwrap();
        let mut echo = ws.next().await.unwrap().unwrap();
        while echo != Message::text("after auth") {
            echo = ws.next().await.unwrap().unwrap();
        }
    });
    let records = mentioning("frame-token-secret");
    assert!(
        !records.is_empty(),
        "tungstenite logs payloads at TRACE (if it stops, update the README)"
    );
    for (level, target, _) in &records {
        assert_eq!(*level, log::Level::Trace, "{target}");
        assert!(target.starts_with("tungstenite"), "{target}");
    }
}

/// `user:pass@` in the URL is sent as Basic authentication (percent-decoded), as python websockets does.
#[test]
fn user_info_in_the_url_is_sent_as_basic_authentication() {
    let server = echo_logging_headers();
    let url = server.url().replace("ws://", "ws://alice:p%40ss%3Aword@");
    support::block_on(async {
        let mut conn = connect(url.as_str()).await.unwrap();
        conn.send(Message::text("hi")).await.unwrap();
        assert_eq!(conn.next().await.unwrap().unwrap(), Message::text("hi"));
    });
    // base64("alice:p@ss:word")
    let expected = "header authorization: Basic YWxpY2U6cEBzczp3b3Jk";
    assert!(server.log().iter().any(|line| line == expected), "{:?}", server.log());
}

/// An invalid URL is an error that names it (redacted), with the reason.
#[test]
fn an_invalid_url_is_named_in_its_error() {
    let error = support::block_on(connect("not a url")).unwrap_err();
    assert!(
        matches!(&error, ConnectError::InvalidUrl { url, .. } if url == "not a url"),
        "{error:?}"
    );
    assert!(error.to_string().contains("not a url"), "{error}");
    let error = support::block_on(connect("ftp://alice:secret@host/x?token=t".to_owned())).unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("ftp://<redacted>@host/x?<redacted>"), "{shown}");
    assert!(!shown.contains("secret") && !shown.contains("token=t"), "{shown}");
}

/// `WebSocketClient::uri()` is the URL as it may be printed: redacted.
#[test]
fn the_clients_uri_is_redacted() {
    let client = WebSocketClient::new("wss://alice:secret@example.com/feed?token=t");
    assert_eq!(client.uri(), "wss://<redacted>@example.com/feed?<redacted>");
    let shown = format!("{client:?}");
    assert!(!shown.contains("secret") && !shown.contains("token=t"), "{shown}");
}
