// data/tokenizer.h: GPT-2's byte-level BPE tokenizer (encode and decode), written from the format of
// GPT-2's vocabulary files: encoder.json (token string -> id) and vocab.bpe (the merges in rank order).
// Encoding gives the same ids as GPT-2's tokenizer (tested against js-tiktoken's gpt2 encoding).
// "<|endoftext|>" inside a text is plain text (as in GPT-2's original encoder.py): it is never turned
// into the EOT id by encode; a caller that wants EOT inserts tokenizer_eot() itself.
#ifndef DATA_TOKENIZER_H
#define DATA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Tokenizer Tokenizer;

// Load encoder.json and vocab.bpe. Returns 0 and sets *out, or -1 with a one-line message in err
// (which file, what is wrong, what to do) and *out = NULL.
int tokenizer_load(Tokenizer** out, const char* encoder_json, const char* vocab_bpe, char* err, size_t errlen);
void tokenizer_free(Tokenizer* t);

// Encode len bytes of text (any bytes: invalid UTF-8 is encoded byte by byte, never rejected).
// Returns a malloc'd array of *n_out token ids (the caller frees it); an empty text gives a valid
// pointer and *n_out = 0. Thread-safe: the word cache lives inside the call.
int32_t* tokenizer_encode(const Tokenizer* t, const char* text, size_t len, size_t* n_out);

// The raw bytes of one token (not NUL-terminated; *len set), or NULL for an id out of range.
// A token may hold part of a UTF-8 character: concatenate the bytes of consecutive tokens to print.
const unsigned char* tokenizer_decode(const Tokenizer* t, int id, size_t* len);

int tokenizer_vocab_size(const Tokenizer* t);  // 50257 for GPT-2 (ids 0..50256)
int tokenizer_eot(const Tokenizer* t);         // id of "<|endoftext|>" (50256), -1 if the vocabulary has none

#ifdef __cplusplus
}
#endif

#endif
