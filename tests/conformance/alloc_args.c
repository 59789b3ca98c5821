/* VirtualAlloc argument validation (spec: "VirtualAlloc", rules 1-3, and MEM_LARGE_PAGES):
 * every rejected size, type combination, protection and address, the accepted
 * combinations, and the order in which the rules are applied. */
#include "common.h"

#define AT_ROUND_TO_PAGE_ 0x40000000u

struct named { DWORD v; const char *name; };

static void run(void)
{
    SYSTEM_INFO si;
    char *A = arena(0x100000);
    char *top;
    unsigned i;
    at(A);
    GetSystemInfo(&si);
    top = (char *)si.lpMaximumApplicationAddress + 1;

    va("reserve +0 64K rw", A, 0x10000, MEM_RESERVE, PAGE_READWRITE);

    /* rule 1: size */
    van("size 0 reserve", 0, MEM_RESERVE, PAGE_READWRITE);
    van("size 0 reserve|commit", 0, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    va("size 0 commit in reservation", A, 0, MEM_COMMIT, PAGE_READWRITE);
    va("size 0 reserve at free +0x20000", A + 0x20000, 0, MEM_RESERVE, PAGE_READWRITE);

    /* rule 1: type combinations, NULL address */
    {
        static const struct named bad[] = {
            {0, "0"},
            {MEM_TOP_DOWN, "TOP_DOWN"},
            {MEM_WRITE_WATCH, "WRITE_WATCH"},
            {MEM_WRITE_WATCH | MEM_COMMIT, "WRITE_WATCH|COMMIT"},
            {MEM_WRITE_WATCH | MEM_TOP_DOWN, "WRITE_WATCH|TOP_DOWN"},
            {MEM_PHYSICAL, "PHYSICAL"},
            {MEM_PHYSICAL | MEM_COMMIT, "PHYSICAL|COMMIT"},
            {MEM_PHYSICAL | MEM_RESERVE | MEM_COMMIT, "PHYSICAL|RESERVE|COMMIT"},
            {MEM_LARGE_PAGES, "LARGE_PAGES"},
            {MEM_DECOMMIT, "DECOMMIT"},
            {MEM_RELEASE, "RELEASE"},
            {MEM_FREE, "FREE"},
            {MEM_RESERVE | MEM_DECOMMIT, "RESERVE|DECOMMIT"},
            {MEM_RESERVE | MEM_RELEASE, "RESERVE|RELEASE"},
            {MEM_RESERVE | AT_ROUND_TO_PAGE_, "RESERVE|AT_ROUND_TO_PAGE"},
            {MEM_RESERVE | MEM_COMMIT | AT_ROUND_TO_PAGE_, "RESERVE|COMMIT|AT_ROUND_TO_PAGE"},
            {MEM_RESERVE | 0x80000000u, "RESERVE|0x80000000"},
            {MEM_RESERVE | 0x1, "RESERVE|0x1"},
            {MEM_RESERVE | 0x800, "RESERVE|0x800"},
            {MEM_RESET | MEM_RESET_UNDO, "RESET|RESET_UNDO"},
        };
        char label[80];
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            snprintf(label, sizeof label, "type %s", bad[i].name);
            van(label, 0x10000, bad[i].v, PAGE_READWRITE);
        }
    }
    {
        static const struct named good[] = {
            {MEM_RESERVE, "RESERVE"},
            {MEM_COMMIT, "COMMIT"},
            {MEM_RESERVE | MEM_COMMIT, "RESERVE|COMMIT"},
            {MEM_RESERVE | MEM_TOP_DOWN, "RESERVE|TOP_DOWN"},
            {MEM_COMMIT | MEM_TOP_DOWN, "COMMIT|TOP_DOWN"},
            {MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, "RESERVE|COMMIT|TOP_DOWN"},
            {MEM_RESERVE | MEM_WRITE_WATCH, "RESERVE|WRITE_WATCH"},
            {MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, "RESERVE|COMMIT|WRITE_WATCH"},
            {MEM_RESERVE | MEM_WRITE_WATCH | MEM_TOP_DOWN, "RESERVE|WRITE_WATCH|TOP_DOWN"},
            {MEM_PHYSICAL | MEM_RESERVE, "PHYSICAL|RESERVE"},
        };
        char label[80];
        for (i = 0; i < sizeof good / sizeof good[0]; i++) {
            snprintf(label, sizeof label, "type %s", good[i].name);
            van(label, 0x10000, good[i].v, PAGE_READWRITE);
        }
    }

    /* MEM_PHYSICAL|MEM_RESERVE (an AWE region): PAGE_READWRITE only (Microsoft's
     * VirtualAlloc documentation); any other protection is 87 */
    {
        static const struct named other[] = {
            {PAGE_NOACCESS, "NOACCESS"},
            {PAGE_READONLY, "READONLY"},
            {PAGE_EXECUTE_READWRITE, "EXECUTE_READWRITE"},
            {PAGE_READWRITE | PAGE_NOCACHE, "READWRITE|NOCACHE"},
        };
        char label[80];
        for (i = 0; i < sizeof other / sizeof other[0]; i++) {
            snprintf(label, sizeof label, "physical reserve prot %s", other[i].name);
            van(label, 0x10000, MEM_PHYSICAL | MEM_RESERVE, other[i].v);
        }
    }

    /* MEM_LARGE_PAGES: needs RESERVE|COMMIT and multiples of the large-page size */
    van("large RESERVE only 2M", 0x200000, MEM_LARGE_PAGES | MEM_RESERVE, PAGE_READWRITE);
    van("large COMMIT only 2M", 0x200000, MEM_LARGE_PAGES | MEM_COMMIT, PAGE_READWRITE);
    van("large RESERVE|COMMIT size 0x1000", 0x1000, MEM_LARGE_PAGES | MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    va("large RESERVE|COMMIT at +0x1000 2M", A + 0x1000, 0x200000, MEM_LARGE_PAGES | MEM_RESERVE | MEM_COMMIT,
       PAGE_READWRITE);
    va("large COMMIT in reservation", A, 0x1000, MEM_LARGE_PAGES | MEM_COMMIT, PAGE_READWRITE);

    /* rule 2: protection, on a new reservation */
    {
        static const struct named good[] = {
            {PAGE_NOACCESS, "NOACCESS"},
            {PAGE_READONLY, "READONLY"},
            {PAGE_READWRITE, "READWRITE"},
            {PAGE_EXECUTE, "EXECUTE"},
            {PAGE_EXECUTE_READ, "EXECUTE_READ"},
            {PAGE_EXECUTE_READWRITE, "EXECUTE_READWRITE"},
            {PAGE_READWRITE | PAGE_GUARD, "READWRITE|GUARD"},
            {PAGE_READONLY | PAGE_NOCACHE, "READONLY|NOCACHE"},
            {PAGE_READWRITE | PAGE_WRITECOMBINE, "READWRITE|WRITECOMBINE"},
            {PAGE_EXECUTE_READ | PAGE_GUARD, "EXECUTE_READ|GUARD"},
        };
        static const struct named bad[] = {
            {0, "0"},
            {PAGE_NOACCESS | PAGE_READONLY, "NOACCESS|READONLY"},
            {PAGE_READONLY | PAGE_READWRITE, "READONLY|READWRITE"},
            {PAGE_READWRITE | PAGE_EXECUTE, "READWRITE|EXECUTE"},
            {PAGE_EXECUTE | PAGE_EXECUTE_READ, "EXECUTE|EXECUTE_READ"},
            {PAGE_WRITECOPY, "WRITECOPY"},
            {PAGE_EXECUTE_WRITECOPY, "EXECUTE_WRITECOPY"},
            {PAGE_GUARD, "GUARD"},
            {PAGE_NOCACHE, "NOCACHE"},
            {PAGE_WRITECOMBINE, "WRITECOMBINE"},
            {PAGE_NOACCESS | PAGE_GUARD, "NOACCESS|GUARD"},
            {PAGE_NOACCESS | PAGE_NOCACHE, "NOACCESS|NOCACHE"},
            {PAGE_NOACCESS | PAGE_WRITECOMBINE, "NOACCESS|WRITECOMBINE"},
            {PAGE_READWRITE | PAGE_GUARD | PAGE_NOCACHE, "READWRITE|GUARD|NOCACHE"},
            {PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE, "READWRITE|NOCACHE|WRITECOMBINE"},
            {0x800, "0x800"},
            {PAGE_READWRITE | 0x1000, "READWRITE|0x1000"},
            {PAGE_READWRITE | 0x80000000u, "READWRITE|0x80000000"},
        };
        char label[80];
        for (i = 0; i < sizeof good / sizeof good[0]; i++) {
            snprintf(label, sizeof label, "reserve prot %s", good[i].name);
            van(label, 0x10000, MEM_RESERVE, good[i].v);
        }
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            snprintf(label, sizeof label, "reserve prot %s", bad[i].name);
            van(label, 0x10000, MEM_RESERVE, bad[i].v);
        }
        for (i = 0; i < sizeof good / sizeof good[0]; i++) {
            snprintf(label, sizeof label, "reserve|commit prot %s", good[i].name);
            van(label, 0x10000, MEM_RESERVE | MEM_COMMIT, good[i].v);
        }
    }
    /* ... and on a commit inside an existing reservation */
    va("commit prot 0", A, 0x1000, MEM_COMMIT, 0);
    va("commit prot WRITECOPY", A, 0x1000, MEM_COMMIT, PAGE_WRITECOPY);
    va("commit prot EXECUTE_WRITECOPY", A, 0x1000, MEM_COMMIT, PAGE_EXECUTE_WRITECOPY);
    va("commit prot READONLY|EXECUTE", A, 0x1000, MEM_COMMIT, PAGE_READONLY | PAGE_EXECUTE);
    va("commit prot NOACCESS|GUARD", A, 0x1000, MEM_COMMIT, PAGE_NOACCESS | PAGE_GUARD);
    vq("after rejected commits +0", A);

    /* rule 3: addresses */
    va("reserve at 0x1000", (void *)0x1000, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve at 0xf000", (void *)0xf000, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve at 0xffff size 2", (void *)0xffff, 2, MEM_RESERVE, PAGE_READWRITE);
    va("commit at 0x8000", (void *)0x8000, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    va("reserve|commit at 0x1000", (void *)0x1000, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    va("reserve ending past top", top - 0x10000, 0x20000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve at top", top, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve at 2^47", (void *)((uintptr_t)1 << 47), 0x10000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve at -64K (wraps)", (void *)(uintptr_t)-0x10000, 0x20000, MEM_RESERVE, PAGE_READWRITE);
    va("commit at -64K", (void *)(uintptr_t)-0x10000, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    van("reserve size SIZE_MAX", (SIZE_T)-1, MEM_RESERVE, PAGE_READWRITE);
    van("reserve size 2^48", (SIZE_T)1 << 48, MEM_RESERVE, PAGE_READWRITE);
    va("reserve at +0x20000 size SIZE_MAX", A + 0x20000, (SIZE_T)-1, MEM_RESERVE, PAGE_READWRITE);
    va("commit +0 size wrapping", A, (SIZE_T)-0x1000, MEM_COMMIT, PAGE_READWRITE);
    va("commit +0 size 2^48", A, (SIZE_T)1 << 48, MEM_COMMIT, PAGE_READWRITE);
    va("reset at 0x1000", (void *)0x1000, 0x1000, MEM_RESET, PAGE_READWRITE);

    /* the order of the rules: an argument error wins over an address conflict */
    va("reserve at occupied +0, prot 0", A, 0x1000, MEM_RESERVE, 0);
    va("reserve at occupied +0, type TOP_DOWN", A, 0x1000, MEM_TOP_DOWN, PAGE_READWRITE);
    va("reserve at occupied +0, size 0", A, 0, MEM_RESERVE, PAGE_READWRITE);
    va("reserve at occupied +0", A, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    va("commit at free +0x20000, prot WRITECOPY", A + 0x20000, 0x1000, MEM_COMMIT, PAGE_WRITECOPY);
    va("commit at free +0x20000", A + 0x20000, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    va("reserve below 0x10000, prot 0", (void *)0x1000, 0x1000, MEM_RESERVE, 0);
    vq("+0 unchanged", A);
    vf("release +0", A, 0, MEM_RELEASE);
}
