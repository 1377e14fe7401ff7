//! A state file the controller cannot use must not keep the host unprotected
//! (docs/security.md: "warning, file kept aside as `*.corrupt-<time>`, start
//! continues without it"). In the lab, for a file truncated mid-way (a real state
//! file written by the controller, cut in half), bytes that are not text at all,
//! and a well-formed file of an unknown version:
//! - `scan-guard run` starts and attaches;
//! - its log has one warning naming the file and the backup;
//! - the backup `<state>.corrupt-<unix time>` holds exactly the bad bytes;
//! - nothing from the bad file is applied (no blocks), and the controller works: a
//!   manual block is picked up and written to a fresh, valid state file.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use scan_guard_tests::{
    hardening::wait_until,
    is_root,
    lab::{ControllerOptions, Lab, XdpMode, is_event, read_lossy},
};

/// Files next to `state` named `<state name>.corrupt-<digits>`.
fn backups(state: &Path) -> Vec<PathBuf> {
    let dir = state.parent().expect("state file has a directory");
    let prefix = format!(
        "{}.corrupt-",
        state.file_name().expect("name").to_string_lossy()
    );
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read lab dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .and_then(|n| n.strip_prefix(&prefix).map(str::to_owned))
                .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    v.sort();
    v
}

/// Starts the controller on `bad` (a state file holding `bytes`) and checks the
/// documented behaviour.
fn starts_despite(lab: &Lab, what: &str, bytes: &[u8]) {
    let tag = format!("{} {what}", lab.tag);
    let state = lab.file("state", "json");
    fs::write(&state, bytes).expect("write bad state file");
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native).state_file(&state));
    lab.assert_running(&c, &format!("with a {what} state file"));
    assert_eq!(lab.xdp_prog_ids(&lab.tgt).len(), 1, "[{tag}] not attached");

    let log = read_lossy(&c.log);
    let shown = state.display().to_string();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&shown))
        .unwrap_or_else(|| panic!("[{tag}] no warning naming {shown} in the log:\n{log}"));
    let kept = backups(&state);
    assert_eq!(
        kept.len(),
        1,
        "[{tag}] want one backup {shown}.corrupt-<time>, found {kept:?}\n--- warning ---\n{warning}"
    );
    assert!(
        warning.contains(&kept[0].display().to_string()),
        "[{tag}] the warning does not name the backup {}: {warning}",
        kept[0].display()
    );
    assert_eq!(
        fs::read(&kept[0]).expect("read backup"),
        bytes,
        "[{tag}] the backup does not hold the bad file's bytes"
    );
    assert!(
        c.list().is_empty(),
        "[{tag}] blocks applied from a bad file: {:?}",
        c.list()
    );

    // The controller works and writes a fresh, valid state file.
    c.cli_ok(&["block", "10.200.1.91", "--ttl", "10m", "--reason", "after"]);
    lab.wait_event(&c, Duration::from_secs(5), "manual blocked", |e| {
        is_event(e, "blocked", "10.200.1.91")
    });
    wait_until(Duration::from_secs(5), "a valid state file", || {
        fs::read_to_string(&state)
            .ok()
            .and_then(|t| {
                serde_json::from_str::<scan_guard::enforce::state_file::SavedState>(&t).ok()
            })
            .is_some_and(|s| s.blocks.iter().any(|b| b.prefix == "10.200.1.91"))
    });
    assert_eq!(
        fs::read(&kept[0]).expect("backup"),
        bytes,
        "[{tag}] backup changed"
    );
    assert!(lab.stop_controller(&c).success(), "[{tag}] controller exit");
    eprintln!("[{tag}] {warning}");
}

/// A real state file: written by a controller that had two blocks when stopped.
fn real_state_file(lab: &Lab) -> Vec<u8> {
    let c = lab.start_controller(XdpMode::Native);
    c.cli_ok(&["block", "10.200.1.81", "--ttl", "1h", "--reason", "one"]);
    c.cli_ok(&["block", "fd00:200::81", "--ttl", "0", "--reason", "two"]);
    for a in ["10.200.1.81", "fd00:200::81"] {
        lab.wait_event(&c, Duration::from_secs(5), "manual blocked", |e| {
            is_event(e, "blocked", a)
        });
    }
    assert!(
        lab.stop_controller(&c).success(),
        "[{}] controller exit",
        lab.tag
    );
    let bytes = fs::read(&c.state_file).expect("state file written at exit");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("10.200.1.81") && text.contains("fd00:200::81"),
        "[{}] state file: {text}",
        lab.tag
    );
    bytes
}

#[test]
fn truncated_state_file_is_kept_aside_and_start_continues() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let lab = Lab::new("state-truncated");
    let full = real_state_file(&lab);
    starts_despite(&lab, "truncated", &full[..full.len() / 2]);
    eprintln!(
        "[{}] passed in {:.1} s",
        lab.tag,
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn state_file_of_binary_garbage_is_kept_aside_and_start_continues() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let lab = Lab::new("state-garbage");
    // Not UTF-8: what a disk error or a wrong file leaves behind.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
        .collect();
    starts_despite(&lab, "binary garbage", &garbage);
    eprintln!(
        "[{}] passed in {:.1} s",
        lab.tag,
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn state_file_of_an_unknown_version_is_kept_aside_and_start_continues() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let lab = Lab::new("state-version");
    let future = br#"{"version": 99, "blocks": [{"prefix": "10.200.1.82", "since_unix_s": 1, "expires_unix_s": 0, "offences": 1, "origin": "manual", "kind": "-", "reason": "future"}], "offences": [], "allows": []}"#;
    starts_despite(&lab, "unknown version", future);
    eprintln!(
        "[{}] passed in {:.1} s",
        lab.tag,
        t0.elapsed().as_secs_f64()
    );
}
