/* test_restore.c - VirtmemRestoreProcess as a fuzzer's loop uses it: set a simulated
 * process up once (data, a guard page, a commit limit), take one snapshot of it, and
 * before each input put the snapshot's state back into the same process handle, so every
 * input starts from the same state whatever the inputs before it did. Also the handle
 * errors. */
#include <string.h>

#include "virtmem.h"
#include "check.h"

static void run_input(HANDLE h, char *data, char *stack, int input)
{
    char buf[8];
    ULONG_PTR fault = 0;
    DWORD e;
    /* The base state, whatever the inputs before did. */
    CHECK(VirtmemAccess(h, (ULONG_PTR)data, buf, 5, VIRTMEM_ACCESS_READ, &fault) == 0, "read data");
    CHECK(memcmp(buf, "base!", 5) == 0, "input %d sees the base data, found %.5s", input, buf);
    /* The commit limit is the snapshot's. */
    CHECK_ERR(VirtualAllocEx(h, NULL, 0x20000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) == NULL, 1455);
    /* Each input changes the process its own way. */
    memset(buf, 'A' + input, sizeof buf);
    CHECK(VirtmemAccess(h, (ULONG_PTR)data, buf, sizeof buf, VIRTMEM_ACCESS_WRITE, &fault) == 0, "write data");
    e = VirtmemAccess(h, (ULONG_PTR)stack, buf, 1, VIRTMEM_ACCESS_WRITE, &fault);
    CHECK(e == STATUS_GUARD_PAGE_VIOLATION, "input %d meets the armed guard page, got %#x", input, (unsigned)e);
    CHECK(VirtmemSetCommitLimit(h, VIRTMEM_NO_COMMIT_LIMIT), "input %d lifts the limit", input);
    CHECK(VirtualAllocEx(h, NULL, 0x20000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) != NULL, "input %d commits", input);
    CHECK(VirtualFreeEx(h, data, 0, MEM_RELEASE), "input %d releases the data", input);
}

int main(void)
{
    HANDLE base = VirtmemCreateProcess();
    HANDLE snap, other;
    MEMORY_BASIC_INFORMATION mbi;
    char *data, *stack;
    char buf[5];
    int input;

    CHECK(base != NULL, "VirtmemCreateProcess");
    data = VirtualAllocEx(base, NULL, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    stack = VirtualAllocEx(base, NULL, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    CHECK(data != NULL && stack != NULL, "set up");
    CHECK(WriteProcessMemory(base, data, "base!", 5, NULL), "base data");
    CHECK(VirtmemSetCommitLimit(base, 0x30000), "commit limit");
    snap = VirtmemSnapshotProcess(base);
    CHECK(snap != NULL, "snapshot");

    for (input = 0; input < 3; input++) {
        CHECK(VirtmemRestoreProcess(base, snap), "restore before input %d", input);
        run_input(base, data, stack, input);
    }
    /* The snapshot never changed: its data, its guard page still armed. */
    CHECK(ReadProcessMemory(snap, data, buf, 5, NULL) && memcmp(buf, "base!", 5) == 0, "snapshot data kept");
    CHECK(VirtualQueryEx(snap, stack, &mbi, sizeof mbi) == sizeof mbi && mbi.Protect == (PAGE_READWRITE | PAGE_GUARD),
          "snapshot guard page still armed");
    /* A restore brings back what the inputs undid. */
    CHECK(VirtmemRestoreProcess(base, snap), "restore after the inputs");
    CHECK(VirtualQueryEx(base, data, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_COMMIT, "data back");
    CHECK(VirtualQueryEx(base, stack, &mbi, sizeof mbi) == sizeof mbi && mbi.Protect == (PAGE_READWRITE | PAGE_GUARD),
          "guard page armed again");
    /* Any simulated process may be restored from any other, or from itself. */
    other = VirtmemCreateProcess();
    CHECK(other != NULL, "a second process");
    CHECK(VirtmemRestoreProcess(other, base), "restore one process from another");
    CHECK(ReadProcessMemory(other, data, buf, 5, NULL) && memcmp(buf, "base!", 5) == 0, "the other has the data");
    CHECK(VirtmemRestoreProcess(base, base), "restore a process from itself");
    CHECK(ReadProcessMemory(base, data, buf, 5, NULL) && memcmp(buf, "base!", 5) == 0, "unchanged");

    /* Handle errors, for either handle; a failed restore changes nothing. */
    CHECK_ERR(!VirtmemRestoreProcess(NULL, snap), ERROR_INVALID_HANDLE);
    CHECK_ERR(!VirtmemRestoreProcess(base, NULL), ERROR_INVALID_HANDLE);
    CHECK_ERR(!VirtmemRestoreProcess(GetCurrentProcess(), snap), ERROR_NOT_SUPPORTED);
    CHECK_ERR(!VirtmemRestoreProcess(base, GetCurrentProcess()), ERROR_NOT_SUPPORTED);
    CHECK(CloseHandle(other), "close the second process");
    CHECK_ERR(!VirtmemRestoreProcess(other, snap), ERROR_INVALID_HANDLE);
    CHECK_ERR(!VirtmemRestoreProcess(base, other), ERROR_INVALID_HANDLE);
    CHECK(TerminateProcess(snap, 0), "terminate the snapshot");
    CHECK_ERR(!VirtmemRestoreProcess(base, snap), ERROR_ACCESS_DENIED);
    CHECK(ReadProcessMemory(base, data, buf, 5, NULL) && memcmp(buf, "base!", 5) == 0, "a failed restore changes nothing");
    CHECK(TerminateProcess(base, 0), "terminate the base");
    CHECK_ERR(!VirtmemRestoreProcess(base, base), ERROR_ACCESS_DENIED);
    CHECK(CloseHandle(snap), "close the snapshot");
    CHECK(CloseHandle(base), "close the base");
    return check_summary();
}
