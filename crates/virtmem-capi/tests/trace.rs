//! `VIRTMEM_TRACE`: the built `libvirtmem.so` appends one line per call it receives, in
//! the format `virtmem::trace` parses. (One test in this binary: the environment
//! variable is set before the library first looks at it.)

mod common;

use std::ffi::c_void;

use vm::trace::{read, Call, Line, Out};

type VirtualAllocEx = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, u32, u32) -> *mut c_void;
type VirtualQueryEx = unsafe extern "C" fn(*mut c_void, *const c_void, *mut c_void, usize) -> usize;
type VirtualProtectEx = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, u32, *mut u32) -> i32;
type WriteProcessMemory = unsafe extern "C" fn(*mut c_void, *mut c_void, *const c_void, usize, *mut usize) -> i32;
type VirtmemAccess = unsafe extern "C" fn(*mut c_void, usize, *mut c_void, usize, u32, *mut usize) -> u32;
type Handle0 = unsafe extern "C" fn() -> *mut c_void;
type CloseHandle = unsafe extern "C" fn(*mut c_void) -> i32;
type CreateProcessEx = unsafe extern "C" fn(*const [usize; 4]) -> *mut c_void;
type VirtualAlloc2 = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, u32, u32, *mut [u64; 2], u32) -> *mut c_void;
type GetProcessSystemInfo = unsafe extern "C" fn(*mut c_void, *mut [u8; 48]) -> i32;

#[test]
fn every_call_is_recorded_in_the_trace_format() {
    let path = std::env::temp_dir().join(format!("virtmem-capi-trace-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::env::set_var("VIRTMEM_TRACE", &path);
    let lib = common::Lib::open();
    // SAFETY: the signatures match the exports; buffers are valid local storage.
    let (base, h) = unsafe {
        let alloc = lib.get::<VirtualAllocEx>("VirtualAllocEx");
        let query = lib.get::<VirtualQueryEx>("VirtualQueryEx");
        let protect = lib.get::<VirtualProtectEx>("VirtualProtectEx");
        let wpm = lib.get::<WriteProcessMemory>("WriteProcessMemory");
        let access = lib.get::<VirtmemAccess>("VirtmemAccess");
        let create = lib.get::<Handle0>("VirtmemCreateProcess");
        let close = lib.get::<CloseHandle>("CloseHandle");
        let h = create();
        let base = alloc(h, std::ptr::null_mut(), 0x3000, 0x3000, 4);
        assert!(!base.is_null());
        assert!(alloc(h, std::ptr::null_mut(), 0, 0x3000, 4).is_null());
        let mut mbi = [0u8; 48];
        assert_eq!(query(h, base, mbi.as_mut_ptr().cast(), 48), 48);
        let mut old = 0u32;
        assert_eq!(protect(h, base, 0x1000, 2, &mut old), 1);
        let data = [7u8; 16];
        let mut n = 0usize;
        assert_eq!(wpm(h, base, data.as_ptr().cast(), 16, &mut n), 0, "read-only now");
        let mut fault = 0usize;
        let store = access(h, base as usize, data.as_ptr() as *mut c_void, 16, 1, &mut fault);
        assert_eq!((store, fault), (0xC000_0005, base as usize), "a store to the read-only page");
        assert_eq!(close(h), 1);
        // A configured process is a record (its configuration decides later results):
        // a 32-bit guest's, the defaults (NULL), a refused one (policy 2).
        let create_ex = lib.get::<CreateProcessEx>("VirtmemCreateProcessEx");
        // VIRTMEM_PROCESS_CONFIG as four words: cbSize (32) and ResetPolicy in the first
        // (little-endian), the lowest and highest address, the large-page size.
        let guest = [32 | 1 << 32, 0x1_0000, 0x7FFE_FFFF, 0];
        let g = create_ex(&guest);
        assert!(!g.is_null());
        assert!(!create_ex(std::ptr::null()).is_null());
        assert!(create_ex(&[32 | 2 << 32, 0x1_0000, 0x7FFE_FFFF, 0]).is_null());
        // VirtualAlloc2 is a record with its parameters as read; a NULL process is 0.
        let valloc2 = lib.get::<VirtualAlloc2>("VirtualAlloc2");
        let req: [usize; 3] = [0x4000_0000, 0x4FFF_FFFF, 0x10_0000];
        let mut params = [[1, req.as_ptr() as u64], [2, 0]];
        let top = valloc2(g, std::ptr::null_mut(), 0x10000, 0x10_2000, 4, params.as_mut_ptr(), 2);
        assert_eq!(top as usize, 0x4FF0_0000, "top-down in the window, on 1 MiB");
        assert!(
            valloc2(std::ptr::null_mut(), std::ptr::null_mut(), 0x10000, 0x2000, 4, std::ptr::null_mut(), 1).is_null()
        );
        // VirtmemGetProcessSystemInfo changes nothing: a comment.
        let mut si = [0u8; 48];
        assert_eq!(lib.get::<GetProcessSystemInfo>("VirtmemGetProcessSystemInfo")(g, &mut si), 1);
        (base as usize, h as usize)
    };
    let text = std::fs::read_to_string(&path).expect("the trace file was written");
    let _ = std::fs::remove_file(&path);
    let lines: Vec<Line> = read(text.as_bytes()).map(|r| r.expect("every line parses").1).collect();
    assert!(matches!(&lines[0], Line::Header(hd) if hd.get("pid") == Some(&std::process::id().to_string())));
    let records: Vec<_> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Record(r) => Some(r),
            Line::Header(_) => None,
        })
        .collect();
    assert_eq!(records.len(), 11, "{text}");
    let (records, made) = records.split_at(6);
    let (made, alloc2) = made.split_at(3);
    let process = records[0].process.expect("an Ex call names its process");
    assert_ne!(process, 0, "a simulated process, not the current one");
    assert!(records.iter().all(|r| r.process == Some(process)));
    assert_eq!(records[0].call, Call::Alloc { address: 0, size: 0x3000, alloc_type: 0x3000, protect: 4 });
    assert_eq!((records[0].result as usize, records[0].last_error), (base, 0));
    assert_eq!((records[1].result, records[1].last_error), (0, 87));
    match &records[2].out {
        Out::Info(m) => assert_eq!((m.BaseAddress, m.RegionSize, m.State, m.Protect), (base, 0x3000, 0x1000, 4)),
        other => panic!("VirtualQueryEx out-values: {other:?}"),
    }
    assert_eq!(records[3].out, Out::OldProtect(4));
    assert_eq!((records[4].result, records[4].last_error, &records[4].out), (0, 998, &Out::Transferred(0)));
    // VirtmemAccess can disarm a guard page, so it is a record (replay repeats it), not a comment.
    match records[5].call {
        Call::Access { address, size: 16, kind: 1, fault, .. } if address == base && fault != 0 => {}
        ref other => panic!("VirtmemAccess record: {other:?}"),
    }
    assert_eq!((records[5].result, records[5].last_error), (0xC000_0005, 0));
    let made: Vec<_> = made.iter().map(|r| (r.process, &r.call, r.result, r.last_error)).collect();
    let config = |min, max, lp, policy| Call::CreateProcess {
        min_address: min,
        max_address: max,
        large_page_size: lp,
        reset_policy: policy,
    };
    let (guest, x64, refused) = (
        config(0x1_0000, 0x7FFE_FFFF, 0, 1),
        config(0x1_0000, 0x7FFF_FFFE_FFFF, 2 << 20, 0),
        config(0x1_0000, 0x7FFE_FFFF, 0, 2),
    );
    let n = u64::from(process);
    assert_eq!(made, [(None, &guest, n + 1, 0), (None, &x64, n + 2, 0), (None, &refused, 0, 87)], "{text}");
    let p = |type_word, value, requirements| vm::win32::ExtendedParameter { type_word, value, requirements };
    let req = vm::AddressRequirements {
        lowest_starting_address: 0x4000_0000,
        highest_ending_address: 0x4FFF_FFFF,
        alignment: 0x10_0000,
    };
    let Call::Alloc2 { params: Some(ps), count: 2, size: 0x10000, alloc_type: 0x10_2000, .. } = &alloc2[0].call else {
        panic!("VirtualAlloc2 record: {:?}", alloc2[0])
    };
    assert_eq!((ps[0].type_word, ps[0].requirements, ps[1]), (1, Some(req), p(2, 0, None)), "{text}");
    assert_eq!((alloc2[0].process, alloc2[0].result, alloc2[0].last_error), (Some(process + 1), 0x4FF0_0000, 0));
    assert!(matches!(alloc2[1].call, Call::Alloc2 { params: None, count: 1, .. }), "{text}");
    assert_eq!((alloc2[1].process, alloc2[1].result, alloc2[1].last_error), (Some(0), 0, 998));
    let g = process + 1;
    assert!(text.contains(&format!("# VirtmemGetProcessSystemInfo {g:#x} ")), "{text}");
    // Calls outside the record format are comments, in the same shape.
    assert!(text.contains(&format!("# VirtmemCreateProcess -> {h:#x} err=0 process={process}")), "{text}");
    assert!(text.contains(&format!("# CloseHandle {process:#x} -> 0x1 err=0")), "{text}");
}
