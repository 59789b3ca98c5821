/* test_flush_write_buffers.c - FlushProcessWriteBuffers from C: "Flushes the write queue of
 * each processor that is running a thread of the current process." Called from several
 * threads at once, every call returns, sets no last error and leaves errno alone; and it
 * is the heavy side of an asymmetric barrier: in the store-buffering litmus test (thread A:
 * x = 1, compiler barrier, read y; thread B: y = 1, FlushProcessWriteBuffers, read x) both
 * reads never see 0. */
#define _GNU_SOURCE /* CPU_SET, pthread_setaffinity_np */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "virtmem.h"
#include "check.h"

enum { FLUSHERS = 4, CALLS = 200, ROUNDS = 5000 };

static atomic_int returned;

static void *flusher(void *arg)
{
    (void)arg;
    for (int i = 0; i < CALLS; i++) {
        FlushProcessWriteBuffers();
        atomic_fetch_add_explicit(&returned, 1, memory_order_relaxed);
    }
    return NULL;
}

/* Each round's two variables on cache lines of their own. */
struct line {
    _Alignas(128) atomic_int v;
};

static struct line xs[ROUNDS], ys[ROUNDS];
static int seen_by_a[ROUNDS], seen_by_b[ROUNDS];
static atomic_long arrivals;

/* A spinning barrier of two threads: the n-th crossing (from 1) passes once both arrived. */
static void cross(long n)
{
    unsigned spins = 0;
    atomic_fetch_add_explicit(&arrivals, 1, memory_order_acq_rel);
    while (atomic_load_explicit(&arrivals, memory_order_acquire) < 2 * n)
        if (++spins % 4096 == 0)
            sched_yield(); /* the other thread is not running: let it */
}

/* A few spins, varied from round to round (xorshift), so that the two threads' accesses
 * meet at slightly different offsets. */
static void jitter(unsigned *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    for (unsigned i = 0; i < *state % 4; i++)
        __asm__ __volatile__("" ::: "memory");
}

/* Two CPUs this process may run on (-1 if not two): the litmus threads are pinned one to
 * each, so that a busy machine cannot put both on one CPU, where they only take turns. */
static int cpu_a = -1, cpu_b = -1;

static void pin(int cpu)
{
    cpu_set_t set;
    if (cpu < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *thread_a(void *arg)
{
    unsigned rng = 0x9E3779B9u;
    (void)arg;
    pin(cpu_a);
    /* Each thread holds in its cache the variables it will read, and stores into lines
     * the other holds: a store then waits in the store buffer, where a read can pass it. */
    for (int i = 0; i < ROUNDS; i++)
        atomic_store_explicit(&ys[i].v, 0, memory_order_relaxed);
    for (int i = 0; i < ROUNDS; i++) {
        cross(i + 1);
        jitter(&rng);
        atomic_store_explicit(&xs[i].v, 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst); /* a compiler barrier only */
        seen_by_a[i] = atomic_load_explicit(&ys[i].v, memory_order_relaxed);
    }
    return NULL;
}

int main(void)
{
    pthread_t threads[FLUSHERS], a;
    cpu_set_t allowed;
    int both_zero = 0;
    unsigned rng = 0x85EBCA6Bu;

    SetLastError(1234);
    errno = 4321;
    FlushProcessWriteBuffers();
    CHECK(GetLastError() == 1234, "the last error is left alone: %u", GetLastError());
    CHECK(errno == 4321, "errno is left alone: %d", errno);

    for (int t = 0; t < FLUSHERS; t++)
        CHECK(pthread_create(&threads[t], NULL, flusher, NULL) == 0, "thread %d", t);
    for (int t = 0; t < FLUSHERS; t++)
        pthread_join(threads[t], NULL);
    CHECK(atomic_load(&returned) == FLUSHERS * CALLS, "every call returned: %d", atomic_load(&returned));

    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &allowed)) {
                if (cpu_a < 0)
                    cpu_a = c;
                else if (cpu_b < 0)
                    cpu_b = c;
            }
    if (cpu_b < 0)
        cpu_a = -1;
    pin(cpu_b);
    for (int i = 0; i < ROUNDS; i++)
        atomic_store_explicit(&xs[i].v, 0, memory_order_relaxed);
    CHECK(pthread_create(&a, NULL, thread_a, NULL) == 0, "thread A");
    for (int i = 0; i < ROUNDS; i++) {
        cross(i + 1);
        jitter(&rng);
        atomic_store_explicit(&ys[i].v, 1, memory_order_relaxed);
        FlushProcessWriteBuffers();
        seen_by_b[i] = atomic_load_explicit(&xs[i].v, memory_order_relaxed);
    }
    pthread_join(a, NULL);
    for (int i = 0; i < ROUNDS; i++)
        both_zero += seen_by_a[i] == 0 && seen_by_b[i] == 0;
    CHECK(both_zero == 0, "both reads saw 0 in %d of %d rounds", both_zero, ROUNDS);

    return check_summary();
}
