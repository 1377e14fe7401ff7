//! Where the CrowdSec Local API is: `http(s)://HOST[:PORT][/PREFIX]`, checked
//! when the configuration is read (before anything connects).

use std::fmt;

/// Where the Local API is: `http(s)://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://`.
    pub(super) tls: bool,
    /// Host name or address, without brackets.
    pub(super) host: String,
    pub(super) port: u16,
    /// `HOST:PORT` as written (brackets kept), for the `Host` header.
    pub(super) authority: String,
    /// Path prefix without a trailing slash (usually empty).
    pub(super) prefix: String,
    /// The URL as given, for messages.
    pub(super) url: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let (tls, rest) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            _ => {
                return Err(format!(
                    "{url:?} is not an http://HOST:PORT or https://HOST:PORT URL"
                ));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url:?}: expected http(s)://HOST:PORT"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the address"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{url:?}: expected :PORT after ]"))?,
                ),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains(':') && !authority.starts_with('[') {
            return Err(format!(
                "{url:?}: bad host (write IPv6 addresses as [ADDR]:PORT)"
            ));
        }
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{url:?}: bad port {p:?}"))?,
        };
        if path.contains(['?', '#']) {
            return Err(format!("{url:?}: no query or fragment expected"));
        }
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            prefix: path.trim_end_matches('/').to_string(),
            url: url.to_string(),
        })
    }

    /// The URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `https://`: needs a TLS configuration ([`Client::new`]).
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("127.0.0.1", 8080, "")
        );
        let e = Endpoint::parse("http://[::1]:8081/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("::1", 8081, "[::1]:8081")
        );
        let e = Endpoint::parse("HTTP://lapi.example/api/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("lapi.example", 80, "/api")
        );
        let e = Endpoint::parse("https://127.0.0.1:8443").unwrap();
        assert!(e.is_tls() && e.port == 8443);
        assert_eq!(Endpoint::parse("HTTPS://lapi.example").unwrap().port, 443);
        assert!(!Endpoint::parse("http://h").unwrap().is_tls());
        for bad in [
            "127.0.0.1:8080",
            "ftp://h:21",
            "https://",
            "http://",
            "http://:80",
            "http://h:0",
            "http://h:99999",
            "http://u@h:1",
            "http://::1:8080",
            "http://[::1",
            "http://h:1/x?y",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
