// port_valloc2.cc - C++ written against winnt.h's MEM_EXTENDED_PARAMETER compiles
// unchanged against virtmem.h and runs: value-initialised and zero-initialised
// structures, then the nameless members assigned (Raymond Chen's "How to allocate address
// space with a custom alignment or in a custom address region", and the form JITs and
// allocators use). scripts/test-capi.sh builds it as C++11 and C++20.
#include <cstdint>
#include <cstdio>

#include "virtmem.h"

static_assert(sizeof(MEM_EXTENDED_PARAMETER) == 16, "MEM_EXTENDED_PARAMETER is 16 bytes");
static_assert(alignof(MEM_EXTENDED_PARAMETER) == 8, "aligned as winnt.h's DECLSPEC_ALIGN(8)");

int main()
{
    HANDLE h = VirtmemCreateProcess();
    MEM_ADDRESS_REQUIREMENTS requirements = {0};
    requirements.LowestStartingAddress = reinterpret_cast<PVOID>(0x80000000ull);
    requirements.HighestEndingAddress = reinterpret_cast<PVOID>(0xFFFFFFFFull);
    requirements.Alignment = 0x100000;
    MEM_EXTENDED_PARAMETER param = {0};
    param.Type = MemExtendedParameterAddressRequirements;
    param.Pointer = &requirements;
    MEM_EXTENDED_PARAMETER numa{};
    numa.Type = MemExtendedParameterNumaNode;
    numa.ULong64 = 0;
    MEM_EXTENDED_PARAMETER params[2] = {param, numa};
    void *a = VirtualAlloc2(h, nullptr, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, &param, 1);
    void *b = VirtualAlloc2(h, nullptr, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, params, 2);
    bool ok = a == reinterpret_cast<void *>(0x80000000ull) && b == reinterpret_cast<void *>(0x80100000ull);
    std::printf("port_valloc2: %p %p%s\n", a, b, ok ? "" : ": expected 0x80000000 and 0x80100000");
    CloseHandle(h);
    return ok ? 0 : 1;
}
