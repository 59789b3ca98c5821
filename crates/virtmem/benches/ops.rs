//! Per-call cost of each operation on every backend beside the bare system calls doing
//! the same work, in the same run: each criterion group `ops_<op>` holds `raw` (the
//! baseline), `sim` and, when present, `linux`. 1000 live reservations (64 KiB, first
//! page committed, a 64 KiB hole after each) so that no call hits an empty structure;
//! the kernel sees the same layout for `raw` and `linux`.
//! `scripts/bench-report.py` turns the results into ratios.

mod common;

use common::{bench_ops, populate, Mem, GRANULE};
use criterion::{criterion_group, criterion_main};

type Criterion = criterion::Criterion<common::ThreadCpu>;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

const LIVE: usize = 1000;

fn ops(c: &mut Criterion) {
    #[cfg(target_os = "linux")]
    {
        let raw = common::Raw::default();
        let bases = populate(&raw, LIVE, true);
        bench_ops(c, "ops", "raw", &raw, &bases);
        for &b in &bases {
            raw.release(b, GRANULE);
        }
        let linux = virtmem::LinuxSpace::linux().expect("linux space");
        let bases = populate(&linux, LIVE, true);
        bench_ops(c, "ops", "linux", &linux, &bases);
        for &b in &bases {
            linux.release(b, GRANULE);
        }
    }
    let sim = virtmem::SimSpace::simulated();
    let bases = populate(&sim, LIVE, true);
    bench_ops(c, "ops", "sim", &sim, &bases);
}

criterion_group! { name = benches; config = common::criterion(); targets = ops }
criterion_main!(benches);
