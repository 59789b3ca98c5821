/* VirtualProtect (spec: "VirtualProtect"): the old-protection pointer, every invalid
 * protection, the committed-pages-of-one-reservation rule (and *old_protect on
 * failure), the first page's old protection, page rounding, NOCACHE belonging to the
 * allocation, and that a failed call changes nothing. */
#include "common.h"

static void run(void)
{
    char *A = arena(0x100000);
    DWORD old;
    BOOL ok;
    unsigned i;
    at(A);

    va("reserve +0 size 0x8000 rw", A, 0x8000, MEM_RESERVE, PAGE_READWRITE);
    va("commit +0 size 0x4000 rw", A, 0x4000, MEM_COMMIT, PAGE_READWRITE);
    va("reserve +0x10000 size 0x10000", A + 0x10000, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    va("reserve|commit +0x20000 size 0x10000 rw", A + 0x20000, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    va("reserve +0x40000 (end marker)", A + 0x40000, 0x1000, MEM_RESERVE, PAGE_NOACCESS);

    /* old_protect NULL */
    ok = VirtualProtect(A, 0x1000, PAGE_READONLY, NULL);
    LINE("old NULL: %s err=%u", ok ? "ok" : "fail", ok ? 0 : err());
    ok = VirtualProtect(A, 0x1000, 0, NULL);
    LINE("old NULL, prot 0: %s err=%u", ok ? "ok" : "fail", ok ? 0 : err());
    ok = VirtualProtect(A + 0x30000, 0x1000, PAGE_READONLY, NULL);
    LINE("old NULL, free memory: %s err=%u", ok ? "ok" : "fail", ok ? 0 : err());
    vq("query +0 unchanged", A);

    /* invalid protections */
    {
        static const struct { DWORD v; const char *name; } bad[] = {
            {0, "0"},
            {PAGE_WRITECOPY, "WRITECOPY"},
            {PAGE_EXECUTE_WRITECOPY, "EXECUTE_WRITECOPY"},
            {PAGE_READONLY | PAGE_READWRITE, "READONLY|READWRITE"},
            {PAGE_READWRITE | PAGE_EXECUTE_WRITECOPY, "READWRITE|EXECUTE_WRITECOPY"},
            {PAGE_GUARD, "GUARD"},
            {PAGE_NOACCESS | PAGE_GUARD, "NOACCESS|GUARD"},
            {PAGE_NOACCESS | PAGE_NOCACHE, "NOACCESS|NOCACHE"},
            {PAGE_READWRITE | PAGE_GUARD | PAGE_NOCACHE, "READWRITE|GUARD|NOCACHE"},
            {PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE, "READWRITE|NOCACHE|WRITECOMBINE"},
            {0x800, "0x800"},
            {PAGE_READWRITE | 0x1000, "READWRITE|0x1000"},
        };
        char label[80];
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            snprintf(label, sizeof label, "protect +0 %s", bad[i].name);
            vp(label, A, 0x1000, bad[i].v);
        }
    }
    vq("query +0 still unchanged", A);

    /* every page must be committed, in one reservation */
    vp("protect +0x3000 size 0x2000 (committed + reserved)", A + 0x3000, 0x2000, PAGE_READONLY);
    vp("protect +0x4000 (reserved)", A + 0x4000, 0x1000, PAGE_READONLY);
    vp("protect +0x10000 (reserved)", A + 0x10000, 0x1000, PAGE_READONLY);
    vp("protect +0x8000 (blocked, free)", A + 0x8000, 0x1000, PAGE_READONLY);
    vp("protect +0x30000 (free)", A + 0x30000, 0x1000, PAGE_READONLY);
    vp("protect +0x30000 (free), prot WRITECOPY", A + 0x30000, 0x1000, PAGE_WRITECOPY);
    vp("protect +0x2f000 size 0x2000 (past the end)", A + 0x2f000, 0x2000, PAGE_READONLY);
    vp("protect +0x1f000 size 0x2000 (two reservations)", A + 0x1f000, 0x2000, PAGE_READONLY);
    vq("query +0x3000 unchanged", A + 0x3000);
    vq("query +0x2f000 unchanged", A + 0x2f000);

    /* success: old protection of the first page; every page takes the new one */
    vp("protect +0 readonly", A, 0x1000, PAGE_READONLY);
    vp("protect +0 size 0x4000 execute_read", A, 0x4000, PAGE_EXECUTE_READ);
    vq("query +0", A);
    vp("protect +0xfff size 2 readwrite", A + 0xfff, 2, PAGE_READWRITE);
    vq("query +0 after straddling protect", A);
    vq("query +0x2000", A + 0x2000);
    vp("protect +0x1800 size 0x1000 noaccess", A + 0x1800, 0x1000, PAGE_NOACCESS);
    vq("query +0x1000", A + 0x1000);
    vp("protect +0 size 0x4000 readwrite", A, 0x4000, PAGE_READWRITE);
    vq("query +0 back", A);
    vp("protect +0x20000 size 0x10000 execute", A + 0x20000, 0x10000, PAGE_EXECUTE);
    vp("protect +0x20000 size 0x10000 readwrite", A + 0x20000, 0x10000, PAGE_READWRITE);
    vp("protect +0x2ffff size 1 readonly", A + 0x2ffff, 1, PAGE_READONLY);
    vq("query +0x2f000", A + 0x2f000);

    /* size 0 */
    vp("protect +0x20000 size 0 readonly", A + 0x20000, 0, PAGE_READONLY);
    vq("query +0x20000 after size 0", A + 0x20000);
    vp("protect +0x21800 size 0 readonly", A + 0x21800, 0, PAGE_READONLY);
    vq("query +0x21000 after size 0", A + 0x21000);
    vp("protect +0x4000 (reserved) size 0", A + 0x4000, 0, PAGE_READONLY);
    vp("protect +0x4800 (reserved) size 0", A + 0x4800, 0, PAGE_READONLY);
    vp("protect +0x30000 (free) size 0", A + 0x30000, 0, PAGE_READONLY);

    /* guard bit in the old protection */
    vp("protect +0 rw|guard", A, 0x1000, PAGE_READWRITE | PAGE_GUARD);
    vp("protect +0 rw|guard again", A, 0x1000, PAGE_READWRITE | PAGE_GUARD);
    vp("protect +0 rw", A, 0x1000, PAGE_READWRITE);

    /* NOCACHE belongs to the allocation */
    va("reserve|commit +0x50000 size 0x2000 rw|nocache", A + 0x50000, 0x2000, MEM_RESERVE | MEM_COMMIT,
       PAGE_READWRITE | PAGE_NOCACHE);
    vp("protect +0x50000 readonly (nocache allocation)", A + 0x50000, 0x1000, PAGE_READONLY);
    vq("query +0x50000", A + 0x50000);
    vq("query +0x51000", A + 0x51000);
    vp("protect +0x50000 readwrite (nocache allocation)", A + 0x50000, 0x1000, PAGE_READWRITE);
    vq("query +0x50000 merged", A + 0x50000);
    va("reserve|commit +0x60000 size 0x2000 rw", A + 0x60000, 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    vp("protect +0x60000 readonly|nocache (plain allocation)", A + 0x60000, 0x1000, PAGE_READONLY | PAGE_NOCACHE);
    vq("query +0x60000", A + 0x60000);
    vp("protect +0x60000 readwrite", A + 0x60000, 0x1000, PAGE_READWRITE);

    /* *old_protect on failure */
    old = OLD_UNSET;
    ok = VirtualProtect(A + 0x4000, 0x1000, PAGE_READONLY, &old);
    LINE("old after reserved failure: %s err=%u old=0x%x", ok ? "ok" : "fail", ok ? 0 : err(), (unsigned)old);

    vf("release +0", A, 0, MEM_RELEASE);
    vf("release +0x10000", A + 0x10000, 0, MEM_RELEASE);
    vf("release +0x20000", A + 0x20000, 0, MEM_RELEASE);
    vf("release +0x40000", A + 0x40000, 0, MEM_RELEASE);
    vf("release +0x50000", A + 0x50000, 0, MEM_RELEASE);
    vf("release +0x60000", A + 0x60000, 0, MEM_RELEASE);
    vp("protect +0 after release", A, 0x1000, PAGE_READONLY);
}
