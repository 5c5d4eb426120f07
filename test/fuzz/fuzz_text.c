// test/fuzz/fuzz_text.c: the GPT-2 BPE tokenizer (data/tokenizer.c) on arbitrary bytes, including
// invalid and tricky UTF-8. The vocabulary is loaded once from $FUZZ_VOCAB_DIR (default data/gpt2,
// fetched by `make data`). Oracle: byte-level BPE is lossless, so the bytes of the ids, decoded and
// concatenated, are exactly the input; every id is inside the vocabulary.
#include <string.h>
#include "test/fuzz/fuzz.h"
#include "data/tokenizer.h"

static Tokenizer* tok;

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (!tok) {
        const char* dir = getenv("FUZZ_VOCAB_DIR");
        char enc[1024], bpe[1024], err[1024];
        snprintf(enc, sizeof(enc), "%s/encoder.json", dir ? dir : "data/gpt2");
        snprintf(bpe, sizeof(bpe), "%s/vocab.bpe", dir ? dir : "data/gpt2");
        if (tokenizer_load(&tok, enc, bpe, err, sizeof(err)) != 0) { fprintf(stderr, "fuzz_text: %s\n", err); exit(2); }
    }
    size_t n = 0;
    int32_t* ids = tokenizer_encode(tok, (const char*)data, size, &n);
    FUZZ_ASSERT(ids != NULL, "encode returned NULL");
    uint8_t* back = malloc(size + 1);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        FUZZ_ASSERT(ids[i] >= 0 && ids[i] < tokenizer_vocab_size(tok), "id %d out of range", ids[i]);
        size_t len;
        const unsigned char* b = tokenizer_decode(tok, ids[i], &len);
        FUZZ_ASSERT(b != NULL && len > 0 && at + len <= size, "decode of id %d overruns the input", ids[i]);
        memcpy(back + at, b, len);
        at += len;
    }
    FUZZ_ASSERT(at == size && memcmp(back, data, size) == 0, "decode(encode(x)) != x (%zu of %zu bytes)", at, size);
    free(back);
    free(ids);
    return 0;
}
