//! The IHostMalloc heap (over this process's real memory, through a host memory manager)
//! against the system allocator, on the same mixed-size workload, single- and
//! multi-threaded. Compare `host` with `system` in each group: the ratio is the figure.
//! `host_query`: `VirtualQuery` through the manager beside the same query of the space.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use virtmem::host::{CriticalLevel, HostMalloc, HostMemoryManager, MallocType};
use virtmem::{AllocationType, Protection};

const SLOTS: usize = 512;
const OPS: usize = 20_000;
const THREADS: usize = 2;

#[derive(Clone, Copy)]
enum Op {
    Alloc(usize, usize),
    Free(usize),
}

/// A deterministic mix: 60 % 8-64 bytes, 25 % 65-512, 13 % 513-2048, 2 % 2-32 KiB; a live
/// set of up to 512 blocks freed in random order.
fn workload(seed: u64) -> Vec<Op> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut live = [false; SLOTS];
    let mut ops = Vec::with_capacity(OPS);
    while ops.len() < OPS {
        let slot = (next() % SLOTS as u64) as usize;
        if live[slot] {
            ops.push(Op::Free(slot));
        } else {
            let r = next() % 100;
            let (lo, hi): (u64, u64) = match r {
                0..=59 => (8, 64),
                60..=84 => (65, 512),
                85..=97 => (513, 2048),
                // HOST_BENCH_SMALL_ONLY=1: no large blocks (the size-class path alone).
                98..=99 if std::env::var_os("HOST_BENCH_SMALL_ONLY").is_some() => (513, 2048),
                _ => (2049, 32768),
            };
            ops.push(Op::Alloc(slot, (lo + next() % (hi - lo + 1)) as usize));
        }
        live[slot] = !live[slot];
    }
    ops
}

trait Allocator: Sync {
    fn alloc(&self, size: usize) -> *mut u8;
    fn free(&self, p: *mut u8, size: usize);
}

struct Sys;
impl Allocator for Sys {
    fn alloc(&self, size: usize) -> *mut u8 {
        // SAFETY: nonzero size, valid alignment.
        unsafe { System.alloc(Layout::from_size_align(size, 16).unwrap()) }
    }
    fn free(&self, p: *mut u8, size: usize) {
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(p, Layout::from_size_align(size, 16).unwrap()) }
    }
}

struct Host(HostMalloc);
impl Allocator for Host {
    fn alloc(&self, size: usize) -> *mut u8 {
        self.0.alloc(size, CriticalLevel::Task).unwrap() as *mut u8
    }
    fn free(&self, p: *mut u8, _size: usize) {
        self.0.free(p as usize).unwrap()
    }
}

/// Run the ops, touching the first and last byte of every block.
fn run(a: &dyn Allocator, ops: &[Op]) {
    let mut slots = [(std::ptr::null_mut::<u8>(), 0usize); SLOTS];
    for &op in ops {
        match op {
            Op::Alloc(s, size) => {
                let p = a.alloc(size);
                // SAFETY: a fresh block of `size` bytes.
                unsafe {
                    p.write_volatile(1);
                    p.add(size - 1).write_volatile(2);
                }
                slots[s] = (p, size);
            }
            Op::Free(s) => {
                let (p, size) = std::mem::replace(&mut slots[s], (std::ptr::null_mut(), 0));
                a.free(p, size);
            }
        }
    }
    for (p, size) in slots {
        if !p.is_null() {
            a.free(p, size);
        }
    }
}

fn heap(ty: MallocType) -> HostMalloc {
    let space = Arc::new(virtmem::LinuxSpace::linux().expect("a Linux space"));
    let m = HostMemoryManager::builder(space, 1 << 30).build_started().unwrap();
    m.create_malloc(ty).unwrap()
}

fn bench(c: &mut Criterion) {
    let ops: Vec<Vec<Op>> = (0..THREADS as u64).map(|t| workload(0x5EED + t)).collect();
    let sys = Sys;
    let single = Host(heap(MallocType::empty()));
    let shared = Host(heap(MallocType::THREADSAFE));

    let mut g = c.benchmark_group("heap_mixed_1thread");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for (name, a) in [("system", &sys as &dyn Allocator), ("host", &single)] {
        g.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(|| run(a, &ops[0])));
    }
    g.finish();

    let mut g = c.benchmark_group(format!("heap_mixed_{THREADS}threads"));
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for (name, a) in [("system", &sys as &dyn Allocator), ("host", &shared)] {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                std::thread::scope(|s| {
                    for ops in &ops {
                        s.spawn(move || {
                            for _ in 0..iters {
                                run(a, ops);
                            }
                        });
                    }
                });
                t.elapsed()
            })
        });
    }
    g.finish();
}

/// `VirtualQuery` of a host reservation through the manager (which reads its own
/// record without waiting, then tries the space's lock) beside the same query made of
/// the space directly, on a simulated space: what the non-blocking host query adds.
fn query(c: &mut Criterion) {
    let space = Arc::new(virtmem::SimSpace::simulated());
    let m = HostMemoryManager::builder(space.clone(), 1 << 30).build_started().unwrap();
    let bases: Vec<usize> = (0..64)
        .map(|_| {
            let b = m
                .virtual_alloc(0, 1 << 20, AllocationType::RESERVE, Protection::READWRITE, CriticalLevel::Task)
                .unwrap();
            m.virtual_alloc(b, 1 << 16, AllocationType::COMMIT, Protection::READWRITE, CriticalLevel::Task).unwrap();
            b
        })
        .collect();
    let mut g = c.benchmark_group("host_query");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    g.bench_function("space", |b| {
        b.iter(|| bases.iter().map(|&a| space.query(a + 0x8000).unwrap().region_size).sum::<usize>())
    });
    g.bench_function("host", |b| {
        b.iter(|| bases.iter().map(|&a| m.virtual_query(a + 0x8000).unwrap().region_size).sum::<usize>())
    });
    g.finish();
}

criterion_group!(benches, bench, query);
criterion_main!(benches);
