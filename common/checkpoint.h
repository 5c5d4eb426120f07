// common/checkpoint.h: the checkpoint file, shared by the CPU and CUDA trainers (a checkpoint
// written by one resumes in the other). Layout (little-endian):
//   CkptHeader (fixed size, 152 bytes, below)
//   nblobs x blob info: version 2: name[40], bytes (u64), crc32c (u32), reserved (u32) = 56 bytes
//                       version 1: name[40], bytes (u64) = 48 bytes
//   the blobs' bytes, in the same order; nothing after the last blob
// The blobs are: the fp32 weights (master in bf16 mode, the parameters in fp32 mode), the bf16 working
// copy (bf16 mode only; kept because stochastic rounding makes it more than a rounding of the master),
// then every optimizer state buffer in the optimizer's layout order.
//
// Version 2 proves itself: header_crc is the CRC-32C of the header (with header_crc read as 0)
// followed by the blob table, and every blob's CRC-32C is in its table entry, so a flipped bit
// anywhere in the file is found and named. Version 2 also records the run flags a bit-exact resume
// depends on (run_B ... run_lr). Version 1 files (no checksums) still load, with a note.
//
// Saving writes a new file PATH.tmp.XXXXXX (created exclusively: common/fileio.h), flushes it to
// disk, renames the existing PATH to its ".prev" name (checkpoint.bin -> checkpoint.prev.bin) and the
// new file to PATH: an interrupted save never damages the previous checkpoint, and one damaged file
// still leaves the one before it (see ckpt_choose). PATH becomes .prev only when it verifies (a
// damaged PATH, e.g. after a resume from .prev, is replaced in place): a verified checkpoint exists
// at every instant.
#ifndef COMMON_CHECKPOINT_H
#define COMMON_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CKPT_MAGIC "GPT2CKPT"
#define CKPT_VERSION 2
#define CKPT_MAX_BLOBS 32
// the blob ckpt_save refuses to write when it holds a NaN or an infinity (trainer/model.c names it)
#define CKPT_WEIGHTS_BLOB "weights fp32"
// the bf16 working copy (bf16 mode), also checked: a checkpoint is never written from, nor resumed with, an inf or NaN there
#define CKPT_WEIGHTS_BF16_BLOB "weights bf16"

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
    // version 2 (in version 1 these 32 bytes were reserved and are read as 0): the flags a bit-exact
    // resume needs, filled by run_ckpt_header; run_B == 0 means "not recorded"
    int32_t run_B, run_T;     // -b, -t
    int32_t run_total_batch;  // -d (tokens per step)
    int32_t run_sr;           // -sr
    double run_lr;            // -l as given (NaN: the optimizer's default)
    uint32_t header_crc;      // version 2: CRC-32C of this header (this field as 0) and the blob table
    uint32_t run_id;          // the run that wrote it (its log's config record has the same "run_id"); 0: not recorded
} CkptHeader;

typedef struct {
    char name[40];
    uint64_t bytes;
} CkptBlobInfo;               // version 1 table entry

typedef struct {
    char name[40];
    uint64_t bytes;
    uint32_t crc;             // CRC-32C of the blob's bytes
    uint32_t reserved;
} CkptBlobInfo2;              // version 2 table entry

typedef struct {
    const char* name;
    void* data;       // source (save) or destination (load)
    size_t bytes;
} CkptBlob;

// 0 on success; -1 with a message in err (the previous file at path is untouched). Refuses (-1) to
// write when the CKPT_WEIGHTS_BLOB blob holds a non-finite value. On success the file that was at
// path (if any) is now at its ckpt_prev_path name.
int ckpt_save(const char* path, const CkptHeader* h, const CkptBlob* blobs, int nblobs, char* err, size_t errlen);
// Reads and validates the header: a regular file, magic, version, every field in range (step >= 0,
// counters non-negative, nblobs in range, the blob table and the file length consistent), and in
// version 2 the header checksum. 0 on success, -1 with a message.
int ckpt_read_header(const char* path, CkptHeader* h, char* err, size_t errlen);
// Reads the blobs into the given destinations; names and sizes must match exactly, the file length
// must be exact, and (version 2) every blob's checksum must match: "checksum mismatch in blob
// 'NAME' of PATH", and the weights blobs (fp32 and bf16) must be finite. A version 1 file loads with a
// one-line note on stderr. 0 or -1 (the destinations
// may then hold partial data: do not train from them).
int ckpt_load(const char* path, CkptHeader* h, const CkptBlob* blobs, int nblobs, char* err, size_t errlen);
// Checks a whole file without a destination: the header as ckpt_read_header, then (version 2) every
// blob's checksum. h may be NULL. 0 (valid) or -1 with a message.
int ckpt_verify(const char* path, CkptHeader* h, char* err, size_t errlen);
// What to resume from: path if it verifies, else its ".prev" file if that verifies (with a warning in
// warn saying why path was skipped); neither: -1 with err naming both problems. warn is "" when there
// is nothing to say. 0 with the chosen path in chosen.
int ckpt_choose(const char* path, char* chosen, size_t n, char* warn, size_t wn, char* err, size_t en);
// The name the previous checkpoint is kept under: ".prev" before the extension of the file name
// (dir/checkpoint.bin -> dir/checkpoint.prev.bin; dir/ckpt -> dir/ckpt.prev).
void ckpt_prev_path(const char* path, char* out, size_t n);
// 1 if the blob named `name` (CKPT_WEIGHTS_BLOB read as floats, CKPT_WEIGHTS_BF16_BLOB as bf16) is all
// finite (or absent);
// 0 with a message naming the first bad element. One pass over the blob.
int ckpt_blobs_finite(const CkptBlob* blobs, int nblobs, const char* name, char* err, size_t errlen);

// Reads one blob by name (any checkpoint of this trainer, whatever its optimizer): its size must be
// `bytes`. 0, or -1 with a message (no such blob, another size, truncated).
int ckpt_load_blob(const char* path, const char* name, void* dst, size_t bytes, char* err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
