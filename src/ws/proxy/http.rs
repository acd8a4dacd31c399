//! HTTP `CONNECT` (RFC 9110 section 9.3.6): ask the proxy for a tunnel to `host:port`, with HTTP Basic
//! authentication (`Proxy-Authorization`) when the proxy URL has credentials.

use futures_io::{AsyncRead, AsyncWrite};
use futures_util::{AsyncReadExt, AsyncWriteExt};

use super::error::Tunnel;
use super::url::{host_port, Credentials};
use crate::ws::error::ProxyFailure;

/// The most a proxy's response head may take.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// The most headers it may have.
const MAX_HEADERS: usize = 64;

/// The `CONNECT` request for `host:port`.
pub(crate) fn request(host: &str, port: u16, credentials: Option<&Credentials>) -> Vec<u8> {
    let authority = host_port(host, port);
    let mut bytes = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(credentials) = credentials {
        let mut pair = credentials.user.clone();
        pair.push(b':');
        pair.extend_from_slice(&credentials.password);
        bytes.extend_from_slice(b"Proxy-Authorization: Basic ");
        bytes.extend_from_slice(data_encoding::BASE64.encode(&pair).as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// The response head at the start of `bytes`, once complete: its length and status code.
///
/// # Errors
///
/// A [`ProxyFailure::Protocol`] for what is not an HTTP response head.
pub(crate) fn parse_head(bytes: &[u8]) -> Result<Option<(usize, u16)>, Tunnel> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(size)) => Ok(Some((size, response.code.unwrap_or(0)))),
        Err(error) => Err(Tunnel::protocol(format!("not an http response ({error})"))),
    }
}

/// What a status means for the tunnel: 2xx opens it, 407 is an authentication failure, anything else a
/// refusal.
pub(crate) fn outcome(status: u16, credentials_sent: bool) -> Result<(), Tunnel> {
    match status {
        200..=299 => Ok(()),
        407 if credentials_sent => Err(Tunnel::Auth(
            "http 407 proxy authentication required: the credentials in the proxy URL were rejected".into(),
        )),
        407 => Err(Tunnel::Auth(
            "http 407 proxy authentication required, and the proxy URL has no credentials".into(),
        )),
        status => Err(Tunnel::Refused(ProxyFailure::Status { status })),
    }
}

/// Runs the `CONNECT` exchange on `stream`. On success the stream is the tunnel: nothing past the proxy's
/// response head has been read (and nothing may follow it before the client speaks).
pub(crate) async fn connect<S>(
    stream: &mut S,
    host: &str,
    port: u16,
    credentials: Option<&Credentials>,
) -> Result<(), Tunnel>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&request(host, port, credentials)).await?;
    stream.flush().await?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(Tunnel::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        head.extend_from_slice(&chunk[..read]);
        // Interim (1xx) responses are skipped.
        while let Some((size, status)) = parse_head(&head)? {
            if (100..200).contains(&status) {
                head.drain(..size);
                continue;
            }
            outcome(status, credentials.is_some())?;
            if head.len() > size {
                return Err(Tunnel::protocol(format!(
                    "{} bytes after the response head, before the target could have sent any",
                    head.len() - size
                )));
            }
            return Ok(());
        }
        if head.len() > MAX_HEAD {
            return Err(Tunnel::protocol(format!("a response head over {MAX_HEAD} bytes")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::proxy::testing::Scripted;

    fn credentials(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.as_bytes().to_vec(),
            password: password.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_request_names_the_target_and_carries_basic_credentials() {
        assert_eq!(
            request("example.com", 443, None),
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
        );
        assert_eq!(
            request("::1", 8080, None),
            b"CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"
        );
        // RFC 7617's example: Aladdin / open sesame.
        let with_auth = String::from_utf8(request("h", 1, Some(&credentials("Aladdin", "open sesame")))).unwrap();
        assert!(
            with_auth.ends_with("Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"),
            "{with_auth}"
        );
    }

    #[test]
    fn a_head_is_parsed_once_complete() {
        let head = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\n\r\n";
        for end in 0..head.len() {
            assert!(parse_head(&head[..end]).unwrap().is_none(), "{end}");
        }
        assert_eq!(parse_head(head).unwrap(), Some((head.len(), 200)));
        assert_eq!(parse_head(b"HTTP/1.0 407 Auth\n\n").unwrap(), Some((19, 407)));
        assert!(parse_head(b"\x05\x00").is_err(), "a socks reply is not http");
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    #[test]
    fn statuses_open_refuse_or_fail_the_authentication() {
        assert!(outcome(200, false).is_ok());
        assert!(outcome(204, true).is_ok());
        assert!(matches!(outcome(407, true), Err(Tunnel::Auth(reason)) if reason.contains("rejected")));
        assert!(matches!(outcome(407, false), Err(Tunnel::Auth(reason)) if reason.contains("no credentials")));
        assert!(matches!(
            outcome(502, false),
            Err(Tunnel::Refused(ProxyFailure::Status { status: 502 }))
        ));
        assert!(matches!(
            outcome(403, false),
            Err(Tunnel::Refused(ProxyFailure::Status { status: 403 }))
        ));
    }

    fn run(reply: &[u8]) -> (Result<(), Tunnel>, Vec<u8>) {
        let mut stream = Scripted::new(reply);
        let outcome = async_io::block_on(connect(&mut stream, "example.com", 443, None));
        (outcome, stream.written)
    }

    #[test]
    fn the_exchange_opens_a_tunnel_and_reads_nothing_past_the_head() {
        let (outcome, written) = run(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
        assert!(outcome.is_ok(), "{outcome:?}");
        assert!(written.starts_with(b"CONNECT example.com:443 HTTP/1.1\r\n"));
        let (outcome, _) = run(b"HTTP/1.1 200 OK\r\n\r\n\x16\x03");
        assert!(matches!(outcome, Err(Tunnel::Refused(ProxyFailure::Protocol { .. }))));
    }

    #[test]
    fn the_exchange_fails_on_a_close_a_refusal_or_an_endless_head() {
        let (outcome, _) = run(b"HTTP/1.1 200 OK\r\n");
        assert!(matches!(outcome, Err(Tunnel::Io(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof));
        let (outcome, _) = run(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\n\r\nbye");
        assert!(matches!(
            outcome,
            Err(Tunnel::Refused(ProxyFailure::Status { status: 503 }))
        ));
        let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
        while endless.len() <= MAX_HEAD + 64 {
            endless.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let (outcome, _) = run(&endless);
        assert!(
            matches!(outcome, Err(Tunnel::Refused(ProxyFailure::Protocol { .. }))),
            "{outcome:?}"
        );
    }
}
