// test/fuzz/fuzz.h: the interface of a fuzz target. Each target file defines
//     int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// (libFuzzer's name, so the same file also builds with clang -fsanitize=fuzzer) and returns 0. A
// finding is a sanitizer report (ASan, UBSan with -fno-sanitize-recover, LSan at exit) or a broken
// oracle, which the target reports with FUZZ_ASSERT (prints and aborts). test/fuzz/driver.c is the
// seeded, deterministic mutation driver that runs the targets in CI without libFuzzer.
#ifndef TEST_FUZZ_FUZZ_H
#define TEST_FUZZ_FUZZ_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

#define FUZZ_ASSERT(cond, ...) do { if (!(cond)) { fprintf(stderr, "fuzz oracle failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); abort(); } } while (0)

// A scratch file for inputs that the code under test reads from disk: one per process, in
// $FUZZ_TMPDIR (default /tmp), overwritten by each input. Returns its path.
const char* fuzz_write_file(const char* tag, const uint8_t* data, size_t size);

#endif
