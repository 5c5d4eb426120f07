// cuda/attention_route.h: the names of the CUDA trainer's attention routes (-attn), plain C so that the
// command line (trainer/cli.c) and the routes themselves (cuda/attention_routes.cuh) share one list.
// AUTO picks the fastest route a GPU run has verified; REF is the fp32-arithmetic reference kernels.
#ifndef CUDA_ATTENTION_ROUTE_H
#define CUDA_ATTENTION_ROUTE_H

enum { ATTN_AUTO = 0, ATTN_REF, ATTN_CUBLAS, ATTN_FLASH, ATTN_CUDNN, ATTN_NUM_ROUTES };
static const char* const ATTN_NAMES[ATTN_NUM_ROUTES] = { "auto", "ref", "cublas", "flash", "cudnn" };

#endif
