/* compat.h - the only platform-specific part of the conformance scenarios.
 *
 * Every scenario is one C source that builds two ways:
 *   - as a Windows program (x86_64-w64-mingw32-gcc), run under Wine to record the goldens;
 *   - natively (gcc) against libvirtmem: include/virtmem.h, linked to libvirtmem.so.
 *
 * This header supplies what differs between the two: the API header, the fault probe
 * (how "touch this page" is observed) and the second process used by cross-process
 * cases. Everything printed is produced by common.h, identically on both sides.
 */
#ifndef CONF_COMPAT_H
#define CONF_COMPAT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#ifdef _WIN32
#include <windows.h>
#include <psapi.h>
#else
#include "virtmem.h"
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

/* What a probe does to the page. */
enum probe_kind { PROBE_READ, PROBE_WRITE, PROBE_EXEC };

/* Probe results. */
#define PROBE_OK 0
#define PROBE_FAULT 1 /* access violation */
#define PROBE_GUARD 2 /* guard-page violation */
#define PROBE_OTHER 3

#ifdef _WIN32

/* Windows: the access runs in this process under a vectored exception handler. The
 * probe instructions are tiny assembly stubs whose faulting instruction has a known
 * address and length, so the handler can skip it and report the exception code. The
 * probe changes nothing the program can observe except what Windows itself changes
 * (a touched guard page loses its guard bit; a write probe is a locked OR of zero,
 * which keeps the byte). */
__asm__(".text\n"
        ".globl conf_probe_read\n"
        "conf_probe_read:\n"
        ".globl conf_probe_read_insn\n"
        "conf_probe_read_insn:\n"
        "  movb (%rcx), %al\n"
        ".globl conf_probe_read_done\n"
        "conf_probe_read_done:\n"
        "  ret\n"
        ".globl conf_probe_write\n"
        "conf_probe_write:\n"
        ".globl conf_probe_write_insn\n"
        "conf_probe_write_insn:\n"
        "  lock orb $0, (%rcx)\n"
        ".globl conf_probe_write_done\n"
        "conf_probe_write_done:\n"
        "  ret\n");
extern void conf_probe_read(volatile void *p);
extern void conf_probe_write(volatile void *p);
extern char conf_probe_read_insn[], conf_probe_read_done[];
extern char conf_probe_write_insn[], conf_probe_write_done[];

static volatile DWORD conf_probe_code;
static volatile DWORD64 conf_exec_target;

static LONG CALLBACK conf_veh(EXCEPTION_POINTERS *ep)
{
    DWORD code = ep->ExceptionRecord->ExceptionCode;
    CONTEXT *c = ep->ContextRecord;
    if (code != EXCEPTION_ACCESS_VIOLATION && code != STATUS_GUARD_PAGE_VIOLATION)
        return EXCEPTION_CONTINUE_SEARCH;
    if (c->Rip == (DWORD64)conf_probe_read_insn)
        c->Rip = (DWORD64)conf_probe_read_done;
    else if (c->Rip == (DWORD64)conf_probe_write_insn)
        c->Rip = (DWORD64)conf_probe_write_done;
    else if (conf_exec_target && c->Rip == conf_exec_target) {
        /* the call landed on the page: return to the caller */
        c->Rip = *(DWORD64 *)c->Rsp;
        c->Rsp += 8;
    } else
        return EXCEPTION_CONTINUE_SEARCH;
    conf_probe_code = code;
    return EXCEPTION_CONTINUE_EXECUTION;
}

static int conf_probe(void *p, int kind)
{
    static PVOID handler;
    if (!handler)
        handler = AddVectoredExceptionHandler(1, conf_veh);
    conf_probe_code = 0;
    if (kind == PROBE_READ)
        conf_probe_read(p);
    else if (kind == PROBE_WRITE)
        conf_probe_write(p);
    else {
        conf_exec_target = (DWORD64)p;
        ((void (*)(void))p)();
        conf_exec_target = 0;
    }
    switch (conf_probe_code) {
    case 0: return PROBE_OK;
    case EXCEPTION_ACCESS_VIOLATION: return PROBE_FAULT;
    case STATUS_GUARD_PAGE_VIOLATION: return PROBE_GUARD;
    default: return PROBE_OTHER;
    }
}

/* A second process: this program started again, suspended; it never runs. */
static HANDLE conf_child_create(void)
{
    char path[MAX_PATH];
    STARTUPINFOA si;
    PROCESS_INFORMATION pi;
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    GetModuleFileNameA(NULL, path, sizeof path);
    if (!CreateProcessA(path, NULL, NULL, NULL, FALSE, CREATE_SUSPENDED, NULL, NULL, &si, &pi))
        return NULL;
    CloseHandle(pi.hThread);
    return pi.hProcess;
}

/* Limit what the second process may commit to `limit` more bytes than it has committed
 * now (SIZE_MAX: no limit): a job object's process-memory limit, which Windows enforces
 * with ERROR_COMMITMENT_LIMIT. */
static BOOL conf_child_commit_limit(HANDLE h, SIZE_T limit)
{
    static HANDLE job;
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION li;
    PROCESS_MEMORY_COUNTERS pmc;
    memset(&li, 0, sizeof li);
    if (limit != (SIZE_T)-1) {
        if (!K32GetProcessMemoryInfo(h, &pmc, sizeof pmc))
            return FALSE;
        li.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_PROCESS_MEMORY;
        li.ProcessMemoryLimit = pmc.PagefileUsage + limit;
    }
    if (!job) {
        job = CreateJobObjectA(NULL, NULL);
        if (!job || !AssignProcessToJobObject(job, h))
            return FALSE;
    }
    return SetInformationJobObject(job, JobObjectExtendedLimitInformation, &li, sizeof li);
}

/* Terminate the second process and wait until it is gone. */
static BOOL conf_child_kill(HANDLE h)
{
    BOOL ok = TerminateProcess(h, 0);
    if (ok)
        WaitForSingleObject(h, INFINITE);
    return ok;
}

#else /* native */

/* Native: a forked child touches the page and reports through its exit status, so the
 * hardware access is real and the parent's memory is not touched. When the child
 * faults, the parent asks libvirtmem what the access raises (VirtmemAccess, the engine's
 * checked access): a guard page reports STATUS_GUARD_PAGE_VIOLATION and is disarmed, as
 * the first access is on Windows; a page that faulted in hardware but that the engine
 * would allow is reported as "other", a mismatch. */
static int conf_child_touch(void *p, int kind);

static int conf_probe(void *p, int kind)
{
    static const DWORD kinds[] = {0 /* read */, 1 /* write */, 8 /* execute */};
    unsigned char byte = 0;
    DWORD raised;
    int r = conf_child_touch(p, kind);
    if (r != PROBE_FAULT)
        return r;
    raised = VirtmemAccess(GetCurrentProcess(), (ULONG_PTR)p, &byte, 1, kinds[kind], NULL);
    if (raised == STATUS_GUARD_PAGE_VIOLATION)
        return PROBE_GUARD;
    if (raised == STATUS_ACCESS_VIOLATION)
        return PROBE_FAULT;
    return PROBE_OTHER;
}

static int conf_child_touch(void *p, int kind)
{
    pid_t pid;
    int st;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        return PROBE_OTHER;
    if (pid == 0) {
        struct rlimit nocore = {0, 0};
        setrlimit(RLIMIT_CORE, &nocore);
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        if (kind == PROBE_READ)
            (void)*(volatile unsigned char *)p;
        else if (kind == PROBE_WRITE)
            __atomic_fetch_or((unsigned char *)p, 0, __ATOMIC_SEQ_CST);
        else
            ((void (*)(void))p)();
        _exit(0);
    }
    if (waitpid(pid, &st, 0) != pid)
        return PROBE_OTHER;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return PROBE_OK;
    if (WIFSIGNALED(st) && (WTERMSIG(st) == SIGSEGV || WTERMSIG(st) == SIGBUS))
        return PROBE_FAULT;
    return PROBE_OTHER;
}

/* A second process: a simulated address space from libvirtmem. */
static HANDLE conf_child_create(void) { return VirtmemCreateProcess(); }

static BOOL conf_child_kill(HANDLE h) { return TerminateProcess(h, 0); }

/* Limit what the simulated process may commit to `limit` bytes (it has committed nothing
 * else; SIZE_MAX: no limit). */
static BOOL conf_child_commit_limit(HANDLE h, SIZE_T limit) { return VirtmemSetCommitLimit(h, limit); }

#endif

#endif
