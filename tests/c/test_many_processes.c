/* test_many_processes.c - thousands of simulated processes in one host process, as a
 * sandbox or a fuzzing farm keeps them: several threads create, use and close processes
 * at once. Each process sees only its own memory; a closed handle is never valid again
 * (ERROR_INVALID_HANDLE, never another process's memory), and no handle value is handed
 * out twice; the same calls give the same addresses in every process; and create/close
 * cycles leave the heap as they found it (glibc's mallinfo2, every arena). */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "virtmem.h"
#include "check.h"

#define THREADS 4
#define PER_THREAD 1000 /* live at once per thread: 4000 processes */
#define CYCLES 3

struct worker {
    int id;
    HANDLE handles[PER_THREAD];
    void *bases[PER_THREAD];
    int failures; /* counted here, reported by the main thread (check.h is not thread-safe) */
    char why[160];
};

static void fail(struct worker *w, const char *why, int i, unsigned err)
{
    if (w->failures++ == 0) {
        snprintf(w->why, sizeof w->why, "thread %d, process %d: %s (last error %u)", w->id, i, why, err);
    }
}

/* The same calls in every process: a 1 MiB reservation, then 64 KiB committed at its
 * second granule. */
static void *set_up(HANDLE h)
{
    char *base = VirtualAllocEx(h, NULL, 1 << 20, MEM_RESERVE, PAGE_NOACCESS);
    if (base == NULL || VirtualAllocEx(h, base + 0x10000, 0x10000, MEM_COMMIT, PAGE_READWRITE) == NULL) {
        return NULL;
    }
    return base;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    int i;
    for (i = 0; i < PER_THREAD; i++) {
        uint64_t tag = ((uint64_t)w->id << 32) | (uint64_t)i;
        HANDLE h = VirtmemCreateProcess();
        if (h == NULL) {
            fail(w, "VirtmemCreateProcess", i, GetLastError());
            return NULL;
        }
        w->handles[i] = h;
        w->bases[i] = set_up(h);
        if (w->bases[i] == NULL) {
            fail(w, "set up", i, GetLastError());
            continue;
        }
        if (!WriteProcessMemory(h, (char *)w->bases[i] + 0x10000, &tag, sizeof tag, NULL)) {
            fail(w, "write tag", i, GetLastError());
        }
    }
    /* Every process holds its own tag, at the same address as every other. */
    for (i = 0; i < PER_THREAD; i++) {
        uint64_t tag = 0, want = ((uint64_t)w->id << 32) | (uint64_t)i;
        SIZE_T n = 0;
        if (w->bases[i] != w->bases[0]) {
            fail(w, "the same calls gave another address", i, 0);
        }
        if (!ReadProcessMemory(w->handles[i], (char *)w->bases[i] + 0x10000, &tag, sizeof tag, &n) || tag != want) {
            fail(w, "read own tag", i, GetLastError());
        }
    }
    for (i = 0; i < PER_THREAD; i++) {
        if (!CloseHandle(w->handles[i])) {
            fail(w, "CloseHandle", i, GetLastError());
        }
    }
    /* Closed handles, while other threads make new processes: unknown, whatever the call. */
    for (i = 0; i < PER_THREAD; i++) {
        uint64_t tag = 0;
        MEMORY_BASIC_INFORMATION mbi;
        SetLastError(0);
        if (ReadProcessMemory(w->handles[i], (char *)w->bases[0] + 0x10000, &tag, sizeof tag, NULL) ||
            GetLastError() != ERROR_INVALID_HANDLE) {
            fail(w, "read through a closed handle", i, GetLastError());
        }
        SetLastError(0);
        if (VirtualQueryEx(w->handles[i], w->bases[0], &mbi, sizeof mbi) != 0 || GetLastError() != ERROR_INVALID_HANDLE) {
            fail(w, "query through a closed handle", i, GetLastError());
        }
        SetLastError(0);
        if (CloseHandle(w->handles[i]) || GetLastError() != ERROR_INVALID_HANDLE) {
            fail(w, "second CloseHandle", i, GetLastError());
        }
    }
    return NULL;
}

static int cmp_handles(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* Bytes malloc holds for the program (all arenas, mmapped blocks included). */
static size_t heap_in_use(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

/* One cycle: THREADS threads, each making, checking and closing PER_THREAD processes.
 * `seen` (THREADS * PER_THREAD entries) gets every handle value handed out. */
static void cycle(uintptr_t *seen)
{
    static struct worker workers[THREADS];
    pthread_t threads[THREADS];
    int t, i;
    for (t = 0; t < THREADS; t++) {
        memset(&workers[t], 0, sizeof workers[t]);
        workers[t].id = t;
        CHECK(pthread_create(&threads[t], NULL, work, &workers[t]) == 0, "pthread_create");
    }
    for (t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        CHECK(workers[t].failures == 0, "%d failures, the first: %s", workers[t].failures, workers[t].why);
        for (i = 0; i < PER_THREAD; i++) {
            seen[t * PER_THREAD + i] = (uintptr_t)workers[t].handles[i];
        }
    }
}

int main(void)
{
    static uintptr_t seen[CYCLES + 1][THREADS * PER_THREAD];
    uintptr_t *all = malloc(sizeof seen);
    size_t before, after, n = 0;
    int c, i;

    cycle(seen[0]); /* warms up: the handle table's capacity, each allocator arena */
    before = heap_in_use();
    for (c = 1; c <= CYCLES; c++) {
        cycle(seen[c]);
    }
    after = heap_in_use();
    /* Nothing kept per process once closed: 12 000 processes of ~11 KB each would leave
     * over 100 MB if they were; allow 1 MiB for the allocator's own slack. */
    CHECK(after <= before + (1u << 20), "heap grew from %zu to %zu bytes over %d cycles of %d processes", before,
          after, CYCLES, THREADS * PER_THREAD);

    /* No handle value was ever handed out twice. */
    CHECK(all != NULL, "malloc");
    if (all != NULL) {
        memcpy(all, seen, sizeof seen);
        n = sizeof seen / sizeof seen[0][0];
        qsort(all, n, sizeof *all, cmp_handles);
        for (i = 1; i < (int)n; i++) {
            if (all[i] == all[i - 1]) {
                break;
            }
        }
        CHECK(i == (int)n, "handle %#lx was handed out twice", (unsigned long)all[i]);
        CHECK(all[0] != 0 && all[0] % 4 == 0, "handles are multiples of 4");
        free(all);
    }
    return check_summary();
}
