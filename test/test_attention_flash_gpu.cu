// test/test_attention_flash_gpu.cu: the tensor-core flash attention (cuda/attention_flash.cuh) against the
// fp32 reference kernels (cuda/attention.cuh) on a GPU, plus determinism and timing. Needs a GPU; not
// built by `make test` (the host emulation test/test_attention_flash.c is). Built by
// `make test/bin/test_attention_flash_gpu`, run by scripts/gpu_check.sh: ./test/bin/test_attention_flash_gpu
// Checks, per shape (B, T, NH, HS):
//   - forward: out within 2^-7 |ref| + 2^-8 max|ref| (both store bf16, 2^-9 each; flash also rounds P to
//     bf16), lse within 1e-4 + 1e-5 |ref| (fp32 both); every element written (outputs prefilled with NaN).
//   - backward from the same out and lse: dq, dk, dv within 2^-6 |ref| + 2^-6 max|ref| (twice the host
//     emulation's tolerance against float64: two bf16-storing implementations, each within it).
//   - determinism: a second forward + backward is bitwise identical.
// Then the time of both implementations at GPT-2 sizes (T = 1024) and the tensor-core throughput.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <vector>
#include "cuda/attention_flash.cuh"
#include "test/test.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(mix64(rng_state) >> 11) * (1.0 / 9007199254740992.0);
}
static bf16 rand_bf16(double amp) {
    for (;;) {
        bf16 x = f32_to_bf16((float)((2.0 * urand() - 1.0) * amp));
        if ((x & 0x7fffu) != 0) return x;
    }
}

// worst |a - b| / (atol + atol_rel max|b| + rtol |b|) over elements i = (k / width) * stride + off + k % width
static double worst_ratio(const std::vector<float>& a, const std::vector<float>& b, size_t n, size_t stride, size_t off, size_t width,
                          double rtol, double atol_rel, double atol) {
    double M = 0.0, worst = 0.0;
    for (size_t k = 0; k < n; k++) M = fmax(M, fabs((double)b[(k / width) * stride + off + k % width]));
    for (size_t k = 0; k < n; k++) {
        const size_t i = (k / width) * stride + off + k % width;
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        worst = fmax(worst, fabs((double)a[i] - b[i]) / (atol + atol_rel * M + rtol * fabs((double)b[i])));
    }
    return worst;
}

static std::vector<float> to_float(const bf16d* d, size_t n) {
    std::vector<bf16> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost));
    std::vector<float> f(n);
    for (size_t i = 0; i < n; i++) f[i] = bf16_to_f32(h[i]);
    return f;
}
static std::vector<float> to_host(const float* d, size_t n) {
    std::vector<float> f(n);
    CUDA_CHECK(cudaMemcpy(f.data(), d, n * 4, cudaMemcpyDeviceToHost));
    return f;
}

struct Bufs {
    bf16d *qkv, *dout, *out, *out_r, *dqkv, *dqkv_r;
    float *lse, *lse_r, *dpre;
};

static void check_shape(int B, int T, int NH, int HS) {
    const int C = NH * HS;
    const size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nl = (size_t)B * NH * T;
    std::vector<bf16> hqkv(nqkv), hdout(nout);
    for (size_t i = 0; i < (size_t)B * T; i++)
        for (int c = 0; c < 3 * C; c++) hqkv[i * 3 * C + c] = rand_bf16(c < 2 * C ? 2.5 : 1.0);
    for (size_t i = 0; i < nout; i++) hdout[i] = rand_bf16(1.0);
    Bufs d;
    CUDA_CHECK(cudaMalloc(&d.qkv, nqkv * 2));
    CUDA_CHECK(cudaMalloc(&d.dout, nout * 2));
    CUDA_CHECK(cudaMalloc(&d.out, nout * 2));
    CUDA_CHECK(cudaMalloc(&d.out_r, nout * 2));
    CUDA_CHECK(cudaMalloc(&d.dqkv, nqkv * 2));
    CUDA_CHECK(cudaMalloc(&d.dqkv_r, nqkv * 2));
    CUDA_CHECK(cudaMalloc(&d.lse, nl * 4));
    CUDA_CHECK(cudaMalloc(&d.lse_r, nl * 4));
    CUDA_CHECK(cudaMalloc(&d.dpre, nl * 4));
    CUDA_CHECK(cudaMemcpy(d.qkv, hqkv.data(), nqkv * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d.dout, hdout.data(), nout * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(d.out, 0xff, nout * 2)); // NaN: every element must be written
    CUDA_CHECK(cudaMemset(d.lse, 0xff, nl * 4));
    CUDA_CHECK(cudaMemset(d.dqkv, 0xff, nqkv * 2));

    attention_forward<bf16d>(d.out_r, d.lse_r, d.qkv, B, T, C, NH);
    attn_flash_forward(d.out, d.lse, d.qkv, B, T, C, NH);
    attention_backward<bf16d>(d.dqkv_r, d.dpre, d.dout, d.qkv, d.out_r, d.lse_r, B, T, C, NH);
    attn_flash_backward(d.dqkv, d.dpre, d.dout, d.qkv, d.out_r, d.lse_r, B, T, C, NH);
    CUDA_CHECK(cudaDeviceSynchronize());

    std::vector<float> out = to_float(d.out, nout), out_r = to_float(d.out_r, nout);
    std::vector<float> lse = to_host(d.lse, nl), lse_r = to_host(d.lse_r, nl);
    std::vector<float> g = to_float(d.dqkv, nqkv), g_r = to_float(d.dqkv_r, nqkv);
    const double ro = worst_ratio(out, out_r, nout, C, 0, C, 1.0 / 128, 1.0 / 256, 0.0);
    const double rl = worst_ratio(lse, lse_r, nl, nl, 0, nl, 1e-5, 0.0, 1e-4);
    const double rq = worst_ratio(g, g_r, nout, 3 * C, 0, C, 1.0 / 64, 1.0 / 64, 0.0);
    const double rk = worst_ratio(g, g_r, nout, 3 * C, C, C, 1.0 / 64, 1.0 / 64, 0.0);
    const double rv = worst_ratio(g, g_r, nout, 3 * C, 2 * C, C, 1.0 / 64, 1.0 / 64, 0.0);
    char why[160];
    snprintf(why, sizeof(why), "worst err/tol: out %.3g, lse %.3g, dq %.3g, dk %.3g, dv %.3g", ro, rl, rq, rk, rv);
    printf("# B=%d T=%d NH=%d HS=%d: %s\n", B, T, NH, HS, why);
    test_check(ro <= 1.0 && rl <= 1.0, why, "flash forward vs fp32 kernels B=%d T=%d NH=%d HS=%d", B, T, NH, HS);
    test_check(rq <= 1.0 && rk <= 1.0 && rv <= 1.0, why, "flash backward vs fp32 kernels B=%d T=%d NH=%d HS=%d", B, T, NH, HS);

    // determinism: the same bits again (the backward from the flash forward's own out and lse)
    attn_flash_backward(d.dqkv, d.dpre, d.dout, d.qkv, d.out, d.lse, B, T, C, NH);
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<bf16> o1(nout), o2(nout), g1(nqkv), g2(nqkv);
    std::vector<float> l1 = to_host(d.lse, nl);
    CUDA_CHECK(cudaMemcpy(o1.data(), d.out, nout * 2, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(g1.data(), d.dqkv, nqkv * 2, cudaMemcpyDeviceToHost));
    attn_flash_forward(d.out, d.lse, d.qkv, B, T, C, NH);
    attn_flash_backward(d.dqkv, d.dpre, d.dout, d.qkv, d.out, d.lse, B, T, C, NH);
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> l2 = to_host(d.lse, nl);
    CUDA_CHECK(cudaMemcpy(o2.data(), d.out, nout * 2, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(g2.data(), d.dqkv, nqkv * 2, cudaMemcpyDeviceToHost));
    const int same = memcmp(o1.data(), o2.data(), nout * 2) == 0 && memcmp(l1.data(), l2.data(), nl * 4) == 0 &&
                     memcmp(g1.data(), g2.data(), nqkv * 2) == 0;
    test_check(same, "outputs differ between two runs", "flash deterministic B=%d T=%d NH=%d HS=%d", B, T, NH, HS);

    CUDA_CHECK(cudaFree(d.qkv)); CUDA_CHECK(cudaFree(d.dout)); CUDA_CHECK(cudaFree(d.out)); CUDA_CHECK(cudaFree(d.out_r));
    CUDA_CHECK(cudaFree(d.dqkv)); CUDA_CHECK(cudaFree(d.dqkv_r)); CUDA_CHECK(cudaFree(d.lse)); CUDA_CHECK(cudaFree(d.lse_r));
    CUDA_CHECK(cudaFree(d.dpre));
}

// milliseconds per call of fn, averaged over `reps` after a warm-up call
template <typename F>
static float time_ms(F fn, int reps) {
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    fn();
    CUDA_CHECK(cudaEventRecord(a));
    for (int i = 0; i < reps; i++) fn();
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    CUDA_CHECK(cudaEventDestroy(a));
    CUDA_CHECK(cudaEventDestroy(b));
    return ms / reps;
}

static void bench_shape(int B, int T, int NH, int HS) {
    const int C = NH * HS;
    const size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nl = (size_t)B * NH * T;
    std::vector<bf16> h(nqkv);
    for (size_t i = 0; i < nqkv; i++) h[i] = rand_bf16(1.0);
    bf16d *qkv, *dout, *out, *dqkv;
    float *lse, *dpre;
    CUDA_CHECK(cudaMalloc(&qkv, nqkv * 2));
    CUDA_CHECK(cudaMalloc(&dqkv, nqkv * 2));
    CUDA_CHECK(cudaMalloc(&dout, nout * 2));
    CUDA_CHECK(cudaMalloc(&out, nout * 2));
    CUDA_CHECK(cudaMalloc(&lse, nl * 4));
    CUDA_CHECK(cudaMalloc(&dpre, nl * 4));
    CUDA_CHECK(cudaMemcpy(qkv, h.data(), nqkv * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dout, h.data(), nout * 2, cudaMemcpyHostToDevice));
    // causal useful work: forward 2 matmuls, backward 5, each 2 * T * T / 2 * HS per head
    const double f_fwd = 2.0 * B * NH * (double)T * T * HS, f_bwd = 2.5 * f_fwd;
    const float ff = time_ms([&] { attn_flash_forward(out, lse, qkv, B, T, C, NH); }, 20);
    const float fb = time_ms([&] { attn_flash_backward(dqkv, dpre, dout, qkv, out, lse, B, T, C, NH); }, 20);
    const float rf = time_ms([&] { attention_forward<bf16d>(out, lse, qkv, B, T, C, NH); }, 5);
    const float rb = time_ms([&] { attention_backward<bf16d>(dqkv, dpre, dout, qkv, out, lse, B, T, C, NH); }, 5);
    printf("# bench B=%d T=%d NH=%d HS=%d: flash fwd %.3f ms (%.1f TFLOP/s), bwd %.3f ms (%.1f TFLOP/s); fp32 kernels fwd %.3f ms, bwd %.3f ms\n",
           B, T, NH, HS, ff, f_fwd / ff * 1e-9, fb, f_bwd / fb * 1e-9, rf, rb);
    CUDA_CHECK(cudaFree(qkv)); CUDA_CHECK(cudaFree(dqkv)); CUDA_CHECK(cudaFree(dout)); CUDA_CHECK(cudaFree(out));
    CUDA_CHECK(cudaFree(lse)); CUDA_CHECK(cudaFree(dpre));
}

// -small: two small shapes (partial tiles, HS 64 and 128), no timing: the run compute-sanitizer's racecheck,
// synccheck and memcheck can afford (scripts/gpu_check.sh)
int main(int argc, char** argv) {
    if (argc > 1 && !strcmp(argv[1], "-small")) {
        check_shape(1, 130, 2, 64);
        check_shape(1, 77, 1, 128);
        return test_finish("test_attention_flash_gpu -small");
    }
    const int shapes[][4] = {{1, 256, 2, 64}, {4, 64, 2, 64}, {2, 1000, 2, 64}, {1, 130, 2, 128}, {3, 200, 4, 32},
                             {2, 1, 1, 64}, {1, 77, 1, 128}, {4, 1024, 12, 64}, {2, 1024, 8, 128}};
    for (const auto& s : shapes) check_shape(s[0], s[1], s[2], s[3]);
    bench_shape(8, 1024, 12, 64);   // GPT-2 small, batch 8
    bench_shape(8, 1024, 16, 64);   // GPT-2 medium
    bench_shape(4, 1024, 8, 128);
    return test_finish("test_attention_flash_gpu");
}
