/* host_query_noalloc.c - IHostMemoryManager::VirtualQuery allocates nothing.
 *
 * The host spec: VirtualQuery "must not block or allocate (it may be called while other
 * threads are suspended)" - a thread suspended inside malloc holds the allocator's lock,
 * so a query that allocates can deadlock the runtime that suspended it. This program
 * replaces malloc, calloc and realloc (the C library's own functions call the
 * replacement too) with counting wrappers around the C library's, and counts what each
 * query makes on a thread that has never called libvirtmem before (the first call of a
 * thread is where per-thread state would be set up), for a host over this process's real
 * memory and one over a simulated space, for the host's own memory, free memory, another
 * allocator's memory and the error cases. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "virtmem.h"
#include "check.h"

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);

/* Allocations made by this thread while counting. */
static __thread int counting;
static __thread long allocations;

void *malloc(size_t size)
{
    if (counting)
        allocations++;
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    if (counting)
        allocations++;
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
    if (counting)
        allocations++;
    return __libc_realloc(p, size);
}

#define M(obj, method, ...) ((obj)->lpVtbl->method((obj), __VA_ARGS__))

struct job {
    IHostMemoryManager *host;
    void *own;
    void *foreign;
    long made;
    int answers_ok;
};

/* Every kind of query, on a thread of its own (its first call into libvirtmem). */
static void *query_all(void *arg)
{
    struct job *j = arg;
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n = 0;
    int ok = 1;
    counting = 1;
    ok &= M(j->host, VirtualQuery, j->own, &mbi, sizeof mbi, &n) == S_OK && n == sizeof mbi;
    ok &= mbi.State == MEM_COMMIT;
    /* (Free or someone else's memory: the answer depends on the space, the count not.) */
    M(j->host, VirtualQuery, (char *)j->own + 0x10000000, &mbi, sizeof mbi, &n);
    M(j->host, VirtualQuery, j->foreign, &mbi, sizeof mbi, &n);
    ok &= M(j->host, VirtualQuery, j->own, &mbi, 10, &n) != S_OK && n == 0;
    ok &= M(j->host, VirtualQuery, (void *)UINTPTR_MAX, &mbi, sizeof mbi, &n) != S_OK;
    counting = 0;
    j->made = allocations;
    j->answers_ok = ok;
    return NULL;
}

static void check_host(IHostMemoryManager *h, void *foreign, const char *what)
{
    struct job j;
    memset(&j, 0, sizeof j);
    j.host = h;
    j.foreign = foreign;
    CHECK(M(h, VirtualAlloc, NULL, 0x10000, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &j.own) == S_OK,
          "%s: VirtualAlloc", what);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, query_all, &j) == 0, "%s: thread", what);
    pthread_join(t, NULL);
    CHECK(j.answers_ok, "%s: the queries answered as expected", what);
    CHECK(j.made == 0, "%s: VirtualQuery on a fresh thread made %ld allocations", what, j.made);
    CHECK(M(h, VirtualFree, j.own, 0, MEM_RELEASE) == S_OK, "%s: VirtualFree", what);
}

int main(void)
{
    IHostMemoryManager *real = NULL;
    CHECK(VirtmemCreateHostMemoryManager(64 << 20, &real) == S_OK, "real host");
    static char data[64];
    check_host(real, data, "real memory");
    real->lpVtbl->Release(real);

    VIRTMEM_HOST_CONFIG c;
    CHECK(VirtmemHostConfigInit(64 << 20, &c) == S_OK, "config");
    c.dwFlags |= VIRTMEM_HOST_SIMULATED;
    IHostMemoryManager *sim = NULL;
    CHECK(VirtmemCreateHostMemoryManagerEx(&c, &sim) == S_OK, "simulated host");
    check_host(sim, data, "simulated space");
    sim->lpVtbl->Release(sim);
    return check_summary();
}
