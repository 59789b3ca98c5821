/* bench.c - the same workloads through libvirtmem (VirtualAlloc & co. on this process's
 * real memory) and through the raw Linux system calls a hand-written port would use
 * (mmap, mprotect, madvise, munmap, and the PROCMAP_QUERY ioctl for queries), measured
 * in the same run. Prints the time per operation of each and the ratio.
 *
 * Build: gcc -O2 bench.c $(pkg-config --cflags --libs virtmem)   (scripts/bench-capi.sh)
 * Run:   ./bench [--quick]      (--quick: a few iterations, to check that it runs)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "virtmem.h"

#define PAGE 4096u

static int quick;

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench: %s failed (errno %d, last error %u)\n", what, errno, (unsigned)GetLastError());
    exit(1);
}

/* ---- workload 1: reserve 1 MiB, commit 64 KiB, touch every page, decommit, release ---- */

static void cycle_virtmem(void)
{
    unsigned char *p = VirtualAlloc(NULL, 1 << 20, MEM_RESERVE, PAGE_NOACCESS);
    if (!p || !VirtualAlloc(p, 16 * PAGE, MEM_COMMIT, PAGE_READWRITE))
        die("VirtualAlloc");
    for (unsigned i = 0; i < 16; i++)
        p[i * PAGE] = (unsigned char)i;
    if (!VirtualFree(p, 16 * PAGE, MEM_DECOMMIT) || !VirtualFree(p, 0, MEM_RELEASE))
        die("VirtualFree");
}

static void cycle_raw(void)
{
    unsigned char *p = mmap(NULL, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED || mprotect(p, 16 * PAGE, PROT_READ | PROT_WRITE))
        die("mmap/mprotect");
    for (unsigned i = 0; i < 16; i++)
        p[i * PAGE] = (unsigned char)i;
    if (madvise(p, 16 * PAGE, MADV_DONTNEED) || mprotect(p, 16 * PAGE, PROT_NONE) || munmap(p, 1 << 20))
        die("madvise/mprotect/munmap");
}

/* ---- workload 2: a growable buffer: reserve 64 MiB, commit 64 KiB steps as it fills ---- */

#define GROW_RESERVE (64u << 20)
#define GROW_STEP (64u << 10)

static void grow_virtmem(void)
{
    unsigned char *p = VirtualAlloc(NULL, GROW_RESERVE, MEM_RESERVE, PAGE_NOACCESS);
    if (!p)
        die("VirtualAlloc reserve");
    for (size_t off = 0; off < GROW_RESERVE; off += GROW_STEP) {
        if (!VirtualAlloc(p + off, GROW_STEP, MEM_COMMIT, PAGE_READWRITE))
            die("VirtualAlloc commit");
        for (size_t i = 0; i < GROW_STEP; i += PAGE)
            p[off + i] = 1;
    }
    if (!VirtualFree(p, 0, MEM_RELEASE))
        die("VirtualFree");
}

static void grow_raw(void)
{
    unsigned char *p = mmap(NULL, GROW_RESERVE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    for (size_t off = 0; off < GROW_RESERVE; off += GROW_STEP) {
        if (mprotect(p + off, GROW_STEP, PROT_READ | PROT_WRITE))
            die("mprotect");
        for (size_t i = 0; i < GROW_STEP; i += PAGE)
            p[off + i] = 1;
    }
    if (munmap(p, GROW_RESERVE))
        die("munmap");
}

/* ---- workload 3: toggle one page between read-write and read-only ---- */

static unsigned char *toggle_page;

static void protect_virtmem(void)
{
    DWORD old;
    if (!VirtualProtect(toggle_page, PAGE, PAGE_READONLY, &old) || !VirtualProtect(toggle_page, PAGE, PAGE_READWRITE, &old))
        die("VirtualProtect");
}

static void protect_raw(void)
{
    if (mprotect(toggle_page, PAGE, PROT_READ) || mprotect(toggle_page, PAGE, PROT_READ | PROT_WRITE))
        die("mprotect");
}

/* ---- workload 4: what is at this address? ---- */

/* struct procmap_query and PROCMAP_QUERY (Linux 6.11), declared here for older headers. */
struct bench_procmap_query {
    uint64_t size, query_flags, query_addr, vma_start, vma_end, vma_flags, vma_page_size, vma_offset, inode;
    uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
    uint64_t vma_name_addr, build_id_addr;
};
#define BENCH_PROCMAP_QUERY _IOWR('f', 17, struct bench_procmap_query)

static int maps_fd = -1;
static volatile uint64_t sink;

static void query_virtmem(void)
{
    MEMORY_BASIC_INFORMATION mbi;
    if (VirtualQuery(toggle_page, &mbi, sizeof mbi) != sizeof mbi)
        die("VirtualQuery");
    sink += mbi.RegionSize;
}

static void query_raw(void)
{
    struct bench_procmap_query q;
    memset(&q, 0, sizeof q);
    q.size = sizeof q;
    q.query_addr = (uintptr_t)toggle_page;
    if (ioctl(maps_fd, BENCH_PROCMAP_QUERY, &q))
        die("ioctl(PROCMAP_QUERY)");
    sink += q.vma_end - q.vma_start;
}

/* ---- the harness ---- */

/* Nanoseconds per call of `f`: the best of several runs of `n` calls. */
static double measure(void (*f)(void), int n)
{
    double best = 1e300;
    int runs = quick ? 1 : 7;
    f(); /* warm up */
    for (int r = 0; r < runs; r++) {
        double t0 = now_ns();
        for (int i = 0; i < n; i++)
            f();
        double t = (now_ns() - t0) / n;
        if (t < best)
            best = t;
    }
    return best;
}

static void row(const char *name, void (*virtmem)(void), void (*raw)(void), int n)
{
    if (quick)
        n = n / 100 + 1;
    /* Alternate the two sides so that both see the same machine state. */
    double a = measure(virtmem, n), b = raw ? measure(raw, n) : 0;
    double a2 = measure(virtmem, n), b2 = raw ? measure(raw, n) : 0;
    if (a2 < a)
        a = a2;
    if (b2 < b)
        b = b2;
    if (raw)
        printf("%-46s %12.0f ns %12.0f ns %8.2fx\n", name, a, b, a / b);
    else
        printf("%-46s %12.0f ns %12s    %8s\n", name, a, "n/a", "");
}

int main(int argc, char **argv)
{
    quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    toggle_page = VirtualAlloc(NULL, 16 * PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (!toggle_page)
        die("VirtualAlloc");
    toggle_page[0] = 1;
    maps_fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);

    printf("%-46s %15s %15s %11s\n", "workload (time per operation)", "libvirtmem", "raw syscalls", "ratio");
    row("reserve 1M, commit 64K, touch, decommit, free", cycle_virtmem, cycle_raw, 20000);
    row("grow a buffer to 64M in 64K commits (per run)", grow_virtmem, grow_raw, 20);
    row("protect one page RW->RO->RW", protect_virtmem, protect_raw, 100000);
    struct bench_procmap_query probe = {.size = sizeof probe, .query_addr = (uintptr_t)toggle_page};
    if (maps_fd >= 0 && ioctl(maps_fd, BENCH_PROCMAP_QUERY, &probe) == 0)
        row("query one address (raw: PROCMAP_QUERY)", query_virtmem, query_raw, 200000);
    else
        row("query one address (no PROCMAP_QUERY here)", query_virtmem, NULL, 200000);
    VirtualFree(toggle_page, 0, MEM_RELEASE);
    return 0;
}
