//! Helpers shared by the Linux backend tests.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::ops::Range;
use std::process::Command;

use virtmem::backend::linux::WITHOUT_ENV;

use virtmem::{MemoryBasicInformation, VirtualSpace};

/// The kernel mappings inside `range` as (start, end, "rwxp"), clipped to `range`,
/// with adjacent entries of equal permissions coalesced (the kernel may or may not
/// merge them; what the CPU allows is what matters).
pub fn mappings(range: Range<usize>) -> Vec<(usize, usize, String)> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut out: Vec<(usize, usize, String)> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(r), Some(perms)) = (f.next(), f.next()) else { continue };
        let (s, e) = r.split_once('-').unwrap();
        let (s, e) = (usize::from_str_radix(s, 16).unwrap(), usize::from_str_radix(e, 16).unwrap());
        let (mut s, e) = (s.max(range.start), e.min(range.end));
        // The file is read in several steps, so a mapping changed meanwhile by another
        // thread can show up twice: never go backwards.
        if let Some(last) = out.last() {
            s = s.max(last.1);
        }
        if s >= e {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 == s && last.2 == perms => last.1 = e,
            _ => out.push((s, e, perms.to_string())),
        }
    }
    out
}

/// The permissions of the kernel mapping holding `addr`, e.g. "rw-p".
pub fn perms_at(addr: usize) -> Option<String> {
    mappings(addr..addr + 1).first().map(|m| m.2.clone())
}

/// A `VirtualQuery` walk over `range`, the last region clipped to its end.
pub fn walk(space: &dyn VirtualSpace, range: Range<usize>) -> Vec<MemoryBasicInformation> {
    let mut out = Vec::new();
    let mut a = range.start;
    while a < range.end {
        let mut m = space.query(a).unwrap();
        a = m.base_address + m.region_size;
        m.region_size = m.region_size.min(range.end - m.base_address);
        out.push(m);
    }
    out
}

/// Which pages of `range` are resident in memory (`mincore`).
pub fn resident(range: Range<usize>) -> Vec<bool> {
    let pages = range.len() / 4096;
    let mut v = vec![0u8; pages];
    // SAFETY: mincore only reads page-table state of the range and writes `pages` bytes.
    let r = unsafe { libc::mincore(range.start as *mut libc::c_void, range.len(), v.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    v.into_iter().map(|b| b & 1 != 0).collect()
}

/// Re-run test `name` of this test binary alone, in a child process with the variable
/// `var` set; true in the parent once the child passed, false in the child (which then
/// runs the test's body). For a test that changes the whole process (its limits, its
/// mapping count), which the other tests of its binary must not share.
pub fn in_child(var: &str, name: &str) -> bool {
    if std::env::var_os(var).is_some() {
        return false;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// Fork and run `f` in the child, which then ends with status 0, or 101 if `f` panicked;
/// the child's wait status. `f` must only touch memory (no allocation, no locks) unless
/// the process has no other thread: a lock another thread held at the fork stays held in
/// the child.
fn fork_and_wait(f: impl FnOnce()) -> i32 {
    // SAFETY: the child runs `f`, which by the contract above needs no lock another
    // thread might hold, then calls _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
        // SAFETY: ends the child without running destructors or atexit handlers, and
        // without ever returning into the test harness.
        unsafe { libc::_exit(if ok { 0 } else { 101 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    status
}

/// Run `f` in a forked child and return the signal that killed it (None if it exited).
/// `f` must only touch memory (no allocation, no locks): the parent is multi-threaded.
pub fn child_signal(f: impl FnOnce()) -> Option<i32> {
    let status = fork_and_wait(f);
    if libc::WIFSIGNALED(status) {
        Some(libc::WTERMSIG(status))
    } else {
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0, "the child failed an assertion");
        None
    }
}

/// Run `f` in a forked child; whether it returned (exit status 0). For a process with
/// no other thread (see [`in_child`]), where `f` may allocate and take locks.
pub fn child_passed(f: impl FnOnce()) -> bool {
    let status = fork_and_wait(f);
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Read a byte with a plain CPU load.
pub fn load(addr: usize) -> u8 {
    // SAFETY: callers use this in forked children to provoke real faults, or on
    // memory they know is readable.
    unsafe { std::ptr::read_volatile(addr as *const u8) }
}

/// Write a byte with a plain CPU store.
pub fn store(addr: usize, v: u8) {
    // SAFETY: as for `load`.
    unsafe { std::ptr::write_volatile(addr as *mut u8, v) }
}

/// Read a byte and ignore it (to provoke a fault).
pub fn touch(addr: usize) {
    let _ = load(addr);
}

/// Whether each page of `range` carries a guard-region marker (bit 58 of its
/// `/proc/self/pagemap` entry, Linux 6.14+).
pub fn guarded(range: Range<usize>) -> Vec<bool> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut buf = vec![0u8; range.len() / 4096 * 8];
    f.read_exact_at(&mut buf, (range.start / 4096 * 8) as u64).unwrap();
    buf.chunks_exact(8).map(|e| u64::from_le_bytes(e.try_into().unwrap()) & (1 << 58) != 0).collect()
}

/// What the CPU allows in `range`, as [`mappings`] shows it but with guard-marked
/// pages as "---p": how the kernel got there (a `PROT_NONE` mapping or guard markers
/// in a read-write one) makes no difference to anyone.
pub fn effective_mappings(range: Range<usize>) -> Vec<(usize, usize, String)> {
    let mut out: Vec<(usize, usize, String)> = Vec::new();
    for (s, e, perms) in mappings(range) {
        for (i, g) in guarded(s..e).into_iter().enumerate() {
            let a = s + i * 4096;
            let p = if g { format!("---{}", &perms[3..]) } else { perms.clone() };
            match out.last_mut() {
                Some(last) if last.1 == a && last.2 == p => last.1 = a + 4096,
                _ => out.push((a, a + 4096, p)),
            }
        }
    }
    out
}

/// Keeps the calling thread on the CPU it runs on until dropped.
pub struct Pinned(libc::cpu_set_t);

impl Pinned {
    /// Pin the calling thread to the CPU it is on.
    pub fn here() -> Pinned {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity/sched_setaffinity read and
        // write only the set passed, for the calling thread (pid 0).
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old), 0);
            let cpu = libc::sched_getcpu();
            assert!(cpu >= 0);
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one), 0);
            Pinned(old)
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: restores the calling thread's own affinity mask saved by `here`.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

/// A write-watched reservation of `size` bytes, committed read-write (this kernel must
/// have write watch: 6.7+).
pub fn watched(s: &virtmem::LinuxSpace, size: usize) -> usize {
    use virtmem::{AllocationType as T, Protection as P};
    assert!(s.backend().write_watch_supported(), "this kernel (6.7+) has write watch");
    s.alloc(0, size, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap()
}

/// Marks a child process run by [`without`].
pub const CHILD_ENV: &str = "VIRTMEM_TEST_WITHOUT_CHILD";

/// Run test `name` alone in a child process of this test binary with
/// `VIRTMEM_LINUX_WITHOUT` set to `without` (read once per process, so a fallback needs a
/// process of its own), and require it to pass; in that child, run `body` (and in a child
/// made for another setting of the same test, nothing). Returns what the child wrote to
/// stdout and stderr (`None` in the child).
pub fn without(name: &str, without: impl AsRef<OsStr>, body: impl FnOnce()) -> Option<String> {
    let without = without.as_ref();
    if std::env::var_os(CHILD_ENV).is_some() {
        if std::env::var_os(WITHOUT_ENV).as_deref() == Some(without) {
            body();
        }
        return None;
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(WITHOUT_ENV, without)
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the test binary");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let shown = without.to_string_lossy();
    assert!(out.status.success(), "{name} with {WITHOUT_ENV}={shown}:\n{text}");
    assert!(text.contains("1 passed"), "{name} did not run in the child:\n{text}");
    Some(text)
}
