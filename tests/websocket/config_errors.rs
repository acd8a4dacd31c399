//! A connector built with a bad root certificate or header fails every attempt at once, fatally, naming the
//! problem, and dials nothing.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::task::noop_waker_ref;
use futures::Stream;
use futures_rustls::rustls::pki_types::CertificateDer;
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::ws::{ConnectError, WsConnector};
use stream_tungstenite::{Error, ReconnectingStream};

use crate::support::server;

/// The first poll of a stream over `connector`: it must end the stream with a fatal configuration error.
fn first_poll_config_error(connector: WsConnector) -> String {
    let mut ws: ReconnectingStream<_, Message> = ReconnectingStream::new(connector);
    let poll = Pin::new(&mut ws).poll_next(&mut Context::from_waker(noop_waker_ref()));
    let Poll::Ready(Some(Err(error))) = poll else {
        panic!("expected an error on the first poll, got {poll:?}");
    };
    assert!(error.is_fatal(), "{error:?}");
    let Error::Fatal { cause, .. } = &error else {
        panic!("expected a fatal error, got {error:?}");
    };
    let cause = cause.downcast_ref::<ConnectError>().expect("a ConnectError");
    assert!(matches!(cause, ConnectError::Config { .. }), "{cause:?}");
    assert!(!cause.is_retryable());
    let text = cause.to_string();
    assert!(text.starts_with("invalid configuration: "), "{text}");
    assert!(
        error.to_string().contains(&text),
        "the stream's error shows the cause: {error}"
    );
    text
}

#[test]
fn a_garbage_root_certificate_fails_at_once_without_dialling() {
    let (server, _) = server::tls_echo_server();
    let url = format!("wss://localhost:{}/", server.addr.port());
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02, 0x03]);
    let connector = WsConnector::builder(url).with_root_certificate(garbage).build();
    let text = first_poll_config_error(connector);
    assert!(text.contains("root certificate"), "{text}");
    assert_eq!(server.accepted(), 0, "nothing is dialled");
}

#[test]
fn an_invalid_header_fails_at_once_without_dialling_or_showing_its_value() {
    let server = server::echo_server(None);
    let connector = WsConnector::builder(server.url())
        .with_header("authorization", "Bearer s3cret\r\nx-injected: 1")
        .build();
    let text = first_poll_config_error(connector);
    assert!(text.contains("authorization"), "the header is named: {text}");
    assert!(
        !text.contains("s3cret") && !text.contains("injected"),
        "the value is not shown: {text}"
    );
    // A value given as part of the name is not shown either.
    let connector = WsConnector::builder(server.url())
        .with_header("authorization: Bearer s3cret", "")
        .build();
    let text = first_poll_config_error(connector);
    assert!(text.contains("header name \"authorization\""), "{text}");
    assert!(!text.contains("s3cret"), "the value is not shown: {text}");
    assert_eq!(server.accepted(), 0, "nothing is dialled");
}
