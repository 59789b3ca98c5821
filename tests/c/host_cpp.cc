// host_cpp.cc - the host memory manager's COM interfaces from C++, as mscoree.h users write it.
//
// In C++ virtmem.h declares IUnknown, IHostMemoryManager, IHostMalloc and
// ICLRMemoryNotificationCallback as abstract classes (no lpVtbl): this program calls the objects
// libvirtmem returns through their virtual methods (host->VirtualAlloc(...)), passes them to the
// C factory functions, and registers a C++ class deriving from ICLRMemoryNotificationCallback,
// whose OnMemoryNotification the manager calls when a threshold is crossed.
#include <atomic>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

#include "virtmem.h"
#include "check.h"

#define KB ((SIZE_T)1024)
#define MB (1024 * KB)
#define PAGE ((SIZE_T)4096)

#define CHECK_HR(call, expected)                                                                   \
    CHECK((call) == (HRESULT)(expected), "%s: expected 0x%08x", #call, (unsigned)(expected))

// The C++ classes are the types the factories take and return.
static_assert(std::is_base_of<IUnknown, IHostMemoryManager>::value, "IHostMemoryManager : IUnknown");
static_assert(std::is_base_of<IUnknown, IHostMalloc>::value, "IHostMalloc : IUnknown");
static_assert(std::is_base_of<IUnknown, ICLRMemoryNotificationCallback>::value, "callback : IUnknown");
static_assert(std::is_same<REFIID, const IID &>::value, "REFIID is a reference in C++");
static_assert(std::is_polymorphic<IHostMemoryManager>::value, "a class with a vtable");

static void test_iunknown()
{
    IHostMemoryManager *host = nullptr;
    CHECK_HR(VirtmemCreateHostMemoryManager(MB, &host), S_OK);
    if (!host)
        return;
    void *p = nullptr;
    CHECK_HR(host->QueryInterface(IID_IUnknown, &p), S_OK);
    CHECK(p == static_cast<void *>(host), "IUnknown is the object itself");
    CHECK_HR(host->QueryInterface(IID_IHostMemoryManager, &p), S_OK);
    CHECK(p == static_cast<void *>(host), "IHostMemoryManager is the object itself");
    p = host;
    CHECK_HR(host->QueryInterface(IID_IHostMalloc, &p), E_NOINTERFACE);
    CHECK(p == nullptr, "*ppvObject NULL on E_NOINTERFACE");
    p = host;
    CHECK_HR(host->QueryInterface(IID_ICLRMemoryNotificationCallback, &p), E_NOINTERFACE);
    CHECK(p == nullptr, "*ppvObject NULL on E_NOINTERFACE");
    CHECK(host->Release() == 2, "two QueryInterface references left");
    // Through the base class.
    IUnknown *unknown = host;
    CHECK(unknown->AddRef() == 3, "AddRef through IUnknown");
    CHECK(unknown->Release() == 2, "Release through IUnknown");
    CHECK(host->Release() == 1, "one left");
    CHECK(host->Release() == 0, "gone");
}

static void test_virtual_memory()
{
    IHostMemoryManager *host = nullptr;
    CHECK_HR(VirtmemCreateHostMemoryManager(MB, &host), S_OK);
    if (!host)
        return;
    void *mem = nullptr;
    CHECK_HR(host->VirtualAlloc(nullptr, 64 * KB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &mem),
             S_OK);
    CHECK(mem != nullptr, "VirtualAlloc gave memory");
    if (!mem)
        return;
    std::memset(mem, 0x5a, 64 * KB);

    MEMORY_BASIC_INFORMATION mbi;
    std::memset(&mbi, 0, sizeof mbi);
    SIZE_T written = 0;
    CHECK_HR(host->VirtualQuery(mem, &mbi, sizeof mbi, &written), S_OK);
    CHECK(written == sizeof mbi && mbi.BaseAddress == mem && mbi.State == MEM_COMMIT && mbi.Protect == PAGE_READWRITE,
          "VirtualQuery: %zu bytes, state 0x%x", (size_t)written, (unsigned)mbi.State);
    DWORD old = 0;
    CHECK_HR(host->VirtualProtect(mem, PAGE, PAGE_READONLY, &old), S_OK);
    CHECK(old == PAGE_READWRITE, "old protection 0x%x", (unsigned)old);

    DWORD load = 0;
    SIZE_T avail = 0;
    CHECK_HR(host->GetMemoryLoad(&load, &avail), S_OK);
    CHECK(load == 6 && avail == MB - 64 * KB, "load %u%%, %zu available", (unsigned)load, (size_t)avail);

    // Over the budget: E_OUTOFMEMORY, *ppMem NULL.
    void *big = &big;
    CHECK_HR(host->VirtualAlloc(nullptr, 2 * MB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &big),
             E_OUTOFMEMORY);
    CHECK(big == nullptr, "*ppMem NULL on failure");

    // Memory not allocated through the manager is not its business.
    std::vector<char> foreign(PAGE);
    CHECK_HR(host->VirtualFree(foreign.data(), 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);

    // Views acquired outside VirtualAlloc count against the budget.
    alignas(4096) static char view[64 * 1024];
    CHECK_HR(host->NeedsVirtualAddressSpace(view, sizeof view), E_OUTOFMEMORY);
    CHECK_HR(host->AcquiredVirtualAddressSpace(view, sizeof view), S_OK);
    CHECK_HR(host->GetMemoryLoad(&load, &avail), S_OK);
    CHECK(avail == MB - 128 * KB, "the view is charged (%zu available)", (size_t)avail);
    CHECK_HR(host->ReleasedVirtualAddressSpace(view), S_OK);
    CHECK_HR(host->ReleasedVirtualAddressSpace(view), HOST_E_INVALIDOPERATION);

    // The C extension functions take the C++ object.
    VIRTMEM_HOST_STATS stats;
    std::memset(&stats, 0, sizeof stats);
    CHECK_HR(VirtmemHostGetStats(host, &stats), S_OK);
    CHECK(stats.Budget == MB && stats.VirtualCommitted == 64 * KB, "stats: %zu committed",
          (size_t)stats.VirtualCommitted);
    IHostMemoryManager *tenant = nullptr;
    CHECK_HR(VirtmemHostAddTenant(host, "tenant", 256 * KB, &tenant), S_OK);
    if (tenant) {
        CHECK_HR(tenant->VirtualFree(mem, 0, MEM_RELEASE), HOST_E_NOT_OWNER);
        CHECK(tenant->Release() == 0, "tenant gone");
    }

    CHECK_HR(host->VirtualFree(mem, 0, MEM_RELEASE), S_OK);
    CHECK_HR(host->VirtualFree(mem, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
    CHECK_HR(VirtmemHostShutdown(host), S_OK);
    CHECK_HR(host->VirtualAlloc(nullptr, PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &mem),
             HOST_E_CLRNOTAVAILABLE);
    CHECK(host->Release() == 0, "gone");
}

static void test_malloc()
{
    IHostMemoryManager *host = nullptr;
    CHECK_HR(VirtmemCreateHostMemoryManager(MB, &host), S_OK);
    if (!host)
        return;
    IHostMalloc *heap = nullptr;
    CHECK_HR(host->CreateMalloc(MALLOC_THREADSAFE, &heap), S_OK);
    CHECK(heap != nullptr, "CreateMalloc gave a heap");
    if (!heap)
        return;
    void *p = nullptr;
    CHECK_HR(heap->QueryInterface(IID_IHostMalloc, &p), S_OK);
    CHECK(p == static_cast<void *>(heap), "IHostMalloc is the heap itself");
    CHECK(heap->Release() == 1, "QueryInterface reference dropped");
    p = heap;
    CHECK_HR(heap->QueryInterface(IID_IHostMemoryManager, &p), E_NOINTERFACE);
    CHECK(p == nullptr, "*ppvObject NULL on E_NOINTERFACE");

    void *block = nullptr;
    CHECK_HR(heap->Alloc(100, eTaskCritical, &block), S_OK);
    CHECK(block != nullptr && reinterpret_cast<uintptr_t>(block) % 16 == 0, "16-byte aligned block");
    if (block)
        std::memset(block, 1, 100);
    CHECK_HR(heap->Free(block), S_OK);
    CHECK_HR(heap->Free(block), HOST_E_INVALIDOPERATION);
    CHECK_HR(heap->Free(nullptr), S_OK);
    void *big = &big;
    CHECK_HR(heap->Alloc(2 * MB, eTaskCritical, &big), E_OUTOFMEMORY);
    CHECK(big == nullptr, "*ppMem NULL when refused");

    // DebugAlloc remembers file and line for the leak report.
    void *d = nullptr;
    const int line = __LINE__;
    CHECK_HR(heap->DebugAlloc(40, eTaskCritical, const_cast<char *>("host_cpp.cc"), line, &d), S_OK);
    VIRTMEM_HOST_LEAK leaks[2];
    SIZE_T count = 0;
    CHECK_HR(VirtmemHostMallocLeaks(heap, leaks, 2, &count), S_OK);
    CHECK(count == 1 && leaks[0].Address == d && leaks[0].Line == line &&
              std::strcmp(leaks[0].File, "host_cpp.cc") == 0,
          "leak report: %zu", (size_t)count);
    CHECK_HR(heap->Free(d), S_OK);

    // Threads share the MALLOC_THREADSAFE heap.
    std::vector<std::thread> threads;
    std::atomic<int> failures(0);
    for (int t = 0; t < 4; t++)
        threads.emplace_back([heap, &failures, t] {
            for (int i = 0; i < 200; i++) {
                void *q = nullptr;
                SIZE_T size = 16 + (SIZE_T)((i * 37 + t) % 500);
                if (heap->Alloc(size, eTaskCritical, &q) != S_OK || !q) {
                    failures++;
                    continue;
                }
                std::memset(q, t, size);
                if (heap->Free(q) != S_OK)
                    failures++;
            }
        });
    for (auto &thread : threads)
        thread.join();
    CHECK(failures == 0, "%d heap failures across threads", failures.load());

    CHECK(heap->Release() == 0, "heap gone");
    CHECK(host->Release() == 0, "host gone");
}

// An ICLRMemoryNotificationCallback written the C++ way.
class Callback : public ICLRMemoryNotificationCallback {
public:
    HRESULT STDMETHODCALLTYPE QueryInterface(REFIID riid, void **ppvObject) override
    {
        if (!ppvObject)
            return E_POINTER;
        if (std::memcmp(&riid, &IID_IUnknown, sizeof(IID)) == 0 ||
            std::memcmp(&riid, &IID_ICLRMemoryNotificationCallback, sizeof(IID)) == 0) {
            *ppvObject = static_cast<ICLRMemoryNotificationCallback *>(this);
            AddRef();
            return S_OK;
        }
        *ppvObject = nullptr;
        return E_NOINTERFACE;
    }
    ULONG STDMETHODCALLTYPE AddRef() override { return ++refs; }
    ULONG STDMETHODCALLTYPE Release() override { return --refs; }
    HRESULT STDMETHODCALLTYPE OnMemoryNotification(EMemoryAvailable level) override
    {
        int n = count++;
        if (n < 16) {
            levels[n] = level;
            threads[n] = std::this_thread::get_id();
        }
        return S_OK;
    }

    std::atomic<ULONG> refs{1};
    std::atomic<int> count{0};
    EMemoryAvailable levels[16] = {};
    std::thread::id threads[16];
};

static void test_notifications()
{
    VIRTMEM_HOST_CONFIG c;
    CHECK_HR(VirtmemHostConfigInit(100 * PAGE, &c), S_OK);
    c.dwFlags = VIRTMEM_HOST_SIMULATED;
    c.LowPercent = 80;
    c.HighPercent = 40;
    c.Hysteresis = 10;
    IHostMemoryManager *host = nullptr;
    CHECK_HR(VirtmemCreateHostMemoryManagerEx(&c, &host), S_OK);
    if (!host)
        return;
    Callback cb;
    void *p = nullptr;
    CHECK_HR(cb.QueryInterface(IID_IUnknown, &p), S_OK); // the class works as COM, too
    CHECK(p == static_cast<ICLRMemoryNotificationCallback *>(&cb) && cb.Release() == 1, "callback QueryInterface");
    CHECK_HR(host->RegisterMemoryNotificationCallback(nullptr), E_INVALIDARG);
    CHECK_HR(host->RegisterMemoryNotificationCallback(&cb), S_OK);
    CHECK(cb.refs == 2, "the host holds a reference (%u)", (unsigned)cb.refs.load());

    // Crossing to Low on another thread: the override runs there.
    void *mem = nullptr;
    HRESULT hr = -1;
    std::thread::id crosser;
    std::thread t([&] {
        crosser = std::this_thread::get_id();
        hr = host->VirtualAlloc(nullptr, 85 * PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &mem);
    });
    t.join();
    CHECK_HR(hr, S_OK);
    CHECK(cb.count == 1 && cb.levels[0] == eMemoryAvailableLow, "Low once (%d)", cb.count.load());
    CHECK(cb.count >= 1 && cb.threads[0] == crosser, "from the crossing thread");
    // No crossing, no call.
    DWORD load = 0;
    SIZE_T avail = 0;
    CHECK_HR(host->GetMemoryLoad(&load, &avail), S_OK);
    CHECK(load == 85, "load %u", (unsigned)load);
    CHECK_HR(host->VirtualFree(mem, 10 * PAGE, MEM_DECOMMIT), S_OK); // 75 %: still Low
    CHECK(cb.count == 1, "hysteresis (%d)", cb.count.load());
    CHECK_HR(host->VirtualFree(mem, 0, MEM_RELEASE), S_OK); // 0 %: High
    CHECK(cb.count == 2 && cb.levels[1] == eMemoryAvailableHigh, "High (%d)", cb.count.load());
    CHECK(cb.count >= 2 && cb.threads[1] == std::this_thread::get_id(), "from this thread");
    CHECK(host->Release() == 0, "gone");
    CHECK(cb.refs == 1, "the host released its reference (%u)", (unsigned)cb.refs.load());
}

int main()
{
    test_iunknown();
    test_virtual_memory();
    test_malloc();
    test_notifications();
    return check_summary();
}
