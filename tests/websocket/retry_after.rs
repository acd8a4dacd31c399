//! `Retry-After` on a real socket: the HTTP-date form is read, and a hostile value is capped.

use std::time::{Duration, SystemTime};

use stream_tungstenite::ws::{ConnectError, WsConnection, WsConnector, DEFAULT_MAX_RETRY_AFTER};
use stream_tungstenite::{connect, Connect};

use crate::support::{self, server};

/// The error of an attempt that must fail.
fn rejected(attempt: impl std::future::Future<Output = Result<WsConnection, ConnectError>>) -> ConnectError {
    support::block_on(attempt).expect_err("the server rejects every upgrade")
}

#[test]
fn a_429_with_an_http_date_waits_until_that_date() {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(10));
    let server = server::rejecting_server(429, "Too Many Requests", format!("Retry-After: {date}\r\n"));
    let error = rejected(connect(server.url()));
    assert_eq!(error.status(), Some(429));
    assert!(error.to_string().contains("429"), "{error}");
    assert!(error.is_retryable());
    // The date has a resolution of one second, and some time passed since it was written (up to 4 s are
    // allowed, for a slow machine).
    let wait = error.retry_after().expect("the HTTP-date form is read");
    assert!(
        (Duration::from_secs(5)..=Duration::from_secs(10)).contains(&wait),
        "{wait:?} for {date}"
    );
    // The stream waits as long before the next attempt (the policy says 100 ms).
    let (delay, _) = crate::first_delay(&server);
    assert!(
        (Duration::from_secs(5)..=Duration::from_secs(10)).contains(&delay),
        "{delay:?} for {date}"
    );
}

#[test]
fn a_retry_after_date_in_the_past_is_no_wait() {
    let server = server::rejecting_server(
        503,
        "Service Unavailable",
        "Retry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
    );
    let error = rejected(connect(server.url()));
    assert_eq!(error.retry_after(), Some(Duration::ZERO));
}

#[test]
fn a_huge_retry_after_is_capped() {
    assert_eq!(DEFAULT_MAX_RETRY_AFTER, Duration::from_secs(300));
    let server = server::rejecting_server(429, "Too Many Requests", "Retry-After: 999999999\r\n");
    let error = rejected(connect(server.url()));
    assert_eq!(error.retry_after(), Some(DEFAULT_MAX_RETRY_AFTER), "the default cap");
    let (delay, _) = crate::first_delay(&server);
    assert_eq!(delay, DEFAULT_MAX_RETRY_AFTER, "the stream waits the capped time");
    // The connector's own cap.
    let mut capped = WsConnector::builder(server.url())
        .with_max_retry_after(Duration::from_secs(2))
        .build();
    let error = rejected(capped.connect());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
    assert!(error.to_string().contains("429"), "{error}");
    // More digits than a u64 holds is as huge, not absent; so is a date in a hundred years.
    let server = server::rejecting_server(429, "Too Many Requests", "Retry-After: 99999999999999999999999\r\n");
    assert_eq!(
        rejected(connect(server.url())).retry_after(),
        Some(DEFAULT_MAX_RETRY_AFTER)
    );
    let far = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(100 * 365 * 24 * 3600));
    let server = server::rejecting_server(429, "Too Many Requests", format!("Retry-After: {far}\r\n"));
    assert_eq!(
        rejected(connect(server.url())).retry_after(),
        Some(DEFAULT_MAX_RETRY_AFTER)
    );
}
