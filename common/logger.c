// common/logger.c: see logger.h.
#include <stdarg.h>
#include <string.h>
#include "logger.h"

int logger_open(Logger* lg, const char* dir, int append) {
    lg->f = NULL;
    if (!dir || !dir[0]) return 0;
    char path[1024];
    snprintf(path, sizeof(path), "%s/log.jsonl", dir);
    lg->f = fopen(path, append ? "a" : "w");
    return lg->f ? 0 : -1;
}

void logger_write(Logger* lg, const char* fmt, ...) {
    if (!lg->f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(lg->f, fmt, ap);
    va_end(ap);
    fputc('\n', lg->f);
    fflush(lg->f);
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
