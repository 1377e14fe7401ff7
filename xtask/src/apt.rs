//! System packages: present, installed with apt on Debian as root, or named as missing.

use std::path::Path;

use anyhow::{Result, bail};

use crate::{privilege, process, workspace::Workspace};

/// A Debian package and a program it provides (to check for it elsewhere).
pub struct Package {
    pub name: &'static str,
    pub program: &'static str,
}

/// Scanners, capture and load tools of the network-namespace lab.
/// Keep in sync with `.ci/run`.
pub const LAB_PACKAGES: &[Package] = &[
    // Legitimate peers of the evidence-model tests (tests/tests/evidence_topologies.rs):
    // a forwarding resolver and its upstream, passive FTP.
    Package {
        name: "dnsmasq-base",
        program: "dnsmasq",
    },
    Package {
        name: "vsftpd",
        program: "vsftpd",
    },
    // NAT rules that publish ports (read by the controller's NAT-rule watcher).
    Package {
        name: "iptables",
        program: "iptables-save",
    },
    Package {
        name: "nftables",
        program: "nft",
    },
    Package {
        name: "nmap",
        program: "nmap",
    },
    Package {
        name: "hping3",
        program: "hping3",
    },
    Package {
        name: "tcpdump",
        program: "tcpdump",
    },
    Package {
        name: "iproute2",
        program: "ip",
    },
    Package {
        name: "curl",
        program: "curl",
    },
    Package {
        name: "nginx-light",
        program: "nginx",
    },
    Package {
        name: "wrk",
        program: "wrk",
    },
    Package {
        name: "masscan",
        program: "masscan",
    },
    Package {
        name: "zmap",
        program: "zmap",
    },
    // The Local API the CrowdSec tests run (offline: see `prepare_crowdsec`).
    Package {
        name: "crowdsec",
        program: "cscli",
    },
    // A real syslog daemon for the events-to-syslog test.
    Package {
        name: "rsyslog",
        program: "rsyslogd",
    },
    // A real Prometheus scraping the controller, for the dashboard and alert tests
    // (promtool comes with it).
    Package {
        name: "prometheus",
        program: "promtool",
    },
    // A fresh Debian root and a booted systemd in it, for the install test.
    Package {
        name: "debootstrap",
        program: "debootstrap",
    },
    Package {
        name: "systemd-container",
        program: "systemd-nspawn",
    },
];

/// Makes sure `packages` are installed; `purpose` names what needs them.
pub fn ensure(ws: &Workspace, packages: &[Package], purpose: &str) -> Result<()> {
    if ws.which("dpkg-query").is_none() || ws.which("apt-get").is_none() {
        let missing: Vec<&str> = packages
            .iter()
            .filter(|p| !has_program(ws, p.program))
            .map(|p| p.program)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        bail!(
            "{purpose} needs these programs, which are not on PATH: {}; this is not a \
             Debian system (no dpkg-query/apt-get), so install them with your package manager",
            missing.join(", ")
        );
    }

    let missing = missing_debs(ws, packages)?;
    if missing.is_empty() {
        eprintln!("{purpose} packages present");
        return Ok(());
    }
    let list = missing.join(" ");
    if !privilege::is_root() {
        bail!(
            "{purpose} needs these Debian packages, which are missing: {list}; install \
             them with `sudo apt-get install --no-install-recommends {list}`"
        );
    }
    eprintln!("installing {purpose} packages: {list} (apt-get)");
    let hint = "apt-get needs network access to the Debian mirrors; fix what it reports \
                above and rerun";
    let fix = "this is a Debian system, apt-get should be there";
    process::run_quiet(ws.command("apt-get").args(["update", "-q"]), fix, hint)?;
    let _no_service_start = if missing.contains(&"crowdsec") {
        prepare_crowdsec()?
    } else {
        None
    };
    process::run_quiet(
        ws.command("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
        fix,
        hint,
    )?;
    Ok(())
}

/// What the crowdsec package's configure step must find so that nothing leaves the
/// machine: a non-empty `/etc/crowdsec/online_api_credentials.yaml` (the Debian
/// postinst then skips `cscli capi register`, its Central API registration; see
/// its comment on creating the file in advance), and, where systemd runs, a
/// `policy-rc.d` that keeps the freshly installed service (agent and Local API
/// with the Central API configured) from being started. The tests run a Local
/// API of their own with a configuration of their own.
fn prepare_crowdsec() -> Result<Option<PolicyRcD>> {
    let dir = Path::new("/etc/crowdsec");
    let capi = dir.join("online_api_credentials.yaml");
    if !capi.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            &capi,
            "# No Central API: installed by scan-guard's xtask for an offline Local API.\n",
        )?;
        eprintln!(
            "wrote {} so that installing crowdsec registers with no Central API",
            capi.display()
        );
    }
    let policy = Path::new(POLICY_RC_D);
    if Path::new("/run/systemd/system").is_dir() && !policy.exists() {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(
            policy,
            "#!/bin/sh\n# scan-guard xtask: no service starts during this install\nexit 101\n",
        )?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
        return Ok(Some(PolicyRcD));
    }
    Ok(None)
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Removes the `policy-rc.d` that [`prepare_crowdsec`] installed, when the install
/// is over (or failed).
struct PolicyRcD;

impl Drop for PolicyRcD {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
}

/// Packages that dpkg does not report as installed.
fn missing_debs(ws: &Workspace, packages: &[Package]) -> Result<Vec<&'static str>> {
    // One query for all; unknown packages only add a complaint on stderr.
    let out = process::output(
        ws.command("dpkg-query")
            .args(["-W", "-f=${Package}\t${Status}\n"])
            .args(packages.iter().map(|p| p.name)),
        "dpkg-query comes with dpkg",
    )?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let installed = |name: &str| {
        listing.lines().any(|l| {
            l.split_once('\t')
                .is_some_and(|(pkg, status)| pkg == name && status.ends_with(" installed"))
        })
    };
    Ok(packages
        .iter()
        .map(|p| p.name)
        .filter(|n| !installed(n))
        .collect())
}

fn has_program(ws: &Workspace, program: &str) -> bool {
    ws.which(program).is_some()
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(program).is_file())
}
