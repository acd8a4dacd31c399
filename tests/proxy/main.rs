//! Proxies against real proxy servers on loopback: `pproxy` (HTTP `CONNECT` and SOCKS5) and `microsocks`
//! (SOCKS5), both installed by `.ci/install-peers`, each test checking in the proxy's own log that the
//! connection went through it. `ws://` and `wss://` (TLS inside the tunnel, the target's certificate
//! checked), Basic and SOCKS5 username/password authentication, the environment (python websockets' variables,
//! `no_proxy`) and the opt-out; fake proxies on loopback for the failure classes (refused, reset, HTTP and
//! SOCKS5 refusals, a silent proxy).
//!
//! Every test holds the binary's serial lock: some set the process's proxy variables (restoring them after),
//! and every connector here that does not name its proxy reads them.

#[path = "../support/proxies.rs"]
mod proxies;
#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use stream_tungstenite::retry::{ExponentialBackoff, Jitter, NoRetry};
use stream_tungstenite::tungstenite::Message;
use stream_tungstenite::ws::{ConnectError, ProxyFailure, WsConnection, WsConnector, WsConnectorBuilder};
use stream_tungstenite::{Classification, Connect, Diagnose, Error, ReconnectingStream, WebSocketClient};

use proxies::{Behaviour, EnvGuard, FakeProxy, ProxyServer};
use support::log_buffer::LogBuffer;
use support::serial::serial;
use support::server;

/// One echo exchange on `connection`.
async fn echo(connection: &mut WsConnection, text: &str) {
    connection.send(Message::text(text)).await.expect("sent");
    let reply = connection.next().await.expect("a reply").expect("no error");
    assert_eq!(reply, Message::text(text));
}

/// One attempt of `connector`'s.
async fn attempt(connector: &WsConnector) -> Result<WsConnection, ConnectError> {
    let mut connector = connector.clone();
    connector.connect().await
}

/// An error and its sources, joined with `: `, and its `Debug`.
fn everything_shown(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{error} / {error:?}");
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(&format!(" / {next} / {next:?}"));
        source = next.source();
    }
    text
}

fn builder(url: &str) -> WsConnectorBuilder {
    WsConnector::builder(url).with_connect_timeout(Duration::from_secs(10))
}

// ---- HTTP CONNECT ---------------------------------------------------------------------------------------------

/// `ws://` through pproxy's HTTP `CONNECT`, on async-io, tokio, async-std and smol: the proxy logs one tunnel to
/// the target per connection, and the echo comes back through it.
#[test]
fn ws_through_http_connect_on_each_runtime() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::pproxy("http", None) else {
        return;
    };
    let server = server::echo_server(None);
    let connector = builder(&server.url()).with_proxy(&proxy.url("http", None)).build();
    let exchange = || async {
        let mut connection = attempt(&connector).await.expect("connected through the proxy");
        echo(&mut connection, "through http connect").await;
    };
    support::block_on(exchange());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(exchange());
    async_std::task::block_on(exchange());
    smol::block_on(exchange());
    proxy.assert_tunnels(&server.addr.to_string(), 4);
    assert_eq!(server.accepted(), 4);
}

/// `wss://localhost` through HTTP `CONNECT`: the proxy is asked for `localhost:PORT` (it resolves the name),
/// TLS runs inside the tunnel and the certificate is checked against the target's name: without its root, or
/// with the target named by an address the certificate does not cover, the attempt fails fatally.
#[test]
fn wss_through_http_connect_checks_the_target_certificate() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::pproxy("http", None) else {
        return;
    };
    let (server, certificate) = server::tls_echo_server();
    let port = server.addr.port();
    let url = format!("wss://localhost:{port}/");
    let connector = builder(&url)
        .with_proxy(&proxy.url("http", None))
        .with_root_certificate(certificate.clone())
        .build();
    support::block_on(async {
        let mut connection = attempt(&connector).await.expect("connected through the proxy");
        echo(&mut connection, "tls inside the tunnel").await;
    });
    proxy.assert_tunnels(&format!("localhost:{port}"), 1);

    let untrusted = builder(&url).with_proxy(&proxy.url("http", None)).build();
    let error = support::block_on(attempt(&untrusted)).expect_err("an unknown issuer");
    assert!(error.is_certificate_error(), "{error:?}");
    assert_eq!(error.diagnose().classification(), Some(Classification::Fatal));

    let by_address = builder(&format!("wss://127.0.0.1:{port}/"))
        .with_proxy(&proxy.url("http", None))
        .with_root_certificate(certificate)
        .build();
    let error = support::block_on(attempt(&by_address)).expect_err("a certificate for localhost only");
    assert!(error.is_certificate_error(), "{error:?}");
    proxy.assert_tunnels(&format!("localhost:{port}"), 2);
    proxy.assert_tunnels(&format!("127.0.0.1:{port}"), 1);
}

/// HTTP `CONNECT` with Basic authentication: the password, percent-encoded in the URL (`:` and `@` in it), is
/// decoded and accepted; the tunnel is in the proxy's log.
#[test]
fn http_connect_with_basic_auth() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::pproxy("http", Some(("proxy-user", "s3:cr@t"))) else {
        return;
    };
    let server = server::echo_server(None);
    let proxy_url = proxy.url("http", Some("proxy-user:s3%3Acr%40t"));
    let connector = builder(&server.url()).with_proxy(&proxy_url).build();
    support::block_on(async {
        let mut connection = attempt(&connector).await.expect("authenticated");
        echo(&mut connection, "authenticated").await;
    });
    proxy.assert_tunnels(&server.addr.to_string(), 1);
    assert_eq!(proxy.count("Unauthorized"), 0);
}

/// A wrong password: the proxy answers 407, the stream ends at once with a fatal error after one attempt
/// (the proxy saw one), and neither the error (text, `Debug`, sources) nor any log line at TRACE shows the
/// user name, the password or their Basic encoding. Without credentials, the 407 says so.
#[test]
fn a_wrong_password_is_a_fatal_407_that_shows_no_credential() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::pproxy("http", Some(("proxy-user", "right-password"))) else {
        return;
    };
    let server = server::echo_server(None);
    let proxy_url = proxy.url("http", Some("alice-proxy-user:wr0ng-s3cret"));
    let connector = builder(&server.url()).with_proxy(&proxy_url).build();
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let end = tracing::subscriber::with_default(subscriber, || {
        support::block_on(async {
            let mut stream = ReconnectingStream::new(connector.clone()).with_retry(ExponentialBackoff::new(
                Duration::from_millis(10),
                Duration::from_millis(50),
            ));
            stream.next().await
        })
    });
    let Some(Err(error @ Error::Fatal { .. })) = end else {
        panic!("not a fatal end: {end:?}");
    };
    let cause = error.failure().unwrap().downcast_ref::<ConnectError>().unwrap();
    assert!(matches!(cause, ConnectError::ProxyAuth { .. }), "{cause:?}");
    assert_eq!(
        cause.to_string(),
        format!(
            "proxy authentication failed at http://<redacted>@127.0.0.1:{}: http 407 proxy authentication \
             required: the credentials in the proxy URL were rejected",
            proxy.port()
        )
    );
    let shown = everything_shown(&error) + &logs.text();
    let basic = data_encoding::BASE64.encode(b"alice-proxy-user:wr0ng-s3cret");
    for secret in ["alice-proxy-user", "wr0ng-s3cret", basic.as_str()] {
        assert!(!shown.contains(secret), "{secret} shown in: {shown}");
    }
    assert!(logs.text().contains("dialling through a proxy"), "{}", logs.text());
    assert!(proxy.wait_for(Duration::from_secs(5), |p| p.count("Unauthorized HTTP") == 1));
    assert_eq!(proxy.count("Unauthorized HTTP"), 1, "one attempt, no retry");
    assert_eq!(server.accepted(), 0);

    let anonymous = builder(&server.url()).with_proxy(&proxy.url("http", None)).build();
    let error = support::block_on(attempt(&anonymous)).expect_err("credentials required");
    assert!(
        error.to_string().ends_with("and the proxy URL has no credentials"),
        "{error}"
    );
    assert!(!error.is_retryable());
}

// ---- SOCKS5 ---------------------------------------------------------------------------------------------------

/// `socks5h://`, no authentication: the proxy gets the target's name (remote DNS) and logs the tunnel.
#[test]
fn socks5h_without_auth_sends_the_target_name() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::pproxy("socks5", None) else {
        return;
    };
    let server = server::echo_server(None);
    let port = server.addr.port();
    let connector = builder(&format!("ws://localhost:{port}/"))
        .with_proxy(&proxy.url("socks5h", None))
        .build();
    support::block_on(async {
        let mut connection = attempt(&connector).await.expect("connected through socks5");
        echo(&mut connection, "socks5h").await;
    });
    proxy.assert_tunnels(&format!("localhost:{port}"), 1);
    assert_eq!(proxy.count("socks5 127.0.0.1:"), 1);
}

/// `socks5://` resolves the target's name here and sends its address: the proxy logs the address.
#[test]
fn socks5_resolves_the_target_here_and_sends_its_address() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::pproxy("socks5", None) else {
        return;
    };
    let server = server::echo_server(None);
    let port = server.addr.port();
    let connector = builder(&format!("ws://localhost:{port}/"))
        .with_proxy(&proxy.url("socks5", None))
        .build();
    support::block_on(async {
        let mut connection = attempt(&connector).await.expect("connected through socks5");
        echo(&mut connection, "socks5").await;
    });
    proxy.assert_tunnels(&format!("127.0.0.1:{port}"), 1);
    assert_eq!(proxy.tunnels_to(&format!("localhost:{port}")), 0);
}

/// `wss://` through SOCKS5 with username/password (pproxy), and a wrong password: pproxy hangs up instead
/// of answering, which is taken as a rejection (fatal), shown without the credentials.
#[test]
fn socks5_with_auth_over_wss() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::pproxy("socks5", Some(("socks-user", "socks-pass"))) else {
        return;
    };
    let (server, certificate) = server::tls_echo_server();
    let port = server.addr.port();
    let url = format!("wss://localhost:{port}/");
    let connector = builder(&url)
        .with_proxy(&proxy.url("socks5h", Some("socks-user:socks-pass")))
        .with_root_certificate(certificate.clone())
        .build();
    support::block_on(async {
        let mut connection = attempt(&connector).await.expect("authenticated");
        echo(&mut connection, "socks5 with auth, tls inside").await;
    });
    proxy.assert_tunnels(&format!("localhost:{port}"), 1);

    let wrong = builder(&url)
        .with_proxy(&proxy.url("socks5h", Some("socks-user:wr0ng-s3cret")))
        .with_root_certificate(certificate)
        .build();
    let error = support::block_on(attempt(&wrong)).expect_err("rejected");
    assert!(matches!(error, ConnectError::ProxyAuth { .. }), "{error:?}");
    assert_eq!(error.diagnose().classification(), Some(Classification::Fatal));
    assert!(!everything_shown(&error).contains("wr0ng-s3cret"), "{error:?}");
    assert!(proxy.wait_for(Duration::from_secs(5), |p| p.count("Unauthorized SOCKS") == 1));
    assert_eq!(
        server.accepted(),
        1,
        "only the authenticated attempt reached the server"
    );
}

/// microsocks, a second SOCKS5 implementation: with username/password the tunnel opens (its log says so);
/// a wrong password gets RFC 1929's failure status, fatal; no credentials where it requires them is
/// "no acceptable method", fatal too and said plainly.
#[test]
fn microsocks_with_auth_and_its_refusals() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::microsocks(Some(("ms-user", "ms-pass"))) else {
        return;
    };
    let server = server::echo_server(None);
    let port = server.addr.port();
    let url = format!("ws://localhost:{port}/");
    let connector = builder(&url)
        .with_proxy(&proxy.url("socks5h", Some("ms-user:ms-pass")))
        .build();
    support::block_on(async {
        let mut connection = attempt(&connector).await.expect("authenticated");
        echo(&mut connection, "microsocks").await;
    });
    proxy.assert_tunnels(&format!("localhost:{port}"), 1);

    let wrong = builder(&url)
        .with_proxy(&proxy.url("socks5h", Some("ms-user:wr0ng-s3cret")))
        .build();
    let error = support::block_on(attempt(&wrong)).expect_err("rejected");
    let ConnectError::ProxyAuth { reason, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(reason.contains("rejected (status"), "{reason}");
    assert!(!error.is_retryable());
    assert!(!everything_shown(&error).contains("wr0ng-s3cret"));

    let anonymous = builder(&url).with_proxy(&proxy.url("socks5h", None)).build();
    let error = support::block_on(attempt(&anonymous)).expect_err("credentials required");
    assert!(error.to_string().contains("requires authentication"), "{error}");
    assert!(!error.is_retryable());
    proxy.assert_tunnels(&format!("localhost:{port}"), 1);
    assert_eq!(server.accepted(), 1);
}

/// microsocks reports a target that refuses with SOCKS5 reply 5 (connection refused): retried.
#[test]
fn a_socks5_refusal_of_the_target_is_retried() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::microsocks(None) else {
        return;
    };
    let connector = builder(&format!("ws://127.0.0.1:{}/", proxies::closed_port()))
        .with_proxy(&proxy.url("socks5", None))
        .build();
    let error = support::block_on(attempt(&connector)).expect_err("nothing listens there");
    assert!(
        matches!(
            error,
            ConnectError::Proxy {
                failure: ProxyFailure::Socks { reply: 5 },
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("socks5 reply 5 (connection refused)"),
        "{error}"
    );
    assert_eq!(error.diagnose().classification(), Some(Classification::Retry));
}

// ---- Failure classes, against fake proxies --------------------------------------------------------------------

/// A proxy port where nothing listens, and a proxy that resets the connection: retried, each attempt reaching
/// the proxy (a limited retry gives up after three, and the resetting proxy counted three connections).
#[test]
fn a_proxy_that_refuses_or_resets_is_retried() {
    let _serial = serial();
    let server = server::echo_server(None);
    let refused = builder(&server.url())
        .with_proxy(&format!("http://127.0.0.1:{}", proxies::closed_port()))
        .build();
    let error = support::block_on(attempt(&refused)).expect_err("refused");
    assert!(
        matches!(
            error,
            ConnectError::Proxy {
                failure: ProxyFailure::Unreachable,
                source: Some(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().ends_with("could not be reached"), "{error}");
    assert_eq!(error.diagnose().classification(), Some(Classification::Retry));

    for scheme in ["http", "socks5h"] {
        let resetting = FakeProxy::start(Behaviour::Reset);
        let connector = builder(&server.url()).with_proxy(&resetting.url(scheme)).build();
        let end = support::block_on(async {
            let retry = ExponentialBackoff::new(Duration::from_millis(5), Duration::from_millis(20))
                .with_jitter(Jitter::None)
                .with_max_attempts(3);
            ReconnectingStream::new(connector).with_retry(retry).next().await
        });
        let Some(Err(error @ Error::GaveUp { .. })) = end else {
            panic!("{scheme}: not given up: {end:?}");
        };
        let cause = error.failure().unwrap().downcast_ref::<ConnectError>().unwrap();
        assert!(
            matches!(
                cause,
                ConnectError::Proxy {
                    // A reset that lands before the request is written reads as the proxy unreachable.
                    failure: ProxyFailure::Closed | ProxyFailure::Unreachable,
                    ..
                }
            ),
            "{scheme}: {cause:?}"
        );
        assert_eq!(resetting.accepted(), 3, "{scheme}: one connection per attempt");
    }
    assert_eq!(server.accepted(), 0);
}

/// A proxy's refusal is classified by what it answered: HTTP 502/503 and SOCKS5 "host unreachable" retry;
/// HTTP 403 and SOCKS5 "not allowed by ruleset" are fatal; something that is not a proxy is a protocol
/// error (retried). Each fake proxy saw the attempt.
#[test]
fn a_proxy_refusal_is_classified_by_its_answer() {
    let _serial = serial();
    let cases: [(&str, &'static [u8], Classification); 6] = [
        (
            "http",
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
            Classification::Retry,
        ),
        (
            "http",
            b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
            Classification::Retry,
        ),
        ("http", b"HTTP/1.1 403 Forbidden\r\n\r\n", Classification::Fatal),
        ("socks5h", &[5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0], Classification::Retry),
        ("socks5h", &[5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0], Classification::Fatal),
        ("http", b"SSH-2.0-OpenSSH_9.2\r\n\r\n", Classification::Retry),
    ];
    for (scheme, reply, class) in cases {
        let fake = FakeProxy::start(Behaviour::Reply(reply));
        let connector = builder("ws://example.invalid/").with_proxy(&fake.url(scheme)).build();
        let error = support::block_on(attempt(&connector)).expect_err("refused");
        assert!(matches!(error, ConnectError::Proxy { .. }), "{error:?}");
        assert_eq!(error.diagnose().classification(), Some(class), "{error}");
        assert_eq!(fake.accepted(), 1);
    }
}

/// A proxy that accepts and never answers: the connector's timeout covers the proxy's part of the attempt.
#[test]
fn a_silent_proxy_times_out() {
    let _serial = serial();
    let silent = FakeProxy::start(Behaviour::Silent);
    let connector = WsConnector::builder("ws://example.invalid/")
        .with_proxy(&silent.url("http"))
        .with_connect_timeout(Duration::from_millis(300))
        .build();
    let error = support::block_on(attempt(&connector)).expect_err("silent");
    assert!(matches!(error, ConnectError::Timeout(_)), "{error:?}");
    assert_eq!(error.diagnose().classification(), Some(Classification::Retry));
    assert_eq!(silent.accepted(), 1);
}

// ---- The environment ------------------------------------------------------------------------------------------

/// `stream_tungstenite::connect` reads the environment by default, as python websockets does: `https_proxy`
/// for `wss://`, `ws_proxy` (SOCKS5 here) for `ws://`, `all_proxy` as the last resort; each tunnel is in the
/// proxy's log.
#[test]
fn connect_takes_the_proxy_from_the_environment() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::pproxy("http+socks5", None) else {
        return;
    };
    let server = server::echo_server(None);
    let target = server.addr.to_string();
    for (variable, value) in [
        ("ws_proxy", proxy.url("socks5h", None)),
        ("HTTP_PROXY", proxy.url("http", None)),
        ("https_proxy", format!("127.0.0.1:{}", proxy.port())),
        ("ALL_PROXY", proxy.url("socks5", None)),
    ] {
        let _env = EnvGuard::set(&[(variable, &value)]);
        support::block_on(async {
            let mut connection = stream_tungstenite::connect(server.url()).await.expect(variable);
            echo(&mut connection, variable).await;
        });
    }
    proxy.assert_tunnels(&target, 4);
    assert_eq!(proxy.count("socks5 127.0.0.1:"), 2);
    assert_eq!(proxy.count("http 127.0.0.1:"), 2);
}

/// `no_proxy` in its forms (exact address, CIDR, name, `name:port`, `*`) sends the connection directly: the
/// server accepts it and the proxy logs nothing; an entry for another port does not.
#[test]
fn no_proxy_entries_dial_directly() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::pproxy("http", None) else {
        return;
    };
    let server = server::echo_server(None);
    let port = server.addr.port();
    let proxy_url = proxy.url("http", None);
    let direct = [
        ("127.0.0.1", "127.0.0.1"),
        ("10.0.0.0/8, 127.0.0.0/8", "127.0.0.1"),
        ("example.com,LOCALHOST", "localhost"),
        (".localhost", "localhost"),
        (&format!("localhost:{port}"), "localhost"),
        ("*", "localhost"),
    ];
    for (no_proxy, host) in direct {
        let _env = EnvGuard::set(&[("ws_proxy", &proxy_url), ("no_proxy", no_proxy)]);
        support::block_on(async {
            let mut connection = stream_tungstenite::connect(format!("ws://{host}:{port}/"))
                .await
                .unwrap_or_else(|e| panic!("{no_proxy}: {e}"));
            echo(&mut connection, no_proxy).await;
        });
    }
    assert_eq!(server.accepted(), direct.len());
    assert_eq!(proxy.tunnels_to(&format!("localhost:{port}")), 0);
    assert_eq!(proxy.tunnels_to(&format!("127.0.0.1:{port}")), 0);

    let _env = EnvGuard::set(&[
        ("ws_proxy", &proxy_url),
        ("NO_PROXY", &format!("localhost:{}", port + 1)),
    ]);
    support::block_on(async {
        let mut connection = stream_tungstenite::connect(format!("ws://localhost:{port}/"))
            .await
            .unwrap();
        echo(&mut connection, "another port").await;
    });
    proxy.assert_tunnels(&format!("localhost:{port}"), 1);
}

/// `without_proxy()` ignores the environment, and `with_proxy` ignores it too (`no_proxy` included); an
/// invalid proxy in the variable that applies is a fatal error that names the variable.
#[test]
fn the_opt_out_and_an_explicit_proxy_ignore_the_environment() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::pproxy("http", None) else {
        return;
    };
    let Some(other) = ProxyServer::pproxy("http", None) else {
        return;
    };
    let server = server::echo_server(None);
    let target = server.addr.to_string();
    let _env = EnvGuard::set(&[("ws_proxy", &other.url("http", None)), ("no_proxy", "*")]);

    let direct = builder(&server.url()).without_proxy().build();
    support::block_on(async {
        echo(&mut attempt(&direct).await.unwrap(), "direct").await;
    });
    let explicit = builder(&server.url()).with_proxy(&proxy.url("http", None)).build();
    support::block_on(async {
        echo(&mut attempt(&explicit).await.unwrap(), "explicit").await;
    });
    proxy.assert_tunnels(&target, 1);
    assert_eq!(other.tunnels_to(&target), 0);
    assert_eq!(server.accepted(), 2);

    // Back to the environment (no_proxy=* there): direct again.
    let from_env = builder(&server.url())
        .with_proxy(&proxy.url("http", None))
        .with_proxy_from_env()
        .build();
    support::block_on(async {
        echo(&mut attempt(&from_env).await.unwrap(), "from the environment").await;
    });
    assert_eq!(server.accepted(), 3);

    let _env = EnvGuard::set(&[("ws_proxy", "https://user:s3cret@proxy:443")]);
    let error = support::block_on(attempt(&from_env)).expect_err("an https proxy");
    assert!(matches!(error, ConnectError::InvalidProxy { .. }), "{error:?}");
    let shown = everything_shown(&error);
    assert!(shown.contains("$ws_proxy") && !shown.contains("s3cret"), "{shown}");
    assert_eq!(error.diagnose().classification(), Some(Classification::Fatal));
    let direct = builder(&server.url()).without_proxy().build();
    assert!(support::block_on(attempt(&direct)).is_ok(), "the opt-out reads nothing");
    proxy.assert_tunnels(&target, 1);
}

/// An explicit proxy URL that cannot be used fails every attempt at once (fatal), shown without credentials.
#[test]
fn an_invalid_explicit_proxy_fails_every_attempt() {
    let _serial = serial();
    let connector = builder("ws://127.0.0.1:1/")
        .with_proxy("socks4://user:s3cret@proxy:1080")
        .build();
    assert!(!format!("{connector:?}").contains("s3cret"));
    let end = support::block_on(ReconnectingStream::new(connector).with_retry(NoRetry).next());
    let Some(Err(error @ Error::Fatal { .. })) = end else {
        panic!("{end:?}");
    };
    let shown = everything_shown(&error);
    assert!(
        shown.contains("socks4 is not supported") && !shown.contains("s3cret"),
        "{shown}"
    );
}

// ---- WebSocketClient ------------------------------------------------------------------------------------------

/// `ClientBuilder::with_proxy` forwards to the connector: the client's connection goes through the proxy.
#[test]
fn the_client_builder_forwards_the_proxy() {
    let _serial = serial();
    let Some(proxy) = ProxyServer::pproxy("socks5", Some(("client-user", "client-pass"))) else {
        return;
    };
    let server = server::echo_server(None);
    let client = WebSocketClient::builder(server.url())
        .with_proxy(&proxy.url("socks5h", Some("client-user:client-pass")))
        .build();
    let mut messages = client.subscribe();
    support::block_on(async {
        let test = async {
            client.sender().send_text("through the client").await.unwrap();
            let reply = support::within(Duration::from_secs(30), messages.recv()).await;
            assert_eq!(reply.unwrap().unwrap(), Message::text("through the client"));
            client.shutdown().await;
        };
        let (outcome, ()) = futures::future::join(client.run(), test).await;
        outcome.unwrap();
    });
    proxy.assert_tunnels(&server.addr.to_string(), 1);

    // The other two forwarders: back to the environment, then directly.
    let direct = WebSocketClient::builder(server.url())
        .with_proxy_from_env()
        .without_proxy()
        .build();
    let _env = EnvGuard::set(&[("ws_proxy", &proxy.url("socks5h", None))]);
    let mut messages = direct.subscribe();
    support::block_on(async {
        let test = async {
            direct.sender().send_text("direct").await.unwrap();
            let reply = support::within(Duration::from_secs(30), messages.recv()).await;
            assert_eq!(reply.unwrap().unwrap(), Message::text("direct"));
            direct.shutdown().await;
        };
        let (outcome, ()) = futures::future::join(direct.run(), test).await;
        outcome.unwrap();
    });
    proxy.assert_tunnels(&server.addr.to_string(), 1);
    assert_eq!(server.accepted(), 2);
}
