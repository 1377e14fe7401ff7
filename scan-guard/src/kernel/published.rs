//! Ports the host publishes through NAT: DNAT and REDIRECT rules (Docker-style
//! published ports, NodePorts, `REDIRECT --to-ports`). The XDP program sees a
//! packet before the NAT hook rewrites its destination, so a client of port 8443
//! redirected to 443 would look like a prober of a closed port (and stealth mode
//! would drop its SYN). These ports join the `LISTENING` bitmap.
//!
//! Read from `iptables-save -t nat` and `ip6tables-save -t nat` (either backend)
//! and from `nft -j list ruleset` (native nftables rules); any of them may be
//! missing. A rule without a destination port publishes nothing here: it is
//! reported once, and the ports it forwards stay scored.

use std::collections::BTreeSet;

use serde_json::Value;

/// Pre-NAT destination ports of the host's DNAT and REDIRECT rules.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    pub tcp: BTreeSet<u16>,
    pub udp: BTreeSet<u16>,
    /// Rules that rewrite a destination without naming its port (not covered).
    #[serde(default)]
    pub portless_rules: usize,
}

impl Published {
    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty()
    }

    pub fn merge(&mut self, other: Published) {
        self.tcp.extend(other.tcp);
        self.udp.extend(other.udp);
        self.portless_rules += other.portless_rules;
    }

    fn add(&mut self, proto: Option<&str>, ports: &[(u16, u16)]) {
        if ports.is_empty() {
            self.portless_rules += 1;
            return;
        }
        // A port match without a protocol (nft `th dport`) covers both.
        let sets: Vec<&mut BTreeSet<u16>> = match proto {
            Some("tcp") => vec![&mut self.tcp],
            Some("udp") => vec![&mut self.udp],
            Some(_) => return,
            None => vec![&mut self.tcp, &mut self.udp],
        };
        for set in sets {
            for &(lo, hi) in ports {
                set.extend(lo..=hi);
            }
        }
    }
}

/// `a`, `a:b` (iptables) or `a-b` (nft) as an inclusive range.
fn port_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.split_once([':', '-']) {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => {
            let p = s.parse().ok()?;
            (p, p)
        }
    };
    (lo <= hi).then_some((lo, hi))
}

/// Published ports of an `iptables-save` / `ip6tables-save` text (every table
/// may be present; only `*nat` counts). Negated matches (`! --dport`) publish
/// nothing: they name the ports that are not rewritten.
pub fn from_iptables_save(text: &str) -> Published {
    let mut out = Published::default();
    let mut in_nat = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(table) = line.strip_prefix('*') {
            in_nat = table == "nat";
            continue;
        }
        if !in_nat || !line.starts_with("-A ") {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let target = words
            .windows(2)
            .find(|w| w[0] == "-j" || w[0] == "--jump")
            .map(|w| w[1]);
        if !matches!(target, Some("DNAT" | "REDIRECT")) {
            continue;
        }
        let mut proto = None;
        let mut ports = Vec::new();
        for (i, w) in words.iter().enumerate() {
            let negated = i > 0 && words[i - 1] == "!";
            let Some(value) = words.get(i + 1) else {
                continue;
            };
            match *w {
                "-p" | "--protocol" if !negated => proto = Some(*value),
                "--dport" | "--destination-port" if !negated => {
                    ports.extend(port_range(value));
                }
                "--dports" | "--destination-ports" if !negated => {
                    ports.extend(value.split(',').filter_map(port_range));
                }
                _ => {}
            }
        }
        out.add(proto, &ports);
    }
    out
}

/// Published ports of `nft -j list ruleset`: rules with a native `dnat` or
/// `redirect` statement, or an iptables-nft DNAT/REDIRECT target, and a
/// `tcp|udp|th dport ==` match (a number, a range or a set of them).
pub fn from_nft_json(text: &str) -> Result<Published, serde_json::Error> {
    let doc: Value = serde_json::from_str(text)?;
    let mut out = Published::default();
    let items = doc["nftables"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let Some(exprs) = rule["expr"].as_array() else {
            continue;
        };
        let rewrites = exprs.iter().any(|e| {
            e.get("dnat").is_some()
                || e.get("redirect").is_some()
                || (e["xt"]["type"] == "target"
                    && matches!(e["xt"]["name"].as_str(), Some("DNAT" | "REDIRECT")))
        });
        if !rewrites {
            continue;
        }
        let mut proto = None;
        let mut ports = Vec::new();
        let mut opaque_match = false;
        for e in exprs {
            if e["xt"]["type"] == "match" {
                // An iptables match nft cannot show (multiport): iptables-save reads it.
                opaque_match = true;
            }
            let m = &e["match"];
            if m["op"] != "==" {
                continue;
            }
            let payload = &m["left"]["payload"];
            if payload["field"] != "dport" {
                continue;
            }
            proto = match payload["protocol"].as_str() {
                Some("th") => None,
                p => p,
            };
            collect_ports(&m["right"], &mut ports);
        }
        if ports.is_empty() && opaque_match {
            continue;
        }
        out.add(proto, &ports);
    }
    Ok(out)
}

fn collect_ports(v: &Value, out: &mut Vec<(u16, u16)>) {
    if let Some(p) = v.as_u64().and_then(|p| u16::try_from(p).ok()) {
        out.push((p, p));
    } else if let Some([lo, hi]) = v["range"].as_array().map(Vec::as_slice) {
        let (lo, hi) = (lo.as_u64().unwrap_or(1), hi.as_u64().unwrap_or(0));
        if let (Ok(lo), Ok(hi)) = (u16::try_from(lo), u16::try_from(hi))
            && lo <= hi
        {
            out.push((lo, hi));
        }
    } else if let Some(items) = v["set"].as_array() {
        for i in items {
            collect_ports(i, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Texts as iptables-save v1.8.9 (nf_tables) and nft 1.0.6 print them for
    // the rules the lab test installs, plus a Docker-style chain.
    const IPTABLES: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -p tcp -m tcp --dport 8443 -j REDIRECT --to-ports 443
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A PREROUTING -p udp -m multiport --dports 5000:5002,6000 -j DNAT --to-destination 10.1.1.1
-A PREROUTING -p tcp -m tcp ! --dport 25 -j DNAT --to-destination 10.1.1.2
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
";

    #[test]
    fn iptables_dnat_and_redirect_ports_are_published_and_the_rest_is_not() {
        let p = from_iptables_save(IPTABLES);
        assert_eq!(p.tcp, BTreeSet::from([8080, 8443]));
        assert_eq!(p.udp, BTreeSet::from([5000, 5001, 5002, 6000]));
        // `! --dport 25` names no published port.
        assert_eq!(p.portless_rules, 1);
    }

    #[test]
    fn nft_native_rules_sets_ranges_and_iptables_nft_targets_are_read() {
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
{"rule": {"family": "ip", "table": "nat", "chain": "PREROUTING", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8443}}, {"counter": {"packets": 0, "bytes": 0}}, {"xt": {"type": "target", "name": "REDIRECT"}}]}},
{"rule": {"family": "ip", "table": "nat", "chain": "PREROUTING", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}}, {"xt": {"type": "match", "name": "multiport"}}, {"xt": {"type": "target", "name": "DNAT"}}]}},
{"rule": {"family": "inet", "table": "mynat", "chain": "pre", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [7000, {"range": [7100, 7102]}]}}}, {"dnat": {"family": "ip", "addr": "10.0.0.9"}}]}},
{"rule": {"family": "inet", "table": "mynat", "chain": "pre", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}}, {"redirect": {"port": 5353}}]}},
{"rule": {"family": "inet", "table": "f", "chain": "in", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"accept": null}]}}]}"#;
        let p = from_nft_json(text).expect("json");
        assert_eq!(p.tcp, BTreeSet::from([7000, 7100, 7101, 7102, 8443]));
        assert_eq!(p.udp, BTreeSet::from([53]));
        assert_eq!(p.portless_rules, 0, "the multiport rule is iptables-save's");
        assert!(from_nft_json("not json").is_err());
        assert!(
            from_nft_json(r#"{"nftables": []}"#)
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn malformed_port_words_publish_nothing() {
        let p = from_iptables_save(
            "*nat\n-A PREROUTING -p tcp --dport 9:1 -j DNAT --to-destination 1.2.3.4\n-A PREROUTING -p tcp --dport\n",
        );
        assert!(p.is_empty());
        assert_eq!(p.portless_rules, 1);
    }
}
