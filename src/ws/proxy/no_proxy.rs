//! `no_proxy`: the hosts that are dialled directly even when the environment names a proxy.
//!
//! Python's `urllib.request.proxy_bypass_environment` (which python websockets uses) is the model:
//!
//! - a comma-separated list; whitespace around entries is ignored, and so are empty entries;
//! - `*` as the whole value bypasses the proxy for every host;
//! - a name matches itself and its subdomains, with or without a leading dot (`example.com` and
//!   `.example.com` both match `example.com` and `api.example.com`), case-insensitively;
//! - an entry with a port (`example.com:8080`) matches only connections to that port;
//! - loopback is not excluded implicitly: `localhost` and `127.0.0.1` use the proxy unless listed.
//!
//! Beyond python (as curl and Go do): an IP address entry (`10.1.2.3`, `::1`, `[::1]:8080`) matches that
//! address, compared as an address (`::1` is `0:0::1`) and never by suffix, and a CIDR block (`10.0.0.0/8`,
//! `fd00::/8`) matches every address in it. Only a host given as an address in the URL is compared with
//! addresses and blocks: nothing is resolved to decide.

use std::net::IpAddr;

/// A parsed `no_proxy` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NoProxy {
    /// `*`: no host uses the proxy.
    all: bool,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A host name, lower case, without leading dots.
    Name { name: String, port: Option<u16> },
    /// One address.
    Address { address: IpAddr, port: Option<u16> },
    /// A block of addresses.
    Block { network: IpAddr, prefix: u8 },
}

impl NoProxy {
    /// Parses a `no_proxy` value. Nothing is rejected: an entry that cannot match anything (a block with a
    /// prefix too long for its address, say) simply never matches.
    pub(crate) fn parse(value: &str) -> Self {
        let value = value.trim();
        if value == "*" {
            return Self {
                all: true,
                entries: Vec::new(),
            };
        }
        let entries = value
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .filter_map(Entry::parse)
            .collect();
        Self { all: false, entries }
    }

    /// Whether a connection to `host` (a name, or an address without brackets) on `port` goes direct.
    pub(crate) fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let address = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|entry| entry.matches(&host, address, port))
    }
}

impl Entry {
    fn parse(entry: &str) -> Option<Self> {
        if let Some((network, prefix)) = entry.split_once('/') {
            let network = unbracket(network).parse::<IpAddr>().ok()?;
            let prefix = prefix.parse::<u8>().ok()?;
            let max = if network.is_ipv4() { 32 } else { 128 };
            return (prefix <= max).then_some(Self::Block { network, prefix });
        }
        if let Ok(address) = unbracket(entry).parse::<IpAddr>() {
            return Some(Self::Address { address, port: None });
        }
        // `host:port`, `1.2.3.4:port` or `[v6]:port`.
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                (host, Some(port.parse::<u16>().ok()?))
            }
            _ => (entry, None),
        };
        if let Ok(address) = unbracket(host).parse::<IpAddr>() {
            return Some(Self::Address { address, port });
        }
        let name = host.trim_start_matches('.').to_ascii_lowercase();
        (!name.is_empty()).then_some(Self::Name { name, port })
    }

    fn matches(&self, host: &str, address: Option<IpAddr>, port: u16) -> bool {
        match self {
            Self::Name { name, port: wanted } => {
                let port_ok = wanted.map_or(true, |wanted| wanted == port);
                // Names match names: an address is never matched by suffix.
                let name_ok = address.is_none()
                    && (host == name
                        || host
                            .strip_suffix(name.as_str())
                            .is_some_and(|prefix| prefix.ends_with('.')));
                port_ok && name_ok
            }
            Self::Address {
                address: wanted,
                port: wanted_port,
            } => {
                address.is_some_and(|address| same_address(address, *wanted))
                    && wanted_port.map_or(true, |wanted| wanted == port)
            }
            Self::Block { network, prefix } => address.is_some_and(|address| in_block(address, *network, *prefix)),
        }
    }
}

fn unbracket(text: &str) -> &str {
    text.strip_prefix('[')
        .and_then(|text| text.strip_suffix(']'))
        .unwrap_or(text)
}

/// Equal, counting an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as its IPv4 address.
fn same_address(a: IpAddr, b: IpAddr) -> bool {
    canonical(a) == canonical(b)
}

fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn in_block(address: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (canonical(address), canonical(network)) {
        (IpAddr::V4(address), IpAddr::V4(network)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(address) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(address), IpAddr::V6(network)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(address) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bypass(no_proxy: &str, host: &str, port: u16) -> bool {
        NoProxy::parse(no_proxy).matches(host, port)
    }

    #[test]
    fn a_star_alone_bypasses_every_host() {
        assert!(bypass("*", "example.com", 443));
        assert!(bypass(" * ", "10.0.0.1", 80));
        // As python: `*` is special only as the whole value.
        assert!(!bypass("foo,*", "example.com", 443));
        assert!(!bypass("", "example.com", 443));
    }

    #[test]
    fn names_match_themselves_and_their_subdomains_with_or_without_a_dot() {
        for no_proxy in ["example.com", ".example.com", "..example.com", "EXAMPLE.com"] {
            assert!(bypass(no_proxy, "example.com", 443), "{no_proxy}");
            assert!(bypass(no_proxy, "api.Example.com", 443), "{no_proxy}");
            assert!(bypass(no_proxy, "a.b.example.com", 80), "{no_proxy}");
            assert!(!bypass(no_proxy, "notexample.com", 443), "{no_proxy}");
            assert!(!bypass(no_proxy, "example.com.evil", 443), "{no_proxy}");
        }
        assert!(bypass("other.org, example.com ,", "example.com", 443));
        assert!(bypass("localhost", "localhost", 8080));
    }

    #[test]
    fn an_entry_with_a_port_matches_that_port_only() {
        assert!(bypass("example.com:8080", "example.com", 8080));
        assert!(bypass("example.com:8080", "api.example.com", 8080));
        assert!(!bypass("example.com:8080", "example.com", 443));
        assert!(bypass("127.0.0.1:9000", "127.0.0.1", 9000));
        assert!(!bypass("127.0.0.1:9000", "127.0.0.1", 9001));
        assert!(bypass("[::1]:9000", "::1", 9000));
        assert!(!bypass("[::1]:9000", "::1", 9001));
    }

    #[test]
    fn addresses_compare_as_addresses_never_by_suffix() {
        assert!(bypass("127.0.0.1", "127.0.0.1", 80));
        assert!(bypass("::1", "::1", 80));
        assert!(bypass("::1", "[0:0::1]", 80));
        assert!(bypass("[::1]", "::1", 80));
        assert!(bypass("10.0.0.1", "::ffff:10.0.0.1", 80));
        // Python would match these by string suffix; addresses do not.
        assert!(!bypass("0.0.1", "127.0.0.1", 80));
        assert!(!bypass("1", "127.0.0.1", 80));
        // Nothing is resolved: a name is not its address.
        assert!(!bypass("127.0.0.1", "localhost", 80));
        assert!(!bypass("localhost", "127.0.0.1", 80));
    }

    #[test]
    fn cidr_blocks_match_the_addresses_in_them() {
        assert!(bypass("10.0.0.0/8", "10.200.3.4", 443));
        assert!(!bypass("10.0.0.0/8", "11.0.0.1", 443));
        assert!(bypass("192.168.1.0/24", "192.168.1.255", 443));
        assert!(!bypass("192.168.1.0/24", "192.168.2.1", 443));
        assert!(bypass("0.0.0.0/0", "8.8.8.8", 443));
        assert!(bypass("::1/128", "::1", 443));
        assert!(!bypass("::1/128", "::2", 443));
        assert!(bypass("fd00::/8", "fd12:3456::1", 443));
        assert!(bypass("[fd00::]/8", "fd12:3456::1", 443));
        assert!(bypass("::/0", "2001:db8::1", 443));
        assert!(bypass("10.0.0.0/8", "::ffff:10.1.1.1", 443));
        assert!(!bypass("10.0.0.0/8", "example.com", 443), "names are not resolved");
        assert!(!bypass("10.0.0.0/8", "fd00::1", 443));
    }

    #[test]
    fn entries_that_cannot_match_are_ignored() {
        for junk in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "nope/8",
            "host:99999",
            ".",
            ":80",
            "/",
        ] {
            let parsed = NoProxy::parse(junk);
            assert!(!parsed.matches("10.0.0.1", 80), "{junk}");
            assert!(!parsed.matches("host", 80), "{junk}");
        }
        assert!(bypass("10.0.0.0/33, example.com", "example.com", 80));
    }
}
