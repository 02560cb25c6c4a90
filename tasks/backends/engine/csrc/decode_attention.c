/* Decode-step attention over a slot KV cache, one query token per running sequence.
 *
 * For sequence i and query head j = h * groups + g (grouped-query attention: key/value head h serves
 * `groups` query heads, as transformers' repeat_kv does):
 *     out[i, j] = softmax_t(scale * q[i, j] . k[i, h, t]) @ v[i, h, t],   t < len[i]
 * Each sequence reads exactly its own len[i] cached positions, once for all its query heads, so
 * shorter sequences cost less (a padded matmul over the longest length reads every slot to the
 * maximum, and runs tiny 3-row products that leave most of the memory bandwidth unused).
 * Keys and values of slot i, head h start at k + i * slot_stride + h * head_stride, `dim` floats
 * per position. The step's own key and value (new_k, new_v: [n, kv_heads, dim]) are first stored
 * at position len[i] - 1. Built by tasks/backends/engine/kernels.py with the system C compiler.
 *
 * A shared prompt prefix (the chat template and system prompt every row starts with) is read from
 * one small buffer instead of each slot: hot_len[i] > 0 says sequence i's first hot_len[i]
 * positions hold the keys and values at hot_k[i] / hot_v[i] (float pointers to [layers, kv_heads,
 * hot_len[i], dim]; this call reads layer `layer`), and the slot's own first hot_len[i] positions
 * are never read (the engine does not write them). The buffer stays in the cores' caches across
 * the rows that share it, where a copy in each slot came from memory.
 *
 * With AVX2 and FMA (and dim a multiple of 8) the three loops are written out in intrinsics: a plain
 * loop computes one dot product at a time, a single chain of dependent multiply-adds, and calls the
 * scalar expf once per score (this kernel then took a large share of a decode step). Here eight positions'
 * dot products run side by side, the exponentials are computed eight at a time, and each value row
 * is added into accumulators held in registers (with AVX-512, for up to four query heads at once:
 * mix_heads).
 * (Prefetches never fault, so those reaching past a sequence's last position are harmless.)
 *
 * With `bf16` the cache (and the shared prefix's buffer) holds bfloat16 keys and values: half the
 * bytes a position, which is what a decode step's attention waits on. The step's own key and value
 * are rounded to bf16 as torch rounds when stored; the positions are widened back to fp32 (exact)
 * as they are read (AS_READ, below) and the arithmetic stays fp32: the result equals the fp32
 * kernel's on the widened cache.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* The portable loops as written, a product rounded before its add: the compiler would otherwise
 * fuse some into multiply-adds and not others, differently in the fp32 and bf16 copies (the
 * intrinsics say which they fuse). */
#pragma GCC optimize("fp-contract=off")
#pragma STDC FP_CONTRACT OFF

#define INLINE static inline __attribute__((always_inline))

/* The address of element `index` of a cache span of fp32 or (bf16) 16-bit elements. */
INLINE const char *element(const void *base, int64_t index, int bf16) {
    return (const char *)base + index * (bf16 ? 2 : 4);
}

/* One element as fp32 (a bf16 value is the high half of the fp32 one: widening is exact). */
INLINE float load1(const void *base, int64_t index, int bf16) {
    if (!bf16) return ((const float *)base)[index];
    uint32_t bits = (uint32_t)((const uint16_t *)base)[index] << 16;
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* float -> bfloat16, rounded to nearest even (a NaN stays one), as torch's .to(torch.bfloat16) */
static inline uint16_t to_bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VECTOR 1
#else
#define VECTOR 0
#endif

/* With AVX-512 each key chunk is loaded once for up to three query heads (the 32 vector registers
 * hold their 24 sums: heads_scores), and a bf16 cache (dim a multiple of 64) is widened as it is
 * read, in registers. With AVX2 alone a job widens each bf16 block into buffers (wide_k, wide_v),
 * once, and its scores and mix read those: storing and reading back the widened copy, and widening
 * it for each head, cost more than the cache's own read (bench/kernel_ab.py --attention). */
#if VECTOR && defined(__AVX512F__)
#define AS_READ 1
#else
#define AS_READ 0
#endif

/* Whether a vector job widens its bf16 keys and values into buffers, not as it reads them. */
static inline int widens(int bf16, int64_t dim) { return bf16 && !(AS_READ && dim % 64 == 0); }

/* scores[g * stride + t] = scale * query[g] . keys[t], t < steps */
static void scores_plain(const float *query, const void *keys, float *scores, int64_t groups,
                         int64_t dim, int64_t steps, int64_t stride, float scale, int bf16) {
    for (int64_t t = 0; t < steps; t++) {
        for (int64_t g = 0; g < groups; g++) {
            const float *qg = query + g * dim;
            float dot = 0.f;
            for (int64_t d = 0; d < dim; d++) dot += qg[d] * load1(keys, t * dim + d, bf16);
            scores[g * stride + t] = dot * scale;
        }
    }
}

/* scores[t] = exp(scores[t] - max) / sum, t < steps */
static void softmax_plain(float *s, int64_t steps) {
    float top = -INFINITY, total = 0.f;
    for (int64_t t = 0; t < steps; t++) top = s[t] > top ? s[t] : top;
    for (int64_t t = 0; t < steps; t++) {
        s[t] = expf(s[t] - top);
        total += s[t];
    }
    float inverse = 1.f / total;
    for (int64_t t = 0; t < steps; t++) s[t] *= inverse;
}

/* result[g] = sum_t scores[g * stride + t] * values[t] (added to result[g] when `more`) */
static void mix_plain(const float *scores, const void *values, float *result, int64_t groups,
                      int64_t dim, int64_t steps, int64_t stride, int more, int bf16) {
    if (!more) memset(result, 0, sizeof(float) * groups * dim);
    for (int64_t t = 0; t < steps; t++) {
        for (int64_t g = 0; g < groups; g++) {
            float w = scores[g * stride + t], *og = result + g * dim;
            for (int64_t d = 0; d < dim; d++) og[d] += w * load1(values, t * dim + d, bf16);
        }
    }
}

#if VECTOR
/* out[0..count) = bf16 in[0..count) as fp32 (each 16 bits moved to the top of 32); count % 8 == 0 */
static inline const float *widen(const void *in, float *out, int64_t count) {
    for (int64_t x = 0; x < count; x += 8) {
        __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)in + x)));
        _mm256_storeu_ps(out + x, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
    }
    return out;
}

/* The eight lanes' sums of a[0..7], as one vector. */
static inline __m256 sum8(const __m256 a[8]) {
    __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20),
                         _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

/* scores[g * stride + j] for the eight key rows row[0..7], one block. */
static inline void block_scores(const float *query, const float *row[8], float *scores, int64_t groups,
                                int64_t dim, int64_t stride, __m256 factor) {
    for (int64_t g = 0; g < groups; g++) {
        const float *qg = query + g * dim;
        __m256 acc[8];
        for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
        for (int64_t d = 0; d < dim; d += 8) {
            __m256 qv = _mm256_loadu_ps(qg + d);
            for (int j = 0; j < 8; j++) acc[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(row[j] + d), acc[j]);
        }
        _mm256_storeu_ps(scores + g * stride, _mm256_mul_ps(sum8(acc), factor));
    }
}

#if AS_READ

static inline __m256 widen8(const uint16_t *in) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)in));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

static inline __m512 widen16(const uint16_t *in) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)in));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

/* block_scores for G (<= 3) query heads over eight key rows (`bf16`: widened as loaded), each key
 * chunk loaded once for the G heads: the same chains of multiply-adds and the same sums, so the
 * scores are bit-identical to block_scores' (on the widened rows). */
INLINE void block_scores_heads(const float *query, const void *row[8], float *scores, int G, int64_t dim,
                               int64_t stride, __m256 factor, int bf16) {
    __m256 acc[3][8];
    for (int g = 0; g < G; g++)
        for (int j = 0; j < 8; j++) acc[g][j] = _mm256_setzero_ps();
    for (int64_t d = 0; d < dim; d += 8) {
        __m256 qv[3];
        for (int g = 0; g < G; g++) qv[g] = _mm256_loadu_ps(query + g * dim + d);
        for (int j = 0; j < 8; j++) {
            __m256 key = bf16 ? widen8((const uint16_t *)row[j] + d) : _mm256_loadu_ps((const float *)row[j] + d);
            for (int g = 0; g < G; g++) acc[g][j] = _mm256_fmadd_ps(qv[g], key, acc[g][j]);
        }
    }
    for (int g = 0; g < G; g++) _mm256_storeu_ps(scores + g * stride, _mm256_mul_ps(sum8(acc[g]), factor));
}

INLINE void heads_scores(const float *query, const void *row[8], float *scores, int64_t groups, int64_t dim,
                         int64_t stride, __m256 factor, int bf16) {
    for (int64_t g0 = 0; g0 < groups; g0 += 3) {
        const float *q = query + g0 * dim;
        float *out = scores + g0 * stride;
        int64_t left = groups - g0;
        if (left >= 3) block_scores_heads(q, row, out, 3, dim, stride, factor, bf16);
        else if (left == 2) block_scores_heads(q, row, out, 2, dim, stride, factor, bf16);
        else block_scores_heads(q, row, out, 1, dim, stride, factor, bf16);
    }
}
#endif

/* Also prefetches: the values of each block of keys (read next, by mix_vector) and the keys 16
 * positions ahead. The cache is read from memory, not from caches, and one stream at a time left
 * the cores waiting; with both in flight a position costs close to what streaming it from memory
 * does (docs/engine.md, "Where the time goes"). The last partial block runs the same arithmetic on
 * its rows (the others repeat row 0, their scores dropped), so a position's score does not depend
 * on where a span of positions starts (the shared prefix is a span of its own).
 * A bf16 cache that widens() (no AVX-512): each block's keys are widened into `wide_k` (8 * dim
 * floats) before its scores, and its values into `wide_v` (the span's, steps * dim floats), which
 * mix_vector then reads; values are prefetched a block ahead, as they are widened here, not read
 * later. With AVX-512, heads_scores reads the keys (bf16 or not) itself. */
INLINE void scores_vector(const float *query, const void *keys, const void *values, float *scores,
                          float *wide_k, float *wide_v, int64_t groups, int64_t dim, int64_t steps,
                          int64_t stride, float scale, int bf16) {
    int64_t t = 0, block_bytes = 8 * dim * (bf16 ? 2 : 4);
    int widened = widens(bf16, dim);
    __m256 factor = _mm256_set1_ps(scale);
    const float *row[8], *here;
    for (; t + 8 <= steps; t += 8) {
        const char *value = element(values, (t + (widened ? 8 : 0)) * dim, bf16);
        const char *ahead = element(keys, (t + 16) * dim, bf16);
        for (int64_t line = 0; line < block_bytes; line += 64) {
            _mm_prefetch(value + line, _MM_HINT_T0);
            _mm_prefetch(ahead + line, _MM_HINT_T0);
        }
#if AS_READ
        if (!widened) {
            const void *rows[8];
            for (int j = 0; j < 8; j++) rows[j] = element(keys, (t + j) * dim, bf16);
            heads_scores(query, rows, scores + t, groups, dim, stride, factor, bf16);
            continue;
        }
#endif
        here = widened ? widen(element(keys, t * dim, 1), wide_k, 8 * dim) : (const float *)keys + t * dim;
        for (int j = 0; j < 8; j++) row[j] = here + j * dim;
        block_scores(query, row, scores + t, groups, dim, stride, factor);
        if (widened) widen(element(values, t * dim, 1), wide_v + t * dim, 8 * dim);
    }
    if (t < steps) {
        float last[8 * 64];  /* groups <= 64 */
        int64_t left = steps - t;
        here = widened ? widen(element(keys, t * dim, 1), wide_k, left * dim) : (const float *)keys + t * dim;
        for (int j = 0; j < 8; j++) row[j] = here + (j < left ? j : 0) * dim;
        for (int64_t g0 = 0; g0 < groups; g0 += 64) {
            int64_t some = groups - g0 < 64 ? groups - g0 : 64;
#if AS_READ
            if (!widened) {
                const void *rows[8];
                for (int j = 0; j < 8; j++) rows[j] = element(keys, (t + (j < left ? j : 0)) * dim, bf16);
                heads_scores(query + g0 * dim, rows, last, some, dim, 8, factor, bf16);
            } else
#endif
                block_scores(query + g0 * dim, row, last, some, dim, 8, factor);
            for (int64_t g = 0; g < some; g++)
                for (int64_t j = 0; j < left; j++) scores[(g0 + g) * stride + t + j] = last[g * 8 + j];
        }
        if (widened) widen(element(values, t * dim, 1), wide_v + t * dim, left * dim);
    }
}

/* exp(x) for x <= 0 (scores minus their maximum), to about 2 ulp: 2^n * p(r), x = n ln2 + r,
 * |r| <= ln2 / 2, p a degree-6 Taylor polynomial; below -87 the result flushes to 0. */
static inline __m256 exp_nonpositive(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  /* ln2, split in two */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 scaled = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    return _mm256_and_ps(scaled, _mm256_cmp_ps(x, _mm256_set1_ps(-87.f), _CMP_GT_OQ));
}

static inline float lanes_max(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

static inline float lanes_sum(__m256 v) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

static void softmax_vector(float *s, int64_t steps) {
    int64_t t, whole = steps - steps % 8;
    __m256 top8 = _mm256_set1_ps(-INFINITY);
    for (t = 0; t < whole; t += 8) top8 = _mm256_max_ps(top8, _mm256_loadu_ps(s + t));
    float top = lanes_max(top8);
    for (; t < steps; t++) top = s[t] > top ? s[t] : top;
    __m256 shift = _mm256_set1_ps(top), total8 = _mm256_setzero_ps();
    for (t = 0; t < whole; t += 8) {
        __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + t), shift));
        _mm256_storeu_ps(s + t, e);
        total8 = _mm256_add_ps(total8, e);
    }
    float total = lanes_sum(total8);
    for (; t < steps; t++) {
        s[t] = expf(s[t] - top);
        total += s[t];
    }
    __m256 inverse = _mm256_set1_ps(1.f / total);
    for (t = 0; t < whole; t += 8) _mm256_storeu_ps(s + t, _mm256_mul_ps(_mm256_loadu_ps(s + t), inverse));
    for (; t < steps; t++) s[t] *= 1.f / total;
}

/* The next job's keys (`next`, `next_bytes` long) are asked for while this job mixes its values: a
 * job's key pass streams its keys and values from memory, but its softmax and mix read only what is
 * already in the core's caches, and memory then sat idle (the next job's first keys came only when
 * it began). One position of them a position mixed, into L2 (T1: the values being mixed stay in L1). */
INLINE void prefetch_next(const char *next, int64_t next_bytes, int64_t t, int64_t row_bytes) {
    if (t * row_bytes < next_bytes)
        for (int64_t line = 0; line < row_bytes; line += 64)
            _mm_prefetch(next + t * row_bytes + line, _MM_HINT_T1);
}

#if defined(__AVX512F__)
/* mix_vector's sums for query heads g0..g0+G-1 (G <= 4) and floats d0..d0+63: each value row is
 * loaded once for the G heads (as four 16-float vectors; `bf16`: widened as loaded), not once per
 * head. Every sum is the same chain of multiply-adds over t as mix_vector's, so the results are
 * bit-identical. */
INLINE void mix_heads(const float *scores, const void *values, float *result, int64_t g0, int G, int64_t d0,
                      int64_t dim, int64_t steps, int64_t stride, int more, int bf16, const char *next,
                      int64_t next_bytes) {
    __m512 acc[4][4];
    for (int g = 0; g < G; g++)
        for (int j = 0; j < 4; j++) {
            float *og = result + (g0 + g) * dim + d0 + 16 * j;
            acc[g][j] = more ? _mm512_loadu_ps(og) : _mm512_setzero_ps();
        }
    int64_t row_bytes = dim * (bf16 ? 2 : 4);
    for (int64_t t = 0; t < steps; t++) {
        __m512 v[4];
        if (next) prefetch_next(next, next_bytes, t, row_bytes);
        for (int j = 0; j < 4; j++)
            v[j] = bf16 ? widen16((const uint16_t *)values + t * dim + d0 + 16 * j)
                        : _mm512_loadu_ps((const float *)values + t * dim + d0 + 16 * j);
        for (int g = 0; g < G; g++) {
            __m512 w = _mm512_set1_ps(scores[(g0 + g) * stride + t]);
            for (int j = 0; j < 4; j++) acc[g][j] = _mm512_fmadd_ps(w, v[j], acc[g][j]);
        }
    }
    for (int g = 0; g < G; g++)
        for (int j = 0; j < 4; j++) _mm512_storeu_ps(result + (g0 + g) * dim + d0 + 16 * j, acc[g][j]);
}
#endif

/* Each output row in blocks of 64 floats, eight accumulators held in registers (then 8 at a time).
 * With `more`, the accumulators start from result (a second span of positions). `bf16` values only
 * where mix_heads reads them (AS_READ, dim a multiple of 64). */
INLINE void mix_vector(const float *scores, const void *cache, float *result, int64_t groups,
                       int64_t dim, int64_t steps, int64_t stride, int more, int bf16, const char *next,
                       int64_t next_bytes) {
#if defined(__AVX512F__)
    if (dim % 64 == 0) {
        for (int64_t d0 = 0; d0 < dim; d0 += 64)
            for (int64_t g0 = 0; g0 < groups; g0 += 4) {
                int64_t left = groups - g0;
                const char *nx = d0 || g0 ? 0 : next; /* asked for once, in the first pass */
                int64_t nb = next_bytes;
                if (left >= 4) mix_heads(scores, cache, result, g0, 4, d0, dim, steps, stride, more, bf16, nx, nb);
                else if (left == 3) mix_heads(scores, cache, result, g0, 3, d0, dim, steps, stride, more, bf16, nx, nb);
                else if (left == 2) mix_heads(scores, cache, result, g0, 2, d0, dim, steps, stride, more, bf16, nx, nb);
                else mix_heads(scores, cache, result, g0, 1, d0, dim, steps, stride, more, bf16, nx, nb);
            }
        return;
    }
#endif
    const float *values = cache; /* fp32 here: a bf16 span comes widened (wide_v) */
    (void)bf16;
    for (int64_t g = 0; g < groups; g++) {
        const float *w = scores + g * stride;
        float *og = result + g * dim;
        int64_t d0 = 0;
        for (; d0 + 64 <= dim; d0 += 64) {
            __m256 acc[8];
            for (int j = 0; j < 8; j++) acc[j] = more ? _mm256_loadu_ps(og + d0 + 8 * j) : _mm256_setzero_ps();
            for (int64_t t = 0; t < steps; t++) {
                if (next && g == 0 && d0 == 0) prefetch_next(next, next_bytes, t, dim * sizeof(float));
                __m256 wt = _mm256_broadcast_ss(w + t);
                const float *value = values + t * dim + d0;
                for (int j = 0; j < 8; j++) acc[j] = _mm256_fmadd_ps(wt, _mm256_loadu_ps(value + 8 * j), acc[j]);
            }
            for (int j = 0; j < 8; j++) _mm256_storeu_ps(og + d0 + 8 * j, acc[j]);
        }
        for (; d0 < dim; d0 += 8) {
            __m256 acc = more ? _mm256_loadu_ps(og + d0) : _mm256_setzero_ps();
            for (int64_t t = 0; t < steps; t++)
                acc = _mm256_fmadd_ps(_mm256_broadcast_ss(w + t), _mm256_loadu_ps(values + t * dim + d0), acc);
            _mm256_storeu_ps(og + d0, acc);
        }
    }
}
#endif

/* Scores, softmax and mix of one (sequence, key head) job over its positions [0, steps): the
 * first `hot` from hot_keys/hot_values, the rest from the slot (keys/values, position 0 on);
 * elements of `bf16` or fp32, a constant at each call so that each kind gets its own code. */
INLINE void job(const float *query, const void *keys, const void *values, const void *hot_keys,
                const void *hot_values, int64_t hot, float *scores, float *wide, float *result, int64_t groups,
                int64_t dim, int64_t steps, int64_t stride, float scale, int vector, int bf16, const char *next,
                int64_t next_bytes) {
    const void *from_k[2] = {hot_keys, element(keys, hot * dim, bf16)};
    const void *from_v[2] = {hot_values, element(values, hot * dim, bf16)};
    int64_t first[2] = {0, hot}, count[2] = {hot, steps - hot};
#if VECTOR
    if (vector) {
        /* Nothing is in flight when a job starts, and scores_vector prefetches keys 16 positions
         * ahead of the block it computes: ask for the slot's first 16 now, so they arrive while
         * the shared prefix's blocks (read from cache) are computed: it matters most for short
         * rows, whose slot part is only a few blocks long. */
        const char *start = from_k[1], *end = element(start, (count[1] < 16 ? count[1] : 16) * dim, bf16);
        for (const char *line = start; line < end; line += 64) _mm_prefetch(line, _MM_HINT_T0);
        start = from_v[1], end = element(start, (count[1] < 8 ? count[1] : 8) * dim, bf16);
        for (const char *line = start; widens(bf16, dim) && line < end; line += 64) _mm_prefetch(line, _MM_HINT_T0);
        float *wide_k = wide, *wide_v = wide + 8 * dim;  /* bf16 only: [8, dim] and [stride, dim] */
        for (int s = 0; s < 2; s++)
            if (count[s])
                scores_vector(query, from_k[s], from_v[s], scores + first[s], wide_k, wide_v + first[s] * dim,
                              groups, dim, count[s], stride, scale, bf16);
        for (int64_t g = 0; g < groups; g++) softmax_vector(scores + g * stride, steps);
        if (widens(bf16, dim)) { /* widened into wide_v by scores_vector */
            mix_vector(scores, wide_v, result, groups, dim, steps, stride, 0, 0, 0, 0);
            return;
        }
        for (int s = 0; s < 2; s++)
            if (count[s])
                mix_vector(scores + first[s], from_v[s], result, groups, dim, count[s], stride, s > 0 && hot, bf16,
                           s > 0 ? next : 0, next_bytes);
        return;
    }
#endif
    for (int s = 0; s < 2; s++)
        if (count[s]) scores_plain(query, from_k[s], scores + first[s], groups, dim, count[s], stride, scale, bf16);
    for (int64_t g = 0; g < groups; g++) softmax_plain(scores + g * stride, steps);
    for (int s = 0; s < 2; s++)
        if (count[s])
            mix_plain(scores + first[s], from_v[s], result, groups, dim, count[s], stride, s > 0 && hot, bf16);
    (void)vector, (void)wide, (void)next, (void)next_bytes;
}

/* Store the step's key and value at position `at` of a slot (bf16: rounded). */
static void store(void *keys, void *values, const float *new_k, const float *new_v, int64_t at, int64_t dim,
                  int bf16) {
    if (!bf16) {
        memcpy((float *)keys + at * dim, new_k, sizeof(float) * dim);
        memcpy((float *)values + at * dim, new_v, sizeof(float) * dim);
        return;
    }
    for (int64_t d = 0; d < dim; d++) {
        ((uint16_t *)keys)[at * dim + d] = to_bf16(new_k[d]);
        ((uint16_t *)values)[at * dim + d] = to_bf16(new_v[d]);
    }
}

#define TAKEN 8 /* jobs a thread takes at a time (OpenMP's dynamic schedule, chunks from job 0 on) */

int decode_attention(const float *q, void *k, void *v, const float *new_k, const float *new_v,
                     const int64_t *len, float *out, const int64_t *hot_k, const int64_t *hot_v,
                     const int64_t *hot_len, int64_t layer,
                     int64_t n, int64_t kv_heads, int64_t groups, int64_t dim, int64_t slot_stride,
                     int64_t head_stride, int64_t max_len, float scale, int bf16, int threads) {
    int failed = 0, vector = VECTOR && dim % 8 == 0;
    int64_t stride = (max_len + 7) / 8 * 8;
#pragma omp parallel num_threads(threads)
    {
        float *scores = malloc(sizeof(float) * groups * stride);
        /* bf16's widened keys (a block) and values (a job's) */
        int widening = VECTOR && vector && widens(bf16, dim);
        float *wide = widening ? malloc(sizeof(float) * (8 + stride) * dim) : NULL;
        int missing = scores == NULL || (widening && wide == NULL);
        if (missing) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, TAKEN)
        for (int64_t job_index = 0; job_index < n * kv_heads; job_index++) {
            if (missing) continue;
            int64_t i = job_index / kv_heads, h = job_index % kv_heads, steps = len[i];
            void *keys = (void *)element(k, i * slot_stride + h * head_stride, bf16);
            void *values = (void *)element(v, i * slot_stride + h * head_stride, bf16);
            store(keys, values, new_k + job_index * dim, new_v + job_index * dim, steps - 1, dim, bf16);
            /* the shared prefix's buffer: [layers, kv_heads, hot, dim] */
            int64_t hot = hot_len ? hot_len[i] : 0, hot_at = (layer * kv_heads + h) * hot * dim;
            const void *hot_keys = hot ? element((const void *)(intptr_t)hot_k[i], hot_at, bf16) : 0;
            const void *hot_values = hot ? element((const void *)(intptr_t)hot_v[i], hot_at, bf16) : 0;
            /* the next job's keys (its slot part), which this thread runs next unless this job ends
             * the TAKEN it took: prefetch_next asks for them while this job mixes its values */
            const char *next = 0;
            int64_t next_bytes = 0;
            if ((job_index + 1) % TAKEN && job_index + 1 < n * kv_heads) {
                int64_t i2 = (job_index + 1) / kv_heads, h2 = (job_index + 1) % kv_heads;
                int64_t hot2 = hot_len ? hot_len[i2] : 0;
                next = element(k, i2 * slot_stride + h2 * head_stride + hot2 * dim, bf16);
                next_bytes = (len[i2] - 1 - hot2) * dim * (bf16 ? 2 : 4);
            }
            const float *query = q + job_index * groups * dim;
            float *result = out + job_index * groups * dim;
            if (bf16)
                job(query, keys, values, hot_keys, hot_values, hot, scores, wide, result, groups, dim, steps,
                    stride, scale, vector, 1, next, next_bytes);
            else
                job(query, keys, values, hot_keys, hot_values, hot, scores, wide, result, groups, dim, steps,
                    stride, scale, vector, 0, next, next_bytes);
        }
        free(scores);
        free(wide);
    }
    return failed;
}
