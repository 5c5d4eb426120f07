// test/fuzz/fuzz_checkpoint.c: the checkpoint reader (common/checkpoint.c) on arbitrary file contents.
// The layout expected by the load is the one of the seed corpus (test/fuzz/corpus/checkpoint/, made
// by test/fuzz/make_corpus.sh): blobs "weights fp32" (64 floats), "weights bf16" (64 x 2 bytes),
// "opt: m" (64 floats). Oracles: a refusal always has a message; ckpt_verify, ckpt_read_header and
// ckpt_load agree; what the reader accepts with finite weights, the writer writes again, and the file
// it writes is accepted and loads back the same bytes.
#include <string.h>
#include "test/fuzz/fuzz.h"
#include "common/checkpoint.h"

#define NP 64
static float w[NP], m[NP], w2[NP], m2[NP];
static uint16_t h16[NP], h16b[NP];

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* p = fuzz_write_file("ckpt.bin", data, size);
    char err[2048] = "", warn[2048];
    CkptHeader h, hv;
    int rh = ckpt_read_header(p, &h, err, sizeof(err));
    FUZZ_ASSERT(rh == 0 || err[0], "header refused without a message");
    err[0] = 0;
    int rv = ckpt_verify(p, &hv, err, sizeof(err));
    FUZZ_ASSERT(rv == 0 || err[0], "verify refused without a message");
    FUZZ_ASSERT(rv != 0 || rh == 0, "ckpt_verify accepts what ckpt_read_header refuses");
    if (rh == 0) FUZZ_ASSERT(h.step >= 0 && h.skipped_steps >= 0 && h.nblobs >= 0 && h.nblobs <= CKPT_MAX_BLOBS, "bad field accepted");
    char chosen[1100];
    int rc = ckpt_choose(p, chosen, sizeof(chosen), warn, sizeof(warn), err, sizeof(err));
    FUZZ_ASSERT((rc == 0) == (rv == 0) || rc == 0, "ckpt_choose and ckpt_verify disagree");
    CkptBlob blobs[3] = { { "weights fp32", w, sizeof(w) }, { "weights bf16", h16, sizeof(h16) }, { "opt: m", m, sizeof(m) } };
    err[0] = 0;
    int rl = ckpt_load(p, &h, blobs, 3, err, sizeof(err));
    FUZZ_ASSERT(rl == 0 || err[0], "load refused without a message");
    if (rl != 0) return 0;
    FUZZ_ASSERT(rh == 0 && rv == 0, "ckpt_load accepts a file ckpt_verify refuses");
    if (!ckpt_blobs_finite(blobs, 3, CKPT_WEIGHTS_BLOB, err, sizeof(err))) return 0;  // only a version 1 file can get here
    const char* q = fuzz_write_file("resave.bin", NULL, 0);
    int rs = ckpt_save(q, &h, blobs, 3, err, sizeof(err));
    FUZZ_ASSERT(rs == 0, "the writer refuses what the reader accepted: %s", err);
    CkptBlob back[3] = { { "weights fp32", w2, sizeof(w2) }, { "weights bf16", h16b, sizeof(h16b) }, { "opt: m", m2, sizeof(m2) } };
    CkptHeader h2;
    rl = ckpt_load(q, &h2, back, 3, err, sizeof(err));
    FUZZ_ASSERT(rl == 0, "a re-saved checkpoint does not load: %s", err);
    FUZZ_ASSERT(!memcmp(w, w2, sizeof(w)) && !memcmp(m, m2, sizeof(m)) && !memcmp(h16, h16b, sizeof(h16)), "re-saved blobs differ");
    FUZZ_ASSERT(h2.step == h.step && h2.seed == h.seed && h2.tokens_seen == h.tokens_seen && h2.data_position == h.data_position,
                "re-saved header differs");
    return 0;
}
