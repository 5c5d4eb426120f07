// common/checkpoint.c: see checkpoint.h.
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include "checkpoint.h"

int ckpt_save(const char* path, const CkptHeader* h, const CkptBlob* blobs, int nblobs, char* err, size_t errlen) {
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE* f = fopen(tmp, "wb");
    if (!f) { snprintf(err, errlen, "cannot write checkpoint %s: %s", tmp, strerror(errno)); return -1; }
    CkptHeader hh = *h;
    memcpy(hh.magic, CKPT_MAGIC, 8);
    hh.version = CKPT_VERSION;
    hh.nblobs = nblobs;
    int ok = fwrite(&hh, sizeof(hh), 1, f) == 1;
    for (int i = 0; ok && i < nblobs; i++) {
        CkptBlobInfo bi;
        memset(&bi, 0, sizeof(bi));
        snprintf(bi.name, sizeof(bi.name), "%s", blobs[i].name);
        bi.bytes = blobs[i].bytes;
        ok = fwrite(&bi, sizeof(bi), 1, f) == 1;
    }
    for (int i = 0; ok && i < nblobs; i++)
        if (blobs[i].bytes) ok = fwrite(blobs[i].data, 1, blobs[i].bytes, f) == blobs[i].bytes;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int close_ok = fclose(f) == 0;
    if (!ok || !close_ok) {
        snprintf(err, errlen, "writing checkpoint %s failed (%s); the previous checkpoint is untouched", tmp, strerror(errno));
        remove(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

static int read_header_f(FILE* f, const char* path, CkptHeader* h, char* err, size_t errlen) {
    if (fread(h, sizeof(*h), 1, f) != 1) {
        snprintf(err, errlen, "checkpoint %s is truncated (shorter than its header)", path);
        return -1;
    }
    if (memcmp(h->magic, CKPT_MAGIC, 8) != 0) {
        snprintf(err, errlen, "%s is not a checkpoint of this trainer (bad magic)", path);
        return -1;
    }
    if (h->version != CKPT_VERSION) {
        snprintf(err, errlen, "checkpoint %s has version %d; this trainer reads version %d", path, h->version, CKPT_VERSION);
        return -1;
    }
    if (h->nblobs < 0 || h->nblobs > CKPT_MAX_BLOBS) {
        snprintf(err, errlen, "checkpoint %s is corrupt (%d blobs)", path, h->nblobs);
        return -1;
    }
    return 0;
}

int ckpt_read_header(const char* path, CkptHeader* h, char* err, size_t errlen) {
    FILE* f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "cannot open checkpoint %s: %s", path, strerror(errno)); return -1; }
    int r = read_header_f(f, path, h, err, errlen);
    fclose(f);
    return r;
}

int ckpt_load(const char* path, CkptHeader* h, const CkptBlob* blobs, int nblobs, char* err, size_t errlen) {
    FILE* f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "cannot open checkpoint %s: %s", path, strerror(errno)); return -1; }
    int r = read_header_f(f, path, h, err, errlen);
    if (r == 0 && h->nblobs != nblobs) {
        snprintf(err, errlen, "checkpoint %s holds %d tensors groups, this run expects %d (different optimizer or precision?)",
                 path, h->nblobs, nblobs);
        r = -1;
    }
    CkptBlobInfo infos[CKPT_MAX_BLOBS];
    for (int i = 0; r == 0 && i < nblobs; i++) {
        if (fread(&infos[i], sizeof(infos[i]), 1, f) != 1) {
            snprintf(err, errlen, "checkpoint %s is truncated", path);
            r = -1;
        } else if (strncmp(infos[i].name, blobs[i].name, sizeof(infos[i].name)) != 0 || infos[i].bytes != blobs[i].bytes) {
            snprintf(err, errlen, "checkpoint %s does not match this run: it has '%.40s' (%llu bytes) where this run has '%s' (%zu bytes); "
                     "resume with the same -model, -precision and -opt", path, infos[i].name,
                     (unsigned long long)infos[i].bytes, blobs[i].name, blobs[i].bytes);
            r = -1;
        }
    }
    for (int i = 0; r == 0 && i < nblobs; i++) {
        if (blobs[i].bytes && fread(blobs[i].data, 1, blobs[i].bytes, f) != blobs[i].bytes) {
            snprintf(err, errlen, "checkpoint %s is truncated (in '%s')", path, blobs[i].name);
            r = -1;
        }
    }
    fclose(f);
    return r;
}

int ckpt_load_blob(const char* path, const char* name, void* dst, size_t bytes, char* err, size_t errlen) {
    CkptHeader h;
    FILE* f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "cannot open checkpoint %s: %s", path, strerror(errno)); return -1; }
    int r = read_header_f(f, path, &h, err, errlen);
    CkptBlobInfo infos[CKPT_MAX_BLOBS];
    for (int i = 0; r == 0 && i < h.nblobs; i++)
        if (fread(&infos[i], sizeof(infos[i]), 1, f) != 1) { snprintf(err, errlen, "checkpoint %s is truncated", path); r = -1; }
    uint64_t offset = 0;
    int found = -1;
    for (int i = 0; r == 0 && i < h.nblobs && found < 0; i++) {
        if (strncmp(infos[i].name, name, sizeof(infos[i].name)) == 0) found = i;
        else offset += infos[i].bytes;
    }
    if (r == 0 && found < 0) { snprintf(err, errlen, "checkpoint %s has no '%s'", path, name); r = -1; }
    if (r == 0 && infos[found].bytes != bytes) {
        snprintf(err, errlen, "checkpoint %s holds '%s' of %llu bytes, this run needs %zu (another model?)", path, name,
                 (unsigned long long)infos[found].bytes, bytes);
        r = -1;
    }
    if (r == 0 && (fseek(f, (long)offset, SEEK_CUR) != 0 || fread(dst, 1, bytes, f) != bytes)) {
        snprintf(err, errlen, "checkpoint %s is truncated (in '%s')", path, name);
        r = -1;
    }
    fclose(f);
    return r;
}
