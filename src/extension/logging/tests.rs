//! Unit tests of the logging hook: what reaches a tracing subscriber.

use std::io;
use std::sync::{Arc, Mutex};

use async_tungstenite::tungstenite::Message;
use futures::channel::mpsc;
use futures::executor::block_on;
use futures::{SinkExt, StreamExt};
use tracing::Level;

use super::Logging;
use crate::layer::ConnectorBuilder;
use crate::Connect;

#[test]
fn settings_show_in_debug() {
    let logging = Logging::new().with_redact_keys(["session"]).with_max_body(9);
    let debug = format!("{logging:?}");
    assert!(debug.contains("session") && debug.contains("max_body: 9"), "{debug}");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn capture<R>(f: impl FnOnce() -> R) -> (R, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(Level::TRACE)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    (result, captured.text())
}

#[test]
fn logs_through_tracing_without_credentials() {
    type Item = Result<Message, io::Error>;
    let (feed, read) = mpsc::unbounded::<Item>();
    let (write, mut written) = mpsc::unbounded::<Message>();
    let mut conn = Some(crate::join(read, write));
    let mut connector = ConnectorBuilder::new(move || {
        futures::future::ready(conn.take().ok_or_else(|| io::Error::other("refused, apikey=K-9")))
    })
    .hook(Logging::new().with_max_body(80))
    .build();

    let ((), logs) = capture(|| {
        block_on(async {
            let mut conn = connector.connect().await.unwrap();
            let inbound = Message::text(r#"{"type":"welcome","token":"tok-INBOUND-1","motd":"hello there"}"#);
            feed.unbounded_send(Ok(inbound.clone())).unwrap();
            assert_eq!(conn.next().await.unwrap().unwrap(), inbound);
            conn.send(Message::text(
                r#"{"op":"login","user":"alice","password":"pw-OUTBOUND-2"}"#,
            ))
            .await
            .unwrap();
            assert!(written.next().await.is_some());
            conn.send(Message::binary(vec![0xde, 0xad, 0xbe, 0xef])).await.unwrap();
            // Multi-byte text cut at 80 bytes, mid-character.
            let long = format!("{}{}", "x".repeat(78), "日本語");
            feed.unbounded_send(Ok(Message::text(long))).unwrap();
            conn.next().await.unwrap().unwrap();
            drop(feed);
            assert!(conn.next().await.is_none());
            drop(conn);
            // A failed attempt: its error is redacted too.
            assert!(connector.connect().await.is_err());
        })
    });

    for secret in ["tok-INBOUND-1", "pw-OUTBOUND-2", "K-9"] {
        assert!(!logs.contains(secret), "{secret} leaked:\n{logs}");
    }
    for expected in [
        "ws_connection{conn=1}",
        "ws_connection{conn=2}",
        "connecting",
        "connected",
        r#"direction="in""#,
        r#"direction="out""#,
        r#"kind="text""#,
        "message direction=\"out\" kind=\"binary\" len=4\n",
        r#"\"type\":\"welcome\""#,
        r#"\"motd\":\"hello there\""#,
        r#"\"token\":\"***\""#,
        r#"\"user\":\"alice\""#,
        r#"\"password\":\"***\""#,
        "truncated=true",
        r#"disconnected reason="ended" messages_in=2 messages_out=2"#,
        "connect failed",
        "apikey=***",
    ] {
        assert!(logs.contains(expected), "missing {expected:?} in:\n{logs}");
    }
    // The binary payload is logged by length only; the long text is cut before the multi-byte tail.
    assert!(!logs.contains("222, 173"), "{logs}");
    assert!(
        logs.contains(&format!("body=\"{}\" truncated=true", "x".repeat(78))),
        "{logs}"
    );
    // Exactly one end per connection: no `dropped` after `ended`.
    assert!(!logs.contains("dropped"), "{logs}");
}

#[test]
fn logs_nothing_of_messages_when_the_level_is_off() {
    let (feed, read) = mpsc::unbounded::<Result<Message, io::Error>>();
    let (write, _written) = mpsc::unbounded::<Message>();
    let mut conn = Some(crate::join(read, write));
    let mut connector =
        ConnectorBuilder::new(move || futures::future::ready(conn.take().ok_or_else(|| io::Error::other("once"))))
            .hook(Logging::new().with_level(Level::TRACE))
            .build();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(Level::DEBUG)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        block_on(async {
            let mut conn = connector.connect().await.unwrap();
            feed.unbounded_send(Ok(Message::text("quiet"))).unwrap();
            conn.next().await.unwrap().unwrap();
            drop(conn);
        })
    });
    let logs = captured.text();
    assert!(logs.contains("connected") && logs.contains("dropped"), "{logs}");
    assert!(!logs.contains("quiet"), "{logs}");
}
