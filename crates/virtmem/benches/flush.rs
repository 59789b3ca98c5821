//! `FlushProcessWriteBuffers` (`virtmem::flush_process_write_buffers`) beside the bare
//! system calls of its three mechanisms, each timed while a second thread of the process
//! runs on another CPU (the thread the barrier has to reach; with none running, the
//! expedited command interrupts no one and costs a system call alone). Wall-clock time:
//! the caller waits for the other CPU.
//!
//! - `flush/virtmem`: the library's call, on this kernel `MEMBARRIER_CMD_PRIVATE_EXPEDITED`;
//! - `flush/expedited`: that `membarrier` command, bare (the baseline of the ratio);
//! - `flush/global`: `MEMBARRIER_CMD_GLOBAL`, bare (what the library falls back to first);
//! - `flush/page_protection`: a locked page made writable, written and made inaccessible,
//!   bare (the system calls of the library's last fallback).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use rustix::thread::{membarrier, MembarrierCommand};

fn flush(c: &mut Criterion) {
    // The thread to be reached: spins (storing, so that it has a store buffer to drain)
    // until the benchmarks end.
    let stop = AtomicBool::new(false);
    let spins = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                spins.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert_eq!(virtmem::flush_mechanism(), virtmem::FlushMechanism::MembarrierPrivateExpedited);
        let mut g = c.benchmark_group("flush");
        g.bench_function("virtmem", |b| b.iter(virtmem::flush_process_write_buffers));
        g.bench_function("expedited", |b| {
            b.iter(|| membarrier(MembarrierCommand::PrivateExpedited).expect("registered by the library"))
        });
        g.measurement_time(Duration::from_secs(4));
        g.bench_function("global", |b| b.iter(|| membarrier(MembarrierCommand::Global).expect("membarrier")));
        g.measurement_time(Duration::from_millis(2000));
        let size = rustix::param::page_size();
        // SAFETY: a fresh mapping at an address the kernel chooses touches nothing that exists.
        let page =
            unsafe { rustix::mm::mmap_anonymous(std::ptr::null_mut(), size, ProtFlags::empty(), MapFlags::SHARED) }
                .expect("mmap");
        // SAFETY: locking the page just mapped changes no contents.
        let _ = unsafe { rustix::mm::mlock(page, size) };
        g.bench_function("page_protection", |b| {
            b.iter(|| {
                // SAFETY: the page is this benchmark's own mapping and only this thread uses it.
                unsafe { rustix::mm::mprotect(page, size, MprotectFlags::READ | MprotectFlags::WRITE) }
                    .expect("mprotect");
                // SAFETY: mapped readable and writable just above, page-aligned, this thread's alone.
                unsafe { (*(page as *const AtomicUsize)).fetch_add(1, Ordering::SeqCst) };
                // SAFETY: as above; taking the access away is what interrupts the other CPU.
                unsafe { rustix::mm::mprotect(page, size, MprotectFlags::empty()) }.expect("mprotect");
            })
        });
        g.finish();
        // SAFETY: the page is ours and nothing refers to it any more.
        let _ = unsafe { rustix::mm::munmap(page, size) };
        stop.store(true, Ordering::Relaxed);
    });
    black_box(spins.load(Ordering::Relaxed));
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(2000))
        .sample_size(20)
        .configure_from_args()
}

criterion_group! { name = benches; config = config(); targets = flush }
criterion_main!(benches);
