// host_cpp.cc - the host memory manager's COM interfaces from C++ (compile and run check).
#include <cstdio>
#include <cstring>

#include "virtmem.h"

int main()
{
    IHostMemoryManager *host = nullptr;
    if (VirtmemCreateHostMemoryManager(1 << 20, &host) != S_OK)
        return 1;
    IHostMalloc *heap = nullptr;
    void *unknown = nullptr;
    void *block = nullptr;
    int failures = 0;
    failures += host->lpVtbl->QueryInterface(host, &IID_IUnknown, &unknown) != S_OK || unknown != host;
    failures += host->lpVtbl->Release(host) != 1;
    failures += host->lpVtbl->CreateMalloc(host, MALLOC_THREADSAFE, &heap) != S_OK;
    failures += heap->lpVtbl->Alloc(heap, 100, eTaskCritical, &block) != S_OK;
    std::memset(block, 1, 100);
    failures += heap->lpVtbl->Free(heap, block) != S_OK;
    failures += heap->lpVtbl->Free(heap, block) != HOST_E_INVALIDOPERATION;
    failures += heap->lpVtbl->Release(heap) != 0;
    failures += host->lpVtbl->Release(host) != 0;
    std::printf("%d failed\n", failures);
    return failures != 0;
}
