//! The shared libraries an ELF executable asks the dynamic loader for (DT_NEEDED),
//! read from its headers without running it. bpf-linker 0.13 links libLLVM
//! dynamically, so this tells exactly which LLVM an installed bpf-linker uses.

use std::{
    fs::File,
    io::{self, Read as _, Seek as _, SeekFrom},
    path::Path,
};

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
/// Headers and string tables are small; refuse anything larger than this.
const MAX_READ: u64 = 16 << 20;

/// DT_NEEDED entries of a 64-bit little-endian ELF file; empty for a static
/// executable or another format.
pub fn needed_libraries(path: &Path) -> io::Result<Vec<String>> {
    let mut file = File::open(path)?;
    let ehdr = read_at(&mut file, 0, 64)?;
    if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return Ok(Vec::new());
    }
    let phoff = u64_at(&ehdr, 0x20);
    let phentsize = u64::from(u16_at(&ehdr, 0x36));
    let phnum = u64::from(u16_at(&ehdr, 0x38));
    if phentsize < 56 {
        return Err(invalid("program header entries too small"));
    }
    let phdrs = read_at(&mut file, phoff, phentsize * phnum)?;
    // (type, file offset, virtual address, size in file)
    let segments: Vec<(u32, u64, u64, u64)> = phdrs
        .chunks_exact(phentsize as usize)
        .map(|ph| (u32_at(ph, 0), u64_at(ph, 8), u64_at(ph, 16), u64_at(ph, 32)))
        .collect();
    let Some(&(_, dyn_off, _, dyn_size)) = segments.iter().find(|s| s.0 == PT_DYNAMIC) else {
        return Ok(Vec::new());
    };

    let dynamic = read_at(&mut file, dyn_off, dyn_size)?;
    let (mut needed, mut strtab, mut strsz) = (Vec::new(), None, None);
    for entry in dynamic.chunks_exact(16) {
        match (u64_at(entry, 0), u64_at(entry, 8)) {
            (DT_NULL, _) => break,
            (DT_NEEDED, name) => needed.push(name),
            (DT_STRTAB, addr) => strtab = Some(addr),
            (DT_STRSZ, size) => strsz = Some(size),
            _ => {}
        }
    }
    let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
        return Err(invalid("dynamic section without a string table"));
    };
    // DT_STRTAB is an address: map it to a file offset through its PT_LOAD segment.
    let str_off = segments
        .iter()
        .find(|&&(kind, _, vaddr, size)| kind == PT_LOAD && (vaddr..vaddr + size).contains(&strtab))
        .map(|&(_, off, vaddr, _)| strtab - vaddr + off)
        .ok_or_else(|| invalid("string table outside the loaded segments"))?;
    let strings = read_at(&mut file, str_off, strsz)?;
    needed
        .into_iter()
        .map(|at| {
            let tail = strings
                .get(at as usize..)
                .ok_or_else(|| invalid("DT_NEEDED outside the string table"))?;
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
        })
        .collect()
}

fn read_at(file: &mut File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    if len > MAX_READ {
        return Err(invalid("header table too large"));
    }
    let mut buf = vec![0; len as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed ELF file: {what}"),
    )
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(
        b[at..at + 2]
            .try_into()
            .expect("a slice of exactly this length"),
    )
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(
        b[at..at + 4]
            .try_into()
            .expect("a slice of exactly this length"),
    )
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(
        b[at..at + 8]
            .try_into()
            .expect("a slice of exactly this length"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamically_linked_executable_needs_libc() {
        let exe = std::env::current_exe().unwrap();
        let libs = needed_libraries(&exe).unwrap();
        assert!(libs.iter().any(|l| l.starts_with("libc.so")), "{libs:?}");
    }

    #[test]
    fn a_non_elf_file_needs_nothing() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert!(needed_libraries(&file).unwrap().is_empty());
    }
}
