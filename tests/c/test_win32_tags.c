/* The Win32 structs under the names Windows code also spells them with: the struct tags of
 * the SDK (`struct _MEMORY_BASIC_INFORMATION`, `struct _SYSTEM_INFO`, `struct _GUID`) and
 * the pointer typedefs (PMEMORY_BASIC_INFORMATION, LPSYSTEM_INFO, LPGUID, LPCGUID,
 * LPIID), used with the real calls. Each tag must name the same type as its typedef: the
 * assignments between the two spellings below do not compile otherwise (-Werror). */
#include <string.h>

#include "virtmem.h"
#include "check.h"

_Static_assert(sizeof(struct _MEMORY_BASIC_INFORMATION) == 48, "MEMORY_BASIC_INFORMATION is 48 bytes");
_Static_assert(sizeof(struct _SYSTEM_INFO) == 48, "SYSTEM_INFO is 48 bytes");
_Static_assert(sizeof(struct _GUID) == 16, "GUID is 16 bytes");

/* Written as ported code often is: the pointer typedef as a parameter. */
static SIZE_T query(LPCVOID address, PMEMORY_BASIC_INFORMATION out)
{
    return VirtualQuery(address, out, sizeof(struct _MEMORY_BASIC_INFORMATION));
}

static void system_info(LPSYSTEM_INFO out)
{
    GetSystemInfo(out);
}

int main(void)
{
    struct _SYSTEM_INFO si;
    memset(&si, 0xAB, sizeof si);
    system_info(&si);
    SYSTEM_INFO *as_typedef = &si;
    CHECK(as_typedef->dwPageSize == 4096, "page size %u", (unsigned)si.dwPageSize);
    CHECK(si.dwAllocationGranularity == 65536, "granularity %u", (unsigned)si.dwAllocationGranularity);
    CHECK(si.lpMinimumApplicationAddress != NULL && si.lpMaximumApplicationAddress > si.lpMinimumApplicationAddress,
          "application addresses %p..%p", si.lpMinimumApplicationAddress, si.lpMaximumApplicationAddress);
    SIZE_T page = si.dwPageSize;

    /* Three pages, the middle one read-only. */
    char *p = VirtualAlloc(NULL, 3 * page, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    CHECK(p != NULL, "VirtualAlloc: error %u", (unsigned)GetLastError());
    if (p == NULL)
        return check_summary();
    DWORD old = 0;
    CHECK(VirtualProtect(p + page, page, PAGE_READONLY, &old) && old == PAGE_READWRITE, "VirtualProtect: old %#x",
          (unsigned)old);

    struct _MEMORY_BASIC_INFORMATION mbi;
    PMEMORY_BASIC_INFORMATION pmbi = &mbi;
    MEMORY_BASIC_INFORMATION *as_typedef_mbi = pmbi;
    memset(pmbi, 0xAB, sizeof *pmbi);
    CHECK(query(p + page + 100, pmbi) == sizeof(struct _MEMORY_BASIC_INFORMATION), "VirtualQuery: error %u",
          (unsigned)GetLastError());
    CHECK(as_typedef_mbi->BaseAddress == p + page && mbi.AllocationBase == p, "base %p, allocation base %p (p %p)",
          mbi.BaseAddress, mbi.AllocationBase, (void *)p);
    CHECK(mbi.RegionSize == page && mbi.State == MEM_COMMIT && mbi.Protect == PAGE_READONLY &&
              mbi.AllocationProtect == PAGE_READWRITE && mbi.Type == MEM_PRIVATE,
          "size %zu state %#x protect %#x allocation protect %#x type %#x", (size_t)mbi.RegionSize,
          (unsigned)mbi.State, (unsigned)mbi.Protect, (unsigned)mbi.AllocationProtect, (unsigned)mbi.Type);

    /* The same through VirtualQueryEx on the current process, into a typedef'd struct. */
    MEMORY_BASIC_INFORMATION again;
    struct _MEMORY_BASIC_INFORMATION *tagged = &again;
    CHECK(VirtualQueryEx(GetCurrentProcess(), p + 2 * page, tagged, sizeof again) == sizeof again,
          "VirtualQueryEx: error %u", (unsigned)GetLastError());
    CHECK(again.BaseAddress == p + 2 * page && again.Protect == PAGE_READWRITE && again.RegionSize == page,
          "base %p protect %#x size %zu", again.BaseAddress, (unsigned)again.Protect, (size_t)again.RegionSize);

    /* A buffer one byte short of the struct is refused, whichever name sized it. */
    CHECK_ERR(VirtualQuery(p, pmbi, sizeof(struct _MEMORY_BASIC_INFORMATION) - 1) == 0, ERROR_BAD_LENGTH);

    CHECK(VirtualFree(p, 0, MEM_RELEASE), "VirtualFree: error %u", (unsigned)GetLastError());
    CHECK(query(p, pmbi) == sizeof mbi && mbi.State == MEM_FREE, "after release: state %#x", (unsigned)mbi.State);

    /* GUIDs: the tag, and the pointer typedefs of guiddef.h. */
    struct _GUID iid = IID_IHostMalloc;
    LPCGUID known = &IID_IHostMalloc;
    LPGUID mine = &iid;
    LPIID as_iid = mine;
    GUID *as_typedef_guid = as_iid;
    CHECK(memcmp(known, as_typedef_guid, sizeof(struct _GUID)) == 0 && iid.Data1 == 0x1831991C && iid.Data2 == 0xCC53,
          "IID_IHostMalloc Data1 %#x Data2 %#x", (unsigned)iid.Data1, (unsigned)iid.Data2);

    return check_summary();
}
