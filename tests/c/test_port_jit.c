/* test_port_jit.c - a Windows JIT code buffer ported as is: reserve a region, commit as the
 * code grows, write with PAGE_READWRITE, flip to PAGE_EXECUTE_READ (checking the old
 * protection each time), FlushInstructionCache, run the generated x86-64 code. Also the
 * debugger idiom on a simulated process: WriteProcessMemory a breakpoint into code, then
 * FlushInstructionCache on that process's handle. */
#include <stdint.h>
#include <string.h>

#include "virtmem.h"
#include "check.h"

#define CODE_RESERVE (16u << 20)
#define COMMIT_STEP 0x10000u
#define SLOT 8

typedef int (*jitfn)(void);

static BYTE *code_base, *code_cursor, *code_committed;

/* Emit a function returning `value` (0..65535) and return it as a callable function (NULL
 * on failure). */
static jitfn emit_const(int value)
{
#if defined(__x86_64__)
    BYTE insn[6] = {0xB8, 0, 0, 0, 0, 0xC3}; /* mov eax, value; ret */
    memcpy(insn + 1, &value, 4);
#elif defined(__aarch64__)
    uint32_t words[2] = {0x52800000u | (uint32_t)value << 5, 0xD65F03C0u}; /* movz w0, #value; ret */
    BYTE insn[8];
    memcpy(insn, words, sizeof insn);
#else
#error "test_port_jit.c generates x86-64 or AArch64 code"
#endif
    DWORD old = 0xdeadbeef;
    BYTE *p = code_cursor;
    if (p + sizeof insn > code_committed) {
        LPVOID got = VirtualAlloc(code_committed, COMMIT_STEP, MEM_COMMIT, PAGE_READWRITE);
        CHECK(got == code_committed, "commit at %p: %p err=%u", (void *)code_committed, got, GetLastError());
        if (!got)
            return NULL;
        code_committed += COMMIT_STEP;
    }
    if (!VirtualProtect(p, sizeof insn, PAGE_READWRITE, &old)) {
        CHECK(0, "VirtualProtect RW at %p: err=%u", (void *)p, GetLastError());
        return NULL;
    }
    /* A fresh page is RW; a page already holding code is RX. */
    CHECK(old == PAGE_READWRITE || old == PAGE_EXECUTE_READ, "old protection %#x", old);
    memcpy(p, insn, sizeof insn);
    CHECK(VirtualProtect(p, sizeof insn, PAGE_EXECUTE_READ, &old) && old == PAGE_READWRITE, "to RX: old %#x", old);
    CHECK(FlushInstructionCache(GetCurrentProcess(), p, sizeof insn), "FlushInstructionCache err=%u",
          GetLastError());
    code_cursor += SLOT;
    return (jitfn)(void *)p;
}

static void test_jit_buffer(void)
{
    MEMORY_BASIC_INFORMATION mbi;
    int i, ran = 0;

    code_base = VirtualAlloc(NULL, CODE_RESERVE, MEM_RESERVE, PAGE_NOACCESS);
    CHECK(code_base != NULL, "reserve: err=%u", GetLastError());
    if (!code_base)
        return;
    code_cursor = code_committed = code_base;
    for (i = 0; i < 20000; i++) { /* 160 000 bytes of code: three commit steps */
        jitfn f = emit_const(i);
        if (!f)
            break;
        ran += f() == i;
    }
    CHECK(ran == 20000, "every generated function returned its constant (%d)", ran);
    CHECK(((jitfn)(void *)code_base)() == 0, "the first function still runs");

    CHECK(VirtualQuery(code_base, &mbi, sizeof mbi) == sizeof mbi, "query");
    CHECK(mbi.State == MEM_COMMIT && mbi.Protect == PAGE_EXECUTE_READ && mbi.RegionSize == 0x28000 &&
              mbi.AllocationProtect == PAGE_NOACCESS && mbi.Type == MEM_PRIVATE,
          "code region: state %#x protect %#x size %#zx", mbi.State, mbi.Protect, (size_t)mbi.RegionSize);
    /* The whole instruction cache (NULL, 0), as Windows allows. */
    CHECK(FlushInstructionCache(GetCurrentProcess(), NULL, 0), "flush everything: err=%u", GetLastError());
    CHECK(VirtualFree(code_base, 0, MEM_RELEASE), "release");
}

static void test_debugger_breakpoint(void)
{
    static const BYTE code[4] = {0x8D, 0x04, 0x37, 0xC3}; /* lea eax, [rdi+rsi]; ret */
    BYTE int3 = 0xCC, back[4];
    SIZE_T n = 0;
    HANDLE h = VirtmemCreateProcess();
    BYTE *p;
    CHECK(h != NULL, "VirtmemCreateProcess");
    p = VirtualAllocEx(h, NULL, 0x1000, MEM_COMMIT, PAGE_READWRITE);
    CHECK(p != NULL && WriteProcessMemory(h, p, code, sizeof code, &n) && n == sizeof code, "load code");
    {
        DWORD old;
        CHECK(VirtualProtectEx(h, p, 0x1000, PAGE_EXECUTE_READ, &old) && old == PAGE_READWRITE, "to RX");
    }
    CHECK(WriteProcessMemory(h, p, &int3, 1, &n) && n == 1, "plant the breakpoint");
    CHECK(FlushInstructionCache(h, p, 1), "flush the debuggee's instruction cache: err=%u", GetLastError());
    CHECK(ReadProcessMemory(h, p, back, sizeof back, &n) && back[0] == 0xCC && back[1] == 0x04, "breakpoint in");

    /* The handle rules of the Ex functions. */
    CHECK_ERR(!FlushInstructionCache(NULL, p, 1), ERROR_INVALID_HANDLE);
    CHECK(TerminateProcess(h, 0), "terminate");
    CHECK_ERR(!FlushInstructionCache(h, p, 1), ERROR_ACCESS_DENIED);
    CHECK(CloseHandle(h), "close");
    CHECK_ERR(!FlushInstructionCache(h, p, 1), ERROR_INVALID_HANDLE);
}

int main(void)
{
    test_jit_buffer();
    test_debugger_breakpoint();
    return check_summary();
}
