//! The few raw system calls the benchmarks need that aya does not offer: loading a
//! two-instruction XDP_DROP program, opening and pinning programs by id, entering a
//! network namespace on one thread, pinning a thread to a CPU, and reading map
//! memory from `/proc/<pid>/fdinfo`.

use std::{
    ffi::CString,
    fs, io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// `union bpf_attr` is at most this large for the commands used here; the kernel
/// wants every byte it does not understand to be zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }

    fn put_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put_u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-filled `union bpf_attr` of the size we pass, with
    // every pointer in it valid for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads `r0 = XDP_DROP; exit`: the cheapest possible XDP drop, written here as two
/// raw instructions because the project's eBPF crate only holds scan-guard itself.
pub fn load_xdp_drop() -> io::Result<OwnedFd> {
    // mov64 r0, 1 (BPF_ALU64 | BPF_MOV | BPF_K); exit (BPF_JMP | BPF_EXIT)
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0x00, 0, 0, 1, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0x00, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    let mut attr = Attr::new();
    attr.put_u32(0, BPF_PROG_TYPE_XDP);
    attr.put_u32(4, insns.len() as u32);
    attr.put_u64(8, insns.as_ptr() as u64);
    attr.put_u64(16, license.as_ptr() as u64);
    let name = b"sgb_xdp_drop";
    attr.0[48..48 + name.len()].copy_from_slice(name);
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A descriptor for the program with this id (needs CAP_SYS_ADMIN).
pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.put_u32(0, id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Pins the BPF object behind `fd` at `path` (on a bpffs).
pub fn pin(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in pin path"))?;
    let mut attr = Attr::new();
    attr.put_u64(0, c.as_ptr() as u64);
    attr.put_u32(8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// Moves the calling thread (only it) into the network namespace `ns` (a name
/// under /run/netns). Interface indexes the thread passes to the kernel are then
/// resolved in that namespace.
pub fn enter_netns(ns: &str) -> io::Result<()> {
    let file = fs::File::open(Path::new("/run/netns").join(ns))?;
    // SAFETY: a namespace descriptor we own; affects this thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
pub fn pin_thread_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPU benchmarks pin their measuring thread to: the last one.
pub fn bench_cpu() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
}

/// Runs `f` on a new thread inside network namespace `ns`, pinned to `cpu`, and
/// returns its result (a panic in `f` propagates).
pub fn in_netns<T: Send>(ns: &str, cpu: Option<usize>, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            enter_netns(ns).unwrap_or_else(|e| panic!("entering network namespace {ns}: {e}"));
            if let Some(c) = cpu {
                pin_thread_to_cpu(c).unwrap_or_else(|e| panic!("pinning to CPU {c}: {e}"));
            }
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// Runs `f` on a new thread pinned to `cpu` (the caller's own affinity, which the
/// processes it starts later inherit, stays as it was).
pub fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            pin_thread_to_cpu(cpu).unwrap_or_else(|e| panic!("pinning to CPU {cpu}: {e}"));
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// One BPF map held open by a process, from `/proc/<pid>/fdinfo`.
#[derive(Clone, Debug)]
pub struct MapFdInfo {
    pub map_id: u32,
    pub map_type: u32,
    pub max_entries: u64,
    pub memlock: u64,
}

/// Every BPF map `pid` holds a descriptor for (each map once).
pub fn maps_of_pid(pid: u32) -> Vec<MapFdInfo> {
    let dir = format!("/proc/{pid}/fdinfo");
    let Ok(rd) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<MapFdInfo> = Vec::new();
    for e in rd.flatten() {
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let (Some(id), Some(ty), Some(max), Some(mem)) = (
            field("map_id:"),
            field("map_type:"),
            field("max_entries:"),
            field("memlock:"),
        ) else {
            continue;
        };
        if out.iter().all(|m| m.map_id != id as u32) {
            out.push(MapFdInfo {
                map_id: id as u32,
                map_type: ty as u32,
                max_entries: max,
                memlock: mem,
            });
        }
    }
    out.sort_by_key(|m| m.map_id);
    out
}

/// user + system CPU time of `pid` in seconds (from /proc/<pid>/stat).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / hz.max(1.0))
}

/// Direct children of `pid` (all its threads).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(text) = fs::read_to_string(t.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|s| s.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}
