/* test_port_guardstack.c - a Windows growable stack ported as is: reserve, commit the top,
 * arm PAGE_GUARD on the page below; a push that meets the guard page grows the stack by
 * one page and moves the guard down. On real memory a CPU touch of a guard page is a
 * SIGSEGV (README, Known limits), so the pushes are checked accesses: VirtmemAccess, which
 * gives Windows' one-shot STATUS_GUARD_PAGE_VIOLATION. Also what ReadProcessMemory on the
 * current process (the "safe copy" idiom) does with a guard page. */
#include <string.h>

#include "virtmem.h"
#include "check.h"

#define PAGE 0x1000u
#define STACK_RESERVE (1u << 20)

static BYTE *stack_base, *guard; /* committed: [guard + PAGE, stack_base + STACK_RESERVE) */

/* The guard page fired: it is an ordinary page now; arm the next one down. */
static BOOL grow(void)
{
    DWORD old;
    BYTE *next = guard - PAGE;
    if (next < stack_base)
        return FALSE;
    if (!VirtualProtect(guard, PAGE, PAGE_READWRITE, &old) || old != PAGE_READWRITE)
        return FALSE;
    if (VirtualAlloc(next, PAGE, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD) != next)
        return FALSE;
    guard = next;
    return TRUE;
}

int main(void)
{
    MEMORY_BASIC_INFORMATION mbi;
    HANDLE self = GetCurrentProcess();
    BYTE frame[16] = {1, 2, 3}, back[16];
    ULONG_PTR fault = 0;
    SIZE_T n = 77;
    DWORD old, st;
    BYTE *sp;
    int grown = 0;

    stack_base = VirtualAlloc(NULL, STACK_RESERVE, MEM_RESERVE, PAGE_READWRITE);
    CHECK(stack_base != NULL, "reserve: err=%u", GetLastError());
    if (!stack_base)
        return check_summary();
    guard = stack_base + STACK_RESERVE - 3 * PAGE;
    CHECK(VirtualAlloc(guard + PAGE, 2 * PAGE, MEM_COMMIT, PAGE_READWRITE) == guard + PAGE, "commit the top");
    CHECK(VirtualAlloc(guard, PAGE, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD) == guard, "commit the guard page");
    CHECK(VirtualQuery(guard, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_COMMIT &&
              mbi.Protect == (PAGE_READWRITE | PAGE_GUARD) && mbi.RegionSize == PAGE,
          "the guard page: protect %#x", mbi.Protect);
    CHECK(VirtualProtect(guard, 2 * PAGE, PAGE_READWRITE | PAGE_GUARD, &old) && old == (PAGE_READWRITE | PAGE_GUARD),
          "the old protection keeps the guard bit: %#x", old);
    CHECK(VirtualProtect(guard + PAGE, PAGE, PAGE_READWRITE, &old) && old == (PAGE_READWRITE | PAGE_GUARD), "undo");

    /* ReadProcessMemory meets the armed guard: 299, nothing read, the guard goes. */
    CHECK_ERR(!ReadProcessMemory(self, guard + 8, back, 8, &n), ERROR_PARTIAL_COPY);
    CHECK(n == 0, "nothing read: %zu", (size_t)n);
    CHECK(VirtualQuery(guard, &mbi, sizeof mbi) == sizeof mbi && mbi.Protect == PAGE_READWRITE,
          "the guard is disarmed: %#x", mbi.Protect);
    CHECK(VirtualProtect(guard, PAGE, PAGE_READWRITE | PAGE_GUARD, &old) && old == PAGE_READWRITE, "re-arm");

    /* Push frames downwards; each guard hit grows the stack, then the push is retried. */
    for (sp = guard + PAGE - sizeof frame; sp >= stack_base + STACK_RESERVE - 16 * PAGE;) {
        st = VirtmemAccess(self, (ULONG_PTR)sp, frame, sizeof frame, VIRTMEM_ACCESS_WRITE, &fault);
        if (st == STATUS_GUARD_PAGE_VIOLATION) {
            CHECK(fault == (ULONG_PTR)sp, "the fault is the first byte touched: %#lx", (unsigned long)fault);
            CHECK(grow(), "grow below %p", (void *)guard);
            grown++;
            continue;
        }
        CHECK(st == 0, "push at %p: %#x", (void *)sp, st);
        if (st != 0)
            break;
        CHECK(memcmp(sp, frame, sizeof frame) == 0, "the frame is in memory");
        sp -= PAGE;
    }
    CHECK(grown == 14, "one growth per page pushed into (%d)", grown);
    CHECK(VirtualQuery(guard + PAGE, &mbi, sizeof mbi) == sizeof mbi && mbi.Protect == PAGE_READWRITE &&
              (BYTE *)mbi.BaseAddress + mbi.RegionSize == stack_base + STACK_RESERVE,
          "the committed stack is one read-write region");
    CHECK(VirtualQuery(stack_base, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_RESERVE &&
              (BYTE *)mbi.BaseAddress + mbi.RegionSize == guard,
          "reserved up to the guard page");
    CHECK(VirtualFree(stack_base, 0, MEM_RELEASE), "release");
    return check_summary();
}
