// data/prepare_data.c: tokenize a text file into llm.c-format train/val shards with our GPT-2 BPE.
//   ./prepare_data -text FILE -train OUT -val OUT [-val-tokens N] [-encoder PATH] [-bpe PATH]
// The token stream is <|endoftext|> followed by the text's tokens (llm.c's shards start every
// document with EOT; the text is one document). The last N tokens (default 262144) go to the val
// shard, the rest to the train shard. Both are written to a temporary file and renamed, so existing
// outputs are replaced only by complete ones. `make data` runs this on the GCIDE dictionary.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/util.h"
#include "data/dataloader.h"
#include "data/tokenizer.h"

static void usage(const char* why) {
    fprintf(stderr, "error: %s\n", why);
    fprintf(stderr,
            "usage: ./prepare_data -text FILE -train OUT.bin -val OUT.bin [-val-tokens N] [-encoder PATH] [-bpe PATH]\n"
            "  -text FILE        UTF-8 text to tokenize (any bytes are accepted)\n"
            "  -train OUT.bin    train shard to write (all but the last N tokens)\n"
            "  -val OUT.bin      val shard to write (the last N tokens)\n"
            "  -val-tokens N     tokens in the val shard (default 262144)\n"
            "  -encoder PATH     GPT-2 encoder.json (default data/gpt2/encoder.json)\n"
            "  -bpe PATH         GPT-2 vocab.bpe (default data/gpt2/vocab.bpe)\n");
    exit(EXIT_USER);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char** argv) {
    const char* text_path = NULL;
    const char* train_path = NULL;
    const char* val_path = NULL;
    const char* encoder = "data/gpt2/encoder.json";
    const char* bpe = "data/gpt2/vocab.bpe";
    long long val_tokens = 262144;
    for (int i = 1; i < argc; i += 2) {
        const char* flag = argv[i];
        if (i + 1 >= argc) {
            char why[256];
            snprintf(why, sizeof(why), "flag %s needs a value", flag);
            usage(why);
        }
        const char* v = argv[i + 1];
        if (strcmp(flag, "-text") == 0) text_path = v;
        else if (strcmp(flag, "-train") == 0) train_path = v;
        else if (strcmp(flag, "-val") == 0) val_path = v;
        else if (strcmp(flag, "-encoder") == 0) encoder = v;
        else if (strcmp(flag, "-bpe") == 0) bpe = v;
        else if (strcmp(flag, "-val-tokens") == 0) {
            char* end;
            val_tokens = strtoll(v, &end, 10);
            if (*v == 0 || *end != 0 || val_tokens < 1) usage("-val-tokens must be a positive integer");
        } else {
            char why[256];
            snprintf(why, sizeof(why), "unknown flag %s", flag);
            usage(why);
        }
    }
    if (!text_path || !train_path || !val_path) usage("-text, -train and -val are required");

    double t0 = now_s();
    char err[1024];
    Tokenizer* tok;
    if (tokenizer_load(&tok, encoder, bpe, err, sizeof(err)) != 0) user_error("%s", err);
    FILE* f = fopen(text_path, "rb");
    if (!f) user_error("cannot read text file '%s'; give an existing file (`make data` fetches the default one)", text_path);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) user_error("'%s' is not a regular file", text_path);
    size_t size = (size_t)st.st_size;
    if (size == 0) user_error("text file '%s' is empty", text_path);
    char* text = xmalloc(size);
    if (fread_exact(text, 1, size, f) != 0) user_error("cannot read all %zu bytes of '%s'", size, text_path);
    fclose(f);
    double t1 = now_s();

    size_t n_text;
    int32_t* text_ids = tokenizer_encode(tok, text, size, &n_text);
    free(text);
    double t2 = now_s();
    // EOT, then the text
    size_t n = n_text + 1;
    int32_t* ids = xmalloc(n * sizeof(int32_t));
    ids[0] = tokenizer_eot(tok);
    CHECK(ids[0] >= 0);
    memcpy(ids + 1, text_ids, n_text * sizeof(int32_t));
    free(text_ids);
    if ((unsigned long long)val_tokens >= n)
        user_error("-val-tokens %lld leaves no train tokens: '%s' has only %zu tokens; use a smaller -val-tokens",
                   val_tokens, text_path, n);
    size_t n_val = (size_t)val_tokens, n_train = n - n_val;
    if (data_write_shard(val_path, ids + n_train, n_val, err, sizeof(err)) != 0) user_error("%s", err);
    if (data_write_shard(train_path, ids, n_train, err, sizeof(err)) != 0) user_error("%s", err);
    double t3 = now_s();
    printf("prepare_data: %s: %zu bytes -> %zu tokens (%.2f bytes/token, incl. 1 leading EOT)\n", text_path, size, n,
           (double)size / (double)n_text);
    printf("prepare_data: train %zu tokens -> %s\n", n_train, train_path);
    printf("prepare_data: val   %zu tokens -> %s\n", n_val, val_path);
    printf("prepare_data: time: load vocab + read %.2f s, tokenize %.2f s (%.1f MB/s), write %.2f s\n", t1 - t0, t2 - t1,
           (double)size / 1e6 / (t2 - t1 > 0 ? t2 - t1 : 1e-9), t3 - t2);
    free(ids);
    tokenizer_free(tok);
    return 0;
}
