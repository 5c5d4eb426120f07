// common/logger.c: see logger.h.
#include <stdarg.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/time.h>
#include "common/logger.h"
#include "common/fileio.h"

int logger_open(Logger* lg, const char* dir, int append) {
    lg->f = NULL;
    if (!dir || !dir[0]) return 0;
    char path[1024], tmp[1100];
    snprintf(path, sizeof(path), "%s/log.jsonl", dir);
    int fd;
    if (!append) {
        // a fresh log is a new file renamed into place: whatever was at log.jsonl (a symlink, a FIFO)
        // is replaced, never followed or opened
        fd = fileio_create_temp(path, tmp, sizeof(tmp));
        if (fd < 0) return -1;
        if (rename(tmp, path) != 0) { int e = errno; close(fd); unlink(tmp); errno = e; return -1; }
    } else {
        // O_NONBLOCK: a FIFO at log.jsonl fails at once (ENXIO) instead of blocking; only a regular file
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0) return -1;
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { close(fd); errno = EINVAL; return -1; }
        fcntl(fd, F_SETFL, O_APPEND);
    }
    lg->f = fdopen(fd, append ? "a" : "w");
    if (!lg->f) { int e = errno; close(fd); errno = e; return -1; }
    return 0;
}

void logger_write(Logger* lg, const char* fmt, ...) {
    if (!lg->f) return;
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n <= 0 || n >= (int)sizeof(buf) || buf[n - 1] != '}') { lg->failed = 1; return; }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    buf[n - 1] = 0; // reopen the object to add the time as its last field
    char line[8300];
    int len = snprintf(line, sizeof(line), "%s%s\"time\":%.3f}\n", buf, n > 2 ? "," : "", tv.tv_sec + tv.tv_usec * 1e-6);
    if (lg->failed || len <= 0 || len >= (int)sizeof(line)) { lg->failed = 1; return; }
    // one record, whole or not at all: a short write (disk full) is cut back off the file, so that the
    // log ends in a complete line and a reader never meets torn JSON
    int fd = fileno(lg->f);
    off_t start = lseek(fd, 0, SEEK_END);
    ssize_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, line + done, (size_t)(len - done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += w;
    }
    if (done != len) {
        int e = errno;
        if (start >= 0 && ftruncate(fd, start) != 0) { /* nothing more to do: the run stops on lg->failed */ }
        errno = e;
        lg->failed = 1;
    }
}

// The integer after "step": in a record, or -1 without one.
static long record_step(const char* line) {
    const char* p = strstr(line, "\"step\":");
    return p ? strtol(p + 7, NULL, 10) : -1;
}

int logger_cut_back(const char* dir, int step) {
    char path[1100], tmp[1200];
    snprintf(path, sizeof(path), "%s/log.jsonl", dir);
    int ifd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); // a FIFO must not block the resume
    if (ifd < 0) return errno == ENOENT ? 0 : -1;            // no log yet: nothing to cut
    struct stat st;
    if (fstat(ifd, &st) != 0 || !S_ISREG(st.st_mode)) { close(ifd); errno = EINVAL; return -1; }
    fcntl(ifd, F_SETFL, 0);
    FILE* in = fdopen(ifd, "r");
    if (!in) { close(ifd); return -1; }
    int fd = fileio_create_temp(path, tmp, sizeof(tmp)); // a new file, never a planted log.jsonl.tmp
    FILE* out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) { int e = errno; if (fd >= 0) { close(fd); unlink(tmp); } fclose(in); errno = e; return -1; }
    char line[16384];
    int ok = 1;
    while (ok && fgets(line, sizeof(line), in)) {
        int end_of_run = strstr(line, "\"type\":\"summary\"") || strstr(line, "\"type\":\"interrupted\"");
        if (end_of_run || record_step(line) > step) continue;
        ok = fputs(line, out) >= 0;
    }
    fclose(in);
    ok = ok && fflush(out) == 0;
    ok = (fclose(out) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) { int e = errno; unlink(tmp); errno = e; return -1; }
    return 0;
}

void logger_close(Logger* lg) {
    if (lg->f) fclose(lg->f);
    lg->f = NULL;
}

void json_escape(const char* s, char* out, size_t outlen) {
    size_t j = 0;
    for (const unsigned char* p = (const unsigned char*)s; *p && j + 7 < outlen; p++) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') { out[j++] = '\\'; out[j++] = (char)c; }
        else if (c == '\n') { out[j++] = '\\'; out[j++] = 'n'; }
        else if (c == '\t') { out[j++] = '\\'; out[j++] = 't'; }
        else if (c == '\r') { out[j++] = '\\'; out[j++] = 'r'; }
        else if (c < 0x20) { j += (size_t)snprintf(out + j, outlen - j, "\\u%04x", c); }
        else out[j++] = (char)c;
    }
    out[j] = 0;
}
