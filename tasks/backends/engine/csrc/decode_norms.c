/* The decode step's element-wise layers in one pass each, for Llama-family models (fp32):
 *
 * rms_norm: out = weight * (x * 1/sqrt(mean(x^2) + eps)), each row (LlamaRMSNorm, also Mistral's
 *   and Qwen2's); the mean sums sixteen partial sums, so it may differ from torch's reduction
 *   order by an ulp.
 * rope: q and k rotated in place, x * cos + rotate_half(x) * sin with rotate_half(x) =
 *   (-x[half:], x[:half]) (transformers' apply_rotary_pos_emb), bit-identical to it: every product
 *   is rounded before the add, as torch's separate ops do (no fused multiply-add here).
 *
 * As torch ops these were 6 and 12 passes over the rows, each a parallel region of its own, on
 * every layer; here each is one pass. Built with decode_attention.c (kernels.py).
 */
#include <math.h>
#include <stdint.h>

#include "kernels.h"

#pragma GCC optimize("fp-contract=off")
#pragma STDC FP_CONTRACT OFF

void rms_norm(const float *x, const float *weight, float *out, int64_t rows, int64_t width, float eps,
              int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (rows * width >= 32768)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * width;
        float *o = out + r * width;
        float part[16] = {0}, sum = 0.f;
        int64_t whole = width - width % 16, d;
        for (d = 0; d < whole; d += 16)
            for (int j = 0; j < 16; j++) part[j] += xr[d + j] * xr[d + j];
        for (; d < width; d++) part[d % 16] += xr[d] * xr[d];
        for (int j = 0; j < 16; j++) sum += part[j];
        float scale = 1.f / sqrtf(sum / (float)width + eps);
        for (d = 0; d < width; d++) o[d] = weight[d] * (xr[d] * scale);
    }
}

/* q [rows, heads, dim] and k [rows, kv_heads, dim] (contiguous), cos and sin [rows, dim]. Returns 1
 * (nothing done) when dim is odd or over 1024. */
int rope(float *q, float *k, const float *cos, const float *sin, int64_t rows, int64_t heads,
         int64_t kv_heads, int64_t dim, int threads) {
    if (dim % 2 || dim > 1024) return 1;
    int64_t half = dim / 2;
#pragma omp parallel for num_threads(threads) schedule(static) if (rows * (heads + kv_heads) * dim >= 32768)
    for (int64_t r = 0; r < rows; r++) {
        const float *c = cos + r * dim, *s = sin + r * dim;
        for (int64_t h = 0; h < heads + kv_heads; h++) {
            float *x = h < heads ? q + (r * heads + h) * dim : k + (r * kv_heads + h - heads) * dim;
            float low[512];
            for (int64_t d = 0; d < half; d++) low[d] = x[d];
            for (int64_t d = 0; d < half; d++) x[d] = x[d] * c[d] + (-x[d + half]) * s[d];
            for (int64_t d = half; d < dim; d++) x[d] = x[d] * c[d] + low[d - half] * s[d];
        }
    }
    return 0;
}
