// bench/peak_flops.c: the machine's own fp32 FMA peak, the yardstick for the matmul benchmark.
//
// Each thread runs NCHAIN independent chains of fused multiply-adds on vector registers
// (acc = acc * m + a): with enough chains in flight every FMA pipe is busy every cycle, so the
// rate we measure is the core's FMA throughput, not its latency. No memory is touched inside the
// timed loop. One FMA on a W-lane register is 2*W flops.
//
// Prints, for the widest vectors this build has (zmm with AVX-512, ymm with AVX2) and for 1 thread
// and all OpenMP threads:  GFLOP/s per core and in total. The last line is machine-readable:
//   peak: isa=avx512 threads=2 gflops_per_core=X gflops_total=Y
//
// Build: gcc -O3 -march=native -fopenmp bench/peak_flops.c -o bench/peak_flops
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define NCHAIN 12  // independent chains: > FMA latency (4) x FMA pipes (2) on current x86 cores

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// Runs `iters` rounds of NCHAIN FMAs on W-lane vectors; returns a checksum so nothing is
// optimised away. m and a are chosen so the values stay finite (m < 1 shrinks, a re-feeds).
#if defined(__AVX512F__)
#define ISA "avx512"
#define LANES 16
static float fma_chains(long iters, float seed) {
    __m512 acc[NCHAIN];
    for (int c = 0; c < NCHAIN; c++) acc[c] = _mm512_set1_ps(seed + c);
    const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-6f);
    for (long i = 0; i < iters; i++) {
        for (int c = 0; c < NCHAIN; c++) acc[c] = _mm512_fmadd_ps(acc[c], m, a);
    }
    __m512 s = acc[0];
    for (int c = 1; c < NCHAIN; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}
#elif defined(__AVX2__) && defined(__FMA__)
#define ISA "avx2"
#define LANES 8
static float fma_chains(long iters, float seed) {
    __m256 acc[NCHAIN];
    for (int c = 0; c < NCHAIN; c++) acc[c] = _mm256_set1_ps(seed + c);
    const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-6f);
    for (long i = 0; i < iters; i++) {
        for (int c = 0; c < NCHAIN; c++) acc[c] = _mm256_fmadd_ps(acc[c], m, a);
    }
    __m256 s = acc[0];
    for (int c = 1; c < NCHAIN; c++) s = _mm256_add_ps(s, acc[c]);
    float t[8];
    _mm256_storeu_ps(t, s);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#else
#define ISA "scalar"
#define LANES 1
static float fma_chains(long iters, float seed) {
    float acc[NCHAIN];
    for (int c = 0; c < NCHAIN; c++) acc[c] = seed + c;
    for (long i = 0; i < iters; i++) {
        for (int c = 0; c < NCHAIN; c++) acc[c] = acc[c] * 0.999999f + 1e-6f;
    }
    float s = 0.0f;
    for (int c = 0; c < NCHAIN; c++) s += acc[c];
    return s;
}
#endif

// Runs the chains on `threads` threads for about `seconds`; returns total GFLOP/s (best of 3).
static double measure(int threads, double seconds, float* sink) {
    long iters = 1000000;
    // calibrate on one thread so one timed run lasts about `seconds`
    for (;;) {
        double t0 = now_s();
        *sink += fma_chains(iters, 1.0f);
        double dt = now_s() - t0;
        if (dt > 0.05) { iters = (long)(iters * seconds / dt) + 1; break; }
        iters *= 4;
    }
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        float sum = 0.0f;
        double t0 = now_s();
        #pragma omp parallel for num_threads(threads) reduction(+:sum) schedule(static, 1)
        for (int t = 0; t < threads; t++) sum += fma_chains(iters, 1.0f + t);
        double dt = now_s() - t0;
        *sink += sum;
        double gf = 2.0 * LANES * NCHAIN * (double)iters * threads / dt * 1e-9;
        if (gf > best) best = gf;
    }
    return best;
}

int main(int argc, char** argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0.5;
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = omp_get_max_threads();
#endif
    float sink = 0.0f;
    printf("fp32 FMA peak: %d independent %d-lane FMA chains per thread (%s), best of 3 x %.2f s\n",
           NCHAIN, LANES, ISA, seconds);
    double one = measure(1, seconds, &sink);
    printf("  1 thread : %8.1f GFLOP/s\n", one);
    double all = measure(nthreads, seconds, &sink);
    printf("  %d threads: %8.1f GFLOP/s total, %.1f GFLOP/s per core\n", nthreads, all, all / nthreads);
    // cores do not share FMA units: all threads together fall short of n x one thread only when
    // something else is running (or the threads outnumber the cores)
    if (nthreads > 1 && all < 0.9 * nthreads * one)
        printf("warning: %d threads reach only %.0f%% of %d x one thread: other processes are using the "
               "cores (or OMP_NUM_THREADS exceeds them); rerun on an idle machine\n",
               nthreads, 100.0 * all / (nthreads * one), nthreads);
    // the checksum keeps the work observable; it is meaningless otherwise
    if (sink == 12345.0f) printf("(checksum %g)\n", sink);
    printf("peak: isa=%s threads=%d gflops_per_core=%.1f gflops_total=%.1f\n", ISA, nthreads,
           all / nthreads, all);
    return 0;
}
