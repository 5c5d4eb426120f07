// common/checkpoint.h: the checkpoint file, shared by the CPU and CUDA trainers (a checkpoint
// written by one resumes in the other). Layout (little-endian):
//   CkptHeader (fixed size, below)
//   nblobs x CkptBlobInfo (name, bytes)
//   the blobs' bytes, in the same order
// The blobs are: the fp32 weights (master in bf16 mode, the parameters in fp32 mode), the bf16 working
// copy (bf16 mode only; kept because stochastic rounding makes it more than a rounding of the master),
// then every optimizer state buffer in the optimizer's layout order.
// Saving writes PATH.tmp, flushes it to disk and renames it over PATH, so an interrupted save never
// damages the previous checkpoint.
#ifndef COMMON_CHECKPOINT_H
#define COMMON_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CKPT_MAGIC "GPT2CKPT"
#define CKPT_VERSION 1
#define CKPT_MAX_BLOBS 32

typedef struct {
    char magic[8];
    int32_t version;
    int32_t num_layers, channels, num_heads, vocab_size, padded_vocab_size, max_seq_len;
    int32_t precision;        // 0 fp32, 1 bf16
    char optimizer[32];
    int32_t step;             // steps completed
    int32_t total_steps;      // -x of the run that wrote it (informational)
    int32_t skipped_steps;    // non-finite steps skipped so far
    int32_t nblobs;
    uint64_t seed;
    uint64_t data_position;   // train dataloader position after `step` steps
    uint64_t num_params;
    uint64_t tokens_seen;
    double reserved[4];
} CkptHeader;

typedef struct {
    char name[40];
    uint64_t bytes;
} CkptBlobInfo;

typedef struct {
    const char* name;
    void* data;       // source (save) or destination (load)
    size_t bytes;
} CkptBlob;

// 0 on success; -1 with a message in err (the previous file at path is untouched).
int ckpt_save(const char* path, const CkptHeader* h, const CkptBlob* blobs, int nblobs, char* err, size_t errlen);
// Reads and validates the header (magic, version). 0 on success, -1 with a message.
int ckpt_read_header(const char* path, CkptHeader* h, char* err, size_t errlen);
// Reads the blobs into the given destinations; names and sizes must match exactly. 0 or -1.
int ckpt_load(const char* path, CkptHeader* h, const CkptBlob* blobs, int nblobs, char* err, size_t errlen);

// Reads one blob by name (any checkpoint of this trainer, whatever its optimizer): its size must be
// `bytes`. 0, or -1 with a message (no such blob, another size, truncated).
int ckpt_load_blob(const char* path, const char* name, void* dst, size_t bytes, char* err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
