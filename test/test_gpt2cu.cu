// test/test_gpt2cu.cu: the CUDA trainer against its references. Needs a GPU (run by scripts/gpu_check.sh,
// not by `make test`). Run from the repository root after `make train_cpu train_gpu test/bin/test_gpt2cu`.
//  1. Model, fp32 (full-fp32 cuBLAS, TF32 off): logits, loss and all 16 gradients vs the float64 PyTorch
//     reference test/vectors/gpt2_tiny.bin (the vectors test_gpt2.c checks the CPU trainer with), with the
//     CPU test's tolerances: rtol 1e-4, atol 1e-5 x the tensor's largest value. Only the summation order
//     differs from the CPU, ~1e-6 relative at this size; a wrong formula is off by O(1).
//  2. Model, bf16: the same vs the reference run on bf16-rounded weights, by relative norm error
//     |a - ref| / |ref| per tensor. Every activation is stored in bf16 here (the CPU keeps fp32
//     activations), each storage rounds by up to 2^-9 = 0.2% relative, and forward+backward chain ~20
//     such roundings, which add up to about 1% in the worst tensors; the tolerances are 2e-2 for logits
//     and the loss (rtol), 5e-2 for each gradient. A bug (wrong transpose, missing term) is 30-100%.
//  3. Optimizer kernels (sgd, sgdm, sgdm+nesterov, adam, adamw) vs the CPU step functions of optim/*.c on
//     random tensors of awkward sizes (1, 3, 127, 33x65, 4097, 3x5000), three steps with clipping and a
//     schedule: master and states within rtol 1e-5 (the two differ only by fused multiply-adds, ~1 ulp),
//     each update (theta_new - theta_old) within rtol 1e-3 + 4 ulp of theta; the bf16 copy bit-exact to
//     the CPU's rounding of the GPU master (nearest, and stochastic with the CPU's hash).
//  3b. adam8bit/adamw8bit/paged_adamw8bit kernels vs adam8bit.c (check_optimizer_8bit: codes equal,
//     fp32 values within rtol 1e-6, non-finite counts equal); lion through check 3 with rtol 1e-6 states.
//  3c. adafactor and came kernels vs adafactor.c/came.c (check_optimizer_factored: statistics rtol 1e-6,
//     momentum/residual states and master rtol 1e-5, bf16 copy exact).
//  4. 20 training steps, ./train_gpu vs ./train_cpu on the same synthetic token shard, same seed: per-step
//     losses within 0.02 (fp32: TF32 matmuls, ~1e-3 relative per product) and 0.15 (bf16: bf16
//     activations on the GPU vs fp32 on the CPU) absolute, on losses near 10.8 -> ~7; the loss falls.
//     Two identical GPU runs give bit-identical losses (determinism).
//     Then lion, adamw8bit, paged_adamw8bit, adafactor and came: 20 bf16 steps each, GPU vs CPU within 0.15.
//  5. Checkpoint at step 10 on the GPU (-stop 10), resumed on the GPU (losses of steps 11..20 bit-identical
//     to the uninterrupted run) and on the CPU (it loads, and its losses agree within the bf16 tolerance).
#define TESTING
#include "../train_gpt2.cu"
#include "test.h"
#include "vectors.h"
#include <unistd.h>

static float max_abs(const float* x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

// |a - b| / |b|, NaN-safe (a non-finite value gives +inf)
static double rel_norm_err(const float* a, const float* b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void check_relnorm(const char* name, const float* a, const float* b, size_t n, double tol) {
    double e = rel_norm_err(a, b, n);
    char why[128];
    snprintf(why, sizeof(why), "relative norm error %.3e > %.1e", e, tol);
    test_check(e <= tol, why, "%s (rel err %.2e)", name, e);
}

static const char* REF_NAMES[NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb" };

// ---- 1, 2: the model vs PyTorch -------------------------------------------------------------------
static void check_model(const VecFile* vf, int precision) {
    const int bf = precision == PRECISION_BF16;
    const char* pre = bf ? "bf16_" : "fp32_";
    const char* mode = bf ? "bf16" : "fp32";
    float* c = vec_get(vf, "config", NULL);
    GPT2Config cfg = { (int)c[5], (int)c[3], (int)c[4], (int)c[0], (int)c[2], (int)c[1] };
    int B = (int)c[6], T = (int)c[7];
    Ledger led;
    ledger_init(&led, 0);
    GPT2 m;
    gpt2_build(&m, &cfg, precision, 0, B, T, &led);
    matmul_setup(&led);
    float* w = (float*)xcalloc(m.layout.num_params, sizeof(float));
    for (int k = 0; k < NUM_PARAM_TENSORS; k++) {
        char name[64];
        snprintf(name, sizeof(name), "param_%s", REF_NAMES[k]);
        size_t n;
        float* src = vec_get(vf, name, &n);
        CHECK(n == m.layout.param_sizes[k]);
        memcpy(w + m.layout.param_offsets[k], src, n * sizeof(float));
    }
    gpt2_upload_params(&m, w);
    float* in = vec_get(vf, "inputs", NULL);
    float* tg = vec_get(vf, "targets", NULL);
    for (int i = 0; i < B * T; i++) { m.inputs[i] = (int)in[i]; m.targets[i] = (int)tg[i]; }
    int V = cfg.vocab_size, Vp = cfg.padded_vocab_size;
    size_t BT = (size_t)B * T, n;
    char name[128];
    // logits: forward without targets leaves them in place
    gpt2_forward(&m, B, T, 0, 0.0f);
    float* logits = (float*)xcalloc(BT * V, sizeof(float));
    {
        float* row = (float*)xcalloc((size_t)Vp, sizeof(float));
        for (size_t r = 0; r < BT; r++) {
            if (bf) {
                bf16 hb[4096];
                CHECK(Vp <= 4096);
                CUDA_CHECK(cudaMemcpy(hb, point_acts<bf16d>(&m, B, T).logits + r * Vp, Vp * sizeof(bf16), cudaMemcpyDeviceToHost));
                for (int v = 0; v < Vp; v++) row[v] = bf16_to_f32(hb[v]);
            } else {
                CUDA_CHECK(cudaMemcpy(row, point_acts<float>(&m, B, T).logits + r * Vp, Vp * sizeof(float), cudaMemcpyDeviceToHost));
            }
            memcpy(logits + r * V, row, V * sizeof(float));
        }
        free(row);
    }
    snprintf(name, sizeof(name), "%slogits", pre);
    float* ref = vec_get(vf, name, &n);
    CHECK(n == BT * V);
    snprintf(name, sizeof(name), "gpt2cu %s forward logits vs torch", mode);
    if (bf) check_relnorm(name, logits, ref, n, 2e-2);
    else test_allclose(name, logits, ref, n, 1e-4f, 1e-5f * max_abs(ref, n));
    // loss, then the gradients
    gpt2_forward(&m, B, T, 1, 1.0f);
    snprintf(name, sizeof(name), "%sloss", pre);
    float* ref_loss = vec_get(vf, name, NULL);
    snprintf(name, sizeof(name), "gpt2cu %s loss vs torch", mode);
    test_allclose(name, &m.mean_loss, ref_loss, 1, bf ? 2e-2f : 1e-5f, 0.0f);
    zero_grads(&m);
    gpt2_backward(&m, B, T);
    CUDA_CHECK(cudaDeviceSynchronize());
    float* g = (float*)xcalloc(m.layout.num_params, sizeof(float));
    gpt2_download_grads(&m, g);
    for (int k = 0; k < NUM_PARAM_TENSORS; k++) {
        snprintf(name, sizeof(name), "%sgrad_%s", pre, REF_NAMES[k]);
        float* rg = vec_get(vf, name, &n);
        CHECK(n == m.layout.param_sizes[k]);
        snprintf(name, sizeof(name), "gpt2cu %s grad %s vs torch", mode, PARAM_NAMES[k]);
        if (bf) check_relnorm(name, g + m.layout.param_offsets[k], rg, n, 5e-2);
        else test_allclose(name, g + m.layout.param_offsets[k], rg, n, 1e-4f, 1e-5f * max_abs(rg, n));
    }
    free(g);
    free(logits);
    free(w);
    dev_free_all();
    gpt2_free_host(&m);
}

// ---- 3: optimizer kernels vs the CPU step functions -----------------------------------------------
// The step's gradient on the device: fp32 as is, or (bf16 mode) rounded to bf16, and the host copy
// replaced by the rounded values so the CPU step sees what the kernel reads.
static void upload_grad(void* d_grad, float* grad, bf16* grad_b, size_t P, int bf16_mode) {
    if (bf16_mode) {
        for (size_t i = 0; i < P; i++) { grad_b[i] = f32_to_bf16(grad[i]); grad[i] = bf16_to_f32(grad_b[i]); }
        CUDA_CHECK(cudaMemcpy(d_grad, grad_b, P * sizeof(bf16), cudaMemcpyHostToDevice));
    } else {
        CUDA_CHECK(cudaMemcpy(d_grad, grad, P * sizeof(float), cudaMemcpyHostToDevice));
    }
}

// The bf16 working copy the kernel wrote after step `step` must be, bit for bit, the CPU's rounding
// (nearest, or stochastic with common/numerics.h's stream) of the GPU's own master values gpu_theta.
static void check_bf16_copy(const char* label, const bf16d* d_pbf16, const float* gpu_theta, const ParamShape* shapes,
                            const size_t* offs, int nt, size_t P, uint64_t seed, int step, int sr) {
    bf16* pb = (bf16*)xmalloc(P * sizeof(bf16));
    CUDA_CHECK(cudaMemcpy(pb, d_pbf16, P * sizeof(bf16), cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (int i = 0; i < nt; i++) {
        const uint64_t base = sr_stream(seed, step, offs[i]);
        for (size_t j = 0; j < shapes[i].numel; j++) bad += pb[offs[i] + j] != master_to_bf16(gpu_theta[offs[i] + j], sr, base, j);
    }
    char why[96];
    snprintf(why, sizeof(why), "%zu of %zu bf16 values differ", bad, P);
    test_check(bad == 0, why, "optimizer kernel %s: bf16 copy is the CPU's %s rounding of the master", label, sr ? "stochastic" : "nearest");
    free(pb);
}
static void check_optimizer(const char* opt_name, int momentum_nesterov, int bf16_mode, int sr) {
    const Optimizer* opt = optim_find(opt_name);
    CHECK(opt);
    OptHyper h = opt->defaults;
    h.lr = 1e-2;
    h.weight_decay = 0.1;
    if (!strcmp(opt_name, "sgdm")) { h.momentum = 0.9; h.nesterov = momentum_nesterov; }
    const size_t rows[6] = { 1, 1, 1, 33, 1, 3 }, cols[6] = { 1, 3, 127, 65, 4097, 5000 };
    const int nt = 6;
    ParamShape shapes[6];
    size_t offs[6], P = 0;
    char names[6][16];
    for (int i = 0; i < nt; i++) {
        snprintf(names[i], sizeof(names[i]), "t%d", i);
        shapes[i].name = names[i];
        shapes[i].rows = rows[i]; shapes[i].cols = cols[i]; shapes[i].numel = rows[i] * cols[i];
        shapes[i].ndim = rows[i] > 1 ? 2 : 1;
        shapes[i].decay = shapes[i].ndim == 2 || i == 1; // one vector decays too, to test the flag per tensor
        offs[i] = P;
        P += shapes[i].numel;
    }
    Ledger led;
    ledger_init(&led, 0);
    GpuOpt o;
    gpu_opt_setup(&o, opt, &h, shapes, offs, nt, &led);
    o.stochastic_rounding = sr;
    o.seed = 4242;
    // CPU states, one block per tensor and state
    float* cpu_state[6][2] = { { NULL } };
    int nstate[6];
    for (int i = 0; i < nt; i++) {
        StateSpec sp[OPT_MAX_STATES];
        nstate[i] = opt->layout(&h, &shapes[i], sp);
        for (int s = 0; s < nstate[i]; s++) cpu_state[i][s] = (float*)xcalloc(shapes[i].numel, sizeof(float));
    }
    Rng r;
    rng_seed(&r, 99);
    float* theta = (float*)xmalloc(P * sizeof(float));
    for (size_t i = 0; i < P; i++) theta[i] = rng_normal(&r);
    float* cpu_theta = (float*)xmalloc(P * sizeof(float));
    memcpy(cpu_theta, theta, P * sizeof(float));
    float* d_master = NULL;
    void* d_grad = NULL;
    bf16d* d_pbf16 = NULL;
    CUDA_CHECK(cudaMalloc(&d_master, P * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&d_grad, P * sizeof(float)));
    if (bf16_mode) CUDA_CHECK(cudaMalloc(&d_pbf16, P * sizeof(bf16)));
    CUDA_CHECK(cudaMemcpy(d_master, theta, P * sizeof(float), cudaMemcpyHostToDevice));
    float* grad = (float*)xmalloc(P * sizeof(float));
    bf16* grad_b = (bf16*)xmalloc(P * sizeof(bf16));
    float* before = (float*)xmalloc(P * sizeof(float));
    float* gpu_theta = (float*)xmalloc(P * sizeof(float));
    const float lr_scales[3] = { 0.3f, 1.0f, 0.7f }, clips[3] = { 1.0f, 0.5f, 1.0f };
    char label[160];
    snprintf(label, sizeof(label), "%s%s %s%s", opt_name, momentum_nesterov ? " nesterov" : "", bf16_mode ? "bf16" : "fp32",
             sr ? " sr" : "");
    int ok_master = 1, ok_state = 1, ok_delta = 1;
    char why[256] = "";
    // lion: an element whose sign argument c = beta1*m + (1-beta1)*g is within a few ulps of zero may
    // take the other sign on the GPU (a fused multiply-add on one side only) and then differs by 2*lr
    // for good; such ties are found on the host in double and left out (a wrong formula flips ~half).
    const int is_lion = !strcmp(opt_name, "lion");
    char* tie = (char*)xcalloc(P, 1);
    size_t nties = 0;
    for (int step = 1; step <= 3; step++) {
        for (size_t i = 0; i < P; i++) grad[i] = 0.1f * rng_normal(&r);
        upload_grad(d_grad, grad, grad_b, P, bf16_mode);
        memcpy(before, cpu_theta, P * sizeof(float));
        if (is_lion)
            for (int i = 0; i < nt; i++)
                for (size_t j = 0; j < shapes[i].numel; j++) {
                    const double mb = (double)h.beta1 * cpu_state[i][0][j];
                    const double gb = (1.0 - (double)h.beta1) * (double)(grad[offs[i] + j] * clips[step - 1]);
                    if (!tie[offs[i] + j] && fabs(mb + gb) <= 1e-6 * (fabs(mb) + fabs(gb))) { tie[offs[i] + j] = 1; nties++; }
                }
        // CPU: the trainer's optimizer_apply(), per tensor (gradient widened and scaled as tensor_grad_f32)
        for (int i = 0; i < nt; i++) {
            OptHyper th = h;
            if (!shapes[i].decay) th.weight_decay = 0.0;
            float* gs = (float*)xmalloc(shapes[i].numel * sizeof(float));
            for (size_t j = 0; j < shapes[i].numel; j++) gs[j] = clips[step - 1] != 1.0f || bf16_mode ? grad[offs[i] + j] * clips[step - 1] : grad[offs[i] + j];
            OptTensor ot = { &shapes[i], cpu_theta + offs[i], gs, { 0 } };
            for (int s = 0; s < nstate[i]; s++) ot.state[s] = cpu_state[i][s];
            OptStep st = { step, h.lr * lr_scales[step - 1], lr_scales[step - 1], 0, NULL };
            opt->step(&th, &ot, &st);
            free(gs);
        }
        if (bf16_mode) gpu_opt_step<bf16d>(&o, d_master, (const bf16d*)d_grad, d_pbf16, step, lr_scales[step - 1], clips[step - 1]);
        else gpu_opt_step<float>(&o, d_master, (const float*)d_grad, (bf16d*)NULL, step, lr_scales[step - 1], clips[step - 1]);
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaMemcpy(gpu_theta, d_master, P * sizeof(float), cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < P && ok_master && ok_delta; i++) {
            if (tie[i]) continue;
            double tol = 1e-5 * fabs(cpu_theta[i]) + 1e-30;
            if (!(fabs((double)gpu_theta[i] - cpu_theta[i]) <= tol)) {
                ok_master = 0;
                snprintf(why, sizeof(why), "step %d element %zu: gpu %.9g cpu %.9g", step, i, gpu_theta[i], cpu_theta[i]);
            }
            double dg = (double)gpu_theta[i] - before[i], dc = (double)cpu_theta[i] - before[i];
            if (!(fabs(dg - dc) <= 1e-3 * fabs(dc) + 4.8e-7 * fabs(before[i]))) {
                ok_delta = 0;
                snprintf(why, sizeof(why), "step %d element %zu: update gpu %.9g cpu %.9g", step, i, dg, dc);
            }
        }
        // states
        for (int s = 0; s < 2 && ok_state; s++) {
            if (s >= o.layout.nbuf) break;
            char* hb = (char*)xmalloc(o.layout.buf_bytes[s]);
            CUDA_CHECK(cudaMemcpy(hb, o.buf[s], o.layout.buf_bytes[s], cudaMemcpyDeviceToHost));
            size_t off = 0;
            for (int i = 0; i < nt && ok_state; i++) {
                const float* gs = (const float*)(hb + off);
                // lion: rtol 1e-6 plus 1e-6 of the tensor's largest |m| (fused vs unfused beta2*m + (1-beta2)*g
                // differ by an ulp of the products, which cancellation can make large relative to m itself)
                const double atol = is_lion ? 1e-6 * max_abs(cpu_state[i][s], shapes[i].numel) : 1e-30;
                const double rtol = is_lion ? 1e-6 : 1e-5;
                for (size_t j = 0; j < shapes[i].numel; j++) {
                    float cv = cpu_state[i][s][j];
                    if (!(fabs((double)gs[j] - cv) <= rtol * fabs(cv) + atol)) {
                        ok_state = 0;
                        snprintf(why, sizeof(why), "step %d state %d tensor %d element %zu: gpu %.9g cpu %.9g", step, s, i, j, gs[j], cv);
                        break;
                    }
                }
                off += shapes[i].numel * 4; // packed, as optimizer_setup()
            }
            free(hb);
        }
    }
    if (is_lion) printf("# %s: %zu sign ties of %zu elements left out\n", label, nties, P);
    test_check(!is_lion || nties < P / 100, "more than 1% sign ties", "optimizer kernel %s: sign ties are rare (%zu)", label, nties);
    free(tie);
    test_check(ok_master, why, "optimizer kernel %s: master vs CPU step (rtol 1e-5, 3 steps)", label);
    test_check(ok_delta, why, "optimizer kernel %s: updates vs CPU step (rtol 1e-3)", label);
    if (o.layout.nbuf > 0) test_check(ok_state, why, "optimizer kernel %s: states vs CPU (rtol 1e-5)", label);
    if (bf16_mode) check_bf16_copy(label, d_pbf16, gpu_theta, shapes, offs, nt, P, o.seed, 3, sr);
    for (int i = 0; i < nt; i++) for (int s = 0; s < nstate[i]; s++) free(cpu_state[i][s]);
    free(theta); free(cpu_theta); free(grad); free(grad_b); free(before); free(gpu_theta);
    CUDA_CHECK(cudaFree(d_master));
    CUDA_CHECK(cudaFree(d_grad));
    if (d_pbf16) CUDA_CHECK(cudaFree(d_pbf16));
    dev_free_all();
}

// ---- 3c: adafactor and came kernels vs adafactor.c / came.c ---------------------------------------
// Awkward sizes: vectors of 1, 3 and 8193 (one element past a work item) elements; matrices 33x65,
// 3x5000 (rows < cols), 300x7 (rows > cols, rows not a multiple of the 64-row work items), 129x257.
// Three steps with a schedule and gradient clipping, weight decay on the matrices and one vector.
// Tolerances: the second-moment statistics (v_row, v_col, v) within rtol 1e-6: both sides sum the same
// fp32 values in double (only the order differs, ~1e-16) and round the mean to fp32 once, so they differ
// by at most the EMA's fused multiply-add (gcc -ffp-contract=fast vs nvcc), 1 ulp = 6e-8. Everything
// downstream of the momentum (exp_avg, came's res_row/res_col, the master) within rtol 1e-5: there the
// same 1-ulp contraction differences meet cancellation (came's residual U - m, the update th - u), as in
// check 3; a wrong formula (a missing mean(r), the clip, the lr scaling) is off by far more than 1e-3.
static void check_optimizer_factored(const char* opt_name, int use_beta1, int bf16_mode, int sr) {
    const Optimizer* opt = optim_find(opt_name);
    CHECK(opt);
    OptHyper h = opt->defaults;
    h.weight_decay = 0.1;
    h.use_beta1 = use_beta1;
    if (use_beta1) h.beta1 = 0.9;
    const int nt = 7;
    const size_t rows[7] = { 1, 1, 1, 33, 3, 300, 129 }, cols[7] = { 1, 3, 8193, 65, 5000, 7, 257 };
    ParamShape shapes[7];
    size_t offs[7], P = 0;
    char names[7][16];
    for (int i = 0; i < nt; i++) {
        snprintf(names[i], sizeof(names[i]), "t%d", i);
        shapes[i].name = names[i];
        shapes[i].rows = rows[i]; shapes[i].cols = cols[i]; shapes[i].numel = rows[i] * cols[i];
        shapes[i].ndim = rows[i] > 1 ? 2 : 1;
        shapes[i].decay = shapes[i].ndim == 2 || i == 1;
        offs[i] = P;
        P += shapes[i].numel;
    }
    Ledger led;
    ledger_init(&led, 0);
    GpuOpt o;
    gpu_opt_setup(&o, opt, &h, shapes, offs, nt, &led);
    o.stochastic_rounding = sr;
    o.seed = 4243;
    float* cpu_state[7][OPT_MAX_STATES] = { { NULL } };
    StateSpec specs[7][OPT_MAX_STATES];
    int nstate[7];
    for (int i = 0; i < nt; i++) {
        nstate[i] = opt->layout(&h, &shapes[i], specs[i]);
        for (int s = 0; s < nstate[i]; s++) cpu_state[i][s] = (float*)xcalloc(specs[i][s].count, sizeof(float));
    }
    Rng r;
    rng_seed(&r, 77);
    float* cpu_theta = (float*)xmalloc(P * sizeof(float));
    for (size_t i = 0; i < P; i++) cpu_theta[i] = 0.05f * rng_normal(&r);
    float* d_master = NULL;
    void* d_grad = NULL;
    bf16d* d_pbf16 = NULL;
    CUDA_CHECK(cudaMalloc(&d_master, P * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&d_grad, P * sizeof(float)));
    if (bf16_mode) CUDA_CHECK(cudaMalloc(&d_pbf16, P * sizeof(bf16)));
    CUDA_CHECK(cudaMemcpy(d_master, cpu_theta, P * sizeof(float), cudaMemcpyHostToDevice));
    float* grad = (float*)xmalloc(P * sizeof(float));
    bf16* grad_b = (bf16*)xmalloc(P * sizeof(bf16));
    float* gpu_theta = (float*)xmalloc(P * sizeof(float));
    const float lr_scales[3] = { 0.3f, 1.0f, 0.7f }, clips[3] = { 1.0f, 0.5f, 1.0f };
    char label[160], why[256] = "";
    snprintf(label, sizeof(label), "%s%s %s%s", opt_name, use_beta1 ? " beta1" : "", bf16_mode ? "bf16" : "fp32", sr ? " sr" : "");
    int ok_master = 1, ok_stat = 1, ok_state = 1;
    for (int step = 1; step <= 3; step++) {
        for (size_t i = 0; i < P; i++) grad[i] = 0.1f * rng_normal(&r);
        upload_grad(d_grad, grad, grad_b, P, bf16_mode);
        for (int i = 0; i < nt; i++) {
            OptHyper th = h;
            if (!shapes[i].decay) th.weight_decay = 0.0;
            float* gs = (float*)xmalloc(shapes[i].numel * sizeof(float));
            for (size_t j = 0; j < shapes[i].numel; j++) gs[j] = clips[step - 1] != 1.0f || bf16_mode ? grad[offs[i] + j] * clips[step - 1] : grad[offs[i] + j];
            OptTensor ot = { &shapes[i], cpu_theta + offs[i], gs, { 0 } };
            for (int s = 0; s < nstate[i]; s++) ot.state[s] = cpu_state[i][s];
            OptStep st = { step, h.lr * lr_scales[step - 1], lr_scales[step - 1], 0, NULL };
            opt->step(&th, &ot, &st);
            free(gs);
        }
        if (bf16_mode) gpu_opt_step<bf16d>(&o, d_master, (const bf16d*)d_grad, d_pbf16, step, lr_scales[step - 1], clips[step - 1]);
        else gpu_opt_step<float>(&o, d_master, (const float*)d_grad, (bf16d*)NULL, step, lr_scales[step - 1], clips[step - 1]);
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaMemcpy(gpu_theta, d_master, P * sizeof(float), cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < P && ok_master; i++) {
            if (!(fabs((double)gpu_theta[i] - cpu_theta[i]) <= 1e-5 * fabs(cpu_theta[i]) + 1e-30)) {
                ok_master = 0;
                snprintf(why, sizeof(why), "step %d element %zu: gpu %.9g cpu %.9g", step, i, gpu_theta[i], cpu_theta[i]);
            }
        }
        // every state of every tensor, found through the shared layout
        for (int i = 0; i < nt; i++) {
            const TensorStates* ts = &o.layout.tensors[i];
            for (int s = 0; s < nstate[i]; s++) {
                const size_t cnt = specs[i][s].count;
                float* gs = (float*)xmalloc(cnt * sizeof(float));
                CUDA_CHECK(cudaMemcpy(gs, (char*)o.buf[ts->buf[s]] + ts->offset[s], cnt * sizeof(float), cudaMemcpyDeviceToHost));
                const char* nm = specs[i][s].name;
                const int stat = !strcmp(nm, "v_row") || !strcmp(nm, "v_col") || !strcmp(nm, "v");
                const double rtol = stat ? 1e-6 : 1e-5;
                int* ok = stat ? &ok_stat : &ok_state;
                for (size_t j = 0; j < cnt && *ok; j++) {
                    const float cv = cpu_state[i][s][j];
                    if (!(fabs((double)gs[j] - cv) <= rtol * fabs(cv) + 1e-30)) {
                        *ok = 0;
                        snprintf(why, sizeof(why), "step %d tensor %d %s element %zu: gpu %.9g cpu %.9g", step, i, nm, j, gs[j], cv);
                    }
                }
                free(gs);
            }
        }
    }
    test_check(ok_master, why, "optimizer kernel %s: master vs CPU step (rtol 1e-5, 3 steps)", label);
    test_check(ok_stat, why, "optimizer kernel %s: factored statistics vs CPU (rtol 1e-6)", label);
    test_check(ok_state, why, "optimizer kernel %s: momentum and residual states vs CPU (rtol 1e-5)", label);
    if (bf16_mode) check_bf16_copy(label, d_pbf16, gpu_theta, shapes, offs, nt, P, o.seed, 3, sr);
    for (int i = 0; i < nt; i++) for (int s = 0; s < nstate[i]; s++) free(cpu_state[i][s]);
    free(cpu_theta); free(grad); free(grad_b); free(gpu_theta);
    CUDA_CHECK(cudaFree(d_master));
    CUDA_CHECK(cudaFree(d_grad));
    if (d_pbf16) CUDA_CHECK(cudaFree(d_pbf16));
    dev_free_all();
}

// ---- 3b: the 8-bit kernels vs adam8bit.c ----------------------------------------------------------
// Shapes straddle the fp32 floor (< 4096 elements keep fp32 m, v) and have short last blocks; qblock 64
// (64 threads), 256 and 4096 (16 elements per thread: the recompute path past Q8_REGS). Step 2 puts a
// NaN and an Inf into a quantized tensor's gradient. Both sides do the same fp32 operations in the same
// order with no fused multiply-adds (adam8bit.c turns contraction off, the kernel uses _rn intrinsics),
// so the codes must be equal (a tie is resolved the same way by the same search on the same floats)
// and the fp32 values equal; the stated tolerance, rtol 1e-6, only absorbs sqrt/division rounding
// should a libm differ. Non-finite counts must match the CPU's OptStep.nonfinite.
static void check_optimizer_8bit(const char* opt_name, int qblock, int bf16_mode) {
    const Optimizer* opt = optim_find(opt_name);
    CHECK(opt);
    OptHyper h = opt->defaults;
    h.lr = 1e-2;
    h.weight_decay = 0.1;
    h.qblock = qblock;
    const size_t rows[6] = { 1, 1, 33, 1, 3, 129 }, cols[6] = { 3, 4095, 65, 4097, 5000, 67 };
    const int nt = 6;
    ParamShape shapes[6];
    size_t offs[6], P = 0;
    char names[6][16];
    for (int i = 0; i < nt; i++) {
        snprintf(names[i], sizeof(names[i]), "t%d", i);
        shapes[i].name = names[i];
        shapes[i].rows = rows[i]; shapes[i].cols = cols[i]; shapes[i].numel = rows[i] * cols[i];
        shapes[i].ndim = rows[i] > 1 ? 2 : 1;
        shapes[i].decay = shapes[i].ndim == 2 || i == 3;
        offs[i] = P;
        P += shapes[i].numel;
    }
    Ledger led;
    ledger_init(&led, 0);
    GpuOpt o;
    gpu_opt_setup(&o, opt, &h, shapes, offs, nt, &led);
    // CPU state: the same packed buffers, host side
    char* cpu_buf[MAX_STATE_BUFFERS];
    char* gpu_buf[MAX_STATE_BUFFERS];
    for (int b = 0; b < o.layout.nbuf; b++) {
        cpu_buf[b] = (char*)xcalloc(o.layout.buf_bytes[b] + 1, 1);
        gpu_buf[b] = (char*)xcalloc(o.layout.buf_bytes[b] + 1, 1);
    }
    Rng r;
    rng_seed(&r, 77);
    float* cpu_theta = (float*)xmalloc(P * sizeof(float));
    for (size_t i = 0; i < P; i++) cpu_theta[i] = rng_normal(&r);
    float *d_master = NULL, *gpu_theta = (float*)xmalloc(P * sizeof(float)), *grad = (float*)xmalloc(P * sizeof(float));
    void* d_grad = NULL;
    bf16d* d_pbf16 = NULL;
    bf16* grad_b = (bf16*)xmalloc(P * sizeof(bf16));
    CUDA_CHECK(cudaMalloc(&d_master, P * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&d_grad, P * sizeof(float)));
    if (bf16_mode) CUDA_CHECK(cudaMalloc(&d_pbf16, P * sizeof(bf16)));
    CUDA_CHECK(cudaMemcpy(d_master, cpu_theta, P * sizeof(float), cudaMemcpyHostToDevice));
    const float lr_scales[3] = { 0.3f, 1.0f, 0.7f }, clips[3] = { 1.0f, 0.5f, 1.0f };
    char label[96], why[256] = "";
    snprintf(label, sizeof(label), "%s qblock %d %s", opt_name, qblock, bf16_mode ? "bf16" : "fp32");
    int ok_master = 1, ok_codes = 1, ok_f32 = 1;
    long cpu_nonfinite = 0;
    for (int step = 1; step <= 3; step++) {
        // gradient scales vary by row (x1..x10), so blocks hold a spread of magnitudes
        for (size_t i = 0; i < P; i++) grad[i] = 0.1f * (1.0f + (float)(i % 10)) * rng_normal(&r);
        if (step == 2) { grad[offs[3] + 5] = NAN; grad[offs[4] + 4999] = INFINITY; }
        upload_grad(d_grad, grad, grad_b, P, bf16_mode);
        for (int i = 0; i < nt; i++) {
            const TensorStates* ts = &o.layout.tensors[i];
            float* gs = (float*)xmalloc(shapes[i].numel * sizeof(float));
            for (size_t j = 0; j < shapes[i].numel; j++) gs[j] = grad[offs[i] + j] * clips[step - 1];
            OptTensor ot = { &shapes[i], cpu_theta + offs[i], gs, { 0 } };
            for (int s = 0; s < ts->nstate; s++) ot.state[s] = cpu_buf[ts->buf[s]] + ts->offset[s];
            OptStep st = { step, h.lr * lr_scales[step - 1], lr_scales[step - 1], 0, NULL };
            opt->step(&h, &ot, &st);
            cpu_nonfinite += st.nonfinite;
            free(gs);
        }
        if (bf16_mode) gpu_opt_step<bf16d>(&o, d_master, (const bf16d*)d_grad, d_pbf16, step, lr_scales[step - 1], clips[step - 1]);
        else gpu_opt_step<float>(&o, d_master, (const float*)d_grad, (bf16d*)NULL, step, lr_scales[step - 1], clips[step - 1]);
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaMemcpy(gpu_theta, d_master, P * sizeof(float), cudaMemcpyDeviceToHost));
        for (int b = 0; b < o.layout.nbuf; b++)
            CUDA_CHECK(cudaMemcpy(gpu_buf[b], o.buf[b], o.layout.buf_bytes[b], cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < P && ok_master; i++)
            if (!(fabs((double)gpu_theta[i] - cpu_theta[i]) <= 1e-6 * fabs(cpu_theta[i]))) {
                ok_master = 0;
                snprintf(why, sizeof(why), "step %d element %zu: gpu %.9g cpu %.9g", step, i, gpu_theta[i], cpu_theta[i]);
            }
        for (int i = 0; i < nt; i++) {
            const TensorStates* ts = &o.layout.tensors[i];
            for (int s = 0; s < ts->nstate; s++) {
                const char* c = cpu_buf[ts->buf[s]] + ts->offset[s];
                const char* g = gpu_buf[ts->buf[s]] + ts->offset[s];
                const size_t n = ts->nstate == 4 && s >= 2 ? q8_num_blocks(shapes[i].numel, (size_t)qblock) : shapes[i].numel;
                for (size_t j = 0; j < n; j++) {
                    if (ts->dtype[s] == DT_U8) {
                        if (ok_codes && (uint8_t)c[j] != (uint8_t)g[j]) {
                            ok_codes = 0;
                            snprintf(why, sizeof(why), "step %d tensor %d state %d code %zu: gpu %d cpu %d", step, i, s, j, (uint8_t)g[j], (uint8_t)c[j]);
                        }
                    } else {
                        const float cv = ((const float*)c)[j], gv = ((const float*)g)[j];
                        if (ok_f32 && !(fabs((double)gv - cv) <= 1e-6 * fabs(cv))) {
                            ok_f32 = 0;
                            snprintf(why, sizeof(why), "step %d tensor %d state %d element %zu: gpu %.9g cpu %.9g", step, i, s, j, gv, cv);
                        }
                    }
                }
            }
        }
    }
    test_check(ok_master, why, "optimizer kernel %s: master vs CPU step (rtol 1e-6, 3 steps)", label);
    test_check(ok_codes, why, "optimizer kernel %s: 8-bit codes equal the CPU's", label);
    test_check(ok_f32, why, "optimizer kernel %s: absmax and fp32 states vs CPU (rtol 1e-6)", label);
    if (bf16_mode) check_bf16_copy(label, d_pbf16, gpu_theta, shapes, offs, nt, P, o.seed, 3, o.stochastic_rounding);
    const long gn = gpu_opt_nonfinite(&o);
    snprintf(why, sizeof(why), "gpu %ld cpu %ld", gn, cpu_nonfinite);
    test_check(gn == cpu_nonfinite && gn == 2, why, "optimizer kernel %s: non-finite gradient elements counted (%ld)", label, gn);
    if (o.paged) {
        int host_backed = 0;
        for (int l = 0; l < led.n; l++) host_backed += led.lines[l].cat == MEM_OPT_STATE && led.lines[l].host_backed;
        snprintf(why, sizeof(why), "%d of %d state lines host-backed", host_backed, o.layout.nbuf);
        test_check(host_backed == o.layout.nbuf, why, "optimizer %s: every state line is host-backed in the ledger", label);
    }
    for (int b = 0; b < o.layout.nbuf; b++) { free(cpu_buf[b]); free(gpu_buf[b]); }
    free(cpu_theta); free(gpu_theta); free(grad); free(grad_b);
    CUDA_CHECK(cudaFree(d_master));
    CUDA_CHECK(cudaFree(d_grad));
    if (d_pbf16) CUDA_CHECK(cudaFree(d_pbf16));
    dev_free_all();
    state_layout_free(&o.layout);
}

// ---- 4, 5: the trainers as programs ---------------------------------------------------------------
// A synthetic corpus: 64 fixed random "phrases" of 12 tokens, drawn at random: learnable, no network.
static void write_synthetic_shard(const char* path) {
    Rng r;
    rng_seed(&r, 2024);
    int32_t phrases[64][12];
    for (int p = 0; p < 64; p++) for (int k = 0; k < 12; k++) phrases[p][k] = (int32_t)(rng_u32(&r) % 50257);
    size_t n = 120000;
    int32_t* tok = (int32_t*)xmalloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i += 12) {
        int p = (int)(rng_u32(&r) % 64);
        for (int k = 0; k < 12 && i + k < n; k++) tok[i + k] = phrases[p][k];
    }
    char err[512];
    if (data_write_shard(path, tok, n, err, sizeof(err)) != 0) { fprintf(stderr, "%s\n", err); exit(1); }
    free(tok);
}

// Per-step losses from DIR/log.jsonl into loss[step] (steps 1..max); returns how many were read.
static int read_losses(const char* dir, double* loss, int max) {
    char path[600], line[4096];
    snprintf(path, sizeof(path), "%s/log.jsonl", dir);
    FILE* f = fopen(path, "r");
    if (!f) return 0;
    int n = 0;
    while (fgets(line, sizeof(line), f)) {
        int step;
        double l;
        if (sscanf(line, "{\"type\":\"step\",\"step\":%d,\"loss\":%lf", &step, &l) == 2 && step >= 1 && step <= max) { loss[step] = l; n++; }
    }
    fclose(f);
    return n;
}

static int run_cmd(const char* cmd) {
    printf("# %s\n", cmd);
    fflush(stdout);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void check_trainers(void) {
    if (access("./train_gpu", X_OK) != 0 || access("./train_cpu", X_OK) != 0) {
        test_check(0, "build them first: make train_cpu train_gpu", "trainer binaries ./train_gpu and ./train_cpu exist");
        return;
    }
    char tmpl[] = "/tmp/test_gpt2cu_XXXXXX";
    char* dir = mkdtemp(tmpl);
    CHECK(dir);
    char shard[256], cmd[2048];
    snprintf(shard, sizeof(shard), "%s/synthetic.bin", dir);
    write_synthetic_shard(shard);
    const char* common = "-model 2:128:2 -b 4 -t 64 -x 20 -l 1e-3 -v 0 -m 2 -gen 0 -seed 7";
    const int N = 20;
    for (int p = 0; p < 2; p++) {
        const char* prec = p ? "bf16" : "fp32";
        double lg[N + 1], lc[N + 1];
        snprintf(cmd, sizeof(cmd), "./train_gpu %s -precision %s -i %s -o %s/gpu_%s > %s/gpu_%s.txt 2>&1", common, prec, shard, dir, prec, dir, prec);
        int rg = run_cmd(cmd);
        snprintf(cmd, sizeof(cmd), "./train_cpu %s -precision %s -i %s -o %s/cpu_%s > %s/cpu_%s.txt 2>&1", common, prec, shard, dir, prec, dir, prec);
        int rc = run_cmd(cmd);
        char d1[600], d2[600];
        snprintf(d1, sizeof(d1), "%s/gpu_%s", dir, prec);
        snprintf(d2, sizeof(d2), "%s/cpu_%s", dir, prec);
        int ng = read_losses(d1, lg, N), nc = read_losses(d2, lc, N);
        char why[256];
        snprintf(why, sizeof(why), "exit codes gpu %d cpu %d, %d and %d step lines (logs in %s)", rg, rc, ng, nc, dir);
        int ran = rg == 0 && rc == 0 && ng == N && nc == N;
        test_check(ran, why, "20 steps %s: both trainers ran", prec);
        if (!ran) continue;
        double tol = p ? 0.15 : 0.02, worst = 0.0;
        int ws = 1;
        for (int s = 1; s <= N; s++) if (fabs(lg[s] - lc[s]) > worst) { worst = fabs(lg[s] - lc[s]); ws = s; }
        snprintf(why, sizeof(why), "step %d: gpu %.6f cpu %.6f", ws, lg[ws], lc[ws]);
        test_check(worst <= tol, why, "20 steps %s: GPU losses match the CPU's within %.2f (worst %.4f at step %d)", prec, tol, worst, ws);
        snprintf(why, sizeof(why), "gpu loss step 1 %.4f, step 20 %.4f", lg[1], lg[N]);
        test_check(lg[N] < lg[1] - 0.1, why, "20 steps %s: the GPU loss falls (%.3f -> %.3f)", prec, lg[1], lg[N]);
        if (p == 1) {
            // determinism: the same run again
            double l2[N + 1];
            snprintf(cmd, sizeof(cmd), "./train_gpu %s -precision bf16 -i %s -o %s/gpu_again > %s/gpu_again.txt 2>&1", common, shard, dir, dir);
            int r2 = run_cmd(cmd);
            snprintf(d1, sizeof(d1), "%s/gpu_again", dir);
            int n2 = read_losses(d1, l2, N), same = r2 == 0 && n2 == N;
            for (int s = 1; same && s <= N; s++) same = l2[s] == lg[s];
            test_check(same, "a second identical run printed different losses", "determinism: same seed and flags give bit-identical GPU losses");
            // checkpoint at step 10 on the GPU, resumed on the GPU and on the CPU
            snprintf(cmd, sizeof(cmd), "./train_gpu %s -precision bf16 -i %s -o %s/ck_gpu -n 10 -stop 10 > %s/ck1.txt 2>&1 && "
                     "mkdir -p %s/ck_cpu && cp %s/ck_gpu/checkpoint.bin %s/ck_cpu/", common, shard, dir, dir, dir, dir, dir);
            int r3 = run_cmd(cmd);
            snprintf(cmd, sizeof(cmd), "./train_gpu %s -precision bf16 -i %s -o %s/ck_gpu -y 1 > %s/ck2.txt 2>&1", common, shard, dir, dir);
            int r4 = run_cmd(cmd);
            snprintf(cmd, sizeof(cmd), "./train_cpu %s -precision bf16 -i %s -o %s/ck_cpu -y 1 > %s/ck3.txt 2>&1", common, shard, dir, dir);
            int r5 = run_cmd(cmd);
            double lr_g[N + 1], lr_c[N + 1];
            snprintf(d1, sizeof(d1), "%s/ck_gpu", dir);
            snprintf(d2, sizeof(d2), "%s/ck_cpu", dir);
            int ngr = read_losses(d1, lr_g, N), ncr = read_losses(d2, lr_c, N);
            snprintf(why, sizeof(why), "exit codes %d %d, %d step lines (want 20; logs in %s)", r3, r4, ngr, dir);
            int ok = r3 == 0 && r4 == 0 && ngr == N;
            for (int s = 11; ok && s <= N; s++) ok = lr_g[s] == lg[s];
            test_check(ok, why, "checkpoint: GPU resume at step 10 reproduces steps 11..20 bit for bit");
            snprintf(why, sizeof(why), "exit code %d, %d step lines (want 10; logs in %s)", r5, ncr, dir);
            ok = r5 == 0 && ncr == 10;
            test_check(ok, why, "checkpoint: the CPU trainer resumes a GPU checkpoint");
            if (ok) {
                double w = 0.0;
                for (int s = 11; s <= N; s++) w = fmax(w, fabs(lr_c[s] - lg[s]));
                snprintf(why, sizeof(why), "worst |cpu resumed - gpu| = %.4f", w);
                test_check(w <= 0.15, why, "checkpoint: CPU-resumed losses match the GPU run within 0.15 (worst %.4f)", w);
            }
        }
    }
    // the optimizers added on the GPU later: 20 bf16 steps each, GPU vs CPU within the bf16
    // tolerance above; lion at its own smaller lr (sign updates move every weight by lr)
    // adafactor without -l: its relative step (HF's default); came at 1e-3.
    const char* more[5] = { "lion", "adamw8bit", "paged_adamw8bit", "adafactor", "came" };
    for (int k = 0; k < 5; k++) {
        const char* lr = k == 0 ? "-l 1e-4" : k == 3 ? "" : "-l 1e-3";
        const char* base = "-model 2:128:2 -b 4 -t 64 -x 20 -v 0 -m 2 -gen 0 -seed 7 -precision bf16";
        double lg[N + 1], lc[N + 1];
        snprintf(cmd, sizeof(cmd), "./train_gpu %s -opt %s %s -i %s -o %s/gpu_%s > %s/gpu_%s.txt 2>&1", base, more[k], lr, shard, dir, more[k], dir, more[k]);
        int rg = run_cmd(cmd);
        snprintf(cmd, sizeof(cmd), "./train_cpu %s -opt %s %s -i %s -o %s/cpu_%s > %s/cpu_%s.txt 2>&1", base, more[k], lr, shard, dir, more[k], dir, more[k]);
        int rc = run_cmd(cmd);
        char d1[600], d2[600], why[256];
        snprintf(d1, sizeof(d1), "%s/gpu_%s", dir, more[k]);
        snprintf(d2, sizeof(d2), "%s/cpu_%s", dir, more[k]);
        int ng = read_losses(d1, lg, N), nc = read_losses(d2, lc, N);
        snprintf(why, sizeof(why), "exit codes gpu %d cpu %d, %d and %d step lines (logs in %s)", rg, rc, ng, nc, dir);
        int ran = rg == 0 && rc == 0 && ng == N && nc == N;
        test_check(ran, why, "20 steps %s bf16: both trainers ran", more[k]);
        if (!ran) continue;
        double worst = 0.0;
        int ws = 1;
        for (int s = 1; s <= N; s++) if (fabs(lg[s] - lc[s]) > worst) { worst = fabs(lg[s] - lc[s]); ws = s; }
        snprintf(why, sizeof(why), "step %d: gpu %.6f cpu %.6f", ws, lg[ws], lc[ws]);
        test_check(worst <= 0.15, why, "20 steps %s bf16: GPU losses match the CPU's within 0.15 (worst %.4f at step %d)", more[k], worst, ws);
        snprintf(why, sizeof(why), "gpu loss step 1 %.4f, step 20 %.4f", lg[1], lg[N]);
        test_check(lg[N] < lg[1] - 0.1, why, "20 steps %s bf16: the GPU loss falls (%.3f -> %.3f)", more[k], lg[1], lg[N]);
    }
    printf("# trainer logs kept in %s\n", dir);
}

int main(int argc, char** argv) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("FAIL test_gpt2cu: no CUDA GPU on this machine (this test needs one)\n");
        return 1;
    }
    g_matmul_tf32 = 0; // full fp32 matmuls for the fp32 model check
    VecFile vf = vec_load("test/vectors/gpt2_tiny.bin");
    check_model(&vf, PRECISION_FP32);
    check_model(&vf, PRECISION_BF16);
    vec_free(&vf);
    g_matmul_tf32 = 1;
    const char* opts[4] = { "sgd", "sgdm", "adam", "adamw" };
    for (int i = 0; i < 4; i++) {
        check_optimizer(opts[i], 0, 0, 0);
        check_optimizer(opts[i], 0, 1, 0);
    }
    check_optimizer("sgdm", 1, 0, 0);
    check_optimizer("adamw", 0, 1, 1);
    check_optimizer("lion", 0, 0, 0);
    check_optimizer("lion", 0, 1, 0);
    check_optimizer("lion", 0, 1, 1);
    const int qblocks[3] = { 64, 256, 4096 };
    for (int q = 0; q < 3; q++) {
        check_optimizer_8bit("adamw8bit", qblocks[q], 0);
        check_optimizer_8bit("adamw8bit", qblocks[q], 1);
    }
    check_optimizer_8bit("adam8bit", 256, 0);
    check_optimizer_8bit("paged_adamw8bit", 256, 1);
    check_optimizer_factored("adafactor", 0, 0, 0);
    check_optimizer_factored("adafactor", 1, 0, 0);
    check_optimizer_factored("adafactor", 0, 1, 1);
    check_optimizer_factored("came", 0, 0, 0);
    check_optimizer_factored("came", 0, 1, 0);
    check_optimizer_factored("came", 0, 1, 1);
    if (argc < 2 || strcmp(argv[1], "-quick") != 0) check_trainers();
    return test_finish("test_gpt2cu");
}
