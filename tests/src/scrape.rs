//! Reading the controller's `--metrics` endpoint from inside the lab: a real HTTP
//! client (curl, bounded) in the namespace the controller listens in.

use std::time::{Duration, Instant};

use crate::lab::Lab;

/// The exposition text at `http://127.0.0.1:PORT/metrics` in `ns` (empty when the
/// endpoint does not answer).
pub fn scrape(lab: &Lab, ns: &str, port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let out = lab.exec_in(ns, &["curl", "-sS", "--max-time", "3", &url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `series` (name with its labels, exactly as exposed, e.g.
/// `scan_guard_crowdsec_lapi_up{role="bouncer"}`).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Scrapes (bounded, every 200 ms) until `series` satisfies `want`; panics with
/// the last scrape otherwise. Returns the value.
pub fn wait_sample(
    lab: &Lab,
    ns: &str,
    port: u16,
    series: &str,
    limit: Duration,
    want: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let text = scrape(lab, ns, port);
        if let Some(v) = sample(&text, series).filter(|v| want(*v)) {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "[lab {}] {series} not as expected within {limit:?}; last scrape:\n{text}",
                lab.tag
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
