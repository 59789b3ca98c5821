/* MEM_RESET and MEM_RESET_UNDO (spec: "VirtualAlloc" / MEM_RESET, rules 1-2): state
 * and protection kept, the one-reservation rule, reserved-only pages, every flag it
 * may not be combined with, the protection checked though ignored, and RESET_UNDO. */
#include "common.h"

static void run(void)
{
    char *A = arena(0x100000);
    at(A);

    va("reserve|commit +0 size 0x8000 rw", A, 0x8000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    va("reserve +0x10000 size 0x8000", A + 0x10000, 0x8000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve|commit +0x20000 size 0x10000 rw", A + 0x20000, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    va("reserve|commit +0x30000 size 0x10000 rw", A + 0x30000, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    fill(A, 0x8000, 1);

    /* accepted: state and protection kept, memory still usable */
    va("reset +0 size 0x4000", A, 0x4000, MEM_RESET, PAGE_READWRITE);
    vq("query +0 after reset", A);
    probe("write probe +0 after reset", A, PROBE_WRITE);
    va("reset +0x1010 size 0x10", A + 0x1010, 0x10, MEM_RESET, PAGE_READWRITE);
    va("reset +0 protect noaccess (ignored)", A, 0x1000, MEM_RESET, PAGE_NOACCESS);
    va("reset +0 protect execute_read (ignored)", A, 0x1000, MEM_RESET, PAGE_EXECUTE_READ);
    vq("query +0 after resets", A);
    va("reset +0x10000 (reserved only)", A + 0x10000, 0x8000, MEM_RESET, PAGE_READWRITE);
    vq("query +0x10000 after reset", A + 0x10000);
    va("reset +0x7000 size 0x1000 (last page)", A + 0x7000, 0x1000, MEM_RESET, PAGE_READWRITE);
    va("reset +0x20000 size 0x10000 (whole reservation)", A + 0x20000, 0x10000, MEM_RESET, PAGE_READWRITE);

    /* one reservation */
    va("reset +0x4000 size 0x5000 (past the end)", A + 0x4000, 0x5000, MEM_RESET, PAGE_READWRITE);
    va("reset +0x8000 (blocked, free)", A + 0x8000, 0x1000, MEM_RESET, PAGE_READWRITE);
    va("reset +0x40000 (free)", A + 0x40000, 0x1000, MEM_RESET, PAGE_READWRITE);
    va("reset +0x2f000 size 0x2000 (two reservations)", A + 0x2f000, 0x2000, MEM_RESET, PAGE_READWRITE);

    /* rule 2: the protection is checked though ignored */
    va("reset prot 0", A, 0x1000, MEM_RESET, 0);
    va("reset prot WRITECOPY", A, 0x1000, MEM_RESET, PAGE_WRITECOPY);
    va("reset prot NOACCESS|GUARD", A, 0x1000, MEM_RESET, PAGE_NOACCESS | PAGE_GUARD);
    va("reset prot READONLY|READWRITE", A, 0x1000, MEM_RESET, PAGE_READONLY | PAGE_READWRITE);
    va("reset prot 0x800", A, 0x1000, MEM_RESET, 0x800);
    va("reset at free +0x40000, prot 0", A + 0x40000, 0x1000, MEM_RESET, 0);

    /* rule 1: MEM_RESET alone */
    va("reset|commit", A, 0x1000, MEM_RESET | MEM_COMMIT, PAGE_READWRITE);
    va("reset|reserve at free +0x50000", A + 0x50000, 0x10000, MEM_RESET | MEM_RESERVE, PAGE_READWRITE);
    va("reset|reserve|commit at free +0x60000", A + 0x60000, 0x10000, MEM_RESET | MEM_RESERVE | MEM_COMMIT,
       PAGE_READWRITE);
    va("reset|top_down", A, 0x1000, MEM_RESET | MEM_TOP_DOWN, PAGE_READWRITE);
    va("reset|write_watch", A, 0x1000, MEM_RESET | MEM_WRITE_WATCH, PAGE_READWRITE);
    va("reset|large_pages", A, 0x1000, MEM_RESET | MEM_LARGE_PAGES, PAGE_READWRITE);
    va("reset|physical", A, 0x1000, MEM_RESET | MEM_PHYSICAL, PAGE_READWRITE);
    va("reset|reset_undo", A, 0x1000, MEM_RESET | MEM_RESET_UNDO, PAGE_READWRITE);
    va("reset size 0", A, 0, MEM_RESET, PAGE_READWRITE);
    va_noaddr("reset NULL", NULL, 0x1000, MEM_RESET, PAGE_READWRITE);
    vq_nosize("query +0x50000 still free", A + 0x50000);
    vq("query +0 unchanged", A);

    /* MEM_RESET_UNDO on a reset range: success means the data is intact */
    fill(A + 0x30000, 0x10000, 5);
    va("reset +0x30000 size 0x10000", A + 0x30000, 0x10000, MEM_RESET, PAGE_READWRITE);
    va("reset_undo +0x30000 size 0x10000", A + 0x30000, 0x10000, MEM_RESET_UNDO, PAGE_READWRITE);
    vq("query +0x30000 after undo", A + 0x30000);
    same("data +0x30000 after undo", A + 0x30000, 0x10000, 5);
    va("reset_undo prot 0", A + 0x30000, 0x1000, MEM_RESET_UNDO, 0);
    va("reset_undo prot WRITECOPY", A + 0x30000, 0x1000, MEM_RESET_UNDO, PAGE_WRITECOPY);
    va("reset_undo|commit", A + 0x30000, 0x1000, MEM_RESET_UNDO | MEM_COMMIT, PAGE_READWRITE);
    va("reset_undo|reserve", A + 0x30000, 0x1000, MEM_RESET_UNDO | MEM_RESERVE, PAGE_READWRITE);
    va("reset_undo size 0", A + 0x30000, 0, MEM_RESET_UNDO, PAGE_READWRITE);

    vf("release +0", A, 0, MEM_RELEASE);
    vf("release +0x10000", A + 0x10000, 0, MEM_RELEASE);
    vf("release +0x20000", A + 0x20000, 0, MEM_RELEASE);
    vf("release +0x30000", A + 0x30000, 0, MEM_RELEASE);
}
