/* test_valloc2.c - VirtualAlloc2 as Microsoft documents it, on simulated processes (a
 * Windows-x64 one and a 32-bit guest's) and on the current process's real memory: a NULL
 * process is the calling one; no extended parameters is VirtualAllocEx exactly; a
 * MEM_ADDRESS_REQUIREMENTS window is honoured bottom-up and MEM_TOP_DOWN, at its
 * alignment, and a window with no room fails with ERROR_NOT_ENOUGH_MEMORY; every parameter
 * libvirtmem does not take is refused (87, or 998 for a pointer it cannot read) with
 * nothing changed. Also VirtmemGetProcessSystemInfo: each process's own user range. */
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "virtmem.h"
#include "check.h"

#define K64 0x10000ull
#define M1 0x100000ull

_Static_assert(sizeof(MEM_EXTENDED_PARAMETER) == 16, "MEM_EXTENDED_PARAMETER is 16 bytes");
_Static_assert(offsetof(MEM_EXTENDED_PARAMETER, ULong64) == 8, "the union follows the type word");
_Static_assert(offsetof(MEM_EXTENDED_PARAMETER, Pointer) == 8, "the union follows the type word");
_Static_assert(_Alignof(MEM_EXTENDED_PARAMETER) == 8, "aligned as winnt.h's DECLSPEC_ALIGN(8)");
_Static_assert(sizeof(MEM_ADDRESS_REQUIREMENTS) == 24, "MEM_ADDRESS_REQUIREMENTS is 24 bytes");
_Static_assert(offsetof(MEM_ADDRESS_REQUIREMENTS, HighestEndingAddress) == 8, "req");
_Static_assert(offsetof(MEM_ADDRESS_REQUIREMENTS, Alignment) == 16, "req");
_Static_assert(MEM_EXTENDED_PARAMETER_TYPE_BITS == 8, "the type is the low 8 bits");
_Static_assert(MemExtendedParameterInvalidType == 0 && MemExtendedParameterAddressRequirements == 1 &&
                   MemExtendedParameterNumaNode == 2 && MemExtendedParameterPartitionHandle == 3 &&
                   MemExtendedParameterUserPhysicalHandle == 4 && MemExtendedParameterAttributeFlags == 5 &&
                   MemExtendedParameterImageMachine == 6 && MemExtendedParameterMax == 7,
               "MEM_EXTENDED_PARAMETER_TYPE values");
_Static_assert(MEM_RESERVE_PLACEHOLDER == 0x40000 && MEM_REPLACE_PLACEHOLDER == 0x4000, "placeholder flags");

/* Code written for SDKs that lacked VirtualAlloc2 declares MEM_EXTENDED_PARAMETER itself
 * when winnt.h's placeholder flags are missing (DPDK's EAL tests MEM_PRESERVE_PLACEHOLDER):
 * against virtmem.h that declaration must be skipped, not collide with the header's. */
#ifndef MEM_PRESERVE_PLACEHOLDER
typedef enum MEM_EXTENDED_PARAMETER_TYPE {
    MemExtendedParameterInvalidType,
    MemExtendedParameterAddressRequirements,
} MEM_EXTENDED_PARAMETER_TYPE;
#endif
_Static_assert(MEM_COALESCE_PLACEHOLDERS == 0x1 && MEM_PRESERVE_PLACEHOLDER == 0x2, "VirtualFree's placeholder flags");

static MEM_EXTENDED_PARAMETER param(DWORD type, ULONG64 value)
{
    MEM_EXTENDED_PARAMETER p;
    memset(&p, 0, sizeof p);
    p.Type = type;
    p.ULong64 = value;
    return p;
}

static MEM_EXTENDED_PARAMETER requirements(MEM_ADDRESS_REQUIREMENTS *r)
{
    MEM_EXTENDED_PARAMETER p = param(MemExtendedParameterAddressRequirements, 0);
    p.Pointer = r;
    return p;
}

static MEM_ADDRESS_REQUIREMENTS window(ULONG_PTR lo, ULONG_PTR hi, SIZE_T align)
{
    MEM_ADDRESS_REQUIREMENTS r;
    r.LowestStartingAddress = (PVOID)lo;
    r.HighestEndingAddress = (PVOID)hi;
    r.Alignment = align;
    return r;
}

/* The handle the Ex functions take for VirtualAlloc2's process h (NULL: the calling one). */
static HANDLE ex_handle(HANDLE h)
{
    return h == NULL ? GetCurrentProcess() : h;
}

/* Whether [p, p + size) is free in process h (nothing was reserved there). */
static int is_free(HANDLE h, ULONG_PTR p, SIZE_T size)
{
    MEMORY_BASIC_INFORMATION m;
    if (VirtualQueryEx(ex_handle(h), (void *)p, &m, sizeof m) != sizeof m)
        return 0;
    return m.State == MEM_FREE && (ULONG_PTR)m.BaseAddress + m.RegionSize >= p + size;
}

/* A VirtualAlloc2 call that must fail with `code`, leaving [lo, lo + size) free in h. */
#define REFUSED(h, lo, size, call, code)                                                           \
    do {                                                                                           \
        CHECK_ERR((call) == NULL, code);                                                           \
        CHECK(is_free(h, lo, size), "%s changed the window", #call);                              \
    } while (0)

/* With no extended parameters VirtualAlloc2 is VirtualAllocEx: the same calls on two
 * fresh simulated processes give the same results and errors, the same addresses
 * included (a simulated process is deterministic); on the current process the same
 * outcomes and errors. */
static void zero_parameters_are_virtualallocex(HANDLE a, HANDLE b, int same_addresses)
{
    static const struct {
        SIZE_T size;
        DWORD type, protect;
    } cases[] = {
        {K64, MEM_RESERVE, PAGE_NOACCESS},
        {0x3000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE},
        {K64, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE},
        {0x1000, MEM_COMMIT, PAGE_EXECUTE_READ},
        {K64, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_READWRITE},
        {0, MEM_RESERVE, PAGE_READWRITE},                  /* 87: size 0 */
        {K64, MEM_RESERVE, PAGE_WRITECOPY},                /* 87: no copy-on-write here */
        {K64, MEM_RESERVE, 0x1234},                        /* 87: no such protection */
        {K64, 0, PAGE_READWRITE},                          /* 87: no type */
        {K64, MEM_RESET, PAGE_READWRITE},                  /* 87: reset at NULL */
        {K64, MEM_RESERVE | MEM_DECOMMIT, PAGE_READWRITE}, /* 87 */
        {(SIZE_T)-1, MEM_RESERVE, PAGE_READWRITE},         /* too big */
    };
    MEM_EXTENDED_PARAMETER ignored = param(0xFF, 0);
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *x, *y, *z;
        DWORD ex, ey, ez;
        SetLastError(0xdead);
        x = VirtualAllocEx(a, NULL, cases[i].size, cases[i].type, cases[i].protect);
        ex = GetLastError();
        SetLastError(0xdead);
        y = VirtualAlloc2(b, NULL, cases[i].size, cases[i].type, cases[i].protect, NULL, 0);
        ey = GetLastError();
        CHECK((x == NULL) == (y == NULL) && (x != NULL || ex == ey), "case %zu: VirtualAllocEx %p err=%u, VirtualAlloc2 %p err=%u", i,
              (void *)x, (unsigned)ex, (void *)y, (unsigned)ey);
        CHECK(!same_addresses || x == y, "case %zu: VirtualAllocEx gave %p, VirtualAlloc2 %p", i, (void *)x, (void *)y);
        /* A parameter array with a count of 0 is not looked at. */
        SetLastError(0xdead);
        z = VirtualAlloc2(b, NULL, cases[i].size, cases[i].type, cases[i].protect, &ignored, 0);
        ez = GetLastError();
        CHECK((x == NULL) == (z == NULL) && (x != NULL || ex == ez), "case %zu: with an ignored array %p err=%u", i,
              (void *)z, (unsigned)ez);
        /* At a given address: commit inside what was just reserved, in both. */
        if (x != NULL && y != NULL && z != NULL) {
            CHECK(VirtualAllocEx(a, x, 0x1000, MEM_COMMIT, PAGE_READONLY) == x, "commit at x");
            CHECK(VirtualAlloc2(b, y, 0x1000, MEM_COMMIT, PAGE_READONLY, NULL, 0) == y, "commit at y");
            CHECK(VirtualFreeEx(a, x, 0, MEM_RELEASE) && VirtualFreeEx(ex_handle(b), y, 0, MEM_RELEASE) &&
                      VirtualFreeEx(ex_handle(b), z, 0, MEM_RELEASE),
                  "release case %zu", i);
        }
    }
    /* An address in no reservation, committed: 487 from both. */
    CHECK_ERR(VirtualAllocEx(a, (void *)0x7F0000000000ull, 0x1000, MEM_COMMIT, PAGE_READWRITE) == NULL,
              ERROR_INVALID_ADDRESS);
    CHECK_ERR(VirtualAlloc2(b, (void *)0x7F0000000000ull, 0x1000, MEM_COMMIT, PAGE_READWRITE, NULL, 0) == NULL,
              ERROR_INVALID_ADDRESS);
}

/* The window of `req` is honoured in process h: bottom-up its lowest start, MEM_TOP_DOWN
 * its highest end, the alignment asked, and no room gives ERROR_NOT_ENOUGH_MEMORY.
 * [lo, hi] must be free, at least 64 MiB long, lo on 1 MiB. */
static void window_is_honoured(HANDLE h, ULONG_PTR lo, ULONG_PTR hi)
{
    MEM_ADDRESS_REQUIREMENTS r = window(lo, hi, 0);
    MEM_EXTENDED_PARAMETER p = requirements(&r);
    char *a, *b, *c, *d;
    a = VirtualAlloc2(h, NULL, 2 * K64, MEM_RESERVE, PAGE_READWRITE, &p, 1);
    CHECK(a == (char *)lo, "bottom-up: the window's lowest start %#lx, got %p", (unsigned long)lo, (void *)a);
    b = VirtualAlloc2(h, NULL, 2 * K64, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE, &p, 1);
    CHECK(b == (char *)(hi + 1 - 2 * K64), "top-down: ending at the window's highest end %#lx, got %p",
          (unsigned long)hi, (void *)b);
    CHECK(b != NULL && WriteProcessMemory(ex_handle(h), b + 2 * K64 - 4, "end", 4, NULL), "the top-down block is committed");
    /* Aligned to 1 MiB: the first 1 MiB boundary past `a`'s block (lo is 1 MiB aligned). */
    r.Alignment = M1;
    c = VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &p, 1);
    CHECK(c == (char *)(lo + M1), "aligned to 1 MiB above the first block at %#llx, got %p", (unsigned long long)lo, (void *)c);
    /* MEM_COMMIT alone reserves too (at NULL), inside the window. */
    r.Alignment = 0;
    d = VirtualAlloc2(h, NULL, 0x1000, MEM_COMMIT, PAGE_READWRITE, &p, 1);
    CHECK(d == (char *)(lo + 2 * K64), "MEM_COMMIT alone: the next free granule, got %p", (void *)d);
    CHECK(d != NULL && WriteProcessMemory(ex_handle(h), d, "x", 1, NULL), "and committed");
    /* A window with no room left: 8. */
    r = window(lo, lo + 2 * K64 - 1, 0);
    CHECK_ERR(VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &p, 1) == NULL, ERROR_NOT_ENOUGH_MEMORY);
    /* A window smaller than the size: 8. */
    r = window(hi + 1 - 8 * M1, hi + 1 - 4 * M1 - 1, 0);
    REFUSED(h, hi + 1 - 8 * M1, 4 * M1, VirtualAlloc2(h, NULL, 4 * M1 + 1, MEM_RESERVE, PAGE_READWRITE, &p, 1),
            ERROR_NOT_ENOUGH_MEMORY);
    /* Invalid windows: 87, nothing reserved. */
    r = window(lo + 0x1000, hi, 0);
    REFUSED(h, lo + 4 * M1, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &p, 1), ERROR_INVALID_PARAMETER);
    r = window(lo, hi - 0x1000, 0);
    REFUSED(h, lo + 4 * M1, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &p, 1), ERROR_INVALID_PARAMETER);
    r = window(hi + 1, lo - 1 + 0, 0);
    REFUSED(h, lo + 4 * M1, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &p, 1), ERROR_INVALID_PARAMETER);
    r = window(lo, hi, 3 * K64);
    REFUSED(h, lo + 4 * M1, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &p, 1), ERROR_INVALID_PARAMETER);
    r = window(lo, hi, 0x1000);
    REFUSED(h, lo + 4 * M1, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &p, 1), ERROR_INVALID_PARAMETER);
    /* A type that makes no new reservation: 87. */
    r = window(lo, hi, 0);
    REFUSED(h, lo + 4 * M1, K64, VirtualAlloc2(h, NULL, K64, MEM_RESET, PAGE_READWRITE, &p, 1), ERROR_INVALID_PARAMETER);
    /* A base address with requirements that are not all zero: 87 (Microsoft: they must be). */
    REFUSED(h, lo + 4 * M1, K64, VirtualAlloc2(h, (void *)(lo + 4 * M1), K64, MEM_RESERVE, PAGE_READWRITE, &p, 1),
            ERROR_INVALID_PARAMETER);
    /* All zeros is no requirement: a base address must then be on the allocation
     * granularity, and is taken as VirtualAllocEx takes it. */
    r = window(0, 0, 0);
    REFUSED(h, lo + 4 * M1, K64,
            VirtualAlloc2(h, (void *)(lo + 4 * M1 + 0x1000), 0x1000, MEM_RESERVE, PAGE_READWRITE, &p, 1),
            ERROR_INVALID_PARAMETER);
    CHECK(VirtualAlloc2(h, (void *)(lo + 4 * M1), K64, MEM_RESERVE, PAGE_READWRITE, &p, 1) == (void *)(lo + 4 * M1),
          "a base address with zero requirements");
    CHECK(VirtualFreeEx(ex_handle(h), (void *)(lo + 4 * M1), 0, MEM_RELEASE), "release it");
    CHECK(VirtualFreeEx(ex_handle(h), a, 0, MEM_RELEASE) && VirtualFreeEx(ex_handle(h), b, 0, MEM_RELEASE) &&
              VirtualFreeEx(ex_handle(h), c, 0, MEM_RELEASE) && VirtualFreeEx(ex_handle(h), d, 0, MEM_RELEASE),
          "release the window's blocks");
}

/* Every extended parameter VirtualAlloc2 does not take is refused, with nothing changed;
 * NUMA node 0 (the one node libvirtmem knows) is taken and changes nothing. [lo, hi] is a
 * free window of at least 1 MiB. */
static void parameters_are_checked(HANDLE h, ULONG_PTR lo, ULONG_PTR hi)
{
    MEM_ADDRESS_REQUIREMENTS r = window(lo, hi, 0), r2 = window(lo, hi, 0);
    MEM_EXTENDED_PARAMETER ps[3];
    char *p;
    DWORD t;
    ps[0] = requirements(&r);
    ps[1] = requirements(&r2);
    REFUSED(h, lo, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, ps, 2), ERROR_INVALID_PARAMETER);
    /* A NULL MEM_ADDRESS_REQUIREMENTS pointer, a NULL parameter array: 998. */
    ps[1] = requirements(NULL);
    REFUSED(h, lo, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &ps[1], 1), ERROR_NOACCESS);
    REFUSED(h, lo, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, NULL, 1), ERROR_NOACCESS);
    /* Reserved bits set beside a valid type: 87. */
    ps[1] = requirements(&r);
    ps[1].Reserved = 1;
    REFUSED(h, lo, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &ps[1], 1), ERROR_INVALID_PARAMETER);
    /* MemExtendedParameterInvalidType, types past the last: 87. */
    for (t = 0; t < 256; t++) {
        if (t == MemExtendedParameterAddressRequirements || t == MemExtendedParameterNumaNode)
            continue;
        ps[1] = param(t, 0);
        REFUSED(h, lo, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, ps, 2), ERROR_INVALID_PARAMETER);
    }
    /* NUMA node 0, alone or with a window: taken. Another node, or two NUMA parameters: 87. */
    ps[1] = param(MemExtendedParameterNumaNode, 0);
    p = VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, ps, 2);
    CHECK(p == (char *)lo, "NUMA node 0 with a window: %p", (void *)p);
    CHECK(VirtualFreeEx(ex_handle(h), p, 0, MEM_RELEASE), "release");
    p = VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &ps[1], 1);
    CHECK(p != NULL, "NUMA node 0 alone");
    CHECK(VirtualFreeEx(ex_handle(h), p, 0, MEM_RELEASE), "release");
    ps[1] = param(MemExtendedParameterNumaNode, 1);
    REFUSED(h, lo, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, ps, 2), ERROR_INVALID_PARAMETER);
    ps[1] = param(MemExtendedParameterNumaNode, 0);
    ps[2] = param(MemExtendedParameterNumaNode, 0);
    REFUSED(h, lo, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, ps, 3), ERROR_INVALID_PARAMETER);
    /* Placeholders are not supported: 87, with parameters or without. */
    REFUSED(h, lo, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE | MEM_RESERVE_PLACEHOLDER, PAGE_NOACCESS, NULL, 0),
            ERROR_INVALID_PARAMETER);
    REFUSED(h, lo, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE | MEM_RESERVE_PLACEHOLDER, PAGE_NOACCESS, ps, 1),
            ERROR_INVALID_PARAMETER);
    REFUSED(h, lo, K64,
            VirtualAlloc2(h, (void *)lo, K64, MEM_RESERVE | MEM_COMMIT | MEM_REPLACE_PLACEHOLDER, PAGE_READWRITE, NULL, 0),
            ERROR_INVALID_PARAMETER);
    /* Size 0: 87, as VirtualAllocEx. */
    REFUSED(h, lo, K64, VirtualAlloc2(h, NULL, 0, MEM_RESERVE, PAGE_READWRITE, ps, 1), ERROR_INVALID_PARAMETER);
}

/* MEM_LARGE_PAGES with a window: its lowest start must be a multiple of the large-page
 * size (Microsoft's MEM_ADDRESS_REQUIREMENTS: "or a multiple of the large page size returned
 * by GetLargePageMinimum if large pages are being requested"): one only on 64 KiB is 87,
 * nothing reserved; one on the large-page size places the block there. */
static void large_page_window(void)
{
    VIRTMEM_PROCESS_CONFIG c;
    MEM_ADDRESS_REQUIREMENTS r;
    MEM_EXTENDED_PARAMETER p = requirements(&r);
    const ULONG_PTR large = 0x200000, lo = 0x100000000ull;
    HANDLE h;
    char *b;
    CHECK(VirtmemProcessConfigInit(&c), "init");
    c.LargePageSize = large;
    h = VirtmemCreateProcessEx(&c);
    CHECK(h != NULL, "a process with 2 MiB large pages");
    r = window(lo + K64, lo + 16 * large - 1, 0);
    REFUSED(h, lo, 16 * large,
            VirtualAlloc2(h, NULL, large, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE, &p, 1),
            ERROR_INVALID_PARAMETER);
    r = window(lo + large / 2, lo + 16 * large - 1, 0);
    REFUSED(h, lo, 16 * large,
            VirtualAlloc2(h, NULL, large, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE, &p, 1),
            ERROR_INVALID_PARAMETER);
    r = window(lo + large, lo + 16 * large - 1, 0);
    b = VirtualAlloc2(h, NULL, large, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE, &p, 1);
    CHECK(b == (char *)(lo + large), "a lowest start on the large-page size: %p", (void *)b);
    CHECK(CloseHandle(h), "close");
}

/* Windows code as it is written against winnt.h compiles and runs unchanged: the
 * universal zero initialiser and member assignment (Microsoft's and Raymond Chen's
 * examples), and C99 designated initialisers naming the nameless members. */
static void windows_code_compiles_unchanged(void)
{
    HANDLE h = VirtmemCreateProcess();
    MEM_ADDRESS_REQUIREMENTS requirements = {0};
    MEM_EXTENDED_PARAMETER param = {0};
    MEM_EXTENDED_PARAMETER both[2] = {
        {.Type = MemExtendedParameterAddressRequirements, .Pointer = &requirements},
        {.Type = MemExtendedParameterNumaNode, .ULong64 = 0},
    };
    PMEM_EXTENDED_PARAMETER pp = &param;
    char *a, *b;
    requirements.LowestStartingAddress = (PVOID)0x80000000ull;
    requirements.HighestEndingAddress = (PVOID)0xFFFFFFFFull;
    requirements.Alignment = M1;
    param.Type = MemExtendedParameterAddressRequirements;
    param.Pointer = &requirements;
    CHECK(pp->Type == MemExtendedParameterAddressRequirements && pp->Reserved == 0, "the type bit-field");
    a = VirtualAlloc2(h, NULL, K64, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, &param, 1);
    CHECK(a == (char *)0x80000000ull, "between 2 and 4 GiB at 1 MiB: %p", (void *)a);
    b = VirtualAlloc2(h, NULL, K64, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, both, 2);
    CHECK(b == (char *)0x80100000ull, "designated initialisers: %p", (void *)b);
    CHECK(CloseHandle(h), "close");
}

/* A fold of every region of process h (base, size, state, protection, type): what a
 * failed call must leave as it was. */
static unsigned long long layout(HANDLE h)
{
    MEMORY_BASIC_INFORMATION m;
    unsigned long long sum = 0;
    ULONG_PTR at = 0;
    while (VirtualQueryEx(h, (void *)at, &m, sizeof m) == sizeof m) {
        sum = sum * 1000003u + (ULONG_PTR)m.BaseAddress + m.RegionSize * 7 + m.State * 31 + m.Protect * 131 + m.Type;
        if ((ULONG_PTR)m.BaseAddress + m.RegionSize <= at)
            break;
        at = (ULONG_PTR)m.BaseAddress + m.RegionSize;
    }
    return sum;
}

/* A parameter array, or a MEM_ADDRESS_REQUIREMENTS, that runs into memory the caller
 * cannot read: 998 (87 when a refused parameter comes first), however large the count,
 * reading nothing past the first entry it cannot read; the process is left as it was. */
static void unreadable_parameters(HANDLE h)
{
    char *page = VirtualAlloc(NULL, 2 * K64, MEM_RESERVE, PAGE_NOACCESS);
    MEM_EXTENDED_PARAMETER *last, ps[1];
    unsigned long long before = layout(h);
    CHECK(page != NULL && VirtualAlloc(page, 0x1000, MEM_COMMIT, PAGE_READWRITE) == page, "a page before an unreadable one");
    if (page == NULL)
        return;
    last = (MEM_EXTENDED_PARAMETER *)(page + 0x1000) - 1;
    *last = param(MemExtendedParameterNumaNode, 0);
    CHECK_ERR(VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, last, 2) == NULL, ERROR_NOACCESS);
    CHECK_ERR(VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, last, 0xFFFFFFFFu) == NULL, ERROR_NOACCESS);
    CHECK_ERR(VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, last + 1, 1) == NULL, ERROR_NOACCESS);
    *last = param(MemExtendedParameterInvalidType, 0);
    CHECK_ERR(VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, last, 0xFFFFFFFFu) == NULL, ERROR_INVALID_PARAMETER);
    ps[0] = requirements((MEM_ADDRESS_REQUIREMENTS *)(page + 0x1000));
    CHECK_ERR(VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, ps, 1) == NULL, ERROR_NOACCESS);
    ps[0] = requirements((MEM_ADDRESS_REQUIREMENTS *)(page + 0x1000 - 8));
    CHECK_ERR(VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, ps, 1) == NULL, ERROR_NOACCESS);
    CHECK(layout(h) == before, "the refused calls changed the process");
    CHECK(VirtualFree(page, 0, MEM_RELEASE), "release");
}

#define THREADS 4
#define PER_THREAD 100
struct racer {
    HANDLE h;
    ULONG_PTR lo;
    int id;
    char *got[PER_THREAD];
    DWORD err[PER_THREAD];
};

static void *race(void *arg)
{
    struct racer *r = arg;
    MEM_ADDRESS_REQUIREMENTS w;
    MEM_EXTENDED_PARAMETER p = requirements(&w);
    int i;
    /* Overlapping windows inside [lo, lo + 16 MiB): some start 1 MiB in, some end 1 MiB short. */
    w = window(r->lo + (r->id & 1) * M1, r->lo + 16 * M1 - 1 - (r->id & 2) / 2 * M1, 0);
    for (i = 0; i < PER_THREAD; i++) {
        DWORD td = (i + r->id) & 1 ? MEM_TOP_DOWN : 0;
        r->got[i] = VirtualAlloc2(r->h, NULL, K64, MEM_RESERVE | td, PAGE_READWRITE, &p, 1);
        r->err[i] = GetLastError();
    }
    return NULL;
}

static int by_address(const void *a, const void *b)
{
    ULONG_PTR x = *(const ULONG_PTR *)a, y = *(const ULONG_PTR *)b;
    return x < y ? -1 : x > y;
}

/* Threads reserving 64 KiB blocks in overlapping windows of process h: no two blocks
 * overlap, every one lies in [lo, lo + 16 MiB) (free on entry), and together they fill
 * its 256 granules exactly, the calls that found no room failing with 8. */
static void concurrent_windows(HANDLE h, ULONG_PTR lo)
{
    static struct racer r[THREADS];
    static ULONG_PTR all[THREADS * PER_THREAD];
    pthread_t t[THREADS];
    int i, j, n = 0;
    for (i = 0; i < THREADS; i++) {
        r[i].h = h;
        r[i].lo = lo;
        r[i].id = i;
        CHECK(pthread_create(&t[i], NULL, race, &r[i]) == 0, "thread %d", i);
    }
    for (i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (i = 0; i < THREADS; i++)
        for (j = 0; j < PER_THREAD; j++) {
            if (r[i].got[j] != NULL)
                all[n++] = (ULONG_PTR)r[i].got[j];
            else
                CHECK(r[i].err[j] == ERROR_NOT_ENOUGH_MEMORY, "thread %d call %d: err=%u", i, j, (unsigned)r[i].err[j]);
        }
    qsort(all, n, sizeof all[0], by_address);
    CHECK(n == 256, "%d blocks placed in 256 granules", n);
    for (i = 0; i < n; i++) {
        CHECK(all[i] >= lo && all[i] + K64 <= lo + 16 * M1, "block %#lx outside the windows", (unsigned long)all[i]);
        CHECK(i == 0 || all[i] >= all[i - 1] + K64, "blocks %#lx and %#lx overlap", (unsigned long)all[i - 1],
              (unsigned long)all[i]);
        CHECK(VirtualFreeEx(h, (void *)all[i], 0, MEM_RELEASE), "release");
    }
}

/* VirtualFree's placeholder flags are declared (winnt.h's values) and refused: 87, the
 * reservation left whole. */
static void placeholder_frees_are_refused(void)
{
    HANDLE h = VirtmemCreateProcess();
    MEMORY_BASIC_INFORMATION m;
    char *p = VirtualAllocEx(h, NULL, 2 * K64, MEM_RESERVE, PAGE_NOACCESS);
    CHECK(p != NULL, "reserve");
    CHECK_ERR(!VirtualFreeEx(h, p, K64, MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER), ERROR_INVALID_PARAMETER);
    CHECK_ERR(!VirtualFreeEx(h, p, 2 * K64, MEM_RELEASE | MEM_COALESCE_PLACEHOLDERS), ERROR_INVALID_PARAMETER);
    CHECK(VirtualQueryEx(h, p, &m, sizeof m) == sizeof m && m.State == MEM_RESERVE && m.RegionSize == 2 * K64,
          "the reservation is whole");
    CHECK(CloseHandle(h), "close");
}

static void handles(void)
{
    HANDLE h = VirtmemCreateProcess();
    MEM_ADDRESS_REQUIREMENTS r = window(0, 0, 0);
    MEM_EXTENDED_PARAMETER p = requirements(&r);
    char *mine;
    /* NULL is the calling process: real memory, usable directly. */
    mine = VirtualAlloc2(NULL, NULL, 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, &p, 1);
    CHECK(mine != NULL, "NULL process: the current one");
    if (mine != NULL) {
        mine[0x1fff] = 42;
        CHECK(mine[0x1fff] == 42, "real memory");
        CHECK(VirtualFree(mine, 0, MEM_RELEASE), "VirtualFree takes it");
    }
    CHECK_ERR(VirtualAlloc2((HANDLE)0x7777770, NULL, K64, MEM_RESERVE, PAGE_READWRITE, NULL, 0) == NULL,
              ERROR_INVALID_HANDLE);
    /* Size 0 before the handle, as VirtualAllocEx. */
    CHECK_ERR(VirtualAlloc2((HANDLE)0x7777770, NULL, 0, MEM_RESERVE, PAGE_READWRITE, NULL, 0) == NULL,
              ERROR_INVALID_PARAMETER);
    CHECK(TerminateProcess(h, 3), "terminate");
    CHECK_ERR(VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &p, 1) == NULL, ERROR_ACCESS_DENIED);
    CHECK(CloseHandle(h), "close");
    CHECK_ERR(VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &p, 1) == NULL, ERROR_INVALID_HANDLE);
}

static void simulated(void)
{
    HANDLE a = VirtmemCreateProcess(), b = VirtmemCreateProcess();
    zero_parameters_are_virtualallocex(a, b, 1);
    window_is_honoured(b, 0x100000000ull, 0x100000000ull + 64 * M1 - 1);
    window_is_honoured(b, 0x7FFFFBF00000ull, 0x7FFFFFFEFFFFull); /* to the top, from a 1 MiB boundary */
    parameters_are_checked(b, 0x200000000ull, 0x200000000ull + M1 - 1);
    unreadable_parameters(b);
    concurrent_windows(b, 0x300000000ull);
    CHECK(CloseHandle(a) && CloseHandle(b), "close");
}

static void guest32(void)
{
    VIRTMEM_PROCESS_CONFIG c;
    MEM_ADDRESS_REQUIREMENTS r;
    MEM_EXTENDED_PARAMETER p = requirements(&r);
    SYSTEM_INFO si;
    HANDLE h;
    CHECK(VirtmemProcessConfigInit(&c), "init");
    c.MinimumApplicationAddress = 0x10000;
    c.MaximumApplicationAddress = 0x7FFEFFFF;
    h = VirtmemCreateProcessEx(&c);
    CHECK(h != NULL, "a 32-bit guest");
    /* No highest end: the guest's top. */
    r = window(0x40000000, 0, 0);
    CHECK(VirtualAlloc2(h, NULL, K64, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE, &p, 1) == (void *)0x7FFE0000,
          "top-down to the guest's top");
    CHECK(VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &p, 1) == (void *)0x40000000, "bottom-up");
    /* Past the guest's highest address: 87. */
    r = window(0x40000000, 0x7FFFFFFF, 0);
    REFUSED(h, 0x40010000, K64, VirtualAlloc2(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE, &p, 1), ERROR_INVALID_PARAMETER);
    window_is_honoured(h, 0x10000000, 0x10000000 + 64 * M1 - 1);
    parameters_are_checked(h, 0x20000000, 0x20000000 + M1 - 1);
    /* Its system information is its own. */
    memset(&si, 0xEE, sizeof si);
    CHECK(VirtmemGetProcessSystemInfo(h, &si), "VirtmemGetProcessSystemInfo");
    CHECK(si.lpMinimumApplicationAddress == (void *)0x10000 && si.lpMaximumApplicationAddress == (void *)0x7FFEFFFF,
          "the guest's range: %p-%p", si.lpMinimumApplicationAddress, si.lpMaximumApplicationAddress);
    CHECK(si.dwPageSize == 4096 && si.dwAllocationGranularity == 65536, "page and granularity");
    CHECK(CloseHandle(h), "close");
}

static void current(void)
{
    HANDLE b = GetCurrentProcess();
    char *probe;
    zero_parameters_are_virtualallocex(GetCurrentProcess(), NULL, 0);
    zero_parameters_are_virtualallocex(GetCurrentProcess(), GetCurrentProcess(), 0);
    /* A window the kernel has nothing in: where a 128 MiB reservation was, released. */
    probe = VirtualAlloc2(b, NULL, 128 * M1, MEM_RESERVE, PAGE_NOACCESS, NULL, 0);
    CHECK(probe != NULL, "a 128 MiB reservation");
    if (probe == NULL)
        return;
    CHECK(VirtualFree(probe, 0, MEM_RELEASE), "released");
    {
        ULONG_PTR lo = ((ULONG_PTR)probe + M1 - 1) & ~(ULONG_PTR)(M1 - 1);
        window_is_honoured(b, lo, lo + 64 * M1 - 1);
        window_is_honoured(NULL, lo, lo + 64 * M1 - 1);
        parameters_are_checked(b, lo, lo + M1 - 1);
        parameters_are_checked(NULL, lo, lo + M1 - 1);
        /* (After simulated()'s race: glibc reuses those threads' cached stacks and malloc
         * arenas, so these threads map nothing new into the window, which the kernel would
         * otherwise pick first: it is where its last free hole of that size was.) */
        concurrent_windows(b, lo);
    }
}

static void system_info(void)
{
    SYSTEM_INFO mine, si;
    VIRTMEM_PROCESS_CONFIG c;
    HANDLE h = VirtmemCreateProcess(), g;
    GetSystemInfo(&mine);
    memset(&si, 0xEE, sizeof si);
    CHECK(VirtmemGetProcessSystemInfo(GetCurrentProcess(), &si), "the current process");
    CHECK(memcmp(&si, &mine, sizeof si) == 0, "the current process's is GetSystemInfo's");
    memset(&si, 0xEE, sizeof si);
    CHECK(VirtmemGetProcessSystemInfo(h, &si), "a simulated process");
    CHECK(si.lpMinimumApplicationAddress == (void *)0x10000 && si.lpMaximumApplicationAddress == (void *)0x7FFFFFFEFFFFull,
          "the x64 range");
    CHECK(si.dwPageSize == 4096 && si.dwAllocationGranularity == 65536, "page and granularity");
    CHECK(si.wProcessorArchitecture == mine.wProcessorArchitecture && si.dwNumberOfProcessors == mine.dwNumberOfProcessors &&
              si.dwActiveProcessorMask == mine.dwActiveProcessorMask && si.dwProcessorType == mine.dwProcessorType &&
              si.wProcessorLevel == mine.wProcessorLevel && si.wProcessorRevision == mine.wProcessorRevision &&
              si.wReserved == 0,
          "the processors as GetSystemInfo gives them");
    /* A configured process's range, each its own. */
    CHECK(VirtmemProcessConfigInit(&c), "init");
    c.MinimumApplicationAddress = 0x400000;
    c.MaximumApplicationAddress = 0xBFFFFFFF;
    g = VirtmemCreateProcessEx(&c);
    CHECK(VirtmemGetProcessSystemInfo(g, &si), "configured");
    CHECK(si.lpMinimumApplicationAddress == (void *)0x400000 && si.lpMaximumApplicationAddress == (void *)0xBFFFFFFF,
          "its range: %p-%p", si.lpMinimumApplicationAddress, si.lpMaximumApplicationAddress);
    /* Errors: as VirtmemSetCommitLimit's; a NULL or unwritable buffer is 998 and nothing written. */
    CHECK_ERR(!VirtmemGetProcessSystemInfo(h, NULL), ERROR_NOACCESS);
    CHECK_ERR(!VirtmemGetProcessSystemInfo(h, (LPSYSTEM_INFO)(void *)8), ERROR_NOACCESS);
    memset(&si, 0xEE, sizeof si);
    CHECK_ERR(!VirtmemGetProcessSystemInfo(NULL, &si), ERROR_INVALID_HANDLE);
    CHECK_ERR(!VirtmemGetProcessSystemInfo((HANDLE)0x7777770, &si), ERROR_INVALID_HANDLE);
    CHECK(TerminateProcess(g, 0), "terminate");
    CHECK_ERR(!VirtmemGetProcessSystemInfo(g, &si), ERROR_ACCESS_DENIED);
    CHECK(CloseHandle(g), "close");
    CHECK_ERR(!VirtmemGetProcessSystemInfo(g, &si), ERROR_INVALID_HANDLE);
    CHECK(si.dwPageSize == 0xEEEEEEEE, "failed calls wrote nothing");
    CHECK(CloseHandle(h), "close");
}

/* `--simulated`: leave out the current process's windows, whose checks query free real
 * memory (what scripts/test-cli-trace.sh records and replays: a free region of real memory
 * ends where the kernel's next mapping is, which a replay cannot know). */
int main(int argc, char **argv)
{
    int simulated_only = argc > 1 && strcmp(argv[1], "--simulated") == 0;
    simulated();
    guest32();
    large_page_window();
    windows_code_compiles_unchanged();
    placeholder_frees_are_refused();
    handles();
    if (!simulated_only)
        current();
    system_info();
    return check_summary();
}
