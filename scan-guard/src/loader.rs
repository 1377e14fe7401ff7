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

use crate::{EBPF_OBJECT, error::usage};

/// File name of the pinned link inside the pin directory.
pub const LINK_PIN: &str = "link";

/// Why the maps pinned under `pin_dir` cannot be reused by this version (a
/// scan-guard with another map layout made them: a map is missing or its key
/// or value has another size), or `None` (they fit, or there are none).
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

/// Attaches the loaded program to `iface` and pins the link as `pin_dir/link`. When
/// such a link already exists, the program inside it is replaced atomically instead,
/// so the interface is never unprotected and never carries two copies.
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: AttachMode,
    pin_dir: &Path,
) -> Result<Attachment> {
    let idx = if_index(iface)?;
    let link_path = pin_dir.join(LINK_PIN);
    let prog = program(ebpf)?;
    if link_path.exists() {
        // Keep the pin while swapping programs: if the update fails, the old program
        // stays attached and pinned.
        let fd_link: FdLink = PinnedLink::from_pin(&link_path)
            .with_context(|| format!("opening pinned link {}", link_path.display()))?
            .into();
        let xdp_link = XdpLink::try_from(fd_link).context("pinned link is not an XDP link")?;
        let id = prog
            .attach_to_link(xdp_link)
            .context("replacing the program in the pinned link")?;
        // The pin holds the link; our handle can go.
        drop(prog.take_link(id).context("taking the XDP link")?);
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

/// Attaches afresh after the interface was recreated: the old pinned link died
/// with the old interface, so it is removed and a new one made and pinned.
pub fn reattach(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: AttachMode,
    pin_dir: &Path,
) -> Result<&'static str> {
    let link_path = pin_dir.join(LINK_PIN);
    if link_path.exists() {
        if let Ok(old) = PinnedLink::from_pin(&link_path) {
            drop(old.unpin());
        } else {
            std::fs::remove_file(&link_path)
                .with_context(|| format!("removing stale {}", link_path.display()))?;
        }
    }
    attach(ebpf, iface, mode, pin_dir).map(|a| a.mode)
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

/// Detaches the instance pinned under `pin_dir` and removes its pins. Missing pins
/// are not an error (already detached).
pub fn detach(pin_dir: &Path) -> Result<()> {
    let link_path = pin_dir.join(LINK_PIN);
    if link_path.exists() {
        let link = PinnedLink::from_pin(&link_path)
            .with_context(|| format!("opening pinned link {}", link_path.display()))?
            .unpin()
            .with_context(|| format!("unpinning {}", link_path.display()))?;
        drop(link);
    }
    remove_map_pins(pin_dir)?;
    // Leave the directory if something else lives there.
    let _ = std::fs::remove_dir(pin_dir);
    Ok(())
}
