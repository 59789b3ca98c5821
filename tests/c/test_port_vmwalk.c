/* test_port_vmwalk.c - a Windows memory-map tool ported as is: GetSystemInfo (and
 * GetNativeSystemInfo, which tools aware of WOW64 call instead: the same on x64), then a
 * VirtualQuery walk from address 0 to the top of user space, as VMMap-style diagnostics
 * do: each region starts where the last one ended, free regions carry Windows' free-memory
 * fields, a reservation shows as its runs of pages, and the walk ends with 87 just past
 * lpMaximumApplicationAddress. */
#include <stdint.h>
#include <string.h>

#include "virtmem.h"
#include "check.h"

int main(void)
{
    SYSTEM_INFO si, native;
    MEMORY_BASIC_INFORMATION mbi;
    BYTE *p, *mine;
    SIZE_T n;
    unsigned regions = 0, mine_seen = 0, bad = 0, mask_bits = 0;
    DWORD_PTR mask;

    GetSystemInfo(&si);
    CHECK(si.dwPageSize == 4096 && si.dwAllocationGranularity == 65536, "page %u, granularity %u", si.dwPageSize,
          si.dwAllocationGranularity);
    CHECK(si.lpMinimumApplicationAddress == (LPVOID)0x10000, "lowest address %p", si.lpMinimumApplicationAddress);
    CHECK(((UINT_PTR)si.lpMaximumApplicationAddress & 0xffff) == 0xffff, "top %p", si.lpMaximumApplicationAddress);
    for (mask = si.dwActiveProcessorMask; mask; mask &= mask - 1)
        mask_bits++;
    CHECK(si.dwNumberOfProcessors >= 1 && (si.dwNumberOfProcessors > 64 || mask_bits == si.dwNumberOfProcessors),
          "%u processors, mask %#zx", si.dwNumberOfProcessors, (size_t)si.dwActiveProcessorMask);

    memset(&native, 0xcc, sizeof native);
    GetNativeSystemInfo(&native);
    CHECK(memcmp(&native, &si, sizeof si) == 0, "GetNativeSystemInfo answers what GetSystemInfo does");

    mine = VirtualAlloc(NULL, 0x50000, MEM_RESERVE, PAGE_EXECUTE_READWRITE);
    CHECK(mine != NULL && VirtualAlloc(mine + 0x10000, 0x2000, MEM_COMMIT, PAGE_READONLY) == mine + 0x10000,
          "a reservation with two committed pages");

    SetLastError(0);
    for (p = NULL; (n = VirtualQuery(p, &mbi, sizeof mbi)) != 0; p = (BYTE *)mbi.BaseAddress + mbi.RegionSize) {
        regions++;
        if (mbi.BaseAddress != p || mbi.RegionSize == 0 || mbi.RegionSize % si.dwPageSize != 0)
            bad++;
        if (mbi.State == MEM_FREE && (mbi.Protect != PAGE_NOACCESS || mbi.AllocationBase != NULL || mbi.Type != 0))
            bad++;
        if (mbi.AllocationBase == mine) {
            static const SIZE_T offsets[3] = {0, 0x10000, 0x12000}, sizes[3] = {0x10000, 0x2000, 0x3e000};
            static const DWORD states[3] = {MEM_RESERVE, MEM_COMMIT, MEM_RESERVE}, protects[3] = {0, PAGE_READONLY, 0};
            unsigned i = mine_seen++;
            CHECK(i < 3 && (BYTE *)mbi.BaseAddress == mine + offsets[i] && mbi.RegionSize == sizes[i] &&
                      mbi.State == states[i] && mbi.Protect == protects[i] &&
                      mbi.AllocationProtect == PAGE_EXECUTE_READWRITE && mbi.Type == MEM_PRIVATE,
                  "region %u of mine: %p +%#zx state %#x protect %#x", i, mbi.BaseAddress, (size_t)mbi.RegionSize,
                  mbi.State, mbi.Protect);
        }
        if (regions > 1000000)
            break;
    }
    CHECK(bad == 0, "%u of %u regions broke the walk's invariants", bad, regions);
    CHECK(mine_seen == 3, "my reservation is three regions (%u)", mine_seen);
    CHECK(n == 0 && GetLastError() == ERROR_INVALID_PARAMETER, "the walk ends with 87 (%u)", GetLastError());
    CHECK((UINT_PTR)p == (UINT_PTR)si.lpMaximumApplicationAddress + 1, "just past the top: %p", (void *)p);

    CHECK_ERR(VirtualQuery(mine, &mbi, sizeof mbi - 1) == 0, ERROR_BAD_LENGTH);
    CHECK(VirtualFree(mine, 0, MEM_RELEASE), "release");
    CHECK(VirtualQuery(mine, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_FREE, "released memory is free");
    return check_summary();
}
