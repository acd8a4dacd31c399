//! SOCKS5 (RFC 1928) `CONNECT`, with username/password authentication (RFC 1929) when the proxy URL has
//! credentials, and the target as a domain name (the proxy resolves it) or an address.

use std::net::IpAddr;

use futures_io::{AsyncRead, AsyncWrite};
use futures_util::{AsyncReadExt, AsyncWriteExt};

use super::error::Tunnel;
use super::url::Credentials;
use crate::ws::error::ProxyFailure;

const VERSION: u8 = 5;
const NO_AUTHENTICATION: u8 = 0;
const USERNAME_PASSWORD: u8 = 2;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;

/// Where the proxy is to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    /// A name the proxy resolves (at most 255 bytes).
    Name(String),
    /// An address.
    Ip(IpAddr),
}

/// The method selection message: no authentication, and username/password when there are credentials.
pub(crate) fn greeting(has_credentials: bool) -> &'static [u8] {
    if has_credentials {
        &[VERSION, 2, NO_AUTHENTICATION, USERNAME_PASSWORD]
    } else {
        &[VERSION, 1, NO_AUTHENTICATION]
    }
}

/// RFC 1929's request: version 1, then the user name and the password, each after its length.
///
/// # Errors
///
/// A user name or password over 255 bytes (the proxy URL's parser rejects them first).
pub(crate) fn auth_request(credentials: &Credentials) -> Result<Vec<u8>, Tunnel> {
    let user = u8::try_from(credentials.user.len());
    let password = u8::try_from(credentials.password.len());
    let (Ok(user_len), Ok(password_len)) = (user, password) else {
        return Err(Tunnel::Auth("a user name or password over 255 bytes".into()));
    };
    let mut bytes = Vec::with_capacity(3 + credentials.user.len() + credentials.password.len());
    bytes.push(1);
    bytes.push(user_len);
    bytes.extend_from_slice(&credentials.user);
    bytes.push(password_len);
    bytes.extend_from_slice(&credentials.password);
    Ok(bytes)
}

/// The connect request for `address:port`.
///
/// # Errors
///
/// A name over 255 bytes.
pub(crate) fn connect_request(address: &Address, port: u16) -> Result<Vec<u8>, Tunnel> {
    let mut bytes = vec![VERSION, CONNECT, 0];
    match address {
        Address::Ip(IpAddr::V4(v4)) => {
            bytes.push(1);
            bytes.extend_from_slice(&v4.octets());
        }
        Address::Ip(IpAddr::V6(v6)) => {
            bytes.push(4);
            bytes.extend_from_slice(&v6.octets());
        }
        Address::Name(name) => {
            let Ok(len) = u8::try_from(name.len()) else {
                return Err(Tunnel::protocol("a host name over the 255 bytes socks5 can carry"));
            };
            bytes.push(3);
            bytes.push(len);
            bytes.extend_from_slice(name.as_bytes());
        }
    }
    bytes.extend_from_slice(&port.to_be_bytes());
    Ok(bytes)
}

/// From the first 5 bytes of the connect reply: how many more belong to it (the bound address and port),
/// or why the tunnel is refused.
pub(crate) fn reply_rest(head: [u8; 5]) -> Result<usize, Tunnel> {
    let [version, reply, _reserved, address_type, first] = head;
    if version != VERSION {
        return Err(Tunnel::protocol(format!("reply version {version}, not 5")));
    }
    if reply != 0 {
        return Err(Tunnel::Refused(ProxyFailure::Socks { reply }));
    }
    // The fifth byte is the first of the address (or the length of a name).
    match address_type {
        1 => Ok(4 - 1 + 2),
        4 => Ok(16 - 1 + 2),
        3 => Ok(usize::from(first) + 2),
        other => Err(Tunnel::protocol(format!("unknown address type {other} in the reply"))),
    }
}

/// Runs the SOCKS5 exchange on `stream`. On success the stream is the tunnel: exactly the proxy's replies
/// have been read.
pub(crate) async fn connect<S>(
    stream: &mut S,
    address: &Address,
    port: u16,
    credentials: Option<&Credentials>,
) -> Result<(), Tunnel>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Build everything first: an unusable target fails before anything is sent.
    let request = connect_request(address, port)?;
    stream.write_all(greeting(credentials.is_some())).await?;
    stream.flush().await?;
    let mut choice = [0; 2];
    stream.read_exact(&mut choice).await?;
    match choice {
        [VERSION, NO_AUTHENTICATION] => {}
        [VERSION, USERNAME_PASSWORD] => {
            let Some(credentials) = credentials else {
                return Err(Tunnel::protocol("chose username/password, which was not offered"));
            };
            stream.write_all(&auth_request(credentials)?).await?;
            stream.flush().await?;
            let mut status = [0; 2];
            match stream.read_exact(&mut status).await {
                Ok(()) => {}
                // Some proxies (pproxy) hang up instead of answering bad credentials.
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(Tunnel::Auth(
                        "socks5: the proxy closed the connection instead of accepting the credentials in the proxy URL"
                            .into(),
                    ));
                }
                Err(error) => return Err(error.into()),
            }
            if status[1] != 0 {
                return Err(Tunnel::Auth(format!(
                    "socks5: the credentials in the proxy URL were rejected (status {})",
                    status[1]
                )));
            }
        }
        [VERSION, NO_ACCEPTABLE_METHOD] if credentials.is_none() => {
            return Err(Tunnel::Auth(
                "socks5: the proxy requires authentication, and the proxy URL has no credentials".into(),
            ));
        }
        [VERSION, NO_ACCEPTABLE_METHOD] => return Err(Tunnel::Refused(ProxyFailure::NoAcceptableMethod)),
        [VERSION, method] => {
            return Err(Tunnel::protocol(format!(
                "chose method {method}, which was not offered"
            )))
        }
        [version, _] => return Err(Tunnel::protocol(format!("reply version {version}: not a socks5 proxy"))),
    }
    stream.write_all(&request).await?;
    stream.flush().await?;
    let mut head = [0; 5];
    stream.read_exact(&mut head).await?;
    let mut rest = vec![0; reply_rest(head)?];
    stream.read_exact(&mut rest).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::ws::proxy::testing::Scripted;

    fn credentials() -> Credentials {
        Credentials {
            user: b"user".to_vec(),
            password: b"p@ss".to_vec(),
        }
    }

    #[test]
    fn the_greeting_offers_username_password_only_with_credentials() {
        assert_eq!(greeting(false), [5, 1, 0]);
        assert_eq!(greeting(true), [5, 2, 0, 2]);
    }

    #[test]
    fn the_auth_request_carries_each_field_after_its_length() {
        assert_eq!(auth_request(&credentials()).unwrap(), b"\x01\x04user\x04p@ss");
        let long = Credentials {
            user: vec![b'u'; 256],
            password: Vec::new(),
        };
        assert!(matches!(auth_request(&long), Err(Tunnel::Auth(_))));
    }

    #[test]
    fn the_connect_request_addresses_a_name_or_an_address() {
        assert_eq!(
            connect_request(&Address::Name("example.com".into()), 443).unwrap(),
            b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
        );
        assert_eq!(
            connect_request(&Address::Ip(Ipv4Addr::new(127, 0, 0, 1).into()), 80).unwrap(),
            [5, 1, 0, 1, 127, 0, 0, 1, 0, 80]
        );
        let v6 = connect_request(&Address::Ip(Ipv6Addr::LOCALHOST.into()), 1).unwrap();
        assert_eq!((v6[3], v6.len(), v6[19]), (4, 22, 1));
        assert!(connect_request(&Address::Name("a".repeat(256)), 1).is_err());
    }

    #[test]
    fn the_reply_says_how_long_it_is_or_why_the_tunnel_is_refused() {
        assert_eq!(reply_rest([5, 0, 0, 1, 127]).unwrap(), 5);
        assert_eq!(reply_rest([5, 0, 0, 4, 0]).unwrap(), 17);
        assert_eq!(reply_rest([5, 0, 0, 3, 9]).unwrap(), 11);
        assert!(matches!(
            reply_rest([5, 5, 0, 1, 0]),
            Err(Tunnel::Refused(ProxyFailure::Socks { reply: 5 }))
        ));
        assert!(matches!(
            reply_rest([4, 0, 0, 1, 0]),
            Err(Tunnel::Refused(ProxyFailure::Protocol { .. }))
        ));
        assert!(matches!(
            reply_rest([5, 0, 0, 9, 0]),
            Err(Tunnel::Refused(ProxyFailure::Protocol { .. }))
        ));
    }

    fn run(reply: &[u8], with_credentials: bool) -> (Result<(), Tunnel>, Vec<u8>) {
        let mut stream = Scripted::new(reply);
        let credentials = with_credentials.then(credentials);
        let address = Address::Name("localhost".into());
        let outcome = async_io::block_on(connect(&mut stream, &address, 8080, credentials.as_ref()));
        (outcome, stream.written)
    }

    const SUCCESS: &[u8] = &[5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];

    #[test]
    fn the_exchange_without_authentication() {
        let (outcome, written) = run(&[&[5, 0][..], SUCCESS].concat(), false);
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(written, b"\x05\x01\x00\x05\x01\x00\x03\x09localhost\x1f\x90");
    }

    #[test]
    fn the_exchange_with_username_and_password() {
        let (outcome, written) = run(&[&[5, 2, 1, 0][..], SUCCESS].concat(), true);
        assert!(outcome.is_ok(), "{outcome:?}");
        assert!(written.starts_with(b"\x05\x02\x00\x02\x01\x04user\x04p@ss\x05\x01"));
        // A proxy may choose no authentication even when credentials were offered.
        let (outcome, _) = run(&[&[5, 0][..], SUCCESS].concat(), true);
        assert!(outcome.is_ok(), "{outcome:?}");
    }

    #[test]
    fn authentication_failures_never_show_the_credentials() {
        for (reply, with_credentials) in [(&[5, 2, 1, 1][..], true), (&[5, 2][..], true), (&[5, 0xff][..], false)] {
            let (outcome, _) = run(reply, with_credentials);
            let Err(Tunnel::Auth(reason)) = outcome else {
                panic!("{reply:?}: {outcome:?}");
            };
            assert!(!reason.contains("p@ss"), "{reason}");
        }
        let (outcome, _) = run(&[5, 0xff], true);
        assert!(matches!(
            outcome,
            Err(Tunnel::Refused(ProxyFailure::NoAcceptableMethod))
        ));
    }

    #[test]
    fn a_refusal_or_a_stranger_fails_the_exchange() {
        let (outcome, _) = run(&[5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0], false);
        assert!(matches!(
            outcome,
            Err(Tunnel::Refused(ProxyFailure::Socks { reply: 4 }))
        ));
        let (outcome, _) = run(b"HTTP/1.1 400 Bad Request\r\n\r\n", false);
        assert!(matches!(outcome, Err(Tunnel::Refused(ProxyFailure::Protocol { .. }))));
        let (outcome, _) = run(&[5, 2], false);
        assert!(matches!(outcome, Err(Tunnel::Refused(ProxyFailure::Protocol { .. }))));
        let (outcome, _) = run(&[5, 0, 5, 0], false);
        assert!(matches!(outcome, Err(Tunnel::Io(_))), "cut short: {outcome:?}");
    }
}
