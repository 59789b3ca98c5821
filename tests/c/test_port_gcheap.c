/* test_port_gcheap.c - a GC heap segment ported from Windows as is: a reservation with
 * MEM_WRITE_WATCH, gen0 committed on demand, GetWriteWatch as the card table between
 * collections (bound through a WINAPI function pointer, as runtimes that look the export
 * up do), MEM_RESET and MEM_RESET_UNDO of a free span, decommit. The Windows types a GC
 * uses for its pointer arithmetic (PBYTE, LPBYTE, UINT_PTR, INT_PTR, LONG_PTR) come from
 * the header. */
#include <stdint.h>
#include <string.h>

#include "virtmem.h"
#include "check.h"

#define SEGMENT_SIZE (4u << 20)
#define GEN0_SIZE 0x40000u

typedef UINT(WINAPI *PFN_GET_WRITE_WATCH)(DWORD, PVOID, SIZE_T, PVOID *, PULONG_PTR, LPDWORD);
typedef UINT(WINAPI *PFN_RESET_WRITE_WATCH)(LPVOID, SIZE_T);

static PFN_GET_WRITE_WATCH pGetWriteWatch = GetWriteWatch;
static PFN_RESET_WRITE_WATCH pResetWriteWatch = ResetWriteWatch;

/* The pages written in [start, start + size) since the last call; resets what it reports. */
static ULONG_PTR dirty_cards(PBYTE start, SIZE_T size, PVOID *cards, ULONG_PTR capacity)
{
    ULONG_PTR count = capacity;
    DWORD granularity = 0;
    UINT r = pGetWriteWatch(WRITE_WATCH_FLAG_RESET, start, size, cards, &count, &granularity);
    CHECK(r == 0 && granularity == 4096, "GetWriteWatch: r=%u granularity=%u err=%u", r, granularity, GetLastError());
    return r == 0 ? count : 0;
}

int main(void)
{
    SYSTEM_INFO si;
    MEMORY_BASIC_INFORMATION mbi;
    PVOID cards[64];
    ULONG_PTR n;
    DWORD old;
    INT_PTR distance;
    LONG_PTR back;
    LPBYTE gen0;
    PBYTE seg;

    GetSystemInfo(&si);
    seg = (PBYTE)VirtualAlloc(NULL, SEGMENT_SIZE, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_READWRITE);
    CHECK(seg != NULL, "reserve the segment: err=%u", GetLastError());
    if (!seg)
        return check_summary();
    CHECK(((UINT_PTR)seg & (si.dwAllocationGranularity - 1)) == 0, "the segment is granule-aligned");
    gen0 = (LPBYTE)VirtualAlloc(seg, GEN0_SIZE, MEM_COMMIT, PAGE_READWRITE);
    CHECK(gen0 == seg, "commit gen0");
    CHECK(dirty_cards(seg, GEN0_SIZE, cards, 64) == 0, "nothing written yet");

    /* The mutator: one object in page 0, one straddling pages 2 and 3, one in page 9. */
    gen0[0x10] = 1;
    memcpy(gen0 + 3 * 4096 - 2, "\x01\x02\x03\x04", 4);
    gen0[9 * 4096 + 100] = 7;
    n = dirty_cards(seg, GEN0_SIZE, cards, 64);
    CHECK(n == 4 && cards[0] == seg && cards[1] == seg + 2 * 4096 && cards[2] == seg + 3 * 4096 &&
              cards[3] == seg + 9 * 4096,
          "the cards of the written pages, in order (%lu)", (unsigned long)n);
    distance = (PBYTE)cards[3] - seg;
    back = -distance;
    CHECK(distance == 9 * 4096 && seg - back == (PBYTE)cards[3], "INT_PTR / LONG_PTR arithmetic");
    CHECK(dirty_cards(seg, GEN0_SIZE, cards, 64) == 0, "the flag reset them");

    /* A capped card buffer: only the cards reported are reset. */
    for (int i = 0; i < 8; i++)
        gen0[i * 4096] = (BYTE)i;
    CHECK(dirty_cards(seg, GEN0_SIZE, cards, 3) == 3 && cards[2] == seg + 2 * 4096, "three cards");
    n = dirty_cards(seg, GEN0_SIZE, cards, 64);
    CHECK(n == 5 && cards[0] == seg + 3 * 4096, "the other five stayed dirty (%lu)", (unsigned long)n);
    CHECK(pResetWriteWatch(seg, GEN0_SIZE) == 0, "ResetWriteWatch");

    /* A free span after a collection: MEM_RESET, then reused with MEM_RESET_UNDO. */
    memset(gen0 + 0x20000, 0x5a, 0x10000);
    CHECK(VirtualAlloc(gen0 + 0x20000, 0x10000, MEM_RESET, PAGE_NOACCESS) == gen0 + 0x20000, "MEM_RESET");
    CHECK(VirtualQuery(gen0 + 0x20000, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_COMMIT &&
              mbi.Protect == PAGE_READWRITE,
          "a reset span keeps its state and protection");
    CHECK_ERR(!VirtualAlloc(gen0 + 0x20000, 0x10000, MEM_RESET | MEM_COMMIT, PAGE_READWRITE), ERROR_INVALID_PARAMETER);
    CHECK(VirtualAlloc(gen0 + 0x20000, 0x10000, MEM_RESET_UNDO, PAGE_READWRITE) == gen0 + 0x20000 &&
              gen0[0x20000] == 0x5a && gen0[0x2ffff] == 0x5a,
          "MEM_RESET_UNDO of a write-watched span: the data is intact (err=%u)", GetLastError());

    /* Decommitting clears the cards; protection changes keep them. */
    gen0[0x30000] = 1;
    CHECK(VirtualFree(gen0 + 0x30000, 0x10000, MEM_DECOMMIT), "decommit the tail");
    CHECK(VirtualAlloc(gen0 + 0x30000, 4096, MEM_COMMIT, PAGE_READWRITE) == gen0 + 0x30000 && gen0[0x30000] == 0,
          "recommit reads zero");
    n = dirty_cards(seg, GEN0_SIZE, cards, 64);
    CHECK(n == 16 && cards[0] == seg + 0x20000 && cards[15] == seg + 0x2f000,
          "only the memset span's 16 pages are dirty, not the decommitted page (%lu)", (unsigned long)n);
    gen0[0x30000] = 2;
    CHECK(VirtualProtect(gen0 + 0x30000, 4096, PAGE_READONLY, &old) && old == PAGE_READWRITE, "protect");
    CHECK(dirty_cards(seg, GEN0_SIZE, cards, 64) == 1 && cards[0] == seg + 0x30000, "still dirty after protect");

    CHECK(VirtualFree(seg, 0, MEM_DECOMMIT), "decommit the whole segment");
    CHECK(VirtualQuery(seg, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_RESERVE && mbi.RegionSize == SEGMENT_SIZE,
          "one reserved region");
    CHECK_ERR(!VirtualFree(seg + 4096, 0, MEM_RELEASE), ERROR_INVALID_ADDRESS);
    CHECK(VirtualFree(seg + 0x10, 0, MEM_RELEASE), "release from inside the first page");
    return check_summary();
}
