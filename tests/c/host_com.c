/* host_com.c - the host memory manager through its COM vtables (libvirtmem).
 *
 * Drives IHostMemoryManager, IHostMalloc and ICLRMemoryNotificationCallback the way a
 * runtime written in C does (This->lpVtbl->Method(This, ...)), and provokes every HRESULT
 * of the host contract: S_OK, E_OUTOFMEMORY, E_INVALIDARG, E_POINTER, E_FAIL,
 * HOST_E_INVALIDOPERATION, HOST_E_CLRNOTAVAILABLE, HOST_E_TIMEOUT, HOST_E_NOT_OWNER,
 * HOST_E_ABANDONED, plus E_NOINTERFACE and HRESULT_FROM_WIN32 codes. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "virtmem.h"
#include "check.h"

#define KB ((SIZE_T)1024)
#define MB (1024 * KB)
#define PAGE ((SIZE_T)4096)
#define HR_WIN32(code) ((HRESULT)(0x80070000u | (code)))

#define CHECK_HR(call, expected)                                                                   \
    do {                                                                                           \
        HRESULT check_hr_ = (call);                                                                \
        CHECK(check_hr_ == (HRESULT)(expected), "%s: expected 0x%08x, got 0x%08x", #call,          \
              (unsigned)(expected), (unsigned)check_hr_);                                          \
    } while (0)

/* Calls through the vtable. */
#define M(obj, method, ...) ((obj)->lpVtbl->method((obj), __VA_ARGS__))
#define ADDREF(obj) ((obj)->lpVtbl->AddRef(obj))
#define RELEASE(obj) ((obj)->lpVtbl->Release(obj))

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static VIRTMEM_HOST_STATS stats(IHostMemoryManager *h)
{
    VIRTMEM_HOST_STATS s;
    memset(&s, 0, sizeof s);
    CHECK_HR(VirtmemHostGetStats(h, &s), S_OK);
    return s;
}

/* Wait (50 s at least, under the waiting tests' 60 s wait) until `n` requests wait for
 * memory: the bound only ends a run where they never do, and a loaded machine may take
 * seconds to run the requesting thread. */
static int wait_for_waiters(IHostMemoryManager *h, DWORD n)
{
    for (int i = 0; i < 50000; i++) {
        if (stats(h).Waiting >= n)
            return 1;
        sleep_ms(1);
    }
    return 0;
}

/* A simulated-memory manager with a budget and a process-critical wait. */
static IHostMemoryManager *simulated(SIZE_T budget, DWORD wait_ms)
{
    VIRTMEM_HOST_CONFIG c;
    CHECK_HR(VirtmemHostConfigInit(budget, &c), S_OK);
    c.dwFlags = VIRTMEM_HOST_SIMULATED;
    c.SoftReserve = 0;
    c.EmergencyReserve = 0;
    c.ProcessCriticalWaitMs = wait_ms;
    IHostMemoryManager *h = NULL;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &h), S_OK);
    return h;
}

static void test_factory_and_iunknown(void)
{
    IHostMemoryManager *h = (IHostMemoryManager *)0x1;
    CHECK_HR(VirtmemCreateHostMemoryManager(0, &h), E_INVALIDARG);
    CHECK(h == NULL, "*out is NULL on failure");
    CHECK_HR(VirtmemCreateHostMemoryManager(MB, NULL), E_POINTER);
    CHECK_HR(VirtmemCreateHostMemoryManager(MB, &h), S_OK);
    CHECK(h != NULL && h->lpVtbl != NULL, "an object");

    void *p = NULL;
    CHECK_HR(M(h, QueryInterface, &IID_IHostMemoryManager, &p), S_OK);
    CHECK(p == h, "same object");
    CHECK_HR(M(h, QueryInterface, &IID_IUnknown, &p), S_OK);
    CHECK(p == h, "same object as IUnknown");
    p = (void *)0x1;
    CHECK_HR(M(h, QueryInterface, &IID_IHostMalloc, &p), E_NOINTERFACE);
    CHECK(p == NULL, "*ppv NULL for E_NOINTERFACE");
    CHECK_HR(M(h, QueryInterface, &IID_ICLRMemoryNotificationCallback, &p), E_NOINTERFACE);
    CHECK_HR(M(h, QueryInterface, &IID_IUnknown, NULL), E_POINTER);
    p = (void *)0x1;
    CHECK_HR(M(h, QueryInterface, NULL, &p), E_POINTER);
    CHECK(p == NULL, "*ppv NULL for a NULL riid");
    /* A NULL or foreign This: refused, and *ppv is NULL all the same. */
    p = (void *)0x1;
    CHECK_HR(h->lpVtbl->QueryInterface(NULL, &IID_IUnknown, &p), E_POINTER);
    CHECK(p == NULL, "*ppv NULL for a NULL This");
    struct {
        const void *lpVtbl;
    } foreign = {&foreign};
    p = (void *)0x1;
    CHECK_HR(h->lpVtbl->QueryInterface((IHostMemoryManager *)&foreign, &IID_IUnknown, &p), E_INVALIDARG);
    CHECK(p == NULL, "*ppv NULL for a foreign This");
    /* Two references from QueryInterface, one from the factory. */
    CHECK(ADDREF(h) == 4, "AddRef counts");
    CHECK(RELEASE(h) == 3, "Release counts");
    CHECK(RELEASE(h) == 2, "Release counts");
    CHECK(RELEASE(h) == 1, "Release counts");

    /* A config that is not one. */
    IHostMemoryManager *bad = (IHostMemoryManager *)0x1;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(NULL, &bad), E_INVALIDARG);
    CHECK(bad == NULL, "*out NULL");
    VIRTMEM_HOST_CONFIG c;
    CHECK_HR(VirtmemHostConfigInit(MB, NULL), E_POINTER);
    CHECK_HR(VirtmemHostConfigInit(MB, &c), S_OK);
    CHECK(c.cbSize == sizeof c && c.Budget == MB && c.SoftReserve == MB / 16 && c.LowPercent == 90,
          "defaults");
    c.cbSize = 8;
    bad = (IHostMemoryManager *)0x1;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &bad), E_INVALIDARG);
    CHECK(bad == NULL, "*out NULL");
    CHECK_HR(VirtmemHostConfigInit(MB, &c), S_OK);
    c.dwFlags = 0x100;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &bad), E_INVALIDARG);
    CHECK_HR(VirtmemHostConfigInit(MB, &c), S_OK);
    c.HighPercent = 95;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &bad), E_INVALIDARG);
    /* A hysteresis that makes a level unreachable (65 % would stay High). */
    CHECK_HR(VirtmemHostConfigInit(MB, &c), S_OK);
    c.LowPercent = 60;
    c.HighPercent = 50;
    c.Hysteresis = 20;
    bad = (IHostMemoryManager *)0x1;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &bad), E_INVALIDARG);
    CHECK(bad == NULL, "*out NULL");
    /* An exited simulated process, an unknown handle. */
    HANDLE proc = VirtmemCreateProcess();
    CHECK(TerminateProcess(proc, 0), "terminate");
    CHECK_HR(VirtmemHostConfigInit(MB, &c), S_OK);
    c.hProcess = proc;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &bad), HR_WIN32(ERROR_ACCESS_DENIED));
    CHECK(CloseHandle(proc), "close");
    c.hProcess = (HANDLE)0x123450;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &bad), HR_WIN32(ERROR_INVALID_HANDLE));

    /* The wrong kind of object is refused, not misused. */
    IHostMalloc *heap = NULL;
    CHECK_HR(M(h, CreateMalloc, 0, &heap), S_OK);
    CHECK_HR(VirtmemHostStart((IHostMemoryManager *)heap), E_INVALIDARG);
    CHECK_HR(VirtmemHostStart(NULL), E_POINTER);
    CHECK(RELEASE(heap) == 0, "heap gone");
    CHECK(RELEASE(h) == 0, "manager gone");
}

static void test_virtual_memory(void)
{
    IHostMemoryManager *h = NULL;
    CHECK_HR(VirtmemCreateHostMemoryManager(256 * KB, &h), S_OK);
    void *p = (void *)0x1;
    CHECK_HR(M(h, VirtualAlloc, NULL, 16 * PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK(p != NULL, "memory");
    memset(p, 0x5a, 16 * PAGE); /* real memory */
    DWORD load = 0;
    SIZE_T avail = 0;
    CHECK_HR(M(h, GetMemoryLoad, &load, &avail), S_OK);
    CHECK(load == 25 && avail == 192 * KB, "load %u avail %zu", (unsigned)load, (size_t)avail);
    CHECK_HR(M(h, GetMemoryLoad, NULL, &avail), E_POINTER);
    CHECK_HR(M(h, GetMemoryLoad, &load, NULL), E_POINTER);

    /* Over the budget, and argument errors. */
    void *q = (void *)0x1;
    CHECK_HR(M(h, VirtualAlloc, NULL, 256 * KB, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q), E_OUTOFMEMORY);
    CHECK(q == NULL, "*ppMem NULL on failure");
    CHECK_HR(M(h, VirtualAlloc, NULL, PAGE, MEM_COMMIT, PAGE_READWRITE, 3, &q), E_INVALIDARG);
    CHECK_HR(M(h, VirtualAlloc, NULL, PAGE, MEM_COMMIT, PAGE_READWRITE, -1, &q), E_INVALIDARG);
    CHECK_HR(M(h, VirtualAlloc, NULL, 0, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q), E_INVALIDARG);
    CHECK_HR(M(h, VirtualAlloc, NULL, PAGE, MEM_COMMIT, 0x3, eTaskCritical, &q), E_INVALIDARG);
    CHECK_HR(M(h, VirtualAlloc, NULL, PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, NULL), E_POINTER);
    CHECK(stats(h).Used == 16 * PAGE, "a refused call charges nothing");

    /* VirtualQuery. */
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n = 99;
    CHECK_HR(M(h, VirtualQuery, (char *)p + 5, &mbi, sizeof mbi, &n), S_OK);
    CHECK(n == sizeof mbi && mbi.AllocationBase == p && mbi.State == MEM_COMMIT && mbi.Protect == PAGE_READWRITE &&
              mbi.RegionSize == 16 * PAGE,
          "query");
    CHECK_HR(M(h, VirtualQuery, p, &mbi, 10, &n), HR_WIN32(ERROR_BAD_LENGTH));
    CHECK(n == 0, "*pResult 0 on failure");
    CHECK_HR(M(h, VirtualQuery, p, &mbi, sizeof mbi, NULL), E_POINTER);
    CHECK_HR(M(h, VirtualQuery, p, NULL, sizeof mbi, &n), E_POINTER);

    /* VirtualProtect. */
    DWORD old = 0;
    CHECK_HR(M(h, VirtualProtect, p, PAGE, PAGE_READONLY, &old), S_OK);
    CHECK(old == PAGE_READWRITE, "old protection");
    CHECK_HR(M(h, VirtualProtect, p, PAGE, PAGE_READWRITE, NULL), E_POINTER);
    CHECK_HR(M(h, VirtualProtect, p, PAGE, PAGE_READWRITE, &old), S_OK);
    CHECK(old == PAGE_READONLY, "old protection");

    /* Memory the host did not allocate: refused and left untouched. */
    char *foreign = malloc(3 * PAGE);
    memset(foreign, 0x11, 3 * PAGE);
    char local[64] = {0};
    void *mine = VirtualAlloc(NULL, PAGE, MEM_COMMIT, PAGE_READWRITE); /* libvirtmem, not the host */
    void *targets[] = {foreign, local, mine, (void *)test_virtual_memory};
    for (unsigned i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        void *t = targets[i];
        CHECK_HR(M(h, VirtualFree, t, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
        CHECK_HR(M(h, VirtualFree, t, PAGE, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
        CHECK_HR(M(h, VirtualQuery, t, &mbi, sizeof mbi, &n), HOST_E_INVALIDOPERATION);
        CHECK_HR(M(h, VirtualProtect, t, 1, PAGE_NOACCESS, &old), HOST_E_INVALIDOPERATION);
        CHECK_HR(M(h, VirtualAlloc, t, 1, MEM_COMMIT, PAGE_READONLY, eTaskCritical, &q), HOST_E_INVALIDOPERATION);
    }
    foreign[3 * PAGE - 1] = 0x22; /* still mapped and writable */
    CHECK(foreign[0] == 0x11, "untouched");
    *(volatile char *)mine = 1;
    free(foreign);
    CHECK(VirtualFree(mine, 0, MEM_RELEASE), "libvirtmem frees its own");

    /* VirtualFree: errors mapped with HRESULT_FROM_WIN32, then refunds. */
    CHECK_HR(M(h, VirtualFree, (char *)p + PAGE, 0, MEM_RELEASE), HR_WIN32(ERROR_INVALID_ADDRESS));
    CHECK_HR(M(h, VirtualFree, p, PAGE, MEM_RELEASE), E_INVALIDARG);
    CHECK_HR(M(h, VirtualFree, p, 8 * PAGE, MEM_DECOMMIT), S_OK);
    CHECK(stats(h).Used == 8 * PAGE, "decommit refunds");
    CHECK_HR(M(h, VirtualFree, p, 0, MEM_RELEASE), S_OK);
    CHECK_HR(M(h, GetMemoryLoad, &load, &avail), S_OK);
    CHECK(load == 0 && avail == 256 * KB, "release refunds");
    CHECK(RELEASE(h) == 0, "gone");
}

typedef int (*answer_fn)(void);

static void test_heaps(void)
{
    IHostMemoryManager *h = NULL;
    CHECK_HR(VirtmemCreateHostMemoryManager(4 * MB, &h), S_OK);
    IHostMalloc *m = NULL;
    CHECK_HR(M(h, CreateMalloc, MALLOC_THREADSAFE | MALLOC_EXECUTABLE, &m), S_OK);
    CHECK_HR(M(h, CreateMalloc, 0x8, &m), E_INVALIDARG);
    CHECK(m == NULL, "*ppMalloc NULL on failure");
    CHECK_HR(M(h, CreateMalloc, MALLOC_THREADSAFE, NULL), E_POINTER);
    CHECK_HR(M(h, CreateMalloc, MALLOC_THREADSAFE | MALLOC_EXECUTABLE, &m), S_OK);

    void *i = NULL;
    CHECK_HR(M(m, QueryInterface, &IID_IHostMalloc, &i), S_OK);
    CHECK(i == m, "same heap");
    CHECK(RELEASE(m) == 1, "one reference left");
    CHECK_HR(M(m, QueryInterface, &IID_IHostMemoryManager, &i), E_NOINTERFACE);
    CHECK(i == NULL, "NULL");

    /* Blocks are real memory, distinct and aligned. */
    void *blocks[200];
    for (int k = 0; k < 200; k++) {
        SIZE_T size = (SIZE_T)(1 + (k * 37) % 3000);
        CHECK_HR(M(m, Alloc, size, eTaskCritical, &blocks[k]), S_OK);
        CHECK(((uintptr_t)blocks[k] & 15) == 0, "aligned");
        memset(blocks[k], k, size);
    }
    for (int k = 0; k < 200; k++) {
        SIZE_T size = (SIZE_T)(1 + (k * 37) % 3000);
        unsigned char *b = blocks[k];
        CHECK(b[0] == (unsigned char)k && b[size - 1] == (unsigned char)k, "block %d intact", k);
    }
    CHECK(stats(h).HeapCommitted > 0 && stats(h).VirtualCommitted == 0, "heap pages are charged as heap");

    /* Executable blocks run. */
#if defined(__x86_64__)
    static const unsigned char code[] = {0xB8, 42, 0, 0, 0, 0xC3}; /* mov eax, 42; ret */
    void *fn = NULL;
    CHECK_HR(M(m, Alloc, sizeof code, eTaskCritical, &fn), S_OK);
    memcpy(fn, code, sizeof code);
    answer_fn f;
    memcpy(&f, &fn, sizeof f);
    CHECK(f() == 42, "executable heap");
    CHECK_HR(M(m, Free, fn), S_OK);
#endif

    /* Free: NULL, foreign, inside, twice. */
    CHECK_HR(M(m, Free, NULL), S_OK);
    void *foreign = malloc(64);
    CHECK_HR(M(m, Free, foreign), HOST_E_INVALIDOPERATION);
    free(foreign);
    CHECK_HR(M(m, Free, (char *)blocks[0] + 16), HOST_E_INVALIDOPERATION);
    CHECK_HR(M(m, Free, blocks[0]), S_OK);
    CHECK_HR(M(m, Free, blocks[0]), HOST_E_INVALIDOPERATION);
    for (int k = 1; k < 200; k++)
        CHECK_HR(M(m, Free, blocks[k]), S_OK);

    /* Alloc errors. */
    void *b = (void *)0x1;
    CHECK_HR(M(m, Alloc, 8 * MB, eTaskCritical, &b), E_OUTOFMEMORY);
    CHECK(b == NULL, "*ppMem NULL when refused");
    CHECK_HR(M(m, Alloc, 16, 7, &b), E_INVALIDARG);
    CHECK_HR(M(m, Alloc, 16, eTaskCritical, NULL), E_POINTER);

    /* DebugAlloc and the leak report. */
    void *d1 = NULL, *d2 = NULL;
    CHECK_HR(M(m, DebugAlloc, 40, eTaskCritical, (char *)__FILE__, __LINE__, &d1), S_OK);
    int line = __LINE__ + 1;
    CHECK_HR(M(m, DebugAlloc, 5000, eAppDomainCritical, (char *)"jit.c", line, &d2), S_OK);
    CHECK_HR(M(m, DebugAlloc, 8, eTaskCritical, (char *)"x.c", 1, NULL), E_POINTER);
    /* The report gives back the line as given, whatever the int (a negative "no line" too),
       and a NULL file name as "<unknown>". */
    void *d3 = NULL;
    CHECK_HR(M(m, DebugAlloc, 24, eTaskCritical, NULL, -7, &d3), S_OK);
    SIZE_T count = 0;
    CHECK_HR(VirtmemHostMallocLeaks(m, NULL, 0, &count), S_OK);
    CHECK(count == 3, "three live DebugAlloc blocks, got %zu", (size_t)count);
    VIRTMEM_HOST_LEAK leaks[4];
    CHECK_HR(VirtmemHostMallocLeaks(m, leaks, 4, &count), S_OK);
    int found = 0;
    for (SIZE_T k = 0; k < count; k++) {
        if (leaks[k].Address == d2)
            found += leaks[k].Size == 5000 && leaks[k].Line == line && strcmp(leaks[k].File, "jit.c") == 0;
        if (leaks[k].Address == d1)
            found += leaks[k].Size == 40 && strcmp(leaks[k].File, __FILE__) == 0;
        if (leaks[k].Address == d3) {
            CHECK(leaks[k].Line == -7, "the line given, got %d", leaks[k].Line);
            found += leaks[k].Size == 24 && leaks[k].Line == -7 && strcmp(leaks[k].File, "<unknown>") == 0;
        }
    }
    CHECK(found == 3, "file and line kept");
    CHECK_HR(M(m, Free, d3), S_OK);
    CHECK_HR(VirtmemHostMallocLeaks(m, leaks, 4, NULL), E_POINTER);
    CHECK_HR(M(m, Free, d1), S_OK);
    CHECK_HR(M(m, Free, d2), S_OK);
    CHECK_HR(VirtmemHostMallocLeaks(m, NULL, 0, &count), S_OK);
    CHECK(count == 0, "no leaks");

    /* The heap outlives the manager's last reference; dropping both gives everything back. */
    CHECK(RELEASE(h) == 0, "manager reference gone");
    CHECK_HR(M(m, Alloc, 100, eTaskCritical, &b), S_OK);
    CHECK_HR(M(m, Free, b), S_OK);
    CHECK(RELEASE(m) == 0, "heap gone");
}

/* An ICLRMemoryNotificationCallback implemented in C. */
typedef struct {
    ICLRMemoryNotificationCallback iface;
    int refs;
    int count;
    EMemoryAvailable levels[16];
    pthread_t threads[16];
} Callback;

static HRESULT cb_query(ICLRMemoryNotificationCallback *This, REFIID riid, void **ppv)
{
    (void)riid;
    *ppv = This;
    return S_OK;
}
static ULONG cb_add_ref(ICLRMemoryNotificationCallback *This) { return (ULONG)++((Callback *)This)->refs; }
static ULONG cb_release(ICLRMemoryNotificationCallback *This) { return (ULONG)--((Callback *)This)->refs; }
static HRESULT cb_notify(ICLRMemoryNotificationCallback *This, EMemoryAvailable level)
{
    Callback *cb = (Callback *)This;
    if (cb->count < 16) {
        cb->levels[cb->count] = level;
        cb->threads[cb->count] = pthread_self();
    }
    cb->count++;
    return S_OK;
}
static const ICLRMemoryNotificationCallbackVtbl CALLBACK_VTBL = {cb_query, cb_add_ref, cb_release, cb_notify};

typedef struct {
    IHostMemoryManager *h;
    SIZE_T size;
    EMemoryCriticalLevel level;
    void *mem;
    HRESULT hr;
    pthread_t self;
} Request;

static void *request(void *arg)
{
    Request *r = arg;
    r->self = pthread_self();
    r->hr = M(r->h, VirtualAlloc, NULL, r->size, MEM_COMMIT, PAGE_READWRITE, r->level, &r->mem);
    return NULL;
}

static void test_notifications(void)
{
    VIRTMEM_HOST_CONFIG c;
    CHECK_HR(VirtmemHostConfigInit(100 * PAGE, &c), S_OK);
    c.dwFlags = VIRTMEM_HOST_SIMULATED;
    c.LowPercent = 80;
    c.HighPercent = 40;
    c.Hysteresis = 10;
    IHostMemoryManager *h = NULL;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &h), S_OK);
    Callback cb;
    memset(&cb, 0, sizeof cb);
    cb.iface.lpVtbl = &CALLBACK_VTBL;
    cb.refs = 1;
    CHECK_HR(M(h, RegisterMemoryNotificationCallback, NULL), E_INVALIDARG);
    ICLRMemoryNotificationCallbackVtbl empty = {0};
    ICLRMemoryNotificationCallback nothing = {&empty};
    CHECK_HR(M(h, RegisterMemoryNotificationCallback, &nothing), E_INVALIDARG);
    CHECK_HR(M(h, RegisterMemoryNotificationCallback, &cb.iface), S_OK);
    CHECK(cb.refs == 2, "the host holds a reference");

    /* Crossing to Low happens on another thread: the callback runs there. */
    Request r = {h, 85 * PAGE, eTaskCritical, NULL, -1, 0};
    pthread_t t;
    pthread_create(&t, NULL, request, &r);
    pthread_join(t, NULL);
    CHECK_HR(r.hr, S_OK);
    CHECK(cb.count == 1 && cb.levels[0] == eMemoryAvailableLow, "Low once (%d)", cb.count);
    CHECK(cb.count >= 1 && pthread_equal(cb.threads[0], r.self), "from the crossing thread");
    /* No crossing, no call. */
    DWORD load;
    SIZE_T avail;
    CHECK_HR(M(h, GetMemoryLoad, &load, &avail), S_OK);
    CHECK(load == 85, "load %u", (unsigned)load);
    CHECK_HR(M(h, VirtualFree, r.mem, 10 * PAGE, MEM_DECOMMIT), S_OK); /* 75 %: still Low */
    CHECK(cb.count == 1, "hysteresis");
    CHECK_HR(M(h, VirtualFree, r.mem, 0, MEM_RELEASE), S_OK); /* 0 %: High */
    CHECK(cb.count == 2 && cb.levels[1] == eMemoryAvailableHigh, "High");
    CHECK(pthread_equal(cb.threads[1], pthread_self()), "from this thread");
    CHECK(RELEASE(h) == 0, "gone");
    CHECK(cb.refs == 1, "the host released its reference");
}

static BOOL reclaim(void *context, LPVOID address, SIZE_T size)
{
    (void)address;
    ++*(int *)context;
    return size <= 64 * KB;
}

static void test_views_and_tenants(void)
{
    int asked = 0;
    VIRTMEM_HOST_CONFIG c;
    CHECK_HR(VirtmemHostConfigInit(64 * PAGE, &c), S_OK);
    c.dwFlags = VIRTMEM_HOST_SIMULATED;
    c.SoftReserve = c.EmergencyReserve = 0;
    c.Reclaim = reclaim;
    c.ReclaimContext = &asked;
    IHostMemoryManager *a = NULL, *b = NULL;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &a), S_OK);

    CHECK_HR(M(a, NeedsVirtualAddressSpace, (void *)0x100000, 64 * KB), S_OK);
    CHECK_HR(M(a, NeedsVirtualAddressSpace, (void *)0x100000, 128 * KB), E_OUTOFMEMORY);
    CHECK_HR(M(a, NeedsVirtualAddressSpace, (void *)0x100000, 0), E_INVALIDARG);
    CHECK(asked == 2, "the hook was asked twice");

    void *view = (void *)(uintptr_t)0x600000000000ull;
    CHECK_HR(M(a, AcquiredVirtualAddressSpace, view, 40 * PAGE), S_OK);
    CHECK(stats(a).Views == 40 * PAGE, "views charged");
    void *p = NULL;
    CHECK_HR(M(a, VirtualAlloc, NULL, 30 * PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), E_OUTOFMEMORY);
    CHECK_HR(M(a, AcquiredVirtualAddressSpace, (char *)view + PAGE, PAGE), E_INVALIDARG);
    CHECK_HR(M(a, AcquiredVirtualAddressSpace, NULL, PAGE), E_INVALIDARG);
    CHECK_HR(M(a, ReleasedVirtualAddressSpace, (char *)view + PAGE), HOST_E_INVALIDOPERATION);

    /* A tenant with a sub-budget; neither touches the other's memory. */
    CHECK_HR(VirtmemHostAddTenant(a, "second runtime", 8 * PAGE, &b), S_OK);
    CHECK_HR(VirtmemHostAddTenant(a, NULL, 0, NULL), E_POINTER);
    void *pb = NULL;
    CHECK_HR(M(b, VirtualAlloc, NULL, 9 * PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &pb), E_OUTOFMEMORY);
    CHECK_HR(M(b, VirtualAlloc, NULL, 8 * PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &pb), S_OK);
    CHECK(stats(b).TenantUsed == 8 * PAGE && stats(a).TenantUsed == 40 * PAGE, "per tenant");
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n;
    DWORD old;
    CHECK_HR(M(a, VirtualFree, pb, 0, MEM_RELEASE), HOST_E_NOT_OWNER);
    CHECK_HR(M(a, VirtualQuery, pb, &mbi, sizeof mbi, &n), HOST_E_NOT_OWNER);
    CHECK_HR(M(a, VirtualProtect, pb, PAGE, PAGE_READONLY, &old), HOST_E_NOT_OWNER);
    CHECK_HR(M(b, ReleasedVirtualAddressSpace, view), HOST_E_NOT_OWNER);
    CHECK_HR(M(a, ReleasedVirtualAddressSpace, view), S_OK);
    CHECK_HR(M(a, ReleasedVirtualAddressSpace, view), HOST_E_INVALIDOPERATION);
    CHECK_HR(M(b, VirtualFree, pb, 0, MEM_RELEASE), S_OK);
    CHECK(stats(a).Used == 0, "all refunded");
    CHECK(RELEASE(b) == 0 && RELEASE(a) == 0, "gone");
}

static void test_lifecycle(void)
{
    VIRTMEM_HOST_CONFIG c;
    CHECK_HR(VirtmemHostConfigInit(MB, &c), S_OK);
    c.dwFlags = VIRTMEM_HOST_SIMULATED | VIRTMEM_HOST_NOT_STARTED;
    IHostMemoryManager *h = NULL;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &h), S_OK);
    void *p = NULL;
    DWORD load;
    SIZE_T avail;
    IHostMalloc *m = NULL;
    CHECK(stats(h).Lifecycle == 0, "not started");
    CHECK_HR(M(h, VirtualAlloc, NULL, PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(M(h, GetMemoryLoad, &load, &avail), HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(M(h, CreateMalloc, 0, &m), HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(VirtmemHostStart(h), S_OK);
    CHECK_HR(M(h, VirtualAlloc, NULL, PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_HR(M(h, CreateMalloc, 0, &m), S_OK);
    void *b = NULL;
    CHECK_HR(M(m, Alloc, 32, eTaskCritical, &b), S_OK);
    CHECK_HR(VirtmemHostShutdown(h), S_OK);
    CHECK(stats(h).Lifecycle == 2, "shut down");
    CHECK_HR(M(h, VirtualFree, p, 0, MEM_RELEASE), HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(M(h, GetMemoryLoad, &load, &avail), HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(M(h, AcquiredVirtualAddressSpace, (void *)0x100000, PAGE), HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(M(m, Alloc, 32, eTaskCritical, &b), HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(M(m, Free, b), HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(VirtmemHostStart(h), HOST_E_CLRNOTAVAILABLE);
    CHECK(RELEASE(m) == 0 && RELEASE(h) == 0, "gone");
}

static void test_waiting(void)
{
    /* A process-critical request waits and succeeds when memory comes back. */
    IHostMemoryManager *h = simulated(8 * PAGE, 60000);
    void *hog = NULL;
    CHECK_HR(M(h, VirtualAlloc, NULL, 8 * PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &hog), S_OK);
    Request r = {h, 4 * PAGE, eProcessCritical, NULL, -1, 0};
    pthread_t t;
    pthread_create(&t, NULL, request, &r);
    CHECK(wait_for_waiters(h, 1), "the request waits");
    CHECK_HR(M(h, VirtualFree, hog, 4 * PAGE, MEM_DECOMMIT), S_OK);
    pthread_join(t, NULL);
    CHECK_HR(r.hr, S_OK);
    CHECK(r.mem != NULL, "memory after the wait");

    /* Cancelled, and abandoned by shutdown. */
    Request r2 = {h, PAGE, eProcessCritical, NULL, -1, 0};
    pthread_create(&t, NULL, request, &r2);
    CHECK(wait_for_waiters(h, 1), "waits");
    CHECK_HR(VirtmemHostCancelWaits(h), S_OK);
    pthread_join(t, NULL);
    CHECK_HR(r2.hr, HOST_E_ABANDONED);
    CHECK(r2.mem == NULL, "NULL");
    Request r3 = {h, PAGE, eProcessCritical, NULL, -1, 0};
    pthread_create(&t, NULL, request, &r3);
    CHECK(wait_for_waiters(h, 1), "waits");
    CHECK_HR(VirtmemHostShutdown(h), S_OK);
    pthread_join(t, NULL);
    CHECK_HR(r3.hr, HOST_E_ABANDONED);
    CHECK(RELEASE(h) == 0, "gone");

    /* Timeout. */
    h = simulated(4 * PAGE, 50);
    CHECK_HR(M(h, VirtualAlloc, NULL, 4 * PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &hog), S_OK);
    void *p = (void *)0x1;
    CHECK_HR(M(h, VirtualAlloc, NULL, PAGE, MEM_COMMIT, PAGE_READWRITE, eProcessCritical, &p), HOST_E_TIMEOUT);
    CHECK(p == NULL, "NULL after a timeout");
    CHECK(RELEASE(h) == 0, "gone");
}

static void test_inconsistent_state(void)
{
    /* A manager over a simulated process the program also reaches through VirtualFreeEx. */
    HANDLE proc = VirtmemCreateProcess();
    VIRTMEM_HOST_CONFIG c;
    CHECK_HR(VirtmemHostConfigInit(MB, &c), S_OK);
    c.hProcess = proc;
    IHostMemoryManager *h = NULL;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &h), S_OK);
    void *a = NULL, *b = NULL;
    CHECK_HR(M(h, VirtualAlloc, NULL, 4 * PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &a), S_OK);
    CHECK_HR(M(h, VirtualAlloc, NULL, 4 * PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &b), S_OK);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK(VirtualQueryEx(proc, a, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_COMMIT, "same space");
    /* Someone frees the host's memory behind its back. */
    CHECK(VirtualFreeEx(proc, a, 0, MEM_RELEASE), "freed directly");
    CHECK_HR(M(h, VirtualFree, a, 0, MEM_RELEASE), E_FAIL);
    CHECK_HR(M(h, VirtualFree, b, 0, MEM_RELEASE), HOST_E_CLRNOTAVAILABLE);
    DWORD load;
    SIZE_T avail;
    CHECK_HR(M(h, GetMemoryLoad, &load, &avail), HOST_E_CLRNOTAVAILABLE);
    CHECK(stats(h).Lifecycle == 3, "disabled");
    CHECK(RELEASE(h) == 0, "gone");
    CHECK(CloseHandle(proc), "closed");
}

typedef struct {
    IHostMalloc *m;
    int seed;
    int refused;
    pthread_barrier_t *filled;
} Worker;

/* Allocate a block of the workload's next size into `*slot`, counting refusals. */
static void take(Worker *w, unsigned x, void **slot)
{
    SIZE_T size = (x >> 8) % 64 == 0 ? 3000 + (x >> 12) % 20000 : 1 + (x >> 12) % 2048;
    HRESULT hr = M(w->m, Alloc, size, eTaskCritical, slot);
    if (hr == E_OUTOFMEMORY)
        w->refused++;
    else if (hr != S_OK)
        w->refused = -1000000;
    else
        memset(*slot, 0xEE, size < 64 ? size : 64);
}

static unsigned next(unsigned x)
{
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

static void *churn(void *arg)
{
    Worker *w = arg;
    void *live[256] = {0};
    unsigned x = (unsigned)w->seed * 2654435761u + 1;
    /* Every thread fills all its slots before any frees one: together they ask for more
     * than the budget (about 4 x 300 KiB against 1 MiB) however they are scheduled. */
    for (int slot = 0; slot < 256; slot++) {
        x = next(x);
        take(w, x, &live[slot]);
    }
    pthread_barrier_wait(w->filled);
    for (int k = 0; k < 20000; k++) {
        x = next(x);
        int slot = (int)(x % 256);
        if (live[slot]) {
            if (M(w->m, Free, live[slot]) != S_OK)
                w->refused = -1000000;
            live[slot] = NULL;
        } else {
            take(w, x, &live[slot]);
        }
    }
    for (int k = 0; k < 256; k++)
        if (live[k])
            M(w->m, Free, live[k]);
    return NULL;
}

static void test_concurrent_heap(void)
{
    SIZE_T budget = 1 * MB;
    IHostMemoryManager *h = NULL;
    CHECK_HR(VirtmemCreateHostMemoryManager(budget, &h), S_OK);
    IHostMalloc *m = NULL;
    CHECK_HR(M(h, CreateMalloc, MALLOC_THREADSAFE, &m), S_OK);
    pthread_t t[4];
    Worker w[4];
    pthread_barrier_t filled;
    pthread_barrier_init(&filled, NULL, 4);
    for (int k = 0; k < 4; k++) {
        w[k] = (Worker){m, k + 1, 0, &filled};
        pthread_create(&t[k], NULL, churn, &w[k]);
    }
    int refused = 0;
    for (int k = 0; k < 4; k++) {
        pthread_join(t[k], NULL);
        CHECK(w[k].refused >= 0, "only S_OK or E_OUTOFMEMORY");
        refused += w[k].refused;
    }
    VIRTMEM_HOST_STATS s = stats(h);
    /* The default policy lets process-critical requests exceed the budget by the reserves;
     * these are task-critical, so never past the budget itself. */
    CHECK(s.Peak <= budget, "peak %zu within budget %zu", (size_t)s.Peak, (size_t)budget);
    pthread_barrier_destroy(&filled);
    CHECK(refused > 0, "the budget was contended (%d refusals)", refused);
    CHECK(RELEASE(m) == 0, "heap gone");
    CHECK(stats(h).Used == 0, "every page refunded");
    CHECK(RELEASE(h) == 0, "gone");
}

int main(void)
{
    test_factory_and_iunknown();
    test_virtual_memory();
    test_heaps();
    test_notifications();
    test_views_and_tenants();
    test_lifecycle();
    test_waiting();
    test_inconsistent_state();
    test_concurrent_heap();
    return check_summary();
}
