//! `HostGlobalAlloc` must never unwind: `GlobalAlloc` forbids it ("undefined behavior if
//! global allocators unwind"). Yet a heap allocation runs the program's own code: a slab
//! or block commit that crosses a notification threshold calls the memory-notification
//! callbacks on the allocating thread. A callback that panics must stop the process
//! (abort), never unwind out of `alloc` into code that assumed it could not.
//!
//! The check runs in a child process (this test binary run again with one test and an
//! environment variable set), because the right outcome is the child's death by `SIGABRT`.

#[cfg(all(target_os = "linux", not(miri)))]
mod linux {
    use std::alloc::{GlobalAlloc, Layout};
    use std::os::unix::process::ExitStatusExt;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::process::Command;
    use std::sync::Arc;

    use virtmem::host::{HostGlobalAlloc, HostMemoryManager, MallocType, MemoryAvailable, Thresholds};
    use virtmem::LinuxSpace;

    const CHILD: &str = "VIRTMEM_TEST_GLOBAL_ALLOC_UNWIND_CHILD";

    /// Not the program's global allocator: called directly, as the standard library's
    /// allocation functions call the one that is.
    static ALLOC: HostGlobalAlloc = HostGlobalAlloc::new();

    /// In the child: a heap over this process's memory whose manager's Low callback
    /// panics, then an allocation big enough to cross the Low threshold.
    fn child() {
        let space = Arc::new(LinuxSpace::linux().unwrap());
        let m = HostMemoryManager::builder(space, 8 << 20)
            .soft_reserve(0)
            .emergency_reserve(0)
            .thresholds(Thresholds { low_percent: 50, high_percent: 10, hysteresis: 5 })
            .on_memory_notification(|level| {
                if level == MemoryAvailable::Low {
                    panic!("the program's notification callback panics");
                }
            })
            .build_started()
            .unwrap();
        let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
        // SAFETY: the manager runs over this process's real memory and is leaked, so its
        // reservations stay mapped for the life of the process.
        unsafe { ALLOC.install(heap) }.unwrap();
        std::mem::forget(m);
        let layout = Layout::from_size_align(6 << 20, 16).unwrap();
        // SAFETY: a layout of non-zero size.
        let r = catch_unwind(AssertUnwindSafe(|| unsafe { ALLOC.alloc(layout) }));
        match r {
            Err(_) => {
                eprintln!("UNWOUND: a panic came out of GlobalAlloc::alloc");
                std::process::exit(3);
            }
            Ok(p) => {
                eprintln!("RETURNED {p:?}");
                std::process::exit(4);
            }
        }
    }

    #[test]
    fn a_panic_inside_the_global_allocator_aborts_instead_of_unwinding() {
        if std::env::var_os(CHILD).is_some() {
            child();
            return;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "linux::a_panic_inside_the_global_allocator_aborts_instead_of_unwinding", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .expect("run the child");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("UNWOUND"), "the panic unwound out of GlobalAlloc::alloc:\n{stderr}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "the child should have aborted: {:?}\n{stderr}",
            out.status
        );
    }
}
