/* PAGE_GUARD (spec: "PAGE_GUARD"): Protect reports base|0x100; the first access of any
 * kind raises STATUS_GUARD_PAGE_VIOLATION once and disarms that page only; the retry
 * succeeds if the base protection allows it; VirtualProtect re-arms and reports 0x100
 * in the old protection while armed. */
#include "common.h"

static void run(void)
{
    char *A = arena(0x100000);
    at(A);

    va("reserve|commit +0 size 0x4000 rw|guard", A, 0x4000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    vq("query +0 armed", A);
    probe("read probe +0", A, PROBE_READ);
    vq("query +0 after the touch", A);
    vq("query +0x1000 still armed", A + 0x1000);
    probe("read probe +0 again", A, PROBE_READ);
    zero("zero-filled +0", A, 0x1000);
    probe("write probe +0x1800", A + 0x1800, PROBE_WRITE);
    probe("write probe +0x1800 again", A + 0x1800, PROBE_WRITE);
    vq("query +0x1000 after the touch", A + 0x1000);
    vq("query +0x2000", A + 0x2000);
    probe("read probe +0x3fff", A + 0x3fff, PROBE_READ);
    vq("query +0x2000 after touching +0x3fff", A + 0x2000);
    vq("query +0x3000", A + 0x3000);

    /* re-arming; the old protection shows the guard bit while armed */
    fill(A, 0x1000, 7);
    vp("protect +0 rw|guard (re-arm)", A, 0x1000, PAGE_READWRITE | PAGE_GUARD);
    vp("protect +0 rw|guard (armed)", A, 0x1000, PAGE_READWRITE | PAGE_GUARD);
    probe("write probe +0 re-armed", A, PROBE_WRITE);
    vp("protect +0 rw (disarmed by the touch)", A, 0x1000, PAGE_READWRITE);
    same("data +0 kept across guard", A, 0x1000, 7);

    /* the retry is governed by the base protection */
    vp("protect +0x1000 readonly|guard", A + 0x1000, 0x1000, PAGE_READONLY | PAGE_GUARD);
    vq("query +0x1000 readonly|guard", A + 0x1000);
    probe("write probe +0x1000 readonly|guard", A + 0x1000, PROBE_WRITE);
    probe("write probe +0x1000 again", A + 0x1000, PROBE_WRITE);
    probe("read probe +0x1000", A + 0x1000, PROBE_READ);
    vq("query +0x1000 readonly", A + 0x1000);

    /* execute access trips it too */
    vp("protect +0x2000 rw (still armed)", A + 0x2000, 0x1000, PAGE_READWRITE);
    A[0x2000] = (char)0xc3; /* ret */
    vp("protect +0x2000 execute_read|guard", A + 0x2000, 0x1000, PAGE_EXECUTE_READ | PAGE_GUARD);
    probe("exec probe +0x2000", A + 0x2000, PROBE_EXEC);
    vq("query +0x2000 after exec", A + 0x2000);
    probe("exec probe +0x2000 again", A + 0x2000, PROBE_EXEC);
    vp("protect +0x2000 noaccess|guard", A + 0x2000, 0x1000, PAGE_NOACCESS | PAGE_GUARD);

    /* commit with guard on reserved pages of a plain reservation */
    va("reserve +0x10000 size 0x4000 rw", A + 0x10000, 0x4000, MEM_RESERVE, PAGE_READWRITE);
    va("commit +0x11000 rw|guard", A + 0x11000, 0x1000, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    vq("query +0x11000", A + 0x11000);
    vq("query +0x10000", A + 0x10000);
    probe("read probe +0x11000", A + 0x11000, PROBE_READ);
    va("commit +0x11000 rw|guard again", A + 0x11000, 0x1000, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    vq("query +0x11000 re-armed by commit", A + 0x11000);
    va("commit +0x10000 size 0x3000 rw", A + 0x10000, 0x3000, MEM_COMMIT, PAGE_READWRITE);
    vq("query +0x10000 disarmed by commit", A + 0x10000);
    vf("decommit +0x10000 size 0x4000", A + 0x10000, 0x4000, MEM_DECOMMIT);
    va("commit +0x10000 size 0x4000 noaccess|guard", A + 0x10000, 0x4000, MEM_COMMIT, PAGE_NOACCESS | PAGE_GUARD);

    vf("release +0", A, 0, MEM_RELEASE);
    vf("release +0x10000", A + 0x10000, 0, MEM_RELEASE);
}
