// data/dataloader.c: llm.c-format token shards: validate and load them, cut batches, write shards,
// and turn a text file into cached shards. See data/dataloader.h for the format and the contract.
// Shards are little-endian on disk; like llm.c we read them with the host's byte order (x86, ARM).
#include "data/dataloader.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

static void set_err(char* err, size_t errlen, const char* fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

// ------------------------------------------------------------------------------------------------
// Reading shards

typedef struct {
    uint64_t n_tokens;   // from the header
} ShardInfo;

// Check one shard's header against its size. f is open at offset 0; on success f is positioned at
// the first token. Returns 0, or -1 with a message naming the file.
static int shard_header(FILE* f, const char* path, ShardInfo* info, char* err, size_t errlen) {
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        set_err(err, errlen, "cannot stat data file '%s': %s", path, strerror(errno));
        return -1;
    }
    uint64_t size = (uint64_t)st.st_size;
    int32_t header[SHARD_HEADER_INTS];
    if (size < SHARD_HEADER_BYTES || fread_exact(header, sizeof(int32_t), SHARD_HEADER_INTS, f) != 0) {
        set_err(err, errlen, "data file '%s' is truncated or not a token shard: %llu bytes, less than the %d-byte header; "
                "re-create it (`make data` for the default dataset, or prepare_data)", path, (unsigned long long)size, SHARD_HEADER_BYTES);
        return -1;
    }
    if (header[0] != SHARD_MAGIC) {
        set_err(err, errlen, "data file '%s' is not a token shard: magic number %d, expected %d (llm.c's format); "
                "give a .bin written by prepare_data or llm.c, or a .txt file", path, header[0], SHARD_MAGIC);
        return -1;
    }
    if (header[1] != SHARD_VERSION) {
        set_err(err, errlen, "data file '%s' has shard version %d, but only version %d (uint16 tokens) is supported; "
                "re-create it with prepare_data", path, header[1], SHARD_VERSION);
        return -1;
    }
    if (header[2] < 0) {
        set_err(err, errlen, "data file '%s' has a negative token count (%d) in its header; re-create it with prepare_data", path, header[2]);
        return -1;
    }
    uint64_t want = SHARD_HEADER_BYTES + 2 * (uint64_t)header[2];
    if (size != want) {
        set_err(err, errlen, "data file '%s' is %s: its header says %d tokens (%llu bytes) but the file has %llu bytes; "
                "re-create it (`make data` for the default dataset, or prepare_data)", path,
                size < want ? "truncated" : "damaged", header[2], (unsigned long long)want, (unsigned long long)size);
        return -1;
    }
    info->n_tokens = (uint64_t)header[2];
    return 0;
}

// Opens a data file for reading only if it is a regular file. O_NONBLOCK so a FIFO is refused at
// once instead of blocking until a writer appears; the flag is cleared before reading.
static FILE* open_data_file(const char* path, char* err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "cannot open data file '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "cannot stat data file '%s': %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "data file '%s' is %s, not a token shard file; give a .bin shard (globs allowed, e.g. 'dir/*.bin') or a .txt file",
                path, S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO (named pipe)" : "not a regular file");
        close(fd);
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    FILE* f = fdopen(fd, "rb");
    if (!f) {
        set_err(err, errlen, "cannot open data file '%s': %s", path, strerror(errno));
        close(fd);
    }
    return f;
}

static void glob_error(const char* pattern, int rc, char* err, size_t errlen) {
    if (rc == GLOB_NOMATCH)
        set_err(err, errlen, "no data file matches '%s'; run `make data` for the default dataset, or give an existing "
                "token shard (.bin, globs allowed) or text file (.txt)", pattern);
    else
        set_err(err, errlen, "cannot list data files matching '%s' (glob error %d)", pattern, rc);
}

// Pass 1 of opening: every matching file's header checked against its size, token counts summed,
// and the total compared with one batch (B*T+1). On success g holds the file list (caller frees).
static int count_tokens(glob_t* g, const char* pattern, int B, int T, uint64_t* total_out, char* err, size_t errlen) {
    if (B <= 0 || T <= 0) {
        set_err(err, errlen, "batch size (%d) and sequence length (%d) must be positive", B, T);
        return -1;
    }
    int rc = glob(pattern, GLOB_ERR, NULL, g);
    if (rc != 0 || g->gl_pathc == 0) {
        glob_error(pattern, rc == 0 ? GLOB_NOMATCH : rc, err, errlen);
        if (rc == 0) globfree(g);
        return -1;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < g->gl_pathc; i++) {
        const char* path = g->gl_pathv[i];
        FILE* f = open_data_file(path, err, errlen);
        ShardInfo info;
        int bad = !f || shard_header(f, path, &info, err, errlen) != 0;
        if (f) fclose(f);
        if (bad) { globfree(g); return -1; }
        total += info.n_tokens;
    }
    uint64_t need = (uint64_t)B * (uint64_t)T + 1;
    if (total < need) {
        set_err(err, errlen, "data '%s' holds %llu tokens, fewer than the %llu one batch needs (B*T+1 with B=%d, T=%d); "
                "use a smaller batch size (-b) or sequence length (-t), or more data", pattern,
                (unsigned long long)total, (unsigned long long)need, B, T);
        globfree(g);
        return -1;
    }
    *total_out = total;
    return 0;
}

int dataloader_check(const char* pattern, int B, int T, uint64_t* n_tokens, char* err, size_t errlen) {
    glob_t g;
    uint64_t total = 0;
    if (count_tokens(&g, pattern, B, T, &total, err, errlen) != 0) return -1;
    globfree(&g);
    if (n_tokens) *n_tokens = total;
    return 0;
}

int dataloader_open(DataLoader* dl, const char* pattern, int B, int T, int vocab_size, char* err, size_t errlen) {
    memset(dl, 0, sizeof(*dl));
    if (vocab_size <= 0 || vocab_size > 65536) {
        set_err(err, errlen, "vocabulary size %d cannot be stored in uint16 shards (1..65536)", vocab_size);
        return -1;
    }
    glob_t g;
    uint64_t total = 0;
    if (count_tokens(&g, pattern, B, T, &total, err, errlen) != 0) return -1;
    // pass 2: read the tokens and check each is a valid id
    dl->tokens = xmalloc(total * sizeof(uint16_t));
    uint64_t at = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char* path = g.gl_pathv[i];
        FILE* f = open_data_file(path, err, errlen);
        ShardInfo info;
        if (!f || shard_header(f, path, &info, err, errlen) != 0) {  // changed since pass 1?
            if (f) fclose(f);
            goto fail;
        }
        uint16_t* dst = dl->tokens + at;
        int short_read = info.n_tokens > total - at || fread_exact(dst, sizeof(uint16_t), info.n_tokens, f) != 0;
        fclose(f);
        if (short_read) {
            set_err(err, errlen, "could not read the %llu tokens of data file '%s' (it changed while being read?)",
                    (unsigned long long)info.n_tokens, path);
            goto fail;
        }
        for (uint64_t j = 0; j < info.n_tokens; j++) {
            if (dst[j] >= vocab_size) {
                set_err(err, errlen, "data file '%s': token at position %llu is %u, not below the vocabulary size %d; "
                        "it was made with another tokenizer: re-create it with prepare_data", path,
                        (unsigned long long)j, (unsigned)dst[j], vocab_size);
                goto fail;
            }
        }
        at += info.n_tokens;
    }
    dl->B = B;
    dl->T = T;
    dl->n_tokens = total;
    dl->pos = 0;
    dl->n_files = (int)g.gl_pathc;
    snprintf(dl->pattern, sizeof(dl->pattern), "%s", pattern);
    globfree(&g);
    return 0;
fail:
    globfree(&g);
    free(dl->tokens);
    memset(dl, 0, sizeof(*dl));
    return -1;
}

void dataloader_next(DataLoader* dl, int* inputs, int* targets) {
    uint64_t bt = (uint64_t)dl->B * (uint64_t)dl->T;
    if (dl->pos + bt + 1 > dl->n_tokens) dl->pos = 0;  // wrap: the next epoch starts over
    const uint16_t* src = dl->tokens + dl->pos;
    for (uint64_t i = 0; i < bt; i++) {
        inputs[i] = src[i];
        targets[i] = src[i + 1];
    }
    dl->pos += bt;
}

void dataloader_reset(DataLoader* dl) { dl->pos = 0; }
uint64_t dataloader_position(const DataLoader* dl) { return dl->pos; }
uint64_t dataloader_num_tokens(const DataLoader* dl) { return dl->n_tokens; }
uint64_t dataloader_batches(const DataLoader* dl) {
    uint64_t bt = (uint64_t)dl->B * (uint64_t)dl->T;
    return bt && dl->n_tokens > 0 ? (dl->n_tokens - 1) / bt : 0;
}
size_t dataloader_bytes(const DataLoader* dl) { return (size_t)dl->n_tokens * sizeof(uint16_t); }

int dataloader_seek(DataLoader* dl, uint64_t pos) {
    if (pos > dl->n_tokens) return -1;
    dl->pos = pos;
    return 0;
}

void dataloader_free(DataLoader* dl) {
    free(dl->tokens);
    memset(dl, 0, sizeof(*dl));
}

// ------------------------------------------------------------------------------------------------
// Writing shards

int data_write_shard(const char* path, const int32_t* tokens, size_t n, char* err, size_t errlen) {
    if (n > INT32_MAX) {
        set_err(err, errlen, "cannot write '%s': %zu tokens do not fit one shard (at most %d)", path, n, INT32_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] > 65535) {
            set_err(err, errlen, "cannot write '%s': token %zu is %d, outside the uint16 range of a shard", path, i, tokens[i]);
            return -1;
        }
    }
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
        set_err(err, errlen, "cannot write '%s': path too long", path);
        return -1;
    }
    FILE* f = fopen(tmp, "wb");
    if (!f) {
        set_err(err, errlen, "cannot write '%s': %s", tmp, strerror(errno));
        return -1;
    }
    int32_t header[SHARD_HEADER_INTS] = {0};
    header[0] = SHARD_MAGIC;
    header[1] = SHARD_VERSION;
    header[2] = (int32_t)n;
    int ok = fwrite(header, sizeof(int32_t), SHARD_HEADER_INTS, f) == SHARD_HEADER_INTS;
    uint16_t buf[8192];
    for (size_t i = 0; ok && i < n; i += 8192) {
        size_t m = n - i < 8192 ? n - i : 8192;
        for (size_t j = 0; j < m; j++) buf[j] = (uint16_t)tokens[i + j];
        ok = fwrite(buf, sizeof(uint16_t), m, f) == m;
    }
    ok = (fflush(f) == 0) && ok;
    ok = (fsync(fileno(f)) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        set_err(err, errlen, "cannot write '%s': %s (disk full?)", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        set_err(err, errlen, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

// ------------------------------------------------------------------------------------------------
// Text file -> cached shards

static uint64_t fnv1a(const void* p, size_t n, uint64_t h) {
    const unsigned char* s = p;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ull; }
    return h;
}

// mkdir -p; returns 0 or -1 (errno set)
static int mkdir_p(const char* dir) {
    char buf[4096];
    if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf)) { errno = ENAMETOOLONG; return -1; }
    for (char* p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    return 0;
}

// A shard whose header matches its size (a complete cache entry).
static int shard_complete(const char* path) {
    FILE* f = fopen(path, "rb");
    if (!f) return 0;
    ShardInfo info;
    char err[16];
    int ok = shard_header(f, path, &info, err, sizeof(err)) == 0;
    fclose(f);
    return ok;
}

static char* read_text(const char* path, size_t size, char* err, size_t errlen) {
    FILE* f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "cannot read text file '%s': %s", path, strerror(errno));
        return NULL;
    }
    char* text = xmalloc(size + 1);
    if (fread_exact(text, 1, size, f) != 0) {
        set_err(err, errlen, "cannot read text file '%s': short read (%s)", path, ferror(f) ? strerror(errno) : "it changed while being read");
        fclose(f);
        free(text);
        return NULL;
    }
    fclose(f);
    text[size] = 0;
    return text;
}

int data_text_to_shards(const Tokenizer* t, const char* txt_path, const char* cache_dir, double val_fraction,
                        char* train_path_out, char* val_path_out, size_t pathlen, char* err, size_t errlen) {
    if (!(val_fraction >= 0.0 && val_fraction < 1.0)) {
        set_err(err, errlen, "validation fraction %g must be in [0, 1)", val_fraction);
        return -1;
    }
    struct stat st;
    char abs_path[PATH_MAX];
    if (stat(txt_path, &st) != 0 || !realpath(txt_path, abs_path)) {
        set_err(err, errlen, "cannot read text file '%s': %s", txt_path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "text file '%s' is not a regular file", txt_path);
        return -1;
    }
    if (st.st_size == 0) {
        set_err(err, errlen, "text file '%s' is empty; give a text file with some content", txt_path);
        return -1;
    }
    // cache key: what identifies this exact text and split
    char keytext[PATH_MAX + 128];
    int kl = snprintf(keytext, sizeof(keytext), "%s|%lld|%lld.%09ld|%.17g|v%d", abs_path, (long long)st.st_size,
                      (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec, val_fraction, tokenizer_vocab_size(t));
    uint64_t key = fnv1a(keytext, (size_t)kl, 1469598103934665603ull);
    // readable file names: the text's base name (safe characters only) plus the key
    const char* base = strrchr(abs_path, '/');
    base = base ? base + 1 : abs_path;
    char name[48];
    size_t nl = 0;
    for (const char* p = base; *p && nl < sizeof(name) - 1; p++) {
        char c = *p;
        int safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
        name[nl++] = safe ? c : '_';
    }
    name[nl] = 0;
    char train_path[4096], val_path[4096];
    snprintf(train_path, sizeof(train_path), "%s/%s-%016llx_train.bin", cache_dir, name, (unsigned long long)key);
    snprintf(val_path, sizeof(val_path), "%s/%s-%016llx_val.bin", cache_dir, name, (unsigned long long)key);
    if (strlen(train_path) >= pathlen) {
        set_err(err, errlen, "cache path '%s' is longer than the caller's buffer (%zu)", train_path, pathlen);
        return -1;
    }
    snprintf(train_path_out, pathlen, "%s", train_path);
    snprintf(val_path_out, pathlen, "%s", val_fraction > 0 ? val_path : "");
    if (shard_complete(train_path) && (val_fraction == 0 || shard_complete(val_path))) return 0;  // cached

    if (mkdir_p(cache_dir) != 0) {
        set_err(err, errlen, "cannot create cache directory '%s': %s", cache_dir, strerror(errno));
        return -1;
    }
    char* text = read_text(txt_path, (size_t)st.st_size, err, errlen);
    if (!text) return -1;
    size_t n_text;
    int32_t* text_ids = tokenizer_encode(t, text, (size_t)st.st_size, &n_text);
    free(text);
    // the stream: EOT, then the text (llm.c's shards start every document with EOT)
    int eot = tokenizer_eot(t);
    size_t n = n_text + (eot >= 0);
    int32_t* ids = xmalloc(n * sizeof(int32_t));
    if (eot >= 0) ids[0] = eot;
    memcpy(ids + (eot >= 0), text_ids, n_text * sizeof(int32_t));
    free(text_ids);
    size_t n_val = 0;
    if (val_fraction > 0) {
        n_val = (size_t)((double)n * val_fraction);
        if (n_val == 0) n_val = 1;
    }
    int rc = -1;
    if (n_val >= n) {
        set_err(err, errlen, "text file '%s' is too short: %zu tokens cannot be split into train and val", txt_path, n);
        goto done;
    }
    if (n_val > 0 && data_write_shard(val_path, ids + (n - n_val), n_val, err, errlen) != 0) goto done;
    if (data_write_shard(train_path, ids, n - n_val, err, errlen) != 0) goto done;
    rc = 0;
done:
    free(ids);
    return rc;
}
