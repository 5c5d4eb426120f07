// test/test_checkpoint.c: checkpoints that prove themselves, and the other pre-flight checks of
// common/ and data/. References are independent of the code under test: CRC-32C against the
// published check values (RFC 3720 section B.4, and crc32c("123456789") = 0xE3069283 from the CRC
// catalogue) and against a bit-at-a-time implementation written from the polynomial; file damage is
// made by hand (one flipped bit, appended or removed bytes) and must be refused, naming the blob.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <limits.h>
#include <unistd.h>
#include <sys/stat.h>
#include "test/test.h"
#include "common/crc32c.h"
#include "common/checkpoint.h"
#include "common/ledger.h"
#include "data/dataloader.h"

static char dir[256];

// ---- CRC-32C -----------------------------------------------------------------------------------

// The definition, one bit at a time (reflected polynomial 0x82F63B78, init and final xor ~0).
static uint32_t crc_bitwise(const unsigned char* p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static void test_crc(void) {
    unsigned char z[32], ff[32], up[32], down[32];
    for (int i = 0; i < 32; i++) { z[i] = 0; ff[i] = 0xFF; up[i] = (unsigned char)i; down[i] = (unsigned char)(31 - i); }
    struct { const char* name; const void* p; size_t n; uint32_t want; } v[] = {
        { "\"123456789\"", "123456789", 9, 0xE3069283u },
        { "32 zero bytes (RFC 3720)", z, 32, 0x8A9136AAu },
        { "32 0xFF bytes (RFC 3720)", ff, 32, 0x62A8AB43u },
        { "32 ascending bytes (RFC 3720)", up, 32, 0x46DD794Eu },
        { "32 descending bytes (RFC 3720)", down, 32, 0x113FDB5Cu },
        { "empty input", "", 0, 0x00000000u },
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char why[96];
        uint32_t got = crc32c(v[i].p, v[i].n);
        snprintf(why, sizeof(why), "got %08x, want %08x", got, v[i].want);
        test_check(got == v[i].want, why, "crc32c: published check value, %s", v[i].name);
    }
    // every length 0..200 at every alignment 0..7, whole and split in two at every point: the table
    // (slicing by 8) path against the bitwise definition
    unsigned char buf[256];
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof(buf); i++) { s = s * 6364136223846793005ull + 1442695040888963407ull; buf[i] = (unsigned char)(s >> 56); }
    int bad = 0;
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= 208; n++) {
            uint32_t want = crc_bitwise(buf + off, n);
            if (crc32c(buf + off, n) != want) bad++;
            for (size_t k = 0; k <= n; k += 7) if (crc32c_update(crc32c(buf + off, k), buf + off + k, n - k) != want) bad++;
        }
    test_check(bad == 0, "table and bitwise CRCs differ", "crc32c: slicing-by-8 equals the bitwise definition (all lengths, alignments, splits)");
}

// ---- a small checkpoint ------------------------------------------------------------------------

#define NP 1000
static float w32[NP], st1[NP], st2[300];
static uint16_t w16[NP];
static float r32[NP], rs1[NP], rs2[300];
static uint16_t r16[NP];

static int make_blobs(CkptBlob* b, int reading) {
    b[0] = (CkptBlob){ "weights fp32", reading ? (void*)r32 : (void*)w32, sizeof(w32) };
    b[1] = (CkptBlob){ "weights bf16", reading ? (void*)r16 : (void*)w16, sizeof(w16) };
    b[2] = (CkptBlob){ "opt: exp_avg", reading ? (void*)rs1 : (void*)st1, sizeof(st1) };
    b[3] = (CkptBlob){ "opt: exp_avg_sq", reading ? (void*)rs2 : (void*)st2, sizeof(st2) };
    return 4;
}

static void make_header(CkptHeader* h, int step) {
    memset(h, 0, sizeof(*h));
    h->num_layers = 2; h->channels = 32; h->num_heads = 2; h->vocab_size = 50257; h->padded_vocab_size = 50304;
    h->max_seq_len = 1024; h->precision = 1;
    snprintf(h->optimizer, sizeof(h->optimizer), "adamw");
    h->step = step; h->total_steps = 100; h->skipped_steps = 1; h->seed = 1337; h->data_position = 4096;
    h->num_params = NP; h->tokens_seen = 32ull * step;
    h->run_B = 2; h->run_T = 16; h->run_total_batch = 32; h->run_sr = 1; h->run_lr = 3e-4;
}

static void fill(int salt) {
    for (int i = 0; i < NP; i++) { w32[i] = sinf(i + salt); w16[i] = (uint16_t)(i * 7 + salt); st1[i] = cosf(i * 0.5f + salt); }
    for (int i = 0; i < 300; i++) st2[i] = (float)(i + salt) * 1e-3f;
}

static long file_size(const char* p) { struct stat st; return stat(p, &st) == 0 ? (long)st.st_size : -1; }

static unsigned char* slurp(const char* p, long* n) {
    *n = file_size(p);
    FILE* f = fopen(p, "rb");
    unsigned char* b = malloc((size_t)*n + 16);
    if (fread(b, 1, (size_t)*n, f) != (size_t)*n) *n = -1;
    fclose(f);
    return b;
}

static void spit(const char* p, const unsigned char* b, long n) {
    FILE* f = fopen(p, "wb");
    fwrite(b, 1, (size_t)n, f);
    fclose(f);
}

static int load_into(const char* path, CkptHeader* h, char* err, size_t en) {
    CkptBlob b[4];
    int nb = make_blobs(b, 1);
    return ckpt_load(path, h, b, nb, err, en);
}

// 1 if err contains needle (and reports the mismatch otherwise)
static int has(const char* err, const char* needle) { return strstr(err, needle) != NULL; }

static void test_roundtrip(void) {
    char path[300], err[1024];
    snprintf(path, sizeof(path), "%s/rt.bin", dir);
    fill(0);
    CkptHeader h, r;
    make_header(&h, 7);
    CkptBlob b[4];
    int nb = make_blobs(b, 0);
    int rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
    test_check(rc == 0, err, "checkpoint: save");
    long want = 152 + 4 * 56 + (long)(sizeof(w32) + sizeof(w16) + sizeof(st1) + sizeof(st2));
    test_check(file_size(path) == want, "unexpected size", "checkpoint: version 2 file is header + 56-byte table entries + blobs, exactly");
    rc = load_into(path, &r, err, sizeof(err));
    int same = rc == 0 && !memcmp(w32, r32, sizeof(w32)) && !memcmp(w16, r16, sizeof(w16)) && !memcmp(st1, rs1, sizeof(st1)) && !memcmp(st2, rs2, sizeof(st2));
    test_check(same, err, "checkpoint: every blob loads back bit-exact");
    test_check(rc == 0 && r.version == 2 && r.step == 7 && r.seed == 1337 && r.run_B == 2 && r.run_T == 16 && r.run_total_batch == 32 &&
               r.run_sr == 1 && r.run_lr == 3e-4 && r.tokens_seen == 224, "header fields differ",
               "checkpoint: header (step, seed, -b -t -d -sr -l) loads back");
    test_check(ckpt_verify(path, NULL, err, sizeof(err)) == 0, err, "checkpoint: ckpt_verify accepts an intact file");
}

// Flip one bit inside each blob (and in the header and table): refused, naming what is damaged.
static void test_bit_flips(void) {
    char path[300], bad[300], err[1024];
    snprintf(path, sizeof(path), "%s/rt.bin", dir);
    snprintf(bad, sizeof(bad), "%s/flip.bin", dir);
    long n;
    unsigned char* orig = slurp(path, &n);
    const char* names[4] = { "weights fp32", "weights bf16", "opt: exp_avg", "opt: exp_avg_sq" };
    long sizes[4] = { sizeof(w32), sizeof(w16), sizeof(st1), sizeof(st2) };
    long at = 152 + 4 * 56;
    for (int i = 0; i < 4; i++) {
        for (int where = 0; where < 3; where++) {  // first byte, middle, last byte of the blob
            long off = at + (where == 0 ? 0 : where == 1 ? sizes[i] / 2 : sizes[i] - 1);
            orig[off] ^= (unsigned char)(1 << (where + 3));
            spit(bad, orig, n);
            orig[off] ^= (unsigned char)(1 << (where + 3));
            CkptHeader h;
            err[0] = 0;
            int rc = load_into(bad, &h, err, sizeof(err));
            char needle[128];
            snprintf(needle, sizeof(needle), "checksum mismatch in blob '%s'", names[i]);
            test_check(rc != 0 && has(err, needle) && has(err, bad), err, "checkpoint: a flipped bit in blob '%s' (%s) is refused, naming the blob",
                       names[i], where == 0 ? "first byte" : where == 1 ? "middle" : "last byte");
            err[0] = 0;
            rc = ckpt_verify(bad, NULL, err, sizeof(err));
            test_check(rc != 0 && has(err, needle), err, "checkpoint: ckpt_verify finds the flipped bit in '%s' (%s)", names[i],
                       where == 0 ? "first byte" : where == 1 ? "middle" : "last byte");
        }
        at += sizes[i];
    }
    // header fields (each of the ones a resume trusts) and the blob table
    struct { const char* what; long off; } hdr[] = {
        { "seed", offsetof(CkptHeader, seed) }, { "tokens seen", offsetof(CkptHeader, tokens_seen) },
        { "parameter count", offsetof(CkptHeader, num_params) }, { "padded vocab", offsetof(CkptHeader, padded_vocab_size) },
        { "step", offsetof(CkptHeader, step) }, { "data position", offsetof(CkptHeader, data_position) },
        { "-b", offsetof(CkptHeader, run_B) }, { "-l", offsetof(CkptHeader, run_lr) + 7 },
        { "blob table size", 152 + 56 + 40 }, { "blob table crc", 152 + 2 * 56 + 48 },
    };
    for (size_t i = 0; i < sizeof(hdr) / sizeof(hdr[0]); i++) {
        orig[hdr[i].off] ^= 0x10;
        spit(bad, orig, n);
        orig[hdr[i].off] ^= 0x10;
        CkptHeader h;
        err[0] = 0;
        int rc = ckpt_read_header(bad, &h, err, sizeof(err));
        test_check(rc != 0 && has(err, "checksum mismatch in the header"), err, "checkpoint: a flipped bit in the header's %s is refused", hdr[i].what);
    }
    free(orig);
}

static void test_lengths(void) {
    char path[300], bad[300], err[1024];
    snprintf(path, sizeof(path), "%s/rt.bin", dir);
    snprintf(bad, sizeof(bad), "%s/len.bin", dir);
    long n;
    unsigned char* orig = slurp(path, &n);
    CkptHeader h;
    orig[n] = 0;
    spit(bad, orig, n + 1);
    int rc = load_into(bad, &h, err, sizeof(err));
    test_check(rc != 0 && has(err, "1 bytes after its last blob"), err, "checkpoint: one appended byte is refused");
    test_check(ckpt_read_header(bad, &h, err, sizeof(err)) != 0, "accepted", "checkpoint: ckpt_read_header refuses appended bytes too");
    spit(bad, orig, n - 1);
    rc = load_into(bad, &h, err, sizeof(err));
    test_check(rc != 0 && has(err, "truncated"), err, "checkpoint: one missing byte is refused as truncated");
    spit(bad, orig, 100);
    rc = load_into(bad, &h, err, sizeof(err));
    test_check(rc != 0 && has(err, "shorter than its 152-byte header"), err, "checkpoint: a file shorter than the header is refused");
    free(orig);
    // blob sizes must equal what the caller expects
    CkptBlob b[4];
    int nb = make_blobs(b, 1);
    b[3].bytes -= 4;
    rc = ckpt_load(path, &h, b, nb, err, sizeof(err));
    test_check(rc != 0 && has(err, "does not match this run") && has(err, "opt: exp_avg_sq"), err, "checkpoint: a blob size other than the caller's is refused");
}

// A header with a valid checksum but a field out of range (a writer bug, or a crafted file).
static void write_with_header(const char* path, const CkptHeader* hin) {
    char err[1024];
    CkptHeader h;
    make_header(&h, 7);
    CkptBlob b[4];
    int nb = make_blobs(b, 0);
    ckpt_save(path, &h, b, nb, err, sizeof(err));
    long n;
    unsigned char* f = slurp(path, &n);
    CkptHeader hh = *hin;
    memcpy(hh.magic, CKPT_MAGIC, 8);
    hh.version = 2;
    hh.nblobs = 4;
    hh.header_crc = 0;
    hh.header_crc = crc32c_update(crc32c(&hh, sizeof(hh)), f + 152, 4 * 56);
    memcpy(f, &hh, sizeof(hh));
    spit(path, f, n);
    free(f);
}

static void test_fields(void) {
    char path[300], err[1024];
    snprintf(path, sizeof(path), "%s/fields.bin", dir);
    struct { const char* what; int step, skipped; int64_t tokens; const char* needle; } c[] = {
        { "step = -1", -1, 0, 0, "step -1" },
        { "step = INT_MIN", INT_MIN, 0, 0, "step -2147483648" },
        { "skipped steps < 0", 5, -1, 0, "skipped" },
        { "skipped steps > step", 5, 6, 0, "skipped" },
        { "tokens seen negative as int64", 5, 0, -5, "tokens seen" },
    };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        CkptHeader h;
        make_header(&h, c[i].step);
        h.skipped_steps = c[i].skipped;
        h.tokens_seen = (uint64_t)c[i].tokens;
        write_with_header(path, &h);
        err[0] = 0;
        int rc = ckpt_read_header(path, &h, err, sizeof(err));
        test_check(rc != 0 && has(err, c[i].needle), err, "checkpoint: header with %s is refused (checksum valid)", c[i].what);
        // and the writer never writes it
        CkptBlob b[4];
        int nb = make_blobs(b, 0);
        CkptHeader w;
        make_header(&w, c[i].step);
        w.skipped_steps = c[i].skipped;
        w.tokens_seen = (uint64_t)c[i].tokens;
        char p2[300];
        snprintf(p2, sizeof(p2), "%s/never.bin", dir);
        rc = ckpt_save(p2, &w, b, nb, err, sizeof(err));
        test_check(rc != 0 && file_size(p2) < 0, err, "checkpoint: ckpt_save refuses to write a header with %s", c[i].what);
    }
    CkptHeader h;
    make_header(&h, 5);
    h.num_params = NP + 1;
    write_with_header(path, &h);
    int rc = ckpt_read_header(path, &h, err, sizeof(err));
    test_check(rc != 0 && has(err, "parameters"), err, "checkpoint: parameter count that disagrees with the weights blob is refused");
    // nblobs out of range: checked before the table is read
    long n;
    unsigned char* f = slurp(path, &n);
    int32_t nb = CKPT_MAX_BLOBS + 1;
    memcpy(f + offsetof(CkptHeader, nblobs), &nb, 4);
    spit(path, f, n);
    free(f);
    rc = ckpt_read_header(path, &h, err, sizeof(err));
    test_check(rc != 0 && has(err, "33 blobs"), err, "checkpoint: nblobs out of range is refused");
}

// Version 1 (no checksums, 48-byte table entries) is still read.
static void test_v1(void) {
    char path[300], err[1024];
    snprintf(path, sizeof(path), "%s/v1.bin", dir);
    fill(3);
    CkptHeader h;
    make_header(&h, 9);
    memcpy(h.magic, CKPT_MAGIC, 8);
    h.version = 1;
    h.nblobs = 4;
    // version 1 wrote zeros in what is now run_B .. reserved
    h.run_B = h.run_T = h.run_total_batch = h.run_sr = 0;
    h.run_lr = 0;
    h.header_crc = 0;
    CkptBlob b[4];
    make_blobs(b, 0);
    FILE* f = fopen(path, "wb");
    fwrite(&h, sizeof(h), 1, f);
    for (int i = 0; i < 4; i++) { CkptBlobInfo bi; memset(&bi, 0, sizeof(bi)); snprintf(bi.name, sizeof(bi.name), "%s", b[i].name); bi.bytes = b[i].bytes; fwrite(&bi, sizeof(bi), 1, f); }
    for (int i = 0; i < 4; i++) fwrite(b[i].data, 1, b[i].bytes, f);
    fclose(f);
    CkptHeader r;
    int rc = ckpt_read_header(path, &r, err, sizeof(err));
    test_check(rc == 0 && r.version == 1 && r.step == 9 && r.run_B == 0, err, "checkpoint: version 1 header still reads");
    rc = load_into(path, &r, err, sizeof(err));
    test_check(rc == 0 && !memcmp(w32, r32, sizeof(w32)) && !memcmp(st2, rs2, sizeof(st2)), err, "checkpoint: version 1 blobs still load");
    char chosen[400], warn[1024];
    rc = ckpt_choose(path, chosen, sizeof(chosen), warn, sizeof(warn), err, sizeof(err));
    test_check(rc == 0 && !strcmp(chosen, path), err, "checkpoint: ckpt_choose accepts a version 1 file");
    // version 1 still gets the length and field checks
    long n;
    unsigned char* d = slurp(path, &n);
    spit(path, d, n + 1);
    rc = load_into(path, &r, err, sizeof(err));
    test_check(rc != 0 && has(err, "after its last blob"), err, "checkpoint: version 1 with an appended byte is refused");
    int32_t neg = -1;
    memcpy(d + offsetof(CkptHeader, step), &neg, 4);
    spit(path, d, n);
    rc = load_into(path, &r, err, sizeof(err));
    test_check(rc != 0 && has(err, "step -1"), err, "checkpoint: version 1 with step -1 is refused");
    free(d);
}

static void test_prev_and_choose(void) {
    char path[300], prev[300], err[2048], warn[1024], chosen[400];
    snprintf(path, sizeof(path), "%s/run/checkpoint.bin", dir);
    char rd[300];
    snprintf(rd, sizeof(rd), "%s/run", dir);
    mkdir(rd, 0755);
    ckpt_prev_path(path, prev, sizeof(prev));
    char want[300];
    snprintf(want, sizeof(want), "%s/run/checkpoint.prev.bin", dir);
    test_check(!strcmp(prev, want), prev, "checkpoint: previous of checkpoint.bin is checkpoint.prev.bin");
    char p2[64];
    ckpt_prev_path("a.b/ckpt", p2, sizeof(p2));
    test_check(!strcmp(p2, "a.b/ckpt.prev"), p2, "checkpoint: previous of a name without extension appends .prev");
    ckpt_prev_path(".hidden", p2, sizeof(p2));
    test_check(!strcmp(p2, ".hidden.prev"), p2, "checkpoint: previous of a dot-file appends .prev");

    CkptBlob b[4];
    int nb = make_blobs(b, 0);
    CkptHeader h, r;
    fill(1); make_header(&h, 10);
    ckpt_save(path, &h, b, nb, err, sizeof(err));
    test_check(file_size(prev) < 0, "prev exists", "checkpoint: first save leaves no .prev");
    fill(2); make_header(&h, 20);
    int rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
    test_check(rc == 0 && ckpt_read_header(prev, &r, err, sizeof(err)) == 0 && r.step == 10, err, "checkpoint: second save keeps the first as .prev");
    test_check(ckpt_read_header(path, &r, err, sizeof(err)) == 0 && r.step == 20, err, "checkpoint: second save is the new checkpoint.bin");
    rc = ckpt_choose(path, chosen, sizeof(chosen), warn, sizeof(warn), err, sizeof(err));
    test_check(rc == 0 && !strcmp(chosen, path) && !warn[0], warn, "checkpoint: ckpt_choose picks an intact checkpoint.bin, no warning");
    // damage checkpoint.bin: one bit in its optimizer state
    long n;
    unsigned char* d = slurp(path, &n);
    d[n - 10] ^= 4;
    spit(path, d, n);
    rc = ckpt_choose(path, chosen, sizeof(chosen), warn, sizeof(warn), err, sizeof(err));
    test_check(rc == 0 && !strcmp(chosen, prev) && has(warn, "opt: exp_avg_sq") && has(warn, prev), warn,
               "checkpoint: damaged checkpoint.bin -> ckpt_choose picks .prev, warning names the damaged blob");
    rc = load_into(chosen, &r, err, sizeof(err));
    fill(1);
    test_check(rc == 0 && r.step == 10 && !memcmp(r32, w32, sizeof(w32)), err, "checkpoint: the chosen .prev loads (step 10 state)");
    // damage both
    long m;
    unsigned char* e = slurp(prev, &m);
    e[152 + 4 * 56 + 3] ^= 1;
    spit(prev, e, m);
    rc = ckpt_choose(path, chosen, sizeof(chosen), warn, sizeof(warn), err, sizeof(err));
    test_check(rc != 0 && has(err, "opt: exp_avg_sq") && has(err, "weights fp32") && has(err, path) && has(err, prev), err,
               "checkpoint: both damaged -> error naming both problems");
    // interrupted between the two renames: only .prev exists
    e[152 + 4 * 56 + 3] ^= 1;
    spit(prev, e, m);
    unlink(path);
    rc = ckpt_choose(path, chosen, sizeof(chosen), warn, sizeof(warn), err, sizeof(err));
    test_check(rc == 0 && !strcmp(chosen, prev) && has(warn, "No such file"), warn, "checkpoint: checkpoint.bin missing -> .prev, with a warning");
    unlink(prev);
    rc = ckpt_choose(path, chosen, sizeof(chosen), warn, sizeof(warn), err, sizeof(err));
    test_check(rc != 0, err, "checkpoint: neither file -> error");
    free(d);
    free(e);
}

static void test_finite(void) {
    char path[300], err[1024];
    snprintf(path, sizeof(path), "%s/fin.bin", dir);
    fill(0);
    CkptBlob b[4];
    int nb = make_blobs(b, 0);
    test_check(ckpt_blobs_finite(b, nb, CKPT_WEIGHTS_BLOB, err, sizeof(err)) == 1, err, "finite: finite weights pass");
    CkptHeader h;
    make_header(&h, 3);
    ckpt_save(path, &h, b, nb, err, sizeof(err));
    long before = file_size(path);
    float keep = w32[517];
    float bad[3] = { NAN, INFINITY, -INFINITY };
    const char* names[3] = { "NaN", "+inf", "-inf" };
    for (int i = 0; i < 3; i++) {
        w32[517] = bad[i];
        int ok = ckpt_blobs_finite(b, nb, CKPT_WEIGHTS_BLOB, err, sizeof(err));
        test_check(ok == 0 && has(err, "element 517"), err, "finite: a %s weight is found, at its index", names[i]);
        make_header(&h, 4);
        int rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
        CkptHeader r;
        test_check(rc != 0 && file_size(path) == before && ckpt_read_header(path, &r, err, sizeof(err)) == 0 && r.step == 3, err,
                   "finite: ckpt_save refuses %s weights and leaves the previous checkpoint", names[i]);
    }
    w32[517] = keep;
    st1[3] = NAN;  // optimizer state is not the weights: only the named blob is checked
    test_check(ckpt_blobs_finite(b, nb, CKPT_WEIGHTS_BLOB, err, sizeof(err)) == 1, err, "finite: only the named blob is checked");
}

static void test_special_files(void) {
    char fifo[300], err[1024];
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    mkfifo(fifo, 0600);
    CkptHeader h;
    alarm(10);  // before the fix, opening a FIFO blocked forever: fail by SIGALRM instead of hanging
    int rc = ckpt_read_header(fifo, &h, err, sizeof(err));
    test_check(rc != 0 && has(err, "FIFO"), err, "special files: a FIFO as checkpoint is refused at once");
    rc = ckpt_read_header(dir, &h, err, sizeof(err));
    test_check(rc != 0 && has(err, "directory"), err, "special files: a directory as checkpoint is refused");
    uint64_t n;
    rc = dataloader_check(fifo, 2, 16, &n, err, sizeof(err));
    test_check(rc != 0 && has(err, "FIFO"), err, "special files: a FIFO as data is refused at once");
    DataLoader dl;
    rc = dataloader_open(&dl, dir, 2, 16, 50257, err, sizeof(err));
    test_check(rc != 0 && has(err, "is a directory") && !has(err, "4096 bytes"), err, "special files: a directory as data is named a directory");
    Tokenizer* t = NULL;
    rc = tokenizer_load(&t, fifo, fifo, err, sizeof(err));
    test_check(rc != 0 && has(err, "FIFO"), err, "special files: a FIFO as vocabulary is refused at once");
    alarm(0);
    unlink(fifo);
}

static void test_short_data(void) {
    char path[300], err[1024];
    snprintf(path, sizeof(path), "%s/short.bin", dir);
    int32_t toks[100];
    for (int i = 0; i < 100; i++) toks[i] = i;
    data_write_shard(path, toks, 100, err, sizeof(err));
    uint64_t n = 0;
    int rc = dataloader_check(path, 4, 25, &n, err, sizeof(err));  // needs 101
    test_check(rc != 0 && has(err, "holds 100 tokens, fewer than the 101"), err, "data: 100 tokens with B*T+1 = 101 is named as too little data");
    rc = dataloader_check(path, 65536, 1024, &n, err, sizeof(err));
    test_check(rc != 0 && has(err, "fewer than the 67108865"), err, "data: a huge B*T is reported as too little data (no allocation)");
    rc = dataloader_check(path, 3, 33, &n, err, sizeof(err));
    test_check(rc == 0 && n == 100, err, "data: exactly B*T+1 tokens is enough");
    DataLoader dl;
    rc = dataloader_open(&dl, path, 3, 11, 50257, err, sizeof(err));
    test_check(rc == 0 && dataloader_batches(&dl) == 3, err, "data: 100 tokens hold 3 batches of 33 (+1 target)");
    if (rc == 0) dataloader_free(&dl);
}

static void test_ledger_preflight(void) {
    char path[300], msg[512];
    snprintf(path, sizeof(path), "%s/meminfo", dir);
    FILE* f = fopen(path, "w");
    fprintf(f, "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    2048000 kB\nBuffers: 1 kB\n");
    fclose(f);
    size_t avail = ledger_mem_available(path);
    test_check(avail == 2048000ull * 1024, "wrong MemAvailable", "ledger: MemAvailable parsed from meminfo (kB -> bytes)");
    test_check(ledger_mem_available("/nonexistent/meminfo") == 0, "not 0", "ledger: no meminfo -> 0 (unknown)");
    Ledger L;
    ledger_init(&L, 1);
    ledger_alloc(&L, MEM_ACTIVATIONS, "activations", (size_t)3000 << 20);
    ledger_alloc(&L, MEM_PARAMS, "params", (size_t)100 << 20);
    int rc = ledger_check_fits(&L, avail, msg, sizeof(msg));
    test_check(rc != 0 && has(msg, "3100.0 MiB") && has(msg, "activations 3000.0 MiB") && has(msg, "2000.0 MiB are available"), msg,
               "ledger: a plan larger than MemAvailable is refused with the ledger's numbers");
    test_check(ledger_check_fits(&L, (size_t)4000 << 20, msg, sizeof(msg)) == 0, msg, "ledger: a plan that fits passes");
    test_check(ledger_check_fits(&L, 0, msg, sizeof(msg)) == 0, msg, "ledger: unknown available memory passes");
    test_check(ledger_mem_available(NULL) > 0, "0", "ledger: this machine's /proc/meminfo has MemAvailable");
}

// Issue 27: the save never writes through a planted name; rotation keeps a verified checkpoint, also
// after a resume from .prev; the bf16 weights are checked too; counters are bounded; the run id.
static void test_save_safety(void) {
    char rd[280], path[300], prev[320], tmpname[340], victim[300], err[2048], warn[1024], chosen[400];
    snprintf(rd, sizeof(rd), "%s/safe", dir);
    mkdir(rd, 0755);
    snprintf(path, sizeof(path), "%s/checkpoint.bin", rd);
    ckpt_prev_path(path, prev, sizeof(prev));
    snprintf(tmpname, sizeof(tmpname), "%s.tmp", path);
    snprintf(victim, sizeof(victim), "%s/victim", dir);
    spit(victim, (const unsigned char*)"precious", 8);
    if (symlink(victim, tmpname) != 0) test_check(0, "symlink failed", "save safety: set up");
    CkptBlob b[4];
    int nb = make_blobs(b, 0);
    CkptHeader h, r;
    fill(1); make_header(&h, 10);
    int rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
    test_check(rc == 0 && file_size(victim) == 8, err, "save safety: a symlink planted at checkpoint.bin.tmp is not followed");
    unlink(tmpname);
    mkfifo(tmpname, 0600);
    alarm(10);  // a FIFO opened for writing would block
    fill(2); make_header(&h, 20);
    rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
    alarm(0);
    test_check(rc == 0, err, "save safety: a FIFO at checkpoint.bin.tmp is never opened");
    unlink(tmpname);
    // checkpoint.bin (step 20) damaged, .prev (step 10) good: ckpt_choose picks .prev; the next save
    // must replace the damaged file and keep .prev
    long n, m;
    unsigned char* good_prev = slurp(prev, &m);
    unsigned char* d = slurp(path, &n);
    d[n - 10] ^= 4;
    spit(path, d, n);
    rc = ckpt_choose(path, chosen, sizeof(chosen), warn, sizeof(warn), err, sizeof(err));
    test_check(rc == 0 && !strcmp(chosen, prev), warn, "rotation: damaged checkpoint.bin -> resume from .prev");
    fill(3); make_header(&h, 11);
    rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
    long m2;
    unsigned char* now_prev = slurp(prev, &m2);
    test_check(rc == 0 && m2 == m && !memcmp(now_prev, good_prev, (size_t)m) && ckpt_read_header(path, &r, err, sizeof(err)) == 0 && r.step == 11,
               err, "rotation: the save after a resume from .prev replaces the damaged file, .prev stays the good one");
    // the next save rotates as usual: the file it wrote (step 11) becomes .prev
    fill(4); make_header(&h, 12);
    rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
    test_check(rc == 0 && ckpt_read_header(prev, &r, err, sizeof(err)) == 0 && r.step == 11, err, "rotation: then a good checkpoint.bin becomes .prev");
    // a checkpoint.bin that another writer replaced with damage (not the file this process wrote) is not rotated either
    free(d);
    d = slurp(path, &n);
    d[200] ^= 1;
    unlink(path);
    spit(path, d, n);
    free(good_prev);
    good_prev = slurp(prev, &m);
    fill(5); make_header(&h, 13);
    rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
    free(now_prev);
    now_prev = slurp(prev, &m2);
    test_check(rc == 0 && m2 == m && !memcmp(now_prev, good_prev, (size_t)m), err, "rotation: a damaged checkpoint.bin is never moved over .prev");
    free(d); free(good_prev); free(now_prev);

    // the bf16 working copy: an inf or NaN there is neither saved nor loaded
    fill(0); make_header(&h, 3);
    uint16_t keep = w16[42];
    w16[42] = 0x7f80;  // +inf
    rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
    test_check(rc != 0 && has(err, "weights bf16") && has(err, "element 42"), err, "finite: ckpt_save refuses an inf in the bf16 weights");
    w16[42] = 0x7fc1;  // a NaN
    test_check(ckpt_blobs_finite(b, nb, CKPT_WEIGHTS_BF16_BLOB, err, sizeof(err)) == 0 && has(err, "nan"), err, "finite: a bf16 NaN is found");
    w16[42] = keep;
    // counters: tokens_seen beyond step x 2^31 is no run's (and would overflow a resumed run's count)
    make_header(&h, 3);
    h.tokens_seen = INT64_MAX;
    rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
    test_check(rc != 0 && has(err, "tokens seen"), err, "counters: tokens_seen 2^63-1 is refused (writer and reader share the check)");
    make_header(&h, 3);
    h.run_lr = -1.0;
    rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
    test_check(rc != 0 && has(err, "-l"), err, "counters: a negative recorded -l is refused");
    // the run id goes through
    make_header(&h, 3);
    h.run_id = 0xdeadbeefu;
    rc = ckpt_save(path, &h, b, nb, err, sizeof(err));
    test_check(rc == 0 && ckpt_read_header(path, &r, err, sizeof(err)) == 0 && r.run_id == 0xdeadbeefu, err, "run id: saved and read back");
}

int main(void) {
    snprintf(dir, sizeof(dir), "/tmp/test_checkpoint.XXXXXX");
    if (!mkdtemp(dir)) { printf("FAIL mkdtemp\n"); return 1; }
    test_crc();
    test_roundtrip();
    test_bit_flips();
    test_lengths();
    test_fields();
    test_v1();
    test_prev_and_choose();
    test_finite();
    test_save_safety();
    test_special_files();
    test_short_data();
    test_ledger_preflight();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return test_finish("test_checkpoint");
}
