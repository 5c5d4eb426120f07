// common/logger.h: DIR/log.jsonl, one JSON object per line (step, val, skip, sample, summary).
// Lines are flushed as written so a crash loses nothing already logged.
#ifndef COMMON_LOGGER_H
#define COMMON_LOGGER_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    FILE* f;
    int failed;          // a write failed (disk full, I/O error): the run must end, its log is incomplete
} Logger;

// Opens DIR/log.jsonl: a new file renamed into place (a fresh run: nothing that was there is followed),
// or the regular file there for appending (a resume; not a FIFO or device: EINVAL). 0 or -1 (errno set).
int logger_open(Logger* lg, const char* dir, int append);
// Writes a raw JSON object (the caller formats it, "{...}") followed by a newline; the wall-clock time
// ("time": Unix seconds) is added as its last field. A record is written whole or not at all (a short
// write is cut off the file again); a failed write sets lg->failed, and nothing more is written.
void logger_write(Logger* lg, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
// Before resuming from a checkpoint at `step`: cuts DIR/log.jsonl back to what that checkpoint had
// seen, so each step appears once: records with a "step" above it, and the ends of earlier runs
// (summary, interrupted), are dropped (through a new DIR/log.jsonl.tmp.XXXXXX and a rename). 0, or -1 (errno).
int logger_cut_back(const char* dir, int step);
void logger_close(Logger* lg);
// Escapes s as a JSON string body into out (always NUL-terminated).
void json_escape(const char* s, char* out, size_t outlen);

#ifdef __cplusplus
}
#endif

#endif
