/* Write watch (spec: "Write watch"): GetWriteWatch's return value and every argument
 * error in its order, reporting order and capping, WRITE_WATCH_FLAG_RESET with a
 * capped count, ResetWriteWatch, writes straddling pages, protection changes, and
 * decommit clearing the dirty state. */
#include "common.h"

#define SENTINEL ((PVOID)(uintptr_t)0x5a5a5a5a)

static PVOID addrs[16];

/* GetWriteWatch with room for `count` entries; prints what it reports. */
static void gww_full(const char *label, DWORD flags, void *base, SIZE_T size, int pass_addrs, ULONG_PTR count,
                     int pass_count, int pass_gran)
{
    ULONG_PTR c = count;
    ULONG gran = 0xdeadbeef;
    UINT r;
    unsigned i;
    char buf[400];
    size_t n;
    for (i = 0; i < 16; i++)
        addrs[i] = SENTINEL;
    r = GetWriteWatch(flags, base, size, pass_addrs ? addrs : NULL, pass_count ? &c : NULL, pass_gran ? &gran : NULL);
    if (r != 0) {
        LINE("%s: ret=0x%x err=%u", label, r, err());
        return;
    }
    n = (size_t)snprintf(buf, sizeof buf, "%s: ret=0 count=%u gran=%u [", label, (unsigned)c, (unsigned)gran);
    for (i = 0; i < c && i < 16; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", i ? " " : "", rel(addrs[i]));
    n += (size_t)snprintf(buf + n, sizeof buf - n, "]");
    if (c < 16 && addrs[c] != SENTINEL)
        snprintf(buf + n, sizeof buf - n, " wrote-past-count");
    LINE("%s", buf);
}

static void gww(const char *label, DWORD flags, void *base, SIZE_T size, ULONG_PTR count)
{
    gww_full(label, flags, base, size, 1, count, 1, 1);
}

static void rww(const char *label, void *base, SIZE_T size)
{
    UINT r = ResetWriteWatch(base, size);
    if (r == 0)
        LINE("%s: ret=0", label);
    else
        LINE("%s: ret=0x%x err=%u", label, r, err());
}

static void run(void)
{
    char *A = arena(0x100000);
    at(A);

    va("reserve|commit|write_watch +0 size 0x10000 rw", A, 0x10000, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH,
       PAGE_READWRITE);
    va("reserve|commit +0x10000 size 0x10000 rw (no watch)", A + 0x10000, 0x10000, MEM_RESERVE | MEM_COMMIT,
       PAGE_READWRITE);
    vq("query +0", A);

    /* nothing dirty yet: nothing written into addresses */
    gww("clean", 0, A, 0x10000, 16);

    A[0x1001] = 1;
    gww("after writing +0x1001", 0, A, 0x10000, 16);
    *(volatile unsigned *)(A + 0x2ffe) = 0x01020304u; /* straddles pages 2 and 3 */
    A[0x5000] = 1;
    A[0x7fff] = 1;
    A[0xf000] = 1;
    gww("after more writes", 0, A, 0x10000, 16);
    gww("sub-range +0x3000 size 0x3000", 0, A + 0x3000, 0x3000, 16);
    gww("unaligned sub-range +0x4fff size 2", 0, A + 0x4fff, 2, 16);
    gww("count 2", 0, A, 0x10000, 2);
    gww("reset, count 2", WRITE_WATCH_FLAG_RESET, A, 0x10000, 2);
    gww("rest still dirty", 0, A, 0x10000, 16);
    rww("ResetWriteWatch +0x3000 size 0x1000", A + 0x3000, 0x1000);
    gww("after ResetWriteWatch", 0, A, 0x10000, 16);

    /* protection changes do not alter the dirty state */
    vp("protect +0x5000 readonly", A + 0x5000, 0x1000, PAGE_READONLY);
    vp("protect +0x6000 noaccess", A + 0x6000, 0x1000, PAGE_NOACCESS);
    gww("after protection changes", 0, A, 0x10000, 16);
    vp("protect +0x5000 readwrite", A + 0x5000, 0x2000, PAGE_READWRITE);
    gww("after protection restored", 0, A, 0x10000, 16);

    /* decommit clears; a recommitted page starts clean */
    vf("decommit +0x7000", A + 0x7000, 0x1000, MEM_DECOMMIT);
    gww("after decommit", 0, A, 0x10000, 16);
    va("recommit +0x7000", A + 0x7000, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    gww("after recommit", 0, A, 0x10000, 16);
    A[0x7000] = 1;
    gww("after writing the recommitted page", 0, A, 0x10000, 16);
    gww("reset all", WRITE_WATCH_FLAG_RESET, A, 0x10000, 16);
    gww("clean again", 0, A, 0x10000, 16);

    /* argument errors, in order */
    A[0x1000] = 1;
    gww("flags 2", 2, A, 0x10000, 16);
    gww("flags 0xdeadbeef", 0xdeadbeef, A, 0x10000, 16);
    gww_full("count NULL", 0, A, 0x10000, 1, 16, 0, 1);
    gww_full("granularity NULL", 0, A, 0x10000, 1, 16, 1, 0);
    gww_full("flags 2, count NULL", 2, A, 0x10000, 1, 16, 0, 1);
    gww_full("count 0, addresses NULL", 0, A, 0x10000, 0, 0, 1, 1);
    gww_full("count 0", 0, A, 0x10000, 1, 0, 1, 1);
    gww_full("addresses NULL", 0, A, 0x10000, 0, 16, 1, 1);
    gww("size 0", 0, A, 0, 16);
    gww("+0xf000 size 0x2000 (past the end)", 0, A + 0xf000, 0x2000, 16);
    gww("size 0x20000", 0, A, 0x20000, 16);
    gww("no write watch +0x10000", 0, A + 0x10000, 0x1000, 16);
    gww("free +0x30000", 0, A + 0x30000, 0x1000, 16);
    gww("NULL base", 0, NULL, 0x1000, 16);
    gww("huge count, size 0x400000000000 (far past the end)", 0, A, (SIZE_T)0x400000000000ull, (ULONG_PTR)0x1000000000ull);
    gww("reset, huge count, size 0x400000000000 (far past the end)", WRITE_WATCH_FLAG_RESET, A,
        (SIZE_T)0x400000000000ull, (ULONG_PTR)0x1000000000ull);
    gww("huge count, +0x1000 size 0x1000", 0, A + 0x1000, 0x1000, (ULONG_PTR)0x1000000000ull);
    rww("ResetWriteWatch size 0x400000000000 (far past the end)", A, (SIZE_T)0x400000000000ull);
    gww("still dirty after the errors", 0, A, 0x10000, 16);
    rww("ResetWriteWatch size 0", A, 0);
    rww("ResetWriteWatch no write watch", A + 0x10000, 0x1000);
    rww("ResetWriteWatch free", A + 0x30000, 0x1000);
    rww("ResetWriteWatch past the end", A + 0xf000, 0x2000);
    rww("ResetWriteWatch whole", A, 0x10000);
    gww("clean at the end", 0, A, 0x10000, 16);

    /* a reserve-only watched reservation, committed later */
    va("reserve|write_watch +0x20000 size 0x10000 noaccess", A + 0x20000, 0x10000, MEM_RESERVE | MEM_WRITE_WATCH,
       PAGE_NOACCESS);
    gww("reserved only", 0, A + 0x20000, 0x10000, 16);
    va("commit +0x21000 size 0x2000 rw", A + 0x21000, 0x2000, MEM_COMMIT, PAGE_READWRITE);
    gww("freshly committed", 0, A + 0x20000, 0x10000, 16);
    A[0x22000] = 1;
    gww("after writing +0x22000", 0, A + 0x20000, 0x10000, 16);

    vf("release +0", A, 0, MEM_RELEASE);
    vf("release +0x10000", A + 0x10000, 0, MEM_RELEASE);
    vf("release +0x20000", A + 0x20000, 0, MEM_RELEASE);
    gww("released", 0, A, 0x10000, 16);
}
