/* VirtualLock / VirtualUnlock. The spec does not cover them; the expectations are
 * Windows' documented behaviour (VirtualUnlock of pages that are not locked fails
 * with ERROR_NOT_LOCKED; only committed, accessible pages can be locked) and, for
 * guard pages, what Windows does in Wine's own conformance tests (the first lock
 * fails with STATUS_GUARD_PAGE_VIOLATION as the error and disarms the page). Where
 * Windows' error code is not known, only the failure is checked. */
#include "common.h"

static void vl(const char *label, void *p, SIZE_T n)
{
    if (VirtualLock(p, n))
        LINE("%s: ok", label);
    else
        LINE("%s: fail err=%u", label, err());
}

static void vu(const char *label, void *p, SIZE_T n)
{
    if (VirtualUnlock(p, n))
        LINE("%s: ok", label);
    else
        LINE("%s: fail err=%u", label, err());
}

/* Only whether it failed. */
static void vl_fails(const char *label, void *p, SIZE_T n)
{
    LINE("%s: %s", label, VirtualLock(p, n) ? "ok" : "fail");
}

static void run(void)
{
    char *A = arena(0x100000);
    at(A);

    va("reserve +0 size 0x8000 rw", A, 0x8000, MEM_RESERVE, PAGE_READWRITE);
    va("commit +0 size 0x4000 rw", A, 0x4000, MEM_COMMIT, PAGE_READWRITE);
    fill(A, 0x4000, 3);

    vl("lock +0 size 0x2000", A, 0x2000);
    vu("unlock +0 size 0x2000", A, 0x2000);
    vu("unlock +0 again (not locked)", A, 0x1000);
    vl("lock +0xfff size 2", A + 0xfff, 2);
    vu("unlock +0x1000 (locked by the straddling lock)", A + 0x1000, 0x1000);
    vu("unlock +0 size 0x2000 (page 1 no longer locked)", A, 0x2000);
    same("data kept", A, 0x4000, 3);

    /* only committed, accessible pages */
    vl_fails("lock +0x4000 (reserved)", A + 0x4000, 0x1000);
    vl_fails("lock +0x3000 size 0x2000 (committed + reserved)", A + 0x3000, 0x2000);
    vl_fails("lock +0x20000 (free)", A + 0x20000, 0x1000);
    vp("protect +0x1000 noaccess", A + 0x1000, 0x1000, PAGE_NOACCESS);
    vl_fails("lock +0x1000 (noaccess)", A + 0x1000, 0x1000);
    vu("unlock +0x3000 (not locked after the failure)", A + 0x3000, 0x1000);

    /* a guard page: the first lock fails with the guard exception and disarms it */
    vp("protect +0x2000 rw|guard", A + 0x2000, 0x1000, PAGE_READWRITE | PAGE_GUARD);
    vl("lock +0x2000 (guard)", A + 0x2000, 0x1000);
    vq("query +0x2000 after the lock", A + 0x2000);
    vl("lock +0x2000 again", A + 0x2000, 0x1000);
    vu("unlock +0x2000", A + 0x2000, 0x1000);

    /* decommit and release take locks with them */
    vl("lock +0 size 0x1000", A, 0x1000);
    vf("decommit +0 (locked)", A, 0x1000, MEM_DECOMMIT);
    vq("query +0 decommitted", A);
    va("recommit +0", A, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    vu("unlock +0 after recommit (not locked)", A, 0x1000);
    vl("lock +0x3000 size 1", A + 0x3000, 1);
    vf("release +0 (locked pages inside)", A, 0, MEM_RELEASE);
    vq_nosize("query +0 released", A);
}
