//! Proxy URLs: `http://[user:password@]host[:port]`, `socks5://...`, `socks5h://...`, parsed and shown without
//! their credentials.

use std::fmt;
use std::net::Ipv6Addr;

use crate::ws::upgrade::percent_decode;

/// What the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP `CONNECT`.
    Http,
    /// SOCKS5. `remote_dns`: the target's name is sent to the proxy, which resolves it (`socks5h`); otherwise
    /// it is resolved here and its address sent (`socks5`).
    Socks5 { remote_dns: bool },
}

impl Protocol {
    fn scheme(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Socks5 { remote_dns: false } => "socks5",
            Self::Socks5 { remote_dns: true } => "socks5h",
        }
    }

    /// Port 80 for HTTP (as python websockets and urllib take it), 1080 for SOCKS (its IANA port).
    fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Socks5 { .. } => 1080,
        }
    }
}

/// A proxy's user name and password, percent-decoded. Never shown.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) user: Vec<u8>,
    pub(crate) password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// A parsed proxy URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyUrl {
    pub(crate) protocol: Protocol,
    /// A host name, an IPv4 address, or an IPv6 address without its brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) credentials: Option<Credentials>,
}

impl ProxyUrl {
    /// Parses `text`; a URL without a scheme is taken with `default_scheme` (`http` for most environment
    /// variables, as curl does, `socks5h` for `socks_proxy`).
    ///
    /// `Err` is why it cannot be used; it never repeats the credentials.
    pub(crate) fn parse(text: &str, default_scheme: &str) -> Result<Self, String> {
        let text = text.trim();
        let (scheme, rest) = match text.find("://") {
            Some(at) => (&text[..at], &text[at + 3..]),
            None => (default_scheme, text),
        };
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "socks5" => Protocol::Socks5 { remote_dns: false },
            "socks5h" => Protocol::Socks5 { remote_dns: true },
            "https" => {
                return Err("https proxies (TLS to the proxy) are not supported: use http, socks5 or socks5h".into())
            }
            "socks4" | "socks4a" | "socks" => {
                return Err(format!("the scheme {scheme} is not supported: use socks5 or socks5h"));
            }
            _ => return Err("the scheme must be http, socks5 or socks5h".into()),
        };
        // As python's urlsplit: the authority ends at the first `/`, `?` or `#`.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        match tail {
            "" | "/" => {}
            _ if tail.starts_with('/') && !tail.contains(['?', '#']) => return Err("a path is meaningless".into()),
            _ => return Err("a path, query or fragment is meaningless".into()),
        }
        let (user_info, host_port) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let credentials = match user_info {
            None => None,
            Some(user_info) => {
                let Some((user, password)) = user_info.split_once(':') else {
                    return Err("a user name without a password".into());
                };
                let credentials = Credentials {
                    user: percent_decode(user),
                    password: percent_decode(password),
                };
                if protocol != Protocol::Http && (credentials.user.len() > 255 || credentials.password.len() > 255) {
                    return Err("socks5 user names and passwords have at most 255 bytes".into());
                }
                if credentials.user.is_empty() && protocol != Protocol::Http {
                    return Err("socks5 user names cannot be empty".into());
                }
                Some(credentials)
            }
        };
        let (host, port) = split_host_port(host_port)?;
        let port = match port {
            None => protocol.default_port(),
            Some(port) => port,
        };
        Ok(Self {
            protocol,
            host,
            port,
            credentials,
        })
    }

    /// `scheme://host:port`, with `<redacted>@` in place of the credentials: what errors and logs show.
    pub(crate) fn redacted(&self) -> String {
        let credentials = if self.credentials.is_some() { "<redacted>@" } else { "" };
        format!(
            "{}://{credentials}{}",
            self.protocol.scheme(),
            host_port(&self.host, self.port)
        )
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A host (a name, IPv4, or bracketed IPv6) and an optional port.
fn split_host_port(text: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err("an IPv6 address without its closing bracket".into());
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err("an invalid IPv6 address".into());
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("garbage after the IPv6 address")?),
        };
        (v6.to_owned(), port)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (text.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let bracketed = text.starts_with('[');
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if !bracketed && !host.chars().all(is_name_char) {
        return Err("an invalid host name (an IPv6 address needs brackets)".into());
    }
    let port = match port {
        None | Some("") => None,
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err("an invalid port".into()),
            Ok(port) => Some(port),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// `text`, a proxy URL that may not parse, with anything that could be a credential hidden: what precedes
/// its last `@` (after the scheme) and anything after a `?` or `#`.
pub(crate) fn redact_text(text: &str) -> String {
    let text = text.trim();
    let (scheme, rest) = match text.find("://") {
        Some(at) => (&text[..at + 3], &text[at + 3..]),
        None => ("", text),
    };
    let (user_info, rest) = match rest.rfind('@') {
        Some(at) => ("<redacted>@", &rest[at + 1..]),
        None => ("", rest),
    };
    let rest = match rest.find(['?', '#']) {
        Some(at) => format!("{}?<redacted>", &rest[..at]),
        None => rest.to_owned(),
    };
    format!("{scheme}{user_info}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProxyUrl, String> {
        ProxyUrl::parse(text, "http")
    }

    #[test]
    fn a_proxy_url_gives_its_protocol_host_and_port() {
        let proxy = parse("http://proxy.example.com:3128").unwrap();
        assert_eq!(
            (proxy.protocol, proxy.host.as_str(), proxy.port, proxy.credentials),
            (Protocol::Http, "proxy.example.com", 3128, None)
        );
        let proxy = parse("SOCKS5H://127.0.0.1:1080/").unwrap();
        assert_eq!(proxy.protocol, Protocol::Socks5 { remote_dns: true });
        assert_eq!(proxy.host, "127.0.0.1");
        let proxy = parse("socks5://[::1]:9050").unwrap();
        assert_eq!(
            (proxy.protocol, proxy.host.as_str(), proxy.port),
            (Protocol::Socks5 { remote_dns: false }, "::1", 9050)
        );
    }

    #[test]
    fn ports_default_per_protocol_and_a_missing_scheme_is_the_default_one() {
        assert_eq!(parse("http://proxy").unwrap().port, 80);
        assert_eq!(parse("socks5h://proxy").unwrap().port, 1080);
        assert_eq!(parse("http://[::1]").unwrap().port, 80);
        let bare = parse("Proxy.Example:8080").unwrap();
        assert_eq!(
            (bare.protocol, bare.host.as_str(), bare.port),
            (Protocol::Http, "proxy.example", 8080)
        );
        let socks = ProxyUrl::parse("proxy:1080", "socks5h").unwrap();
        assert_eq!(socks.protocol, Protocol::Socks5 { remote_dns: true });
    }

    #[test]
    fn credentials_are_percent_decoded_and_never_shown() {
        let proxy = parse("http://us%40er:p%3Ass%2F@proxy:3128").unwrap();
        let credentials = proxy.credentials.clone().unwrap();
        assert_eq!(credentials.user, b"us@er");
        assert_eq!(credentials.password, b"p:ss/");
        assert_eq!(proxy.redacted(), "http://<redacted>@proxy:3128");
        let debug = format!("{proxy:?}");
        assert!(!debug.contains("p:ss") && !debug.contains("us@er"), "{debug}");
        // An empty password is a password; python rejects a user name alone.
        assert_eq!(parse("http://user:@proxy").unwrap().credentials.unwrap().password, b"");
        assert!(parse("http://user@proxy").is_err());
    }

    #[test]
    fn unusable_proxy_urls_say_why() {
        for (text, reason) in [
            ("https://proxy:443", "https proxies"),
            ("socks4://proxy", "socks4 is not supported"),
            ("ftp://proxy", "the scheme must be"),
            ("http://proxy:3128/path", "path"),
            ("http://proxy:3128?x=1", "query"),
            ("http://:3128", "no host"),
            ("http://proxy:99999", "invalid port"),
            ("http://proxy:0", "invalid port"),
            ("http://proxy:port", "invalid port"),
            ("http://[::1", "closing bracket"),
            ("http://[nope]:1", "invalid IPv6"),
            ("http://pro xy:1", "invalid host"),
            ("http://a::1", "invalid host"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(reason), "{text}: {error}");
        }
        let long = "x".repeat(256);
        assert!(parse(&format!("socks5://{long}:p@proxy")).unwrap_err().contains("255"));
        assert!(
            parse(&format!("http://{long}:p@proxy")).is_ok(),
            "HTTP has no such limit"
        );
        assert!(parse("socks5://:p@proxy").unwrap_err().contains("empty"));
    }

    #[test]
    fn a_url_that_does_not_parse_is_shown_without_what_could_be_credentials() {
        assert_eq!(
            redact_text("https://user:s3cret@proxy:443"),
            "https://<redacted>@proxy:443"
        );
        assert_eq!(redact_text("http://u:pa/ss@w@rd@proxy"), "http://<redacted>@proxy");
        assert_eq!(
            redact_text("http://proxy:1/?token=s3cret"),
            "http://proxy:1/?<redacted>"
        );
        assert_eq!(redact_text("proxy:3128"), "proxy:3128");
    }

    #[test]
    fn ipv6_hosts_are_bracketed_when_shown() {
        assert_eq!(host_port("::1", 8080), "[::1]:8080");
        assert_eq!(host_port("example.com", 443), "example.com:443");
        assert_eq!(
            parse("socks5h://u:p@[::1]:1").unwrap().redacted(),
            "socks5h://<redacted>@[::1]:1"
        );
    }
}
