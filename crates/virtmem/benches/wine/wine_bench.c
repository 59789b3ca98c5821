/* Win32 virtual-memory costs under Wine (or Windows), for comparison with virtmem's
 * benchmarks. Build: x86_64-w64-mingw32-gcc -O2 wine_bench.c -o wine_bench.exe
 * Run:   WINEDEBUG=-all WINEPREFIX=/tmp/wpfx-bench wine wine_bench.exe
 * Prints one "name ns" line per figure (medians of several runs). */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double freq_ns;

static double now_ns(void) {
    LARGE_INTEGER t;
    QueryPerformanceCounter(&t);
    return (double)t.QuadPart * freq_ns;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    return v[n / 2];
}

#define TIB ((SIZE_T)1 << 40)
#define GRAN 0x10000
#define RUNS 5

static void fail(const char *what) {
    printf("FAILED %s: %lu\n", what, GetLastError());
    exit(1);
}

/* The `watch` benchmark's generator (benches/common: xorshift64*), so that the same
 * pages are written. */
static unsigned long long rng;

static size_t below(size_t n) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (size_t)((rng * 0x2545F4914F6CDD1DULL) >> 11) % n;
}

#define HEAP ((SIZE_T)256 << 20)
#define HEAP_PAGES (HEAP / 4096)

/* GetWriteWatch / ResetWriteWatch over a whole 256 MiB MEM_WRITE_WATCH heap, committed,
 * with k pages written since the last reset (the `watch` benchmark's groups, its pages:
 * k distinct pages drawn with seed 0x3a7cb00f + k). Each figure is the median of RUNS
 * runs of the mean of CALLS calls; in the forms that reset, the k pages are written
 * again before each call, outside the clock. */
static void watch(void) {
    enum { CALLS = 50 };
    static PVOID addrs[HEAP_PAGES];
    static unsigned char chosen[HEAP_PAGES];
    static size_t pages[4096];
    static const size_t ks[] = {0, 64, 4096};
    double t[RUNS];
    char *heap = VirtualAlloc(NULL, HEAP, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_NOACCESS);
    if (!heap || !VirtualAlloc(heap, HEAP, MEM_COMMIT, PAGE_READWRITE)) fail("write-watched heap");
    for (int ki = 0; ki < 3; ki++) {
        size_t k = ks[ki], n = 0;
        memset(chosen, 0, sizeof chosen);
        rng = 0x3a7cb00fULL + k;
        while (n < k) {
            size_t p = below(HEAP_PAGES);
            if (!chosen[p]) chosen[p] = 1, n++;
        }
        n = 0;
        for (size_t p = 0; p < HEAP_PAGES; p++)
            if (chosen[p]) pages[n++] = p;
        for (int form = 0; form < 3; form++) {
            for (int r = 0; r < RUNS; r++) {
                double total = 0;
                if (ResetWriteWatch(heap, HEAP)) fail("ResetWriteWatch");
                for (size_t i = 0; i < k; i++) heap[pages[i] * 4096] = 1;
                for (int c = 0; c < CALLS; c++) {
                    ULONG_PTR count = HEAP_PAGES;
                    ULONG gran;
                    if (form > 0 && c > 0)
                        for (size_t i = 0; i < k; i++) heap[pages[i] * 4096] = 1;
                    double a = now_ns();
                    UINT e = form == 2 ? ResetWriteWatch(heap, HEAP)
                                       : GetWriteWatch(form == 1 ? WRITE_WATCH_FLAG_RESET : 0, heap, HEAP,
                                                       addrs, &count, &gran);
                    total += now_ns() - a;
                    if (e) fail("GetWriteWatch/ResetWriteWatch");
                    if (form < 2 && count != k) fail("GetWriteWatch count");
                }
                t[r] = total / CALLS;
            }
            static const char *names[] = {"watch_get", "watch_get_reset", "watch_reset"};
            printf("%s_%u %.0f\n", names[form], (unsigned)k, median(t, RUNS));
        }
    }
    VirtualFree(heap, 0, MEM_RELEASE);
}

int main(void) {
    LARGE_INTEGER f;
    QueryPerformanceFrequency(&f);
    freq_ns = 1e9 / (double)f.QuadPart;
    double t[RUNS];
    MEMORY_BASIC_INFORMATION mbi;

    /* 1 TiB: reserve, commit 64 KiB in the middle, query inside, decommit, release. */
    double rs[RUNS], cm[RUNS], qu[RUNS], dc[RUNS], rl[RUNS];
    for (int i = 0; i < RUNS; i++) {
        double a = now_ns();
        char *p = VirtualAlloc(NULL, TIB, MEM_RESERVE, PAGE_NOACCESS);
        double b = now_ns();
        if (!p) fail("reserve 1 TiB");
        char *mid = p + TIB / 2;
        if (!VirtualAlloc(mid, GRAN, MEM_COMMIT, PAGE_READWRITE)) fail("commit");
        double c = now_ns();
        if (!VirtualQuery(mid + 2 * GRAN, &mbi, sizeof mbi)) fail("query");
        double d = now_ns();
        if (!VirtualFree(mid, GRAN, MEM_DECOMMIT)) fail("decommit");
        double e = now_ns();
        if (!VirtualFree(p, 0, MEM_RELEASE)) fail("release");
        double g = now_ns();
        rs[i] = b - a; cm[i] = c - b; qu[i] = d - c; dc[i] = e - d; rl[i] = g - e;
    }
    printf("tib_reserve %.0f\n", median(rs, RUNS));
    printf("tib_commit %.0f\n", median(cm, RUNS));
    printf("tib_query %.0f\n", median(qu, RUNS));
    printf("tib_decommit %.0f\n", median(dc, RUNS));
    printf("tib_release %.0f\n", median(rl, RUNS));

    /* Per call with 1000 live 64 KiB reservations (first page committed, a hole after each). */
    enum { LIVE = 1000, N = 1000 };
    char *span = VirtualAlloc(NULL, 2 * LIVE * (SIZE_T)GRAN, MEM_RESERVE, PAGE_NOACCESS);
    if (!span) fail("span");
    VirtualFree(span, 0, MEM_RELEASE);
    char *bases[LIVE];
    for (int i = 0; i < LIVE; i++) {
        bases[i] = VirtualAlloc(span + 2 * (SIZE_T)i * GRAN, GRAN, MEM_RESERVE, PAGE_NOACCESS);
        if (!bases[i] || !VirtualAlloc(bases[i], 4096, MEM_COMMIT, PAGE_READWRITE)) fail("populate");
    }
    static char *made[N];
    for (int r = 0; r < RUNS; r++) {
        double a = now_ns();
        for (int i = 0; i < N; i++) made[i] = VirtualAlloc(NULL, GRAN, MEM_RESERVE, PAGE_NOACCESS);
        t[r] = (now_ns() - a) / N;
        for (int i = 0; i < N; i++) VirtualFree(made[i], 0, MEM_RELEASE);
    }
    printf("ops_reserve %.0f\n", median(t, RUNS));
    for (int r = 0; r < RUNS; r++) {
        double a = now_ns();
        for (int i = 0; i < N; i++) VirtualAlloc(bases[i] + 4096, 4096, MEM_COMMIT, PAGE_READWRITE);
        t[r] = (now_ns() - a) / N;
        for (int i = 0; i < N; i++) VirtualFree(bases[i] + 4096, 4096, MEM_DECOMMIT);
    }
    printf("ops_commit %.0f\n", median(t, RUNS));
    for (int r = 0; r < RUNS; r++) {
        double a = now_ns();
        for (int i = 0; i < N; i++) VirtualFree(bases[i], 4096, MEM_DECOMMIT);
        t[r] = (now_ns() - a) / N;
        for (int i = 0; i < N; i++) VirtualAlloc(bases[i], 4096, MEM_COMMIT, PAGE_READWRITE);
    }
    printf("ops_decommit %.0f\n", median(t, RUNS));
    DWORD old;
    for (int r = 0; r < RUNS; r++) {
        double a = now_ns();
        for (int i = 0; i < N; i++) VirtualProtect(bases[i], 4096, PAGE_READONLY, &old);
        t[r] = (now_ns() - a) / N;
        for (int i = 0; i < N; i++) VirtualProtect(bases[i], 4096, PAGE_READWRITE, &old);
    }
    printf("ops_protect %.0f\n", median(t, RUNS));
    for (int r = 0; r < RUNS; r++) {
        double a = now_ns();
        for (int i = 0; i < N; i++) VirtualFree(bases[i], 0, MEM_RELEASE);
        t[r] = (now_ns() - a) / N;
        for (int i = 0; i < N; i++) {
            VirtualAlloc(bases[i], GRAN, MEM_RESERVE, PAGE_NOACCESS);
            VirtualAlloc(bases[i], 4096, MEM_COMMIT, PAGE_READWRITE);
        }
    }
    printf("ops_release %.0f\n", median(t, RUNS));
    for (int r = 0; r < RUNS; r++) {
        double a = now_ns();
        for (int i = 0; i < N; i++) VirtualQuery(bases[(i * 7919) % LIVE] + (i % 32) * 4096, &mbi, sizeof mbi);
        t[r] = (now_ns() - a) / N;
    }
    printf("ops_query %.0f\n", median(t, RUNS));
    for (int i = 0; i < LIVE; i++) VirtualFree(bases[i], 0, MEM_RELEASE);

    /* VirtualQuery with up to 10^5 live regions: up to 10^5 reservations of 64 KiB
     * (Wine runs out of kernel mappings before; the count reached is printed). */
    enum { Q = 100000 };
    static char *qb[Q];
    int q = 0;
    while (q < Q && (qb[q] = VirtualAlloc(NULL, GRAN, MEM_RESERVE, PAGE_NOACCESS))) q++;
    printf("query_regions %d\n", q);
    for (int r = 0; r < RUNS; r++) {
        double a = now_ns();
        for (int i = 0; i < N; i++) VirtualQuery(qb[(i * 7919) % q] + (i % 16) * 4096, &mbi, sizeof mbi);
        t[r] = (now_ns() - a) / N;
    }
    printf("query_many %.0f\n", median(t, RUNS));
    for (int i = 0; i < q; i++) VirtualFree(qb[i], 0, MEM_RELEASE);

    watch();
    return 0;
}
