//! SIGHUP re-reads the config file: a good file is applied to the running kernel
//! program at once; a bad one is logged and changes nothing.

use std::time::{Duration, Instant};

use scan_guard_tests::lab::{ControllerOptions, Lab, XdpMode, read_lossy};

fn hup(pid: u32) {
    // SAFETY: sending a signal to a pid we started.
    let rc = unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    assert_eq!(rc, 0, "SIGHUP to {pid}");
}

fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_applies_a_good_config_and_keeps_the_running_one_on_errors() {
    let lab = Lab::new("reload");
    let cfg = lab.write_file("reload", "toml", "[detection]\nscore_threshold = 21\n");
    let mut opts = ControllerOptions::new(XdpMode::Skb);
    opts.config = Some(cfg.clone());
    let c = lab.start_controller_with(&opts);
    let threshold = || c.maps().read_config().expect("config").score_threshold;
    assert_eq!(threshold(), 21);
    let pid = lab.controller_pid(&c).expect("controller pid");

    std::fs::write(
        &cfg,
        "[detection]\nscore_threshold = 40\n[blocking]\nstealth = true\n",
    )
    .expect("write config");
    hup(pid);
    wait_for(
        Duration::from_secs(5),
        "the new threshold in the kernel",
        || threshold() == 40,
    );
    assert_ne!(
        c.maps().read_config().expect("config").policy & scan_guard_common::config::POLICY_STEALTH,
        0
    );

    std::fs::write(&cfg, "[detection]\nscore_treshold = 5\n").expect("write bad config");
    hup(pid);
    wait_for(
        Duration::from_secs(5),
        "the reload error in the log",
        || read_lossy(&c.log).contains("keeping the running configuration"),
    );
    let log = read_lossy(&c.log);
    assert!(log.contains("line 2"), "the error names the line:\n{log}");
    assert_eq!(threshold(), 40, "a bad file changes nothing");
    assert!(lab.controller_pid(&c).is_some(), "still running");
    let status = lab.stop_controller(&c);
    assert!(status.success(), "clean stop: {status:?}");
}
