// common/logger.h: DIR/log.jsonl, one JSON object per line (step, val, skip, sample, summary).
// Lines are flushed as written so a crash loses nothing already logged.
#ifndef COMMON_LOGGER_H
#define COMMON_LOGGER_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct { FILE* f; } Logger;

// Opens DIR/log.jsonl (append when resuming, else truncate). Returns 0 or -1 (errno set).
int logger_open(Logger* lg, const char* dir, int append);
// Writes a raw JSON object (the caller formats it) followed by a newline.
void logger_write(Logger* lg, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void logger_close(Logger* lg);
// Escapes s as a JSON string body into out (always NUL-terminated).
void json_escape(const char* s, char* out, size_t outlen);

#ifdef __cplusplus
}
#endif

#endif
