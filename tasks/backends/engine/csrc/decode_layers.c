/* A decode step's decoder layers in one call, for Llama-family models in fp32 whose projections are
 * all packed for linear.c: the same kernels (linear.c, decode_norms.c, decode_attention.c), called
 * in the same order and on the same values as decode.py's SlotModel._layers calls them one ctypes
 * call at a time, so the results are the same bit for bit. Called from Python, those eleven kernel
 * calls a layer cost glue on every step (tensor views, outputs allocated, arguments converted);
 * docs/engine.md has what that was worth.
 *
 * Per layer:
 *     h = rms_norm(x);  q, k, v = h @ Wq, Wk, Wv (+ bias);  rope(q, k);
 *     a = attention(q, k, v, the layer's slot cache);  x = x + a @ Wo;
 *     h = rms_norm(x);  x = x + (silu(h @ Wgate) * (h @ Wup)) @ Wdown
 * x [n, hidden] is updated in place. Each product prefetches the next one's first weights, as
 * matmul.py's Projections does (the last layer's down projection prefetches the head's). Panels of
 * bf16 values (`bf16`) are linear.c's to widen.
 */
#include <stdint.h>
#include <stdlib.h>

#include "kernels.h"

/* A layer's row of `table`, as int64 addresses: the seven packed weights, their biases (0: none),
 * the two norm weights, and the layer's key and value cache [slots, kv_heads, length, dim]. */
enum { Q, K, V, O, GATE, UP, DOWN, BIAS = 7, NORM_IN = 14, NORM_POST, CACHE_K, CACHE_V, FIELDS };
enum { NONE = 0, SWISH = 1, TIMES = 2, PLUS = 3 }; /* linear.c's element-wise steps */

#define AT(row, field) ((float *)(intptr_t)(row)[field])

int decode_layers(float *x, int64_t n, int64_t layers, const int64_t *table, const void *head,
                  int64_t vocab, int64_t hidden, int64_t heads, int64_t kv_heads, int64_t dim,
                  int64_t inter, float eps, const float *cos, const float *sin, const int64_t *len,
                  const int64_t *hot_k, const int64_t *hot_v, const int64_t *hot_len, int64_t slot_stride,
                  int64_t head_stride, int64_t max_len, float scale, int bf16, int threads) {
    int64_t qw = heads * dim, kw = kv_heads * dim;
    float *h = malloc(sizeof(float) * n * hidden), *q = malloc(sizeof(float) * n * qw);
    float *k = malloc(sizeof(float) * n * kw), *v = malloc(sizeof(float) * n * kw);
    float *a = malloc(sizeof(float) * n * qw), *gate = malloc(sizeof(float) * n * inter);
    float *up = malloc(sizeof(float) * n * inter);
    int failed = !(h && q && k && v && a && gate && up);
    for (int64_t layer = 0; layer < layers && !failed; layer++) {
        const int64_t *w = table + layer * FIELDS;
        const void *next = layer + 1 < layers ? AT(w + FIELDS, Q) : head;
        int64_t next_n = layer + 1 < layers ? qw : (head ? vocab : 0);
        rms_norm(x, AT(w, NORM_IN), h, n, hidden, eps, threads);
        failed |= linear(h, AT(w, Q), AT(w, BIAS + Q), 0, q, n, hidden, qw, NONE, threads, AT(w, K), kw, hidden,
                         bf16);
        failed |= linear(h, AT(w, K), AT(w, BIAS + K), 0, k, n, hidden, kw, NONE, threads, AT(w, V), kw, hidden,
                         bf16);
        failed |= linear(h, AT(w, V), AT(w, BIAS + V), 0, v, n, hidden, kw, NONE, threads, AT(w, O), hidden, qw,
                         bf16);
        failed |= rope(q, k, cos, sin, n, heads, kv_heads, dim, threads);
        failed |= decode_attention(q, AT(w, CACHE_K), AT(w, CACHE_V), k, v, len, a, hot_k, hot_v, hot_len,
                                   layer, n, kv_heads, heads / kv_heads, dim, slot_stride, head_stride,
                                   max_len, scale, 0, threads);
        failed |= linear(a, AT(w, O), AT(w, BIAS + O), x, x, n, qw, hidden, PLUS, threads, AT(w, GATE), inter,
                         hidden, bf16);
        rms_norm(x, AT(w, NORM_POST), h, n, hidden, eps, threads);
        failed |= linear(h, AT(w, GATE), AT(w, BIAS + GATE), 0, gate, n, hidden, inter, SWISH, threads, AT(w, UP),
                         inter, hidden, bf16);
        failed |= linear(h, AT(w, UP), AT(w, BIAS + UP), gate, up, n, hidden, inter, TIMES, threads, AT(w, DOWN),
                         hidden, inter, bf16);
        failed |= linear(up, AT(w, DOWN), AT(w, BIAS + DOWN), x, x, n, inter, hidden, PLUS, threads, next, next_n,
                         hidden, bf16);
    }
    free(h), free(q), free(k), free(v), free(a), free(gate), free(up);
    return failed;
}
