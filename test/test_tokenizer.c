// test/test_tokenizer.c: the GPT-2 BPE tokenizer (data/tokenizer.c) against independent references.
//  - a varied text (test/vectors/tokenizer_text.txt) must encode to exactly the ids js-tiktoken's gpt2
//    encoding gives (test/vectors/tokenizer_ids.txt, written by test/gen_tokenizer_ref.js);
//  - hand-checked cases, incl. where the pre-tokenizer's \s must follow Unicode White_Space like
//    GPT-2's Python regex (U+FEFF), byte ids derived from GPT-2's bytes_to_unicode order;
//  - decode(encode(x)) == x for that text, for invalid UTF-8 and for long runs;
//  - bad vocabulary files give an error naming the file.
// Token ids are integers: every comparison is exact. Runs from the repo root and needs data/gpt2/*
// (`make data` fetches them; `make test` does that first).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data/tokenizer.h"
#include "test/test.h"

#define ENCODER "data/gpt2/encoder.json"
#define VOCAB "data/gpt2/vocab.bpe"

static char* slurp(const char* path, size_t* n) {
    FILE* f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char* buf = malloc((size_t)len + 1);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) { free(buf); fclose(f); return NULL; }
    fclose(f);
    buf[len] = 0;
    *n = (size_t)len;
    return buf;
}

// Concatenate the bytes of ids; returns malloc'd bytes (length in *n), or NULL if an id has none.
static unsigned char* decode_all(const Tokenizer* t, const int32_t* ids, size_t n_ids, size_t* n) {
    size_t cap = 64, len = 0;
    unsigned char* out = malloc(cap);
    for (size_t i = 0; i < n_ids; i++) {
        size_t l;
        const unsigned char* b = tokenizer_decode(t, ids[i], &l);
        if (!b) { free(out); return NULL; }
        while (len + l > cap) { cap *= 2; out = realloc(out, cap); }
        memcpy(out + len, b, l);
        len += l;
    }
    *n = len;
    return out;
}

// encode(text) must equal want[0..n_want).
static void check_ids(const Tokenizer* t, const char* name, const char* text, size_t len, const int32_t* want, size_t n_want) {
    size_t n;
    int32_t* got = tokenizer_encode(t, text, len, &n);
    char why[512] = "";
    int ok = n == n_want;
    for (size_t i = 0; ok && i < n; i++) ok = got[i] == want[i];
    if (!ok) {
        int w = snprintf(why, sizeof(why), "got [");
        for (size_t i = 0; i < n && w < 400; i++) w += snprintf(why + w, sizeof(why) - (size_t)w, "%s%d", i ? " " : "", got[i]);
        w += snprintf(why + w, sizeof(why) - (size_t)w, "], want [");
        for (size_t i = 0; i < n_want && w < 480; i++) w += snprintf(why + w, sizeof(why) - (size_t)w, "%s%d", i ? " " : "", want[i]);
        snprintf(why + w, sizeof(why) - (size_t)w, "]");
    }
    test_check(ok, why, "tokenizer %s", name);
    free(got);
}

static void check_roundtrip(const Tokenizer* t, const char* name, const char* text, size_t len) {
    size_t n_ids, n;
    int32_t* ids = tokenizer_encode(t, text, len, &n_ids);
    unsigned char* back = decode_all(t, ids, n_ids, &n);
    char why[160];
    size_t i = 0;
    if (back) while (i < n && i < len && back[i] == (unsigned char)text[i]) i++;
    snprintf(why, sizeof(why), "%zu bytes in, %zu out (%zu tokens), first difference at byte %zu", len, back ? n : 0, n_ids, i);
    test_check(back && n == len && memcmp(back, text, len) == 0, why, "tokenizer round trip %s", name);
    free(ids);
    free(back);
}

static void test_hand_cases(const Tokenizer* t) {
    test_check(tokenizer_vocab_size(t) == 50257, "expected 50257", "tokenizer vocab size");
    test_check(tokenizer_eot(t) == 50256, "expected 50256", "tokenizer eot id");
    // GPT-2's well-known example: "Hello" and " world" (the space belongs to the word after it)
    check_ids(t, "Hello world", "Hello world", 11, (int32_t[]){15496, 995}, 2);
    size_t n;
    int32_t* none = tokenizer_encode(t, "", 0, &n);
    test_check(none != NULL && n == 0, "expected no tokens", "tokenizer empty text");
    free(none);
    // upper-case 'S is no contraction: "it", "'", "S"
    check_ids(t, "upper-case contraction", "it'S", 4, (int32_t[]){270, 6, 50}, 3);
    check_ids(t, "upper-case 'S then letters", "'Sand", 5, (int32_t[]){6, 18471}, 2);      // "'" "Sand"
    check_ids(t, "lower-case 's then letters", "'sand", 5, (int32_t[]){338, 392}, 2);      // "'s" "and"
    // trailing whitespace run at the end of the text stays whitespace; GPT-2 has no "  " token
    check_ids(t, "trailing spaces", "hello   \n", 9, (int32_t[]){31373, 220, 220, 220, 198}, 5);
    // "<|endoftext|>" in text is plain text, never the EOT id: "<" "|" "end" "of" "text" "|" ">"
    check_ids(t, "endoftext as text", "<|endoftext|>", 13, (int32_t[]){27, 91, 437, 1659, 5239, 91, 29}, 7);
    // U+FEFF is not White_Space: " \uFEFF" is one piece (space + other), bytes 20 EF BB BF ->
    // "Ġï" (27332) "»" (119) "¿" (123), as GPT-2's encoder.py with Python's regex module gives.
    // (js-tiktoken gives 87 220 171 119 123 88: JavaScript's \s includes U+FEFF.)
    check_ids(t, "U+FEFF is not whitespace", "x \xEF\xBB\xBFy", 6, (int32_t[]){87, 27332, 119, 123, 88}, 5);
    // single raw bytes: bytes_to_unicode numbers the 188 printable bytes first (0xFF is the last of
    // them: 187), then the others from 0x00 (188); an invalid UTF-8 byte encodes as its byte token
    check_ids(t, "byte 0xFF", "\xFF", 1, (int32_t[]){187}, 1);
    check_ids(t, "byte 0x00", "\x00", 1, (int32_t[]){188}, 1);

    size_t len;
    const unsigned char* b = tokenizer_decode(t, 995, &len);
    test_check(b && len == 6 && memcmp(b, " world", 6) == 0, "expected \" world\"", "tokenizer decode 995");
    b = tokenizer_decode(t, 50256, &len);
    test_check(b && len == 13 && memcmp(b, "<|endoftext|>", 13) == 0, "expected <|endoftext|>", "tokenizer decode eot");
    test_check(tokenizer_decode(t, -1, &len) == NULL && tokenizer_decode(t, 50257, &len) == NULL,
               "expected NULL", "tokenizer decode out-of-range ids");
}

// The varied text against js-tiktoken's ids.
static void test_reference(const Tokenizer* t) {
    size_t n_text, n_idtext;
    char* text = slurp("test/vectors/tokenizer_text.txt", &n_text);
    char* idtext = slurp("test/vectors/tokenizer_ids.txt", &n_idtext);
    if (!text || !idtext) {
        test_check(0, "test/vectors/tokenizer_{text,ids}.txt missing (regenerate: node test/gen_tokenizer_ref.js)", "tokenizer reference text");
        free(text); free(idtext);
        return;
    }
    size_t n_want = 0;
    int32_t* want = malloc(n_idtext * sizeof(int32_t));
    for (char* p = idtext; *p;) {
        char* end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        want[n_want++] = (int32_t)v;
        p = end;
    }
    size_t n;
    int32_t* got = tokenizer_encode(t, text, n_text, &n);
    size_t i = 0;
    while (i < n && i < n_want && got[i] == want[i]) i++;
    char why[256];
    snprintf(why, sizeof(why), "%zu ids, want %zu; first difference at id #%zu: got %d, want %d", n, n_want, i,
             i < n ? got[i] : -1, i < n_want ? want[i] : -1);
    test_check(n == n_want && i == n, why, "tokenizer ids equal js-tiktoken gpt2 on the varied text (%zu ids)", n_want);
    check_roundtrip(t, "varied text", text, n_text);
    free(got); free(want); free(text); free(idtext);
}

static void test_invalid_utf8(const Tokenizer* t) {
    // hand-picked malformed sequences between valid text, then every byte value, then random bytes
    static const char bad[] =
        "ok \xC0\x80 overlong \xED\xA0\x80 surrogate \xF5\x80\x80\x80 too big \xF4\x90\x80\x80 "
        "lone \x80\xBF continuation \xFF\xFE  truncated \xE2\x82 end \xF0\x9F\x98";
    unsigned char buf[sizeof(bad) - 1 + 256 + 4096];
    size_t n = 0;
    memcpy(buf, bad, sizeof(bad) - 1);
    n += sizeof(bad) - 1;
    for (int b = 0; b < 256; b++) buf[n++] = (unsigned char)b;
    uint32_t s = 12345;
    for (int i = 0; i < 4096; i++) { s = s * 1664525u + 1013904223u; buf[n++] = (unsigned char)(s >> 24); }
    check_roundtrip(t, "invalid UTF-8 and random bytes", (const char*)buf, n);
    // a truncated multi-byte character at the very end of the text
    check_roundtrip(t, "truncated character at end", "caf\xC3", 4);
}

static void test_long_runs(const Tokenizer* t) {
    // long pieces exercise the heap-based BPE (a quadratic merge would take seconds here)
    size_t n = 200000;
    char* s = malloc(n);
    memset(s, '-', n);
    clock_t c0 = clock();
    check_roundtrip(t, "200000 dashes", s, n);
    memset(s, 'a', n);
    check_roundtrip(t, "200000 letters", s, n);
    double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
    char why[64];
    snprintf(why, sizeof(why), "took %.2f s", secs);
    test_check(secs < 2.0, why, "tokenizer long runs are fast (< 2 s)");
    free(s);
}

static int write_tmp(char* path, const char* content) {
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    size_t len = strlen(content);
    int ok = write(fd, content, len) == (ssize_t)len;
    close(fd);
    return ok ? 0 : -1;
}

static void test_bad_files(void) {
    char err[512];
    Tokenizer* t = (Tokenizer*)1;
    int rc = tokenizer_load(&t, "no/such/encoder.json", VOCAB, err, sizeof(err));
    test_check(rc == -1 && t == NULL && strstr(err, "no/such/encoder.json") && strstr(err, "make data"), err,
               "tokenizer missing encoder.json: error names the file and says make data");
    char bad_json[] = "/tmp/test_tokenizer_XXXXXX";
    char bad_bpe[] = "/tmp/test_tokenizer_XXXXXX";
    if (write_tmp(bad_json, "{\"a\": 0, \"b\": ") != 0 || write_tmp(bad_bpe, "#version: 0.2\nx y z\n") != 0) {
        test_check(0, "cannot write temp files in /tmp", "tokenizer bad files");
        return;
    }
    rc = tokenizer_load(&t, bad_json, VOCAB, err, sizeof(err));
    test_check(rc == -1 && strstr(err, bad_json) != NULL, err, "tokenizer truncated encoder.json: error names the file");
    rc = tokenizer_load(&t, ENCODER, bad_bpe, err, sizeof(err));
    test_check(rc == -1 && strstr(err, bad_bpe) != NULL && strstr(err, "line 2") != NULL, err,
               "tokenizer malformed vocab.bpe: error names the file and line");
    unlink(bad_json);
    unlink(bad_bpe);
}

// A tiny vocabulary written here: the 256 bytes with id = byte value, all spelled as JSON \\u escapes
// of GPT-2's byte alphabet, one merge "Ġ t" -> " t" (id 256) and <|endoftext|> (257). Checks that
// the loader follows the files (not GPT-2's id order) and parses escapes, incl. surrogate pairs.
static void test_tiny_vocab(void) {
    char enc_path[] = "/tmp/test_tokenizer_XXXXXX";
    char bpe_path[] = "/tmp/test_tokenizer_XXXXXX";
    static char json[256 * 16 + 128];
    int w = snprintf(json, sizeof(json), "{");
    int extra = 0;
    for (int b = 0; b < 256; b++) {  // GPT-2's bytes_to_unicode: printable bytes as themselves, others from U+0100
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = printable ? b : 256 + extra++;
        w += snprintf(json + w, sizeof(json) - (size_t)w, "\"\\u%04x\": %d, ", cp, b);
    }
    snprintf(json + w, sizeof(json) - (size_t)w, "\"\\u0120t\": 256, \"<|endoftext|>\": 257}\n");
    if (write_tmp(enc_path, json) != 0 || write_tmp(bpe_path, "#version: 0.2\n\xC4\xA0 t\n") != 0) {
        test_check(0, "cannot write temp files in /tmp", "tokenizer tiny vocabulary");
        return;
    }
    char err[512];
    Tokenizer* t;
    int rc = tokenizer_load(&t, enc_path, bpe_path, err, sizeof(err));
    test_check(rc == 0, err, "tokenizer tiny vocabulary loads");
    if (rc == 0) {
        test_check(tokenizer_vocab_size(t) == 258 && tokenizer_eot(t) == 257, "expected 258 ids, eot 257", "tokenizer tiny vocabulary size and eot");
        // pieces " tt" and " at": only the pair (' ', 't') merges
        check_ids(t, "tiny vocabulary merge", " tt at", 6, (int32_t[]){256, 116, 32, 97, 116}, 5);
        tokenizer_free(t);
    }
    // a surrogate pair decodes to one character (U+1F600), which is outside the byte alphabet;
    // a lone high surrogate is a JSON error
    unlink(enc_path);
    strcpy(enc_path, "/tmp/test_tokenizer_XXXXXX");
    write_tmp(enc_path, "{\"\\ud83d\\ude00\": 0}");
    rc = tokenizer_load(&t, enc_path, bpe_path, err, sizeof(err));
    test_check(rc == -1 && strstr(err, "byte alphabet") != NULL, err, "tokenizer JSON surrogate pair decodes to one character");
    unlink(enc_path);
    strcpy(enc_path, "/tmp/test_tokenizer_XXXXXX");
    write_tmp(enc_path, "{\"\\ud83d\": 0}");
    rc = tokenizer_load(&t, enc_path, bpe_path, err, sizeof(err));
    test_check(rc == -1 && strstr(err, "surrogate") != NULL, err, "tokenizer JSON lone surrogate is an error");
    unlink(enc_path);
    unlink(bpe_path);
}

int main(void) {
    (void)test_allclose;  // test.h's float comparison is not needed here
    char err[512];
    Tokenizer* t;
    if (tokenizer_load(&t, ENCODER, VOCAB, err, sizeof(err)) != 0) {
        test_check(0, err, "tokenizer load GPT-2 vocabulary (run `make data` first)");
        return test_finish("test_tokenizer");
    }
    test_check(1, NULL, "tokenizer load GPT-2 vocabulary");
    test_hand_cases(t);
    test_reference(t);
    test_invalid_utf8(t);
    test_long_runs(t);
    test_bad_files();
    test_tiny_vocab();
    tokenizer_free(t);
    return test_finish("test_tokenizer");
}
