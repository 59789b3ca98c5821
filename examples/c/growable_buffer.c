/* growable_buffer.c - a typical Windows reserve-then-commit growable buffer, ported to
 * Linux by changing one #include.
 *
 * The buffer reserves address space for its largest possible size once (so its address
 * never changes and pointers into it stay valid), and commits memory only as it grows:
 * a 1 GiB buffer holding 100 KiB costs 128 KiB of memory. Shrinking decommits the tail,
 * giving the memory back while keeping the reservation. This is the pattern of growable
 * arrays, arenas and GC heaps in Windows code.
 *
 * Build on Linux:   gcc growable_buffer.c $(pkg-config --cflags --libs virtmem)
 * Build on Windows: x86_64-w64-mingw32-gcc growable_buffer.c   (same source)
 */
#ifdef _WIN32
#include <windows.h>
#else
#include <virtmem.h>
#endif
#include <stdio.h>
#include <string.h>

#define COMMIT_CHUNK (64 * 1024) /* commit in 64 KiB steps */

typedef struct {
    unsigned char *base; /* start of the reservation */
    SIZE_T reserved;     /* bytes of address space reserved */
    SIZE_T committed;    /* bytes committed from base */
    SIZE_T used;         /* bytes in use */
} GrowableBuffer;

static void fail(const char *what)
{
    fprintf(stderr, "growable_buffer: %s failed, GetLastError() = %lu\n", what, (unsigned long)GetLastError());
}

static BOOL BufferInit(GrowableBuffer *b, SIZE_T max_size)
{
    b->base = VirtualAlloc(NULL, max_size, MEM_RESERVE, PAGE_NOACCESS);
    if (!b->base) {
        fail("VirtualAlloc(MEM_RESERVE)");
        return FALSE;
    }
    b->reserved = max_size;
    b->committed = 0;
    b->used = 0;
    return TRUE;
}

/* Make room for `extra` more bytes, committing whole chunks as needed. */
static BOOL BufferReserveExtra(GrowableBuffer *b, SIZE_T extra)
{
    SIZE_T need = b->used + extra, grow;
    if (need < b->used || need > b->reserved) {
        SetLastError(ERROR_NOT_ENOUGH_MEMORY);
        return FALSE;
    }
    if (need <= b->committed)
        return TRUE;
    grow = (need - b->committed + COMMIT_CHUNK - 1) / COMMIT_CHUNK * COMMIT_CHUNK;
    if (b->committed + grow > b->reserved)
        grow = b->reserved - b->committed;
    if (!VirtualAlloc(b->base + b->committed, grow, MEM_COMMIT, PAGE_READWRITE)) {
        fail("VirtualAlloc(MEM_COMMIT)");
        return FALSE;
    }
    b->committed += grow;
    return TRUE;
}

static BOOL BufferAppend(GrowableBuffer *b, const void *data, SIZE_T size)
{
    if (!BufferReserveExtra(b, size))
        return FALSE;
    memcpy(b->base + b->used, data, size);
    b->used += size;
    return TRUE;
}

/* Drop the contents beyond `size` and give back the committed memory past it. */
static BOOL BufferShrink(GrowableBuffer *b, SIZE_T size)
{
    SIZE_T keep = (size + COMMIT_CHUNK - 1) / COMMIT_CHUNK * COMMIT_CHUNK;
    if (size < b->used)
        b->used = size;
    if (keep < b->committed) {
        if (!VirtualFree(b->base + keep, b->committed - keep, MEM_DECOMMIT)) {
            fail("VirtualFree(MEM_DECOMMIT)");
            return FALSE;
        }
        b->committed = keep;
    }
    return TRUE;
}

static void BufferFree(GrowableBuffer *b)
{
    if (b->base && !VirtualFree(b->base, 0, MEM_RELEASE))
        fail("VirtualFree(MEM_RELEASE)");
    b->base = NULL;
}

/* What VirtualQuery says about the buffer: committed bytes from its base. */
static SIZE_T QueryCommitted(const GrowableBuffer *b)
{
    MEMORY_BASIC_INFORMATION mbi;
    if (VirtualQuery(b->base, &mbi, sizeof mbi) != sizeof mbi) {
        fail("VirtualQuery");
        return (SIZE_T)-1;
    }
    if (mbi.AllocationBase != b->base)
        return (SIZE_T)-1;
    return mbi.State == MEM_COMMIT ? mbi.RegionSize : 0;
}

int main(void)
{
    GrowableBuffer buf;
    char line[64];
    unsigned long sum = 0, expect = 0;
    SIZE_T i;
    int status = 1;

    if (!BufferInit(&buf, (SIZE_T)1 << 30)) /* 1 GiB of address space */
        return 1;
    printf("reserved %lu MiB at %p, committed %lu bytes\n", (unsigned long)(buf.reserved >> 20), (void *)buf.base,
           (unsigned long)QueryCommitted(&buf));

    /* Append 10,000 lines of text (about 233 KiB). */
    for (i = 0; i < 10000; i++) {
        int n = snprintf(line, sizeof line, "line %lu of the buffer\n", (unsigned long)i);
        if (!BufferAppend(&buf, line, (SIZE_T)n))
            goto out;
    }
    for (i = 0; i < buf.used; i++)
        sum += buf.base[i];
    printf("appended %lu bytes, committed %lu (VirtualQuery: %lu)\n", (unsigned long)buf.used,
           (unsigned long)buf.committed, (unsigned long)QueryCommitted(&buf));
    if (QueryCommitted(&buf) != buf.committed || buf.committed % COMMIT_CHUNK != 0 ||
        buf.committed - buf.used >= COMMIT_CHUNK) {
        fprintf(stderr, "growable_buffer: commit does not follow the contents\n");
        goto out;
    }

    /* Shrink to 10 KiB: the tail is decommitted, the start keeps its data. */
    if (!BufferShrink(&buf, 10 * 1024))
        goto out;
    for (i = 0; i < buf.used; i++)
        expect += buf.base[i];
    printf("shrunk to %lu bytes, committed %lu (VirtualQuery: %lu), first line: %.*s", (unsigned long)buf.used,
           (unsigned long)buf.committed, (unsigned long)QueryCommitted(&buf), 21, (const char *)buf.base);
    if (QueryCommitted(&buf) != COMMIT_CHUNK || memcmp(buf.base, "line 0 of the buffer\n", 21) != 0) {
        fprintf(stderr, "growable_buffer: shrinking lost data or kept memory\n");
        goto out;
    }

    /* Grow again: recommitted memory starts zeroed. */
    if (!BufferReserveExtra(&buf, 2 * COMMIT_CHUNK))
        goto out;
    if (buf.base[buf.committed - 1] != 0) {
        fprintf(stderr, "growable_buffer: recommitted memory is not zero\n");
        goto out;
    }
    printf("grew again: committed %lu, checksum of the first %lu bytes %lu (of all %lu)\n",
           (unsigned long)buf.committed, (unsigned long)buf.used, expect, sum);
    status = 0;
out:
    BufferFree(&buf);
    if (status == 0)
        printf("ok\n");
    return status;
}
