//! BENCHMARKS.md and its PNG charts, generated from `results.json`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use plotters::{
    coord::ranged1d::SegmentValue,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{flood, results::Results, throughput};

const SG: RGBColor = RGBColor(0x1f, 0x6f, 0xb4);
const BASE: RGBColor = RGBColor(0x9a, 0x9a, 0x9a);
const OTHER: RGBColor = RGBColor(0xe0, 0x8a, 0x1e);
const NETFILTER: RGBColor = RGBColor(0xb8, 0x3b, 0x3b);
const GOAL: RGBColor = RGBColor(0xc0, 0x10, 0x10);
const GOAL2: RGBColor = RGBColor(0x7b, 0x2c, 0xbf);

/// TrueType fonts tried for chart text, in order (Debian's fonts-dejavu-core first).
const FONTS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
];

/// Registers a system font for plotters once; Err names what is missing.
fn font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = FONTS
            .iter()
            .find(|p| Path::new(p).is_file())
            .ok_or_else(|| {
                format!(
                    "no TrueType font found for the chart text (looked for {}; Debian package \
                 fonts-dejavu-core)",
                    FONTS.join(", ")
                )
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path} is not a usable font"))
    })
    .clone()
}

/// One bar of a horizontal bar chart.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub color: RGBColor,
}

/// A vertical reference line (a goal).
pub struct Marker {
    pub at: f64,
    pub label: String,
    pub color: RGBColor,
}

/// Horizontal bars, first bar on top, value written at each bar's end, legend in a
/// strip under the chart. A single bar far above the rest (more than 3x the next)
/// is cut at the edge and marked "off scale", so it does not flatten the others.
pub fn hbar_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    bars: &[Bar],
    legend: &[(&str, RGBColor)],
    markers: &[Marker],
    fmt: &dyn Fn(f64) -> String,
) -> Result<(), String> {
    font()?;
    let n = bars.len();
    if n == 0 {
        return Err("nothing to draw".into());
    }
    let longest = bars
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(10);
    let label_px = (longest as u32 * 8 + 24).clamp(120, 520);
    let legend_px = 40;
    let height = 120 + 30 * n as u32 + legend_px;
    let width = label_px + 820;
    let mut values: Vec<f64> = bars
        .iter()
        .map(|b| b.value)
        .filter(|v| v.is_finite())
        .collect();
    values.sort_by(f64::total_cmp);
    let top = values.last().copied().unwrap_or(1.0);
    let second = values.iter().rev().nth(1).copied().unwrap_or(top);
    let scale_max = if values.len() > 2 && top > 3.0 * second {
        second
    } else {
        top
    };
    let scale_max = markers
        .iter()
        .map(|m| m.at)
        .filter(|v| v.is_finite())
        .fold(scale_max, f64::max)
        .max(1e-9);
    let x_max = scale_max * 1.25;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (upper, strip) = root.split_vertically(height - legend_px);
    let labels: Vec<String> = bars.iter().rev().map(|b| b.label.clone()).collect();
    let mut chart = ChartBuilder::on(&upper)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(label_px)
        .build_cartesian_2d(0.0..x_max, (0..n).into_segmented())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_style(("sans-serif", 15))
        .x_label_style(("sans-serif", 14))
        .x_label_formatter(&|v| {
            if x_max >= 20.0 {
                format!("{v:.0}")
            } else if x_max >= 2.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            }
        })
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc(x_label)
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|x| e(&x))?;
    let value_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let inside_style = ("sans-serif", 14)
        .into_font()
        .color(&WHITE)
        .pos(Pos::new(HPos::Right, VPos::Center));
    for (i, b) in bars.iter().rev().enumerate() {
        let v = if b.value.is_finite() { b.value } else { 0.0 };
        let off_scale = v > x_max;
        let shown = v.min(x_max);
        let mut rect = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (shown, SegmentValue::Exact(i + 1)),
            ],
            b.color.filled(),
        );
        rect.set_margin(5, 5, 0, 0);
        chart
            .draw_series(std::iter::once(rect))
            .map_err(|x| e(&x))?;
        let text = if off_scale {
            Text::new(
                format!("{} (off scale) ", fmt(b.value)),
                (x_max, SegmentValue::CenterOf(i)),
                inside_style.clone(),
            )
        } else {
            Text::new(
                fmt(b.value),
                (shown + x_max * 0.006, SegmentValue::CenterOf(i)),
                value_style.clone(),
            )
        };
        chart
            .draw_series(std::iter::once(text))
            .map_err(|x| e(&x))?;
    }
    for m in markers {
        let style = ShapeStyle::from(&m.color).stroke_width(2);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (m.at, SegmentValue::Exact(0)),
                    (m.at, SegmentValue::Exact(n)),
                ],
                style,
            )))
            .map_err(|x| e(&x))?;
    }
    // Legend strip: colour boxes for the bars, short lines for the markers.
    let mut x = 16;
    let y = (legend_px / 2) as i32 - 4;
    let font = ("sans-serif", 15).into_font();
    let text_style = TextStyle::from(font.clone()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut items: Vec<(String, RGBColor, bool)> = legend
        .iter()
        .map(|(l, c)| (l.to_string(), *c, false))
        .collect();
    items.extend(markers.iter().map(|m| (m.label.clone(), m.color, true)));
    for (label, color, line) in items {
        if line {
            strip
                .draw(&PathElement::new(
                    vec![(x, y), (x + 18, y)],
                    ShapeStyle::from(&color).stroke_width(3),
                ))
                .map_err(|x| e(&x))?;
        } else {
            strip
                .draw(&Rectangle::new(
                    [(x, y - 7), (x + 16, y + 7)],
                    color.filled(),
                ))
                .map_err(|x| e(&x))?;
        }
        strip
            .draw(&Text::new(label.clone(), (x + 24, y), text_style.clone()))
            .map_err(|x| e(&x))?;
        let w = font
            .box_size(&label)
            .map(|(w, _)| w as i32)
            .unwrap_or(8 * label.len() as i32);
        x += 24 + w + 28;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

fn f1(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".into()
    }
}

fn f2(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "-".into()
    }
}

fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}x")
    } else {
        "-".into()
    }
}

fn entries(n: Option<u32>) -> String {
    match n {
        None => "-".into(),
        Some(n) if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        Some(n) if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        Some(n) => n.to_string(),
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1024.0 / 1024.0)
}

/// Writes the charts into `charts` and returns (file name, what) of those drawn,
/// plus notes for those that could not be.
pub fn charts(r: &Results, charts: &Path) -> (Vec<(String, String)>, Vec<String>) {
    let mut made = Vec::new();
    let mut notes = Vec::new();
    if let Err(e) = std::fs::create_dir_all(charts) {
        notes.push(format!(
            "charts not written: creating {}: {e}",
            charts.display()
        ));
        return (made, notes);
    }
    let mut draw = |file: &str, what: &str, res: Result<(), String>| match res {
        Ok(()) => made.push((file.to_string(), what.to_string())),
        Err(e) => notes.push(format!("chart {file} not drawn: {e}")),
    };
    if let Some(pp) = &r.per_packet {
        let floor = pp
            .rows
            .iter()
            .find(|x| x.program == "empty XDP_PASS")
            .map_or(f64::NAN, |x| x.ns);
        let bars: Vec<Bar> = pp
            .rows
            .iter()
            .map(|x| Bar {
                label: x.name.clone(),
                value: x.ns,
                color: match x.program.as_str() {
                    "scan-guard" => SG,
                    "xdp-filter" => OTHER,
                    _ => BASE,
                },
            })
            .collect();
        let mut markers = vec![Marker {
            at: 67.0,
            label: "goal: every path <= 67 ns".into(),
            color: GOAL,
        }];
        if floor.is_finite() {
            markers.push(Marker {
                at: 1.5 * floor,
                label: format!("goal for drops: 1.5x empty ({:.0} ns)", 1.5 * floor),
                color: GOAL2,
            });
        }
        draw(
            "per-packet.png",
            "ns per packet by path (BPF_PROG_TEST_RUN)",
            hbar_chart(
                &charts.join("per-packet.png"),
                "Per-packet cost (BPF_PROG_TEST_RUN, median ns; lower is better)",
                "ns per packet",
                &bars,
                &[
                    ("scan-guard", SG),
                    ("empty XDP_PASS", BASE),
                    ("xdp-filter", OTHER),
                ],
                &markers,
                &|v| format!("{v:.0} ns"),
            ),
        );
    }
    if let Some(fl) = &r.flood {
        let bars: Vec<Bar> = fl
            .rows
            .iter()
            .filter(|x| x.layer != flood::RANDOM_LAYER)
            .map(|x| Bar {
                label: x.name.clone(),
                value: x.mpps,
                color: if x.name.starts_with("scan-guard") {
                    SG
                } else if x.layer == "netfilter" {
                    NETFILTER
                } else if x.name == flood::EMPTY_DROP {
                    BASE
                } else {
                    OTHER
                },
            })
            .collect();
        let mut markers = Vec::new();
        if let Some(e) = fl.rows.iter().find(|x| x.name == flood::EMPTY_DROP) {
            markers.push(Marker {
                at: 0.85 * e.mpps,
                label: format!("goal: 85% of empty XDP_DROP = {:.1} Mpps", 0.85 * e.mpps),
                color: GOAL,
            });
        }
        draw(
            "flood.png",
            "drop rate of a flood from a blocked source (live frames, one CPU)",
            hbar_chart(
                &charts.join("flood.png"),
                "Flood from a blocked source: drop rate on one CPU (higher is better)",
                "million packets per second",
                &bars,
                &[
                    ("scan-guard", SG),
                    ("empty XDP_DROP", BASE),
                    ("xdp-filter", OTHER),
                    ("netfilter", NETFILTER),
                ],
                &markers,
                &|v| format!("{v:.2} Mpps"),
            ),
        );
    }
    if let Some(t) = &r.throughput {
        let bars: Vec<Bar> = t
            .rows
            .iter()
            .map(|x| Bar {
                label: format!("{}: {}", x.mode, x.variant),
                value: x.median,
                color: match x.variant.as_str() {
                    throughput::SCAN_GUARD => SG,
                    _ => BASE,
                },
            })
            .collect();
        draw(
            "throughput.png",
            "HTTP requests per second with and without XDP programs",
            hbar_chart(
                &charts.join("throughput.png"),
                "Legitimate HTTP throughput (nginx + wrk, median; higher is better)",
                "requests per second",
                &bars,
                &[
                    ("scan-guard attached", SG),
                    ("no XDP / empty XDP_PASS", BASE),
                ],
                &[],
                &|v| format!("{v:.0}/s"),
            ),
        );
    }
    if let Some(ops) = &r.blocklist_ops {
        let bars: Vec<Bar> = ops
            .rows
            .iter()
            .map(|x| Bar {
                label: x.name.clone(),
                value: x.secs,
                color: if x.name.starts_with("scan-guard") {
                    SG
                } else {
                    NETFILTER
                },
            })
            .collect();
        draw(
            "blocklist-ops.png",
            "time to put the blocklist in place",
            hbar_chart(
                &charts.join("blocklist-ops.png"),
                &format!(
                    "Putting {} blocks in place (seconds; lower is better)",
                    entries(Some(ops.entries))
                ),
                "seconds",
                &bars,
                &[("scan-guard", SG), ("nftables / ipset", NETFILTER)],
                &[],
                &|v| format!("{v:.3} s"),
            ),
        );
    }
    (made, notes)
}

fn rel_link(md_dir: &Path, charts: &Path, file: &str) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (d, c) = (abs(md_dir), abs(charts));
    match c.strip_prefix(&d) {
        Ok(rel) => rel.join(file).to_string_lossy().into_owned(),
        Err(_) => c.join(file).to_string_lossy().into_owned(),
    }
}

/// The run's main findings, computed from its numbers.
pub fn highlights(r: &Results) -> Vec<String> {
    let mut h = Vec::new();
    if let Some(pp) = &r.per_packet {
        let row = |name: &str| pp.rows.iter().find(|x| x.name == name);
        let sg: Vec<_> = pp
            .rows
            .iter()
            .filter(|x| x.program == "scan-guard")
            .collect();
        if let (Some(e), Some(fast), Some(slow)) = (
            row(super::cost::EMPTY_PASS),
            sg.iter().min_by(|a, b| a.ns.total_cmp(&b.ns)),
            sg.iter()
                .filter(|x| !x.name.contains("new_source"))
                .max_by(|a, b| a.ns.total_cmp(&b.ns)),
        ) {
            h.push(format!(
                "Per packet, scan-guard costs {:.0} ns ({}) to {:.0} ns ({}) against {:.0} ns \
                 for the empty program",
                fast.ns, fast.name, slow.ns, slow.name, e.ns,
            ));
        }
        let new: Vec<String> = sg
            .iter()
            .filter(|x| x.name.contains("new_source"))
            .map(|x| format!("{} {:.0} ns", x.name, x.ns))
            .collect();
        if !new.is_empty() {
            h.push(format!(
                "Every packet from a new source (the random-source driver, its own cost \
                 subtracted): {}",
                new.join("; ")
            ));
        }
        let drops: Vec<String> = pp
            .rows
            .iter()
            .filter(|x| x.name.starts_with("blocked_exact ("))
            .map(|x| format!("{:.0} ns with {}", x.ns, entries(x.entries)))
            .collect();
        if !drops.is_empty() {
            h.push(format!(
                "A blocked source's packet is dropped in {} blocklist entries (hash lookup keyed \
                 by the address); xdp-filter's hash lookup: {}",
                drops.join(", "),
                pp.rows
                    .iter()
                    .filter(|x| x.program == "xdp-filter" && x.verdict == "drop")
                    .map(|x| format!("{:.0} ns with {}", x.ns, entries(x.entries)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if let Some(fl) = &r.flood {
        let list: Vec<String> = fl
            .rows
            .iter()
            .map(|x| format!("{} {:.2}", x.name, x.mpps))
            .collect();
        if list.is_empty() {
            h.push(format!(
                "Flood drop rate: not measured in this run ({})",
                if fl.notes.is_empty() {
                    "no flood row".to_string()
                } else {
                    fl.notes.join("; ")
                }
            ));
        } else {
            h.push(format!(
                "Flood drop rate on one CPU, Mpps: {}",
                list.join("; ")
            ));
        }
    }
    if let Some(t) = &r.throughput {
        let list: Vec<String> = t
            .rows
            .iter()
            .filter(|x| x.variant != throughput::NO_XDP)
            .map(|x| {
                format!(
                    "{} with {}: {:+.1}%",
                    x.mode,
                    x.variant,
                    100.0 * (x.vs_no_xdp - 1.0)
                )
            })
            .collect();
        h.push(format!(
            "HTTP requests/s against no XDP program: {}",
            list.join("; ")
        ));
    }
    if let Some(sc) = &r.scale {
        let get = |k: &str| sc.stats_delta.get(k).copied().unwrap_or(0);
        let contacts = get("contacts") + get("contacts_lost");
        h.push(format!(
            "{} spoofed sources: the scan was {}; the controller used {:.0}% of a CPU; {} of {} \
             first-contact records ({:.0}%) and {} events were lost; maps hold {}",
            entries(Some(sc.sources)),
            if sc.nmap_caught {
                "still caught"
            } else {
                "NOT caught"
            },
            sc.controller_cpu_percent,
            get("contacts_lost"),
            contacts,
            100.0 * get("contacts_lost") as f64 / contacts.max(1) as f64,
            get("events_lost"),
            mib(sc.memlock_total_bytes)
        ));
    }
    if let Some(ops) = &r.blocklist_ops {
        let list: Vec<String> = ops
            .rows
            .iter()
            .map(|x| format!("{} {:.2} s", x.name, x.secs))
            .collect();
        h.push(format!(
            "{} blocks: {}",
            entries(Some(ops.entries)),
            list.join("; ")
        ));
        let row = |part: &str| ops.rows.iter().find(|x| x.name.contains(part));
        if let (Some(full), Some(tick)) = (row("steady-state"), row("between full passes")) {
            h.push(format!(
                "With {} blocks a full pass over the blocklist maps takes {:.2} s (every 30 s, \
                 and after a control command); the ticks in between take {:.4} s ({:.0}x less)",
                entries(Some(ops.entries)),
                full.secs,
                tick.secs,
                full.secs / tick.secs.max(1e-9)
            ));
        }
    }
    h
}

/// BENCHMARKS.md text (charts drawn first, into `charts_dir`).
pub fn markdown(r: &Results, md_path: &Path, charts_dir: &Path) -> String {
    let (made, chart_notes) = charts(r, charts_dir);
    let md_dir = md_path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let md_dir = if md_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        md_dir
    };
    let img = |file: &str| -> String {
        made.iter()
            .find(|(f, _)| f == file)
            .map(|(f, what)| format!("![{what}]({})\n\n", rel_link(&md_dir, charts_dir, f)))
            .unwrap_or_default()
    };
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by `cargo xtask bench{}` on {} (whole run: {:.1} min). Every number on this \
         page comes from that one run on the machine below, and every ratio compares programs \
         measured in that same run. Regenerate with the same command; do not edit by hand. \
         How each part is measured: [docs/benchmarks.md](docs/benchmarks.md).\n",
        if r.smoke { " --smoke" } else { "" },
        m.date_utc,
        r.wall_secs / 60.0
    );
    if r.smoke {
        let _ = writeln!(
            s,
            "> **Smoke run**: tiny sizes to check that the benchmark code works. The numbers \
             below are not meaningful.\n"
        );
    }
    let busy = |l: &str| {
        l.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.5 * m.logical_cpus as f64)
    };
    if busy(&m.loadavg_start) || busy(&m.loadavg_end) {
        let _ = writeln!(
            s,
            "> **The machine was busy during this run** (load average {} at start, {} at end, \
             {} logical CPUs): other work shared the CPUs, so absolute numbers are noisier \
             and lower than on an idle machine; ratios between programs measured side by side \
             hold up better than absolute values.\n",
            m.loadavg_start, m.loadavg_end, m.logical_cpus
        );
    }
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| CPU | {} |", m.cpu_model);
    let _ = writeln!(
        s,
        "| Logical CPUs | {} (measuring thread pinned to CPU {}) |",
        m.logical_cpus, m.bench_cpu
    );
    let _ = writeln!(s, "| Kernel | {} |", m.kernel);
    let _ = writeln!(s, "| Memory | {:.1} GiB |", m.memory_gib);
    let _ = writeln!(s, "| Date (UTC) | {} |", m.date_utc);
    let _ = writeln!(
        s,
        "| Load average (1/5/15 min) | {} at start, {} at end |",
        m.loadavg_start, m.loadavg_end
    );
    let _ = writeln!(s, "| kernel.bpf_stats_enabled | {} |", m.bpf_stats_enabled);
    for (tool, v) in &m.tools {
        let _ = writeln!(s, "| {tool} | {v} |");
    }
    let _ = writeln!(s);

    let _ = writeln!(s, "## Goals\n");
    let _ = writeln!(s, "| Goal | Measured | Met |\n|---|---|---|");
    // Judged again from the numbers, so a report of older results uses today's rules.
    for g in &super::goals::goals(r) {
        let met = match g.met {
            Some(true) => "**met**",
            Some(false) => "**missed**",
            None if g.measured.starts_with("inconclusive") => "**inconclusive**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {} | {} | {met} |", g.goal, g.measured);
    }
    let _ = writeln!(s);

    let hl = highlights(r);
    if !hl.is_empty() {
        let _ = writeln!(s, "## Highlights\n");
        for x in hl {
            let _ = writeln!(s, "- {x}.");
        }
        let _ = writeln!(s);
    }

    if let Some(pp) = &r.per_packet {
        let _ = writeln!(s, "## 1. Per-packet cost\n");
        let _ = writeln!(
            s,
            "BPF_PROG_TEST_RUN on the program loaded in the kernel (not attached), {} runs per \
             call, {} rounds with all cases of a group measured round-robin; the table shows \
             the median of the kernel's mean ns per run (it reports whole nanoseconds), with \
             min and max over rounds. The empty XDP_PASS program is the floor; xdp-filter is \
             Debian's xdp-tools filter with a comparable source-address rule. Blocklist entries \
             expire (as the controller writes them); each blocked row has its own program \
             instance whose blocklist holds exactly that many entries (IPv4 rows: 95% random \
             IPv4 hosts, 5% /24 prefixes; IPv6 rows: 95% random IPv6 hosts, 5% /64s; plus \
             the matching entry), laid out as the controller lays it out: hosts, source \
             prefixes and /24s (the IPv4 aggregate length) in the per-family hash maps, the \
             blocked_prefix row's /16 and the blocked_prefix_v6 row's /40 in the LPM trie; \
             the kernel asks these maps only for a source whose /16 (IPv6: first 16 bits) \
             holds a block (presence bits), and a source it judged before answers from the \
             per-CPU verdict cache. With 2 entries and more, one of the IPv4 entries is a \
             host in the established-flow client's /16, so that row pays what a client near \
             blocked sources pays.\n",
            pp.repeat, pp.rounds
        );
        s.push_str(&img("per-packet.png"));
        let _ = writeln!(
            s,
            "| Path | Program | Blocklist entries | Verdict | ns/packet | min-max | x empty XDP_PASS | x xdp-filter drop |"
        );
        let _ = writeln!(s, "|---|---|---:|---|---:|---:|---:|---:|");
        for x in &pp.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {}-{} | {} | {} |",
                x.name,
                x.program,
                entries(x.entries),
                x.verdict,
                f1(x.ns),
                f1(x.min),
                f1(x.max),
                ratio(x.vs_empty),
                x.vs_xdp_filter.map_or("-".into(), ratio)
            );
        }
        let _ = writeln!(s);
        if !pp.inserts.is_empty() {
            let mut ins: Vec<String> = pp
                .inserts
                .iter()
                .filter(|(n, _, _)| *n >= 1000)
                .map(|(n, t, mem)| {
                    format!(
                        "{} entries in {:.2} s{}",
                        entries(Some(*n)),
                        t,
                        mem.map_or(String::new(), |b| format!(", {} of kernel memory", mib(b)))
                    )
                })
                .collect();
            ins.dedup();
            if !ins.is_empty() {
                let _ = writeln!(
                    s,
                    "Filling the blocklists (one bpf() call per entry; memory as memlock in \
                     fdinfo): {}.\n",
                    ins.join("; ")
                );
            }
        }
        if !pp.counters.is_empty() {
            let _ = writeln!(
                s,
                "Kernel counters after measuring (the verdict cache decides a blocked source's \
                 drop without a map lookup; the random-source rows show what a flood of new \
                 sources does):\n\n| Counter | Value |\n|---|---:|"
            );
            for (name, v) in &pp.counters {
                let _ = writeln!(s, "| {name} | {v} |");
            }
            let _ = writeln!(s);
        }
        for n in &pp.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }

    if let Some(fl) = &r.flood {
        let _ = writeln!(s, "## 2. Flood drop rate\n");
        let _ = writeln!(
            s,
            "A flood of identical {}-byte SYNs from one blocked source, injected with \
             `BPF_F_TEST_XDP_LIVE_FRAMES` (batches of {}) as if received on the lab's target \
             veth, on one CPU. XDP filters drop in the program; the netfilter rows get the \
             frames through an empty XDP_PASS program into the real receive path of the \
             namespace, where the rule drops them (each in a fresh namespace). Rate = frames / \
             wall-clock time of the call; {} round(s) of about {:.1} s after a calibration run, \
             median shown. Every drop is checked against the filter's own counter where it has one.\n",
            fl.frame_bytes, fl.batch, fl.rounds, fl.target_secs_per_round
        );
        s.push_str(&img("flood.png"));
        let _ = writeln!(
            s,
            "| Filter | Layer | Entries | Mpps | min-max | kernel ns/frame | x empty XDP_DROP | x iptables raw | drops verified |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---|");
        for x in fl.rows.iter().filter(|x| x.layer != flood::RANDOM_LAYER) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {}-{} | {} | {} | {} | {} |",
                x.name,
                x.layer,
                entries(x.entries),
                f2(x.mpps),
                f2(x.mpps_min),
                f2(x.mpps_max),
                f1(x.kernel_ns_per_frame),
                ratio(x.vs_xdp_drop),
                x.vs_iptables_raw.map_or("-".into(), ratio),
                if x.verified {
                    format!("yes ({})", x.verification)
                } else {
                    format!("**no** ({})", x.verification)
                }
            );
        }
        let _ = writeln!(s);
        let random: Vec<_> = fl
            .rows
            .iter()
            .filter(|x| x.layer == flood::RANDOM_LAYER)
            .collect();
        if !random.is_empty() {
            let _ = writeln!(
                s,
                "### Random-source SYN flood

Every frame a SYN from a new source: the \
                 random-source driver rewrites the source and tail-calls the program under \
                 test, which passes it up to the target namespace's TCP stack (SYN-ACK or \
                 cookie on the listening port 80, RST on the closed port 81). The same driver \
                 tail-calling an empty XDP_PASS program gives the host's own SYN handling rate; \
                 the goal is scan-guard at >= 95% of it.\n"
            );
            let _ = writeln!(
                s,
                "| Flood | Mpps | min-max | kernel ns/frame | x host's own rate | checked |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---|");
            let own = |name: &str| {
                let port = name.split(':').next().unwrap_or(name);
                random
                    .iter()
                    .find(|r| r.name == format!("{port}: {}", flood::VIA_EMPTY_PASS))
                    .map(|r| r.mpps)
            };
            for x in &random {
                let _ = writeln!(
                    s,
                    "| {} | {} | {}-{} | {} | {} | {} |",
                    x.name,
                    f2(x.mpps),
                    f2(x.mpps_min),
                    f2(x.mpps_max),
                    f1(x.kernel_ns_per_frame),
                    own(&x.name).map_or("-".into(), |o| ratio(x.mpps / o)),
                    x.verification
                );
            }
            let _ = writeln!(s);
        }
        for n in &fl.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }

    if let Some(t) = &r.throughput {
        let _ = writeln!(s, "## 3. Legitimate throughput\n");
        s.push_str(&img("throughput.png"));
        let _ = writeln!(
            s,
            "| Connections | XDP program on the server's veth | requests/s (median) | runs | vs no XDP | errors |"
        );
        let _ = writeln!(s, "|---|---|---:|---|---:|---:|");
        for x in &t.rows {
            let runs: Vec<String> = x
                .requests_per_sec
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {} | {:+.1}% | {} |",
                x.mode,
                x.variant,
                x.median,
                runs.join(", "),
                100.0 * (x.vs_no_xdp - 1.0),
                x.errors
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "- packets scan-guard dropped during these runs: {}",
            t.scan_guard_drops
        );
        for n in &t.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }

    if let Some(sc) = &r.scale {
        let _ = writeln!(
            s,
            "## 4. Scale: {} spoofed sources\n",
            entries(Some(sc.sources))
        );
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(
            s,
            "| Flood | {} SYNs from distinct sources in {:.2} s ({:.0} per second); {} passed, {} dropped |",
            sc.sources, sc.flood_secs, sc.flood_pps, sc.passed, sc.dropped
        );
        let _ = writeln!(
            s,
            "| Map memory (memlock of every map the controller holds, after the flood) | {} |",
            mib(sc.memlock_total_bytes)
        );
        let _ = writeln!(
            s,
            "| Controller CPU | {:.2} s user+system over {:.1} s ({:.1}% of one CPU) |",
            sc.controller_cpu_secs, sc.controller_cpu_window_secs, sc.controller_cpu_percent
        );
        let get = |k: &str| sc.stats_delta.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "| Events | {} written, {} lost |",
            get("events"),
            get("events_lost")
        );
        let _ = writeln!(
            s,
            "| First contacts | {} written, {} lost |",
            get("contacts"),
            get("contacts_lost")
        );
        let _ = writeln!(
            s,
            "| Sources | {} new, {} tracking failures, {} tracked at the end (LRU) |",
            get("new_sources"),
            get("track_failed"),
            sc.tracked_sources_after
        );
        let _ = writeln!(
            s,
            "| nmap during the flood | {} (ports 1-{}, {:.1} s): {} |",
            if sc.nmap_caught {
                "**caught**"
            } else {
                "**not caught**"
            },
            sc.nmap_ports,
            sc.nmap_secs,
            sc.nmap_detail
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| Map | type | max entries | memlock |\n|---|---:|---:|---:|"
        );
        for mm in &sc.maps {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                mm.name,
                mm.map_type,
                mm.max_entries,
                mib(mm.memlock_bytes)
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "BLOCK_META, SOURCES and the block hash maps (BLOCK_V4, BLOCK_V6) are \
             preallocated to their capacity; BLOCKLIST, ALLOWLIST and PROTECTED are LPM tries \
             whose memory grows with their entries (part 1 has a 1M-entry blocklist's size), \
             and the ring buffers and presence bitmaps are fixed.\n"
        );
        let others: Vec<String> = sc
            .stats_delta
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "Kernel counters during the flood (non-zero): {}.\n",
            others.join(", ")
        );
        for n in &sc.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }

    if let Some(ops) = &r.blocklist_ops {
        let _ = writeln!(
            s,
            "## 5. Blocklist operations ({} blocks)\n",
            entries(Some(ops.entries))
        );
        s.push_str(&img("blocklist-ops.png"));
        let _ = writeln!(
            s,
            "| Operation | seconds | us per block | |\n|---|---:|---:|---|"
        );
        for x in &ops.rows {
            let _ = writeln!(
                s,
                "| {} | {:.3} | {:.2} | {} |",
                x.name, x.secs, x.us_per_entry, x.note
            );
        }
        let _ = writeln!(s);
        for n in &ops.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(s, "## Parts of this run\n");
    let _ = writeln!(
        s,
        "| Part | Status | Seconds | Detail |\n|---|---|---:|---|"
    );
    for p in &r.parts {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {} |",
            p.part,
            p.status,
            p.secs,
            p.detail.replace('\n', " ").replace('|', "/")
        );
    }
    let _ = writeln!(s);
    if !chart_notes.is_empty() {
        for n in &chart_notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Not measurable here\n");
    let _ = writeln!(
        s,
        "- Hardware NIC line rate: no physical NIC, pktgen or hardware performance counters \
         on this machine; the flood is injected with live frames on a veth instead.\n\
         - Multi-queue scaling: every rate above is one CPU.\n"
    );
    let _ = writeln!(
        s,
        "Every packet of these benchmarks stays inside network namespaces the benchmark creates \
         (veth pairs, addresses assigned there, no default route, checked); every netfilter rule \
         and set is created inside those namespaces and goes with them."
    );
    s
}

/// Reads `results`, draws the charts into `charts_dir` and writes `md_path`.
pub fn write(results: &Path, md_path: &Path, charts_dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(results)
        .map_err(|e| format!("reading {}: {e}", results.display()))?;
    let r: Results =
        serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", results.display()))?;
    let md = markdown(&r, md_path, charts_dir);
    std::fs::write(md_path, md).map_err(|e| format!("writing {}: {e}", md_path.display()))
}
