//! `VirtualQuery` on a simulated space with thousands of reservations, so that the
//! reservation index has many leaves under several directory blocks (at the library's
//! own sizes, which its unit tests shrink): every field of the answer at the first and
//! last byte of every run of every reservation, just past each reservation's end (free,
//! up to the next reservation, across holes of one to four granules and reservations
//! that end inside their last granule), below the first and above the last reservation,
//! against a model of the layout kept by the test (spec § VirtualQuery: BaseAddress
//! rounded down to the page, AllocationBase and AllocationProtect of the reservation,
//! RegionSize to the end of the run of equal State and Protect and never past the
//! reservation's end, Protect 0 for reserved pages and GUARD included while armed, Type
//! MEM_PRIVATE; free memory NULL and 0, PAGE_NOACCESS, type 0, up to the next
//! reservation or the top of the space). Reservations are made in address order (as
//! the `query1e5` benchmark makes them) and in a scrambled order, then some are
//! released, so that leaves are full, thin, split and merged.

use virtmem::{AllocationType as T, FreeType, MemState, MemType, MemoryBasicInformation, Protection as P, SimSpace};

const PAGE: usize = 0x1000;
const G: usize = 0x10000;

/// xorshift64*: the same layout on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as usize % n
    }
}

/// The test's own record of one reservation: base, protection it was made with, and
/// each page's state (`None`: reserved; `Some(p)`: committed with `p`).
struct Res {
    base: usize,
    protect: P,
    pages: Vec<Option<P>>,
}

impl Res {
    fn end(&self) -> usize {
        self.base + self.pages.len() * PAGE
    }
}

/// What the spec says `VirtualQuery(addr)` returns, from the model (`model` sorted by base).
fn expected(model: &[Res], top: usize, addr: usize) -> MemoryBasicInformation {
    let page = addr & !(PAGE - 1);
    let i = model.partition_point(|r| r.base <= addr);
    if let Some(r) = i.checked_sub(1).map(|k| &model[k]).filter(|r| addr < r.end()) {
        let k = (page - r.base) / PAGE;
        let st = r.pages[k];
        let run = r.pages[k..].iter().take_while(|&&s| s == st).count();
        let (state, protect) = match st {
            None => (MemState::Reserve, P::empty()),
            Some(p) => (MemState::Commit, p),
        };
        return MemoryBasicInformation {
            base_address: page,
            allocation_base: r.base,
            allocation_protect: r.protect,
            region_size: run * PAGE,
            state,
            protect,
            mem_type: Some(MemType::Private),
        };
    }
    let next = model.get(i).map_or(top, |r| r.base);
    MemoryBasicInformation {
        base_address: page,
        allocation_base: 0,
        allocation_protect: P::empty(),
        region_size: next - page,
        state: MemState::Free,
        protect: P::NOACCESS,
        mem_type: None,
    }
}

/// Lay out `n` reservations (in address order, or scrambled), commit and protect runs in
/// some, release every seventh, then check the answer at every address of interest.
fn check(n: usize, scrambled: bool, seed: u64) {
    let s = SimSpace::simulated();
    let top = s.system_info().maximum_application_address + 1;
    let mut rng = Rng(seed);
    // Each reservation: its size in pages (1, 3, 16, 20 or 80: some end inside their
    // last granule) and the free granules after it (1 to 4).
    let shapes: Vec<(usize, usize)> = (0..n).map(|_| ([1, 3, 16, 20, 80][rng.below(5)], 1 + rng.below(4))).collect();
    let span: usize = shapes.iter().map(|&(pages, hole)| (pages * PAGE).div_ceil(G) * G + hole * G).sum();
    let at = s.alloc(0, span, T::RESERVE, P::NOACCESS).expect("span");
    s.free(at, 0, FreeType::RELEASE).expect("release span");
    let mut model = Vec::with_capacity(n);
    let mut next = at + G;
    for &(pages, hole) in &shapes {
        let protect = [P::NOACCESS, P::READWRITE, P::EXECUTE_READWRITE][rng.below(3)];
        model.push(Res { base: next, protect, pages: vec![None; pages] });
        next += (pages * PAGE).div_ceil(G) * G + hole * G;
    }
    let mut order: Vec<usize> = (0..n).collect();
    if scrambled {
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
    }
    for &k in &order {
        let r = &mut model[k];
        let size = r.pages.len() * PAGE;
        assert_eq!(s.alloc(r.base, size, T::RESERVE, r.protect), Ok(r.base), "reserve {:#x}", r.base);
        match rng.below(4) {
            // Reserved only: one run.
            0 => {}
            // The first page committed read-write (as the `scale` benchmarks do).
            1 => {
                s.alloc(r.base, PAGE, T::COMMIT, P::READWRITE).expect("commit");
                r.pages[0] = Some(P::READWRITE);
            }
            // Every other page committed, alternately read-only and read-only + guard:
            // an 80-page reservation then has more runs than a small run map holds.
            2 => {
                for p in (0..r.pages.len()).step_by(2) {
                    let prot = if p % 4 == 0 { P::READONLY } else { P::READONLY | P::GUARD };
                    s.alloc(r.base + p * PAGE, PAGE, T::COMMIT, prot).expect("commit");
                    r.pages[p] = Some(prot);
                }
            }
            // All committed, then the middle third made read-only.
            _ => {
                s.alloc(r.base, size, T::COMMIT, P::READWRITE).expect("commit");
                r.pages.iter_mut().for_each(|p| *p = Some(P::READWRITE));
                let (from, to) = (r.pages.len() / 3, r.pages.len() * 2 / 3);
                if to > from {
                    s.protect(r.base + from * PAGE, (to - from) * PAGE, P::READONLY).expect("protect");
                    r.pages[from..to].iter_mut().for_each(|p| *p = Some(P::READONLY));
                }
            }
        }
    }
    for k in (0..n).filter(|k| k % 7 == 3) {
        s.free(model[k].base, 0, FreeType::RELEASE).expect("release");
    }
    let mut k = 0;
    model.retain(|_| {
        k += 1;
        (k - 1) % 7 != 3
    });
    let mut addrs = vec![at, at + G - 1, next, next + PAGE - 1, top - 1];
    for r in &model {
        for p in 0..r.pages.len() {
            if p == 0 || r.pages[p] != r.pages[p - 1] {
                // The first and last byte of the run's first page, and the last byte of
                // the page before it (the end of the run before).
                addrs.extend([r.base + p * PAGE, r.base + p * PAGE + PAGE - 1]);
                addrs.extend((p > 0).then(|| r.base + p * PAGE - 1));
            }
        }
        // The last byte, the first free byte after it and the last free page before the
        // next granule.
        addrs.extend([r.end() - 1, r.end(), r.end() + PAGE - 1, (r.end() - 1) / G * G + G + G - 1]);
    }
    for &a in &addrs {
        let got = s.query(a).unwrap_or_else(|e| panic!("query {a:#x}: {e:?}"));
        assert_eq!(got, expected(&model, top, a), "query {a:#x}");
    }
    assert!(addrs.len() > 10 * model.len(), "every reservation was queried");
}

#[test]
fn answers_at_every_boundary_with_reservations_made_in_address_order() {
    check(3000, false, 0x9e37_79b9);
}

#[test]
fn answers_at_every_boundary_with_reservations_made_in_a_scrambled_order() {
    check(3000, true, 0x51ed_270b);
}
