/* VirtualFree (spec: "VirtualFree"): the free type, MEM_RELEASE's size and address
 * rules, MEM_DECOMMIT with size 0 and with a range, reserved-only pages, what a
 * decommitted page looks like, and NULL addresses. */
#include "common.h"

static void run(void)
{
    char *A = arena(0x100000);
    at(A);

    va("reserve|commit +0 size 0x10000 rw", A, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    va("reserve +0x10000 size 0x10000", A + 0x10000, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve|commit +0x20000 size 0x8000 rw", A + 0x20000, 0x8000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    va("reserve +0x30000 size 0x1000", A + 0x30000, 0x1000, MEM_RESERVE, PAGE_READWRITE);

    /* free_type must be exactly MEM_DECOMMIT or MEM_RELEASE */
    vf("free type 0", A, 0, 0);
    vf("free type MEM_FREE", A, 0, MEM_FREE);
    vf("free type DECOMMIT|RELEASE", A, 0, MEM_DECOMMIT | MEM_RELEASE);
    vf("free type RELEASE|0x1", A, 0, MEM_RELEASE | 0x1);
    vf("free type RELEASE|COMMIT", A, 0, MEM_RELEASE | MEM_COMMIT);
    vf("free type DECOMMIT|RESERVE", A, 0x1000, MEM_DECOMMIT | MEM_RESERVE);
    vf("free type COMMIT", A, 0x1000, MEM_COMMIT);
    vf("free type RESERVE", A, 0, MEM_RESERVE);
    vf("free type 0x80000000", A, 0, 0x80000000u);

    /* MEM_RELEASE: size must be 0, checked first */
    vf("release +0 size 0x10000", A, 0x10000, MEM_RELEASE);
    vf("release +0x1000 size 0x1000 (not base)", A + 0x1000, 0x1000, MEM_RELEASE);
    vf("release +0x40000 size 0x1000 (free)", A + 0x40000, 0x1000, MEM_RELEASE);
    vf("release NULL size 0", NULL, 0, MEM_RELEASE);
    vf("release NULL size 0x1000", NULL, 0x1000, MEM_RELEASE);
    /* the address, rounded down to P, must be an allocation's base */
    vf("release +0x1000 (not first page)", A + 0x1000, 0, MEM_RELEASE);
    vf("release +0xffff (last page)", A + 0xffff, 0, MEM_RELEASE);
    vf("release +0x28000 (blocked, free)", A + 0x28000, 0, MEM_RELEASE);
    vf("release +0x40000 (free)", A + 0x40000, 0, MEM_RELEASE);
    vq("query +0 unchanged", A);
    vf("release +0x20fff (inside first page)", A + 0x20fff, 0, MEM_RELEASE);
    vq("query +0x20000 after release", A + 0x20000);
    vf("release +0x20000 again", A + 0x20000, 0, MEM_RELEASE);

    /* MEM_DECOMMIT with size 0: the whole allocation, from its base only */
    fill(A, 0x10000, 1);
    vf("decommit +0x1000 size 0 (not base)", A + 0x1000, 0, MEM_DECOMMIT);
    vf("decommit +0x20000 size 0 (free)", A + 0x20000, 0, MEM_DECOMMIT);
    vq("query +0 still committed", A);
    vf("decommit +0x10 size 0 (base page)", A + 0x10, 0, MEM_DECOMMIT);
    vq("query +0 decommitted", A);
    probe("read probe +0 decommitted", A, PROBE_READ);
    probe("read probe +0xffff decommitted", A + 0xffff, PROBE_READ);
    vf("decommit +0 size 0 again (reserved only)", A, 0, MEM_DECOMMIT);
    va("recommit +0 size 0x10000", A, 0x10000, MEM_COMMIT, PAGE_READWRITE);
    zero("zero-filled +0 after recommit", A, 0x10000);

    /* MEM_DECOMMIT with a range: every page touched, inside one reservation */
    vf("decommit +0xf000 size 0x2000 (two reservations)", A + 0xf000, 0x2000, MEM_DECOMMIT);
    vf("decommit +0x1f000 size 0x2000 (past the end)", A + 0x1f000, 0x2000, MEM_DECOMMIT);
    vf("decommit +0x1ffff size 2 (past the end)", A + 0x1ffff, 2, MEM_DECOMMIT);
    vf("decommit +0x20000 size 0x1000 (free)", A + 0x20000, 0x1000, MEM_DECOMMIT);
    vf("decommit +0x28000 size 0x1000 (free)", A + 0x28000, 0x1000, MEM_DECOMMIT);
    vq("query +0xf000 unchanged", A + 0xf000);
    vf("decommit +0x10000 size 0x4000 (reserved only)", A + 0x10000, 0x4000, MEM_DECOMMIT);
    vq("query +0x10000", A + 0x10000);
    vf("decommit +0xfff size 2", A + 0xfff, 2, MEM_DECOMMIT);
    vq("query +0 after straddling decommit", A);
    vq("query +0x2000", A + 0x2000);
    probe("read probe +0x1000", A + 0x1000, PROBE_READ);
    probe("read probe +0x2000", A + 0x2000, PROBE_READ);
    vf("decommit +0x8000 size 0x8000 (up to the end)", A + 0x8000, 0x8000, MEM_DECOMMIT);
    vq("query +0x8000", A + 0x8000);
    vf("decommit +0x3000 size SIZE_MAX", A + 0x3000, (SIZE_T)-1, MEM_DECOMMIT);
    vf("decommit +0x3000 size 2^48", A + 0x3000, (SIZE_T)1 << 48, MEM_DECOMMIT);
    vq("query +0x2000 unchanged", A + 0x2000);
    va("recommit +0 size 0x2000", A, 0x2000, MEM_COMMIT, PAGE_READWRITE);
    zero("zero-filled +0..+0x2000", A, 0x2000);

    /* NULL */
    vf("decommit NULL size 0x1000", NULL, 0x1000, MEM_DECOMMIT);
    vf("decommit NULL size 0", NULL, 0, MEM_DECOMMIT);

    /* release takes committed pages with it */
    vf("release +0", A, 0, MEM_RELEASE);
    vq("query +0 released", A);
    probe("read probe +0 released", A, PROBE_READ);
    vf("release +0x10000", A + 0x10000, 0, MEM_RELEASE);
    vf("release +0x30000", A + 0x30000, 0, MEM_RELEASE);
    vf("release +0 again", A, 0, MEM_RELEASE);
    vf("decommit +0 size 0x1000 after release", A, 0x1000, MEM_DECOMMIT);
}
