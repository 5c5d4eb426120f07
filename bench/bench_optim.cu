// bench/bench_optim.cu: the optimizer step alone, on the GPU, on a model's parameter set (GPT-2 d12 by
// default), for every optimizer whose registry line has CUDA kernels (optim/registry.h). bf16 mode, as
// the trainer's default: bf16 gradients in, fp32 master updated, bf16 working copy written.
//
// Per optimizer: ms per step (cudaEvent around `iters` steps after `warmup` untimed ones), the bytes a
// step must move at least, the GB/s that implies, and that as a percent of the device's copy bandwidth
// measured in the same run (cudaMemcpy device to device of a 1 GiB buffer: 2 GiB moved per copy).
// Bytes per step (a lower bound: every byte read or written once): master fp32 read + write (8 B/param),
// bf16 gradient read (2), bf16 copy written (2), each state buffer read and written (2x its bytes, from
// the optimizer's own state layout and dtypes), plus the passes an optimizer is known to repeat
// (extra_pass_bytes): adam_mini reads the gradient of its multi-row blocks (q/k heads, wpe, gains)
// twice (the block sums, then the update: +2 B/param of those; its one-row blocks read it once); adamw4bit reads the gradient and the v codes of its rank-1
// matrices in the statistics pass too (+2.5 B/param of those; the scratch maxima, 12 B per row and
// column, are left out: under 0.1%). The 8-bit kernels move each byte once at -qblock <= 4096 (the
// default 256; larger blocks re-read the rounds past optim/quant8_plan.h's `keep`). Adafactor and CAME read the
// gradient in several passes (statistics, clip, update; CAME also the residual), not counted here, so
// their percent understates how close they are to the memory roof.
// Muon and GaLore are different: their step is matrix products (Muon's 5 Newton-Schulz iterations per
// hidden matrix, GaLore's two projections, and at every -update-proj-gap steps its Gram matrices and
// eigendecompositions), not a pass over memory, so only their ms/step is reported (GB/s and % say
// "n/a"); GaLore's refresh step is timed on its own row (one step, at the next refresh step number; the
// row starts with "(" so scripts counting optimizer rows skip it), and once more with the eigensolver
// matrix by matrix (g_galore_eig_batched = 0: the path before the batched one) for comparison; Muon's
// step is timed again with its Newton-Schulz batches capped at 40, 80 and 320 MiB (rows starting "(").
//
//   make build/bench/bench_optim && ./build/bench/bench_optim [-model d12] [-iters 20] [-warmup 3] [opt ...]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "optim/optim.cuh"
#include "trainer/model.h"
#include "trainer/cli.h"

// Deterministic fill: master ~ U(-0.04, 0.04), gradient ~ U(-1e-3, 1e-3) as bf16.
__global__ void bench_fill_kernel(float* master, bf16d* grad, bf16d* pbf16, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float u = (float)(mix64(i) >> 40) * (1.0f / 16777216.0f) - 0.5f;
        const float v = (float)(mix64(i + 0x1234567ull) >> 40) * (1.0f / 16777216.0f) - 0.5f;
        master[i] = 0.08f * u;
        grad[i] = bf16_from_bits(f32_to_bf16(2e-3f * v));
        pbf16[i] = bf16_from_bits(f32_to_bf16(master[i]));
    }
}

// The optimizers whose step costs matrix products, not bytes (see the top).
static int bench_matmul_bound(const Optimizer* o) { return !strcmp(o->name, "muon") || !strcmp(o->name, "galore_adamw"); }

// Device-to-device copy bandwidth in GB/s (bytes read + written per second), best of a few copies.
static double copy_bandwidth_gbs(void) {
    const size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    CUDA_CHECK(cudaMalloc(&a, bytes));
    CUDA_CHECK(cudaMalloc(&b, bytes));
    CUDA_CHECK(cudaMemset(a, 1, bytes));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    CUDA_CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice)); // warm-up
    double best = 0.0;
    for (int r = 0; r < 5; r++) {
        CUDA_CHECK(cudaEventRecord(e0));
        CUDA_CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
        CUDA_CHECK(cudaEventRecord(e1));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        const double gbs = 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
        if (gbs > best) best = gbs;
    }
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    CUDA_CHECK(cudaFree(a));
    CUDA_CHECK(cudaFree(b));
    return best;
}

// Bytes an optimizer's kernels move beyond the once-each bound, from the passes they repeat (header).
static double extra_pass_bytes(const Optimizer* opt, const ParamShape* shapes, int n) {
    double extra = 0.0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(opt->name, "adam_mini")) {
            const MiniPartition q = adam_mini_partition(&shapes[i]);
            // one-row blocks read g once (the row is re-read on chip); the others twice
            const size_t rowwise = !q.adam && q.nblocks > q.head_blocks && adam_mini_row_block(&q, &shapes[i], q.head_blocks)
                                       ? (q.nblocks - q.head_blocks) * q.row_numel : 0;
            if (!q.adam) extra += 2.0 * (double)(shapes[i].numel - rowwise);
        }
        if (!strcmp(opt->name, "adamw4bit") && shapes[i].ndim == 2 && shapes[i].numel > A4_THRESHOLD) extra += 2.5 * (double)shapes[i].numel;
    }
    return extra;
}

int main(int argc, char** argv) {
    const char* model = "d12";
    int iters = 20, warmup = 3;
    const char* only[64];
    int nonly = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "-iters") && i + 1 < argc) iters = parse_int("-iters", argv[++i], 1, 100000);
        else if (!strcmp(argv[i], "-warmup") && i + 1 < argc) warmup = parse_int("-warmup", argv[++i], 0, 100000);
        else if (argv[i][0] != '-' && nonly < 64) only[nonly++] = argv[i];
        else user_error("usage: bench_optim [-model d12] [-iters N] [-warmup N] [optimizer ...]");
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        fprintf(stderr, "bench_optim: no CUDA device; this benchmark runs on a GPU machine only\n");
        return 2;
    }
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const GPT2Config cfg = parse_model(model);
    ModelLayout ml;
    model_layout_build(&ml, &cfg);
    const int n = ml.num_tensors;
    ParamShape* shapes = (ParamShape*)xcalloc((size_t)n, sizeof(ParamShape));
    size_t* offs = (size_t*)xcalloc((size_t)n, sizeof(size_t));
    size_t P = 0, params = 0;  // P: flat buffer length (with padding); params: parameters
    for (int i = 0; i < n; i++) {
        shapes[i] = ml.tensors[i].shape;
        offs[i] = ml.tensors[i].offset;
        if (offs[i] + shapes[i].numel > P) P = offs[i] + shapes[i].numel;
        params += shapes[i].numel;
    }
    float* master = NULL;
    bf16d *grad = NULL, *pbf16 = NULL;
    CUDA_CHECK(cudaMalloc(&master, P * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&grad, P * sizeof(bf16d)));
    CUDA_CHECK(cudaMalloc(&pbf16, P * sizeof(bf16d)));
    const double copy_gbs = copy_bandwidth_gbs();
    printf("# bench_optim: %s, model %s (%zu params in %d tensors), bf16 mode, %d timed steps after %d warm-up\n",
           prop.name, model, params, n, iters, warmup);
    printf("# device copy bandwidth (cudaMemcpy D2D, 1 GiB, read + write): %.0f GB/s\n", copy_gbs);
    printf("| optimizer | ms/step | state B/param | min bytes/step (MB) | GB/s | %% of copy |\n");
    printf("|---|---|---|---|---|---|\n");
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    int nmatmul = 0;
    for (int k = 0; k < NUM_OPTIMIZERS; k++) {
        const Optimizer* opt = OPTIMIZERS[k];
        if (!optim_has_cuda(opt) || (opt->flags & OPT_FUSED_BACKWARD)) continue; // lomo, adalomo: updates inside backward, unit by unit
        int pick = nonly == 0;
        for (int j = 0; j < nonly; j++) pick |= !strcmp(only[j], opt->name);
        if (!pick) continue;
        bench_fill_kernel<<<1024, 256>>>(master, grad, pbf16, P);
        KERNEL_CHECK();
        Ledger led;
        ledger_init(&led, 0);
        GpuOpt o;
        gpu_opt_setup(&o, opt, &opt->defaults, shapes, offs, n, &led);
        size_t state_bytes = 0;
        for (int b = 0; b < o.layout.nbuf; b++) state_bytes += o.layout.buf_bytes[b];
        const double bytes = (double)params * (8.0 + 2.0 + 2.0) + 2.0 * (double)state_bytes + extra_pass_bytes(opt, shapes, n);
        int step = 0;
        for (int w = 0; w < warmup; w++) gpu_opt_step<bf16d>(&o, master, grad, pbf16, ++step, 1.0f, 1.0f);
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaEventRecord(e0));
        for (int it = 0; it < iters; it++) gpu_opt_step<bf16d>(&o, master, grad, pbf16, ++step, 1.0f, 1.0f);
        CUDA_CHECK(cudaEventRecord(e1));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        const double ms_step = ms / iters, gbs = bytes / (ms_step * 1e-3) / 1e9;
        if (bench_matmul_bound(opt)) {
            printf("| %s | %.3f | %.4f | %.1f | n/a (matmuls) | n/a |\n", opt->name, ms_step, (double)state_bytes / params, bytes / 1e6);
            nmatmul++;
        } else {
            printf("| %s | %.3f | %.4f | %.1f | %.0f | %.0f%% |\n", opt->name, ms_step, (double)state_bytes / params, bytes / 1e6, gbs,
                   100.0 * gbs / copy_gbs);
        }
        if (!strcmp(opt->name, "muon")) {
            // the same step with the Newton-Schulz batches capped smaller and larger (muon.cuh's g_muon_batch_bytes)
            const size_t caps[3] = { (size_t)40 << 20, (size_t)80 << 20, (size_t)320 << 20 };
            for (int c = 0; c < 3; c++) {
                dev_free_all();
                state_layout_free(&o.layout);
                free(o.own);
                g_muon_batch_bytes = caps[c];
                Ledger led2;
                ledger_init(&led2, 0);
                gpu_opt_setup(&o, opt, &opt->defaults, shapes, offs, n, &led2);
                const int nb = ((const MuonGpu*)o.own)->plan.nbatch;
                for (int w = 0; w < warmup; w++) gpu_opt_step<bf16d>(&o, master, grad, pbf16, ++step, 1.0f, 1.0f);
                CUDA_CHECK(cudaDeviceSynchronize());
                CUDA_CHECK(cudaEventRecord(e0));
                for (int it = 0; it < iters; it++) gpu_opt_step<bf16d>(&o, master, grad, pbf16, ++step, 1.0f, 1.0f);
                CUDA_CHECK(cudaEventRecord(e1));
                CUDA_CHECK(cudaEventSynchronize(e1));
                float msc = 0.0f;
                CUDA_CHECK(cudaEventElapsedTime(&msc, e0, e1));
                printf("| (%s: batches within %zu MiB instead of %zu: %d batches) | %.3f | | | n/a (matmuls) | n/a |\n", opt->name, caps[c] >> 20,
                       (size_t)MUON_BATCH_BYTES >> 20, nb, msc / iters);
            }
            g_muon_batch_bytes = MUON_BATCH_BYTES;
        }
        if (!strcmp(opt->name, "galore_adamw")) {
            // one refresh step: the next step number t > step with (t - 1) % gap == 0
            const int gap = opt->defaults.update_proj_gap;
            step = (step + gap - 1) / gap * gap + 1;
            CUDA_CHECK(cudaDeviceSynchronize());
            CUDA_CHECK(cudaEventRecord(e0));
            gpu_opt_step<bf16d>(&o, master, grad, pbf16, step, 1.0f, 1.0f);
            CUDA_CHECK(cudaEventRecord(e1));
            CUDA_CHECK(cudaEventSynchronize(e1));
            float ms_refresh = 0.0f;
            CUDA_CHECK(cudaEventElapsedTime(&ms_refresh, e0, e1));
            printf("| (%s: a projector refresh step, 1 in %d) | %.3f | | | n/a (Gram + eigensolver) | n/a |\n", opt->name, gap, ms_refresh);
            // the same refresh with cusolverDnDsyevd matrix by matrix (galore.cuh's earlier path), for comparison
            g_galore_eig_batched = 0;
            step += gap;
            CUDA_CHECK(cudaDeviceSynchronize());
            CUDA_CHECK(cudaEventRecord(e0));
            gpu_opt_step<bf16d>(&o, master, grad, pbf16, step, 1.0f, 1.0f);
            CUDA_CHECK(cudaEventRecord(e1));
            CUDA_CHECK(cudaEventSynchronize(e1));
            CUDA_CHECK(cudaEventElapsedTime(&ms_refresh, e0, e1));
            g_galore_eig_batched = 1;
            printf("| (%s: the refresh step, Dsyevd per matrix instead of XsyevBatched) | %.3f | | | n/a (Gram + eigensolver) | n/a |\n", opt->name,
                   ms_refresh);
        }
        fflush(stdout);
        dev_free_all();
        state_layout_free(&o.layout);
        free(o.own);
    }
    if (nmatmul > 0)
        printf("\nmuon, galore_adamw: the step is matrix products (Newton-Schulz; projections, Gram and eigensolver), "
               "not a pass over memory: ms/step is their cost, the bytes column only the lower bound above.\n");
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    CUDA_CHECK(cudaFree(master));
    CUDA_CHECK(cudaFree(grad));
    CUDA_CHECK(cudaFree(pbf16));
    model_layout_free(&ml);
    free(shapes);
    free(offs);
    return 0;
}
