/* Address space and reservations (spec: "Address space", "VirtualAlloc" / Reserve):
 * page size and granularity, rounding of base and size, the 64K granule a small
 * reservation blocks, MEM_TOP_DOWN, MEM_COMMIT with NULL, zero fill, fault probes. */
#include "common.h"

static void run(void)
{
    SYSTEM_INFO si;
    char *A = arena(0x100000);
    void *p, *q;
    at(A);

    GetSystemInfo(&si);
    LINE("sysinfo: page=%u gran=%u min=%s max%%64K=0x%x", (unsigned)si.dwPageSize,
         (unsigned)si.dwAllocationGranularity,
         (uintptr_t)si.lpMinimumApplicationAddress == 0x10000 ? "0x10000" : "other",
         (unsigned)((uintptr_t)si.lpMaximumApplicationAddress & 0xffff));

    /* NULL address: G-aligned base, size rounded to P only */
    p = van_keep("reserve NULL size 1", 1, MEM_RESERVE, PAGE_READWRITE);
    at(p);
    vq("  query", p);
    vf("  release", p, 0, MEM_RELEASE);
    p = van_keep("reserve NULL size 0x11000", 0x11000, MEM_RESERVE, PAGE_EXECUTE_READ);
    at(p);
    vq("  query", p);
    vf("  release", p, 0, MEM_RELEASE);
    p = van_keep("commit NULL size 0x1800", 0x1800, MEM_COMMIT, PAGE_READWRITE);
    at(p);
    vq("  query", p);
    zero("  zero-filled", p, 0x2000);
    probe("  write probe", p, PROBE_WRITE);
    vf("  release", p, 0, MEM_RELEASE);
    p = van_keep("reserve|commit NULL size 0x3000 readonly", 0x3000, MEM_RESERVE | MEM_COMMIT, PAGE_READONLY);
    at(p);
    vq("  query", p);
    zero("  zero-filled", p, 0x3000);
    probe("  read probe", (char *)p + 0x2fff, PROBE_READ);
    probe("  write probe", p, PROBE_WRITE);
    vf("  release", p, 0, MEM_RELEASE);

    /* MEM_TOP_DOWN picks the highest base that fits */
    p = VirtualAlloc(NULL, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
    q = VirtualAlloc(NULL, 0x10000, MEM_RESERVE | MEM_TOP_DOWN, PAGE_NOACCESS);
    LINE("top-down base above bottom-up base: %s", p && q && (uintptr_t)q > (uintptr_t)p ? "yes" : "no");
    LINE("top-down base above the arena: %s", q && (uintptr_t)q > (uintptr_t)A ? "yes" : "no");
    VirtualFree(p, 0, MEM_RELEASE);
    VirtualFree(q, 0, MEM_RELEASE);

    /* Given address: base rounded down to G, end rounded up to P */
    at(A);
    va("reserve +0x10000 size 0x1000", A + 0x10000, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve +0x1234 size 0x2000", A + 0x1234, 0x2000, MEM_RESERVE, PAGE_READWRITE);
    vq("query +0", A);
    vq("query +0x3fff", A + 0x3fff);
    vq("query +0x4000 (rest of the granule)", A + 0x4000);
    vq("query +0x10000", A + 0x10000);
    /* the granule is blocked */
    va("reserve +0x8000", A + 0x8000, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve +0x4000", A + 0x4000, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve +0xf000 size 0x2000", A + 0xf000, 0x2000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve +0x10000 again", A + 0x10000, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve +0x1f000 size 0x2000", A + 0x1f000, 0x2000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve|commit +0x11000", A + 0x11000, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    /* a reservation one byte past a granule takes the next granule too */
    va("reserve +0x20000 size 0x10001", A + 0x20000, 0x10001, MEM_RESERVE, PAGE_READWRITE);
    vq("query +0x20000", A + 0x20000);
    va("reserve +0x30000", A + 0x30000, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve +0x3ffff size 1", A + 0x3ffff, 1, MEM_RESERVE, PAGE_READWRITE);
    va("reserve +0x40000", A + 0x40000, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    vq("query +0x31000", A + 0x31000);
    vq("query +0x3ffff", A + 0x3ffff);
    vq("query +0x40000", A + 0x40000);

    /* MEM_RESERVE|MEM_COMMIT commits the whole new reservation, reading as zero */
    va("reserve|commit +0x50000 size 0x10000 rw", A + 0x50000, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    vq("query +0x50000", A + 0x50000);
    zero("zero-filled +0x50000", A + 0x50000, 0x10000);
    probe("read probe +0x5ffff", A + 0x5ffff, PROBE_READ);
    probe("write probe +0x50000", A + 0x50000, PROBE_WRITE);
    probe("read probe +0x32000 (blocked, free)", A + 0x32000, PROBE_READ);
    probe("read probe +0x21000 (reserved)", A + 0x21000, PROBE_READ);
    va("reserve|commit +0x60000 readonly", A + 0x60000, 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_READONLY);
    vq("query +0x60000", A + 0x60000);
    probe("read probe +0x60000", A + 0x60000, PROBE_READ);
    probe("write probe +0x60000", A + 0x60000, PROBE_WRITE);
    va("reserve|commit +0x70000 execute_read", A + 0x70000, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READ);
    probe("read probe +0x70000", A + 0x70000, PROBE_READ);
    probe("write probe +0x70000", A + 0x70000, PROBE_WRITE);
    va("reserve|commit +0x80000 noaccess", A + 0x80000, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_NOACCESS);
    vq("query +0x80000", A + 0x80000);
    probe("read probe +0x80000", A + 0x80000, PROBE_READ);
    va("reserve|commit +0x90000 execute_readwrite", A + 0x90000, 0x1000, MEM_RESERVE | MEM_COMMIT,
       PAGE_EXECUTE_READWRITE);
    vq("query +0x90000", A + 0x90000);
    probe("write probe +0x90000", A + 0x90000, PROBE_WRITE);

    /* release makes the range free again, and reusable */
    vf("release +0", A, 0, MEM_RELEASE);
    vq("query +0 after release", A);
    va("reserve +0 again", A, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
    vq("query +0 again", A);

    vf("release +0 (end)", A, 0, MEM_RELEASE);
    vf("release +0x10000", A + 0x10000, 0, MEM_RELEASE);
    vf("release +0x20000", A + 0x20000, 0, MEM_RELEASE);
    vf("release +0x40000", A + 0x40000, 0, MEM_RELEASE);
    vf("release +0x50000", A + 0x50000, 0, MEM_RELEASE);
    vf("release +0x60000", A + 0x60000, 0, MEM_RELEASE);
    vf("release +0x70000", A + 0x70000, 0, MEM_RELEASE);
    vf("release +0x80000", A + 0x80000, 0, MEM_RELEASE);
    vf("release +0x90000", A + 0x90000, 0, MEM_RELEASE);
}
