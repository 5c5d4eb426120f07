// test/fuzz/fuzz_shard.c: the token-shard reader (data/dataloader.c) on arbitrary file contents.
// Oracles: a refused file always comes with a message; an accepted one yields batches whose ids are
// all below the vocabulary and whose position stays inside the tokens, and dataloader_check agrees.
#include <string.h>
#include "test/fuzz/fuzz.h"
#include "data/dataloader.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* p = fuzz_write_file("shard.bin", data, size);
    enum { B = 2, T = 4, V = 50257 };
    char err[1024] = "";
    uint64_t n = 0;
    int checked = dataloader_check(p, B, T, &n, err, sizeof(err));
    DataLoader dl;
    err[0] = 0;
    int opened = dataloader_open(&dl, p, B, T, V, err, sizeof(err));
    if (opened != 0) {
        FUZZ_ASSERT(err[0] != 0, "refused without a message");
        return 0;
    }
    FUZZ_ASSERT(checked == 0 && n == dataloader_num_tokens(&dl), "dataloader_check disagrees with dataloader_open");
    FUZZ_ASSERT(dl.n_tokens >= (uint64_t)B * T + 1, "%llu tokens accepted", (unsigned long long)dl.n_tokens);
    int in[B * T], tg[B * T];
    for (int k = 0; k < 6; k++) {
        dataloader_next(&dl, in, tg);
        for (int j = 0; j < B * T; j++) FUZZ_ASSERT(in[j] >= 0 && in[j] < V && tg[j] >= 0 && tg[j] < V, "id out of range");
        FUZZ_ASSERT(dl.pos <= dl.n_tokens, "position past the end");
    }
    FUZZ_ASSERT(dataloader_seek(&dl, dl.n_tokens + 1) != 0, "seek past the end accepted");
    dataloader_free(&dl);
    return 0;
}
