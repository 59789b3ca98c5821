/* shootdown.c - what this machine charges a thread for dropping pages while another
 * thread of its process runs on another CPU (a TLB shootdown), without virtmem.
 *
 * Each loop step is the kernel side of an allocation lifecycle's steady state, in one
 * 1 MiB mapping of the thread's own: write one byte to each of 16 pages (16 page faults,
 * each taking a zeroed page) and drop the pages again with MADV_DONTNEED. Dropping pages
 * that may be cached in another CPU's TLB makes the kernel interrupt that CPU and wait
 * for it; the kernel does so for every CPU that has the process's address space loaded.
 *
 * Four runs, one after another, each timing the same loop on one thread:
 *   alone     no other thread in the process
 *   sibling   a second thread of this process spins in user space, touching no memory
 *   process   a second *process* spins instead (no shared address space)
 *   untouched as sibling, but the loop only installs and removes guard markers on pages
 *             that are never written (MADV_GUARD_INSTALL/REMOVE, Linux 6.13+): nothing
 *             is dropped, so nothing needs flushing
 * sibling / alone is the price of the shootdown per step (process / alone should be
 * about 1: the CPUs themselves do not slow each other down).
 *
 * Build: gcc -O2 -pthread shootdown.c -o shootdown
 * Run:   ./shootdown [steps]     (default 50000)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif

#define PAGE 4096
#define PAGES 16

static atomic_int stop_spinning;

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *spin(void *unused) {
    (void)unused;
    while (!atomic_load_explicit(&stop_spinning, memory_order_relaxed)) {
    }
    return NULL;
}

/* Microseconds per step of `steps` steps; `untouched` selects the guard-marker loop. */
static double steps_took(long steps, int untouched) {
    char *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    double start = seconds();
    for (long i = 0; i < steps; i++) {
        if (untouched) {
            if (madvise(m, PAGES * PAGE, MADV_GUARD_INSTALL) || madvise(m, PAGES * PAGE, MADV_GUARD_REMOVE)) {
                perror("madvise(MADV_GUARD_*) (Linux 6.13+)");
                exit(1);
            }
        } else {
            for (int p = 0; p < PAGES; p++)
                ((volatile char *)m)[p * PAGE] = 1;
            if (madvise(m, PAGES * PAGE, MADV_DONTNEED)) {
                perror("madvise(MADV_DONTNEED)");
                exit(1);
            }
        }
    }
    double took = seconds() - start;
    munmap(m, 1 << 20);
    return took / steps * 1e6;
}

/* Time the loop with a spinning sibling thread running. */
static double beside_sibling(long steps, int untouched) {
    pthread_t t;
    atomic_store(&stop_spinning, 0);
    if (pthread_create(&t, NULL, spin, NULL)) {
        perror("pthread_create");
        exit(1);
    }
    usleep(10000); /* let it start spinning on the other CPU */
    double us = steps_took(steps, untouched);
    atomic_store(&stop_spinning, 1);
    pthread_join(t, NULL);
    return us;
}

/* Time the loop with a spinning child process running. */
static double beside_process(long steps) {
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        exit(1);
    }
    if (child == 0) {
        for (;;) {
        }
    }
    usleep(10000);
    double us = steps_took(steps, 0);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return us;
}

int main(int argc, char **argv) {
    long steps = argc > 1 ? atol(argv[1]) : 50000;
    double alone = steps_took(steps, 0);
    double sibling = beside_sibling(steps, 0);
    double process = beside_process(steps);
    double untouched_alone = steps_took(steps, 1);
    double untouched = beside_sibling(steps, 1);
    printf("16 page faults + MADV_DONTNEED, per step:\n");
    printf("  alone                  %8.2f us\n", alone);
    printf("  beside a sibling       %8.2f us  (%.2fx alone)\n", sibling, sibling / alone);
    printf("  beside another process %8.2f us  (%.2fx alone)\n", process, process / alone);
    printf("guard markers on untouched pages (install + remove), per step:\n");
    printf("  alone                  %8.2f us\n", untouched_alone);
    printf("  beside a sibling       %8.2f us  (%.2fx alone)\n", untouched, untouched / untouched_alone);
    return 0;
}
