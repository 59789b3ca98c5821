//! `VIRTMEM_TRACE` and `GetWriteWatch` on the current process: each call is one record
//! with `*lpdwCount` as it came in, and, when it succeeds, the addresses it reported and
//! `*lpdwGranularity` as its out-values; a failed call has none. Into an aligned array, a
//! misaligned one, with and without the reset flag, capped, with nothing dirty, and
//! refused (87, 998). (One test in this binary: the environment variable is set before
//! the library first looks at it.)

mod common;

use std::ffi::c_void;
use std::ptr::null_mut;

use vm::trace::{read, Call, Line, Out};

type VirtualAlloc = unsafe extern "C" fn(*mut c_void, usize, u32, u32) -> *mut c_void;
type VirtualFree = unsafe extern "C" fn(*mut c_void, usize, u32) -> i32;
type GetWriteWatch = unsafe extern "C" fn(u32, *mut c_void, usize, *mut *mut c_void, *mut usize, *mut u32) -> u32;

const P: usize = 4096;

/// One call made: (flags, array, `*lpdwCount` going in, result, last error, the addresses
/// reported when it succeeded).
type Made = (u32, usize, usize, u32, u32, Option<Vec<usize>>);

#[test]
fn get_write_watch_calls_are_recorded_with_what_they_reported() {
    let path = std::env::temp_dir().join(format!("virtmem-capi-trace-watch-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::env::set_var("VIRTMEM_TRACE", &path);
    let lib = common::Lib::open();
    let mut cards = vec![null_mut::<c_void>(); 16];
    let mut bytes = vec![0u8; 16 * size_of::<usize>() + 1];
    let mut made: Vec<Made> = Vec::new();
    // SAFETY: the signatures match the exports; the arrays and out-values are this
    // test's own, and the stores go to committed read-write pages of its heap.
    let heap = unsafe {
        let alloc = lib.get::<VirtualAlloc>("VirtualAlloc");
        let free = lib.get::<VirtualFree>("VirtualFree");
        let gww = lib.get::<GetWriteWatch>("GetWriteWatch");
        let heap = alloc(null_mut(), 16 * P, 0x20_3000, 4) as usize;
        assert_ne!(heap, 0, "a write-watched heap (Linux 6.7+)");
        let dirty =
            |pages: &[usize]| pages.iter().for_each(|&i| std::ptr::write_volatile((heap + i * P) as *mut u8, 1));
        let mut call = |flags: u32, array: *mut *mut c_void, room: usize, want: Option<&[usize]>, error: u32| {
            let (mut count, mut granularity) = (room, 0u32);
            let r = gww(flags, heap as *mut c_void, 16 * P, array, &mut count, &mut granularity);
            let reported = want.map(|w| w.iter().map(|&i| heap + i * P).collect::<Vec<_>>());
            match &reported {
                Some(w) => assert_eq!((r, count, granularity), (0, w.len(), P as u32), "flags {flags}"),
                None => assert_eq!(r, u32::MAX, "flags {flags}"),
            }
            made.push((flags, array as usize, room, r, error, reported));
        };
        dirty(&[2, 3, 9]);
        call(0, cards.as_mut_ptr(), 16, Some(&[2, 3, 9]), 0);
        call(1, cards.as_mut_ptr(), 2, Some(&[2, 3]), 0);
        call(1, cards.as_mut_ptr(), 16, Some(&[9]), 0);
        call(1, cards.as_mut_ptr(), 16, Some(&[]), 0);
        dirty(&[0, 15]);
        let misaligned = bytes.as_mut_ptr().add(1) as *mut *mut c_void;
        call(0, misaligned, 16, Some(&[0, 15]), 0);
        call(1, misaligned, 16, Some(&[0, 15]), 0);
        call(2, cards.as_mut_ptr(), 16, None, 87);
        call(0, null_mut(), 16, None, 998);
        assert_eq!(free(heap as *mut c_void, 0, 0x8000), 1);
        heap
    };
    let text = std::fs::read_to_string(&path).expect("the trace file was written");
    let _ = std::fs::remove_file(&path);
    let lines: Vec<Line> = read(text.as_bytes()).map(|r| r.expect("every line parses").1).collect();
    let watch: Vec<_> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Record(r) if matches!(r.call, Call::GetWriteWatch { .. }) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(watch.len(), made.len(), "{text}");
    for (r, (flags, array, room, result, error, reported)) in watch.iter().zip(&made) {
        let call = Call::GetWriteWatch {
            flags: *flags,
            base: heap,
            size: 16 * P,
            addresses: *array,
            count: Some(*room),
            granularity: match r.call {
                Call::GetWriteWatch { granularity, .. } => granularity,
                _ => unreachable!("filtered"),
            },
        };
        assert_eq!((r.process, &r.call, r.result, r.last_error), (None, &call, u64::from(*result), *error), "{text}");
        let out = match reported {
            Some(addresses) => Out::WriteWatch { addresses: addresses.clone(), granularity: P as u32 },
            None => Out::None,
        };
        assert_eq!(r.out, out, "{text}");
    }
}
