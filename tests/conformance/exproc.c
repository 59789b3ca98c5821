/* The Ex forms and process handles (spec: "Ex forms and process handles"): the
 * current-process pseudo handle, NULL and unknown handles, a second process (a real
 * suspended child on Windows, a simulated process natively) with the same rules as
 * the plain forms, ReadProcessMemory / WriteProcessMemory with partial and read-only
 * ranges, and handles to a process that has exited or was closed. */
#include "common.h"

static void vax(const char *label, HANDLE h, void *addr, SIZE_T size, DWORD type, DWORD prot)
{
    void *p = VirtualAllocEx(h, addr, size, type, prot);
    if (p)
        LINE("%s: ok %s", label, rel(p));
    else
        LINE("%s: fail err=%u", label, err());
}

static void vfx(const char *label, HANDLE h, void *addr, SIZE_T size, DWORD type)
{
    if (VirtualFreeEx(h, addr, size, type))
        LINE("%s: ok", label);
    else
        LINE("%s: fail err=%u", label, err());
}

static void vqx(const char *label, HANDLE h, void *addr)
{
    MEMORY_BASIC_INFORMATION m;
    SIZE_T r;
    memset(&m, 0xcc, sizeof m);
    r = VirtualQueryEx(h, addr, &m, sizeof m);
    if (r)
        print_mbi(label, r, &m, 1);
    else
        LINE("%s: ret=0 err=%u", label, err());
}

static void vqx_nosize(const char *label, HANDLE h, void *addr)
{
    MEMORY_BASIC_INFORMATION m;
    SIZE_T r;
    memset(&m, 0xcc, sizeof m);
    r = VirtualQueryEx(h, addr, &m, sizeof m);
    if (r)
        print_mbi(label, r, &m, 0);
    else
        LINE("%s: ret=0 err=%u", label, err());
}

static void vpx(const char *label, HANDLE h, void *addr, SIZE_T size, DWORD prot)
{
    DWORD old = OLD_UNSET;
    char o[16];
    BOOL ok = VirtualProtectEx(h, addr, size, prot, &old);
    print_old(o, sizeof o, old);
    if (ok)
        LINE("%s: ok old=%s", label, o);
    else
        LINE("%s: fail err=%u old=%s", label, err(), o);
}

static unsigned char buf[0x3000];
static unsigned char big[0x20000]; /* a readable source/target much smaller than the sizes asked for */

static void rpm(const char *label, HANDLE h, void *addr, SIZE_T size)
{
    SIZE_T n = 0xdead;
    memset(buf, 0xee, sizeof buf);
    if (ReadProcessMemory(h, addr, buf, size, &n))
        LINE("%s: ok n=0x%llx", label, (unsigned long long)n);
    else
        LINE("%s: fail err=%u", label, err());
}

/* Into a buffer of the caller's choosing (not printed). */
static void rpm_to(const char *label, HANDLE h, void *addr, void *to, SIZE_T size)
{
    SIZE_T n = 0xdead;
    if (ReadProcessMemory(h, addr, to, size, &n))
        LINE("%s: ok n=0x%llx", label, (unsigned long long)n);
    else
        LINE("%s: fail err=%u", label, err());
}

static void wpm(const char *label, HANDLE h, void *addr, const void *src, SIZE_T size)
{
    SIZE_T n = 0xdead;
    if (WriteProcessMemory(h, addr, src, size, &n))
        LINE("%s: ok n=0x%llx", label, (unsigned long long)n);
    else
        LINE("%s: fail err=%u", label, err());
}

static void buf_is(const char *label, int byte, SIZE_T n)
{
    SIZE_T i;
    for (i = 0; i < n; i++)
        if (buf[i] != (unsigned char)byte) {
            LINE("%s: differs at 0x%llx", label, (unsigned long long)i);
            return;
        }
    LINE("%s: all 0x%02x", label, (unsigned)byte);
}

static void run(void)
{
    HANDLE self = GetCurrentProcess();
    HANDLE bogus = (HANDLE)(uintptr_t)0x1230;
    HANDLE child;
    unsigned char src[0x2000];
    char *p, *C, *L;
    unsigned char *ro;
    MEMORY_BASIC_INFORMATION m;
    char *A = arena(0x100000);
    at(A);

    LINE("GetCurrentProcess is -1: %s", self == (HANDLE)(intptr_t)-1 ? "yes" : "no");

    /* the pseudo handle acts on this process */
    vax("AllocEx self +0 reserve|commit", self, A, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    vqx("QueryEx self +0", self, A);
    vq("Query +0 (same space)", A);
    vpx("ProtectEx self +0 readonly", self, A, 0x1000, PAGE_READONLY);
    vq("Query +0 after ProtectEx", A);
    vfx("FreeEx self +0 decommit", self, A + 0x1000, 0x1000, MEM_DECOMMIT);
    vq("Query +0x1000 after FreeEx", A + 0x1000);
    vax("AllocEx self size 0", self, NULL, 0, MEM_RESERVE, PAGE_READWRITE);
    vfx("FreeEx self type 0", self, A, 0, 0);
    vpx("ProtectEx self prot WRITECOPY", self, A, 0x1000, PAGE_WRITECOPY);
    {
        SIZE_T r = VirtualQueryEx(self, A, &m, 0);
        LINE("QueryEx self length 0: ret=%u err=%u", (unsigned)r, r ? 0 : err());
    }
    memset(src, 0x11, sizeof src);
    wpm("WriteProcessMemory self +0x2000", self, A + 0x2000, src, 0x100);
    rpm("ReadProcessMemory self +0x2000", self, A + 0x2000, 0x100);
    buf_is("  read back", 0x11, 0x100);
    vfx("FreeEx self +0 release", self, A, 0, MEM_RELEASE);

    /* NULL and unknown handles */
    vax("AllocEx NULL handle", NULL, NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    vfx("FreeEx NULL handle", NULL, A, 0, MEM_RELEASE);
    vqx("QueryEx NULL handle", NULL, A);
    vpx("ProtectEx NULL handle", NULL, A, 0x1000, PAGE_READONLY);
    rpm("ReadProcessMemory NULL handle", NULL, A, 0x10);
    wpm("WriteProcessMemory NULL handle", NULL, A, src, 0x10);
    vax("AllocEx unknown handle", bogus, NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    vfx("FreeEx unknown handle", bogus, A, 0, MEM_RELEASE);
    vqx("QueryEx unknown handle", bogus, A);
    vpx("ProtectEx unknown handle", bogus, A, 0x1000, PAGE_READONLY);
    /* the old-protection slot is probed before the handle is looked at */
    {
        BOOL ok = VirtualProtectEx(bogus, A, 0x1000, PAGE_READONLY, NULL);
        LINE("ProtectEx unknown handle, NULL old: %s err=%u", ok ? "ok" : "fail", err());
        ok = VirtualProtectEx(NULL, A, 0x1000, PAGE_READONLY, NULL);
        LINE("ProtectEx NULL handle, NULL old: %s err=%u", ok ? "ok" : "fail", err());
    }
    /* a zero size and a short length are checked before the handle is looked at */
    vax("AllocEx unknown handle size 0", bogus, NULL, 0, MEM_RESERVE, PAGE_READWRITE);
    vax("AllocEx NULL handle size 0", NULL, NULL, 0, MEM_RESERVE, PAGE_READWRITE);
    {
        SIZE_T r = VirtualQueryEx(bogus, A, &m, 4);
        LINE("QueryEx unknown handle, length 4: ret=%u err=%u", (unsigned)r, r ? 0 : err());
        r = VirtualQueryEx(NULL, A, &m, 4);
        LINE("QueryEx NULL handle, length 4: ret=%u err=%u", (unsigned)r, r ? 0 : err());
    }
    rpm("ReadProcessMemory unknown handle", bogus, A, 0x10);
    wpm("WriteProcessMemory unknown handle", bogus, A, src, 0x10);

    /* a second process */
    child = conf_child_create();
    LINE("second process: %s", child ? "ok" : "fail");
    p = (char *)VirtualAllocEx(child, NULL, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
    LINE("AllocEx child NULL reserve: %s base%%64K=0x%x", p ? "ok" : "fail", (unsigned)((uintptr_t)p & 0xffff));
    VirtualFreeEx(child, p, 0, MEM_RELEASE);
    C = p; /* a free 64K of the child's space to work in */
    at(C);
    vax("AllocEx child +0 reserve 0x8000", child, C, 0x8000, MEM_RESERVE, PAGE_NOACCESS);
    vqx("QueryEx child +0", child, C);
    vax("AllocEx child +0xfff commit size 2", child, C + 0xfff, 2, MEM_COMMIT, PAGE_READWRITE);
    vqx("QueryEx child +0 committed", child, C);
    vqx("QueryEx child +0x2000", child, C + 0x2000);
    vqx_nosize("QueryEx child +0x8000 (rest of the granule)", child, C + 0x8000);
    vax("AllocEx child +0x8000 (granule blocked)", child, C + 0x8000, 0x1000, MEM_RESERVE, PAGE_READWRITE);
    vax("AllocEx child commit past the end", child, C + 0x7000, 0x2000, MEM_COMMIT, PAGE_READWRITE);
    vax("AllocEx child prot 0", child, C, 0x1000, MEM_COMMIT, 0);
    rpm("ReadProcessMemory child fresh commit", child, C, 0x2000);
    buf_is("  fresh commit zero-filled", 0, 0x2000);
    memset(src, 0x5a, sizeof src);
    wpm("WriteProcessMemory child +0x10", child, C + 0x10, src, 0x20);
    rpm("ReadProcessMemory child +0x10", child, C + 0x10, 0x20);
    buf_is("  child read back", 0x5a, 0x20);

    /* partial copies */
    rpm("ReadProcessMemory child +0x1800 size 0x1000 (into reserved)", child, C + 0x1800, 0x1000);
    rpm("ReadProcessMemory child +0x2000 (reserved)", child, C + 0x2000, 0x10);
    rpm("ReadProcessMemory child +0x9000 (free)", child, C + 0x9000, 0x10);
    memset(src, 0x77, sizeof src);
    wpm("WriteProcessMemory child +0x1800 size 0x1000 (into reserved)", child, C + 0x1800, src, 0x1000);
    rpm("  read +0x1800 back", child, C + 0x1800, 0x800);
    buf_is("  nothing written at +0x1800", 0, 0x800);
    wpm("WriteProcessMemory child +0x2000 (reserved)", child, C + 0x2000, src, 0x10);
    wpm("WriteProcessMemory child +0x9000 (free)", child, C + 0x9000, src, 0x10);
    vpx("ProtectEx child +0x1000 readonly", child, C + 0x1000, 0x1000, PAGE_READONLY);
    wpm("WriteProcessMemory child +0x1000 (read-only)", child, C + 0x1000, src, 0x10);
    wpm("WriteProcessMemory child +0xff0 size 0x20 (into read-only)", child, C + 0xff0, src, 0x20);
    rpm("  read +0xff0 back", child, C + 0xff0, 0x20);
    buf_is("  nothing written at +0xff0", 0, 0x20);
    rpm("ReadProcessMemory child +0x1000 (read-only)", child, C + 0x1000, 0x10);
    vpx("ProtectEx child +0x1000 noaccess", child, C + 0x1000, 0x1000, PAGE_NOACCESS);
    rpm("ReadProcessMemory child +0x1000 (noaccess)", child, C + 0x1000, 0x10);
    vqx("QueryEx child +0x1000", child, C + 0x1000);

    /* code: WriteProcessMemory makes PAGE_EXECUTE / PAGE_EXECUTE_READ pages writable for
     * the copy (a debugger's breakpoint) and gives them their protection back */
    vax("AllocEx child +0x4000 commit 0x3000", child, C + 0x4000, 0x3000, MEM_COMMIT, PAGE_READWRITE);
    vpx("ProtectEx child +0x4000 execute_read", child, C + 0x4000, 0x1000, PAGE_EXECUTE_READ);
    vpx("ProtectEx child +0x5000 execute", child, C + 0x5000, 0x1000, PAGE_EXECUTE);
    vpx("ProtectEx child +0x6000 readonly", child, C + 0x6000, 0x1000, PAGE_READONLY);
    memset(src, 0xcc, sizeof src);
    wpm("WriteProcessMemory child +0x4010 (execute_read)", child, C + 0x4010, src, 0x10);
    rpm("  read +0x4000 back", child, C + 0x4000, 0x30);
    buf_is("  before the write", 0, 0x10);
    memmove(buf, buf + 0x10, 0x20);
    buf_is("  written", 0xcc, 0x10);
    vqx("QueryEx child +0x4000 after", child, C + 0x4000);
    wpm("WriteProcessMemory child +0x5010 (execute)", child, C + 0x5010, src, 0x10);
    vqx("QueryEx child +0x5000 after", child, C + 0x5000);
    vpx("ProtectEx child +0x5000 execute_read (to read it)", child, C + 0x5000, 0x1000, PAGE_EXECUTE_READ);
    rpm("  read +0x5010 back", child, C + 0x5010, 0x10);
    buf_is("  written", 0xcc, 0x10);
    vpx("ProtectEx child +0x5000 execute", child, C + 0x5000, 0x1000, PAGE_EXECUTE);
    wpm("WriteProcessMemory child +0x3ff0 size 0x20 (reserved into execute_read)", child, C + 0x3ff0, src, 0x20);
    wpm("WriteProcessMemory child +0x5ff0 size 0x20 (execute into readonly)", child, C + 0x5ff0, src, 0x20);
    vqx("QueryEx child +0x5000 after", child, C + 0x5000);
    vqx("QueryEx child +0x6000 after", child, C + 0x6000);
    rpm("  read +0x6000 back", child, C + 0x6000, 0x10);
    buf_is("  nothing written at +0x6000", 0, 0x10);
    vpx("ProtectEx child +0x4000 execute_read|guard", child, C + 0x4000, 0x1000, PAGE_EXECUTE_READ | PAGE_GUARD);
    wpm("WriteProcessMemory child +0x4020 (execute_read|guard)", child, C + 0x4020, src, 0x10);
    vqx("QueryEx child +0x4000 after (still guarded)", child, C + 0x4000);

    /* bad buffers and sizes far beyond the range (spec: a range that is not entirely
     * accessible is 299 for a read, 998 for a write that cannot start; nothing written).
     * (A write from an unreadable buffer is not here: Wine reports 299, libvirtmem 998.) */
    ro = (unsigned char *)VirtualAlloc(NULL, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READONLY);
    rpm_to("ReadProcessMemory child +0x10 into NULL buffer", child, C + 0x10, NULL, 0x10);
    rpm_to("ReadProcessMemory child +0x10 into read-only buffer", child, C + 0x10, ro, 0x10);
    rpm_to("ReadProcessMemory child +0 size 1 TiB", child, C, big, (SIZE_T)1 << 40);
    rpm_to("ReadProcessMemory child +0 size 1 GiB", child, C, big, (SIZE_T)1 << 30);
    wpm("WriteProcessMemory child +0 size 1 TiB", child, C, big, (SIZE_T)1 << 40);
    rpm("  read +0x10 back", child, C + 0x10, 0x20);
    buf_is("  still as written before", 0x5a, 0x20);
    VirtualFree(ro, 0, MEM_RELEASE);

    /* the commit limit (spec: a commit beyond it fails with 1455 and commits nothing) */
    LINE("limit the child's commit to 1 MiB more: %s", conf_child_commit_limit(child, 0x100000) ? "ok" : "fail");
    L = (char *)VirtualAllocEx(child, NULL, 0x1000000, MEM_RESERVE, PAGE_NOACCESS);
    LINE("AllocEx child reserve 16 MiB under the limit: %s", L ? "ok" : "fail");
    at(L);
    vax("AllocEx child commit 64 KiB under the limit", child, L, 0x10000, MEM_COMMIT, PAGE_READWRITE);
    vax("AllocEx child commit 8 MiB past the limit", child, L + 0x100000, 0x800000, MEM_COMMIT, PAGE_READWRITE);
    vqx("QueryEx child 8 MiB not committed", child, L + 0x100000);
    {
        void *q = VirtualAllocEx(child, NULL, 0x800000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
        LINE("AllocEx child reserve|commit 8 MiB past the limit: %s err=%u", q ? "ok" : "fail", q ? 0 : err());
        if (q)
            VirtualFreeEx(child, q, 0, MEM_RELEASE);
    }
    LINE("lift the child's commit limit: %s", conf_child_commit_limit(child, (SIZE_T)-1) ? "ok" : "fail");
    vax("AllocEx child commit 8 MiB without the limit", child, L + 0x100000, 0x800000, MEM_COMMIT, PAGE_READWRITE);
    vfx("FreeEx child release the 16 MiB", child, L, 0, MEM_RELEASE);
    at(C);

    /* the other rules are the plain ones */
    vpx("ProtectEx child +0x2000 (reserved)", child, C + 0x2000, 0x1000, PAGE_READONLY);
    vpx("ProtectEx child +0x9000 (free)", child, C + 0x9000, 0x1000, PAGE_READONLY);
    {
        BOOL ok = VirtualProtectEx(child, C, 0x1000, PAGE_READONLY, NULL);
        LINE("ProtectEx child old NULL: %s err=%u", ok ? "ok" : "fail", ok ? 0 : err());
    }
    vfx("FreeEx child +0x1000 release (not base)", child, C + 0x1000, 0, MEM_RELEASE);
    vfx("FreeEx child +0 release size 0x1000", child, C, 0x1000, MEM_RELEASE);
    vfx("FreeEx child +0x9000 release (free)", child, C + 0x9000, 0, MEM_RELEASE);
    vfx("FreeEx child +0 decommit whole", child, C, 0, MEM_DECOMMIT);
    vqx("QueryEx child +0 decommitted", child, C);
    vax("AllocEx child recommit +0", child, C, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    rpm("ReadProcessMemory child recommitted", child, C, 0x1000);
    buf_is("  recommit zero-filled", 0, 0x1000);
    {
        SIZE_T r = VirtualQueryEx(child, C, &m, 47);
        LINE("QueryEx child length 47: ret=%u err=%u", (unsigned)r, r ? 0 : err());
    }

    /* a process that has exited */
    LINE("TerminateProcess: %s", conf_child_kill(child) ? "ok" : "fail");
    vax("AllocEx exited", child, NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    vfx("FreeEx exited", child, C, 0, MEM_RELEASE);
    vqx("QueryEx exited", child, C);
    vpx("ProtectEx exited", child, C, 0x1000, PAGE_READONLY);
    rpm("ReadProcessMemory exited", child, C, 0x10);
    wpm("WriteProcessMemory exited", child, C, src, 0x10);

    /* a closed handle */
    LINE("CloseHandle: %s", CloseHandle(child) ? "ok" : "fail");
    vax("AllocEx closed", child, NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE);
    vfx("FreeEx closed", child, C, 0, MEM_RELEASE);
    vqx("QueryEx closed", child, C);
    vpx("ProtectEx closed", child, C, 0x1000, PAGE_READONLY);
    rpm("ReadProcessMemory closed", child, C, 0x10);
    wpm("WriteProcessMemory closed", child, C, src, 0x10);
}
