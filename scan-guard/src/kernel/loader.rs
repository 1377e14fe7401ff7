//! Loading the embedded object, attaching it to an interface through a pinned
//! bpf_link, re-adopting an instance left attached, and detaching.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use scan_guard_common::{PROGRAM_NAME, map_names};

use crate::{EBPF_OBJECT, base::error::usage};

/// Pinned links are called `link-<iface>` inside the pin directory: one per
/// interface the program is attached to, all sharing the same maps.
const LINK_PREFIX: &str = "link-";
/// The one link of an instance made before several interfaces were possible.
const LEGACY_LINK: &str = "link";

/// Where the link of `iface` is pinned.
pub fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("{LINK_PREFIX}{iface}"))
}

/// The interfaces with a pinned link under `pin_dir`, sorted.
pub fn pinned_links(pin_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pin_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix(LINK_PREFIX))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort_unstable();
    names
}

/// True when the instance under `pin_dir` has a link pinned (it is attached
/// somewhere, or was until its interface went away).
pub fn is_attached(pin_dir: &Path) -> bool {
    !pinned_links(pin_dir).is_empty() || pin_dir.join(LEGACY_LINK).exists()
}

/// An instance made by a version with one interface pinned its link as `link`:
/// with one configured interface it becomes that interface's link (re-adopted
/// without a gap); otherwise it is released, and the attach that follows
/// protects the interfaces of the new list.
pub fn adopt_legacy_link(pin_dir: &Path, only_iface: Option<&str>) -> Result<()> {
    let legacy = pin_dir.join(LEGACY_LINK);
    if !legacy.exists() {
        return Ok(());
    }
    match only_iface {
        Some(iface) => std::fs::rename(&legacy, link_pin(pin_dir, iface))
            .with_context(|| format!("renaming {} to the link of {iface}", legacy.display())),
        None => unpin(&legacy),
    }
}

fn unpin(path: &Path) -> Result<()> {
    match PinnedLink::from_pin(path) {
        Ok(link) => {
            let link = link
                .unpin()
                .with_context(|| format!("unpinning {}", path.display()))?;
            drop(link);
            Ok(())
        }
        Err(_) => std::fs::remove_file(path)
            .with_context(|| format!("removing stale link pin {}", path.display())),
    }
}

/// Why the maps pinned under `pin_dir` cannot be reused by this version (a
/// scan-guard with another map layout made them: a map is missing or its key
/// or value has another size, or other creation flags), or `None` (they fit,
/// or there are none).
pub fn pins_of_other_layout(pin_dir: &Path) -> Option<String> {
    if !pin_dir.join(map_names::CONFIG).exists() {
        return None;
    }
    // What this version's maps hold, from the embedded object itself.
    let object = match aya_obj::Object::parse(EBPF_OBJECT) {
        Ok(o) => o,
        Err(e) => return Some(format!("the embedded program does not parse: {e}")),
    };
    for name in map_names::ALL {
        let Some(def) = object.maps.get(name) else {
            return Some(format!("the embedded program has no map {name}"));
        };
        let (key, value) = (def.key_size(), def.value_size());
        let path = pin_dir.join(name);
        let info = match aya::maps::MapData::from_pin(&path).and_then(|m| m.info()) {
            Ok(info) => info,
            Err(_) => return Some(format!("no usable map {name}")),
        };
        let (k, v) = (info.key_size(), info.value_size());
        if (k, v) != (key, value) {
            return Some(format!(
                "map {name} holds {k}-byte keys and {v}-byte values, this version {key} and {value}"
            ));
        }
        // Creation flags say how a map may be used (BLOCK_GENERATION is
        // memory-mapped, for one).
        let (f, flags) = (info.map_flags(), def.map_flags());
        if f != flags {
            return Some(format!(
                "map {name} was made with flags {f:#x}, this version uses {flags:#x}"
            ));
        }
    }
    None
}

/// Removes the map pins, leaving the link: the program attached through it
/// keeps its maps until it is replaced.
pub fn remove_map_pins(pin_dir: &Path) -> Result<()> {
    for name in map_names::ALL {
        let p = pin_dir.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
    Ok(())
}

/// How to attach: native (driver) XDP, generic (skb) XDP, or native with fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native first; generic when the driver has no XDP support.
    Auto,
    /// Driver (native) XDP only.
    Native,
    /// Generic (skb) XDP, works on every interface.
    Skb,
}

/// Where maps go: pinned under `dir` (an instance), or nowhere (tests).
pub fn load(pin_dir: Option<&Path>) -> Result<Ebpf> {
    load_with(pin_dir, None)
}

/// As `load`, sizing the blocklist to `max_blocks` entries when it is created (an
/// existing pinned blocklist keeps its size).
pub fn load_with(pin_dir: Option<&Path>, max_blocks: Option<u32>) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    if let Some(n) = max_blocks {
        loader.map_max_entries(map_names::BLOCKLIST, n);
        loader.map_max_entries(map_names::BLOCK_V4, n);
        loader.map_max_entries(map_names::BLOCK_V6, n);
        loader.map_max_entries(map_names::BLOCK_META, n);
    }
    let paths: Vec<(&str, PathBuf)> = match pin_dir {
        Some(dir) => map_names::ALL.iter().map(|n| (*n, dir.join(n))).collect(),
        None => Vec::new(),
    };
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(EBPF_OBJECT)
        .map_err(|e| explain_load_error(e.into()))
        .with_context(|| match pin_dir {
            Some(d) => format!("creating or opening the pinned maps under {}", d.display()),
            None => "creating the maps".to_string(),
        })?;
    let prog = program(&mut ebpf)?;
    prog.load()
        .map_err(|e| explain_load_error(e.into()))
        .context("loading the XDP program into the kernel")?;
    Ok(ebpf)
}

fn explain_load_error(err: anyhow::Error) -> anyhow::Error {
    let eperm = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            .is_some_and(|c| c == libc::EPERM)
    }) || format!("{err:#}").contains("Operation not permitted");
    if eperm {
        anyhow!(
            "permission denied by the kernel: scan-guard needs root or CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN"
        )
    } else {
        err
    }
}

/// The (loaded or not) XDP program of the object.
pub fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or_else(|| anyhow!("object has no program {PROGRAM_NAME}"))?
        .try_into()
        .context("program has the wrong type")
}

/// Interface index of `iface`, or a usage error naming it.
pub fn if_index(iface: &str) -> Result<u32> {
    let c = CString::new(iface)
        .map_err(|_| usage(format!("interface name {iface:?} contains a NUL byte")))?;
    // SAFETY: NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(usage(format!(
            "no network interface named {iface:?} (see `ip link`)"
        )));
    }
    Ok(idx)
}

/// What `attach` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// "native" or "skb" ("adopted" when an existing link was re-used).
    pub mode: &'static str,
    /// An instance left attached (e.g. a killed controller) was taken over.
    pub readopted: bool,
}

/// Attaches the loaded program to `iface` and pins the link as `link-IFACE`. When
/// such a link already exists, the program inside it is replaced atomically instead,
/// so the interface is never unprotected and never carries two copies; a link that
/// died with its interface (recreated since) is unpinned and a new one made.
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: AttachMode,
    pin_dir: &Path,
) -> Result<Attachment> {
    let idx = if_index(iface)?;
    let link_path = link_pin(pin_dir, iface);
    let prog = program(ebpf)?;
    if link_path.exists() {
        match replace_in_link(prog, &link_path) {
            Ok(()) => {
                if mode != AttachMode::Auto {
                    tracing::warn!(
                        "re-adopted the existing attachment on {iface}; --xdp-mode {mode:?} is not applied (stop the instance with SIGTERM to attach afresh)"
                    );
                }
                return Ok(Attachment {
                    mode: "adopted",
                    readopted: true,
                });
            }
            // The link died with an interface that was recreated meanwhile:
            // it protects nothing, so a new one replaces it.
            Err(e) => {
                tracing::info!(
                    "the pinned link of {iface} is not usable ({e:#}); attaching afresh"
                );
                unpin(&link_path)?;
            }
        }
    }
    let (id, used) = match mode {
        AttachMode::Native => (prog.attach_to_if_index(idx, XdpMode::Driver), "native"),
        AttachMode::Skb => (prog.attach_to_if_index(idx, XdpMode::Skb), "skb"),
        AttachMode::Auto => match prog.attach_to_if_index(idx, XdpMode::Driver) {
            Ok(id) => (Ok(id), "native"),
            Err(e) => {
                tracing::info!("native XDP unavailable on {iface} ({e}); falling back to skb mode");
                (prog.attach_to_if_index(idx, XdpMode::Skb), "skb")
            }
        },
    };
    let id = id
        .map_err(|e| explain_load_error(e.into()))
        .with_context(|| format!("attaching to {iface} in {used} mode"))?;
    pin_link(prog, id, &link_path)?;
    Ok(Attachment {
        mode: used,
        readopted: false,
    })
}

/// Swaps our program into the pinned link at `link_path`. The pin stays while
/// swapping: if the update fails, the old program stays attached and pinned.
fn replace_in_link(prog: &mut Xdp, link_path: &Path) -> Result<()> {
    let fd_link: FdLink = PinnedLink::from_pin(link_path)
        .with_context(|| format!("opening pinned link {}", link_path.display()))?
        .into();
    let xdp_link = XdpLink::try_from(fd_link).context("pinned link is not an XDP link")?;
    let id = prog
        .attach_to_link(xdp_link)
        .context("replacing the program in the pinned link")?;
    // The pin holds the link; our handle can go.
    drop(prog.take_link(id).context("taking the XDP link")?);
    Ok(())
}

/// Detaches the program from `iface` only (its link pin goes; the maps stay).
pub fn detach_iface(pin_dir: &Path, iface: &str) -> Result<()> {
    let link_path = link_pin(pin_dir, iface);
    if link_path.exists() {
        unpin(&link_path)?;
    }
    Ok(())
}

fn pin_link(prog: &mut Xdp, id: aya::programs::xdp::XdpLinkId, path: &Path) -> Result<()> {
    let link = prog.take_link(id).context("taking the XDP link")?;
    let fd_link =
        FdLink::try_from(link).context("the kernel attached without a bpf_link (too old?)")?;
    fd_link
        .pin(path)
        .with_context(|| format!("pinning the link at {}", path.display()))?;
    Ok(())
}

/// Detaches the instance pinned under `pin_dir` from every interface and removes
/// its pins. Missing pins
/// are not an error (already detached).
pub fn detach(pin_dir: &Path) -> Result<()> {
    for iface in pinned_links(pin_dir) {
        detach_iface(pin_dir, &iface)?;
    }
    let legacy = pin_dir.join(LEGACY_LINK);
    if legacy.exists() {
        unpin(&legacy)?;
    }
    remove_map_pins(pin_dir)?;
    // Leave the directory if something else lives there.
    let _ = std::fs::remove_dir(pin_dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Map names live in one place, `scan_guard_common::map_names`: the kernel's
    /// `#[map]` statics are named by their identifiers, so this compares the
    /// list with the maps of the compiled object, both ways.
    #[test]
    fn the_object_has_exactly_the_maps_map_names_lists() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded object parses");
        let in_object: BTreeSet<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            // aya-log's own ring and the sections the compiler adds are not ours.
            .filter(|n| !n.starts_with('.') && *n != "AYA_LOGS")
            .collect();
        let listed: BTreeSet<&str> = map_names::ALL.into_iter().collect();
        assert_eq!(in_object, listed);
    }
}
