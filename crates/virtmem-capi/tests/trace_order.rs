//! `VIRTMEM_TRACE` from several threads and across `fork()`: the trace lists calls in the
//! order they took effect, so replaying it line by line gives every recorded result, and
//! a forked child's calls come under a header of their own. (One test in this binary: the
//! environment variable is set before the library first looks at it.)

mod common;

use std::collections::BTreeMap;
use std::ffi::c_void;

use vm::trace::{read, Call, Line};
use vm::{win32, SimSpace};

type VirtualAlloc = unsafe extern "C" fn(*mut c_void, usize, u32, u32) -> *mut c_void;
type VirtualFree = unsafe extern "C" fn(*mut c_void, usize, u32) -> i32;
type VirtualAllocEx = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, u32, u32) -> *mut c_void;
type VirtualFreeEx = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, u32) -> i32;
type Handle0 = unsafe extern "C" fn() -> *mut c_void;

const COMMIT_RESERVE: u32 = 0x3000;
const RELEASE: u32 = 0x8000;
const RW: u32 = 4;

/// Replay every record of `text` against fresh simulated spaces (one per process of each
/// session), placing reservations at the addresses the program got; return the records
/// whose result or last error differs, and the headers.
fn replay(text: &str) -> (Vec<String>, Vec<vm::trace::Header>) {
    let mut diffs = Vec::new();
    let mut headers = Vec::new();
    let mut spaces: BTreeMap<u32, SimSpace> = BTreeMap::new();
    for item in read(text.as_bytes()) {
        let (line, l) = item.expect("every line parses");
        let rec = match l {
            Line::Header(h) => {
                headers.push(h);
                spaces.clear();
                continue;
            }
            Line::Record(r) => r,
        };
        let space = spaces.entry(rec.process.unwrap_or(0)).or_insert_with(SimSpace::simulated);
        vm::win32::SetLastError(0);
        let got = match rec.call {
            Call::Alloc { address, size, alloc_type, protect } => {
                let (a, t) = if address == 0 && rec.result != 0 {
                    (rec.result as usize, alloc_type | 0x2000)
                } else {
                    (address, alloc_type)
                };
                win32::VirtualAlloc(space, a, size, t, protect) as u64
            }
            Call::Free { address, size, free_type } => win32::VirtualFree(space, address, size, free_type) as u64,
            ref other => panic!("line {line}: unexpected call {other:?}"),
        };
        let err = vm::win32::GetLastError();
        if (got, err) != (rec.result, rec.last_error) {
            diffs.push(format!("line {line}: {rec} replayed -> {got:#x} err={err}"));
        }
    }
    (diffs, headers)
}

#[test]
fn threads_and_fork_record_calls_in_the_order_they_took_effect() {
    let path = std::env::temp_dir().join(format!("virtmem-capi-trace-order-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::env::set_var("VIRTMEM_TRACE", &path);
    let lib = common::Lib::open();
    // SAFETY: the signatures match the exports.
    let (alloc, free, alloc_ex, free_ex, create) = unsafe {
        (
            lib.get::<VirtualAlloc>("VirtualAlloc"),
            lib.get::<VirtualFree>("VirtualFree"),
            lib.get::<VirtualAllocEx>("VirtualAllocEx"),
            lib.get::<VirtualFreeEx>("VirtualFreeEx"),
            lib.get::<Handle0>("VirtmemCreateProcess"),
        )
    };
    // SAFETY: no arguments.
    let h = unsafe { create() } as usize;
    assert_ne!(h, 0);
    // Four threads allocate and free in one simulated process (which hands out the same
    // lowest free address again and again) and in the current one.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..300 {
                    // SAFETY: valid handle; the allocations are ours to free.
                    unsafe {
                        let p = alloc_ex(h as *mut c_void, std::ptr::null_mut(), 0x10000, COMMIT_RESERVE, RW);
                        assert!(!p.is_null());
                        assert_eq!(free_ex(h as *mut c_void, p, 0, RELEASE), 1);
                        let q = alloc(std::ptr::null_mut(), 0x10000, COMMIT_RESERVE, RW);
                        assert!(!q.is_null());
                        assert_eq!(free(q, 0, RELEASE), 1);
                    }
                }
            });
        }
    });
    // A forked child's calls come under a header with its pid.
    // SAFETY: the child only calls the library (async-signal-safety is not needed: no
    // other thread of this test runs now) and leaves with _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        // SAFETY: as above.
        unsafe {
            let q = alloc(std::ptr::null_mut(), 0x20000, COMMIT_RESERVE, RW);
            let ok = !q.is_null() && free(q, 0, RELEASE) == 1;
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: {status:#x}");

    let text = std::fs::read_to_string(&path).expect("the trace file was written");
    let _ = std::fs::remove_file(&path);
    let (diffs, headers) = replay(&text);
    assert_eq!(text.lines().filter(|l| l.starts_with("Virtual")).count(), 4 * 300 * 4 + 2);
    assert!(
        diffs.is_empty(),
        "{} of the records replay differently, e.g. {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
    let me = std::process::id().to_string();
    assert_eq!(headers.len(), 2, "{headers:?}");
    assert_eq!(headers[0].get("pid"), Some(me.as_str()));
    assert_eq!(headers[1].get("pid"), Some(child.to_string().as_str()));
    assert_eq!(headers[1].get("parent"), Some(me.as_str()));
    let child_part = &text[text.find(&format!("pid={child}")).expect("child header")..];
    assert!(child_part.contains("VirtualAlloc 0x0 0x20000 0x3000 0x4 -> "), "{child_part}");
}
