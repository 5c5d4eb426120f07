// test/test_attention_cublas_gpu.cu: the cuBLAS attention route (cuda/attention_cublas.cuh) on a GPU, against the
// fp32 flash-style kernels of cuda/attention.cuh. Needs a GPU; not part of `make test` (whose CPU check,
// test/test_attention_cublas.c, runs the same GEMM plan through a host model of cuBLAS). Built by
// `make test/bin/test_attention_cublas_gpu`, run by scripts/gpu_check.sh from the repository root:
//   ./test/bin/test_attention_cublas_gpu   (add -bench for the d12 timing: B=32, T=1024, NH=12, HS=64)
// Checks, for shapes with T not a multiple of 8 and every reference head size (8..128), and once with
// qkv, out and dqkv at odd addresses (the permutes' element-wise path):
//   - out, dq, dk, dv: relative norm error |a - ref| / |ref| < 2e-2. Both routes store bf16 outputs; this
//     route also stores P, dP and dS in bf16 (2^-8 relative each, largely averaging out: ~0.3% expected);
//     a wrong transpose / ld / offset is O(1).
//   - lse: max |a - ref| < 1e-3 (both fp32; ~1e-6 expected).
//   - everything finite with the scratch, out, lse and dqkv prefilled with NaN (0xff bytes) before each
//     call: nothing unwritten is read and dqkv is fully overwritten;
//   - determinism: a second forward + backward is bitwise identical.
#include "cuda/attention.cuh"
#include "cuda/attention_cublas.cuh"
#include "common/rng.h"
#include "test/test.h"
#include <vector>
#include <string.h>

static double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < a.size(); i++) {
        if (!std::isfinite(a[i])) return INFINITY;
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-300));
}

static std::vector<float> to_f(const std::vector<uint16_t>& h) {
    std::vector<float> f(h.size());
    for (size_t i = 0; i < h.size(); i++) f[i] = bf16_to_f32(h[i]);
    return f;
}

template <typename T> static std::vector<T> fetch(const void* d, size_t n) {
    std::vector<T> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}

static void check_shape(int B, int T, int NH, int HS, int misalign) {
    const int C = NH * HS;
    const size_t n3 = (size_t)B * T * 3 * C, n1 = (size_t)B * T * C, nl = (size_t)B * NH * T;
    const int off = misalign ? 1 : 0; // elements: an odd bf16 offset breaks 16-byte alignment
    std::vector<uint16_t> hqkv(n3), hdout(n1);
    Rng r;
    rng_seed(&r, 1234 + B * 7 + T * 13 + HS);
    for (auto& x : hqkv) x = f32_to_bf16(1.5f * rng_normal(&r));
    for (auto& x : hdout) x = f32_to_bf16(rng_normal(&r));
    bf16d *qkv_m, *dout, *out_ref, *out_m, *dqkv_ref, *dqkv_m;
    float *lse_ref, *lse, *dpre;
    void* scratch;
    const size_t sbytes = attn_cublas_scratch_bytes(B, T, C, NH);
    CUDA_CHECK(cudaMalloc(&qkv_m, (n3 + 8) * 2));
    CUDA_CHECK(cudaMalloc(&dout, n1 * 2));
    CUDA_CHECK(cudaMalloc(&out_ref, n1 * 2));
    CUDA_CHECK(cudaMalloc(&out_m, (n1 + 8) * 2));
    CUDA_CHECK(cudaMalloc(&dqkv_ref, n3 * 2));
    CUDA_CHECK(cudaMalloc(&dqkv_m, (n3 + 8) * 2));
    CUDA_CHECK(cudaMalloc(&lse_ref, nl * 4));
    CUDA_CHECK(cudaMalloc(&lse, nl * 4));
    CUDA_CHECK(cudaMalloc(&dpre, nl * 4));
    CUDA_CHECK(cudaMalloc(&scratch, sbytes));
    bf16d *qkv = qkv_m + off, *out = out_m + off, *dqkv = dqkv_m + off;
    CUDA_CHECK(cudaMemcpy(qkv, hqkv.data(), n3 * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dout, hdout.data(), n1 * 2, cudaMemcpyHostToDevice));
    // reference (fp32 flash kernels)
    attention_forward<bf16d>(out_ref, lse_ref, qkv, B, T, C, NH);
    attention_backward<bf16d>(dqkv_ref, dpre, dout, qkv, out_ref, lse_ref, B, T, C, NH);
    std::vector<std::vector<uint16_t>> runs_out, runs_dqkv;
    std::vector<std::vector<float>> runs_lse;
    for (int run = 0; run < 2; run++) {
        CUDA_CHECK(cudaMemset(scratch, 0xff, sbytes));
        CUDA_CHECK(cudaMemset(out, 0xff, n1 * 2));
        CUDA_CHECK(cudaMemset(lse, 0xff, nl * 4));
        CUDA_CHECK(cudaMemset(dqkv, 0xff, n3 * 2));
        CUDA_CHECK(cudaMemset(dpre, 0xff, nl * 4));
        attn_cublas_forward(out, lse, qkv, B, T, C, NH, scratch);
        CUDA_CHECK(cudaMemset(scratch, 0xff, sbytes)); // the backward must not rely on the forward's scratch
        attn_cublas_backward(dqkv, dpre, dout, qkv, out, lse, B, T, C, NH, scratch);
        CUDA_CHECK(cudaDeviceSynchronize());
        runs_out.push_back(fetch<uint16_t>(out, n1));
        runs_lse.push_back(fetch<float>(lse, nl));
        runs_dqkv.push_back(fetch<uint16_t>(dqkv, n3));
    }
    std::vector<float> o_ref = to_f(fetch<uint16_t>(out_ref, n1)), o = to_f(runs_out[0]);
    std::vector<float> l_ref = fetch<float>(lse_ref, nl), l = runs_lse[0];
    std::vector<float> g_ref = to_f(fetch<uint16_t>(dqkv_ref, n3)), g = to_f(runs_dqkv[0]);
    char name[160];
    snprintf(name, sizeof(name), "attn_cublas gpu (B=%d T=%d NH=%d HS=%d%s)", B, T, NH, HS, misalign ? ", odd addresses" : "");
    double lmax = 0.0;
    for (size_t i = 0; i < nl; i++) lmax = std::isfinite(l[i]) ? fmax(lmax, fabs((double)l[i] - l_ref[i])) : INFINITY;
    double eo = rel_err(o, o_ref);
    test_check(eo < 2e-2, NULL, "%s out: relative norm error %.2e (< 2e-2)", name, eo);
    test_check(lmax < 1e-3, NULL, "%s lse: max abs error %.2e (< 1e-3)", name, lmax);
    const char* part_names[3] = { "dq", "dk", "dv" };
    for (int part = 0; part < 3; part++) {
        std::vector<float> a, b;
        for (size_t row = 0; row < (size_t)B * T; row++)
            for (int c = 0; c < C; c++) { a.push_back(g[row * 3 * C + part * C + c]); b.push_back(g_ref[row * 3 * C + part * C + c]); }
        double e = rel_err(a, b);
        test_check(e < 2e-2, NULL, "%s %s: relative norm error %.2e (< 2e-2)", name, part_names[part], e);
    }
    int same = runs_out[0] == runs_out[1] && runs_dqkv[0] == runs_dqkv[1] &&
               memcmp(runs_lse[0].data(), runs_lse[1].data(), nl * 4) == 0;
    test_check(same, "a second run differs", "%s: two runs bitwise identical", name);
    CUDA_CHECK(cudaFree(qkv_m)); CUDA_CHECK(cudaFree(dout)); CUDA_CHECK(cudaFree(out_ref)); CUDA_CHECK(cudaFree(out_m));
    CUDA_CHECK(cudaFree(dqkv_ref)); CUDA_CHECK(cudaFree(dqkv_m)); CUDA_CHECK(cudaFree(lse_ref)); CUDA_CHECK(cudaFree(lse));
    CUDA_CHECK(cudaFree(dpre)); CUDA_CHECK(cudaFree(scratch));
}

// Milliseconds per call, forward and backward, for both routes at one shape (qkv random).
static void bench(int B, int T, int NH, int HS, int iters) {
    const int C = NH * HS;
    const size_t n3 = (size_t)B * T * 3 * C, n1 = (size_t)B * T * C, nl = (size_t)B * NH * T;
    std::vector<uint16_t> h(n3);
    Rng r;
    rng_seed(&r, 99);
    for (auto& x : h) x = f32_to_bf16(rng_normal(&r));
    bf16d *qkv, *dout, *out, *dqkv;
    float *lse, *dpre;
    void* scratch;
    const size_t sbytes = attn_cublas_scratch_bytes(B, T, C, NH);
    CUDA_CHECK(cudaMalloc(&qkv, n3 * 2)); CUDA_CHECK(cudaMalloc(&dqkv, n3 * 2));
    CUDA_CHECK(cudaMalloc(&dout, n1 * 2)); CUDA_CHECK(cudaMalloc(&out, n1 * 2));
    CUDA_CHECK(cudaMalloc(&lse, nl * 4)); CUDA_CHECK(cudaMalloc(&dpre, nl * 4));
    CUDA_CHECK(cudaMalloc(&scratch, sbytes));
    CUDA_CHECK(cudaMemcpy(qkv, h.data(), n3 * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dout, h.data(), n1 * 2, cudaMemcpyHostToDevice));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0)); CUDA_CHECK(cudaEventCreate(&e1));
    float ms[4];
    for (int which = 0; which < 4; which++) {
        for (int it = -2; it < iters; it++) {
            if (it == 0) CUDA_CHECK(cudaEventRecord(e0));
            switch (which) {
            case 0: attn_cublas_forward(out, lse, qkv, B, T, C, NH, scratch); break;
            case 1: attn_cublas_backward(dqkv, dpre, dout, qkv, out, lse, B, T, C, NH, scratch); break;
            case 2: attention_forward<bf16d>(out, lse, qkv, B, T, C, NH); break;
            case 3: attention_backward<bf16d>(dqkv, dpre, dout, qkv, out, lse, B, T, C, NH); break;
            }
        }
        CUDA_CHECK(cudaEventRecord(e1));
        CUDA_CHECK(cudaEventSynchronize(e1));
        CUDA_CHECK(cudaEventElapsedTime(&ms[which], e0, e1));
        ms[which] /= iters;
    }
    printf("# bench B=%d T=%d NH=%d HS=%d (one layer): cublas forward %.3f ms, backward %.3f ms; flash-fp32 forward %.3f ms, "
           "backward %.3f ms; cublas scratch %.1f MiB\n", B, T, NH, HS, ms[0], ms[1], ms[2], ms[3], sbytes / 1048576.0);
    CUDA_CHECK(cudaFree(qkv)); CUDA_CHECK(cudaFree(dqkv)); CUDA_CHECK(cudaFree(dout)); CUDA_CHECK(cudaFree(out));
    CUDA_CHECK(cudaFree(lse)); CUDA_CHECK(cudaFree(dpre)); CUDA_CHECK(cudaFree(scratch));
}

int main(int argc, char** argv) {
    const int shapes[][4] = { { 1, 256, 2, 64 }, { 4, 64, 2, 64 }, { 3, 200, 4, 32 }, { 2, 1000, 2, 64 },
                              { 1, 130, 2, 128 }, { 2, 77, 3, 8 }, { 2, 50, 2, 16 } };
    for (const auto& s : shapes) check_shape(s[0], s[1], s[2], s[3], 0);
    check_shape(2, 77, 3, 32, 1);
    if (argc > 1 && !strcmp(argv[1], "-bench")) bench(32, 1024, 12, 64, 10);
    return test_finish("test_attention_cublas_gpu");
}
