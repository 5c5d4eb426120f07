// common/checkpoint.c: see checkpoint.h. Every read goes through read_layout(), which checks the
// header and the blob table against each other and against the file's length before anything is
// trusted; blob checksums are checked as the blobs are read.
#include <stdio.h>
#include <stdarg.h>
#include <string.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <unistd.h>
#include <libgen.h>
#include <sys/stat.h>
#include "common/checkpoint.h"
#include "common/crc32c.h"
#include "common/fileio.h"

_Static_assert(sizeof(CkptHeader) == 152, "the checkpoint header is a file format: its size is fixed");
_Static_assert(sizeof(CkptBlobInfo) == 48 && sizeof(CkptBlobInfo2) == 56, "blob table entries are a file format");

static void set_err(char* err, size_t errlen, const char* fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

// Opens a regular file for reading. O_NONBLOCK so that opening a FIFO returns at once instead of
// waiting for a writer; the flag is cleared again before reading. NULL with a message otherwise.
static FILE* open_regular(const char* path, uint64_t* size, char* err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) { set_err(err, errlen, "cannot open checkpoint %s: %s", path, strerror(errno)); return NULL; }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "cannot stat checkpoint %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "checkpoint %s is %s, not a checkpoint file", path, fileio_kind(st.st_mode));
        close(fd);
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    FILE* f = fdopen(fd, "rb");
    if (!f) { set_err(err, errlen, "cannot open checkpoint %s: %s", path, strerror(errno)); close(fd); return NULL; }
    *size = (uint64_t)st.st_size;
    return f;
}

// The last checkpoint file this process verified or wrote, as the file system names it: ckpt_save
// rotates PATH to its .prev name only when PATH is this file (or verifies now), so a damaged PATH
// (say, after a resume from .prev) never replaces a good .prev file.
static struct { char path[1100]; dev_t dev; ino_t ino; off_t size; struct timespec mtime, ctime; int set; } g_good;

static void remember_good(const char* path, const struct stat* st) {
    snprintf(g_good.path, sizeof(g_good.path), "%s", path);
    g_good.dev = st->st_dev; g_good.ino = st->st_ino; g_good.size = st->st_size;
    g_good.mtime = st->st_mtim; g_good.ctime = st->st_ctim;
    g_good.set = 1;
}

static int is_known_good(const char* path, const struct stat* st) {
    return g_good.set && !strcmp(g_good.path, path) && g_good.dev == st->st_dev && g_good.ino == st->st_ino &&
           g_good.size == st->st_size && g_good.mtime.tv_sec == st->st_mtim.tv_sec && g_good.mtime.tv_nsec == st->st_mtim.tv_nsec &&
           g_good.ctime.tv_sec == st->st_ctim.tv_sec && g_good.ctime.tv_nsec == st->st_ctim.tv_nsec;
}

static int nul_terminated(const char* s, size_t n) { return memchr(s, 0, n) != NULL; }

// The header's fields, each in its range (the blob table and the file length are checked by the
// caller). 0, or -1 with a message naming the field.
static int check_fields(const CkptHeader* h, const char* path, char* err, size_t errlen) {
#define BAD(...) do { char what_[256]; snprintf(what_, sizeof(what_), __VA_ARGS__); \
        set_err(err, errlen, "checkpoint %s is corrupt: %s", path, what_); return -1; } while (0)
    if (h->nblobs < 0 || h->nblobs > CKPT_MAX_BLOBS) BAD("%d blobs (at most %d)", h->nblobs, CKPT_MAX_BLOBS);
    if (h->num_layers < 1 || h->channels < 1 || h->num_heads < 1 || h->max_seq_len < 1)
        BAD("model shape L=%d C=%d heads=%d context=%d", h->num_layers, h->channels, h->num_heads, h->max_seq_len);
    if (h->vocab_size < 1 || h->padded_vocab_size < h->vocab_size)
        BAD("vocabulary %d padded to %d", h->vocab_size, h->padded_vocab_size);
    if (h->precision != 0 && h->precision != 1) BAD("precision %d (0 or 1)", h->precision);
    if (!nul_terminated(h->optimizer, sizeof(h->optimizer)) || !h->optimizer[0]) BAD("optimizer name");
    if (h->step < 0) BAD("step %d", h->step);
    if (h->total_steps < 0) BAD("total steps %d", h->total_steps);
    if (h->skipped_steps < 0 || h->skipped_steps > h->step) BAD("%d skipped steps at step %d", h->skipped_steps, h->step);
    if (h->num_params == 0 || h->num_params > ((uint64_t)1 << 48)) BAD("%llu parameters", (unsigned long long)h->num_params);
    // a step is at most INT_MAX tokens (-d is an int): more tokens than step x 2^31 is no run's count, and
    // the bound keeps every counter a resumed run adds to far from overflowing
    if (h->tokens_seen > (uint64_t)h->step << 31) BAD("tokens seen %llu after %d steps", (unsigned long long)h->tokens_seen, h->step);
    if (h->data_position > ((uint64_t)1 << 62)) BAD("data position %llu", (unsigned long long)h->data_position);
    if (h->version >= 2 && !isnan(h->run_lr) && !(isfinite(h->run_lr) && h->run_lr >= 0.0)) BAD("run flag -l %g", h->run_lr);
    if (h->run_B < 0 || h->run_T < 0 || h->run_total_batch < 0 || (h->run_sr != 0 && h->run_sr != 1))
        BAD("run flags -b %d -t %d -d %d -sr %d", h->run_B, h->run_T, h->run_total_batch, h->run_sr);
    return 0;
#undef BAD
}

// Reads and checks the header and the blob table (as version 2 entries; a version 1 table has crc 0).
// On success f is at the first blob's first byte.
static int read_layout(FILE* f, uint64_t size, const char* path, CkptHeader* h, CkptBlobInfo2* infos, char* err, size_t errlen) {
    if (fread(h, sizeof(*h), 1, f) != 1) {
        set_err(err, errlen, "checkpoint %s is truncated (%llu bytes, shorter than its %zu-byte header)", path,
                (unsigned long long)size, sizeof(*h));
        return -1;
    }
    if (memcmp(h->magic, CKPT_MAGIC, 8) != 0) {
        set_err(err, errlen, "%s is not a checkpoint of this trainer (bad magic)", path);
        return -1;
    }
    if (h->version != 1 && h->version != 2) {
        set_err(err, errlen, "checkpoint %s has version %d; this trainer reads versions 1 and 2", path, h->version);
        return -1;
    }
    if (h->nblobs < 0 || h->nblobs > CKPT_MAX_BLOBS) {
        set_err(err, errlen, "checkpoint %s is corrupt (%d blobs, at most %d)", path, h->nblobs, CKPT_MAX_BLOBS);
        return -1;
    }
    uint64_t table_bytes = (uint64_t)h->nblobs * (h->version == 1 ? sizeof(CkptBlobInfo) : sizeof(CkptBlobInfo2));
    if (size < sizeof(*h) + table_bytes) {
        set_err(err, errlen, "checkpoint %s is truncated (%llu bytes, shorter than its header and blob table)", path, (unsigned long long)size);
        return -1;
    }
    for (int i = 0; i < h->nblobs; i++) {
        if (h->version == 1) {
            CkptBlobInfo b;
            if (fread(&b, sizeof(b), 1, f) != 1) { set_err(err, errlen, "checkpoint %s: cannot read its blob table", path); return -1; }
            memcpy(infos[i].name, b.name, sizeof(b.name));
            infos[i].bytes = b.bytes;
            infos[i].crc = infos[i].reserved = 0;
        } else if (fread(&infos[i], sizeof(infos[i]), 1, f) != 1) {
            set_err(err, errlen, "checkpoint %s: cannot read its blob table", path);
            return -1;
        }
    }
    if (h->version == 1) {
        // these 32 bytes were reserved in version 1: whatever is there means nothing
        h->run_B = h->run_T = h->run_total_batch = h->run_sr = 0;
        h->run_lr = 0.0;
        h->header_crc = h->run_id = 0;
    } else {
        CkptHeader z = *h;
        z.header_crc = 0;
        uint32_t c = crc32c_update(crc32c(&z, sizeof(z)), infos, (size_t)h->nblobs * sizeof(CkptBlobInfo2));
        if (c != h->header_crc) {
            set_err(err, errlen, "checksum mismatch in the header of %s (stored %08x, computed %08x): the file is damaged",
                    path, h->header_crc, c);
            return -1;
        }
    }
    if (check_fields(h, path, err, errlen) != 0) return -1;
    uint64_t want = sizeof(*h) + table_bytes;
    for (int i = 0; i < h->nblobs; i++) {
        if (!nul_terminated(infos[i].name, sizeof(infos[i].name))) {
            set_err(err, errlen, "checkpoint %s is corrupt: blob %d has no valid name", path, i);
            return -1;
        }
        // saturating sum: a corrupt size cannot wrap the total around to the file's length
        want = infos[i].bytes > UINT64_MAX - want ? UINT64_MAX : want + infos[i].bytes;
        if (strcmp(infos[i].name, CKPT_WEIGHTS_BLOB) == 0 && infos[i].bytes != h->num_params * sizeof(float)) {
            set_err(err, errlen, "checkpoint %s is corrupt: it says %llu parameters but blob '%s' holds %llu bytes", path,
                    (unsigned long long)h->num_params, infos[i].name, (unsigned long long)infos[i].bytes);
            return -1;
        }
    }
    if (size != want) {
        if (size < want)
            set_err(err, errlen, "checkpoint %s is truncated: %llu bytes, its blob table needs %llu", path,
                    (unsigned long long)size, (unsigned long long)want);
        else
            set_err(err, errlen, "checkpoint %s is damaged: %llu bytes after its last blob (appended data?); the file must be exactly %llu bytes",
                    path, (unsigned long long)(size - want), (unsigned long long)want);
        return -1;
    }
    return 0;
}

static void v1_note(const char* path) {
    fprintf(stderr, "note: checkpoint %s is format version 1, which carries no checksums (damage cannot be detected); "
            "the next save writes version 2\n", path);
}

int ckpt_read_header(const char* path, CkptHeader* h, char* err, size_t errlen) {
    uint64_t size;
    FILE* f = open_regular(path, &size, err, errlen);
    if (!f) return -1;
    CkptBlobInfo2 infos[CKPT_MAX_BLOBS];
    int r = read_layout(f, size, path, h, infos, err, errlen);
    fclose(f);
    return r;
}

// Reads one blob (into dst, or through a scratch buffer when dst is NULL) and checks its checksum.
static int read_blob(FILE* f, const char* path, const CkptHeader* h, const CkptBlobInfo2* bi, void* dst, char* err, size_t errlen) {
    uint32_t c = 0;
    unsigned char scratch[1 << 16];
    for (uint64_t done = 0; done < bi->bytes;) {
        size_t chunk = dst ? (size_t)(bi->bytes - done) : (bi->bytes - done < sizeof(scratch) ? (size_t)(bi->bytes - done) : sizeof(scratch));
        unsigned char* p = dst ? (unsigned char*)dst + done : scratch;
        if (fread(p, 1, chunk, f) != chunk) {
            set_err(err, errlen, "checkpoint %s is truncated (in blob '%s')", path, bi->name);
            return -1;
        }
        if (h->version >= 2) c = crc32c_update(c, p, chunk);
        done += chunk;
    }
    if (h->version >= 2 && c != bi->crc) {
        set_err(err, errlen, "checksum mismatch in blob '%s' of %s (stored %08x, computed %08x): the file is damaged",
                bi->name, path, bi->crc, c);
        return -1;
    }
    return 0;
}

int ckpt_load(const char* path, CkptHeader* h, const CkptBlob* blobs, int nblobs, char* err, size_t errlen) {
    uint64_t size;
    FILE* f = open_regular(path, &size, err, errlen);
    if (!f) return -1;
    CkptBlobInfo2 infos[CKPT_MAX_BLOBS];
    int r = read_layout(f, size, path, h, infos, err, errlen);
    if (r == 0 && h->nblobs != nblobs) {
        set_err(err, errlen, "checkpoint %s holds %d tensors groups, this run expects %d (different optimizer or precision?)",
                path, h->nblobs, nblobs);
        r = -1;
    }
    for (int i = 0; r == 0 && i < nblobs; i++) {
        if (strncmp(infos[i].name, blobs[i].name, sizeof(infos[i].name)) != 0 || infos[i].bytes != blobs[i].bytes) {
            set_err(err, errlen, "checkpoint %s does not match this run: it has '%.40s' (%llu bytes) where this run has '%s' (%zu bytes); "
                    "resume with the same -model, -precision and -opt", path, infos[i].name,
                    (unsigned long long)infos[i].bytes, blobs[i].name, blobs[i].bytes);
            r = -1;
        }
    }
    for (int i = 0; r == 0 && i < nblobs; i++)
        if (blobs[i].bytes) r = read_blob(f, path, h, &infos[i], blobs[i].data, err, errlen);
    fclose(f);
    // the checksums prove the file is as written, not that what was written can train: never resume
    // from an inf or NaN weight (fp32 master or its bf16 working copy)
    char why[512];
    if (r == 0 && (!ckpt_blobs_finite(blobs, nblobs, CKPT_WEIGHTS_BLOB, why, sizeof(why)) ||
                   !ckpt_blobs_finite(blobs, nblobs, CKPT_WEIGHTS_BF16_BLOB, why, sizeof(why)))) {
        set_err(err, errlen, "checkpoint %s cannot be resumed: %s", path, why);
        r = -1;
    }
    if (r == 0 && h->version == 1) v1_note(path);
    return r;
}

int ckpt_verify(const char* path, CkptHeader* h_out, char* err, size_t errlen) {
    uint64_t size;
    FILE* f = open_regular(path, &size, err, errlen);
    if (!f) return -1;
    CkptHeader h;
    CkptBlobInfo2 infos[CKPT_MAX_BLOBS];
    int r = read_layout(f, size, path, &h, infos, err, errlen);
    for (int i = 0; r == 0 && h.version >= 2 && i < h.nblobs; i++) r = read_blob(f, path, &h, &infos[i], NULL, err, errlen);
    struct stat st;
    if (r == 0 && h.version >= 2 && fstat(fileno(f), &st) == 0) remember_good(path, &st);
    fclose(f);
    if (r == 0 && h_out) *h_out = h;
    return r;
}

void ckpt_prev_path(const char* path, char* out, size_t n) {
    const char* slash = strrchr(path, '/');
    const char* base = slash ? slash + 1 : path;
    const char* dot = strrchr(base, '.');
    if (!dot || dot == base) snprintf(out, n, "%s.prev", path);
    else snprintf(out, n, "%.*s.prev%s", (int)(dot - path), path, dot);
}

int ckpt_choose(const char* path, char* chosen, size_t n, char* warn, size_t wn, char* err, size_t en) {
    char e1[1024], e2[1024], prev[1100];
    if (warn && wn) warn[0] = 0;
    if (ckpt_verify(path, NULL, e1, sizeof(e1)) == 0) { snprintf(chosen, n, "%s", path); return 0; }
    ckpt_prev_path(path, prev, sizeof(prev));
    if (ckpt_verify(prev, NULL, e2, sizeof(e2)) == 0) {
        snprintf(chosen, n, "%s", prev);
        set_err(warn, wn, "%s; resuming from the previous checkpoint %s instead", e1, prev);
        return 0;
    }
    set_err(err, en, "no usable checkpoint: %s; and the previous one: %s", e1, e2);
    return -1;
}

int ckpt_blobs_finite(const CkptBlob* blobs, int nblobs, const char* name, char* err, size_t errlen) {
    for (int i = 0; i < nblobs; i++) {
        if (strcmp(blobs[i].name, name) != 0 || !blobs[i].data) continue;
        if (!strcmp(name, CKPT_WEIGHTS_BF16_BLOB)) { // bf16: the exponent's 8 bits all ones is an infinity or a NaN
            const uint16_t* x = (const uint16_t*)blobs[i].data;
            size_t count = blobs[i].bytes / sizeof(uint16_t);
            int bad = 0;
            for (size_t j = 0; j < count; j++) bad |= (x[j] & 0x7f80) == 0x7f80;
            if (!bad) continue;
            size_t j = 0;
            while (j < count && (x[j] & 0x7f80) != 0x7f80) j++;
            set_err(err, errlen, "'%s' holds a non-finite value (%s at element %zu)", name,
                    (x[j] & 0x7f) ? "nan" : (x[j] & 0x8000) ? "-inf" : "inf", j);
            return 0;
        }
        const float* x = (const float*)blobs[i].data;
        size_t count = blobs[i].bytes / sizeof(float);
        // branch-free scan (vectorizes); locate the element only when something is wrong
        int bad = 0;
        for (size_t j = 0; j < count; j++) bad |= !isfinite(x[j]);
        if (!bad) continue;
        size_t j = 0;
        while (j < count && isfinite(x[j])) j++;
        set_err(err, errlen, "'%s' holds a non-finite value (%g at element %zu)", name, (double)x[j], j);
        return 0;
    }
    return 1;
}

int ckpt_save(const char* path, const CkptHeader* h, const CkptBlob* blobs, int nblobs, char* err, size_t errlen) {
    if (nblobs < 0 || nblobs > CKPT_MAX_BLOBS) { set_err(err, errlen, "cannot write checkpoint %s: %d blobs", path, nblobs); return -1; }
    char why[512];
    if (!ckpt_blobs_finite(blobs, nblobs, CKPT_WEIGHTS_BLOB, why, sizeof(why)) ||
        !ckpt_blobs_finite(blobs, nblobs, CKPT_WEIGHTS_BF16_BLOB, why, sizeof(why))) {
        set_err(err, errlen, "not writing checkpoint %s: %s; the previous checkpoint is untouched", path, why);
        return -1;
    }
    CkptHeader hh = *h;
    memcpy(hh.magic, CKPT_MAGIC, 8);
    hh.version = CKPT_VERSION;
    hh.nblobs = nblobs;
    hh.header_crc = 0;
    CkptBlobInfo2 infos[CKPT_MAX_BLOBS];
    memset(infos, 0, sizeof(infos));
    for (int i = 0; i < nblobs; i++) {
        if (strlen(blobs[i].name) >= sizeof(infos[i].name)) {
            set_err(err, errlen, "cannot write checkpoint %s: blob name '%s' is too long", path, blobs[i].name);
            return -1;
        }
        snprintf(infos[i].name, sizeof(infos[i].name), "%s", blobs[i].name);
        infos[i].bytes = blobs[i].bytes;
        infos[i].crc = blobs[i].bytes ? crc32c(blobs[i].data, blobs[i].bytes) : 0;
        if (strcmp(blobs[i].name, CKPT_WEIGHTS_BLOB) == 0 && blobs[i].bytes != hh.num_params * sizeof(float)) {
            set_err(err, errlen, "cannot write checkpoint %s: '%s' is %zu bytes for %llu parameters", path, blobs[i].name,
                    blobs[i].bytes, (unsigned long long)hh.num_params);
            return -1;
        }
    }
    // never write what the reader would refuse
    if (check_fields(&hh, path, why, sizeof(why)) != 0) {
        set_err(err, errlen, "not writing checkpoint: %s (header as given)", why);
        return -1;
    }
    hh.header_crc = crc32c_update(crc32c(&hh, sizeof(hh)), infos, (size_t)nblobs * sizeof(CkptBlobInfo2));

    char tmp[1200], prev[1100];
    ckpt_prev_path(path, prev, sizeof(prev));
    // a new file under a new name (never a symlink or FIFO someone left at PATH.tmp)
    int fd = fileio_create_temp(path, tmp, sizeof(tmp));
    FILE* f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        set_err(err, errlen, "cannot write checkpoint %s.tmp.*: %s; the previous checkpoint is untouched", path, strerror(errno));
        if (fd >= 0) { close(fd); unlink(tmp); }
        return -1;
    }
    int ok = fwrite(&hh, sizeof(hh), 1, f) == 1;
    if (ok && nblobs) ok = fwrite(infos, sizeof(CkptBlobInfo2), (size_t)nblobs, f) == (size_t)nblobs;
    for (int i = 0; ok && i < nblobs; i++)
        if (blobs[i].bytes) ok = fwrite(blobs[i].data, 1, blobs[i].bytes, f) == blobs[i].bytes;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved_errno = errno;
    int close_ok = fclose(f) == 0;
    if (!ok || !close_ok) {
        set_err(err, errlen, "writing checkpoint %s failed (%s); the previous checkpoint is untouched", tmp, strerror(ok ? errno : saved_errno));
        unlink(tmp);
        return -1;
    }
    // keep the previous checkpoint: PATH -> PREV, then the new file -> PATH. A crash between the two
    // renames leaves PREV, and ckpt_choose resumes from it. PATH moves to PREV only when it is a
    // checkpoint known to verify (this process wrote or verified it, or it verifies now): a damaged
    // PATH, as after a resume from PREV, is replaced in place, so that PREV stays the good one.
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        char why2[1024];
        int good = is_known_good(path, &st) || ckpt_verify(path, NULL, why2, sizeof(why2)) == 0;
        if (good && rename(path, prev) != 0) {
            set_err(err, errlen, "cannot keep the previous checkpoint (rename %s to %s: %s); it is untouched", path, prev, strerror(errno));
            unlink(tmp);
            return -1;
        }
    }
    if (rename(tmp, path) != 0) {
        set_err(err, errlen, "cannot rename %s to %s: %s; the previous checkpoint is %s", tmp, path, strerror(errno), prev);
        unlink(tmp);
        return -1;
    }
    fileio_sync_dir(path);
    if (lstat(path, &st) == 0) remember_good(path, &st);
    return 0;
}

int ckpt_load_blob(const char* path, const char* name, void* dst, size_t bytes, char* err, size_t errlen) {
    uint64_t size;
    FILE* f = open_regular(path, &size, err, errlen);
    if (!f) return -1;
    CkptHeader h;
    CkptBlobInfo2 infos[CKPT_MAX_BLOBS];
    int r = read_layout(f, size, path, &h, infos, err, errlen);
    uint64_t offset = 0;
    int found = -1;
    for (int i = 0; r == 0 && i < h.nblobs && found < 0; i++) {
        if (strncmp(infos[i].name, name, sizeof(infos[i].name)) == 0) found = i;
        else offset += infos[i].bytes;
    }
    if (r == 0 && found < 0) { set_err(err, errlen, "checkpoint %s has no '%s'", path, name); r = -1; }
    if (r == 0 && infos[found].bytes != bytes) {
        set_err(err, errlen, "checkpoint %s holds '%s' of %llu bytes, this run needs %zu (another model?)", path, name,
                (unsigned long long)infos[found].bytes, bytes);
        r = -1;
    }
    if (r == 0 && fseeko(f, (off_t)offset, SEEK_CUR) != 0) { set_err(err, errlen, "checkpoint %s: cannot seek to '%s'", path, name); r = -1; }
    if (r == 0) r = read_blob(f, path, &h, &infos[found], dst, err, errlen);
    fclose(f);
    return r;
}
