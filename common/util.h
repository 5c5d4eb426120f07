// common/util.h: error handling shared by every file.
//  - CHECK / xfopen: internal failures, reported with file:line, exit 1.
//  - xmalloc / xcalloc / xrealloc: out of memory is "error: out of memory (N MiB for file:line)", exit 2.
//  - user_error(): a user mistake (bad flag, bad file): one line saying what is wrong and
//    what to do, exit 2. Never a crash, never a partial write.
#ifndef COMMON_UTIL_H
#define COMMON_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>

#define EXIT_USER 2

// Defined by trainer/dist.c (weak here, so binaries without it still link): under MPI it ends every rank
// (MPI_Abort) so that one failing rank never leaves the others waiting in a collective.
#ifdef __cplusplus
extern "C"
#endif
void util_fatal_exit_hook(int code) __attribute__((weak));
static inline void fatal_exit_(int code) {
    if (util_fatal_exit_hook) util_fatal_exit_hook(code);
    exit(code);
}

static inline void check_fail_(const char* expr, const char* file, int line) {
    fprintf(stderr, "internal error at %s:%d: check failed: %s\n", file, line, expr);
    fatal_exit_(1);
}
#define CHECK(cond) do { if (!(cond)) check_fail_(#cond, __FILE__, __LINE__); } while (0)

// A user mistake: print "error: <message>" and exit with code 2.
static inline void user_error(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stdout);
    fatal_exit_(EXIT_USER);
}

// Out of memory outside the ledger (whose pre-flight names what does not fit): a user-sized problem
// (a model, batch or input too large for this machine), so exit 2 with the size and the place, never
// "internal error".
static inline void out_of_memory_(size_t bytes, const char* file, int line) {
    fprintf(stderr, "error: out of memory (%.1f MiB for %s:%d); use a smaller model, batch or input, or a machine with more memory\n",
            bytes / 1048576.0, file, line);
    fflush(stdout);
    fatal_exit_(EXIT_USER);
}
static inline void* xmalloc_(size_t n, const char* file, int line) {
    void* p = malloc(n ? n : 1);
    if (!p) out_of_memory_(n, file, line);
    return p;
}
static inline void* xcalloc_(size_t n, size_t sz, const char* file, int line) {
    void* p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) out_of_memory_(n > 0 && sz > (size_t)-1 / n ? (size_t)-1 : n * sz, file, line);
    return p;
}
static inline void* xrealloc_(void* old, size_t n, const char* file, int line) {
    void* p = realloc(old, n ? n : 1);
    if (!p) out_of_memory_(n, file, line);
    return p;
}
#define xmalloc(n) xmalloc_((n), __FILE__, __LINE__)
#define xcalloc(n, sz) xcalloc_((n), (sz), __FILE__, __LINE__)
#define xrealloc(p, n) xrealloc_((p), (n), __FILE__, __LINE__)

// Read exactly n bytes; returns 0 on success, -1 on a short read (the caller words the error).
static inline int fread_exact(void* dst, size_t size, size_t n, FILE* f) {
    return fread(dst, size, n, f) == n ? 0 : -1;
}

#endif
