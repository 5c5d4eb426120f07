// test/vectors.h: read the reference-vector files written by test/vecio.py.
// vec_get(file, "name", &n) returns the float32 array (and its element count); a missing
// name or a bad file is an internal test failure (exit 1) with the file and name in the message.
#ifndef TEST_VECTORS_H
#define TEST_VECTORS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

typedef struct {
    char name[128];
    int ndim;
    int dims[8];
    size_t n;
    float* data;
} VecArray;

typedef struct {
    char path[512];
    int count;
    VecArray* arrays;
} VecFile;

static inline void vec_die_(const char* path, const char* what) {
    fprintf(stderr, "test vectors %s: %s (regenerate with `make reference`)\n", path, what);
    exit(1);
}

static inline VecFile vec_load(const char* path) {
    VecFile vf;
    memset(&vf, 0, sizeof(vf));
    snprintf(vf.path, sizeof(vf.path), "%s", path);
    FILE* f = fopen(path, "rb");
    if (!f) vec_die_(path, "cannot open");
    char magic[4];
    int32_t count;
    if (fread(magic, 1, 4, f) != 4 || memcmp(magic, "VEC1", 4) != 0) vec_die_(path, "bad magic");
    if (fread(&count, 4, 1, f) != 1 || count < 0) vec_die_(path, "bad count");
    vf.count = count;
    vf.arrays = (VecArray*)calloc((size_t)count + 1, sizeof(VecArray));
    for (int i = 0; i < count; i++) {
        VecArray* a = &vf.arrays[i];
        int32_t len, ndim, d;
        if (fread(&len, 4, 1, f) != 1 || len <= 0 || len >= 128) vec_die_(path, "bad name length");
        if (fread(a->name, 1, (size_t)len, f) != (size_t)len) vec_die_(path, "truncated name");
        if (fread(&ndim, 4, 1, f) != 1 || ndim < 0 || ndim > 8) vec_die_(path, "bad ndim");
        a->ndim = ndim;
        a->n = 1;
        for (int k = 0; k < ndim; k++) {
            if (fread(&d, 4, 1, f) != 1 || d < 0) vec_die_(path, "bad dim");
            a->dims[k] = d;
            a->n *= (size_t)d;
        }
        a->data = (float*)malloc(a->n * sizeof(float) + 1);
        if (fread(a->data, sizeof(float), a->n, f) != a->n) vec_die_(path, "truncated data");
    }
    fclose(f);
    return vf;
}

static inline float* vec_get(const VecFile* vf, const char* name, size_t* n) {
    for (int i = 0; i < vf->count; i++) {
        if (strcmp(vf->arrays[i].name, name) == 0) {
            if (n) *n = vf->arrays[i].n;
            return vf->arrays[i].data;
        }
    }
    char msg[256];
    snprintf(msg, sizeof(msg), "no array named '%s'", name);
    vec_die_(vf->path, msg);
    return NULL;
}

static inline void vec_free(VecFile* vf) {
    for (int i = 0; i < vf->count; i++) free(vf->arrays[i].data);
    free(vf->arrays);
    vf->arrays = NULL;
    vf->count = 0;
}

#endif
