//! The proxy the environment names for a target, read as python websockets reads it (through
//! `urllib.request.getproxies` and `proxy_bypass`).
//!
//! - `no_proxy` first: a target it matches is dialled directly (see [`NoProxy`]).
//! - Then, for `wss://`: `wss_proxy`, `socks_proxy`, `https_proxy`, then `all_proxy`; for `ws://`: `ws_proxy`,
//!   `socks_proxy`, `https_proxy`, `http_proxy`, then `all_proxy`. The first one set wins. (`all_proxy`, as
//!   curl reads it, is an addition: python websockets does not read it.)
//! - Each name in lower case first, then in upper case (`HTTPS_PROXY`); a lower-case variable set to the
//!   empty string turns that entry off even when the upper-case one is set, as python's second pass does.
//!   When `REQUEST_METHOD` is set (a CGI script), `HTTP_PROXY` in upper case is ignored (CVE-2016-1000110,
//!   "httpoxy"), as python does.
//! - A value without a scheme is `http://` (curl's reading), but for `socks_proxy`, where it is `socks5h://`;
//!   a `socks_proxy` value starting `http://` is `socks5h://` too, as python websockets has it.

use std::ffi::OsString;

use super::no_proxy::NoProxy;
use super::url::{redact_text, ProxyUrl};
use crate::ws::error::ConnectError;

/// Where variables are read: `std::env::var_os` in use, a map in tests.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process environment.
pub(crate) fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// A proxy the environment named, and the variable that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FromEnv {
    pub(crate) proxy: ProxyUrl,
    pub(crate) variable: &'static str,
}

/// One `<key>_proxy` entry: its lower- and upper-case variable names.
struct Key {
    lower: &'static str,
    upper: &'static str,
}

const WSS: Key = Key {
    lower: "wss_proxy",
    upper: "WSS_PROXY",
};
const WS: Key = Key {
    lower: "ws_proxy",
    upper: "WS_PROXY",
};
const SOCKS: Key = Key {
    lower: "socks_proxy",
    upper: "SOCKS_PROXY",
};
const HTTPS: Key = Key {
    lower: "https_proxy",
    upper: "HTTPS_PROXY",
};
const HTTP: Key = Key {
    lower: "http_proxy",
    upper: "HTTP_PROXY",
};
const ALL: Key = Key {
    lower: "all_proxy",
    upper: "ALL_PROXY",
};
const NO: Key = Key {
    lower: "no_proxy",
    upper: "NO_PROXY",
};

/// The proxy for a connection to `host:port` (`tls`: `wss://`), if the environment names one.
///
/// # Errors
///
/// [`ConnectError::InvalidProxy`] when the variable that applies holds a URL that cannot be used (or is not
/// Unicode), naming the variable; its value is shown without what could be credentials.
pub(crate) fn proxy_for(host: &str, port: u16, tls: bool, env: Env<'_>) -> Result<Option<FromEnv>, ConnectError> {
    if let Some((no_proxy, _)) = lookup(&NO, env)? {
        if NoProxy::parse(&no_proxy).matches(host, port) {
            return Ok(None);
        }
    }
    let keys: &[&Key] = if tls {
        &[&WSS, &SOCKS, &HTTPS, &ALL]
    } else {
        &[&WS, &SOCKS, &HTTPS, &HTTP, &ALL]
    };
    for key in keys {
        let Some((value, variable)) = lookup(key, env)? else {
            continue;
        };
        let is_socks = key.lower == SOCKS.lower;
        let value = match value.strip_prefix("http://") {
            Some(rest) if is_socks => format!("socks5h://{rest}"),
            _ => value,
        };
        let default_scheme = if is_socks { "socks5h" } else { "http" };
        return match ProxyUrl::parse(&value, default_scheme) {
            Ok(proxy) => Ok(Some(FromEnv { proxy, variable })),
            Err(reason) => Err(ConnectError::InvalidProxy {
                proxy: redact_text(&value),
                reason: format!("{reason} (from ${variable})"),
            }),
        };
    }
    Ok(None)
}

/// The entry's value and the variable it came from, or `None` if unset or turned off.
fn lookup(key: &Key, env: Env<'_>) -> Result<Option<(String, &'static str)>, ConnectError> {
    let read = |variable: &'static str| -> Result<Option<String>, ConnectError> {
        match env(variable) {
            None => Ok(None),
            Some(value) => value.into_string().map(Some).map_err(|_| ConnectError::InvalidProxy {
                proxy: "<not unicode>".to_owned(),
                reason: format!("${variable} is not valid Unicode"),
            }),
        }
    };
    match read(key.lower)? {
        // Set, even to the empty string: the lower-case variable decides.
        Some(value) if value.trim().is_empty() => return Ok(None),
        Some(value) => return Ok(Some((value, key.lower))),
        None => {}
    }
    if key.upper == HTTP.upper && env("REQUEST_METHOD").is_some() {
        return Ok(None);
    }
    Ok(read(key.upper)?
        .filter(|value| !value.trim().is_empty())
        .map(|value| (value, key.upper)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ws::proxy::url::Protocol;

    /// The proxy (as `scheme://host:port`) and variable chosen for `url`'s host, port and scheme, under `vars`.
    fn chosen(vars: &[(&str, &str)], tls: bool, host: &str, port: u16) -> Option<(String, &'static str)> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), OsString::from(*value)))
            .collect();
        let env = move |name: &str| map.get(name).cloned();
        proxy_for(host, port, tls, &env)
            .expect("a valid proxy")
            .map(|found| (found.proxy.redacted(), found.variable))
    }

    fn wss(vars: &[(&str, &str)]) -> Option<(String, &'static str)> {
        chosen(vars, true, "example.com", 443)
    }

    fn ws(vars: &[(&str, &str)]) -> Option<(String, &'static str)> {
        chosen(vars, false, "example.com", 80)
    }

    fn some(proxy: &str, variable: &'static str) -> Option<(String, &'static str)> {
        Some((proxy.to_owned(), variable))
    }

    #[test]
    fn no_variable_no_proxy() {
        assert_eq!(wss(&[]), None);
        assert_eq!(ws(&[("no_proxy", "x")]), None);
    }

    #[test]
    fn wss_prefers_wss_proxy_then_socks_then_https_then_all() {
        let all = [
            ("wss_proxy", "http://wss:1"),
            ("socks_proxy", "socks5h://socks:2"),
            ("https_proxy", "http://https:3"),
            ("http_proxy", "http://http:4"),
            ("all_proxy", "http://all:5"),
        ];
        assert_eq!(wss(&all), some("http://wss:1", "wss_proxy"));
        assert_eq!(wss(&all[1..]), some("socks5h://socks:2", "socks_proxy"));
        assert_eq!(wss(&all[2..]), some("http://https:3", "https_proxy"));
        // http_proxy is not for wss://.
        assert_eq!(wss(&all[3..]), some("http://all:5", "all_proxy"));
        assert_eq!(wss(&all[3..4]), None);
    }

    #[test]
    fn ws_prefers_ws_proxy_then_socks_then_https_then_http_then_all() {
        let all = [
            ("ws_proxy", "http://ws:1"),
            ("socks_proxy", "socks5h://socks:2"),
            ("https_proxy", "http://https:3"),
            ("http_proxy", "http://http:4"),
            ("all_proxy", "socks5://all:5"),
        ];
        assert_eq!(ws(&all), some("http://ws:1", "ws_proxy"));
        assert_eq!(ws(&all[1..]), some("socks5h://socks:2", "socks_proxy"));
        assert_eq!(ws(&all[2..]), some("http://https:3", "https_proxy"));
        assert_eq!(ws(&all[3..]), some("http://http:4", "http_proxy"));
        assert_eq!(ws(&all[4..]), some("socks5://all:5", "all_proxy"));
        // wss_proxy is not for ws://.
        assert_eq!(ws(&[("wss_proxy", "http://wss:1")]), None);
    }

    #[test]
    fn lower_case_wins_and_an_empty_lower_case_variable_turns_the_entry_off() {
        assert_eq!(
            wss(&[("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "http://lower:2")]),
            some("http://lower:2", "https_proxy")
        );
        assert_eq!(
            wss(&[("HTTPS_PROXY", "http://upper:1")]),
            some("http://upper:1", "HTTPS_PROXY")
        );
        assert_eq!(wss(&[("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "")]), None);
        // An entry turned off lets the next one apply.
        assert_eq!(
            wss(&[
                ("https_proxy", ""),
                ("HTTPS_PROXY", "http://upper:1"),
                ("ALL_PROXY", "http://all:9")
            ]),
            some("http://all:9", "ALL_PROXY")
        );
        assert_eq!(ws(&[("HTTP_PROXY", "")]), None);
    }

    #[test]
    fn a_cgi_script_ignores_upper_case_http_proxy() {
        let cgi = [("REQUEST_METHOD", "GET"), ("HTTP_PROXY", "http://attacker:1")];
        assert_eq!(ws(&cgi), None);
        assert_eq!(ws(&[cgi[1]]), some("http://attacker:1", "HTTP_PROXY"));
        assert_eq!(
            ws(&[cgi[0], ("http_proxy", "http://mine:2")]),
            some("http://mine:2", "http_proxy")
        );
        assert_eq!(
            ws(&[cgi[0], ("HTTPS_PROXY", "http://mine:3")]),
            some("http://mine:3", "HTTPS_PROXY")
        );
    }

    #[test]
    fn values_without_a_scheme_are_http_and_socks_proxy_means_socks5h() {
        assert_eq!(
            wss(&[("https_proxy", "proxy:3128")]),
            some("http://proxy:3128", "https_proxy")
        );
        assert_eq!(
            wss(&[("socks_proxy", "proxy:1080")]),
            some("socks5h://proxy:1080", "socks_proxy")
        );
        assert_eq!(
            wss(&[("socks_proxy", "http://proxy:1080")]),
            some("socks5h://proxy:1080", "socks_proxy")
        );
        assert_eq!(
            wss(&[("socks_proxy", "socks5://proxy:1")]),
            some("socks5://proxy:1", "socks_proxy")
        );
        assert_eq!(
            wss(&[("all_proxy", "socks5h://u:p@proxy")]),
            some("socks5h://<redacted>@proxy:1080", "all_proxy")
        );
    }

    #[test]
    fn no_proxy_is_read_like_the_others() {
        let proxy = ("https_proxy", "http://proxy:3128");
        assert_eq!(wss(&[proxy, ("no_proxy", "example.com")]), None);
        assert_eq!(wss(&[proxy, ("NO_PROXY", ".com")]), None);
        assert_eq!(
            wss(&[proxy, ("no_proxy", "other.org"), ("NO_PROXY", "example.com")]),
            some("http://proxy:3128", "https_proxy")
        );
        assert_eq!(
            wss(&[proxy, ("no_proxy", ""), ("NO_PROXY", "*")]),
            some("http://proxy:3128", "https_proxy")
        );
        assert_eq!(wss(&[proxy, ("no_proxy", "*")]), None);
        assert_eq!(
            chosen(&[proxy, ("no_proxy", "example.com:8443")], true, "example.com", 8443),
            None
        );
        assert!(chosen(&[proxy, ("no_proxy", "example.com:8443")], true, "example.com", 443).is_some());
        assert_eq!(
            chosen(&[proxy, ("no_proxy", "127.0.0.0/8")], true, "127.0.0.1", 443),
            None
        );
        // Loopback is not excluded implicitly (python does not exclude it either).
        assert!(chosen(&[proxy], true, "127.0.0.1", 443).is_some());
        assert!(chosen(&[proxy], true, "localhost", 443).is_some());
    }

    #[test]
    fn an_unusable_value_is_an_error_naming_the_variable_without_credentials() {
        let map: HashMap<&str, &str> = [("https_proxy", "https://user:s3cret@proxy:443")].into();
        let env = move |name: &str| map.get(name).map(OsString::from);
        let error = proxy_for("example.com", 443, true, &env).expect_err("https proxies are not supported");
        let text = format!("{error} {error:?}");
        assert!(
            text.contains("$https_proxy") && text.contains("https proxies"),
            "{text}"
        );
        assert!(!text.contains("s3cret") && !text.contains("user"), "{text}");
        assert!(!error.is_retryable());
        // Only the entry that applies is parsed: a bad http_proxy does not break wss://.
        let map: HashMap<&str, &str> = [("http_proxy", "ftp://x")].into();
        let env = move |name: &str| map.get(name).map(OsString::from);
        assert!(matches!(proxy_for("example.com", 443, true, &env), Ok(None)));
    }

    #[test]
    fn the_chosen_proxy_keeps_its_protocol_and_credentials() {
        let map: HashMap<&str, &str> = [("all_proxy", "socks5://u%3A:p@127.0.0.1:9050")].into();
        let env = move |name: &str| map.get(name).map(OsString::from);
        let found = proxy_for("example.com", 443, true, &env).unwrap().unwrap();
        assert_eq!(found.proxy.protocol, Protocol::Socks5 { remote_dns: false });
        assert_eq!(found.proxy.credentials.unwrap().user, b"u:");
    }
}
