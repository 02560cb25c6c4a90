/* Decode-step attention over a slot KV cache, one query token per running sequence.
 *
 * For sequence i and query head j = h * groups + g (grouped-query attention: key/value head h serves
 * `groups` query heads, as transformers' repeat_kv does):
 *     out[i, j] = softmax_t(scale * q[i, j] . k[i, h, t]) @ v[i, h, t],   t < len[i]
 * Each sequence reads exactly its own len[i] cached positions, once for all its query heads, so
 * shorter sequences cost less (a padded matmul over the longest length reads every slot to the
 * maximum, and runs tiny 3-row products that reach a third of the memory bandwidth here).
 * Keys and values of slot i, head h start at k + i * slot_stride + h * head_stride, `dim` floats
 * per position. The step's own key and value (new_k, new_v: [n, kv_heads, dim]) are first stored
 * at position len[i] - 1. Built by tasks/backends/attention.py with the system C compiler.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int decode_attention(const float *q, float *k, float *v, const float *new_k, const float *new_v,
                     const int64_t *len, float *out,
                     int64_t n, int64_t kv_heads, int64_t groups, int64_t dim, int64_t slot_stride,
                     int64_t head_stride, int64_t max_len, float scale, int threads) {
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *scores = malloc(sizeof(float) * groups * max_len);
        if (scores == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t job = 0; job < n * kv_heads; job++) {
            if (scores == NULL) continue;
            int64_t i = job / kv_heads, h = job % kv_heads, steps = len[i];
            float *keys = k + i * slot_stride + h * head_stride;
            float *values = v + i * slot_stride + h * head_stride;
            memcpy(keys + (steps - 1) * dim, new_k + job * dim, sizeof(float) * dim);
            memcpy(values + (steps - 1) * dim, new_v + job * dim, sizeof(float) * dim);
            const float *query = q + job * groups * dim;
            float *result = out + job * groups * dim;
            for (int64_t t = 0; t < steps; t++) {
                const float *key = keys + t * dim;
                for (int64_t g = 0; g < groups; g++) {
                    const float *qg = query + g * dim;
                    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
                    for (int64_t d = 0; d < dim; d++) dot += qg[d] * key[d];
                    scores[g * max_len + t] = dot * scale;
                }
            }
            for (int64_t g = 0; g < groups; g++) {
                float *s = scores + g * max_len, top = -INFINITY, total = 0.f;
                for (int64_t t = 0; t < steps; t++) top = s[t] > top ? s[t] : top;
                for (int64_t t = 0; t < steps; t++) {
                    s[t] = expf(s[t] - top);
                    total += s[t];
                }
                float inverse = 1.f / total;
#pragma omp simd
                for (int64_t t = 0; t < steps; t++) s[t] *= inverse;
            }
            memset(result, 0, sizeof(float) * groups * dim);
            for (int64_t t = 0; t < steps; t++) {
                const float *value = values + t * dim;
                for (int64_t g = 0; g < groups; g++) {
                    float w = scores[g * max_len + t];
                    float *og = result + g * dim;
#pragma omp simd
                    for (int64_t d = 0; d < dim; d++) og[d] += w * value[d];
                }
            }
        }
        free(scores);
    }
    return failed;
}
