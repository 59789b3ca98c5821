/* Committing inside a reservation (spec: "VirtualAlloc" / Commit, "Address space"):
 * the pages touched, the returned pointer, the one-reservation rule, recommitting
 * committed pages, zero fill after every commit, data surviving protection changes,
 * and what each protection allows (fault probes). */
#include "common.h"

static void run(void)
{
    char *A = arena(0x100000);
    at(A);

    va("reserve +0 64K noaccess", A, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
    va("reserve +0x10000 64K noaccess", A + 0x10000, 0x10000, MEM_RESERVE, PAGE_NOACCESS);

    /* a 2-byte range straddling a page boundary commits both pages */
    va("commit +0xfff size 2", A + 0xfff, 2, MEM_COMMIT, PAGE_READWRITE);
    vq("query +0", A);
    vq("query +0x2000", A + 0x2000);
    zero("zero-filled +0..+0x2000", A, 0x2000);
    fill(A, 0x2000, 1);

    /* recommitting keeps the data and takes the new protection */
    va("commit +0 size 0x1000 readonly", A, 0x1000, MEM_COMMIT, PAGE_READONLY);
    vq("query +0 after recommit", A);
    same("data +0 after recommit", A, 0x1000, 1);
    probe("read probe +0", A, PROBE_READ);
    probe("write probe +0", A, PROBE_WRITE);

    /* a mix of committed and reserved pages */
    va("commit +0x1000 size 0x3000 (1 committed, 2 reserved)", A + 0x1000, 0x3000, MEM_COMMIT, PAGE_READWRITE);
    vq("query +0x1000", A + 0x1000);
    same("data +0x1000 kept", A + 0x1000, 0x1000, 1);
    zero("zero-filled +0x2000..+0x4000", A + 0x2000, 0x2000);

    /* the whole range must lie in one reservation */
    va("commit +0xf000 size 0x2000 (two reservations)", A + 0xf000, 0x2000, MEM_COMMIT, PAGE_READWRITE);
    va("commit +0xe000 size 0x3000 (two reservations)", A + 0xe000, 0x3000, MEM_COMMIT, PAGE_READWRITE);
    va("commit +0x20000 (free)", A + 0x20000, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    va("commit +0x1f000 size 0x2000 (past the end)", A + 0x1f000, 0x2000, MEM_COMMIT, PAGE_READWRITE);
    va("commit +0x1ffff size 2 (past the end)", A + 0x1ffff, 2, MEM_COMMIT, PAGE_READWRITE);
    vq("query +0xe000 unchanged", A + 0xe000);
    vq("query +0x10000 unchanged", A + 0x10000);
    va("commit +0x10000 size 0x10000 (whole reservation)", A + 0x10000, 0x10000, MEM_COMMIT, PAGE_READWRITE);
    vq("query +0x10000", A + 0x10000);
    va("commit +0x18000 size 0x8000 readonly (up to the end)", A + 0x18000, 0x8000, MEM_COMMIT, PAGE_READONLY);
    vq("query +0x18000", A + 0x18000);

    /* decommit then recommit reads as zero again */
    fill(A + 0x1000, 0x1000, 2);
    vf("decommit +0x1000", A + 0x1000, 0x1000, MEM_DECOMMIT);
    vq("query +0x1000 decommitted", A + 0x1000);
    probe("read probe +0x1000 decommitted", A + 0x1000, PROBE_READ);
    va("recommit +0x1000", A + 0x1000, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    zero("zero-filled +0x1000 after recommit", A + 0x1000, 0x1000);

    /* data survives protection changes */
    fill(A + 0x2000, 0x1000, 3);
    vp("protect +0x2000 readonly", A + 0x2000, 0x1000, PAGE_READONLY);
    same("data +0x2000 readonly", A + 0x2000, 0x1000, 3);
    vp("protect +0x2000 noaccess", A + 0x2000, 0x1000, PAGE_NOACCESS);
    probe("read probe +0x2000 noaccess", A + 0x2000, PROBE_READ);
    vp("protect +0x2000 execute_readwrite", A + 0x2000, 0x1000, PAGE_EXECUTE_READWRITE);
    same("data +0x2000 back", A + 0x2000, 0x1000, 3);

    /* what each protection allows */
    va("commit +0x4000 noaccess", A + 0x4000, 0x1000, MEM_COMMIT, PAGE_NOACCESS);
    vq("query +0x4000", A + 0x4000);
    probe("read probe +0x4000 noaccess", A + 0x4000, PROBE_READ);
    probe("write probe +0x4000 noaccess", A + 0x4000, PROBE_WRITE);
    va("commit +0x5000 readwrite", A + 0x5000, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    A[0x5000] = (char)0xc3; /* ret */
    probe("exec probe +0x5000 readwrite", A + 0x5000, PROBE_EXEC);
    vp("protect +0x5000 execute", A + 0x5000, 0x1000, PAGE_EXECUTE);
    vq("query +0x5000", A + 0x5000);
    probe("exec probe +0x5000 execute", A + 0x5000, PROBE_EXEC);
    probe("read probe +0x5000 execute", A + 0x5000, PROBE_READ);
    probe("write probe +0x5000 execute", A + 0x5000, PROBE_WRITE);
    vp("protect +0x5000 execute_read", A + 0x5000, 0x1000, PAGE_EXECUTE_READ);
    probe("read probe +0x5000 execute_read", A + 0x5000, PROBE_READ);
    probe("exec probe +0x5000 execute_read", A + 0x5000, PROBE_EXEC);
    probe("write probe +0x5000 execute_read", A + 0x5000, PROBE_WRITE);
    vp("protect +0x5000 readonly", A + 0x5000, 0x1000, PAGE_READONLY);
    probe("exec probe +0x5000 readonly", A + 0x5000, PROBE_EXEC);
    va("commit +0x6000 execute_readwrite", A + 0x6000, 0x1000, MEM_COMMIT, PAGE_EXECUTE_READWRITE);
    probe("write probe +0x6000 execute_readwrite", A + 0x6000, PROBE_WRITE);
    A[0x6000] = (char)0xc3;
    probe("exec probe +0x6000 execute_readwrite", A + 0x6000, PROBE_EXEC);
    probe("read probe +0x7000 reserved", A + 0x7000, PROBE_READ);

    vf("release +0", A, 0, MEM_RELEASE);
    vf("release +0x10000", A + 0x10000, 0, MEM_RELEASE);
    probe("read probe +0 released", A, PROBE_READ);
}
