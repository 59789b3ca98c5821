//! One test per rule of `/work/shared/spec/win32-virtual-memory.md`, each run on every
//! backend (see `common::backend_tests!`). The modules follow the sections of the spec.

#[path = "../common/mod.rs"]
mod common;

mod alloc;
mod commit_limit;
mod constants;
mod free;
mod guard;
mod lock;
mod process_copy;
mod protect;
mod query;
mod reset;
mod space;
mod write_watch;

/// The Linux spaces these tests use confine the real backend to a window; the wrapper
/// must hand every call to the backend's own code, not to the trait's defaults, or the
/// tests would check code no user runs. Releasing a committed reservation is the case
/// where the Linux backend has its own way (one `MADV_GUARD_INSTALL` into its pool,
/// where the default makes the pages inaccessible with `mprotect` first).
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn confined_linux_space_runs_the_backends_own_release() {
    let w = common::linux::window(common::WINDOW);
    let backend = virtmem::LinuxBackend::new().expect("linux backend");
    let guards = backend.uses_guard_regions();
    let space =
        virtmem::AddressSpace::with_backend(common::linux::Confined::new(backend, w..w + common::WINDOW, false));
    let ty = virtmem::AllocationType::RESERVE | virtmem::AllocationType::COMMIT;
    let base = space.alloc(0, 0x10000, ty, virtmem::Protection::READWRITE).unwrap();
    let before = space.backend().inner().stats();
    space.free(base, 0, virtmem::FreeType::RELEASE).unwrap();
    let after = space.backend().inner().stats();
    if guards {
        assert_eq!(after.syscalls - before.syscalls, 1, "one MADV_GUARD_INSTALL");
        assert_eq!(after.guarded_runs, before.guarded_runs + 1);
    }
    assert!(after.pooled_bytes >= before.pooled_bytes + 0x10000);
}
