/* Every function the engine's C library exports: the one interface between its C files and between
 * the library and Python. Each .c file includes it, so the compiler checks every definition and
 * every call against these lines; Python calls them through the ctypes table in
 * tasks/backends/engine/abi.py, which tests/engine/test_abi.py checks against this file (a changed
 * signature must change both). Pointers are to contiguous fp32 (or int64) buffers the caller owns;
 * `threads` is the OpenMP thread count (torch's). A nonzero int result is a failure (see each). */
#ifndef INSTRUCTFORGE_KERNELS_H
#define INSTRUCTFORGE_KERNELS_H

#include <stdint.h>

/* decode_attention.c: one query token per sequence over a slot KV cache, whose keys and values
 * (and the shared prefix's) are fp32, or bfloat16 (uint16_t) where `bf16`; 1: out of memory */
int decode_attention(const float *q, void *k, void *v, const float *new_k, const float *new_v,
                     const int64_t *len, float *out, const int64_t *hot_k, const int64_t *hot_v,
                     const int64_t *hot_len, int64_t layer, int64_t n, int64_t kv_heads, int64_t groups,
                     int64_t dim, int64_t slot_stride, int64_t head_stride, int64_t max_len, float scale,
                     int bf16, int threads);

/* decode_norms.c: LlamaRMSNorm, and the rotary embedding in place (1: a shape it does not take) */
void rms_norm(const float *x, const float *weight, float *out, int64_t rows, int64_t width, float eps,
              int threads);
int rope(float *q, float *k, const float *cos, const float *sin, int64_t rows, int64_t heads,
         int64_t kv_heads, int64_t dim, int threads);

/* linear.c: products with packed weights, whose panels (`packed`, `then`) hold fp32 values, or
 * bfloat16 ones where `bf16` (linear_available() 0: built without AVX-512, and linear then
 * returns -1; 1: out of memory) */
int64_t linear_packed_floats(int64_t n, int64_t k);
void linear_pack(const float *w, float *out, int64_t n, int64_t k);
int linear_available(void);
int linear(const float *x, const void *packed, const float *bias, const float *other, float *out,
           int64_t m, int64_t k, int64_t n, int op, int threads, const void *then, int64_t then_n,
           int64_t then_k, int bf16);

/* sample.c: nucleus sampling and the greedy choice of a batch of rows; 1: out of memory */
int sample_rows(const float *logits, int64_t n, int64_t vocab, const float *temperature,
                const float *top_p, const float *draws, int64_t count, int64_t *out, int threads);
void argmax_rows(const float *logits, int64_t n, int64_t vocab, int64_t *out, int threads);

/* decode_layers.c: a decode step's decoder layers in one call, the weights' panels (and the
 * head's) bf16 where `bf16`; nonzero: out of memory */
int decode_layers(float *x, int64_t n, int64_t layers, const int64_t *table, const void *head,
                  int64_t vocab, int64_t hidden, int64_t heads, int64_t kv_heads, int64_t dim,
                  int64_t inter, float eps, const float *cos, const float *sin, const int64_t *len,
                  const int64_t *hot_k, const int64_t *hot_v, const int64_t *hot_len, int64_t slot_stride,
                  int64_t head_stride, int64_t max_len, float scale, int bf16, int threads);

#endif
