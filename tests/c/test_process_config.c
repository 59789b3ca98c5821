/* test_process_config.c - VirtmemCreateProcessEx as an emulator of a 32-bit guest and a
 * fuzzer use it: a simulated process whose user range is 0x10000-0x7FFEFFFF, with no
 * large pages and MEM_RESET discarding data; allocations stay inside the range, addresses
 * outside it are refused as Windows refuses them outside its own, the range runs out
 * with ERROR_NOT_ENOUGH_MEMORY; every invalid field is refused with 87 and makes no
 * process; snapshots keep the configuration and restores across configurations fail. */
#include <string.h>

#include "virtmem.h"
#include "check.h"

#define K64 0x10000u

static VIRTMEM_PROCESS_CONFIG guest32(DWORD policy)
{
    VIRTMEM_PROCESS_CONFIG c;
    CHECK(VirtmemProcessConfigInit(&c), "VirtmemProcessConfigInit");
    c.MinimumApplicationAddress = 0x10000;
    c.MaximumApplicationAddress = 0x7FFEFFFF;
    c.LargePageSize = 0;
    c.ResetPolicy = policy;
    return c;
}

/* Write a byte, MEM_RESET its page, then MEM_RESET_UNDO: whether the undo succeeded. */
static int reset_undo_keeps(HANDLE h)
{
    char *p = VirtualAllocEx(h, NULL, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    CHECK(p != NULL, "commit a page");
    CHECK(WriteProcessMemory(h, p, "x", 1, NULL), "write it");
    CHECK(VirtualAllocEx(h, p, 0x1000, MEM_RESET, PAGE_READWRITE) == p, "reset it");
    return VirtualAllocEx(h, p, 0x1000, MEM_RESET_UNDO, PAGE_READWRITE) != NULL;
}

static void defaults(void)
{
    VIRTMEM_PROCESS_CONFIG c;
    HANDLE h;
    memset(&c, 0xEE, sizeof c);
    CHECK(VirtmemProcessConfigInit(&c), "init");
    CHECK(c.cbSize == sizeof c, "cbSize %u", (unsigned)c.cbSize);
    CHECK(c.MinimumApplicationAddress == 0x10000 && c.MaximumApplicationAddress == 0x7FFFFFFEFFFFull,
          "the x64 range");
    CHECK(c.LargePageSize == 0x200000 && c.ResetPolicy == VIRTMEM_RESET_KEEP, "2 MiB pages, keep");
    CHECK_ERR(!VirtmemProcessConfigInit(NULL), ERROR_NOACCESS);
    /* NULL: the process VirtmemCreateProcess makes. */
    h = VirtmemCreateProcessEx(NULL);
    CHECK(h != NULL, "NULL config");
    CHECK(VirtualAllocEx(h, NULL, K64, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE) == (void *)0x7FFFFFFE0000ull,
          "top-down at the x64 top");
    CHECK(CloseHandle(h), "close");
}

static void guest_range(void)
{
    VIRTMEM_PROCESS_CONFIG c = guest32(VIRTMEM_RESET_KEEP);
    MEMORY_BASIC_INFORMATION mbi;
    HANDLE h = VirtmemCreateProcessEx(&c);
    char *low, *high, *rest;
    CHECK(h != NULL, "a 32-bit guest");
    low = VirtualAllocEx(h, NULL, K64, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    high = VirtualAllocEx(h, NULL, K64, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE);
    CHECK(low == (char *)0x10000, "bottom-up at the lowest address, got %p", (void *)low);
    CHECK(high == (char *)0x7FFE0000, "top-down at the top of the range, got %p", (void *)high);
    CHECK(WriteProcessMemory(h, high + 0xFFF0, "top of the guest", 16, NULL), "write at the very top");
    /* Outside the range, as outside Windows' user range. */
    CHECK_ERR(VirtualAllocEx(h, (void *)0x7FFF0000, K64, MEM_RESERVE, PAGE_READWRITE) == NULL, ERROR_INVALID_PARAMETER);
    CHECK_ERR(VirtualAllocEx(h, (void *)0x80000000, K64, MEM_RESERVE, PAGE_READWRITE) == NULL, ERROR_INVALID_PARAMETER);
    CHECK_ERR(VirtualAllocEx(h, (void *)0x8000, 0x1000, MEM_RESERVE, PAGE_READWRITE) == NULL, ERROR_INVALID_PARAMETER);
    CHECK_ERR(VirtualQueryEx(h, (void *)0x7FFF0000, &mbi, sizeof mbi) == 0, ERROR_INVALID_PARAMETER);
    CHECK(VirtualQueryEx(h, (void *)0x7FFEFFFF, &mbi, sizeof mbi) == sizeof mbi && mbi.AllocationBase == high,
          "the highest address is the guest's");
    /* No large pages: refused as the Rust API refuses them. */
    CHECK_ERR(VirtualAllocEx(h, NULL, 0x200000, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE) == NULL,
              ERROR_NO_SYSTEM_RESOURCES);
    /* The rest of the range, then nothing is left. */
    rest = VirtualAllocEx(h, NULL, 0x7FFE0000 - 2 * K64, MEM_RESERVE, PAGE_NOACCESS);
    CHECK(rest == (char *)0x20000, "the rest of the range, got %p", (void *)rest);
    CHECK_ERR(VirtualAllocEx(h, NULL, K64, MEM_RESERVE, PAGE_READWRITE) == NULL, ERROR_NOT_ENOUGH_MEMORY);
    CHECK(VirtualFreeEx(h, rest, 0, MEM_RELEASE), "release the rest");
    CHECK(CloseHandle(h), "close");
}

static void reset_policies(void)
{
    VIRTMEM_PROCESS_CONFIG keep = guest32(VIRTMEM_RESET_KEEP), discard = guest32(VIRTMEM_RESET_DISCARD);
    HANDLE k = VirtmemCreateProcessEx(&keep), d = VirtmemCreateProcessEx(&discard);
    CHECK(k != NULL && d != NULL, "both made");
    CHECK(reset_undo_keeps(k), "keep: MEM_RESET_UNDO finds the data");
    SetLastError(0);
    CHECK(!reset_undo_keeps(d) && GetLastError() == ERROR_BUSY, "discard: the loss is reported with 170, got %u",
          (unsigned)GetLastError());
    CHECK(CloseHandle(k) && CloseHandle(d), "close");
}

static void invalid_fields(void)
{
    VIRTMEM_PROCESS_CONFIG good = guest32(VIRTMEM_RESET_KEEP), bad[16];
    int n = 0, i;
    HANDLE before, after;
    for (i = 0; i < 16; i++)
        bad[i] = good;
    bad[n++].cbSize = 0;
    bad[n++].cbSize = sizeof good + 8;
    bad[n++].MinimumApplicationAddress = 0;
    bad[n++].MinimumApplicationAddress = 0x8000;
    bad[n++].MinimumApplicationAddress = 0x11000;
    bad[n++].MinimumApplicationAddress = 0x7FFF0000; /* not below the highest */
    bad[n++].MaximumApplicationAddress = 0x7FFF0000; /* not one below a 64 KiB boundary */
    bad[n++].MaximumApplicationAddress = 0x7FFFFFFFFFFFull; /* past the simulation's top */
    bad[n++].MaximumApplicationAddress = (ULONG_PTR)-1;
    bad[n++].LargePageSize = 0x1000;
    bad[n++].LargePageSize = 3 * K64;
    bad[n++].LargePageSize = (SIZE_T)-1;
    bad[n++].ResetPolicy = 2;
    /* No handle is made: handles are handed out in increasing steps of 4, and the next
     * process after the failures gets the value right after the one before them. */
    before = VirtmemCreateProcess();
    for (i = 0; i < n; i++)
        CHECK_ERR(VirtmemCreateProcessEx(&bad[i]) == NULL, ERROR_INVALID_PARAMETER);
    CHECK_ERR(VirtmemCreateProcessEx((const VIRTMEM_PROCESS_CONFIG *)8) == NULL, ERROR_NOACCESS);
    after = VirtmemCreateProcess();
    CHECK((char *)after - (char *)before == 4, "no handle made: %p then %p", before, after);
    CHECK(CloseHandle(before) && CloseHandle(after), "close");
}

static void snapshots(void)
{
    VIRTMEM_PROCESS_CONFIG c = guest32(VIRTMEM_RESET_DISCARD), k = guest32(VIRTMEM_RESET_KEEP);
    HANDLE h = VirtmemCreateProcessEx(&c), keep = VirtmemCreateProcessEx(&k), x64 = VirtmemCreateProcess();
    HANDLE snap;
    CHECK(h != NULL && keep != NULL && x64 != NULL, "made");
    CHECK(VirtualAllocEx(h, NULL, K64, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE) == (void *)0x7FFE0000, "top");
    snap = VirtmemSnapshotProcess(h);
    CHECK(snap != NULL, "snapshot");
    CHECK(VirtualAllocEx(snap, NULL, K64, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE) == (void *)0x7FFD0000,
          "the snapshot's range is the guest's");
    CHECK_ERR(VirtualAllocEx(snap, (void *)0x7FFF0000, K64, MEM_RESERVE, PAGE_READWRITE) == NULL,
              ERROR_INVALID_PARAMETER);
    CHECK(!reset_undo_keeps(snap), "the snapshot discards on reset too");
    CHECK(VirtmemRestoreProcess(snap, h), "restore between the same configurations");
    CHECK(VirtualAllocEx(snap, NULL, K64, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE) == (void *)0x7FFD0000,
          "restored: the slot below the top is free again");
    /* Across configurations: refused, nothing changed. */
    CHECK_ERR(!VirtmemRestoreProcess(h, x64), ERROR_INVALID_PARAMETER);
    CHECK_ERR(!VirtmemRestoreProcess(x64, h), ERROR_INVALID_PARAMETER);
    CHECK_ERR(!VirtmemRestoreProcess(h, keep), ERROR_NOT_SUPPORTED);
    CHECK(VirtualAllocEx(h, NULL, K64, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE) == (void *)0x7FFD0000,
          "h kept its own state");
    CHECK(CloseHandle(h) && CloseHandle(keep) && CloseHandle(x64) && CloseHandle(snap), "close");
}

int main(void)
{
    defaults();
    guest_range();
    reset_policies();
    invalid_fields();
    snapshots();
    return check_summary();
}
