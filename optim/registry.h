// optim/registry.h: the list of optimizers, read by both backends. Adding an optimizer = its own files
// (optim/NAME.h: the math; NAME.c: the CPU loop and layout; NAME.cuh: the CUDA launch, if any) and one
// line below.
//
// X(CPU entry, backends): the CPU entry is the `const Optimizer` of optim/NAME.c; backends is
//   CPU_CUDA  it also has CUDA kernels: optim/NAME.cuh defines `const GpuOptimizer <CPU entry>_CUDA`
//             (OPT_SGD -> OPT_SGD_CUDA) and optim/optim.cuh includes NAME.cuh;
//   CPU_ONLY  no CUDA kernels: the CUDA trainer refuses it with a message.
// optim/registry.c expands the list into OPTIMIZERS[] (the CPU table, `-opt list`'s order) and
// optim_has_cuda(); optim/optim.cuh expands it into the CUDA table (gpu_optimizer()).
#ifndef OPTIM_REGISTRY_H
#define OPTIM_REGISTRY_H

#define OPTIMIZER_LIST(X)                 \
    X(OPT_SGD,             CPU_CUDA)      \
    X(OPT_SGDM,            CPU_CUDA)      \
    X(OPT_ADAM,            CPU_CUDA)      \
    X(OPT_ADAMW,           CPU_CUDA)      \
    X(OPT_LION,            CPU_CUDA)      \
    X(OPT_SOPHIA,          CPU_CUDA)      \
    X(OPT_LOMO,            CPU_CUDA)      \
    X(OPT_ADAFACTOR,       CPU_CUDA)      \
    X(OPT_CAME,            CPU_CUDA)      \
    X(OPT_ADALOMO,         CPU_CUDA)      \
    X(OPT_ADAM8BIT,        CPU_CUDA)      \
    X(OPT_ADAMW8BIT,       CPU_CUDA)      \
    X(OPT_PAGED_ADAMW8BIT, CPU_CUDA)      \
    X(OPT_ADAMW4BIT,       CPU_CUDA)      \
    X(OPT_GALORE_ADAMW,    CPU_CUDA)      \
    X(OPT_MUON,            CPU_CUDA)      \
    X(OPT_ADAM_MINI,       CPU_CUDA)      \
    X(OPT_LION8BIT,        CPU_CUDA)      \
    X(OPT_SGDM8BIT,        CPU_CUDA)      \
    /* REGISTRY-END: new optimizers go above this line */

// 1 for the optimizers whose line says CPU_CUDA (used by both expansions).
#define OPTIM_HAS_CUDA_CPU_CUDA 1
#define OPTIM_HAS_CUDA_CPU_ONLY 0

#endif
