//! Bad input never half-starts anything and always says what is wrong:
//! - a config file with an unknown key or section, a value of the wrong type, a bad
//!   duration, prefix or action, or broken TOML stops `scan-guard run` with exit
//!   status 2 and a message naming the file, the line and the column;
//! - a config file whose values are well-formed but do not make sense together
//!   stops it with exit status 2 and a message naming the file and the field;
//! - bad command-line input (a prefix with host bits, a non-address, a bad TTL, an
//!   unknown interface, a pin directory not on a bpffs or without an instance, an
//!   unknown flag value or subcommand) exits 2 with one sentence on stderr;
//! - none of it attaches anything to the interface or pins anything.
//!
//! `run` is always started inside the lab's target namespace on its veth, so even a
//! wrongly accepted input could only ever attach to the lab.

use std::{path::Path, process::Output};

use scan_guard_tests::{
    is_root,
    lab::{Lab, describe, scan_guard_cli},
};

/// Runs `scan-guard run --config <cfg>` on the target's veth, pins and files in
/// the lab.
fn run_with_config(lab: &Lab, cfg: &Path) -> Output {
    let pin = lab.bpffs.join("cfg");
    let events = lab.file("events", "jsonl");
    let state = lab.file("state", "json");
    lab.scan_guard_in(
        &lab.tgt.ns,
        &[
            "run",
            "--config",
            path(cfg),
            "--iface",
            &lab.tgt.iface,
            "--xdp-mode",
            "native",
            "--pin-dir",
            path(&pin),
            "--events",
            path(&events),
            "--state-file",
            path(&state),
        ],
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the kernel itself shows at the root of every bpffs (the preloaded
/// iterators), not pins.
const KERNEL_FILES: [&str; 2] = ["maps.debug", "progs.debug"];

/// Nothing attached to the target's veth and nothing pinned on the lab's bpffs.
fn assert_untouched(lab: &Lab, after: &str) {
    let link = lab.link_show(&lab.tgt);
    assert!(
        lab.xdp_prog_ids(&lab.tgt).is_empty() && !link.contains("xdp"),
        "[{}] an XDP program is attached after {after}:\n{link}",
        lab.tag
    );
    let mut pinned = Vec::new();
    let mut dirs = vec![lab.bpffs.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if d != lab.bpffs
                || !KERNEL_FILES.contains(&e.file_name().to_str().unwrap_or(""))
            {
                pinned.push(p);
            }
        }
    }
    assert!(
        pinned.is_empty(),
        "[{}] pins left after {after}: {pinned:?}",
        lab.tag
    );
}

/// Exit status 2 and exactly one line on stderr, `scan-guard: ...`, mentioning
/// every string in `mentions`; nothing on stdout.
fn assert_usage_error(out: &Output, what: &str, mentions: &[&str]) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: want exit status 2: {}",
        describe(out)
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("scan-guard: "),
        "{what}: want one line `scan-guard: ...` on stderr: {}",
        describe(out)
    );
    for m in mentions {
        assert!(
            err.contains(m),
            "{what}: the message should mention {m:?}: {}",
            describe(out)
        );
    }
    assert!(
        out.stdout.is_empty(),
        "{what}: unexpected stdout: {}",
        describe(out)
    );
}

/// Runs `run` with a config file for each case (what it shows, its contents, what
/// stderr must mention), which it must refuse: exit status 2 and stderr starting by
/// naming the file and mentioning each of those strings; nothing attached or pinned
/// after any of them. Every case runs before the failures are reported together.
fn assert_configs_refused<'a>(
    lab: &Lab,
    kind: &str,
    cases: impl Iterator<Item = (&'a str, &'a str, Vec<String>)>,
) {
    let mut failures = Vec::new();
    for (what, text, mentions) in cases {
        let cfg = lab.write_file("config", "toml", text);
        let out = run_with_config(lab, &cfg);
        let err = stderr(&out);
        let mut problems = Vec::new();
        if out.status.code() != Some(2) {
            problems.push("exit status is not 2".to_owned());
        }
        if !err.starts_with(&format!("scan-guard: config file {}", cfg.display())) {
            problems.push("stderr does not start by naming the file".to_owned());
        }
        for m in &mentions {
            if !err.contains(m.as_str()) {
                problems.push(format!("stderr does not mention {m:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{what} ({text:?}): {}\n{}",
                problems.join("; "),
                describe(&out)
            ));
        }
        assert_untouched(lab, &format!("a config file with {what}"));
    }
    assert!(
        failures.is_empty(),
        "[{}] {kind}:\n{}",
        lab.tag,
        failures.join("\n")
    );
}

#[test]
fn malformed_config_files_stop_run_with_exit_2_naming_file_line_and_column() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let lab = Lab::new("bad-config");
    // (what, file, line, column, words the message must contain)
    let cases: &[(&str, &str, u32, u32, &[&str])] = &[
        (
            "unknown key",
            "[blocking]\nttl = [\"3s\"]\nbogus_key = 1\n",
            3,
            1,
            &["bogus_key"],
        ),
        (
            "unknown section",
            "[detection]\nwindow = \"30s\"\n\n[blokking]\nttl = [\"3s\"]\n",
            4,
            2,
            &["blokking"],
        ),
        (
            "wrong type",
            "[detection]\nscore_threshold = \"lots\"\n",
            2,
            19,
            &["lots"],
        ),
        (
            "bad duration",
            "[blocking]\nttl = [\"10m\", \"ten\"]\n",
            2,
            7,
            &["ten"],
        ),
        (
            "prefix with host bits",
            "# never block the office\n[blocking]\nnever_block = [\"10.0.0.5/24\"]\n",
            3,
            15,
            &["10.0.0.5/24", "10.0.0.0/24"],
        ),
        (
            "unknown flag action",
            "[invalid_flags]\nnull = \"reject\"\n",
            2,
            8,
            &["reject"],
        ),
        ("broken TOML", "[blocking\nttl = [\"3s\"]\n", 1, 10, &[]),
    ];
    assert_configs_refused(
        &lab,
        "malformed config files",
        cases.iter().map(|&(what, text, line, col, words)| {
            // The line exactly; the column as the TOML parser places it (where the
            // offending key or value starts).
            let mut mentions = vec![format!("line {line}, column {col}")];
            mentions.extend(words.iter().map(|w| (*w).to_owned()));
            (what, text, mentions)
        }),
    );
}

#[test]
fn inconsistent_config_values_stop_run_with_exit_2_naming_file_and_field() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let lab = Lab::new("bad-values");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "scanner_success above benign_success",
            "[slow_scan]\nscanner_success = 0.9\n",
            &["scanner_success"],
        ),
        (
            "zero TTL step",
            "[blocking]\nttl = [\"10m\", \"0s\"]\n",
            &["blocking.ttl"],
        ),
        (
            "every trigger off",
            "[detection]\nscore_threshold = 0\nsweep_threshold = 0\n",
            &["score_threshold", "sweep_threshold"],
        ),
        (
            "slow-scan threshold not above 1",
            "[slow_scan]\nthreshold = 0.5\n",
            &["threshold"],
        ),
        (
            "the same events place twice",
            "[output]\nevents = [\"journal\", \"journal\"]\n",
            &["output.events", "twice"],
        ),
    ];
    assert_configs_refused(
        &lab,
        "inconsistent config files",
        cases.iter().map(|&(what, text, words)| {
            (what, text, words.iter().map(|w| (*w).to_owned()).collect())
        }),
    );
}

#[test]
fn bad_command_line_input_exits_2_with_one_sentence() {
    assert!(
        is_root(),
        "the lab tests need root (namespaces, XDP, bpffs)"
    );
    let lab = Lab::new("bad-cli");
    // An empty directory on the lab's bpffs: a valid place, but no instance there.
    let empty = lab.bpffs.join("empty");
    std::fs::create_dir_all(&empty).expect("empty pin dir");
    let empty_s = path(&empty).to_owned();
    let no_bpffs = lab.dir.join("not-bpffs");
    let no_bpffs_s = path(&no_bpffs).to_owned();

    // Control commands: the operand is checked before anything is opened.
    let control: &[(&[&str], &[&str])] = &[
        (
            &["block", "10.0.0.5/24"],
            &["10.0.0.5/24", "host bits", "10.0.0.0/24"],
        ),
        (&["block", "nonsense"], &["nonsense"]),
        (&["block", "10.0.0.5", "--ttl", "ten"], &["ten"]),
        (&["block", "10.0.0.0/33"], &["10.0.0.0/33"]),
        (&["unblock", "10.0.0.256"], &["10.0.0.256"]),
        (&["allow", "fd00::1/129"], &["fd00::1/129"]),
        (&["list"], &["no scan-guard instance", &empty_s]),
        (&["stats", "--json"], &["no scan-guard instance"]),
    ];
    for (args, mentions) in control {
        let mut full = args.to_vec();
        full.extend(["--pin-dir", &empty_s]);
        let out = scan_guard_cli(&full);
        assert_usage_error(
            &out,
            &format!("[{}] scan-guard {}", lab.tag, full.join(" ")),
            mentions,
        );
    }

    // `run` with a bad interface or pin directory, inside the target namespace.
    let tgt_if = lab.tgt.iface.clone();
    let inst = lab.bpffs.join("inst");
    let inst_s = path(&inst).to_owned();
    let runs: &[(&[&str], &[&str])] = &[
        (
            &["run", "--iface", "doesnotexist0", "--pin-dir", &inst_s],
            &["doesnotexist0"],
        ),
        (
            &["run", "--iface", &tgt_if, "--pin-dir", &no_bpffs_s],
            &["not on a bpffs", &no_bpffs_s],
        ),
    ];
    for (args, mentions) in runs {
        let out = lab.scan_guard_in(&lab.tgt.ns, args);
        assert_usage_error(
            &out,
            &format!(
                "[{}] scan-guard {} (in {})",
                lab.tag,
                args.join(" "),
                lab.tgt.ns
            ),
            mentions,
        );
        assert_untouched(&lab, &format!("scan-guard {}", args.join(" ")));
    }
    assert!(
        !no_bpffs.exists(),
        "[{}] run created {} although it is not on a bpffs",
        lab.tag,
        no_bpffs.display()
    );

    // Argument syntax (clap): exit 2 and a message naming the problem.
    let syntax: &[(&[&str], &str)] = &[
        (&["run"], "--iface"),
        (&["run", "--iface", &tgt_if, "--xdp-mode", "turbo"], "turbo"),
        (&["frobnicate"], "frobnicate"),
        (&["block"], "<TARGET>"),
    ];
    for (args, mention) in syntax {
        let out = lab.scan_guard_in(&lab.tgt.ns, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "[{}] scan-guard {}: {}",
            lab.tag,
            args.join(" "),
            describe(&out)
        );
        assert!(
            stderr(&out).contains(mention),
            "[{}] scan-guard {}: the message should mention {mention:?}: {}",
            lab.tag,
            args.join(" "),
            describe(&out)
        );
        assert_untouched(&lab, &format!("scan-guard {}", args.join(" ")));
    }
}
