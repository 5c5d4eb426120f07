// common/ledger.h: the memory ledger. Every large allocation of the trainer goes through it with a
// category and a label, so the bytes of each part (parameters, master weights, gradients, each
// optimizer state tensor, activations, ...) are known exactly, printed as a table at start, and the
// high-water mark is reported at the end.
//
// A "dry" ledger records the same lines without allocating anything (ledger_alloc returns NULL):
// that is how the memory of a 175B model is tabled on a laptop.
#ifndef COMMON_LEDGER_H
#define COMMON_LEDGER_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MEM_PARAMS = 0,   // working parameters (bf16, or fp32 with -precision fp32)
    MEM_MASTER,       // fp32 master weights (bf16 mode only)
    MEM_GRADS,        // gradients
    MEM_OPT_STATE,    // optimizer state, one line per state tensor kind
    MEM_ACTIVATIONS,  // activations kept for backward
    MEM_WORKSPACE,    // scratch buffers (fp32 layer copies on the CPU, cuBLASLt workspace on the GPU)
    MEM_DATA,         // input/target token batches
    MEM_OTHER,
    MEM_NCAT
} MemCategory;

#define LEDGER_MAX_LINES 64

typedef struct {
    MemCategory cat;
    char label[48];
    size_t bytes;     // currently allocated under this line
    void* ptr;        // what was allocated (NULL when dry)
    int host_backed;  // 1 if the memory lives in host memory (paged optimizers); shown in the table
    int owned;        // 1 if ledger_alloc allocated it (and ledger_free frees it)
} LedgerLine;

typedef struct {
    LedgerLine lines[LEDGER_MAX_LINES];
    int n;
    int dry;            // 1: record only, never allocate
    size_t current;     // bytes allocated now
    size_t peak;        // high-water mark of current
} Ledger;

const char* ledger_category_name(MemCategory c);
void ledger_init(Ledger* L, int dry);
// Allocate `bytes` zeroed bytes under (cat, label). One call per tensor group (llm.c style).
// Returns NULL only for a dry ledger or bytes == 0.
void* ledger_alloc(Ledger* L, MemCategory cat, const char* label, size_t bytes);
// Record memory allocated elsewhere (e.g. cudaMalloc, the dataloader) under (cat, label); the
// ledger counts it but never frees it.
void ledger_record(Ledger* L, MemCategory cat, const char* label, size_t bytes, void* ptr);
void ledger_free(Ledger* L, void* ptr);
void ledger_free_all(Ledger* L);
size_t ledger_category_bytes(const Ledger* L, MemCategory c);
size_t ledger_label_bytes(const Ledger* L, const char* label);
// The table printed at start: one line per allocation, bytes, MiB, bytes/param, share of total.
void ledger_print(const Ledger* L, FILE* f, size_t num_params);
// Pre-flight: the memory this process may still use, MemAvailable of meminfo_path (NULL:
// /proc/meminfo) in bytes; 0 when unknown (no such file or field).
size_t ledger_mem_available(const char* meminfo_path);
// Pre-flight check before allocating: 0 when the ledger's peak (a dry ledger holding the whole plan)
// fits in `available` bytes (or available is 0: unknown); -1 when it does not, with one line in msg
// giving the ledger's numbers (total and its largest categories) and what to do.
int ledger_check_fits(const Ledger* L, size_t available, char* msg, size_t msglen);
// Peak resident set size of this process in bytes (getrusage), 0 if unknown.
size_t process_peak_rss(void);

#ifdef __cplusplus
}
#endif

#endif
