//! bpf-linker: present on the xtask PATH and linked against the LLVM of the eBPF
//! nightly, or installed with `cargo install` (against that nightly's libLLVM).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::{elf, process, workspace::Workspace};

pub const VERSION: &str = "0.13.0";

/// What the `bpf-linker` found on PATH is.
enum Found {
    Missing,
    /// Found but `--version` fails (typically: its libLLVM is gone).
    Broken(PathBuf),
    Usable {
        path: PathBuf,
        version: String,
        llvm: Option<u32>,
    },
}

/// Makes sure the `bpf-linker` the build finds on PATH uses LLVM `llvm_major`.
/// `llvm_prefix` holds the nightly's libLLVM (`$LLVM_PREFIX/lib`).
pub fn ensure(ws: &Workspace, llvm_prefix: &Path, llvm_major: u32) -> Result<()> {
    let reason = match inspect(ws) {
        Found::Usable {
            path,
            version,
            llvm: Some(m),
        } if m == llvm_major => {
            eprintln!("{version} present (LLVM {m}): {}", ws.display(&path));
            return Ok(());
        }
        Found::Usable {
            path,
            llvm: Some(m),
            ..
        } => {
            format!(
                "{} uses LLVM {m}, the eBPF nightly LLVM {llvm_major}",
                ws.display(&path)
            )
        }
        Found::Usable { path, .. } => {
            format!("{} does not link a shared libLLVM", ws.display(&path))
        }
        Found::Broken(path) => format!("{} does not run", ws.display(&path)),
        Found::Missing => "bpf-linker not found".to_string(),
    };
    eprintln!("{reason}: installing bpf-linker {VERSION} for LLVM {llvm_major} (~1 min)");
    install(ws, llvm_prefix, llvm_major)?;

    let installed = ws.cargo_bin.join("bpf-linker");
    match inspect(ws) {
        Found::Usable {
            path,
            version,
            llvm: Some(m),
        } if m == llvm_major => {
            eprintln!("{version} installed (LLVM {m}): {}", ws.display(&path));
            Ok(())
        }
        Found::Usable { path, .. } | Found::Broken(path) if path != installed => bail!(
            "bpf-linker was installed to {}, but {} comes first on PATH and is not built \
             for LLVM {llvm_major}: remove it, or put {} before its directory on PATH",
            installed.display(),
            path.display(),
            ws.cargo_bin.display()
        ),
        _ => bail!(
            "the freshly installed {} still does not use LLVM {llvm_major}: check that \
             `ldd {}` resolves libLLVM into {}/lib",
            installed.display(),
            installed.display(),
            llvm_prefix.display()
        ),
    }
}

fn inspect(ws: &Workspace) -> Found {
    let Some(path) = ws.which("bpf-linker") else {
        return Found::Missing;
    };
    let version = ws
        .command(&path)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let Some(version) = version else {
        return Found::Broken(path);
    };
    let llvm = elf::needed_libraries(&path)
        .unwrap_or_default()
        .iter()
        .find_map(|lib| llvm_major_of(lib));
    Found::Usable {
        path,
        version,
        llvm,
    }
}

fn install(ws: &Workspace, llvm_prefix: &Path, llvm_major: u32) -> Result<()> {
    std::fs::create_dir_all(&ws.cache)?;
    let mut cmd = ws.cargo();
    // Outside the repository, so its .cargo/config.toml does not apply.
    cmd.current_dir(&ws.cache)
        .env("LLVM_PREFIX", llvm_prefix)
        .args([
            "install",
            "bpf-linker",
            "--version",
            VERSION,
            "--locked",
            "--force",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .arg("--quiet");
    process::run(
        &mut cmd,
        "install Rust with rustup (https://rustup.rs)",
        "building bpf-linker needs network access to crates.io and a C toolchain \
         (Debian: `apt-get install build-essential`); fix what cargo reports above and \
         rerun `cargo xtask setup`",
    )
}

/// LLVM major from a libLLVM file name: `libLLVM.so.22.1-rust-1.97.0-nightly`,
/// `libLLVM-22-rust-1.97.0-nightly.so`, `libLLVM-16.so.1`, `libLLVM.so.19.1`.
pub fn llvm_major_of(lib: &str) -> Option<u32> {
    let rest = lib.strip_prefix("libLLVM")?;
    let rest = rest
        .strip_prefix(".so.")
        .or_else(|| rest.strip_prefix('-'))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::llvm_major_of;

    #[test]
    fn llvm_major_comes_from_the_library_name() {
        assert_eq!(
            llvm_major_of("libLLVM.so.22.1-rust-1.97.0-nightly"),
            Some(22)
        );
        assert_eq!(llvm_major_of("libLLVM-22-rust-1.97.0-nightly.so"), Some(22));
        assert_eq!(llvm_major_of("libLLVM-16.so.1"), Some(16));
        assert_eq!(llvm_major_of("libLLVM.so.19.1"), Some(19));
        assert_eq!(llvm_major_of("libLLVM.so"), None);
        assert_eq!(llvm_major_of("libc.so.6"), None);
    }
}
