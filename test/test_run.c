// test/test_run.c: pieces of the shared run loop (trainer/run.c) that can be checked without training.
//  - utf8_write_whole(): sample text is printed as whole UTF-8 characters even when a GPT-2 token ends
//    inside one (the expected outputs are hand-derived from RFC 3629).
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include "trainer/run.h"
#include "test/test.h"

// Feeds `tokens` (byte strings, "" separated) one at a time as run_sample does; returns the printed text.
static char* feed(const char* const* tokens, int n) {
    char* text = NULL;
    size_t len = 0;
    FILE* out = open_memstream(&text, &len);
    unsigned char pending[64];
    size_t np = 0;
    for (int i = 0; i < n; i++) {
        for (const char* p = tokens[i]; *p; p++) pending[np++] = (unsigned char)*p;
        np = utf8_write_whole(out, pending, np, 0);
    }
    utf8_write_whole(out, pending, np, 1);
    fclose(out);
    return text;
}

static void check(const char* name, const char* const* tokens, int n, const char* want) {
    char* got = feed(tokens, n);
    char why[256];
    snprintf(why, sizeof(why), "got '%s', want '%s'", got, want);
    test_check(strcmp(got, want) == 0, why, "utf8: %s", name);
    free(got);
}

int main(void) {
    const char* ascii[] = { "Hello", ", ", "world" };
    check("ASCII passes through", ascii, 3, "Hello, world");
    const char* split2[] = { "caf", "\xC3", "\xA9", "!" };                 // é split after its lead byte
    check("a 2-byte character split across tokens prints once, whole", split2, 4, "caf\xC3\xA9!");
    const char* split4[] = { "\xF0\x9F", "\x98", "\x80", " ok" };          // U+1F600 in three pieces
    check("a 4-byte character split in three prints whole", split4, 4, "\xF0\x9F\x98\x80 ok");
    const char* lone[] = { "a", "\x80", "b" };                             // a stray continuation byte
    check("a stray continuation byte prints as U+FFFD", lone, 3, "a\xEF\xBF\xBD" "b");
    const char* cut[] = { "x", "\xE2\x82" };                               // € (E2 82 AC) cut at the end
    check("an unfinished character at the end prints as U+FFFD", cut, 2, "x\xEF\xBF\xBD");
    const char* interrupted[] = { "\xE2\x82", "y" };                       // € interrupted by ASCII
    check("an interrupted character prints U+FFFD per bad byte", interrupted, 2, "\xEF\xBF\xBD\xEF\xBF\xBD" "y");
    const char* overlong[] = { "\xC0\xAF" };                               // overlong '/', never valid
    check("an overlong encoding is refused", overlong, 1, "\xEF\xBF\xBD\xEF\xBF\xBD");
    const char* surrogate[] = { "\xED\xA0\x80" };                          // U+D800, a surrogate
    check("a surrogate is refused", surrogate, 1, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    return test_finish("test_run");
}
