//! Loading the built `libvirtmem.so` (the cdylib of this package, which cargo builds
//! before the integration tests) and looking up its exports.

#![allow(dead_code)]

use std::ffi::{c_void, CString};
use std::path::PathBuf;

/// The loaded library.
pub struct Lib(*mut c_void);

// SAFETY: a dlopen handle may be used from any thread.
unsafe impl Send for Lib {}
// SAFETY: dlsym is thread-safe.
unsafe impl Sync for Lib {}

/// Where cargo put `libvirtmem.so` for this build.
pub fn library_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory");
    let candidates = [deps.join("libvirtmem.so"), deps.join("../libvirtmem.so")];
    let found = || candidates.iter().find(|c| c.exists()).cloned();
    // `cargo test` does not always build a cdylib-only package's library before its
    // integration tests (it cannot be linked into them), so one found there may be left
    // from an older build: build it with the same profile every time (nothing to do when
    // it is up to date).
    let release = deps.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "release");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", "virtmem-capi"]).current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build for libvirtmem.so");
    assert!(status.success(), "cargo build -p virtmem-capi failed");
    found().unwrap_or_else(|| panic!("libvirtmem.so not found next to {}", exe.display()))
}

impl Lib {
    /// `dlopen` the library.
    pub fn open() -> Lib {
        let path = CString::new(library_path().to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; the library's initialisers are Rust statics.
        let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!h.is_null(), "dlopen failed");
        Lib(h)
    }

    /// The address of export `name`, as a function pointer of type `F`.
    ///
    /// # Safety
    /// `F` must be the export's exact C signature.
    pub unsafe fn get<F: Copy>(&self, name: &str) -> F {
        let c = CString::new(name).unwrap();
        // SAFETY: the handle is live and `c` is NUL-terminated.
        let p = unsafe { libc::dlsym(self.0, c.as_ptr()) };
        assert!(!p.is_null(), "{name} is not exported");
        assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
        // SAFETY: the caller promises F is the function's signature (a function pointer).
        unsafe { std::mem::transmute_copy(&p) }
    }
}
