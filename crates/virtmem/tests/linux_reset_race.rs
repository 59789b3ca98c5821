//! A program thread storing to its committed pages while another thread resets them
//! (`MEM_RESET` allows that: the contents become "unchanged or zero"). The reset reads
//! the pages to note their witness words (for `MEM_RESET_UNDO`); it must not race with
//! those stores. A plain run only checks that nothing fails; the race itself shows under
//! ThreadSanitizer, which reported it on the code that read the pages in place:
//!
//! ```sh
//! RUSTFLAGS=-Zsanitizer=thread cargo +nightly test -Zbuild-std \
//!     --target x86_64-unknown-linux-gnu -p virtmem --test linux_reset_race -- --nocapture
//! ```
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn a_reset_racing_the_programs_own_stores() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use virtmem::{AllocationType, Protection};
    let space = Arc::new(virtmem::LinuxSpace::linux().unwrap());
    let base =
        space.alloc(0, 1 << 16, AllocationType::RESERVE | AllocationType::COMMIT, Protection::READWRITE).unwrap();
    // SAFETY: the block is ours, committed read-write; only raw pointers reach it.
    unsafe { std::ptr::write_bytes(base as *mut u8, 0x5A, 1 << 16) };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: as above; the program's ordinary stores to its own memory.
                unsafe { (base as *mut u64).add((i as usize * 513) % (1 << 13)).write(i | 1) };
                i += 1;
            }
        })
    };
    for _ in 0..200 {
        space.alloc(base, 1 << 16, AllocationType::RESET, Protection::READWRITE).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}
