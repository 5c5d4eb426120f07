// data/dataloader.h: token shards in llm.c's format, and the loader that cuts them into batches.
//
// Shard file: a header of 256 int32 (little-endian): header[0] = 20240520 (magic), header[1] = 1
// (version), header[2] = number of tokens; then that many uint16 token ids. So llm.c's datasets work
// here and ours work there.
//
// The loader reads every shard of a glob pattern (sorted by name) into memory as one token stream,
// validating each file at open. A batch is B*T+1 consecutive tokens: inputs are the first B*T (as
// (B, T) rows), targets the same shifted by one. Each batch advances the position by B*T; when fewer
// than B*T+1 tokens remain, the position wraps to 0. The position is one integer, so a checkpoint
// restores the exact batch sequence with dataloader_seek.
#ifndef DATA_DATALOADER_H
#define DATA_DATALOADER_H

#include <stddef.h>
#include <stdint.h>

#include "data/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHARD_MAGIC 20240520
#define SHARD_VERSION 1
#define SHARD_HEADER_INTS 256
#define SHARD_HEADER_BYTES (SHARD_HEADER_INTS * 4)

typedef struct {
    int B, T;
    uint16_t* tokens;      // (n_tokens,) every shard's tokens, concatenated in sorted file-name order
    uint64_t n_tokens;
    uint64_t pos;          // index of the first token of the next batch
    int n_files;
    char pattern[512];     // as given to dataloader_open, for messages
} DataLoader;

// Open every file matching the glob `pattern` (a plain path works too). Validates each file: magic,
// version, size == 1024 + 2 * count (else "truncated"), every token < vocab_size; and that all files
// together hold at least B*T+1 tokens. Returns 0, or -1 with a one-line message in err naming the
// file and what to do (dl is then empty and needs no dataloader_free).
int dataloader_open(DataLoader* dl, const char* pattern, int B, int T, int vocab_size, char* err, size_t errlen);
// Pass 1 of dataloader_open alone: every file's header and size, and at least B*T+1 tokens in all,
// without reading the tokens (cheap: call it before allocating the model, so that too little data is
// reported as such and not as the memory a huge B*T would need). Only regular files are accepted (a
// directory or a FIFO is named as such). 0 (n_tokens set when not NULL), or -1 with a message.
int dataloader_check(const char* pattern, int B, int T, uint64_t* n_tokens, char* err, size_t errlen);
// Fill inputs (B, T) and targets (B, T) (caller-owned) with the next batch.
void dataloader_next(DataLoader* dl, int* inputs, int* targets);
void dataloader_reset(DataLoader* dl);                   // back to the first batch
uint64_t dataloader_position(const DataLoader* dl);      // where the next batch starts
int dataloader_seek(DataLoader* dl, uint64_t pos);       // 0, or -1 if pos > number of tokens
uint64_t dataloader_num_tokens(const DataLoader* dl);
uint64_t dataloader_batches(const DataLoader* dl);       // distinct batches before the position wraps
size_t dataloader_bytes(const DataLoader* dl);           // heap bytes held (for the memory ledger)
void dataloader_free(DataLoader* dl);

// Write tokens[0..n) as a shard at path, through path.tmp.PID + rename (an existing file is only
// replaced by a complete one). Every token must be in 0..65535. Returns 0, or -1 with a message.
int data_write_shard(const char* path, const int32_t* tokens, size_t n, char* err, size_t errlen);

// Tokenize a text file into a train and a val shard, cached under cache_dir: the cache key is the
// file's absolute path, size and mtime and val_fraction, so a changed file is re-tokenized and an
// unchanged one is read from the cache. The token stream is EOT + the text's tokens (llm.c's shards
// start each document with EOT); the last val_fraction of it (at least one token when
// val_fraction > 0) goes to the val shard, the rest to train. val_fraction == 0 writes no val shard
// and sets val_path_out to "". val_fraction must be in [0, 1). The shard paths go to train_path_out
// and val_path_out (pathlen bytes each). Returns 0, or -1 with a message (unreadable or empty text,
// too few tokens, cannot write the cache).
int data_text_to_shards(const Tokenizer* t, const char* txt_path, const char* cache_dir, double val_fraction,
                        char* train_path_out, char* val_path_out, size_t pathlen, char* err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
