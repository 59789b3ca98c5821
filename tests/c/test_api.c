/* test_api.c - libvirtmem from C: the ABI of the header (sizes, layouts, constants),
 * simulated processes through the Ex functions, ReadProcessMemory/WriteProcessMemory and
 * VirtmemAccess, process handles, per-thread last errors, and bad pointer arguments. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "virtmem.h"
#include "check.h"

/* The Win32 x64 ABI, checked at compile time. */
_Static_assert(sizeof(DWORD) == 4 && sizeof(BOOL) == 4 && sizeof(UINT) == 4 && sizeof(ULONG) == 4, "32-bit types");
_Static_assert(sizeof(WORD) == 2 && sizeof(BYTE) == 1, "small types");
_Static_assert(sizeof(SIZE_T) == sizeof(void *) && sizeof(ULONG_PTR) == sizeof(void *), "pointer-wide types");
_Static_assert((DWORD)-1 > 0 && (BOOL)-1 < 0, "signedness");
_Static_assert(sizeof(MEMORY_BASIC_INFORMATION) == 48, "MEMORY_BASIC_INFORMATION is 48 bytes");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, AllocationProtect) == 16, "mbi");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, PartitionId) == 20, "mbi");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, RegionSize) == 24, "mbi");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, State) == 32, "mbi");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, Protect) == 36, "mbi");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, Type) == 40, "mbi");
_Static_assert(sizeof(SYSTEM_INFO) == 48, "SYSTEM_INFO is 48 bytes");
_Static_assert(offsetof(SYSTEM_INFO, dwPageSize) == 4, "si");
_Static_assert(offsetof(SYSTEM_INFO, lpMinimumApplicationAddress) == 8, "si");
_Static_assert(offsetof(SYSTEM_INFO, dwActiveProcessorMask) == 24, "si");
_Static_assert(offsetof(SYSTEM_INFO, dwNumberOfProcessors) == 32, "si");
_Static_assert(offsetof(SYSTEM_INFO, dwAllocationGranularity) == 40, "si");
_Static_assert(offsetof(SYSTEM_INFO, wProcessorRevision) == 46, "si");
_Static_assert(MEM_COMMIT == 0x1000 && MEM_RESERVE == 0x2000 && MEM_DECOMMIT == 0x4000 && MEM_RELEASE == 0x8000,
               "MEM_*");
_Static_assert(MEM_FREE == 0x10000 && MEM_PRIVATE == 0x20000 && MEM_RESET == 0x80000 && MEM_TOP_DOWN == 0x100000,
               "MEM_*");
_Static_assert(MEM_WRITE_WATCH == 0x200000 && MEM_RESET_UNDO == 0x1000000 && MEM_LARGE_PAGES == 0x20000000, "MEM_*");
_Static_assert(PAGE_NOACCESS == 1 && PAGE_READWRITE == 4 && PAGE_EXECUTE_READWRITE == 0x40 && PAGE_GUARD == 0x100,
               "PAGE_*");
_Static_assert(STATUS_ACCESS_VIOLATION == 0xC0000005u && STATUS_GUARD_PAGE_VIOLATION == 0x80000001u, "STATUS_*");

static void test_handles(void)
{
    MEMORY_BASIC_INFORMATION mbi;
    HANDLE self = GetCurrentProcess();
    CHECK(self == (HANDLE)-1 && self == INVALID_HANDLE_VALUE, "GetCurrentProcess() = %p", self);
    CHECK(CloseHandle(self) == TRUE, "closing the pseudo handle succeeds");
    CHECK_ERR(!TerminateProcess(self, 0), ERROR_ACCESS_DENIED);
    CHECK_ERR(!VirtualAllocEx(NULL, NULL, 4096, MEM_COMMIT, PAGE_READWRITE), ERROR_INVALID_HANDLE);
    CHECK_ERR(!VirtualFreeEx((HANDLE)0x4444, (void *)0x10000, 0, MEM_RELEASE), ERROR_INVALID_HANDLE);
    CHECK_ERR(VirtualQueryEx(NULL, NULL, &mbi, sizeof mbi) == 0, ERROR_INVALID_HANDLE);
    CHECK_ERR(!CloseHandle(NULL), ERROR_INVALID_HANDLE);
    CHECK_ERR(!TerminateProcess(NULL, 0), ERROR_INVALID_HANDLE);

    HANDLE a = VirtmemCreateProcess(), b = VirtmemCreateProcess();
    CHECK(a && b && a != b && a != self, "two distinct simulated processes: %p %p", a, b);
    char *p = VirtualAllocEx(a, NULL, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    CHECK(p != NULL, "alloc in a");
    CHECK(VirtualQueryEx(b, p, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_FREE,
          "the same address is free in b: state %#x", (unsigned)mbi.State);
    CHECK(TerminateProcess(a, 7) == TRUE, "terminate a");
    CHECK_ERR(!TerminateProcess(a, 7), ERROR_ACCESS_DENIED);
    CHECK_ERR(!VirtualAllocEx(a, NULL, 4096, MEM_COMMIT, PAGE_READWRITE), ERROR_ACCESS_DENIED);
    CHECK_ERR(VirtualQueryEx(a, p, &mbi, sizeof mbi) == 0, ERROR_ACCESS_DENIED);
    CHECK(CloseHandle(a) == TRUE, "close a");
    CHECK_ERR(VirtualQueryEx(a, p, &mbi, sizeof mbi) == 0, ERROR_INVALID_HANDLE);
    CHECK_ERR(!CloseHandle(a), ERROR_INVALID_HANDLE);
    CHECK(CloseHandle(b) == TRUE, "close b");
}

static void test_simulated_process(void)
{
    HANDLE h = VirtmemCreateProcess();
    MEMORY_BASIC_INFORMATION mbi;
    DWORD old = 0;
    SIZE_T n = 0;
    unsigned char buf[0x3000], back[0x3000];

    /* A terabyte reservation costs nothing in a simulated process. */
    char *huge = VirtualAllocEx(h, NULL, (SIZE_T)1 << 40, MEM_RESERVE, PAGE_NOACCESS);
    CHECK(huge != NULL && (uintptr_t)huge % 65536 == 0, "1 TiB reservation at %p", (void *)huge);
    CHECK(VirtualFreeEx(h, huge, 0, MEM_RELEASE), "release it");

    char *base = VirtualAllocEx(h, NULL, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
    CHECK(base != NULL, "reserve 64 KiB");
    CHECK(VirtualAllocEx(h, base + 0xfff, 2, MEM_COMMIT, PAGE_READWRITE) == base, "a 2-byte commit commits 2 pages");
    CHECK(VirtualQueryEx(h, base + 5, &mbi, sizeof mbi) == 48, "query");
    CHECK(mbi.BaseAddress == base && mbi.AllocationBase == base && mbi.AllocationProtect == PAGE_NOACCESS &&
              mbi.RegionSize == 0x2000 && mbi.State == MEM_COMMIT && mbi.Protect == PAGE_READWRITE &&
              mbi.Type == MEM_PRIVATE && mbi.PartitionId == 0,
          "committed region: base %p size %#zx state %#x prot %#x", mbi.BaseAddress, (size_t)mbi.RegionSize,
          (unsigned)mbi.State, (unsigned)mbi.Protect);
    CHECK(VirtualQueryEx(h, base + 0x2000, &mbi, sizeof mbi) == 48 && mbi.State == MEM_RESERVE &&
              mbi.Protect == 0 && mbi.RegionSize == 0xe000,
          "reserved rest: size %#zx", (size_t)mbi.RegionSize);
    CHECK_ERR(VirtualQueryEx(h, base, &mbi, sizeof mbi - 1) == 0, ERROR_BAD_LENGTH);

    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 13);
    CHECK(WriteProcessMemory(h, base, buf, 0x2000, &n) && n == 0x2000, "write 2 pages, n=%zu", (size_t)n);
    memset(back, 0, sizeof back);
    CHECK(ReadProcessMemory(h, base, back, 0x2000, &n) && n == 0x2000 && !memcmp(buf, back, 0x2000), "read back");
    n = 99;
    CHECK_ERR(!ReadProcessMemory(h, base + 0x1000, back, 0x2000, &n), ERROR_PARTIAL_COPY);
    CHECK(n == 0, "nothing read: n=%zu", (size_t)n);
    CHECK_ERR(!WriteProcessMemory(h, base + 0x1800, buf, 0x1000, &n), ERROR_PARTIAL_COPY);
    CHECK_ERR(!WriteProcessMemory(h, base + 0x2000, buf, 16, NULL), ERROR_NOACCESS);
    CHECK(ReadProcessMemory(h, base + 0x1800, back, 0x800, NULL) && !memcmp(back, buf + 0x1800, 0x800),
          "the failed write changed nothing");

    CHECK(VirtualProtectEx(h, base + 0x1000, 1, PAGE_READONLY, &old) && old == PAGE_READWRITE, "old %#x",
          (unsigned)old);
    CHECK_ERR(!WriteProcessMemory(h, base + 0x1000, buf, 1, NULL), ERROR_NOACCESS);
    CHECK_ERR(!VirtualProtectEx(h, base, 0x1000, PAGE_READONLY, NULL), ERROR_NOACCESS);
    CHECK_ERR(!VirtualProtectEx(h, base + 0x2000, 0x1000, PAGE_READONLY, &old), ERROR_INVALID_ADDRESS);
    CHECK_ERR(!VirtualProtectEx(h, base, 0x1000, PAGE_WRITECOPY, &old), ERROR_INVALID_PARAMETER);

    /* Checked accesses, as an emulator makes them. */
    ULONG_PTR fault = 0;
    CHECK(VirtualProtectEx(h, base, 0x1000, PAGE_READWRITE | PAGE_GUARD, &old), "arm a guard page");
    CHECK(VirtualQueryEx(h, base, &mbi, sizeof mbi) && mbi.Protect == (PAGE_READWRITE | PAGE_GUARD), "guarded");
    CHECK(VirtmemAccess(h, (ULONG_PTR)base + 8, back, 4, VIRTMEM_ACCESS_READ, &fault) == STATUS_GUARD_PAGE_VIOLATION &&
              fault == (ULONG_PTR)base + 8,
          "guard page violation at %#zx", (size_t)fault);
    CHECK(VirtualQueryEx(h, base, &mbi, sizeof mbi) && mbi.Protect == PAGE_READWRITE, "guard disarmed: %#x",
          (unsigned)mbi.Protect);
    CHECK(VirtmemAccess(h, (ULONG_PTR)base + 8, back, 4, VIRTMEM_ACCESS_READ, &fault) == 0 && !memcmp(back, buf + 8, 4),
          "the retry reads");
    CHECK(VirtmemAccess(h, (ULONG_PTR)base + 0x1000, buf, 1, VIRTMEM_ACCESS_WRITE, &fault) == STATUS_ACCESS_VIOLATION &&
              fault == (ULONG_PTR)base + 0x1000,
          "write to read-only");
    CHECK(VirtmemAccess(h, (ULONG_PTR)base, back, 1, VIRTMEM_ACCESS_EXECUTE, &fault) == STATUS_ACCESS_VIOLATION,
          "execute read-write memory");
    CHECK(VirtmemAccess(h, (ULONG_PTR)base + 0x1ffe, back, 4, VIRTMEM_ACCESS_READ, &fault) == STATUS_ACCESS_VIOLATION &&
              fault == (ULONG_PTR)base + 0x2000,
          "a read running into reserved memory faults at its first reserved byte: %#zx", (size_t)fault);
    CHECK_ERR(VirtmemAccess(h, (ULONG_PTR)base, back, 1, 2, &fault) == VIRTMEM_ACCESS_FAILED, ERROR_INVALID_PARAMETER);
    CHECK_ERR(VirtmemAccess(NULL, (ULONG_PTR)base, back, 1, 0, &fault) == VIRTMEM_ACCESS_FAILED, ERROR_INVALID_HANDLE);

    /* Decommit and recommit: zeros. */
    CHECK(VirtualFreeEx(h, base, 0x2000, MEM_DECOMMIT), "decommit");
    CHECK(VirtualAllocEx(h, base, 0x1000, MEM_COMMIT, PAGE_READWRITE) == base, "recommit");
    memset(back, 0xff, 16);
    CHECK(ReadProcessMemory(h, base, back, 16, NULL) && back[0] == 0 && back[15] == 0, "recommitted page reads zero");
    CHECK_ERR(!VirtualFreeEx(h, base + 0x1000, 0, MEM_RELEASE), ERROR_INVALID_ADDRESS);
    CHECK_ERR(!VirtualFreeEx(h, base, 0x1000, MEM_RELEASE), ERROR_INVALID_PARAMETER);
    CHECK(VirtualFreeEx(h, base, 0, MEM_RELEASE), "release");
    CHECK(CloseHandle(h), "close");
}

/* VirtmemSetCommitLimit: a commit past the limit fails with ERROR_COMMITMENT_LIMIT and
 * commits nothing; reserving is not charged; recommitting committed pages is not charged
 * again; freeing makes room; removing the limit lifts it. */
static void test_commit_limit(void)
{
    HANDLE h = VirtmemCreateProcess();
    MEMORY_BASIC_INFORMATION mbi;
    char *a, *b;
    CHECK(VirtmemSetCommitLimit(h, 0x10000), "set a 64 KiB limit");
    a = VirtualAllocEx(h, NULL, 0xc000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    CHECK(a != NULL, "48 KiB committed: %u", (unsigned)GetLastError());
    b = VirtualAllocEx(h, NULL, (SIZE_T)1 << 30, MEM_RESERVE, PAGE_READWRITE);
    CHECK(b != NULL, "a 1 GiB reservation is not charged: %u", (unsigned)GetLastError());
    CHECK_ERR(!VirtualAllocEx(h, b, 0x5000, MEM_COMMIT, PAGE_READWRITE), ERROR_COMMITMENT_LIMIT);
    CHECK(VirtualQueryEx(h, b, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_RESERVE &&
              mbi.RegionSize == (SIZE_T)1 << 30,
          "the refused commit committed nothing: state %#x size %#zx", (unsigned)mbi.State, (size_t)mbi.RegionSize);
    CHECK_ERR(!VirtualAllocEx(h, NULL, 0x5000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE), ERROR_COMMITMENT_LIMIT);
    CHECK(VirtualAllocEx(h, b, 0x4000, MEM_COMMIT, PAGE_READWRITE) == b, "up to the limit exactly");
    CHECK(VirtualAllocEx(h, a, 0xc000, MEM_COMMIT, PAGE_READONLY) == a, "recommitting is not charged again");
    CHECK_ERR(!VirtualAllocEx(h, b + 0x4000, 1, MEM_COMMIT, PAGE_READWRITE), ERROR_COMMITMENT_LIMIT);
    CHECK(VirtualFreeEx(h, a, 0x4000, MEM_DECOMMIT), "decommit 16 KiB");
    CHECK(VirtualAllocEx(h, b + 0x4000, 0x4000, MEM_COMMIT, PAGE_READWRITE) == b + 0x4000, "room again");
    CHECK(VirtmemSetCommitLimit(h, VIRTMEM_NO_COMMIT_LIMIT), "remove the limit");
    CHECK(VirtualAllocEx(h, b, (SIZE_T)1 << 30, MEM_COMMIT, PAGE_READWRITE) == b, "1 GiB commits without a limit");
    CHECK(VirtmemSetCommitLimit(h, 0x1000), "a limit below the committed total");
    CHECK_ERR(!VirtualAllocEx(h, a, 0x1000, MEM_COMMIT, PAGE_READWRITE), ERROR_COMMITMENT_LIMIT);
    CHECK(VirtualAllocEx(h, b, 0x1000, MEM_COMMIT, PAGE_READONLY) == b, "committed pages can still be recommitted");
    CHECK_ERR(!VirtmemSetCommitLimit(NULL, 0x1000), ERROR_INVALID_HANDLE);
    CHECK_ERR(!VirtmemSetCommitLimit((HANDLE)0x4444, 0x1000), ERROR_INVALID_HANDLE);
    CHECK(TerminateProcess(h, 0), "terminate");
    CHECK_ERR(!VirtmemSetCommitLimit(h, 0x1000), ERROR_ACCESS_DENIED);
    CHECK(CloseHandle(h), "close");
}

static void test_bad_pointers(void)
{
    HANDLE h = VirtmemCreateProcess();
    void *unmapped = (void *)16; /* the first page is never mapped */
    static const MEMORY_BASIC_INFORMATION read_only = {.BaseAddress = (void *)1}; /* in .rodata */
    char *p = VirtualAllocEx(h, NULL, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    DWORD old;
    MEMORY_BASIC_INFORMATION mbi;
    CHECK_ERR(VirtualQueryEx(h, p, NULL, sizeof mbi) == 0, ERROR_NOACCESS);
    CHECK_ERR(VirtualQueryEx(h, p, unmapped, sizeof mbi) == 0, ERROR_NOACCESS);
    CHECK_ERR(VirtualQueryEx(h, p, (PMEMORY_BASIC_INFORMATION)&read_only, sizeof mbi) == 0, ERROR_NOACCESS);
    CHECK_ERR(!VirtualProtectEx(h, p, 1, PAGE_READONLY, unmapped), ERROR_NOACCESS);
    CHECK(VirtualQueryEx(h, p, &mbi, sizeof mbi) && mbi.Protect == PAGE_READWRITE, "the protection did not change");
    CHECK_ERR(!ReadProcessMemory(h, p, unmapped, 8, NULL), ERROR_NOACCESS);
    CHECK_ERR(!WriteProcessMemory(h, p, unmapped, 8, NULL), ERROR_NOACCESS);
    CHECK_ERR(!ReadProcessMemory(h, p, p + 8, 8, unmapped), ERROR_NOACCESS);
    SetLastError(0);
    GetSystemInfo(NULL);
    CHECK(GetLastError() == ERROR_NOACCESS, "GetSystemInfo(NULL) reports 998, got %u", (unsigned)GetLastError());
    (void)old;
    CloseHandle(h);
}

static void test_system_info(void)
{
    SYSTEM_INFO si;
    memset(&si, 0xcc, sizeof si);
    GetSystemInfo(&si);
    CHECK(si.dwPageSize == 4096 && si.dwAllocationGranularity == 65536, "page %u granularity %u",
          (unsigned)si.dwPageSize, (unsigned)si.dwAllocationGranularity);
    CHECK((uintptr_t)si.lpMinimumApplicationAddress == 0x10000, "min %p", si.lpMinimumApplicationAddress);
    CHECK((uintptr_t)si.lpMaximumApplicationAddress > 0x7fff0000u, "max %p", si.lpMaximumApplicationAddress);
    CHECK(si.dwNumberOfProcessors >= 1 && si.dwActiveProcessorMask != 0, "%u processors",
          (unsigned)si.dwNumberOfProcessors);
#if defined(__x86_64__)
    CHECK(si.wProcessorArchitecture == PROCESSOR_ARCHITECTURE_AMD64 && si.dwProcessorType == PROCESSOR_AMD_X8664,
          "x86-64: arch %u type %u", si.wProcessorArchitecture, (unsigned)si.dwProcessorType);
#endif
    /* GetLargePageMinimum: 0 (no large pages) or a power of two that is a multiple of the
       granularity; a MEM_LARGE_PAGES allocation follows it, and the last error is kept. */
    SetLastError(77);
    SIZE_T lp = GetLargePageMinimum();
    CHECK(GetLastError() == 77, "GetLargePageMinimum changed the last error to %u", (unsigned)GetLastError());
    CHECK(lp == 0 || (lp % 65536 == 0 && (lp & (lp - 1)) == 0), "large-page minimum %#zx", (size_t)lp);
    SIZE_T size = lp ? lp : 2u << 20;
    void *big = VirtualAlloc(NULL, size, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE);
    if (lp == 0) {
        CHECK(big == NULL && GetLastError() == ERROR_NO_SYSTEM_RESOURCES, "large pages without any: %p, error %u",
              big, (unsigned)GetLastError());
    } else {
        CHECK(big != NULL || GetLastError() == ERROR_NO_SYSTEM_RESOURCES, "large page of %#zx: error %u",
              (size_t)size, (unsigned)GetLastError());
        if (big)
            CHECK(VirtualFree(big, 0, MEM_RELEASE), "release of a large page: %u", (unsigned)GetLastError());
        CHECK(!VirtualAlloc(NULL, lp + 4096, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE) &&
                  GetLastError() == ERROR_INVALID_PARAMETER,
              "a size that splits a large page: %u", (unsigned)GetLastError());
    }
}

struct thread_arg {
    int index;
    HANDLE process;
    pthread_barrier_t *barrier;
    int ok;
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    DWORD expected;
    SetLastError(500 + a->index);
    pthread_barrier_wait(a->barrier);
    switch (a->index % 3) {
    case 0:
        VirtualAllocEx(a->process, NULL, 0, MEM_RESERVE, PAGE_READWRITE);
        expected = ERROR_INVALID_PARAMETER;
        break;
    case 1:
        VirtualFreeEx(NULL, NULL, 0, MEM_RELEASE);
        expected = ERROR_INVALID_HANDLE;
        break;
    default: {
        void *q = VirtualAllocEx(a->process, NULL, 4096, MEM_RESERVE, PAGE_READWRITE);
        VirtualFreeEx(a->process, q, 0, MEM_RELEASE);
        expected = 500 + a->index; /* successes leave the last error alone */
    }
    }
    pthread_barrier_wait(a->barrier);
    a->ok = GetLastError() == expected;
    return NULL;
}

static void test_threads(void)
{
    enum { N = 6 };
    pthread_t t[N];
    struct thread_arg args[N];
    pthread_barrier_t barrier;
    HANDLE h = VirtmemCreateProcess();
    pthread_barrier_init(&barrier, NULL, N);
    SetLastError(77);
    for (int i = 0; i < N; i++) {
        args[i] = (struct thread_arg){i, h, &barrier, 0};
        pthread_create(&t[i], NULL, thread_main, &args[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        CHECK(args[i].ok, "thread %d saw its own last error", i);
    }
    CHECK(GetLastError() == 77, "the main thread's last error is untouched: %u", (unsigned)GetLastError());
    pthread_barrier_destroy(&barrier);
    CloseHandle(h);
}

int main(void)
{
    test_handles();
    test_simulated_process();
    test_commit_limit();
    test_bad_pointers();
    test_system_info();
    test_threads();
    return check_summary();
}
