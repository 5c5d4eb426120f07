// test/cudnn_graph_check.cu: builds and finalizes cuda/attention_cudnn.cuh's cuDNN operation graphs
// with no GPU and no handle (everything up to the operation graph works without one), so the graphs
// are checked on any machine with cuDNN's library. Run by test/sh/cudnn_graph.sh, which also compares
// the backend calls (CUDNN_LOGLEVEL_DBG=3) with the frontend's record.
//
//   cudnn_graph_check fwd|bwd B T NH HS    one graph (one process per graph: one log per graph)
//   cudnn_graph_check version              the cuDNN library's version (91900 for 9.19.0)
//   cudnn_graph_check                      all four: fwd and bwd at d12's shape (32, 1024, 12, 64) and
//                                          at a small one (4, 256, 2, 64)
// Exit 0 when every graph finalizes, 1 (and the reason) otherwise.
#include "cuda/attention_cudnn.cuh"

static int check(int backward, int B, int T, int NH, int HS) {
    AcuGraph g;
    char why[512] = "";
    int ok = attn_cudnn_build_graph(&g, backward, B, T, NH, HS, NULL, why, sizeof(why));
    printf("%s %s graph B=%d T=%d NH=%d HS=%d: %d descriptors%s%s\n", ok ? "ok" : "FAILED", backward ? "backward" : "forward",
           B, T, NH, HS, g.n, ok ? "" : ": ", ok ? "" : why);
    acu_graph_destroy(&g);
    return ok;
}

int main(int argc, char** argv) {
    if (argc == 2 && !strcmp(argv[1], "version")) { printf("%zu\n", cudnnGetVersion()); return 0; }
    if (argc == 6) {
        int backward = !strcmp(argv[1], "bwd");
        if (!backward && strcmp(argv[1], "fwd")) { fprintf(stderr, "usage: %s [fwd|bwd B T NH HS]\n", argv[0]); return 2; }
        return check(backward, atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5])) ? 0 : 1;
    }
    if (argc != 1) { fprintf(stderr, "usage: %s [fwd|bwd B T NH HS]\n", argv[0]); return 2; }
    int ok = 1;
    for (int backward = 0; backward < 2; backward++) {
        ok &= check(backward, 32, 1024, 12, 64);
        ok &= check(backward, 4, 256, 2, 64);
    }
    return ok ? 0 : 1;
}
