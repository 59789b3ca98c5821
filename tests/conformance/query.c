/* VirtualQuery (spec: "VirtualQuery"): the buffer length, addresses above the top,
 * address 0, every field, how regions split and merge, free regions, and the
 * allocation protection of each kind of reservation. */
#include "common.h"

static void run(void)
{
    SYSTEM_INFO si;
    MEMORY_BASIC_INFORMATION m;
    char big[100];
    SIZE_T r;
    char *A = arena(0x100000);
    char *top;
    at(A);
    GetSystemInfo(&si);
    top = (char *)si.lpMaximumApplicationAddress + 1;

    va("reserve +0 size 0x10000 rw", A, 0x10000, MEM_RESERVE, PAGE_READWRITE);

    /* the buffer */
    r = VirtualQuery(A, &m, 0);
    LINE("length 0: ret=%u err=%u", (unsigned)r, r ? 0 : err());
    r = VirtualQuery(A, &m, sizeof m - 1);
    LINE("length 47: ret=%u err=%u", (unsigned)r, r ? 0 : err());
    r = VirtualQuery(A, &m, sizeof m);
    LINE("length 48: ret=%u", (unsigned)r);
    r = VirtualQuery(A, (MEMORY_BASIC_INFORMATION *)big, sizeof big);
    LINE("length 100: ret=%u", (unsigned)r);
    r = VirtualQuery(A, NULL, 0);
    LINE("NULL buffer length 0: ret=%u err=%u", (unsigned)r, r ? 0 : err());
    r = VirtualQuery(A, NULL, sizeof m);
    LINE("NULL buffer length 48: ret=%u err=%u", (unsigned)r, r ? 0 : err());

    /* addresses */
    vq("query top (max+1)", top);
    vq("query 2^47", (void *)((uintptr_t)1 << 47));
    vq("query -1", (void *)(uintptr_t)-1);
    r = VirtualQuery(top, &m, 0);
    LINE("query top length 0: ret=%u err=%u", (unsigned)r, r ? 0 : err());
    r = VirtualQuery(top, NULL, sizeof m);
    LINE("query top NULL buffer: ret=%u err=%u", (unsigned)r, r ? 0 : err());
    r = VirtualQuery(si.lpMaximumApplicationAddress, &m, sizeof m);
    LINE("query max: ret=%u base%%64K=0x%x", (unsigned)r, (unsigned)((uintptr_t)m.BaseAddress & 0xffff));
    vq_nosize("query 0", NULL);
    vq_nosize("query 0x1234", (void *)0x1234);

    /* fields, splitting and merging */
    vq("query +0 reserved", A);
    vq("query +0x1234", A + 0x1234);
    va("commit +0x2000 size 0x3000 readonly", A + 0x2000, 0x3000, MEM_COMMIT, PAGE_READONLY);
    va("commit +0x5000 size 0x1000 readonly", A + 0x5000, 0x1000, MEM_COMMIT, PAGE_READONLY);
    va("commit +0x6000 size 0x1000 rw", A + 0x6000, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    vq("query +0", A);
    vq("query +0x2800 (merged commits)", A + 0x2800);
    vq("query +0x5fff", A + 0x5fff);
    vq("query +0x6000", A + 0x6000);
    vq("query +0x7000", A + 0x7000);
    vp("protect +0x3000 rw", A + 0x3000, 0x1000, PAGE_READWRITE);
    vq("query +0x2000 split", A + 0x2000);
    vq("query +0x3000 split", A + 0x3000);
    vq("query +0x4000 split", A + 0x4000);
    vp("protect +0x3000 readonly", A + 0x3000, 0x1000, PAGE_READONLY);
    vq("query +0x2000 merged again", A + 0x2000);
    vf("decommit +0x2000 size 0x4000", A + 0x2000, 0x4000, MEM_DECOMMIT);
    vq("query +0 (decommitted and never committed)", A);
    vq("query +0x6000 after decommit", A + 0x6000);
    va("commit +0x8000 rw|guard", A + 0x8000, 0x1000, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    vq("query +0x8000 guard", A + 0x8000);
    va("commit +0x9000 rw", A + 0x9000, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    vq("query +0x9000", A + 0x9000);
    vq("query +0xa000", A + 0xa000);
    va("commit +0xf000 rw", A + 0xf000, 0x1000, MEM_COMMIT, PAGE_READWRITE);

    /* a region never runs past its reservation */
    va("reserve|commit +0x10000 size 0x10000 rw", A + 0x10000, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    vq("query +0xf000 (next reservation alike)", A + 0xf000);
    vq("query +0x10000", A + 0x10000);

    /* free memory runs to the next reservation */
    va("reserve +0xa0000 size 0x1000 (end marker)", A + 0xa0000, 0x1000, MEM_RESERVE, PAGE_NOACCESS);
    va("reserve +0x40000 size 0x1000", A + 0x40000, 0x1000, MEM_RESERVE, PAGE_NOACCESS);
    va("reserve +0x50000 size 0x1000", A + 0x50000, 0x1000, MEM_RESERVE, PAGE_EXECUTE);
    vq("query +0x20000 free", A + 0x20000);
    vq("query +0x2ffff free", A + 0x2ffff);
    vq("query +0x40000", A + 0x40000);
    vq("query +0x41000 (rest of the granule)", A + 0x41000);
    vq("query +0x4f800", A + 0x4f800);
    vq("query +0x50000", A + 0x50000);

    /* AllocationProtect of each kind of reservation; it never changes */
    va("reserve|commit +0x60000 rw|nocache", A + 0x60000, 0x2000, MEM_RESERVE | MEM_COMMIT,
       PAGE_READWRITE | PAGE_NOCACHE);
    vq("query +0x60000", A + 0x60000);
    va("reserve|commit +0x70000 rw|writecombine", A + 0x70000, 0x2000, MEM_RESERVE | MEM_COMMIT,
       PAGE_READWRITE | PAGE_WRITECOMBINE);
    vq("query +0x70000", A + 0x70000);
    va("reserve|commit +0x80000 execute_read|guard", A + 0x80000, 0x2000, MEM_RESERVE | MEM_COMMIT,
       PAGE_EXECUTE_READ | PAGE_GUARD);
    vq("query +0x80000", A + 0x80000);
    vp("protect +0x80000 readwrite", A + 0x80000, 0x2000, PAGE_READWRITE);
    vq("query +0x80000 after protect", A + 0x80000);
    va("reserve +0x90000 execute_readwrite", A + 0x90000, 0x3000, MEM_RESERVE, PAGE_EXECUTE_READWRITE);
    va("commit +0x91000 noaccess", A + 0x91000, 0x1000, MEM_COMMIT, PAGE_NOACCESS);
    vq("query +0x90000", A + 0x90000);
    vq("query +0x91000", A + 0x91000);
    vq("query +0x92000", A + 0x92000);
    vq("query +0x93000 (rest of the granule)", A + 0x93000);

    vf("release +0", A, 0, MEM_RELEASE);
    vf("release +0x10000", A + 0x10000, 0, MEM_RELEASE);
    vf("release +0x40000", A + 0x40000, 0, MEM_RELEASE);
    vf("release +0x50000", A + 0x50000, 0, MEM_RELEASE);
    vf("release +0x60000", A + 0x60000, 0, MEM_RELEASE);
    vf("release +0x70000", A + 0x70000, 0, MEM_RELEASE);
    vf("release +0x80000", A + 0x80000, 0, MEM_RELEASE);
    vf("release +0x90000", A + 0x90000, 0, MEM_RELEASE);
    vq("query +0x40000 released", A + 0x40000);
    vf("release +0xa0000", A + 0xa0000, 0, MEM_RELEASE);
}
