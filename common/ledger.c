// common/ledger.c: see ledger.h.
#include <string.h>
#include <stdlib.h>
#include <sys/resource.h>
#include "ledger.h"
#include "util.h"

static const char* CAT_NAMES[MEM_NCAT] = {
    "params", "master", "grads", "optimizer", "activations", "workspace", "data", "other"
};

const char* ledger_category_name(MemCategory c) { return (c >= 0 && c < MEM_NCAT) ? CAT_NAMES[c] : "?"; }

void ledger_init(Ledger* L, int dry) {
    memset(L, 0, sizeof(*L));
    L->dry = dry;
}

static void add_line(Ledger* L, MemCategory cat, const char* label, size_t bytes, void* ptr, int owned) {
    CHECK(L->n < LEDGER_MAX_LINES);
    LedgerLine* ln = &L->lines[L->n++];
    ln->cat = cat;
    snprintf(ln->label, sizeof(ln->label), "%s", label);
    ln->bytes = bytes;
    ln->ptr = ptr;
    ln->host_backed = 0;
    ln->owned = owned;
    L->current += bytes;
    if (L->current > L->peak) L->peak = L->current;
}

void ledger_record(Ledger* L, MemCategory cat, const char* label, size_t bytes, void* ptr) {
    add_line(L, cat, label, bytes, ptr, 0);
}

void* ledger_alloc(Ledger* L, MemCategory cat, const char* label, size_t bytes) {
    void* p = NULL;
    if (!L->dry && bytes > 0) {
        // 64-byte alignment: full cache lines, and aligned vector loads in the matmul
        size_t rounded = (bytes + 63) & ~(size_t)63;
        p = aligned_alloc(64, rounded);
        if (!p) {
            fprintf(stderr, "error: out of memory allocating %.1f MiB for %s/%s (%.1f MiB already allocated).\n"
                    "hint: use a smaller model (-model), batch (-b) or sequence length (-t), "
                    "or a lighter optimizer (-opt list)\n",
                    bytes / 1048576.0, ledger_category_name(cat), label, L->current / 1048576.0);
            exit(EXIT_USER);
        }
        memset(p, 0, rounded);
    }
    add_line(L, cat, label, bytes, p, 1);
    return p;
}

void ledger_free(Ledger* L, void* ptr) {
    if (!ptr) return;
    for (int i = 0; i < L->n; i++) {
        if (L->lines[i].ptr == ptr) {
            if (L->lines[i].owned) free(ptr);
            L->current -= L->lines[i].bytes;
            L->lines[i] = L->lines[--L->n];
            return;
        }
    }
    CHECK(0 && "ledger_free of a pointer the ledger does not own");
}

void ledger_free_all(Ledger* L) {
    for (int i = 0; i < L->n; i++) if (L->lines[i].owned) free(L->lines[i].ptr);
    L->n = 0;
    L->current = 0;
}

size_t ledger_category_bytes(const Ledger* L, MemCategory c) {
    size_t s = 0;
    for (int i = 0; i < L->n; i++) if (L->lines[i].cat == c) s += L->lines[i].bytes;
    return s;
}

size_t ledger_label_bytes(const Ledger* L, const char* label) {
    size_t s = 0;
    for (int i = 0; i < L->n; i++) if (strcmp(L->lines[i].label, label) == 0) s += L->lines[i].bytes;
    return s;
}

void ledger_print(const Ledger* L, FILE* f, size_t num_params) {
    size_t total = L->current ? L->current : 1;
    fprintf(f, "+-------------------+----------------------------+----------------+------------+-----------+--------+\n");
    fprintf(f, "| category          | tensor                     |          bytes |        MiB | B/param   |  share |\n");
    fprintf(f, "+-------------------+----------------------------+----------------+------------+-----------+--------+\n");
    for (int c = 0; c < MEM_NCAT; c++) {
        for (int i = 0; i < L->n; i++) {
            const LedgerLine* ln = &L->lines[i];
            if ((int)ln->cat != c) continue;
            char label[64];
            // paged optimizer state lives in host-backed managed memory: say so in the table
            snprintf(label, sizeof(label), "%s%s", ln->label, ln->host_backed ? " [host]" : "");
            fprintf(f, "| %-17s | %-26s | %14zu | %10.2f | %9.4f | %5.1f%% |\n", ledger_category_name(ln->cat),
                    label, ln->bytes, ln->bytes / 1048576.0,
                    num_params ? (double)ln->bytes / num_params : 0.0, 100.0 * ln->bytes / total);
        }
    }
    fprintf(f, "+-------------------+----------------------------+----------------+------------+-----------+--------+\n");
    for (int c = 0; c < MEM_NCAT; c++) {
        size_t b = ledger_category_bytes(L, (MemCategory)c);
        if (!b) continue;
        fprintf(f, "| total %-11s |                            | %14zu | %10.2f | %9.4f | %5.1f%% |\n",
                ledger_category_name((MemCategory)c), b, b / 1048576.0,
                num_params ? (double)b / num_params : 0.0, 100.0 * b / total);
    }
    fprintf(f, "| TOTAL             |                            | %14zu | %10.2f | %9.4f | 100.0%% |\n",
            L->current, L->current / 1048576.0, num_params ? (double)L->current / num_params : 0.0);
    fprintf(f, "+-------------------+----------------------------+----------------+------------+-----------+--------+\n");
}

size_t ledger_mem_available(const char* meminfo_path) {
    FILE* f = fopen(meminfo_path ? meminfo_path : "/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t avail = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long kb;
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) { avail = (size_t)kb * 1024; break; }
    }
    fclose(f);
    return avail;
}

int ledger_check_fits(const Ledger* L, size_t available, char* msg, size_t msglen) {
    size_t need = L->peak > L->current ? L->peak : L->current;
    if (available == 0 || need <= available) { if (msglen) msg[0] = 0; return 0; }
    // the three largest categories: where the memory goes, so the user knows which flag to turn
    size_t bytes[MEM_NCAT];
    int order[MEM_NCAT];
    for (int c = 0; c < MEM_NCAT; c++) { bytes[c] = ledger_category_bytes(L, (MemCategory)c); order[c] = c; }
    for (int i = 1; i < MEM_NCAT; i++)
        for (int j = i; j > 0 && bytes[order[j]] > bytes[order[j - 1]]; j--) { int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t; }
    char parts[256];
    size_t len = 0;
    parts[0] = 0;
    for (int i = 0; i < 3 && bytes[order[i]]; i++)
        len += (size_t)snprintf(parts + len, sizeof(parts) - len, "%s%s %.1f MiB", i ? ", " : "",
                                ledger_category_name((MemCategory)order[i]), bytes[order[i]] / 1048576.0);
    snprintf(msg, msglen, "this run needs %.1f MiB (memory ledger: %s) but only %.1f MiB are available (MemAvailable); "
             "use a smaller model (-model), batch (-b) or sequence length (-t), or a lighter optimizer (-opt list)",
             need / 1048576.0, parts, available / 1048576.0);
    return -1;
}

size_t process_peak_rss(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024; // Linux reports KiB
}
