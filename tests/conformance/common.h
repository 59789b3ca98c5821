/* common.h - printing helpers shared by every conformance scenario.
 *
 * A scenario prints one line per check, "<label>: <result>", and nothing that depends
 * on where memory happens to be: addresses are printed as offsets ("+0x1000") from a
 * base the scenario chose with at(), sizes and protections in hex, error codes in
 * decimal. The same source prints the same lines on Windows (recorded under Wine) and
 * natively against libvirtmem, so a plain diff against the golden file is the test.
 */
#ifndef CONF_COMMON_H
#define CONF_COMMON_H

#include "compat.h"

static char *g_base; /* offsets are printed relative to this */

static void at(void *base) { g_base = (char *)base; }

/* An address as an offset from the base ("+0x1000"), or NULL, or as it is when it is
 * in the first megabyte of the address space and the base is not. */
static const char *rel(const void *p)
{
    static char bufs[8][40];
    static int next;
    char *s = bufs[next++ & 7];
    long long d;
    if (!p)
        return "NULL";
    if ((uintptr_t)p < 0x100000 && (uintptr_t)g_base >= 0x100000) { /* far below the base: as it is */
        snprintf(s, 40, "0x%llx", (unsigned long long)(uintptr_t)p);
        return s;
    }
    d = (long long)((uintptr_t)p - (uintptr_t)g_base);
    if (d >= 0)
        snprintf(s, 40, "+0x%llx", d);
    else
        snprintf(s, 40, "-0x%llx", -d);
    return s;
}

static unsigned err(void) { return (unsigned)GetLastError(); }

#define LINE(...)                                                                                                      \
    do {                                                                                                               \
        printf(__VA_ARGS__);                                                                                           \
        putchar('\n');                                                                                                 \
    } while (0)

static const char *state_name(unsigned s)
{
    static char buf[16];
    switch (s) {
    case MEM_COMMIT: return "COMMIT";
    case MEM_RESERVE: return "RESERVE";
    case MEM_FREE: return "FREE";
    }
    snprintf(buf, sizeof buf, "0x%x", s);
    return buf;
}

static const char *type_name(unsigned t)
{
    static char buf[16];
    switch (t) {
    case 0: return "0";
    case MEM_PRIVATE: return "PRIVATE";
    case MEM_MAPPED: return "MAPPED";
    case MEM_IMAGE: return "IMAGE";
    }
    snprintf(buf, sizeof buf, "0x%x", t);
    return buf;
}

/* ---- VirtualAlloc ------------------------------------------------------------------ */

/* At an address the scenario chose: the result as an offset. */
static void *va(const char *label, void *addr, SIZE_T size, DWORD type, DWORD prot)
{
    void *p = VirtualAlloc(addr, size, type, prot);
    if (p)
        LINE("%s: ok %s", label, rel(p));
    else
        LINE("%s: fail err=%u", label, err());
    return p;
}

/* Only success or failure (for calls whose result address would not be the scenario's). */
static void *va_noaddr(const char *label, void *addr, SIZE_T size, DWORD type, DWORD prot)
{
    void *p = VirtualAlloc(addr, size, type, prot);
    if (p)
        LINE("%s: ok", label);
    else
        LINE("%s: fail err=%u", label, err());
    return p;
}

/* Letting the system choose: only the alignment is printed. The block is released
 * again unless the caller keeps it. */
static void *van_keep(const char *label, SIZE_T size, DWORD type, DWORD prot)
{
    void *p = VirtualAlloc(NULL, size, type, prot);
    if (p)
        LINE("%s: ok base%%64K=0x%x", label, (unsigned)((uintptr_t)p & 0xffff));
    else
        LINE("%s: fail err=%u", label, err());
    return p;
}

static void van(const char *label, SIZE_T size, DWORD type, DWORD prot)
{
    void *p = van_keep(label, size, type, prot);
    if (p)
        VirtualFree(p, 0, MEM_RELEASE);
}

/* ---- VirtualFree ------------------------------------------------------------------- */

static BOOL vf(const char *label, void *addr, SIZE_T size, DWORD type)
{
    BOOL ok = VirtualFree(addr, size, type);
    if (ok)
        LINE("%s: ok", label);
    else
        LINE("%s: fail err=%u", label, err());
    return ok;
}

/* ---- VirtualQuery ------------------------------------------------------------------ */

static void print_mbi(const char *label, SIZE_T ret, const MEMORY_BASIC_INFORMATION *m, int with_size)
{
    char size[40] = "";
    if (with_size)
        snprintf(size, sizeof size, " size=0x%llx", (unsigned long long)m->RegionSize);
    LINE("%s: ret=%u base=%s ab=%s ap=0x%02x%s state=%s prot=0x%02x type=%s", label, (unsigned)ret,
         rel(m->BaseAddress), rel(m->AllocationBase), (unsigned)m->AllocationProtect, size,
         state_name((unsigned)m->State), (unsigned)m->Protect, type_name((unsigned)m->Type));
}

/* Every field. */
static void vq(const char *label, void *addr)
{
    MEMORY_BASIC_INFORMATION m;
    SIZE_T r;
    memset(&m, 0xcc, sizeof m);
    r = VirtualQuery(addr, &m, sizeof m);
    if (r)
        print_mbi(label, r, &m, 1);
    else
        LINE("%s: ret=0 err=%u", label, err());
}

/* Every field but RegionSize (free memory whose extent is not the scenario's). */
static void vq_nosize(const char *label, void *addr)
{
    MEMORY_BASIC_INFORMATION m;
    SIZE_T r;
    memset(&m, 0xcc, sizeof m);
    r = VirtualQuery(addr, &m, sizeof m);
    if (r)
        print_mbi(label, r, &m, 0);
    else
        LINE("%s: ret=0 err=%u", label, err());
}

/* ---- VirtualProtect ---------------------------------------------------------------- */

#define OLD_UNSET 0xdeadbeefu

static void print_old(char *buf, size_t n, DWORD old)
{
    if ((unsigned)old == OLD_UNSET)
        snprintf(buf, n, "unset");
    else
        snprintf(buf, n, "0x%02x", (unsigned)old);
}

static BOOL vp(const char *label, void *addr, SIZE_T size, DWORD prot)
{
    DWORD old = OLD_UNSET;
    char o[16];
    BOOL ok = VirtualProtect(addr, size, prot, &old);
    print_old(o, sizeof o, old);
    if (ok)
        LINE("%s: ok old=%s", label, o);
    else
        LINE("%s: fail err=%u old=%s", label, err(), o);
    return ok;
}

/* ---- contents and probes ----------------------------------------------------------- */

static unsigned char pattern(const void *p, int seed)
{
    uintptr_t off = (uintptr_t)p - (uintptr_t)g_base;
    return (unsigned char)((off * 131u) ^ (off >> 8) ^ (unsigned)(seed * 29 + 1));
}

/* Write a pattern (no line printed: the scenario checks it later with same()). */
static void fill(void *p, SIZE_T n, int seed)
{
    unsigned char *c = (unsigned char *)p;
    SIZE_T i;
    for (i = 0; i < n; i++)
        c[i] = pattern(c + i, seed);
}

static void same(const char *label, void *p, SIZE_T n, int seed)
{
    unsigned char *c = (unsigned char *)p;
    SIZE_T i;
    for (i = 0; i < n; i++)
        if (c[i] != pattern(c + i, seed)) {
            LINE("%s: changed", label);
            return;
        }
    LINE("%s: intact", label);
}

static void zero(const char *label, void *p, SIZE_T n)
{
    unsigned char *c = (unsigned char *)p;
    SIZE_T i;
    for (i = 0; i < n; i++)
        if (c[i]) {
            LINE("%s: nonzero", label);
            return;
        }
    LINE("%s: zero", label);
}

static void probe(const char *label, void *p, int kind)
{
    static const char *names[] = {"ok", "fault", "guard", "other"};
    LINE("%s: %s", label, names[conf_probe(p, kind)]);
}

/* ---- scaffolding ------------------------------------------------------------------- */

/* A free stretch of `size` bytes (a multiple of 64K) for fixed-address work: reserved
 * and released again, top-down so that allocations the runtime makes meanwhile (which
 * go bottom-up) do not land in it. */
static char *arena(SIZE_T size)
{
    void *p = VirtualAlloc(NULL, size, MEM_RESERVE | MEM_TOP_DOWN, PAGE_NOACCESS);
    if (!p || !VirtualFree(p, 0, MEM_RELEASE)) {
        LINE("arena: fail err=%u", err());
        exit(2);
    }
    return (char *)p;
}

static void run(void);

int main(void)
{
#ifdef _WIN32
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
#else
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep every line printed before a crash */
#endif
    run();
    fflush(stdout);
    return 0;
}

#endif
