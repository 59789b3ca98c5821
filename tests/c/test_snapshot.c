/* test_snapshot.c - VirtmemSnapshotProcess as an emulator or fuzzer uses it: set a
 * simulated process up once (data, a guard page, a commit limit), then
 * run each input on a snapshot of it, so every run starts from the same state whatever
 * the runs before it did. Also the handle errors. */
#include <string.h>

#include "virtmem.h"
#include "check.h"

#define PAGE 4096u

static DWORD run_input(HANDLE h, char *data, char *stack, int input)
{
    char buf[8];
    ULONG_PTR fault = 0;
    DWORD e;
    /* The base state, whatever the inputs before did. */
    CHECK(VirtmemAccess(h, (ULONG_PTR)data, buf, 5, VIRTMEM_ACCESS_READ, &fault) == 0, "read data");
    CHECK(memcmp(buf, "base!", 5) == 0, "input %d sees the base data, found %.5s", input, buf);
    /* Each input changes the process its own way. */
    memset(buf, 'A' + input, sizeof buf);
    CHECK(VirtmemAccess(h, (ULONG_PTR)data, buf, sizeof buf, VIRTMEM_ACCESS_WRITE, &fault) == 0, "write data");
    e = VirtmemAccess(h, (ULONG_PTR)stack, buf, 1, VIRTMEM_ACCESS_WRITE, &fault);
    CHECK(e == STATUS_GUARD_PAGE_VIOLATION, "input %d meets the armed guard page, got %#x", input, (unsigned)e);
    CHECK(VirtualFreeEx(h, data, 0, MEM_RELEASE), "input %d releases the data", input);
    return e;
}

int main(void)
{
    HANDLE base = VirtmemCreateProcess();
    HANDLE copy;
    MEMORY_BASIC_INFORMATION mbi;
    char *data, *stack;
    int input;

    CHECK(base != NULL, "VirtmemCreateProcess");
    data = VirtualAllocEx(base, NULL, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    stack = VirtualAllocEx(base, NULL, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    CHECK(data != NULL && stack != NULL, "set up");
    CHECK(WriteProcessMemory(base, data, "base!", 5, NULL), "base data");
    CHECK(VirtmemSetCommitLimit(base, 0x30000), "commit limit");

    for (input = 0; input < 3; input++) {
        copy = VirtmemSnapshotProcess(base);
        CHECK(copy != NULL && copy != base, "snapshot %d", input);
        /* The copy starts with the base's commit limit. */
        CHECK_ERR(VirtualAllocEx(copy, NULL, 0x20000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) == NULL, 1455);
        run_input(copy, data, stack, input);
        CHECK(CloseHandle(copy), "close snapshot %d", input);
    }
    /* The base never changed: its data, its guard page still armed. */
    CHECK(VirtualQueryEx(base, data, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_COMMIT, "base data kept");
    CHECK(VirtualQueryEx(base, stack, &mbi, sizeof mbi) == sizeof mbi && mbi.Protect == (PAGE_READWRITE | PAGE_GUARD),
          "base guard page still armed");

    /* A snapshot of a snapshot, and one that outlives its original. */
    copy = VirtmemSnapshotProcess(base);
    {
        HANDLE second = VirtmemSnapshotProcess(copy);
        char buf[5];
        CHECK(second != NULL, "snapshot of a snapshot");
        CHECK(CloseHandle(copy), "close the first");
        CHECK(ReadProcessMemory(second, data, buf, 5, NULL) && memcmp(buf, "base!", 5) == 0, "the second kept it");
        CHECK(CloseHandle(second), "close the second");
    }

    /* Handle errors. */
    CHECK_ERR(VirtmemSnapshotProcess(NULL) == NULL, ERROR_INVALID_HANDLE);
    CHECK_ERR(VirtmemSnapshotProcess(copy) == NULL, ERROR_INVALID_HANDLE);
    CHECK_ERR(VirtmemSnapshotProcess(GetCurrentProcess()) == NULL, ERROR_NOT_SUPPORTED);
    CHECK(TerminateProcess(base, 0), "terminate");
    CHECK_ERR(VirtmemSnapshotProcess(base) == NULL, ERROR_ACCESS_DENIED);
    CHECK(CloseHandle(base), "close the base");
    return check_summary();
}
