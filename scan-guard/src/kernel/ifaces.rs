//! Which interfaces the program belongs on: the configured names and globs
//! (`eth0`, `eth*`, `bond0`) matched against the interfaces of this network
//! namespace, read anew every tick so that interfaces appearing later are found.

use std::{collections::BTreeSet, fmt, path::Path, str::FromStr};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const MAX_NAME: usize = 15;

/// A configured interface: an exact name, or a glob with `*` and `?`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfacePattern(String);

/// Why a configured interface name cannot name an interface.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("interface {name:?}: {why}")]
pub struct BadPattern {
    pub name: String,
    pub why: &'static str,
}

impl FromStr for IfacePattern {
    type Err = BadPattern;

    fn from_str(s: &str) -> Result<Self, BadPattern> {
        let bad = |why| BadPattern {
            name: s.to_owned(),
            why,
        };
        if s.is_empty() {
            return Err(bad("empty name"));
        }
        if s.len() > MAX_NAME {
            return Err(bad("longer than the kernel's 15 bytes"));
        }
        if s == "." || s == ".." || s.contains(['/', ':']) || s.chars().any(char::is_whitespace) {
            return Err(bad("not a possible interface name (no '/', ':' or spaces)"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for IfacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl IfacePattern {
    /// `*` or `?` in it: it matches whatever interfaces exist, possibly none.
    pub fn is_glob(&self) -> bool {
        self.0.contains(['*', '?'])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` is meant. Globs never match the loopback interface: a
    /// `*` is for the NICs, and loopback traffic is the host talking to itself.
    pub fn matches(&self, name: &str) -> bool {
        if !self.is_glob() {
            return self.0 == name;
        }
        name != "lo" && glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

/// `*` (any run, also empty) and `?` (one byte); everything else literal.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it is tried at next.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Parses every configured name; the first bad one is the error.
pub fn parse_all<S: AsRef<str>>(names: &[S]) -> Result<Vec<IfacePattern>, BadPattern> {
    let mut out: Vec<IfacePattern> = Vec::with_capacity(names.len());
    for n in names {
        let p: IfacePattern = n.as_ref().parse()?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The interfaces of this network namespace, by name (if_nameindex(3)).
pub fn system_interfaces() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, or null;
    // it is freed with if_freenameindex below and not used after.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return names;
        }
        let mut i = 0;
        loop {
            let entry = *list.add(i);
            if entry.if_index == 0 || entry.if_name.is_null() {
                break;
            }
            names.insert(
                std::ffi::CStr::from_ptr(entry.if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            i += 1;
        }
        libc::if_freenameindex(list);
    }
    names
}

/// The interfaces the patterns name among `existing`, sorted.
pub fn matching(patterns: &[IfacePattern], existing: &BTreeSet<String>) -> BTreeSet<String> {
    existing
        .iter()
        .filter(|name| patterns.iter().any(|p| p.matches(name)))
        .cloned()
        .collect()
}

/// The slaves of `name` when it is a bond (`None` when it is not one).
pub fn bond_slaves(name: &str) -> Option<Vec<String>> {
    let path = Path::new("/sys/class/net")
        .join(name)
        .join("bonding/slaves");
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.split_whitespace().map(str::to_owned).collect())
}

/// The name an instance gets from its interface list: its pin directory and
/// default state file are called so. One interface keeps its own name (as
/// before several were possible); several are joined with `+`, and glob
/// characters become `_`, so the name is a plain file name.
pub fn instance_name(patterns: &[IfacePattern]) -> String {
    let mut names: Vec<&str> = patterns.iter().map(IfacePattern::as_str).collect();
    names.sort_unstable();
    names
        .join("+")
        .chars()
        .map(|c| if matches!(c, '*' | '?') { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> IfacePattern {
        s.parse().expect("valid pattern")
    }

    #[test]
    fn exact_names_match_only_themselves() {
        assert!(pat("eth0").matches("eth0"));
        assert!(!pat("eth0").matches("eth00"));
        assert!(!pat("eth0").matches("eth"));
        assert!(
            pat("lo").matches("lo"),
            "loopback by its own name is allowed"
        );
    }

    #[test]
    fn globs_match_runs_and_single_bytes_but_never_loopback() {
        assert!(pat("eth*").matches("eth0"));
        assert!(pat("eth*").matches("eth"));
        assert!(pat("eth*").matches("eth1.100"));
        assert!(!pat("eth*").matches("veth0"));
        assert!(pat("*eth*").matches("veth0"));
        assert!(!pat("en?s*").matches("enp0s3"));
        assert!(pat("en??s*").matches("enp0s3"));
        assert!(pat("*").matches("bond0"));
        assert!(!pat("*").matches("lo"));
        assert!(!pat("l?").matches("lo"));
        assert!(pat("a*b*c").matches("aXXbYYc"));
        assert!(!pat("a*b*c").matches("aXXbYY"));
    }

    #[test]
    fn impossible_names_are_refused() {
        for bad in ["", "a/b", "a b", "abcdefghijklmnop", "eth0:1", ".", ".."] {
            assert!(bad.parse::<IfacePattern>().is_err(), "{bad:?} accepted");
        }
        assert!("abcdefghijklmno".parse::<IfacePattern>().is_ok());
    }

    #[test]
    fn duplicates_collapse_and_matching_is_sorted() {
        let ps = parse_all(&["eth*", "bond0", "eth*"]).expect("valid");
        assert_eq!(ps.len(), 2);
        let existing: BTreeSet<String> = ["lo", "eth1", "eth0", "bond0", "wlan0"]
            .into_iter()
            .map(String::from)
            .collect();
        let m: Vec<String> = matching(&ps, &existing).into_iter().collect();
        assert_eq!(m, ["bond0", "eth0", "eth1"]);
    }

    #[test]
    fn instance_names_are_file_names() {
        assert_eq!(instance_name(&[pat("eth0")]), "eth0");
        assert_eq!(instance_name(&[pat("eth1"), pat("eth0")]), "eth0+eth1");
        assert_eq!(instance_name(&[pat("en*"), pat("bond?")]), "bond_+en_");
    }
}
