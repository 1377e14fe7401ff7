//! Where things are: the repository root, the eBPF toolchain pin, the cache and cargo
//! bin directories, and how to spawn tools so that they find `bpf-linker`.

use std::{
    env,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

pub struct Workspace {
    /// Repository root (the workspace `Cargo.toml` and `ebpf-toolchain` live here).
    pub root: PathBuf,
    /// Where `cargo install` puts binaries (`~/.cargo/bin` unless configured).
    pub cargo_bin: PathBuf,
    /// `$HOME/.cache/scan-guard`.
    pub cache: PathBuf,
    /// PATH for every spawned tool: the caller's, with `cargo_bin` prepended if missing.
    path: OsString,
    /// Whether the caller's PATH already had `cargo_bin`.
    pub cargo_bin_on_path: bool,
    home: PathBuf,
}

impl Workspace {
    pub fn new() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask's manifest directory has no parent")?
            .to_path_buf();
        let home = env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .context("HOME is not set: xtask keeps the toolchain cache under $HOME/.cache")?;
        let cargo_bin = if let Some(root) = env::var_os("CARGO_INSTALL_ROOT") {
            PathBuf::from(root).join("bin")
        } else if let Some(cargo_home) = env::var_os("CARGO_HOME") {
            PathBuf::from(cargo_home).join("bin")
        } else {
            home.join(".cargo/bin")
        };
        let caller_path = env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = env::split_paths(&caller_path).collect();
        let cargo_bin_on_path = dirs.contains(&cargo_bin);
        if !cargo_bin_on_path {
            dirs.insert(0, cargo_bin.clone());
        }
        let path = env::join_paths(dirs).context("a PATH entry contains ':'")?;
        Ok(Self {
            cache: home.join(".cache/scan-guard"),
            root,
            cargo_bin,
            path,
            cargo_bin_on_path,
            home,
        })
    }

    /// The eBPF nightly pinned in `ebpf-toolchain` (shared with scan-guard's build.rs).
    pub fn ebpf_toolchain(&self) -> Result<String> {
        let file = self.root.join("ebpf-toolchain");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading the eBPF toolchain pin {}", file.display()))?;
        let name = text.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            bail!(
                "{} must hold one toolchain name (e.g. nightly-2026-05-19), found {text:?}",
                file.display()
            );
        }
        Ok(name.to_string())
    }

    /// A command run from the repository root with the xtask PATH.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root).env("PATH", &self.path);
        cmd
    }

    /// The cargo that runs xtask (`$CARGO`), else `cargo` on PATH.
    pub fn cargo(&self) -> Command {
        self.command(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
    }

    /// First `name` on the xtask PATH, like `command -v`.
    pub fn which(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        env::split_paths(&self.path)
            .map(|dir| dir.join(name))
            .find(|p| {
                p.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    }

    /// `path` shortened for messages: relative to the root, or with `~` for HOME.
    pub fn display(&self, path: &Path) -> String {
        if let Ok(rel) = path.strip_prefix(&self.root) {
            rel.display().to_string()
        } else if let Ok(rel) = path.strip_prefix(&self.home) {
            format!("~/{}", rel.display())
        } else {
            path.display().to_string()
        }
    }
}
