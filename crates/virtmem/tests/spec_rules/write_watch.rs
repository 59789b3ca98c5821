//! Spec § Write watch, through the Win32-shaped `GetWriteWatch` / `ResetWriteWatch`.

use crate::backend_tests;
use crate::common::*;
use virtmem::win32;

const FAIL: u32 = u32::MAX;
const MARK: usize = 0xDEAD_BEEF;

/// `GetWriteWatch` with every pointer present: (result, last error or 0, reported pages,
/// *count, *granularity). `addresses` holds `room` entries preset to MARK.
fn gww(fx: &Fx, flags: u32, base: usize, size: usize, count: usize, room: usize) -> (u32, u32, Vec<usize>, usize, u32) {
    let mut addrs = vec![MARK; room];
    let mut n = count;
    let mut gran = 0xFFFF_u32;
    win32::SetLastError(0);
    let r = win32::GetWriteWatch(&*fx.space, flags, base, size, Some(&mut addrs[..]), Some(&mut n), Some(&mut gran));
    let e = if r == 0 { 0 } else { win32::GetLastError() };
    (r, e, addrs, n, gran)
}

/// The reported pages of a successful call.
fn dirty(fx: &Fx, flags: u32, base: usize, size: usize, count: usize) -> Vec<usize> {
    let (r, e, addrs, n, gran) = gww(fx, flags, base, size, count, count);
    assert_eq!((r, e), (0, 0), "GetWriteWatch({flags}, {base:#x}, {size:#x}, {count})");
    assert_eq!(gran, P as u32, "*granularity");
    assert!(addrs[n..].iter().all(|&x| x == MARK), "nothing written past *count");
    addrs[..n].to_vec()
}

/// Let the OS take what a `MEM_RESET` of `range` offered it, as memory pressure would:
/// on Linux `MADV_PAGEOUT` reclaims the pages the reset marked free at once; a simulated
/// space drops them (or not) at the reset itself, by its reset policy.
fn reclaim(fx: &Fx, range: std::ops::Range<usize>) {
    #[cfg(all(target_os = "linux", not(miri)))]
    if fx.kind == Kind::Linux {
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        const MADV_PAGEOUT: i32 = 21;
        // SAFETY: pages of a reservation of this test, committed and read-write;
        // MADV_PAGEOUT only asks the kernel to reclaim them (data the kernel may drop,
        // pages the reset offered, reads back as zero; any other is swapped out or kept).
        let r = unsafe { madvise(range.start as *mut std::ffi::c_void, range.len(), MADV_PAGEOUT) };
        assert_eq!(r, 0, "MADV_PAGEOUT (Linux 5.4)");
    }
    let _ = (fx, range);
}

fn last_error_of(r: u32) -> u32 {
    assert_eq!(r, FAIL, "a failure returns 0xFFFFFFFF");
    win32::GetLastError()
}

backend_tests! {
    /// GetWriteWatch's errors, each in the spec's order.
    fn get_write_watch_errors_in_order(fx: &Fx) {
        let s = &*fx.space;
        let a = fx.alloc(fx.w, 4 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
        let plain = fx.reserve_commit(G, 4 * P, PAGE_READWRITE);
        fx.write(a, b"dirty");
        let mut addrs = [MARK; 8];
        let (mut n, mut gran) = (8usize, 0u32);
        let call = |flags: u32, base: usize, size: usize, addrs: Option<&mut [usize]>, n: Option<&mut usize>, g: Option<&mut u32>| {
            win32::SetLastError(0);
            last_error_of(win32::GetWriteWatch(s, flags, base, size, addrs, n, g))
        };
        // 1. flags.
        for flags in [2, 3, 0x100, u32::MAX] {
            assert_eq!(call(flags, a, P, Some(&mut addrs[..]), Some(&mut n), Some(&mut gran)), 87, "flags {flags}");
            assert_eq!(call(flags, a, P, None, None, None), 87, "flags come first");
        }
        // 2. count or granularity NULL → 998.
        assert_eq!(call(0, a, P, Some(&mut addrs[..]), None, Some(&mut gran)), 998);
        assert_eq!(call(0, a, P, Some(&mut addrs[..]), Some(&mut n), None), 998);
        let mut zero = 0usize;
        assert_eq!(call(0, a, P, Some(&mut addrs[..]), Some(&mut zero), None), 998, "NULL granularity before *count == 0");
        // 3. *count == 0 → 87, checked before addresses.
        assert_eq!(call(0, a, P, Some(&mut addrs[..]), Some(&mut zero), Some(&mut gran)), 87);
        assert_eq!(call(0, a, P, None, Some(&mut zero), Some(&mut gran)), 87);
        // 4. addresses NULL → 998, even with a bad range.
        assert_eq!(call(0, a, P, None, Some(&mut n), Some(&mut gran)), 998);
        assert_eq!(call(0, a, 0, None, Some(&mut n), Some(&mut gran)), 998);
        // An array with no room (an empty slice) is one Windows could not write: 998 too,
        // and the dirty page it would have reported stays dirty.
        assert_eq!(call(0, a, P, Some(&mut []), Some(&mut n), Some(&mut gran)), 998);
        assert_eq!(call(win32::WRITE_WATCH_FLAG_RESET, a, P, Some(&mut []), Some(&mut n), Some(&mut gran)), 998);
        // 5. the range.
        for (base, size, what) in [
            (a, 0, "size 0"),
            (a, 4 * P + 1, "past the end"),
            (a + 3 * P, 2 * P, "past the end from inside"),
            (plain, P, "memory without MEM_WRITE_WATCH"),
            (fx.w + 5 * G, P, "free memory"),
            (a + 4 * P, P, "the blocked tail"),
        ] {
            let mut n = 8usize;
            assert_eq!(call(0, base, size, Some(&mut addrs[..]), Some(&mut n), Some(&mut gran)), 87, "{what}");
        }
        assert!(addrs.iter().all(|&x| x == MARK), "no failure wrote into addresses");
        // Nothing was reset by the failures.
        assert_eq!(dirty(fx, 0, a, 4 * P, 8), vec![a]);
    }

    /// Pages written since the last reset, ascending, capped at *count; *count and
    /// *granularity set; nothing written into `addresses` when nothing is dirty.
    fn get_write_watch_reports_written_pages(fx: &Fx) {
        let a = fx.alloc(fx.w, 16 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
        // A fresh reservation is clean: *count = 0, addresses untouched.
        let (r, _, addrs, n, gran) = gww(fx, 0, a, 16 * P, 16, 16);
        assert_eq!((r, n, gran), (0, 0, P as u32));
        assert!(addrs.iter().all(|&x| x == MARK));
        // Writes of any size mark every page they touch, in any order.
        fx.write(a + 9 * P + 5, &[1]);
        fx.write(a + 2 * P - 1, &[1, 2]); // pages 1 and 2
        fx.write(a + 5 * P + 10, &vec![3; 2 * P]); // pages 5, 6, 7
        fx.write(a + 9 * P + 6, &[1]); // page 9 again
        let all = vec![a + P, a + 2 * P, a + 5 * P, a + 6 * P, a + 7 * P, a + 9 * P];
        assert_eq!(dirty(fx, 0, a, 16 * P, 16), all);
        // Capped count: the first *count pages.
        assert_eq!(dirty(fx, 0, a, 16 * P, 4), all[..4].to_vec());
        // A sub-range, with an unaligned base and size.
        assert_eq!(dirty(fx, 0, a + 2 * P + 7, 4 * P, 16), vec![a + 2 * P, a + 5 * P, a + 6 * P]);
        // Reading does not dirty.
        fx.read_vec(a + 12 * P, P);
        assert_eq!(dirty(fx, 0, a + 10 * P, 6 * P, 16), Vec::<usize>::new());
    }

    /// WRITE_WATCH_FLAG_RESET resets only the pages it reported; ResetWriteWatch clears
    /// a range.
    fn reset_semantics(fx: &Fx) {
        let a = fx.alloc(fx.w, 8 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
        fx.write(a, &vec![1; 8 * P]);
        let all: Vec<usize> = (0..8).map(|i| a + i * P).collect();
        assert_eq!(dirty(fx, win32::WRITE_WATCH_FLAG_RESET, a, 8 * P, 3), all[..3].to_vec());
        assert_eq!(dirty(fx, 0, a, 8 * P, 8), all[3..].to_vec(), "a capped reset leaves the rest dirty");
        assert_eq!(dirty(fx, win32::WRITE_WATCH_FLAG_RESET, a + 5 * P, 3 * P, 8), all[5..].to_vec());
        assert_eq!(dirty(fx, 0, a, 8 * P, 8), all[3..5].to_vec());
        // ResetWriteWatch: 0 on success, clears exactly the pages touched by its range.
        fx.write(a, &vec![2; 8 * P]);
        assert_eq!(win32::ResetWriteWatch(&*fx.space, a + 2 * P + 1, 2 * P), 0);
        assert_eq!(dirty(fx, 0, a, 8 * P, 8), [&all[..2], &all[5..]].concat());
        assert_eq!(win32::ResetWriteWatch(&*fx.space, a, 8 * P), 0);
        assert_eq!(dirty(fx, 0, a, 8 * P, 8), Vec::<usize>::new());
        // Written again after a reset: dirty again.
        fx.write(a + 4 * P, &[5]);
        assert_eq!(dirty(fx, 0, a, 8 * P, 8), vec![a + 4 * P]);
    }

    /// "With WRITE_WATCH_FLAG_RESET, only the pages it reported are reset (a capped count
    /// leaves the rest dirty)" and ResetWriteWatch "clears the range", also for a range in
    /// the middle of a large reservation whose written pages are spread over many 64 KiB
    /// blocks, with written pages below and above the range in the same reservation and
    /// in the next write-watched one: what lies outside the range stays dirty, a capped
    /// count resets exactly the pages it reported, and a page written after any of these
    /// resets is reported again.
    fn resets_of_a_range_of_a_spread_out_dirty_set(fx: &Fx) {
        const BLOCKS: usize = 80;
        const RESET: u32 = win32::WRITE_WATCH_FLAG_RESET;
        let ww = MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH;
        let a = fx.alloc(fx.w, BLOCKS * G, ww, PAGE_READWRITE).unwrap();
        let b = fx.alloc(fx.w + BLOCKS * G, BLOCKS * G, ww, PAGE_READWRITE).unwrap();
        assert_eq!(b, a + BLOCKS * G);
        // Pages 3 and 11 of every block of a, page 5 of every block of b.
        let in_a: Vec<usize> = (0..BLOCKS).flat_map(|i| [a + i * G + 3 * P, a + i * G + 11 * P]).collect();
        let in_b: Vec<usize> = (0..BLOCKS).map(|i| b + i * G + 5 * P).collect();
        let write = |pages: &[usize]| pages.iter().for_each(|&p| fx.write(p + 1, &[1]));
        // From page 5 of block 20 to page 4 of block 60, unaligned at both ends.
        let (lo, hi) = (a + 20 * G + 5 * P + 9, a + 60 * G + 4 * P - 7);
        let inside: Vec<usize> = in_a.iter().copied().filter(|&p| p + P > lo && p < hi).collect();
        let outside: Vec<usize> = in_a.iter().copied().filter(|p| !inside.contains(p)).collect();
        assert_eq!((inside.len(), outside.len()), (80, 80));
        write(&in_a);
        write(&in_b);
        // A capped count: the 7 lowest pages of the range, and only they, reset.
        assert_eq!(dirty(fx, RESET, lo, hi - lo, 7), inside[..7]);
        let mut left = [&outside[..], &inside[7..]].concat();
        left.sort_unstable();
        assert_eq!(dirty(fx, 0, a, BLOCKS * G, 1000), left);
        // The rest of the range, with room to spare: the pages outside it stay dirty.
        assert_eq!(dirty(fx, RESET, lo, hi - lo, 1000), inside[7..]);
        assert_eq!(dirty(fx, 0, a, BLOCKS * G, 1000), outside);
        assert_eq!(dirty(fx, 0, b, BLOCKS * G, 1000), in_b);
        // Written again: the range's pages are reported again, and ResetWriteWatch of the
        // range clears them alone.
        write(&inside);
        assert_eq!(dirty(fx, 0, a, BLOCKS * G, 1000), in_a);
        assert_eq!(win32::ResetWriteWatch(&*fx.space, lo, hi - lo), 0);
        assert_eq!(dirty(fx, 0, a, BLOCKS * G, 1000), outside);
        write(&[inside[0], inside[41], inside[79]]);
        assert_eq!(dirty(fx, 0, lo, hi - lo, 1000), [inside[0], inside[41], inside[79]]);
        // The whole of a (b still dirty above it), capped, then with room to spare.
        let now: Vec<usize> = in_a.iter().copied().filter(|p| outside.contains(p) || [inside[0], inside[41], inside[79]].contains(p)).collect();
        assert_eq!(dirty(fx, RESET, a, BLOCKS * G, 50), now[..50]);
        assert_eq!(dirty(fx, RESET, a, BLOCKS * G, 1000), now[50..]);
        assert_eq!(dirty(fx, 0, a, BLOCKS * G, 1000), Vec::<usize>::new());
        assert_eq!(dirty(fx, 0, b, BLOCKS * G, 1000), in_b);
        // b clean, a written: a resetting call that reports every dirty page there is,
        // then writes after it, reported again.
        assert_eq!(win32::ResetWriteWatch(&*fx.space, b, BLOCKS * G), 0);
        assert_eq!(dirty(fx, 0, b, BLOCKS * G, 1000), Vec::<usize>::new());
        write(&in_a);
        assert_eq!(dirty(fx, RESET, a, BLOCKS * G, 1000), in_a);
        assert_eq!(dirty(fx, 0, a, BLOCKS * G, 1000), Vec::<usize>::new());
        write(&in_a[..3]);
        write(&in_b[70..]);
        assert_eq!(dirty(fx, 0, a, BLOCKS * G, 1000), in_a[..3]);
        assert_eq!(dirty(fx, 0, b, BLOCKS * G, 1000), in_b[70..]);
        // And the same once every page of a is dirty and ResetWriteWatch takes them all.
        write(&in_a);
        assert_eq!(win32::ResetWriteWatch(&*fx.space, a, BLOCKS * G), 0);
        assert_eq!(dirty(fx, 0, a, BLOCKS * G, 1000), Vec::<usize>::new());
        write(&[in_a[5]]);
        assert_eq!(dirty(fx, 0, a, BLOCKS * G, 1000), [in_a[5]]);
        assert_eq!(dirty(fx, 0, b, BLOCKS * G, 1000), in_b[70..]);
    }

    /// ResetWriteWatch: size 0 or memory without write watch → 87 (nonzero result).
    fn reset_write_watch_errors(fx: &Fx) {
        let s = &*fx.space;
        let a = fx.alloc(fx.w, 4 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
        let plain = fx.reserve_commit(G, 4 * P, PAGE_READWRITE);
        fx.write(a, b"d");
        for (base, size, what) in [
            (a, 0, "size 0"),
            (plain, P, "no write watch"),
            (fx.w + 5 * G, P, "free memory"),
            (a, 5 * P, "past the end"),
        ] {
            win32::SetLastError(0);
            let r = win32::ResetWriteWatch(s, base, size);
            assert_ne!(r, 0, "{what}");
            assert_eq!(win32::GetLastError(), 87, "{what}");
        }
        assert_eq!(dirty(fx, 0, a, 4 * P, 4), vec![a], "failures reset nothing");
    }

    /// Protection changes do not alter the dirty state; decommitting clears it and a
    /// recommitted page starts clean.
    fn protection_and_decommit(fx: &Fx) {
        let a = fx.alloc(fx.w, 6 * P, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
        fx.commit(a, 6 * P, PAGE_READWRITE);
        assert_eq!(dirty(fx, 0, a, 6 * P, 8), Vec::<usize>::new(), "commit does not dirty");
        fx.write(a, &vec![1; 6 * P]);
        fx.protect(a, 6 * P, PAGE_READONLY).unwrap();
        fx.protect(a, 2 * P, PAGE_NOACCESS).unwrap();
        fx.protect(a, 6 * P, PAGE_READWRITE | PAGE_GUARD).unwrap();
        fx.protect(a, 6 * P, PAGE_READWRITE).unwrap();
        let all: Vec<usize> = (0..6).map(|i| a + i * P).collect();
        assert_eq!(dirty(fx, 0, a, 6 * P, 8), all);
        fx.free(a + 2 * P, 2 * P, MEM_DECOMMIT).unwrap();
        assert_eq!(dirty(fx, 0, a, 6 * P, 8), vec![a, a + P, a + 4 * P, a + 5 * P]);
        fx.commit(a + 2 * P, 2 * P, PAGE_READWRITE);
        assert_eq!(dirty(fx, 0, a, 6 * P, 8), vec![a, a + P, a + 4 * P, a + 5 * P], "recommitted pages start clean");
        fx.free(a, 0, MEM_DECOMMIT).unwrap();
        assert_eq!(dirty(fx, 0, a, 6 * P, 8), Vec::<usize>::new());
        // Write watch works on reserved-only pages too (nothing can be written there).
        fx.commit(a + P, P, PAGE_READWRITE);
        fx.write(a + P, &[1]);
        assert_eq!(dirty(fx, 0, a, 6 * P, 8), vec![a + P]);
    }

    /// GetWriteWatch reports every page "written since the last reset" (of write watch:
    /// ResetWriteWatch, WRITE_WATCH_FLAG_RESET); MEM_RESET is not one, and only a
    /// decommit clears the state. Pages written and then MEM_RESET stay written, also once
    /// the OS has taken the memory the reset offered.
    fn mem_reset_keeps_written_pages_written(fx: &Fx) {
        let a = fx.alloc(fx.w, 8 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
        fx.write(a, &vec![5; 3 * P]);
        fx.write(a + 6 * P, &[6]);
        let written = vec![a, a + P, a + 2 * P, a + 6 * P];
        fx.alloc(a, 8 * P, MEM_RESET, PAGE_READWRITE).unwrap();
        assert_eq!(dirty(fx, 0, a, 8 * P, 8), written, "right after MEM_RESET");
        reclaim(fx, a..a + 8 * P);
        assert_eq!(dirty(fx, 0, a, 8 * P, 8), written, "once the OS took the reset pages");
        let _ = fx.alloc(a, 8 * P, MEM_RESET_UNDO, PAGE_READWRITE);
        assert_eq!(dirty(fx, 0, a, 8 * P, 8), written, "after MEM_RESET_UNDO");
        fx.write(a + 4 * P, &[1]);
        assert_eq!(dirty(fx, win32::WRITE_WATCH_FLAG_RESET, a, 8 * P, 8), [&written[..3], &[a + 4 * P, a + 6 * P]].concat());
        assert_eq!(dirty(fx, 0, a, 8 * P, 8), Vec::<usize>::new());
    }

    /// MEM_WRITE_WATCH with MEM_LARGE_PAGES: a space either refuses the allocation with a
    /// clear error (large pages it cannot have, or write tracking it cannot do on them)
    /// or tracks writes by the page like any other: a one-byte write reports one page, a
    /// capped count with WRITE_WATCH_FLAG_RESET reports (and resets) that many pages, and
    /// ResetWriteWatch clears any range of pages. (Linux tracked a huge page as a whole:
    /// 512 pages for one write, nothing at all with the reset flag and a count below 512
    /// or a range inside one huge page, and 87 for such a ResetWriteWatch.)
    fn write_watch_on_large_pages_is_exact_or_refused(fx: &Fx) {
        let lp = fx.space.system_info().large_page_size.max(2 << 20);
        let ty = MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES | MEM_WRITE_WATCH;
        let before = fx.snapshot();
        let b = match fx.alloc(0, lp, ty, PAGE_READWRITE) {
            Ok(b) => b,
            Err(e) => {
                assert!([50, 1450].contains(&e.code()), "a clear error: {e}");
                return assert_eq!(fx.snapshot(), before, "a refused allocation leaves nothing");
            }
        };
        fx.write(b + 5, b"x");
        fx.write(b + 7 * P, &[1; 3 * P]);
        let written = vec![b, b + 7 * P, b + 8 * P, b + 9 * P];
        assert_eq!(dirty(fx, 0, b, lp, 1024), written, "the pages the writes touched");
        assert_eq!(dirty(fx, win32::WRITE_WATCH_FLAG_RESET, b, lp, 2), written[..2], "a capped count");
        assert_eq!(dirty(fx, win32::WRITE_WATCH_FLAG_RESET, b + 8 * P, P, 8), written[2..3], "inside the large page");
        assert_eq!(win32::ResetWriteWatch(&*fx.space, b + 9 * P, P), 0);
        assert_eq!(dirty(fx, 0, b, lp, 1024), Vec::<usize>::new());
        fx.free(b, 0, MEM_RELEASE).unwrap();
    }

    /// GetWriteWatch: "a range that runs past the end of the write-watched reservation
    /// ... → 87" also when the next reservation is write-watched too (two adjacent
    /// write-watched reservations are not one range), and a failed call with
    /// WRITE_WATCH_FLAG_RESET resets nothing; ResetWriteWatch clears only its range.
    fn write_watch_ranges_end_at_their_reservation(fx: &Fx) {
        let ww = MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH;
        let a = fx.alloc(fx.w, G, ww, PAGE_READWRITE).unwrap();
        let b = fx.alloc(fx.w + G, G, ww, PAGE_READWRITE).unwrap();
        assert_eq!(b, a + G);
        fx.write(a + G - P, &[1; 2 * P]); // the last page of a, the first of b
        for (base, size, what) in [(a + G - P, 2 * P, "across the two"), (a, 2 * G, "both whole")] {
            for flags in [0, win32::WRITE_WATCH_FLAG_RESET] {
                let (r, e, addrs, _, _) = gww(fx, flags, base, size, 8, 8);
                assert_eq!((r, e), (FAIL, 87), "GetWriteWatch({flags}, {what})");
                assert!(addrs.iter().all(|&x| x == MARK), "{what}: nothing written into addresses");
            }
        }
        // Failures with the reset flag and a bad count or buffer reset nothing either.
        assert_eq!(gww(fx, win32::WRITE_WATCH_FLAG_RESET, a, G, 0, 8).1, 87);
        let mut n = 8usize;
        let mut gran = 0u32;
        win32::SetLastError(0);
        let r = win32::GetWriteWatch(&*fx.space, win32::WRITE_WATCH_FLAG_RESET, a, G, None, Some(&mut n), Some(&mut gran));
        assert_eq!((r, win32::GetLastError()), (FAIL, 998));
        assert_eq!(dirty(fx, 0, a, G, 8), vec![a + G - P]);
        assert_eq!(dirty(fx, 0, b, G, 8), vec![b]);
        // Each reservation on its own: reset of one leaves the other dirty.
        assert_eq!(win32::ResetWriteWatch(&*fx.space, a, G), 0);
        assert_eq!(dirty(fx, 0, a, G, 8), Vec::<usize>::new());
        assert_eq!(dirty(fx, 0, b, G, 8), vec![b]);
    }

    /// ResetWriteWatch: a range that runs past the end of its write-watched reservation
    /// is 87 also when the next reservation is write-watched too (two reservations are
    /// never one range, as for GetWriteWatch; Wine 8 agrees), and nothing is reset in
    /// either.
    fn reset_write_watch_across_two_reservations_is_87(fx: &Fx) {
        let ww = MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH;
        let a = fx.alloc(fx.w, G, ww, PAGE_READWRITE).unwrap();
        let b = fx.alloc(fx.w + G, G, ww, PAGE_READWRITE).unwrap();
        fx.write(a + G - P, &[1; 2 * P]);
        for (base, size) in [(a + G - P, 2 * P), (a, 2 * G), (a + G - 1, 2)] {
            win32::SetLastError(0);
            assert_ne!(win32::ResetWriteWatch(&*fx.space, base, size), 0, "{base:#x}+{size:#x}");
            assert_eq!(win32::GetLastError(), 87, "{base:#x}+{size:#x}");
        }
        assert_eq!(dirty(fx, 0, a, G, 8), vec![a + G - P]);
        assert_eq!(dirty(fx, 0, b, G, 8), vec![b]);
    }

    /// GetWriteWatch and ResetWriteWatch with a base at or above the top of the user
    /// range, or a size that runs past it or wraps: 87 (Wine 8 says the same), no
    /// overflow, and nothing is reset.
    fn write_watch_ranges_past_the_top_or_wrapping_are_87(fx: &Fx) {
        let a = fx.alloc(fx.w, 4 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
        fx.write(a, b"d");
        let top = fx.space.system_info().maximum_application_address + 1;
        for (base, size) in [(a, usize::MAX), (a + P, usize::MAX - a - P + 1), (a, usize::MAX - a), (top, P), (usize::MAX, 1), (usize::MAX - P + 1, P - 1)] {
            for flags in [0, win32::WRITE_WATCH_FLAG_RESET] {
                let (r, e, addrs, _, _) = gww(fx, flags, base, size, 8, 8);
                assert_eq!((r, e), (FAIL, 87), "GetWriteWatch({flags}, {base:#x}, {size:#x})");
                assert!(addrs.iter().all(|&x| x == MARK));
            }
            win32::SetLastError(0);
            assert_ne!(win32::ResetWriteWatch(&*fx.space, base, size), 0);
            assert_eq!(win32::GetLastError(), 87, "ResetWriteWatch({base:#x}, {size:#x})");
        }
        assert_eq!(dirty(fx, 0, a, 4 * P, 8), vec![a]);
    }

    /// "Protection changes do not alter the dirty state" — nor what is tracked after
    /// them: pages reset and then protected READONLY, NOACCESS, GUARD and back report the
    /// writes made after those changes, and only those (a guard write that faulted wrote
    /// nothing and dirties nothing, its retry does); recommitting committed pages is no
    /// write either.
    fn writes_after_protection_changes_are_tracked(fx: &Fx) {
        let a = fx.alloc(fx.w, 4 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
        fx.write(a, &vec![1; 4 * P]);
        assert_eq!(win32::ResetWriteWatch(&*fx.space, a, 4 * P), 0);
        fx.protect(a, 4 * P, PAGE_READONLY).unwrap();
        fx.protect(a + P, P, PAGE_NOACCESS).unwrap();
        fx.protect(a + 2 * P, P, PAGE_READWRITE | PAGE_GUARD).unwrap();
        assert_eq!(fx.space.write(a, &[2]).unwrap_err().exception_code(), Some(0xC000_0005));
        fx.protect(a, 2 * P, PAGE_READWRITE).unwrap();
        fx.commit(a + 3 * P, P, PAGE_EXECUTE_READWRITE);
        assert_eq!(dirty(fx, 0, a, 4 * P, 8), Vec::<usize>::new(), "no write yet");
        assert_eq!(fx.space.write(a + 2 * P, &[3]).unwrap_err().exception_code(), Some(0x8000_0001));
        assert_eq!(dirty(fx, 0, a, 4 * P, 8), Vec::<usize>::new(), "the guarded write wrote nothing");
        fx.write(a + 2 * P, &[3]);
        fx.write(a + P + 7, &[4]);
        fx.write(a + 3 * P, &[5]);
        assert_eq!(dirty(fx, 0, a, 4 * P, 8), vec![a + P, a + 2 * P, a + 3 * P]);
    }

    /// `write_watch_pages` (what a caller sizes its `addresses` array by) accepts exactly
    /// the ranges GetWriteWatch accepts, counts every page the range touches, and neither
    /// reads nor resets the dirty state.
    fn write_watch_pages_counts_what_get_write_watch_accepts(fx: &Fx) {
        let s = &*fx.space;
        let a = fx.alloc(fx.w, 6 * P, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
        fx.commit(a, 2 * P, PAGE_READWRITE);
        let plain = fx.reserve_commit(G, 4 * P, PAGE_READWRITE);
        fx.write(a + P, &[1]);
        assert_eq!(s.write_watch_pages(a, 6 * P), Ok(6), "reserved pages count too");
        assert_eq!(s.write_watch_pages(a + P - 1, 2), Ok(2), "two bytes across a page boundary");
        assert_eq!(s.write_watch_pages(a + 5 * P + 1, P - 1), Ok(1));
        for (base, size) in [(a, 0), (a, 6 * P + 1), (a + 5 * P, 2 * P), (plain, P), (fx.w + 4 * G, P)] {
            assert_eq!(code(&s.write_watch_pages(base, size)), 87, "{base:#x}+{size:#x}");
            assert_eq!(last_error_of(gww(fx, 0, base, size, 8, 8).0), 87, "GetWriteWatch agrees at {base:#x}+{size:#x}");
        }
        assert_eq!(dirty(fx, 0, a, 6 * P, 8), vec![a + P], "the count reset nothing");
    }

    /// Write watch state belongs to the reservation: "It reports ... each page in the
    /// range written since the last reset" of *this* reservation. One made again at the
    /// address of a released write-watched reservation whose pages were written (which a
    /// backend may keep mapped for reuse) starts clean, made committed at once or reserved
    /// and then committed; and so does one made where a plain reservation was written and
    /// released. Its own writes are then reported exactly.
    fn a_watched_reservation_made_where_another_was_released_starts_clean(fx: &Fx) {
        let ww = MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH;
        let at = fx.w;
        for round in 0..2 {
            let a = fx.alloc(at, 8 * P, ww, PAGE_READWRITE).unwrap();
            fx.write(a, &vec![1; 8 * P]);
            assert_eq!(dirty(fx, 0, a, 8 * P, 8).len(), 8, "round {round}: written");
            fx.free(a, 0, MEM_RELEASE).unwrap();
            let b = if round == 0 {
                fx.alloc(at, 8 * P, ww, PAGE_READWRITE).unwrap()
            } else {
                let b = fx.alloc(at, 8 * P, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
                fx.commit(b, 8 * P, PAGE_READWRITE);
                b
            };
            assert_eq!(b, a);
            assert_eq!(dirty(fx, 0, b, 8 * P, 8), Vec::<usize>::new(), "round {round}: a new reservation is clean");
            fx.write(b + 3 * P, &[2]);
            assert_eq!(dirty(fx, 0, b, 8 * P, 8), vec![b + 3 * P], "round {round}");
            fx.free(b, 0, MEM_RELEASE).unwrap();
        }
        // A plain reservation written and released, then a watched one in its place.
        let p = fx.reserve_commit(G, 4 * P, PAGE_READWRITE);
        fx.write(p, &vec![3; 4 * P]);
        fx.free(p, 0, MEM_RELEASE).unwrap();
        let c = fx.alloc(p, 4 * P, ww, PAGE_READWRITE).unwrap();
        assert_eq!(dirty(fx, 0, c, 4 * P, 8), Vec::<usize>::new(), "clean after a plain one");
        assert_eq!(fx.read_vec(c, 4 * P), vec![0; 4 * P]);
    }
}

/// As [`mem_reset_keeps_written_pages_written`], on a simulated space whose resets drop
/// the data at once (the OS needing the memory at the reset itself).
#[test]
fn sim_discarding_mem_reset_keeps_written_pages_written() {
    use virtmem::{ResetPolicy, SimConfig};
    mem_reset_keeps_written_pages_written(&Fx::sim_with(SimConfig {
        reset_policy: ResetPolicy::Discard,
        ..Default::default()
    }));
}
