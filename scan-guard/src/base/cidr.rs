//! Parsing `ADDR[/LEN]` and durations from users (CLI and config file).

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
    time::Duration,
};

use scan_guard_common::addr::{Addr, V4_MAPPED_PREFIX_BITS, from_v4, mask};

/// An IPv4 or IPv6 prefix, stored in the shared 16-byte form with its prefix length
/// counted in that form (IPv4 /24 is 120).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: Addr,
    pub prefix_len: u32,
}

impl Cidr {
    pub fn host(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self {
                addr: from_v4(v4.octets()),
                prefix_len: 128,
            },
            IpAddr::V6(v6) => Self {
                addr: v6.octets(),
                prefix_len: 128,
            },
        }
    }

    pub fn from_key(addr: Addr, prefix_len: u32) -> Self {
        Self { addr, prefix_len }
    }

    /// True for IPv4 (mapped) prefixes.
    pub fn is_v4(&self) -> bool {
        self.prefix_len >= V4_MAPPED_PREFIX_BITS && scan_guard_common::addr::is_v4(&self.addr)
    }

    /// True when `addr` lies inside this prefix.
    pub fn contains(&self, addr: &Addr) -> bool {
        mask(addr, self.prefix_len) == self.addr
    }

    /// The enclosing prefix of `len` bits in the address's own family.
    pub fn widen(&self, family_len: u32) -> Self {
        let len = if self.is_v4() {
            family_len + V4_MAPPED_PREFIX_BITS
        } else {
            family_len
        };
        let len = len.min(self.prefix_len);
        Self {
            addr: mask(&self.addr, len),
            prefix_len: len,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = Ipv6Addr::from(self.addr);
        match (self.is_v4(), v6.to_ipv4_mapped()) {
            (true, Some(v4)) if self.prefix_len == 128 => write!(f, "{v4}"),
            (true, Some(v4)) => write!(f, "{v4}/{}", self.prefix_len - V4_MAPPED_PREFIX_BITS),
            _ if self.prefix_len == 128 => write!(f, "{v6}"),
            _ => write!(f, "{v6}/{}", self.prefix_len),
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (ip_text, len_text) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = ip_text
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address"))?;
        // IPv4-mapped IPv6 is IPv4 here, as in the kernel.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        let host = Self::host(ip);
        let prefix_len = if ip.is_ipv4() {
            len + V4_MAPPED_PREFIX_BITS
        } else {
            len
        };
        let net = mask(&host.addr, prefix_len);
        if net != host.addr {
            let suggestion = Self {
                addr: net,
                prefix_len,
            };
            return Err(format!(
                "{s:?} has host bits set; did you mean {suggestion}?"
            ));
        }
        Ok(Self {
            addr: net,
            prefix_len,
        })
    }
}

/// Longest duration accepted anywhere (block lifetimes, windows, memories): ten
/// years. Longer ones are typos, and would overflow time arithmetic downstream.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Parses `90s`, `10m`, `1h`, `7d` (and combinations such as `1h30m`), up to
/// ten years.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let d = humantime::parse_duration(t)
        .map_err(|e| format!("{s:?} is not a duration like 90s, 10m, 1h or 7d ({e})"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is longer than the 10-year maximum"));
    }
    Ok(d)
}

/// Formats a duration the way users type them (`10m`, `1h`, `7d`): the largest unit
/// that divides it exactly, else seconds.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, name) in [(86_400, "d"), (3_600, "h"), (60, "m")] {
        if s != 0 && s.is_multiple_of(unit) {
            return format!("{}{name}", s / unit);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_prefixes() {
        let c: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(c.prefix_len, 128);
        assert_eq!(c.to_string(), "192.0.2.7");
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(c.prefix_len, 104);
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert_eq!(c.prefix_len, 32);
        assert_eq!(c.to_string(), "2001:db8::/32");
        let c: Cidr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.2.3");
        assert!(c.is_v4());
    }

    #[test]
    fn rejects_bad_input_with_a_hint() {
        assert!(
            "10.0.0.5/24"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("did you mean 10.0.0.0/24")
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        assert!("2001:db8::/129".parse::<Cidr>().is_err());
        assert!("10.0.0.0/-1".parse::<Cidr>().is_err());
    }

    #[test]
    fn contains_and_widen() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        let host: Cidr = "10.1.2.3".parse().unwrap();
        assert!(net.contains(&host.addr));
        assert!(!net.contains(&"10.2.0.1".parse::<Cidr>().unwrap().addr));
        assert_eq!(host.widen(24).to_string(), "10.1.2.0/24");
        let h6: Cidr = "2001:db8:1:2::5".parse().unwrap();
        assert_eq!(h6.widen(64).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("ten minutes").is_err());
        assert!(parse_duration("20000y").unwrap_err().contains("10-year"));
        assert!(parse_duration("18446744073709551615s").is_err());
        assert!(parse_duration("10y").is_ok() || parse_duration("3650d").is_ok());
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(7 * 86400)), "7d");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
    }
}
