// test/test_attention_cudnn_gpu.cu: cuda/attention_cudnn.cuh on a GPU, against cuda/attention.cuh (the
// reference kernels: fp32 arithmetic on the same bf16 inputs). Needs a GPU and cuDNN; not run by
// `make test`. Built by `make test/bin/test_attention_cudnn_gpu` (the Makefile finds cuDNN; CUDNN_HOME=DIR
// for one outside the CUDA toolkit, e.g. PyTorch's nvidia-cudnn-cu13 wheel, which scripts/gpu_check.sh
// finds) and run by scripts/gpu_check.sh: ./test/bin/test_attention_cudnn_gpu
// For each shape (d12's, a small one, HS=128, a T that is not a multiple of 128):
//  - prepare succeeds, or says why (printed; a FAIL only at d12's shape, the one the trainer needs)
//  - the prepared workspace fits attn_cudnn_workspace_bound (the dry-run ledger's number), printed
//  - forward: out within 2e-2 relative (max |a - ref| / max |ref|: cuDNN rounds P to bf16 before P V,
//    the reference does not; ~0.4% expected), lse within 1e-3 absolute (both fp32 log-sum-exps)
//  - backward: dqkv within 5e-2 relative per part (dQ, dK, dV), every element written (the buffer is
//    first filled with NaN)
//  - the backward twice gives the same bits (the deterministic algorithm), the forward too
#include "cuda/attention.cuh"
#include "cuda/attention_cudnn.cuh"
#ifdef USE_CUDNN

static int failures = 0;
#define PASSF(...) do { printf("PASS "); printf(__VA_ARGS__); printf("\n"); } while (0)
#define FAILF(...) do { printf("FAIL "); printf(__VA_ARGS__); printf("\n"); failures++; } while (0)

static void fill_bf16(bf16d* d, size_t n, uint64_t seed, float amp) {
    uint16_t* h = (uint16_t*)malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        uint64_t z = mix64(seed + i);
        float u = (float)((z >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
        h[i] = f32_to_bf16(u * amp);
    }
    CUDA_CHECK(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
    free(h);
}
static float* to_host_bf16(const bf16d* d, size_t n) {
    uint16_t* h = (uint16_t*)malloc(n * 2);
    CUDA_CHECK(cudaMemcpy(h, d, n * 2, cudaMemcpyDeviceToHost));
    float* f = (float*)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = bf16_to_f32(h[i]);
    free(h);
    return f;
}
static float* to_host_f32(const float* d, size_t n) {
    float* f = (float*)malloc(n * sizeof(float));
    CUDA_CHECK(cudaMemcpy(f, d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return f;
}
// max |a - r| / max |r| over elements i with (i / block) % every == part (a strided part of a buffer);
// NaN in a counts as unwritten: returns +inf
static double rel_err(const float* a, const float* r, size_t n, size_t block, size_t every, size_t part) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        if ((i / block) % every != part) continue;
        if (a[i] != a[i]) return INFINITY;
        md = fmax(md, fabs((double)a[i] - r[i]));
        mr = fmax(mr, fabs((double)r[i]));
    }
    return mr > 0 ? md / mr : md;
}

static void check_shape(int B, int T, int NH, int HS, int required) {
    int C = NH * HS;
    char why[512] = "", name[96];
    snprintf(name, sizeof(name), "cudnn attention B=%d T=%d NH=%d HS=%d", B, T, NH, HS);
    if (!attn_cudnn_prepare(B, T, C, NH, why, sizeof(why))) {
        if (required) FAILF("%s: prepare: %s", name, why);
        else printf("note %s: not prepared (falls back): %s\n", name, why);
        return;
    }
    size_t ws = attn_cudnn_workspace_bytes(B, T, C, NH), bound = attn_cudnn_workspace_bound(B, T, C, NH);
    if (ws <= bound) PASSF("%s: workspace %.1f MiB <= bound %.1f MiB", name, ws / 1048576.0, bound / 1048576.0);
    else FAILF("%s: workspace %.1f MiB > bound %.1f MiB", name, ws / 1048576.0, bound / 1048576.0);
    size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nlse = (size_t)B * NH * T;
    bf16d *qkv, *out, *out_ref, *dout, *dqkv, *dqkv_ref, *dqkv2, *out2;
    float *lse, *lse_ref, *dpre;
    void* wsp = NULL;
    CUDA_CHECK(cudaMalloc(&qkv, nqkv * 2)); CUDA_CHECK(cudaMalloc(&dqkv, nqkv * 2));
    CUDA_CHECK(cudaMalloc(&dqkv_ref, nqkv * 2)); CUDA_CHECK(cudaMalloc(&dqkv2, nqkv * 2));
    CUDA_CHECK(cudaMalloc(&out, nout * 2)); CUDA_CHECK(cudaMalloc(&out_ref, nout * 2));
    CUDA_CHECK(cudaMalloc(&out2, nout * 2)); CUDA_CHECK(cudaMalloc(&dout, nout * 2));
    CUDA_CHECK(cudaMalloc(&lse, nlse * 4)); CUDA_CHECK(cudaMalloc(&lse_ref, nlse * 4)); CUDA_CHECK(cudaMalloc(&dpre, nlse * 4));
    if (ws) CUDA_CHECK(cudaMalloc(&wsp, ws));
    fill_bf16(qkv, nqkv, 1000 + T, 2.0f);   // scores of a few units: a peaked but not one-hot softmax
    fill_bf16(dout, nout, 2000 + T, 1.0f);
    CUDA_CHECK(cudaMemset(dqkv, 0xff, nqkv * 2));   // bf16 0xffff is a NaN: unwritten elements show
    attention_forward<bf16d>(out_ref, lse_ref, qkv, B, T, C, NH);
    attention_backward<bf16d>(dqkv_ref, dpre, dout, qkv, out_ref, lse_ref, B, T, C, NH);
    attn_cudnn_forward(out, lse, qkv, B, T, C, NH, wsp);
    attn_cudnn_backward(dqkv, dout, qkv, out, lse, B, T, C, NH, wsp);
    attn_cudnn_forward(out2, dpre, qkv, B, T, C, NH, wsp);   // again, lse into dpre (free by now)
    attn_cudnn_backward(dqkv2, dout, qkv, out, lse, B, T, C, NH, wsp);
    CUDA_CHECK(cudaDeviceSynchronize());
    float *o = to_host_bf16(out, nout), *orf = to_host_bf16(out_ref, nout), *o2 = to_host_bf16(out2, nout);
    float *l = to_host_f32(lse, nlse), *lr = to_host_f32(lse_ref, nlse), *l2 = to_host_f32(dpre, nlse);
    float *g = to_host_bf16(dqkv, nqkv), *gr = to_host_bf16(dqkv_ref, nqkv), *g2 = to_host_bf16(dqkv2, nqkv);
    double eo = rel_err(o, orf, nout, 1, 1, 0), el = 0;
    for (size_t i = 0; i < nlse; i++) el = fmax(el, l[i] != l[i] ? INFINITY : fabs((double)l[i] - lr[i]));
    if (eo < 2e-2) PASSF("%s: forward out rel err %.2e", name, eo); else FAILF("%s: forward out rel err %.2e >= 2e-2", name, eo);
    if (el < 1e-3) PASSF("%s: forward lse abs err %.2e", name, el); else FAILF("%s: forward lse abs err %.2e >= 1e-3", name, el);
    const char* part_name[3] = { "dQ", "dK", "dV" };
    for (int p = 0; p < 3; p++) {
        double e = rel_err(g, gr, nqkv, (size_t)C, 3, (size_t)p);
        if (e < 5e-2) PASSF("%s: backward %s rel err %.2e", name, part_name[p], e);
        else FAILF("%s: backward %s rel err %.2e >= 5e-2 (inf: elements left unwritten)", name, part_name[p], e);
    }
    if (!memcmp(o, o2, nout * sizeof(float)) && !memcmp(l, l2, nlse * sizeof(float))) PASSF("%s: forward twice, same bits", name);
    else FAILF("%s: forward twice, different bits", name);
    if (!memcmp(g, g2, nqkv * sizeof(float))) PASSF("%s: backward twice, same bits (deterministic)", name);
    else FAILF("%s: backward twice, different bits: not deterministic", name);
    free(o); free(orf); free(o2); free(l); free(lr); free(l2); free(g); free(gr); free(g2);
    CUDA_CHECK(cudaFree(qkv)); CUDA_CHECK(cudaFree(dqkv)); CUDA_CHECK(cudaFree(dqkv_ref)); CUDA_CHECK(cudaFree(dqkv2));
    CUDA_CHECK(cudaFree(out)); CUDA_CHECK(cudaFree(out_ref)); CUDA_CHECK(cudaFree(out2)); CUDA_CHECK(cudaFree(dout));
    CUDA_CHECK(cudaFree(lse)); CUDA_CHECK(cudaFree(lse_ref)); CUDA_CHECK(cudaFree(dpre));
    if (wsp) CUDA_CHECK(cudaFree(wsp));
}

int main(void) {
    printf("cuDNN %zu\n", cudnnGetVersion());
    check_shape(32, 1024, 12, 64, 1);   // d12: the shape the trainer runs
    check_shape(4, 256, 2, 64, 0);
    check_shape(2, 512, 4, 128, 0);
    check_shape(2, 200, 4, 64, 0);      // T not a multiple of 128 (refused on cuDNN <= 9.15)
    attn_cudnn_free();
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
#else
// built without cuDNN (the Makefile found none): nothing to check, and the run says so
int main(void) {
    printf("FAIL test_attention_cudnn_gpu: built without cuDNN (no cudnn_graph.h/libcudnn found; CUDNN_HOME=DIR)\n");
    return 1;
}
#endif
