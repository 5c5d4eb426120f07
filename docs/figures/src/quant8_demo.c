// docs/figures/src/quant8_demo.c: the numbers behind docs/figures/quant8.png.
//
//   quant8_demo OUTDIR                       writes codes.dat: the 256 entries of the signed and the
//                                            unsigned dynamic map, as optim/quant8.c builds them
//   quant8_demo OUTDIR CKPT TENSOR BLOCK     also reads the first moment m (AdamW's "opt: exp_avg")
//                                            of TENSOR from the checkpoint CKPT, takes its block number
//                                            BLOCK (256 elements, the 8-bit optimizers' -qblock default),
//                                            quantizes it with the signed map as adamw8bit stores m
//                                            (optim/quant8.c, with the sign guard), dequantizes it and
//                                            writes block.dat: element, m, dequantized m, code, error
// Nothing here retypes a code value: every number comes from the project's own quant8.c.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/checkpoint.h"
#include "common/util.h"
#include "optim/quant8.h"
#include "optim/state.h"
#include "trainer/model.h"

#define BLOCK 256

static FILE* open_out(const char* dir, const char* name) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE* f = fopen(path, "w");
    if (!f) { fprintf(stderr, "error: cannot write %s\n", path); exit(1); }
    return f;
}

// Byte offset of the blob `name` in the checkpoint file, and its size.
static long blob_offset(FILE* f, const CkptHeader* h, const char* name, uint64_t* bytes) {
    long off = (long)sizeof(CkptHeader) + (long)h->nblobs * (long)sizeof(CkptBlobInfo);
    CHECK(fseek(f, (long)sizeof(CkptHeader), SEEK_SET) == 0);
    for (int b = 0; b < h->nblobs; b++) {
        CkptBlobInfo info;
        CHECK(fread_exact(&info, sizeof(info), 1, f) == 0);
        if (strncmp(info.name, name, sizeof(info.name)) == 0) { *bytes = info.bytes; return off; }
        off += (long)info.bytes;
    }
    return -1;
}

int main(int argc, char** argv) {
    if (argc != 2 && argc != 5) {
        fprintf(stderr, "usage: %s OUTDIR [CKPT TENSOR BLOCK]\n", argv[0]);
        return 2;
    }
    const char* dir = argv[1];
    const Q8Map* sm = q8_map_signed();
    const Q8Map* um = q8_map_unsigned();
    FILE* out = open_out(dir, "codes.dat");
    fprintf(out, "# index signed_code unsigned_code\n");
    for (int i = 0; i < Q8_CODES; i++) fprintf(out, "%d %.9g %.9g\n", i, sm->code[i], um->code[i]);
    fclose(out);
    printf("quant8_demo: signed map code[0] = %.6g, code[126] = %.3g, code[127] = %g, code[128] = %.3g, "
           "code[255] = %g\n", sm->code[0], sm->code[126], sm->code[127], sm->code[128], sm->code[255]);
    // The quantize-dequantize error as a function of x = value / absmax (a sawtooth whose teeth shrink
    // with each decade), on a fine grid: the curve the block's points lie on.
    out = open_out(dir, "sawtooth.dat");
    fprintf(out, "# x dequantize(quantize(x)) - x   (signed map, sign guard, absmax 1)\n");
    for (int k = -20000; k <= 20000; k++) {
        const float x = (float)k / 20000.0f;
        fprintf(out, "%.6f %.6g\n", x, q8_dequantize(sm, q8_quantize(sm, 1, x, 1.0f), 1.0f) - x);
    }
    fclose(out);
    if (argc == 2) return 0;

    const char* ckpt = argv[2];
    const char* tensor = argv[3];
    const long block = atol(argv[4]);
    char err[256];
    CkptHeader h;
    if (ckpt_read_header(ckpt, &h, err, sizeof(err)) != 0) { fprintf(stderr, "error: %s\n", err); return 1; }
    if (strcmp(h.optimizer, "adamw") != 0) {
        fprintf(stderr, "error: %s was written by -opt %s; this reads AdamW's exp_avg (run with -opt adamw)\n",
                ckpt, h.optimizer);
        return 1;
    }
    GPT2Config cfg = { .max_seq_len = h.max_seq_len, .vocab_size = h.vocab_size,
                       .padded_vocab_size = h.padded_vocab_size, .num_layers = h.num_layers,
                       .num_heads = h.num_heads, .channels = h.channels };
    ModelLayout ml;
    model_layout_build(&ml, &cfg);
    const Optimizer* adamw = optim_find("adamw");
    StateLayout sl;
    state_layout_for_model(&sl, &ml, adamw, &adamw->defaults);
    int ti = -1;
    for (int i = 0; i < ml.num_tensors; i++) if (strcmp(ml.tensors[i].name, tensor) == 0) ti = i;
    if (ti < 0) { fprintf(stderr, "error: no tensor %s in this model\n", tensor); return 1; }
    const size_t numel = ml.tensors[ti].shape.numel;
    if ((block + 1) * BLOCK > (long)numel) { fprintf(stderr, "error: %s has only %zu elements\n", tensor, numel); return 1; }

    FILE* f = fopen(ckpt, "rb");
    CHECK(f != NULL);
    uint64_t bytes = 0;
    long off = blob_offset(f, &h, "opt: exp_avg", &bytes);
    if (off < 0) { fprintf(stderr, "error: no 'opt: exp_avg' blob in %s\n", ckpt); return 1; }
    CHECK(sl.tensors[ti].offset[0] + numel * sizeof(float) <= bytes);
    float m[BLOCK], deq[BLOCK], absmax;
    uint8_t codes[BLOCK];
    CHECK(fseek(f, off + (long)sl.tensors[ti].offset[0] + block * BLOCK * (long)sizeof(float), SEEK_SET) == 0);
    CHECK(fread_exact(m, sizeof(float), BLOCK, f) == 0);
    fclose(f);

    q8_quantize_blockwise(sm, 1, m, BLOCK, BLOCK, codes, &absmax);   // m: signed map, sign guard on
    q8_dequantize_blockwise(sm, codes, &absmax, BLOCK, BLOCK, deq);
    out = open_out(dir, "block.dat");
    fprintf(out, "# element m dequantized code error   (absmax %.9g)\n", absmax);
    double max_err = 0.0, sum_rel = 0.0;
    int distinct = 0, seen[Q8_CODES] = {0};
    for (int i = 0; i < BLOCK; i++) {
        double e = (double)deq[i] - (double)m[i];
        fprintf(out, "%d %.9g %.9g %d %.9g\n", i, m[i], deq[i], codes[i], e);
        if (fabs(e) > max_err) max_err = fabs(e);
        if (m[i] != 0.0f) sum_rel += fabs(e) / fabs(m[i]);
        if (!seen[codes[i]]++) distinct++;
    }
    fclose(out);
    printf("quant8_demo: %s block %ld (step %d of -opt adamw): absmax %.4g, max |error| %.3g (%.2f%% of absmax), "
           "mean relative error %.2f%%, %d distinct codes\n", tensor, block, h.step, absmax, max_err,
           100.0 * max_err / absmax, 100.0 * sum_rel / BLOCK, distinct);
    state_layout_free(&sl);
    model_layout_free(&ml);
    return 0;
}
