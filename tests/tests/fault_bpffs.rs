//! Pin directories `scan-guard run` cannot use, in the lab (the controller started
//! in the target namespace on the target's veth):
//! - a pin directory that is not on a bpffs (a plain directory under /run) is a
//!   usage error: exit 2, one sentence that says so and how to fix it, and nothing
//!   applied: no XDP program on the interface, no directory created, no runtime file;
//! - a read-only bpffs (`mount -t bpf -o ro`), with or without the pin directory
//!   already in it: a runtime failure (exit 1) in one sentence that names the
//!   read-only file system and the pin directory, and nothing half-applied: no pins, no program, no
//!   runtime file; the same interface then attaches normally with a writable pin
//!   directory.

use std::{fs, path::Path, time::Instant};

use scan_guard_tests::{
    hardening::{BpffsMount, stderr_lines},
    is_root,
    lab::{ControllerOptions, Lab, XdpMode, describe},
};

fn run_with_pin_dir(lab: &Lab, pin_dir: &Path) -> std::process::Output {
    let state = lab.file("state", "json");
    let events = lab.file("events", "jsonl");
    lab.scan_guard_in(
        &lab.tgt.ns,
        &[
            "run",
            "--iface",
            &lab.tgt.iface,
            "--pin-dir",
            pin_dir.to_str().expect("UTF-8"),
            "--state-file",
            state.to_str().expect("UTF-8"),
            "--events",
            events.to_str().expect("UTF-8"),
        ],
    )
}

/// Nothing of an instance exists for `pin_dir` and the interface carries no program.
fn nothing_applied(lab: &Lab, pin_dir: &Path, what: &str) {
    let progs = lab.xdp_prog_ids(&lab.tgt);
    assert!(
        progs.is_empty(),
        "[{}] {what}: XDP program(s) {progs:?} left on the interface:\n{}",
        lab.tag,
        lab.link_show(&lab.tgt)
    );
    assert!(
        scan_guard::kernel::instance::read(pin_dir).is_none(),
        "[{}] {what}: a runtime file for {} was written",
        lab.tag,
        pin_dir.display()
    );
}

/// Exactly one non-empty line on stderr, `scan-guard: ...`, containing every needle
/// (case-insensitive).
fn one_sentence(lab: &Lab, out: &std::process::Output, needles: &[&str], what: &str) -> String {
    let lines = stderr_lines(out);
    assert_eq!(
        lines.len(),
        1,
        "[{}] {what}: want one line on stderr: {}",
        lab.tag,
        describe(out)
    );
    let line = &lines[0];
    assert!(
        line.starts_with("scan-guard: "),
        "[{}] {what}: {line}",
        lab.tag
    );
    for n in needles {
        assert!(
            line.to_lowercase().contains(&n.to_lowercase()),
            "[{}] {what}: the message does not mention {n:?}: {line}",
            lab.tag
        );
    }
    line.clone()
}

#[test]
fn pin_dir_not_on_a_bpffs_is_a_usage_error_and_nothing_is_attached() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let lab = Lab::new("not-bpffs");
    let plain = lab.dir.join("plain");
    fs::create_dir_all(&plain).expect("plain dir");
    let pin_dir = plain.join("inst");

    let out = run_with_pin_dir(&lab, &pin_dir);
    assert_eq!(
        out.status.code(),
        Some(2),
        "[{}] a pin dir not on a bpffs: {}",
        lab.tag,
        describe(&out)
    );
    let line = one_sentence(
        &lab,
        &out,
        &[
            "not on a bpffs",
            "mount -t bpf",
            pin_dir.to_str().expect("UTF-8"),
        ],
        "pin dir not on a bpffs",
    );
    assert!(
        !pin_dir.exists(),
        "[{}] the pin directory was created anyway",
        lab.tag
    );
    nothing_applied(&lab, &pin_dir, "pin dir not on a bpffs");
    eprintln!("[{}] {line} ({:.1} s)", lab.tag, t0.elapsed().as_secs_f64());
}

#[test]
fn read_only_bpffs_fails_in_one_sentence_and_leaves_nothing_behind() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let t0 = Instant::now();
    let lab = Lab::new("ro-bpffs");

    // A read-only bpffs without the pin directory: it cannot be created.
    let ro = BpffsMount::new(&lab.dir.join("ro-empty"), &[], true);
    let pin_dir = ro.path.join("inst");
    let out = run_with_pin_dir(&lab, &pin_dir);
    assert_eq!(
        out.status.code(),
        Some(1),
        "[{}] read-only bpffs: {}",
        lab.tag,
        describe(&out)
    );
    let line1 = one_sentence(
        &lab,
        &out,
        &["read-only", pin_dir.to_str().expect("UTF-8")],
        "read-only bpffs",
    );
    assert!(
        !pin_dir.exists(),
        "[{}] a pin dir appeared on a read-only bpffs: {:?}",
        lab.tag,
        ro.entries("")
    );
    nothing_applied(&lab, &pin_dir, "read-only bpffs");

    // The pin directory exists (made while writable), the bpffs is then remounted
    // read-only: the maps cannot be pinned.
    let ro2 = BpffsMount::new(&lab.dir.join("ro-inst"), &["inst"], true);
    let pin_dir2 = ro2.path.join("inst");
    let out = run_with_pin_dir(&lab, &pin_dir2);
    assert_eq!(
        out.status.code(),
        Some(1),
        "[{}] read-only bpffs with the pin dir in it: {}",
        lab.tag,
        describe(&out)
    );
    let line2 = one_sentence(
        &lab,
        &out,
        &["read-only", pin_dir2.to_str().expect("UTF-8")],
        "read-only bpffs with the pin dir in it",
    );
    assert!(
        ro2.entries("inst").is_empty(),
        "[{}] pins left in a read-only pin dir: {:?}",
        lab.tag,
        ro2.entries("inst")
    );
    nothing_applied(&lab, &pin_dir2, "read-only bpffs with the pin dir in it");

    // Nothing stale stands in the way: a writable pin dir attaches at once.
    let c = lab.start_controller_with(&ControllerOptions::new(XdpMode::Native));
    assert_eq!(lab.xdp_prog_ids(&lab.tgt).len(), 1, "[{}]", lab.tag);
    assert!(
        lab.stop_controller(&c).success(),
        "[{}] controller exit",
        lab.tag
    );
    drop(ro2);
    drop(ro);
    eprintln!(
        "[{}] {line1} | {line2} ({:.1} s)",
        lab.tag,
        t0.elapsed().as_secs_f64()
    );
}
