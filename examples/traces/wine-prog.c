#include <windows.h>
#include <stdio.h>
/* A small Windows program whose WINEDEBUG=+virtual log ships in examples/traces/:
   x86_64-w64-mingw32-gcc -O1 wine-prog.c -o prog.exe
   WINEDEBUG=+virtual wine prog.exe 2> wine-virtual.log */
int main(void) {
    SYSTEM_INFO si; GetSystemInfo(&si);
    char *big = VirtualAlloc(NULL, (SIZE_T)1 << 32, MEM_RESERVE, PAGE_NOACCESS);
    printf("reserve 4G -> %p\n", big);
    char *c = VirtualAlloc(big, 0x10000, MEM_COMMIT, PAGE_READWRITE);
    c[0] = 1;
    DWORD old;
    VirtualProtect(big + 0x1000, 0x1000, PAGE_READONLY | PAGE_GUARD, &old);
    printf("protect old=%lx\n", old);
    VirtualFree(big + 0x4000, 0x4000, MEM_DECOMMIT);
    BOOL ok = VirtualFree(big + 0x1000, 0, MEM_RELEASE);
    printf("bad free -> %d err %lu\n", ok, GetLastError());
    ok = VirtualProtect(big + 0x100000, 0x1000, PAGE_READWRITE, &old);
    printf("protect of reserved -> %d err %lu\n", ok, GetLastError());
    VirtualAlloc(big + 0x8000, 0x8000, MEM_RESET, PAGE_NOACCESS);
    MEMORY_BASIC_INFORMATION mbi; VirtualQuery(big, &mbi, sizeof mbi);
    char *ww = VirtualAlloc(NULL, 0x20000, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE);
    ww[0x3000] = 1;
    void *addrs[16]; ULONG_PTR n = 16; ULONG gran;
    GetWriteWatch(0, ww, 0x20000, addrs, &n, &gran);
    printf("ww %lu\n", (unsigned long)n);
    void *blocks[64];
    for (int i = 0; i < 64; i++) blocks[i] = VirtualAlloc(NULL, 0x3000 + i * 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    for (int i = 0; i < 64; i += 2) VirtualFree(blocks[i], 0, MEM_RELEASE);
    void *top = VirtualAlloc(NULL, 0x100000, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE);
    printf("top %p\n", top);
    VirtualFree(big, 0, MEM_RELEASE);
    return 0;
}
