/* check.h - a tiny test harness for the libvirtmem C tests.
 *
 * CHECK(cond, ...) records one check; a failure prints the file, line and message.
 * CHECK_ERR(call_failed, code) checks that a call failed with the given last error.
 * Each program ends with `return check_summary();`, which prints the closing line
 * "N passed, M failed" and returns non-zero if anything failed. */
#ifndef VIRTMEM_TEST_CHECK_H
#define VIRTMEM_TEST_CHECK_H

#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            check_passed++;                                                                        \
        } else {                                                                                   \
            check_failed++;                                                                        \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* The call (an expression that is true when the call failed) failed with `code`. */
#define CHECK_ERR(failed, code)                                                                    \
    do {                                                                                           \
        SetLastError(0xdead);                                                                      \
        int check_f_ = (failed);                                                                   \
        DWORD check_e_ = GetLastError();                                                           \
        CHECK(check_f_ && check_e_ == (DWORD)(code), "%s: expected failure %u, got %s err=%u",     \
              #failed, (unsigned)(code), check_f_ ? "failure" : "success", (unsigned)check_e_);    \
    } while (0)

static int check_summary(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed != 0;
}

#endif
