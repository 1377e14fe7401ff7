//! The never-block set computed at start: addresses a scan "from" them must never
//! turn into a block (a spoofed scan would otherwise cut the host off): its own
//! addresses, default gateways, DNS resolvers, loopback and link-local ranges.

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use crate::base::cidr::Cidr;

/// Ranges that are never blocked whatever the host looks like.
const FIXED: [&str; 4] = ["127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10"];

/// Computes the automatic set from the live system.
pub fn automatic() -> BTreeSet<Cidr> {
    let mut set: BTreeSet<Cidr> = FIXED.iter().filter_map(|s| s.parse().ok()).collect();
    set.extend(host_addresses().into_iter().map(Cidr::host));
    set.extend(
        gateways_v4(&read("/proc/net/route"))
            .into_iter()
            .map(Cidr::host),
    );
    set.extend(
        gateways_v6(&read("/proc/net/ipv6_route"))
            .into_iter()
            .map(Cidr::host),
    );
    set.extend(
        resolvers(&read("/etc/resolv.conf"))
            .into_iter()
            .map(Cidr::host),
    );
    set
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(path)).unwrap_or_default()
}

/// Addresses configured on the host's interfaces.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        tracing::warn!("getifaddrs failed: {}", std::io::Error::last_os_error());
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: cur is a valid node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family tells its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family is AF_INET, so this is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: family is AF_INET6, so this is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: ifap came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

/// Gateways of IPv4 default routes in /proc/net/route.
pub fn gateways_v4(text: &str) -> Vec<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let (dest, gw, mask) = (cols.get(1)?, cols.get(2)?, cols.get(7)?);
            if *dest != "00000000" || *mask != "00000000" {
                return None;
            }
            let raw = u32::from_str_radix(gw, 16).ok()?;
            // The file holds the address in host byte order (little-endian here).
            (raw != 0).then(|| IpAddr::from(raw.to_le_bytes()))
        })
        .collect()
}

/// Next hops of IPv6 default routes in /proc/net/ipv6_route.
pub fn gateways_v6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let (dest, dlen, hop) = (cols.first()?, cols.get(1)?, cols.get(4)?);
            if dest.chars().any(|c| c != '0') || *dlen != "00" || hop.chars().all(|c| c == '0') {
                return None;
            }
            let mut b = [0u8; 16];
            for (i, byte) in b.iter_mut().enumerate() {
                *byte = u8::from_str_radix(hop.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(IpAddr::from(b))
        })
        .collect()
}

/// `nameserver` addresses in resolv.conf.
pub fn resolvers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == "nameserver").then_some(())?;
            // Drop a zone suffix (fe80::1%eth0).
            it.next()?.split('%').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_gateway_v4() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            gateways_v4(t),
            vec!["192.168.2.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn default_route_gateway_v6() {
        let t = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                 20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(gateways_v6(t), vec!["fe80::1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn resolv_conf() {
        let t = "# comment\nsearch example\nnameserver 192.0.2.53\nnameserver fe80::53%eth0\nnameserver bogus\n";
        assert_eq!(
            resolvers(t),
            vec![
                "192.0.2.53".parse::<IpAddr>().unwrap(),
                "fe80::53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn automatic_set_covers_loopback_and_own_addresses() {
        let set = automatic();
        let lo: Cidr = "127.0.0.1".parse().unwrap();
        assert!(set.iter().any(|c| c.contains(&lo.addr)));
        for a in host_addresses() {
            let c = Cidr::host(a);
            assert!(set.iter().any(|p| p.contains(&c.addr)), "{a}");
        }
    }
}
