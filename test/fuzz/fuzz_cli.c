// test/fuzz/fuzz_cli.c: the command-line parsers (trainer/cli.c: parse_args, parse_model; trainer/run.c:
// run_check_args; trainer/advise.c with -advise) on arbitrary argument lists: the input, split at NUL
// bytes, is argv[1..]. Each input runs in a child process because a user mistake ends the process
// with exit 2 by design. Oracle: the child exits 0 or 2 (1 is a sanitizer report or an internal
// error, a signal is a crash or a UBSan abort); on a clean exit the parsed values are in range.
#include <string.h>
#include <math.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/wait.h>
#include "test/fuzz/fuzz.h"
#include "trainer/cli.h"
#include "trainer/run.h"
#include "trainer/advise.h"

// The child's exit status as is, skipping the leak check at exit (a stop-the-world scan per input
// would make this target 100x slower; the parsers allocate nothing that outlives them).
static void exit_now(int status, void* arg) { _exit(status); }

static void child(int argc, char** argv) {
    on_exit(exit_now, NULL);
    if (advise_requested(argc, argv)) exit(advise_main(argc, argv));
    Args a;
    parse_args(&a, argc, argv);
    GPT2Config c = parse_model(a.model);
    FUZZ_ASSERT(c.num_layers >= 1 && c.num_layers <= 200 && c.channels >= 1 && c.channels <= 16384 && c.num_heads >= 1 &&
                c.channels % c.num_heads == 0, "model %d:%d:%d accepted", c.num_layers, c.channels, c.num_heads);
    FUZZ_ASSERT(a.B >= 1 && a.T >= 1 && a.steps >= 1 && (a.total_batch == -1 || a.total_batch >= 1), "batch flags out of range");
    const Optimizer* opt = optim_find(a.opt_name);
    if (!opt) exit(2);
    OptHyper hyper;
    int accum = run_check_args(&a, &c, opt, &hyper);
    FUZZ_ASSERT(accum >= 1 && accum <= MAX_MICRO_STEPS, "%d micro-steps accepted", accum);
    FUZZ_ASSERT((long long)accum * a.B * a.T == a.total_batch, "-d is not accum * b * t");
    exit(0);
}

static char* buf;  // global, so the child's leak check at exit sees it as reachable

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = 0;
    char* argv[66];
    int argc = 0;
    argv[argc++] = "train";
    for (size_t i = 0; i < size && argc < 64;) {  // NUL-separated arguments
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[argc] = NULL;
    const char* log = fuzz_write_file("cli.err", NULL, 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    FUZZ_ASSERT(pid >= 0, "fork failed");
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY), e = open(log, O_WRONLY | O_TRUNC);
        dup2(devnull, 1);
        dup2(e, 2);
        child(argc, argv);
    }
    int st;
    waitpid(pid, &st, 0);
    int ok = WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 2);
    if (!ok) {
        fprintf(stderr, "fuzz_cli: child %s %d; argv:", WIFEXITED(st) ? "exited" : "killed by signal",
                WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        for (int i = 1; i < argc; i++) fprintf(stderr, " '%s'", argv[i]);
        fprintf(stderr, "\n--- its stderr:\n");
        FILE* f = fopen(log, "r");
        char line[512];
        while (f && fgets(line, sizeof(line), f)) fputs(line, stderr);
        if (f) fclose(f);
        FUZZ_ASSERT(ok, "the parser crashed or reported an internal error");
    }
    free(buf);
    return 0;
}
