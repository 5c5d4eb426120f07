// test/test_dataloader.c: token shards and the data loader (data/dataloader.c).
// Shards are written with known tokens (token value = a function of its position), so every
// expected batch is computed here independently from the format's definition: a batch at position
// p has inputs tok[p .. p+B*T) and targets tok[p+1 .. p+B*T+1); the position advances by B*T and
// wraps to 0 when fewer than B*T+1 tokens remain. All comparisons are exact (integers).
// Bad files must give rc -1 and a message naming the file. Text -> shards needs data/gpt2/*.
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/dataloader.h"
#include "data/tokenizer.h"
#include "test/test.h"

static char dir[64];

static void path_in(char* out, size_t n, const char* name) { snprintf(out, n, "%s/%s", dir, name); }

// Remove dir and what the test wrote in it (one level of subdirectories: the text cache).
static void rm_tree(const char* d) {
    DIR* dp = opendir(d);
    if (!dp) return;
    struct dirent* e;
    while ((e = readdir(dp))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", d, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_tree(p);
        else unlink(p);
    }
    closedir(dp);
    rmdir(d);
}

// Write a shard of n tokens with values f(i) = base + i % mod; returns 0 on success.
static int write_seq(const char* name, size_t n, int base, int mod) {
    char p[256], err[512];
    path_in(p, sizeof(p), name);
    int32_t* t = malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) t[i] = base + (int)(i % (size_t)mod);
    int rc = data_write_shard(p, t, n, err, sizeof(err));
    if (rc != 0) printf("# data_write_shard: %s\n", err);
    free(t);
    return rc;
}

// Compare a batch against the stream `want` at position pos.
static int batch_is(const int* in, const int* tg, const int32_t* want, uint64_t pos, int B, int T) {
    for (int i = 0; i < B * T; i++)
        if (in[i] != want[pos + (uint64_t)i] || tg[i] != want[pos + (uint64_t)i + 1]) return 0;
    return 1;
}

static void test_single_shard(void) {
    // 1000 tokens 0..999: the first batch (B=2, T=8) is 0..15 with targets 1..16, the next starts at 16
    if (write_seq("one.bin", 1000, 0, 1000) != 0) { test_check(0, "write failed", "dataloader write shard"); return; }
    char p[256], err[512];
    path_in(p, sizeof(p), "one.bin");
    DataLoader dl;
    int rc = dataloader_open(&dl, p, 2, 8, 50257, err, sizeof(err));
    test_check(rc == 0, err, "dataloader open a shard written by data_write_shard");
    if (rc != 0) return;
    int in[16], tg[16];
    dataloader_next(&dl, in, tg);
    int ok = 1;
    for (int i = 0; i < 16; i++) ok &= in[i] == i && tg[i] == i + 1;
    test_check(ok, "first batch is not 0..15 / 1..16", "dataloader first batch and shifted targets");
    dataloader_next(&dl, in, tg);
    test_check(in[0] == 16 && in[8] == 24 && tg[15] == 32, "second batch does not start at 16", "dataloader second batch advances by B*T");
    test_check(dataloader_position(&dl) == 32, "expected 32", "dataloader position after two batches");
    test_check(dataloader_num_tokens(&dl) == 1000 && dataloader_bytes(&dl) == 2000, "expected 1000 tokens, 2000 bytes",
               "dataloader token count and bytes");
    dataloader_free(&dl);
}

static void test_shards_wrap_seek(void) {
    // two shards written in reverse name order: the loader must sort them (s_00 then s_01)
    if (write_seq("s_01.bin", 60, 2000, 60) != 0 || write_seq("s_00.bin", 100, 1000, 100) != 0) {
        test_check(0, "write failed", "dataloader write shards");
        return;
    }
    int32_t want[160];  // the stream: 1000..1099 then 2000..2059
    for (int i = 0; i < 100; i++) want[i] = 1000 + i;
    for (int i = 0; i < 60; i++) want[100 + i] = 2000 + i;
    char pat[256], err[512];
    path_in(pat, sizeof(pat), "s_*.bin");
    const int B = 2, T = 7;  // B*T = 14: batches at 0, 14, ..., 140 (140+15 <= 160), then wrap to 0
    DataLoader dl;
    int rc = dataloader_open(&dl, pat, B, T, 50257, err, sizeof(err));
    test_check(rc == 0 && dl.n_files == 2 && dataloader_num_tokens(&dl) == 160, err, "dataloader open a glob of two shards");
    if (rc != 0) return;
    int in[14], tg[14];
    int ok = 1;
    uint64_t pos = 0;
    for (int k = 0; k < 11; k++) {  // one epoch of 11 batches
        dataloader_next(&dl, in, tg);
        ok &= batch_is(in, tg, want, pos, B, T);
        pos += 14;
    }
    test_check(ok, "a batch differs from the concatenated shards", "dataloader batches across the shard boundary (sorted order)");
    test_check(in[13] == 2053 && tg[13] == 2054, "last batch of the epoch should end at token 2053 -> 2054",
               "dataloader last batch of the epoch");
    dataloader_next(&dl, in, tg);  // 154 + 15 > 160: wraps to the start
    test_check(batch_is(in, tg, want, 0, B, T) && dataloader_position(&dl) == 14, "expected the first batch again",
               "dataloader wraps around to the first batch");

    // seek: record the position, read 3 batches, seek back, the same 3 batches again
    for (int k = 0; k < 8; k++) dataloader_next(&dl, in, tg);  // to 126: the 3 batches below are 126, 140, wrap to 0
    uint64_t saved = dataloader_position(&dl);
    int first[3][28];
    for (int k = 0; k < 3; k++) { dataloader_next(&dl, in, tg); memcpy(first[k], in, sizeof(in)); memcpy(first[k] + 14, tg, sizeof(tg)); }
    ok = dataloader_seek(&dl, saved) == 0;
    for (int k = 0; k < 3; k++) {
        dataloader_next(&dl, in, tg);
        ok &= memcmp(first[k], in, sizeof(in)) == 0 && memcmp(first[k] + 14, tg, sizeof(tg)) == 0;
    }
    test_check(ok, "batches after seek differ", "dataloader seek restores the exact batch sequence (incl. a wrap)");
    // a fresh loader seeked to the saved position gives the same batches (the checkpoint case)
    DataLoader dl2;
    rc = dataloader_open(&dl2, pat, B, T, 50257, err, sizeof(err));
    ok = rc == 0 && dataloader_seek(&dl2, saved) == 0;
    if (ok) {
        dataloader_next(&dl2, in, tg);
        ok = memcmp(first[0], in, sizeof(in)) == 0 && memcmp(first[0] + 14, tg, sizeof(tg)) == 0;
        dataloader_free(&dl2);
    }
    test_check(ok, "differs", "dataloader seek on a fresh loader (resume from checkpoint)");
    test_check(dataloader_seek(&dl, 161) == -1 && dataloader_seek(&dl, 160) == 0, "seek range", "dataloader seek rejects positions past the end");
    dataloader_reset(&dl);
    dataloader_next(&dl, in, tg);
    test_check(batch_is(in, tg, want, 0, B, T), "expected the first batch", "dataloader reset");
    dataloader_free(&dl);

    // B*T = 53: batches at 0, 53, 106; the one at 106 needs tokens up to 159, exactly the last one
    rc = dataloader_open(&dl, pat, 1, 53, 50257, err, sizeof(err));
    if (rc != 0) { test_check(0, err, "dataloader reopen"); return; }
    int in53[53], tg53[53];
    ok = 1;
    for (int k = 0; k < 3; k++) {
        dataloader_next(&dl, in53, tg53);
        ok &= batch_is(in53, tg53, want, (uint64_t)k * 53, 1, 53);
    }
    ok &= tg53[52] == 2059;
    dataloader_next(&dl, in53, tg53);
    ok &= batch_is(in53, tg53, want, 0, 1, 53);
    test_check(ok, "the batch ending on the last token must be used, then wrap", "dataloader last batch may end on the final token");
    dataloader_free(&dl);
}

// Six shards written in a scrambled order must be read in name order (glob sorts).
static void test_sorted_order(void) {
    static const int order[6] = {3, 0, 5, 1, 4, 2};
    for (int k = 0; k < 6; k++) {
        char name[32];
        snprintf(name, sizeof(name), "o_%02d.bin", order[k]);
        if (write_seq(name, 10, 100 * order[k], 10) != 0) { test_check(0, "write failed", "dataloader write shards"); return; }
    }
    char pat[256], err[512];
    path_in(pat, sizeof(pat), "o_*.bin");
    DataLoader dl;
    if (dataloader_open(&dl, pat, 1, 59, 50257, err, sizeof(err)) != 0) { test_check(0, err, "dataloader open six shards"); return; }
    int in[59], tg[59], ok = 1;
    dataloader_next(&dl, in, tg);
    for (int i = 0; i < 59; i++) ok &= in[i] == 100 * (i / 10) + i % 10;
    test_check(ok, "shards not concatenated in name order", "dataloader reads shards in sorted name order");
    dataloader_free(&dl);
}

// rc must be -1 and err must contain every needle.
static void expect_error(const char* name, int rc, const char* err, const char* n1, const char* n2) {
    int ok = rc == -1 && strstr(err, n1) && (!n2 || strstr(err, n2));
    char why[700];
    snprintf(why, sizeof(why), "rc %d, message \"%s\" (want it to contain '%s'%s%s)", rc, err, n1, n2 ? " and " : "", n2 ? n2 : "");
    test_check(ok, why, "dataloader %s", name);
}

static void write_raw(const char* path, const int32_t* header, const uint16_t* toks, size_t n) {
    FILE* f = fopen(path, "wb");
    fwrite(header, sizeof(int32_t), 256, f);
    fwrite(toks, sizeof(uint16_t), n, f);
    fclose(f);
}

static void test_bad_files(void) {
    char p[256], err[512];
    DataLoader dl;
    int32_t header[256] = {0};
    uint16_t toks[100];
    for (int i = 0; i < 100; i++) toks[i] = (uint16_t)i;

    header[0] = 12345; header[1] = 1; header[2] = 100;
    path_in(p, sizeof(p), "badmagic.bin");
    write_raw(p, header, toks, 100);
    expect_error("wrong magic: error names the file", dataloader_open(&dl, p, 1, 8, 50257, err, sizeof(err)), err, p, "magic");

    header[0] = SHARD_MAGIC; header[1] = 2;
    path_in(p, sizeof(p), "badversion.bin");
    write_raw(p, header, toks, 100);
    expect_error("wrong version: error names the file", dataloader_open(&dl, p, 1, 8, 50257, err, sizeof(err)), err, p, "version");

    header[1] = 1;
    path_in(p, sizeof(p), "truncated.bin");
    write_raw(p, header, toks, 99);  // header says 100 tokens, file has 99
    expect_error("truncated file: error names the file", dataloader_open(&dl, p, 1, 8, 50257, err, sizeof(err)), err, p, "truncated");
    test_check(strstr(err, "make data") != NULL, err, "dataloader truncated file: message says to re-run make data");

    path_in(p, sizeof(p), "tiny.bin");
    write_raw(p, header, toks, 0);
    truncate(p, 100);  // shorter than the header
    expect_error("file shorter than the header", dataloader_open(&dl, p, 1, 8, 50257, err, sizeof(err)), err, p, "truncated");

    toks[37] = 50257;  // one past GPT-2's last id
    path_in(p, sizeof(p), "range.bin");
    write_raw(p, header, toks, 100);
    expect_error("token out of range: error names the file", dataloader_open(&dl, p, 1, 8, 50257, err, sizeof(err)), err, p, "position 37");
    test_check(strstr(err, "50257") != NULL, err, "dataloader token out of range: message gives the value");
    toks[37] = 37;

    header[2] = 10;
    path_in(p, sizeof(p), "few.bin");
    write_raw(p, header, toks, 10);
    expect_error("too few tokens: error names the file", dataloader_open(&dl, p, 2, 8, 50257, err, sizeof(err)), err, p, "fewer");
    test_check(dataloader_open(&dl, p, 1, 9, 50257, err, sizeof(err)) == 0, err, "dataloader exactly B*T+1 tokens is enough");
    dataloader_free(&dl);

    path_in(p, sizeof(p), "missing_*.bin");
    expect_error("no matching file: error names the pattern", dataloader_open(&dl, p, 1, 8, 50257, err, sizeof(err)), err, p, "make data");

    // a failed write leaves an existing shard untouched and no temporary file behind
    if (write_seq("keep.bin", 50, 0, 50) != 0) return;
    path_in(p, sizeof(p), "keep.bin");
    int32_t bad[3] = {1, 70000, 2};
    int rc = data_write_shard(p, bad, 3, err, sizeof(err));
    int ok = rc == -1 && dataloader_open(&dl, p, 1, 8, 50257, err, sizeof(err)) == 0 && dataloader_num_tokens(&dl) == 50;
    if (ok) dataloader_free(&dl);
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", p, (int)getpid());
    test_check(ok && access(tmp, F_OK) != 0, "existing shard changed or temp file left", "dataloader failed write keeps the old shard");
}

static void test_text_to_shards(void) {
    char err[512];
    Tokenizer* t;
    if (tokenizer_load(&t, "data/gpt2/encoder.json", "data/gpt2/vocab.bpe", err, sizeof(err)) != 0) {
        test_check(0, err, "dataloader text -> shards (needs the GPT-2 vocabulary: run `make data`)");
        return;
    }
    char txt[256], cache[256], train[512], val[512];
    path_in(txt, sizeof(txt), "text.txt");
    path_in(cache, sizeof(cache), "cache");
    FILE* f = fopen(txt, "wb");
    for (int i = 0; i < 200; i++) fprintf(f, "Line %d: the quick brown fox jumps over the lazy dog.\n", i);
    fclose(f);
    size_t n_text;
    {
        FILE* g = fopen(txt, "rb");
        fseek(g, 0, SEEK_END);
        n_text = (size_t)ftell(g);
        fclose(g);
    }
    char* text = malloc(n_text);
    f = fopen(txt, "rb");
    if (fread(text, 1, n_text, f) != n_text) n_text = 0;
    fclose(f);
    size_t n_ids;
    int32_t* ids = tokenizer_encode(t, text, n_text, &n_ids);
    // expected stream: EOT + ids; val = the last floor(0.1 * n) tokens
    size_t n = n_ids + 1, n_val = n / 10;

    int rc = data_text_to_shards(t, txt, cache, 0.1, train, val, sizeof(train), err, sizeof(err));
    test_check(rc == 0, err, "dataloader text -> shards");
    if (rc == 0) {
        DataLoader dt, dv;
        int ok = dataloader_open(&dt, train, 1, 8, 50257, err, sizeof(err)) == 0;
        ok = ok && dataloader_open(&dv, val, 1, 8, 50257, err, sizeof(err)) == 0;
        if (ok) {
            ok = dt.n_tokens == n - n_val && dv.n_tokens == n_val && dt.tokens[0] == 50256;
            for (size_t i = 1; ok && i < dt.n_tokens; i++) ok = dt.tokens[i] == ids[i - 1];
            for (size_t i = 0; ok && i < dv.n_tokens; i++) ok = dv.tokens[i] == ids[n - n_val + i - 1];
            dataloader_free(&dt);
            dataloader_free(&dv);
        }
        test_check(ok, err, "dataloader text shards hold EOT + the text's tokens, last 10%% in val");
        struct stat a, b;
        stat(train, &a);
        char train2[512], val2[512];
        rc = data_text_to_shards(t, txt, cache, 0.1, train2, val2, sizeof(train2), err, sizeof(err));
        stat(train2, &b);
        test_check(rc == 0 && !strcmp(train, train2) && a.st_ino == b.st_ino && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec,
                   "the cached shard was not reused", "dataloader text -> shards reuses the cache");
        f = fopen(txt, "ab");
        fprintf(f, "one more line\n");
        fclose(f);
        rc = data_text_to_shards(t, txt, cache, 0.1, train2, val2, sizeof(train2), err, sizeof(err));
        test_check(rc == 0 && strcmp(train, train2) != 0, "same cache entry for a changed file", "dataloader text -> shards: changed text, new cache entry");
    }
    char empty[256];
    path_in(empty, sizeof(empty), "empty.txt");
    fclose(fopen(empty, "wb"));
    rc = data_text_to_shards(t, empty, cache, 0.1, train, val, sizeof(train), err, sizeof(err));
    expect_error("empty text: error names the file", rc, err, empty, "empty");
    path_in(empty, sizeof(empty), "nosuch.txt");
    rc = data_text_to_shards(t, empty, cache, 0.1, train, val, sizeof(train), err, sizeof(err));
    expect_error("unreadable text: error names the file", rc, err, empty, NULL);
    free(text);
    free(ids);
    tokenizer_free(t);
}

int main(void) {
    (void)test_allclose;  // test.h's float comparison is not needed here
    snprintf(dir, sizeof(dir), "/tmp/test_dataloader_XXXXXX");
    if (!mkdtemp(dir)) {
        test_check(0, "mkdtemp failed", "dataloader temp dir");
        return test_finish("test_dataloader");
    }
    test_single_shard();
    test_shards_wrap_seek();
    test_sorted_order();
    test_bad_files();
    test_text_to_shards();
    rm_tree(dir);
    return test_finish("test_dataloader");
}
