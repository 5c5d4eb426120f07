// test/fuzz/driver.c: a seeded, deterministic mutation fuzzer for the targets in test/fuzz/ (each
// defines LLVMFuzzerTestOneInput). It reads the seed files of the corpus directories given, runs each
// seed as is, then -n mutated inputs: each is a seed changed by 1 to 4 stacked mutations (bit flips,
// byte sets, "interesting" integers, truncation, insertion, deletion, duplication, splices with
// another seed), drawn from a splitmix64 stream started at -seed. Same seed, same corpus, same
// inputs: a finding reproduces with the iteration number printed when it happened, and
// -save DIR writes the input that was running when a sanitizer stopped the process.
//   usage: fuzz_X [-n ITERS] [-seed S] [-t SECONDS] [-max BYTES] [-save DIR] CORPUS_DIR...
// Prints one line: "fuzz_X: N inputs (S seeds) in T s, 0 findings" (a finding aborts with a report).
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include "test/fuzz/fuzz.h"

typedef struct { uint8_t* p; size_t n; } Buf;

static uint64_t rng_state;
static uint64_t next64(void) {  // splitmix64
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(next64() % n) : 0; }

static Buf* seeds;
static int nseeds;

static void add_seed(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return;
    FILE* f = fopen(path, "rb");
    if (!f) return;
    Buf b = { malloc((size_t)st.st_size + 1), (size_t)st.st_size };
    if (fread(b.p, 1, b.n, f) != b.n) { fclose(f); free(b.p); return; }
    fclose(f);
    seeds = realloc(seeds, sizeof(Buf) * (size_t)(nseeds + 1));
    seeds[nseeds++] = b;
}

static int cmp_str(const void* a, const void* b) { return strcmp(*(char* const*)a, *(char* const*)b); }

// Seeds in file-name order, so the run does not depend on the directory's order.
static void load_dir(const char* dir) {
    DIR* d = opendir(dir);
    if (!d) { add_seed(dir); return; }
    char** names = NULL;
    int n = 0;
    for (struct dirent* e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        names = realloc(names, sizeof(char*) * (size_t)(n + 1));
        names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        sprintf(names[n++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(char*), cmp_str);
    for (int i = 0; i < n; i++) { add_seed(names[i]); free(names[i]); }
    free(names);
}

// ---- mutations: each keeps buf->n <= cap
static void mutate_once(Buf* b, size_t cap) {
    static const int64_t interesting[] = { 0, 1, -1, 2, 16, 32, 64, 127, 128, 255, 256, 1023, 1024, 4096, 32767, 32768, 65535, 65536,
                                           2147483647ll, -2147483648ll, 20240520, 50256, 50257, 50304 };
    int op = (int)below(10);
    size_t n = b->n;
    switch (op) {
    case 0: case 1:  // flip one bit
        if (n) b->p[below(n)] ^= (uint8_t)(1u << below(8));
        break;
    case 2:  // set a byte
        if (n) b->p[below(n)] = (uint8_t)next64();
        break;
    case 3: {  // an interesting integer, 1/2/4/8 bytes, little-endian, often at an aligned offset
        size_t w = (size_t)1 << below(4);
        if (n < w) break;
        size_t at = below(n - w + 1);
        if (next64() & 1) at &= ~(w - 1);
        int64_t v = interesting[below(sizeof(interesting) / sizeof(interesting[0]))];
        memcpy(b->p + at, &v, w);
        break;
    }
    case 4:  // truncate
        b->n = below(n + 1);
        break;
    case 5: {  // insert random bytes
        size_t k = 1 + below(16);
        if (n + k > cap) break;
        size_t at = below(n + 1);
        memmove(b->p + at + k, b->p + at, n - at);
        for (size_t i = 0; i < k; i++) b->p[at + i] = (uint8_t)next64();
        b->n = n + k;
        break;
    }
    case 6: {  // delete a range
        if (!n) break;
        size_t at = below(n), k = 1 + below(n - at < 64 ? n - at : 64);
        memmove(b->p + at, b->p + at + k, n - at - k);
        b->n = n - k;
        break;
    }
    case 7: {  // duplicate a range
        if (!n) break;
        size_t at = below(n), k = 1 + below(n - at < 64 ? n - at : 64);
        if (n + k > cap) break;
        size_t to = below(n + 1);
        uint8_t tmp[64];
        memcpy(tmp, b->p + at, k);
        memmove(b->p + to + k, b->p + to, n - to);
        memcpy(b->p + to, tmp, k);
        b->n = n + k;
        break;
    }
    case 8: {  // splice: this input up to a point, then another seed from a point
        const Buf* o = &seeds[below((size_t)nseeds)];
        size_t at = below(n + 1), from = below(o->n + 1), k = o->n - from;
        if (at + k > cap) k = cap - at;
        memcpy(b->p + at, o->p + from, k);
        b->n = at + k;
        break;
    }
    case 9: {  // overwrite a chunk with bytes of another seed (at the same offset half the time)
        const Buf* o = &seeds[below((size_t)nseeds)];
        if (!n || !o->n) break;
        size_t at = below(n), k = 1 + below(32);
        size_t from = (next64() & 1) ? at : below(o->n);
        if (from >= o->n) break;
        if (k > n - at) k = n - at;
        if (k > o->n - from) k = o->n - from;
        memcpy(b->p + at, o->p + from, k);
        break;
    }
    }
}

static const char* save_dir;
static const uint8_t* cur_data;
static size_t cur_size;
static long cur_iter;

// Called by the sanitizer runtime before it ends the process: keep the input that did it.
void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));
static void on_death(void) {
    fprintf(stderr, "fuzz: finding at iteration %ld (input %zu bytes)\n", cur_iter, cur_size);
    if (!save_dir) return;
    char p[1024];
    snprintf(p, sizeof(p), "%s/crash-%ld.bin", save_dir, cur_iter);
    FILE* f = fopen(p, "wb");
    if (f) { fwrite(cur_data, 1, cur_size, f); fclose(f); fprintf(stderr, "fuzz: input saved to %s\n", p); }
}

static void run(long iter, const uint8_t* d, size_t n) {
    cur_iter = iter; cur_data = d; cur_size = n;
    LLVMFuzzerTestOneInput(d, n);
}

int main(int argc, char** argv) {
    long iters = 1000;
    uint64_t seed = 1;
    double max_seconds = 0;
    size_t max_len = 1 << 20;
    const char* name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i += 2) {
        if (i + 1 >= argc) { fprintf(stderr, "%s: %s needs a value\n", name, argv[i]); return 2; }
        if (!strcmp(argv[i], "-n")) iters = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "-seed")) seed = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "-t")) max_seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-max")) max_len = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "-save")) save_dir = argv[i + 1];
        else { fprintf(stderr, "%s: unknown flag %s\n", name, argv[i]); return 2; }
    }
    for (; i < argc; i++) load_dir(argv[i]);
    if (nseeds == 0) { fprintf(stderr, "%s: no seed files (give corpus directories)\n", name); return 2; }
    if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(on_death);
    rng_state = seed;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int s = 0; s < nseeds; s++) run(-1 - s, seeds[s].p, seeds[s].n);
    size_t cap = max_len;
    for (int s = 0; s < nseeds; s++) if (seeds[s].n + 1024 > cap) cap = seeds[s].n + 1024;
    Buf b = { malloc(cap), 0 };
    long done = 0;
    double secs = 0;
    for (long it = 0; it < iters; it++) {
        const Buf* s = &seeds[below((size_t)nseeds)];
        memcpy(b.p, s->p, s->n);
        b.n = s->n;
        int k = 1 + (int)below(4);
        for (int m = 0; m < k; m++) mutate_once(&b, cap);
        if (b.n > max_len) b.n = max_len;
        run(it, b.p, b.n);
        done++;
        if (max_seconds > 0 && (it & 15) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if ((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9 > max_seconds) break;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("%s: %ld inputs (%d seeds, seed %llu) in %.1f s, 0 findings\n", name, done + nseeds, nseeds, (unsigned long long)seed, secs);
    free(b.p);
    for (int s = 0; s < nseeds; s++) free(seeds[s].p);
    free(seeds);
    return 0;
}
