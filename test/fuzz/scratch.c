// test/fuzz/scratch.c: fuzz_write_file (see fuzz.h), shared by the driver and libFuzzer builds.
#include <string.h>
#include <unistd.h>
#include "test/fuzz/fuzz.h"

#define SLOTS 8
static char paths[SLOTS][512];
static int registered;
static pid_t owner;  // forked children (fuzz_cli) must not remove the parent's files at their exit

static void remove_all(void) {
    if (getpid() != owner) return;
    for (int i = 0; i < SLOTS; i++) if (paths[i][0]) unlink(paths[i]);
}

const char* fuzz_write_file(const char* tag, const uint8_t* data, size_t size) {
    const char* dir = getenv("FUZZ_TMPDIR");
    char p[512];
    snprintf(p, sizeof(p), "%s/fuzz-%d-%s", dir && *dir ? dir : "/tmp", (int)getpid(), tag);
    int slot = 0;  // the same tag reuses its slot, so a run leaves at most SLOTS files, removed at exit
    while (slot < SLOTS && paths[slot][0] && strcmp(paths[slot], p) != 0) slot++;
    if (slot == SLOTS) { fprintf(stderr, "fuzz_write_file: more than %d tags\n", SLOTS); abort(); }
    snprintf(paths[slot], sizeof(paths[slot]), "%s", p);
    if (!registered) { owner = getpid(); atexit(remove_all); registered = 1; }
    FILE* f = fopen(p, "wb");
    if (!f) { perror(p); abort(); }
    if (size && fwrite(data, 1, size, f) != size) { perror(p); abort(); }
    fclose(f);
    return paths[slot];
}
