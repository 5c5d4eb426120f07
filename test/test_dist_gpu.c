// test/test_dist_gpu.c: the host side of the CUDA trainer's data parallelism (trainer/dist_gpu.c), which
// runs without a GPU: the refusals (a build without NCCL started as several ranks or with -dist-force 1;
// a node with fewer GPUs than ranks), the local rank from the launcher's environment, which ZeRO-1 plans
// the GPU kernels can run, and the ranks' ranges of the weights' all-gather.
//
// References: the plans are trainer/zero.c's own (zero_plan_build on a tiny model at 1-4 ranks), and the
// checks are exact (integers, strings): a plan the kernels can run must be accepted, and each kind of
// slice they cannot (an element range for a whole-tensor kernel, a cut through a quantization block, a
// row range for kernels without cross-rank reductions, a 2-D piece that is not a range of rows) must be
// refused with a line that names the optimizer, the tensor and the way out.
#include <stdlib.h>
#include <string.h>
#include "test.h"
#include "trainer/dist_gpu.h"
#include "trainer/zero.h"
#include "trainer/cli.h"
#include "optim/optim.h"

static int has(const char* s, const char* part) { return s && strstr(s, part) != NULL; }

static void check_refusals(void) {
    test_check(gpu_dist_refusal(1, 4, 0) == NULL, "refused", "nccl build: 4 ranks run");
    test_check(gpu_dist_refusal(1, 1, 1) == NULL, "refused", "nccl build: -dist-force 1 at one rank runs");
    test_check(gpu_dist_refusal(0, 1, 0) == NULL, "refused", "no-nccl build: one rank runs as before");
    const char* m = gpu_dist_refusal(0, 2, 0);
    test_check(has(m, "built without NCCL") && has(m, "install NCCL") && has(m, "make train_gpu") && has(m, "./train_cpu"), m ? m : "NULL",
               "no-nccl build: 2 ranks refused, naming what to install and the CPU trainer");
    m = gpu_dist_refusal(0, 1, 1);
    test_check(has(m, "-dist-force 1") && has(m, "without NCCL") && has(m, "install NCCL"), m ? m : "NULL",
               "no-nccl build: -dist-force 1 refused, naming what to install");

    char buf[512];
    test_check(gpu_per_rank_refusal(0, 1, 1, buf, sizeof(buf)) == NULL, buf, "one rank, one GPU: GPU 0");
    test_check(gpu_per_rank_refusal(1, 2, 2, buf, sizeof(buf)) == NULL, buf, "local rank 1 of 2 on a 2-GPU node: GPU 1");
    test_check(gpu_per_rank_refusal(3, 4, 8, buf, sizeof(buf)) == NULL, buf, "4 ranks on an 8-GPU node run");
    m = gpu_per_rank_refusal(0, 2, 1, buf, sizeof(buf));
    test_check(has(m, "NCCL without a GPU per rank") && has(m, "1 CUDA GPU to 2 ranks") && has(m, "at most 1 rank per node"), m ? m : "NULL",
               "2 ranks on a 1-GPU node: refused (\"NCCL without a GPU per rank\", how many to start)");
    m = gpu_per_rank_refusal(1, 2, 1, buf, sizeof(buf));
    test_check(has(m, "local rank 1 has none"), m ? m : "NULL", "the refusal names the rank without a GPU");
    m = gpu_per_rank_refusal(0, 3, 2, buf, sizeof(buf));
    test_check(has(m, "2 CUDA GPUs to 3 ranks") && has(m, "at most 2 ranks per node"), m ? m : "NULL",
               "3 ranks on a 2-GPU node: refused on every rank (rank 0 too: the ranks refuse together)");
}

static void check_local_rank(void) {
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK"); unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    unsetenv("MPI_LOCALRANKID"); unsetenv("MPI_LOCALNRANKS");
    test_check(dist_local_rank(5) == 5 && dist_local_world(8) == 8, "not the fallback", "no launcher variables: local rank = rank, local ranks = world");
    setenv("MPI_LOCALRANKID", "1", 1); setenv("MPI_LOCALNRANKS", "2", 1);
    test_check(dist_local_rank(5) == 1 && dist_local_world(8) == 2, "MPICH's variables ignored", "MPICH: MPI_LOCALRANKID / MPI_LOCALNRANKS");
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1); setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4", 1);
    test_check(dist_local_rank(5) == 3 && dist_local_world(8) == 4, "Open MPI's variables ignored", "Open MPI: OMPI_COMM_WORLD_LOCAL_RANK / _LOCAL_SIZE first");
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "x3", 1); unsetenv("MPI_LOCALRANKID");
    test_check(dist_local_rank(5) == 5, "a malformed value was used", "a malformed variable falls back to the rank");
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK"); unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    unsetenv("MPI_LOCALRANKID"); unsetenv("MPI_LOCALNRANKS");
}

// Slices of plan z that are pieces (not whole tensors), over all ranks.
static int count_pieces(const ZeroPlan* z, const ModelLayout* ml) {
    int n = 0;
    for (int r = 0; r < z->world; r++)
        for (int i = 0; i < z->num_tensors; i++) {
            const ZeroSlice* s = &z->slices[(size_t)r * z->num_tensors + i];
            if (s->shape.numel && s->shape.numel != ml->tensors[i].shape.numel) n++;
        }
    return n;
}

static void plan(ZeroPlan* z, const ModelLayout* ml, const char* name, int world) {
    const Optimizer* o = optim_find(name);
    OptHyper h = o->defaults;
    zero_plan_build(z, ml, o, &h, world, 0);
}

static void check_plans(void) {
    GPT2Config cfg = parse_model("2:64:2");
    ModelLayout ml;
    model_layout_build(&ml, &cfg);
    char buf[512];
    // the optimizers whose CUDA kernels take pieces of tensors, with the unit its kernels have
    // (trainer/zero_gpu.cuh's zero_gpu_unit; test_gpt2cu checks that mapping; the whole-tensor ones plan
    // whole tensors, test/sh/dist_gpu.sh): trainer/zero.c's plans at 1..4 ranks run
    struct { const char* name; ZeroGpuUnit unit; } gpu[] = {
        { "sgd", ZERO_GPU_ELEMENTS }, { "sgdm", ZERO_GPU_ELEMENTS }, { "adam", ZERO_GPU_ELEMENTS }, { "adamw", ZERO_GPU_ELEMENTS },
        { "lion", ZERO_GPU_ELEMENTS }, { "adam8bit", ZERO_GPU_QBLOCKS }, { "adamw8bit", ZERO_GPU_QBLOCKS },
        { "paged_adamw8bit", ZERO_GPU_QBLOCKS }, { "lion8bit", ZERO_GPU_QBLOCKS }, { "sgdm8bit", ZERO_GPU_QBLOCKS },
        { "adafactor", ZERO_GPU_ROWS }, { "came", ZERO_GPU_ROWS }, { "sophia", ZERO_GPU_ELEMENTS },
    };
    // (For whole-tensor kernels, a plan that cuts their tensors must be refused instead: the check follows
    // the plan; none of these has such kernels since the factored ones reduce across ranks.)
    for (size_t k = 0; k < sizeof(gpu) / sizeof(gpu[0]); k++) {
        int ok = 1, refused = 0;
        const char* why = NULL;
        for (int w = 1; w <= 4 && ok; w++) {
            ZeroPlan z;
            plan(&z, &ml, gpu[k].name, w);
            why = zero_gpu_unsupported(&z, &ml, gpu[k].unit, buf, sizeof(buf));
            if (gpu[k].unit == ZERO_GPU_WHOLE && count_pieces(&z, &ml) > 0) { ok = has(why, "-zero 1 on the GPU"); refused++; }
            else ok = why == NULL;
            zero_plan_free(&z);
        }
        test_check(ok, why ? why : "accepted a plan that cuts tensors", "zero plan of %s at 1-4 ranks: %s", gpu[k].name,
                   refused ? "cuts tensors, refused on the GPU" : "the GPU kernels run every slice");
    }
    // the positive checks above saw pieces (not only whole tensors) where the unit allows them
    ZeroPlan z;
    plan(&z, &ml, "adamw", 2);
    int pieces = count_pieces(&z, &ml);
    test_check(pieces > 0, "no piece", "adamw at 2 ranks: the plan cuts a tensor (%d pieces)", pieces);
    const char* m = zero_gpu_unsupported(&z, &ml, ZERO_GPU_WHOLE, buf, sizeof(buf));
    test_check(has(m, "-zero 1 on the GPU: adamw") && has(m, "element range") && has(m, "./train_cpu") && has(m, "without -zero"),
               m ? m : "NULL", "an element range for kernels that take whole tensors only: refused, naming the way out");
    zero_plan_free(&z);

    plan(&z, &ml, "adamw8bit", 3);
    pieces = count_pieces(&z, &ml);
    int qpiece = -1, qrank = -1; // a piece of a quantized tensor that starts inside it
    for (int r = 0; r < z.world && qpiece < 0; r++)
        for (int i = 0; i < z.num_tensors; i++) {
            const ZeroSlice* s = &z.slices[(size_t)r * z.num_tensors + i];
            if (s->shape.numel && s->start > 0 && z.full.tensors[i].dtype[0] == DT_U8) { qpiece = i; qrank = r; break; }
        }
    test_check(pieces > 0 && qpiece >= 0, "no cut inside a quantized tensor", "adamw8bit at 3 ranks: the plan cuts a quantized tensor at a block boundary");
    m = zero_gpu_unsupported(&z, &ml, ZERO_GPU_ELEMENTS, buf, sizeof(buf));
    test_check(has(m, "quantized"), m ? m : "NULL", "an 8-bit piece for the element-wise kernel: refused");
    if (qpiece >= 0) {
        ZeroSlice* s = &z.slices[(size_t)qrank * z.num_tensors + qpiece];
        s->start += 1; // one element past the block boundary
        m = zero_gpu_unsupported(&z, &ml, ZERO_GPU_QBLOCKS, buf, sizeof(buf));
        test_check(has(m, "cuts a quantization block") && has(m, ml.tensors[qpiece].name), m ? m : "NULL",
                   "a cut through a quantization block: refused, naming the tensor");
        s->start -= 1;
    }
    zero_plan_free(&z);

    // row ranges (adafactor/came: trainer/zero.c shards their matrices by rows, the column statistics
    // reduced across the ranks that share a matrix): the factored kernels take them, shared; kernels
    // without cross-rank reductions refuse them; a 2-D piece that is not whole rows is refused by all
    int rows_w = 0, shared_rank = -1, shared_mat = -1;
    for (int w = 2; w <= 4 && shared_mat < 0; w++) {
        plan(&z, &ml, "came", w);
        for (int r = 0; r < w && shared_mat < 0; r++)
            for (int i = 0; i < z.num_tensors; i++) {
                const ZeroSlice* s = &z.slices[(size_t)r * z.num_tensors + i];
                if (s->shape.numel && s->shape.ndim == 2 && s->shared && s->shape.rows < ml.tensors[i].shape.rows) {
                    rows_w = w; shared_rank = r; shared_mat = i; break;
                }
            }
        if (shared_mat < 0) zero_plan_free(&z);
    }
    test_check(shared_mat >= 0, "no plan of came at 2-4 ranks cuts a matrix in rows", "came at %d ranks: rank %d holds a row range of %s (shared)",
               rows_w, shared_rank, shared_mat >= 0 ? ml.tensors[shared_mat].name : "-");
    if (shared_mat >= 0) {
        m = zero_gpu_unsupported(&z, &ml, ZERO_GPU_ROWS, buf, sizeof(buf));
        test_check(m == NULL, m ? m : "", "a shared row range for the factored kernels: accepted");
        m = zero_gpu_unsupported(&z, &ml, ZERO_GPU_WHOLE, buf, sizeof(buf));
        test_check(has(m, "-zero 1 on the GPU: came") && has(m, "range of a matrix's rows") && has(m, "./train_cpu"), m ? m : "NULL",
                   "a row range for kernels without cross-rank reductions: refused in one line");
        ZeroSlice* s = &z.slices[(size_t)shared_rank * z.num_tensors + shared_mat];
        s->shared = 0;
        m = zero_gpu_unsupported(&z, &ml, ZERO_GPU_ROWS, buf, sizeof(buf));
        test_check(has(m, "does not mark shared") && has(m, ml.tensors[shared_mat].name), m ? m : "NULL",
                   "a row range the plan does not mark shared: refused (it would skip the reduce)");
        s->shared = 1;
        s->start += 1; // no longer on a row boundary
        m = zero_gpu_unsupported(&z, &ml, ZERO_GPU_ROWS, buf, sizeof(buf));
        test_check(has(m, "not a range of the matrix's rows"), m ? m : "NULL", "a 2-D piece off the row boundaries: refused");
        s->start -= 1;
        zero_plan_free(&z);
    }
    // an element range (as the element-wise plan would cut a vector) for the factored kernels: refused
    plan(&z, &ml, "adamw", 2);
    m = zero_gpu_unsupported(&z, &ml, ZERO_GPU_ROWS, buf, sizeof(buf));
    test_check(has(m, "element range") && has(m, "row ranges of matrices only"), m ? m : "NULL",
               "an element range for the factored kernels: refused in one line");
    zero_plan_free(&z);

    // the all-gather's ranges: contiguous, in rank order, covering every parameter once, = the plan's bounds
    int ok = 1;
    for (int w = 1; w <= 4 && ok; w++) {
        const char* names[3] = { "adamw", "adamw8bit", "came" };
        for (int k = 0; k < 3 && ok; k++) {
            plan(&z, &ml, names[k], w);
            size_t counts[4], displs[4], next = 0;
            zero_rank_ranges(&z, counts, displs);
            for (int r = 0; r < w; r++) {
                ok &= displs[r] == next && displs[r] == z.bound[r] && counts[r] == z.bound[r + 1] - z.bound[r];
                next += counts[r];
            }
            ok &= next == ml.num_params;
            zero_plan_free(&z);
        }
    }
    test_check(ok, "a gap, an overlap or a range off the plan's bounds",
               "all-gather ranges at 1-4 ranks: contiguous, rank order, all %zu parameters once", ml.num_params);
    model_layout_free(&ml);
}

int main(void) {
    check_refusals();
    check_local_rank();
    check_plans();
    return test_finish("test_dist_gpu");
}
