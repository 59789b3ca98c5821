/* test_current.c - libvirtmem on this process's real memory: what VirtualAlloc returns is
 * ordinary memory the program uses directly, the CPU enforces the protections, memory the
 * library did not allocate is never touched, write watch sees plain stores, and
 * ReadProcessMemory/WriteProcessMemory/VirtmemAccess check every page. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "virtmem.h"
#include "check.h"

enum { PROBE_READ, PROBE_WRITE, PROBE_EXEC };

/* Touch `p` in a forked child: 1 if the access completed, 0 if the CPU refused it. The
 * parent's memory is not touched. */
static int accessible(void *p, int kind)
{
    pid_t pid;
    int st;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        struct rlimit nocore = {0, 0};
        setrlimit(RLIMIT_CORE, &nocore);
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        if (kind == PROBE_READ)
            (void)*(volatile unsigned char *)p;
        else if (kind == PROBE_WRITE)
            *(volatile unsigned char *)p = *(volatile unsigned char *)p;
        else
            ((void (*)(void))p)();
        _exit(0);
    }
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void test_ordinary_memory(void)
{
    MEMORY_BASIC_INFORMATION mbi;
    DWORD old;
    unsigned char *p = VirtualAlloc(NULL, 0x40000, MEM_RESERVE, PAGE_NOACCESS);
    CHECK(p && (uintptr_t)p % 65536 == 0, "reserve 256 KiB at %p", (void *)p);
    CHECK(accessible(p, PROBE_READ) == 0, "reserved memory faults");
    CHECK(VirtualAlloc(p, 0x3000, MEM_COMMIT, PAGE_READWRITE) == p, "commit 3 pages");
    CHECK(p[0] == 0 && p[0x2fff] == 0, "fresh commit reads zero");
    for (int i = 0; i < 0x3000; i++)
        p[i] = (unsigned char)(i * 31);
    CHECK(p[0x1234] == (unsigned char)(0x1234 * 31), "plain stores and loads");
    CHECK(accessible(p + 0x3000, PROBE_READ) == 0, "the page after the commit still faults");

    CHECK(VirtualQuery(p + 0x1010, &mbi, sizeof mbi) == sizeof mbi, "query");
    CHECK(mbi.BaseAddress == p + 0x1000 && mbi.AllocationBase == p && mbi.AllocationProtect == PAGE_NOACCESS &&
              mbi.RegionSize == 0x2000 && mbi.State == MEM_COMMIT && mbi.Protect == PAGE_READWRITE &&
              mbi.Type == MEM_PRIVATE,
          "base %p size %#zx state %#x prot %#x", mbi.BaseAddress, (size_t)mbi.RegionSize, (unsigned)mbi.State,
          (unsigned)mbi.Protect);

    /* The CPU enforces what VirtualProtect sets. */
    CHECK(VirtualProtect(p, 0x1000, PAGE_READONLY, &old) && old == PAGE_READWRITE, "read-only, old %#x",
          (unsigned)old);
    CHECK(accessible(p, PROBE_READ) == 1 && accessible(p, PROBE_WRITE) == 0, "read-only page: reads, no writes");
    CHECK(p[5] == (unsigned char)(5 * 31), "data survives the protection change");
    CHECK(VirtualProtect(p, 0x1000, PAGE_NOACCESS, &old) && old == PAGE_READONLY, "no access");
    CHECK(accessible(p, PROBE_READ) == 0, "no-access page faults");
    CHECK(VirtualProtect(p, 0x1000, PAGE_EXECUTE_READWRITE, &old), "execute-read-write");
    p[0] = 0xC3; /* ret */
    CHECK(accessible(p, PROBE_EXEC) == 1, "code written to an RWX page runs");
    CHECK(VirtualProtect(p, 0x1000, PAGE_READWRITE, &old) && old == PAGE_EXECUTE_READWRITE, "back to RW");
    CHECK(accessible(p, PROBE_EXEC) == 0, "a read-write page does not execute");
    CHECK_ERR(!VirtualProtect(p + 0x3000, 0x1000, PAGE_READONLY, &old), ERROR_INVALID_ADDRESS);
    CHECK(old == PAGE_NOACCESS, "a reserved page in the range reports PAGE_NOACCESS: %#x", (unsigned)old);

    /* Decommit drops the pages; a recommit reads zero. */
    CHECK(VirtualFree(p + 0x1000, 0x1000, MEM_DECOMMIT), "decommit the middle page");
    CHECK(accessible(p + 0x1000, PROBE_READ) == 0, "decommitted memory faults");
    CHECK(VirtualAlloc(p + 0x1000, 1, MEM_COMMIT, PAGE_READWRITE) == p + 0x1000 && p[0x1001] == 0 &&
              p[0x2001] == (unsigned char)(0x2001 * 31),
          "recommit reads zero, the neighbour keeps its data");
    CHECK(VirtualAlloc(p, 0x3000, MEM_RESET, PAGE_NOACCESS) == p, "MEM_RESET");
    CHECK(VirtualFree(p, 0, MEM_RELEASE), "release");
    CHECK(VirtualQuery(p, &mbi, sizeof mbi) && mbi.State == MEM_FREE, "released memory is free");
    CHECK_ERR(!VirtualFree(p, 0, MEM_RELEASE), ERROR_INVALID_ADDRESS);
}

static void test_foreign_memory(void)
{
    static const char greeting[] = "not yours";
    MEMORY_BASIC_INFORMATION mbi;
    DWORD old = 0x1234;
    int on_stack = 42;
    char *heap = malloc(1 << 20);
    CHECK(heap != NULL, "malloc");
    strcpy(heap, "the heap's data");
    CHECK_ERR(!VirtualFree(heap, 0, MEM_RELEASE), ERROR_INVALID_ADDRESS);
    CHECK_ERR(!VirtualFree(heap, 4096, MEM_DECOMMIT), ERROR_INVALID_ADDRESS);
    CHECK_ERR(!VirtualFree(&on_stack, 0, MEM_RELEASE), ERROR_INVALID_ADDRESS);
    CHECK_ERR(!VirtualProtect(heap, 4096, PAGE_NOACCESS, &old), ERROR_INVALID_ADDRESS);
    CHECK_ERR(!VirtualProtect((void *)greeting, 1, PAGE_READWRITE, &old), ERROR_INVALID_ADDRESS);
    CHECK_ERR(!VirtualAlloc(heap, 4096, MEM_COMMIT, PAGE_NOACCESS), ERROR_INVALID_ADDRESS);
    CHECK_ERR(!VirtualLock(heap, 4096), ERROR_INVALID_ADDRESS);
    CHECK_ERR(!VirtualLock(&on_stack, sizeof on_stack), ERROR_INVALID_ADDRESS);
    CHECK_ERR(!VirtualLock((void *)greeting, 1), ERROR_INVALID_ADDRESS);
    CHECK(strcmp(heap, "the heap's data") == 0 && on_stack == 42 && accessible(heap, PROBE_WRITE) == 1,
          "foreign memory is untouched and still writable");
    CHECK(VirtualQuery(heap, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_COMMIT &&
              (mbi.Protect & PAGE_READWRITE),
          "the heap is reported as committed read-write memory: state %#x prot %#x", (unsigned)mbi.State,
          (unsigned)mbi.Protect);
    CHECK(VirtualQuery(greeting, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_COMMIT &&
              mbi.Protect == PAGE_READONLY && mbi.Type == MEM_IMAGE,
          "read-only data of the program: prot %#x type %#x", (unsigned)mbi.Protect, (unsigned)mbi.Type);
    free(heap);
}

/* Copies larger than the 64 KiB pieces they go in: every byte arrives; a caller buffer
 * that stops being readable part-way fails a write before anything is written; one that
 * stops being writable part-way fails a read after the readable part, which is counted. */
static void test_process_memory_pieces(void)
{
    HANDLE self = GetCurrentProcess();
    enum { SIZE = 0x30000 };
    unsigned char *src = VirtualAlloc(NULL, SIZE + 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    unsigned char *dst = VirtualAlloc(NULL, SIZE + 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    SIZE_T n = 0, i, bad = 0;
    DWORD old;
    for (i = 0; i < SIZE; i++)
        src[i] = (unsigned char)(i * 7 + i / 4096);
    CHECK(ReadProcessMemory(self, src, dst, SIZE, &n) && n == SIZE, "read 3 pieces: n %lu", (unsigned long)n);
    for (i = 0; i < SIZE; i++)
        bad += dst[i] != src[i];
    CHECK(bad == 0, "read: %lu bytes differ", (unsigned long)bad);
    memset(dst, 0, SIZE);
    CHECK(WriteProcessMemory(self, dst + 1, src, SIZE - 1, &n) && n == SIZE - 1, "write 3 pieces");
    for (i = 0, bad = 0; i < SIZE - 1; i++)
        bad += dst[i + 1] != src[i];
    CHECK(bad == 0 && dst[0] == 0, "write: %lu bytes differ", (unsigned long)bad);

    /* The source's third piece is not readable: nothing at all is written. */
    CHECK(VirtualProtect(src + 0x20000, 0x1000, PAGE_NOACCESS, &old), "protect");
    memset(dst, 0xee, SIZE);
    n = 77;
    CHECK_ERR(!WriteProcessMemory(self, dst, src, SIZE, &n), ERROR_NOACCESS);
    for (i = 0, bad = 0; i < SIZE; i++)
        bad += dst[i] != 0xee;
    CHECK(n == 0 && bad == 0, "a bad source part-way writes nothing: n %lu, %lu bytes changed", (unsigned long)n,
          (unsigned long)bad);
    /* The destination's third piece is not writable: the first two pieces arrive and are counted. */
    CHECK(VirtualProtect(src + 0x20000, 0x1000, PAGE_READWRITE, &old), "protect back");
    CHECK(VirtualProtect(dst + 0x20000, 0x1000, PAGE_READONLY, &old), "protect");
    n = 77;
    CHECK_ERR(!ReadProcessMemory(self, src, dst, SIZE, &n), ERROR_NOACCESS);
    CHECK(n == 0x20000 && dst[0x1ffff] == src[0x1ffff] && dst[0x20000] == 0xee,
          "a bad destination part-way: n %lu", (unsigned long)n);
    CHECK(VirtualFree(src, 0, MEM_RELEASE) && VirtualFree(dst, 0, MEM_RELEASE), "release");
}

static void test_process_memory(void)
{
    HANDLE self = GetCurrentProcess();
    unsigned char *p = VirtualAlloc(NULL, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
    unsigned char buf[0x2000], *big;
    SIZE_T n = 77;
    ULONG_PTR fault = 0;
    DWORD old;
    VirtualAlloc(p, 0x2000, MEM_COMMIT, PAGE_READWRITE);
    memset(p, 0x5a, 0x2000);
    CHECK(ReadProcessMemory(self, p + 0x100, buf, 0x100, &n) && n == 0x100 && buf[0] == 0x5a, "RPM on self");
    CHECK_ERR(!ReadProcessMemory(self, p + 0x1f00, buf, 0x200, &n), ERROR_PARTIAL_COPY);
    CHECK(n == 0, "n = 0 after a failed read");
    memset(buf, 0x11, sizeof buf);
    CHECK(WriteProcessMemory(self, p, buf, 0x100, &n) && n == 0x100 && p[0xff] == 0x11 && p[0x100] == 0x5a,
          "WPM on self");
    VirtualProtect(p + 0x1000, 0x1000, PAGE_READONLY, &old);
    CHECK_ERR(!WriteProcessMemory(self, p + 0x1000, buf, 0x10, NULL), ERROR_NOACCESS);
    CHECK_ERR(!WriteProcessMemory(self, p + 0xff0, buf, 0x20, NULL), ERROR_PARTIAL_COPY);
    CHECK(p[0xff0] == 0x5a && p[0x1000] == 0x5a, "a failed write writes nothing");

    /* Sizes far beyond the buffers: checked before anything is allocated or copied. (The
     * source of the writes, `big`, has its first 64 KiB piece readable.) */
    big = VirtualAlloc(NULL, 0x20000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    memset(big, 0x77, 0x20000);
    n = 77;
    CHECK_ERR(!ReadProcessMemory(self, p, buf, (SIZE_T)1 << 40, &n), ERROR_PARTIAL_COPY);
    CHECK(n == 0, "n = 0 after a 1 TiB read: %lu", (unsigned long)n);
    n = 77;
    CHECK_ERR(!WriteProcessMemory(self, p, (void *)16, (SIZE_T)1 << 40, &n), ERROR_NOACCESS);
    CHECK(n == 0 && p[0] == 0x11, "n = 0 after a 1 TiB write from a bad buffer, nothing written");
    CHECK_ERR(!WriteProcessMemory(self, p, big, (SIZE_T)1 << 40, &n), ERROR_PARTIAL_COPY);
    CHECK(n == 0 && p[0] == 0x11, "n = 0 after a 1 TiB write past the target's committed pages, nothing written");
    CHECK(VirtmemAccess(self, (ULONG_PTR)p, buf, (SIZE_T)1 << 40, VIRTMEM_ACCESS_READ, &fault) ==
                  STATUS_ACCESS_VIOLATION &&
              fault == (ULONG_PTR)p + 0x2000,
          "VirtmemAccess of 1 TiB: the first page past the committed ones faults");
    {
        /* 1 GiB: refused without touching 1 GiB of memory first. */
        struct rusage before, after;
        getrusage(RUSAGE_SELF, &before);
        CHECK_ERR(!ReadProcessMemory(self, p, buf, (SIZE_T)1 << 30, &n), ERROR_PARTIAL_COPY);
        CHECK_ERR(!WriteProcessMemory(self, p, big, (SIZE_T)1 << 30, &n), ERROR_PARTIAL_COPY);
        getrusage(RUSAGE_SELF, &after);
        CHECK(after.ru_maxrss - before.ru_maxrss < 64 * 1024, "a refused 1 GiB copy grew the peak RSS by %ld KiB",
              after.ru_maxrss - before.ru_maxrss);
    }
    CHECK(VirtualFree(big, 0, MEM_RELEASE), "release");
    test_process_memory_pieces();

    /* Checked accesses through the engine, guard pages included. */
    CHECK(VirtualProtect(p, 0x1000, PAGE_READWRITE | PAGE_GUARD, &old), "arm a guard page");
    CHECK(VirtmemAccess(self, (ULONG_PTR)p, buf, 4, VIRTMEM_ACCESS_READ, &fault) == STATUS_GUARD_PAGE_VIOLATION &&
              fault == (ULONG_PTR)p,
          "guard page violation");
    CHECK(VirtmemAccess(self, (ULONG_PTR)p, buf, 4, VIRTMEM_ACCESS_READ, &fault) == 0 && buf[0] == 0x11,
          "then the access goes through");
    CHECK(accessible(p, PROBE_WRITE) == 1, "the disarmed page is plain read-write memory again");
    CHECK(VirtmemAccess(self, (ULONG_PTR)p + 0x1000, buf, 1, VIRTMEM_ACCESS_WRITE, &fault) ==
                  STATUS_ACCESS_VIOLATION &&
              fault == (ULONG_PTR)p + 0x1000,
          "write to read-only");
    CHECK(VirtualFree(p, 0, MEM_RELEASE), "release");
}

/* A range far past the end of a write-watched reservation, with a huge *lpdwCount: the
 * range is refused (87) before anything is sized by those numbers (the call used to
 * allocate count * 8 bytes for its probe and abort the process when that failed), and
 * nothing is stored. A huge count on a good range is capped at the range's pages. */
static void test_write_watch_oversized(void)
{
    void *found[16];
    ULONG_PTR count;
    DWORD granularity = 7;
    unsigned char *b = VirtualAlloc(NULL, 0x10000, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_READWRITE);
    CHECK(b != NULL, "write-watched reservation: %u", (unsigned)GetLastError());
    if (!b)
        return;
    count = 0x1000000000ull;
    CHECK_ERR(GetWriteWatch(WRITE_WATCH_FLAG_RESET, b, 0x400000000000ull, found, &count, &granularity) ==
                  0xFFFFFFFFu,
              ERROR_INVALID_PARAMETER);
    CHECK(count == 0x1000000000ull && granularity == 7, "a refused call stores nothing");
    CHECK_ERR(GetWriteWatch(0, b, 0x400000000000ull, found, &count, &granularity) == 0xFFFFFFFFu,
              ERROR_INVALID_PARAMETER);
    CHECK_ERR(GetWriteWatch(0, b, 0x10001, found, &count, &granularity) == 0xFFFFFFFFu, ERROR_INVALID_PARAMETER);
    CHECK_ERR(ResetWriteWatch(b, 0x400000000000ull) == 0xFFFFFFFFu, ERROR_INVALID_PARAMETER);
    CHECK(VirtualAlloc(b, 0x10000, MEM_COMMIT, PAGE_READWRITE) == b, "commit");
    b[0x2000] = 1;
    b[0xf000] = 2;
    CHECK(GetWriteWatch(WRITE_WATCH_FLAG_RESET, b, 0x10000, found, &count, &granularity) == 0 && count == 2 &&
              found[0] == b + 0x2000 && found[1] == b + 0xf000 && granularity == 4096,
          "a huge count on a 16-page range needs only 16 entries: count %lu", (unsigned long)count);
    count = 0x1000000000ull;
    CHECK(GetWriteWatch(WRITE_WATCH_FLAG_RESET, b + 0xf000, 0x1000, found, &count, &granularity) == 0 && count == 0,
          "and 1 for a 1-page range");
    CHECK(VirtualFree(b, 0, MEM_RELEASE), "release");
}

static void test_write_watch(void)
{
    void *found[16];
    ULONG_PTR count = 16;
    DWORD granularity = 0;
    unsigned char *p = VirtualAlloc(NULL, 0x10000, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE);
    if (!p) {
        CHECK(GetLastError() == ERROR_NOT_SUPPORTED, "MEM_WRITE_WATCH unavailable must be 50, got %u",
              (unsigned)GetLastError());
        printf("   (write watch not supported by this kernel)\n");
        return;
    }
    CHECK(GetWriteWatch(0, p, 0x10000, found, &count, &granularity) == 0 && count == 0 && granularity == 4096,
          "nothing written yet: count %lu", (unsigned long)count);
    p[0x1000] = 1;
    p[0x3fff] = 2;
    p[0x9000] = 3;
    count = 16;
    CHECK(GetWriteWatch(WRITE_WATCH_FLAG_RESET, p, 0x10000, found, &count, &granularity) == 0 && count == 3 &&
              found[0] == p + 0x1000 && found[1] == p + 0x3000 && found[2] == p + 0x9000,
          "plain stores are seen: count %lu", (unsigned long)count);
    count = 16;
    CHECK(GetWriteWatch(0, p, 0x10000, found, &count, &granularity) == 0 && count == 0, "reset");
    p[0x2000] = 4;
    CHECK(ResetWriteWatch(p, 0x10000) == 0, "ResetWriteWatch");
    count = 16;
    CHECK(GetWriteWatch(0, p, 0x10000, found, &count, &granularity) == 0 && count == 0, "clean again");
    CHECK_ERR(GetWriteWatch(0, p, 0x10000, found, NULL, &granularity) == 0xFFFFFFFFu, ERROR_NOACCESS);
    count = 0;
    CHECK_ERR(GetWriteWatch(0, p, 0x10000, found, &count, &granularity) == 0xFFFFFFFFu, ERROR_INVALID_PARAMETER);
    count = 16;
    CHECK_ERR(GetWriteWatch(0, p, 0x10000, (void **)16, &count, &granularity) == 0xFFFFFFFFu, ERROR_NOACCESS);
    CHECK(VirtualFree(p, 0, MEM_RELEASE), "release");
    test_write_watch_oversized();
}

static void test_lock(void)
{
    unsigned char *p = VirtualAlloc(NULL, 0x4000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    BOOL locked = VirtualLock(p, 0x2000);
    CHECK(locked || GetLastError() == ERROR_WORKING_SET_QUOTA, "VirtualLock: %u", (unsigned)GetLastError());
    if (locked) {
        CHECK(VirtualUnlock(p, 0x2000), "VirtualUnlock");
        CHECK_ERR(!VirtualUnlock(p, 0x2000), ERROR_NOT_LOCKED);
    }
    /* Locking touches the pages: an armed guard page fails it with the guard exception
     * as the last error, and is disarmed. */
    MEMORY_BASIC_INFORMATION mbi;
    DWORD old;
    CHECK(VirtualProtect(p + 0x3000, 0x1000, PAGE_READWRITE | PAGE_GUARD, &old), "arm a guard page");
    CHECK_ERR(!VirtualLock(p + 0x3000, 0x1000), STATUS_GUARD_PAGE_VIOLATION);
    CHECK(VirtualQuery(p + 0x3000, &mbi, sizeof mbi) && mbi.Protect == PAGE_READWRITE, "disarmed: %#x",
          (unsigned)mbi.Protect);
    CHECK(VirtualFree(p, 0, MEM_RELEASE), "release");
}

static void *churn(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    int ok = 1;
    for (int round = 0; round < 200 && ok; round++) {
        SIZE_T size = (SIZE_T)(1 + (seed = seed * 1103515245u + 12345u) % 16) * 4096;
        unsigned char *p = VirtualAlloc(NULL, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
        if (!p)
            return NULL;
        memset(p, (int)(seed & 0xff), size);
        for (SIZE_T i = 0; i < size; i += 512)
            ok &= p[i] == (unsigned char)(seed & 0xff);
        ok &= VirtualFree(p, 0, MEM_RELEASE);
    }
    return ok ? arg : NULL;
}

static void test_threads(void)
{
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, churn, (void *)(i + 1));
    for (uintptr_t i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        CHECK(r == (void *)(i + 1), "thread %lu allocated, used and freed 200 blocks", (unsigned long)i);
    }
}

int main(void)
{
    MEMORY_BASIC_INFORMATION mbi;
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    CHECK_ERR(VirtualQuery((char *)si.lpMaximumApplicationAddress + 1, &mbi, sizeof mbi) == 0,
              ERROR_INVALID_PARAMETER);
    test_ordinary_memory();
    test_foreign_memory();
    test_process_memory();
    test_write_watch();
    test_lock();
    test_threads();
    return check_summary();
}
