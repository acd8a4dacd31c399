//! The HTTP upgrade, done here rather than by tungstenite's client handshake: tungstenite logs the whole
//! request at TRACE (URL query, `Authorization`, every header a provider added), and this crate keeps
//! credentials out of logs. The checks are RFC 6455's, as tungstenite makes them; a rejection is returned as
//! tungstenite's own `Error::Http`, so that it is classified the same way.

use futures_util::{AsyncReadExt, AsyncWriteExt};

use async_tungstenite::tungstenite::error::{ProtocolError, SubProtocolError};
use async_tungstenite::tungstenite::handshake::client::{Request, Response};
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::http::header::AUTHORIZATION;
use async_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use async_tungstenite::tungstenite::{self, Error};

use super::transport::Transport;

/// The most a response head may take.
const MAX_HEAD: usize = 64 * 1024;
/// The most headers a response head may have.
const MAX_HEADERS: usize = 124;

/// The headers every upgrade request has, written first: as written, and as `http` names them.
const FIRST: [(&str, &str); 5] = [
    ("Host", "host"),
    ("Connection", "connection"),
    ("Upgrade", "upgrade"),
    ("Sec-WebSocket-Version", "sec-websocket-version"),
    ("Sec-WebSocket-Key", "sec-websocket-key"),
];

/// The request as bytes, and its `Sec-WebSocket-Key`. The request is one from `into_client_request`, which
/// sets the WebSocket headers; they are written first, with the capitalisation some servers insist on.
pub(crate) fn request_bytes(request: &Request) -> Result<(Vec<u8>, String), Error> {
    let path = request.uri().path_and_query().map_or("/", |path| path.as_str());
    let mut bytes = format!("GET {path} HTTP/1.1\r\n").into_bytes();
    let headers = request.headers();
    for (name, lower) in FIRST {
        let value = headers
            .get(lower)
            .ok_or_else(|| Error::Protocol(ProtocolError::InvalidHeader(Box::new(HeaderName::from_static(lower)))))?;
        push_header(&mut bytes, name, value);
    }
    for (name, value) in headers {
        let name = name.as_str();
        if FIRST.iter().any(|(_, lower)| *lower == name) {
            continue;
        }
        let name = match name {
            "sec-websocket-protocol" => "Sec-WebSocket-Protocol",
            "origin" => "Origin",
            other => other,
        };
        push_header(&mut bytes, name, value);
    }
    bytes.extend_from_slice(b"\r\n");
    let key = headers
        .get("Sec-WebSocket-Key")
        .and_then(|key| key.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((bytes, key))
}

fn push_header(bytes: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(b": ");
    bytes.extend_from_slice(value.as_bytes());
    bytes.extend_from_slice(b"\r\n");
}

/// Sends `request` over `transport` and reads the response head; the bytes after a `101`'s head stay in the
/// transport for the connection. `Err` is tungstenite's error for what went wrong (an `Error::Http` with the
/// response and what had arrived of its body, for a status other than 101).
pub(crate) async fn upgrade(transport: &mut Transport, request: &Request) -> Result<Response, Error> {
    let (bytes, key) = request_bytes(request)?;
    transport.write_all(&bytes).await?;
    transport.flush().await?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0; 4096];
    let (size, response) = loop {
        let read = transport.read(&mut chunk).await?;
        if read == 0 {
            return Err(Error::Protocol(ProtocolError::HandshakeIncomplete));
        }
        head.extend_from_slice(&chunk[..read]);
        if let Some(parsed) = parse_response(&head)? {
            break parsed;
        }
        if head.len() > MAX_HEAD {
            return Err(Error::Capacity(tungstenite::error::CapacityError::TooManyHeaders));
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let mut response = response;
        *response.body_mut() = Some(head.split_off(size));
        return Err(Error::Http(Box::new(response)));
    }
    verify(&response, &key, request)?;
    Ok(response)
}

/// The response head at the start of `bytes`, once it is complete: its length and the response.
pub(crate) fn parse_response(bytes: &[u8]) -> Result<Option<(usize, Response)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let size = match parsed.parse(bytes)? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(size) => size,
    };
    if parsed.version.unwrap_or(0) < 1 {
        return Err(Error::Protocol(ProtocolError::WrongHttpVersion));
    }
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())?;
        map.append(name, HeaderValue::from_bytes(header.value)?);
    }
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0))?;
    let mut response = Response::new(None);
    *response.status_mut() = status;
    *response.headers_mut() = map;
    *response.version_mut() = Version::HTTP_11;
    Ok(Some((size, response)))
}

/// RFC 6455 4.1's checks of a `101`.
fn verify(response: &Response, key: &str, request: &Request) -> Result<(), Error> {
    let headers = response.headers();
    let is = |name: &str, expected: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.eq_ignore_ascii_case(expected))
    };
    if !is("Upgrade", "websocket") {
        return Err(Error::Protocol(ProtocolError::MissingUpgradeWebSocketHeader));
    }
    let connection_upgrade = headers
        .get("Connection")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        });
    if !connection_upgrade {
        return Err(Error::Protocol(ProtocolError::MissingConnectionUpgradeHeader));
    }
    let accept = derive_accept_key(key.as_bytes());
    if headers.get("Sec-WebSocket-Accept").map(HeaderValue::as_bytes) != Some(accept.as_bytes()) {
        return Err(Error::Protocol(ProtocolError::SecWebSocketAcceptKeyMismatch));
    }
    let offered: Option<Vec<String>> = request
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(',').map(|protocol| protocol.trim().to_owned()).collect());
    let chosen = headers.get("Sec-WebSocket-Protocol").map(|value| value.to_str());
    let problem = match (offered, chosen) {
        (None, None) => None,
        (Some(_), None) => Some(SubProtocolError::NoSubProtocol),
        (None, Some(_)) => Some(SubProtocolError::ServerSentSubProtocolNoneRequested),
        (Some(offered), Some(Ok(chosen))) if offered.iter().any(|protocol| protocol == chosen) => None,
        (Some(_), Some(_)) => Some(SubProtocolError::InvalidSubProtocol),
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(problem))),
    }
}

/// A URL's user info (`user:pass@`) as HTTP Basic authentication, percent-decoded, as python websockets
/// sends it; an `Authorization` header already there wins.
pub(super) fn basic_auth_from_user_info(request: &mut Request) {
    let Some(user_info) = request
        .uri()
        .authority()
        .and_then(|authority| authority.as_str().rsplit_once('@'))
        .map(|(user_info, _)| user_info.to_owned())
    else {
        return;
    };
    if request.headers().contains_key(AUTHORIZATION) {
        return;
    }
    let (user, password) = user_info.split_once(':').unwrap_or((&user_info, ""));
    let mut credentials = percent_decode(user);
    credentials.push(b':');
    credentials.extend(percent_decode(password));
    let value = format!("Basic {}", data_encoding::BASE64.encode(&credentials));
    if let Ok(mut value) = HeaderValue::from_str(&value) {
        value.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, value);
    }
}

/// `%XX` escapes decoded (anything else, a malformed escape too, kept as it is).
pub(crate) fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits: at most 0xff.
                decoded.push(u8::try_from(high * 16 + low).unwrap_or(u8::MAX));
                i += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_tungstenite::tungstenite::client::IntoClientRequest;

    #[test]
    fn the_request_puts_the_websocket_headers_first_and_keeps_the_others() {
        let mut request = "ws://example.com:9000/feed?x=1".into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_static("Bearer t"));
        let (bytes, key) = request_bytes(&request).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("GET /feed?x=1 HTTP/1.1\r\nHost: example.com:9000\r\nConnection: Upgrade\r\n"));
        assert!(text.contains(&format!("Sec-WebSocket-Key: {key}\r\n")));
        assert!(text.contains("authorization: Bearer t\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(text.matches("Host:").count(), 1);
    }

    #[test]
    fn a_response_head_is_parsed_once_complete_and_checked() {
        let request = "ws://example.com/".into_client_request().unwrap();
        let (_, key) = request_bytes(&request).unwrap();
        let accept = derive_accept_key(key.as_bytes());
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\nhi"
        );
        assert!(parse_response(&head.as_bytes()[..20]).unwrap().is_none());
        let (size, response) = parse_response(head.as_bytes()).unwrap().unwrap();
        assert_eq!(size, head.len() - 2);
        verify(&response, &key, &request).unwrap();
        let wrong = head.replace(&accept, "bm90IHRoZSBrZXk=");
        let (_, response) = parse_response(wrong.as_bytes()).unwrap().unwrap();
        assert!(matches!(
            verify(&response, &key, &request),
            Err(Error::Protocol(ProtocolError::SecWebSocketAcceptKeyMismatch))
        ));
    }
}
