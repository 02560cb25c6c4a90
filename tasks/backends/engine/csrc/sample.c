/* Nucleus sampling (Holtzman et al., 2020) of a batch of rows, in two or three reads of each row's
 * fp32 logits, for tasks/backends/engine/sampling.py (which says what a draw means and keeps the torch
 * version for the rows this one leaves).
 *
 * Row r: scaled logits s = x / temperature[r]; probabilities p = exp(max(s, top - FLOOR) - top) /
 * their sum (softmax, the far tail raised to FLOOR below the top as sampling.py's _FLOOR does;
 * -inf stays at probability 0); draw u = draws[r] in [0, 1).
 *   top_p[r] >= 1: the first token, in vocabulary order, whose cumulative probability passes
 *     u (the last token of nonzero probability if rounding leaves none).
 *   else: the `count` most likely tokens (ties: the lower token id first) in order; if they hold
 *     less than top_p of the mass, out[r] = -1 (the caller sorts that row in full). Else the
 *     smallest prefix reaching top_p is kept (the first token always) and the token drawn is the
 *     first whose cumulative kept probability reaches u times the kept mass.
 *
 * As torch ops the same choice took nine passes over [rows, vocab] floats (division, minimum,
 * maximum, clamp, softmax's three, top-k), each a parallel region (docs/engine.md, "Per-row
 * sampling", has the time it saves; outputs unchanged). The sums run in another order than torch's, so a probability may differ in its last bits
 * and a draw landing within that of a boundary may pick the neighbouring token.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels.h"

#if defined(__AVX512F__)
#include <immintrin.h>

#include "exp16.h"
#endif

#define FLOOR 80.f
#define MOST 1024 /* largest `count` */

typedef struct {
    float value;
    int64_t token;
} candidate;

/* descending value, then ascending token */
static int before(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->value != y->value) return x->value > y->value ? -1 : 1;
    return (x->token > y->token) - (x->token < y->token);
}

/* Reorders c[0..n) so that its first k (0 < k < n) come first in `before` order (quickselect). */
static void first_k(candidate *c, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        candidate pivot = c[lo + (hi - lo) / 2], t;
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (before(&c[i], &pivot) < 0) i++;
            while (before(&pivot, &c[j]) < 0) j--;
            if (i <= j) {
                t = c[i], c[i] = c[j], c[j] = t;
                i++, j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else return;
    }
}

/* Keeps the `count` best of spare[0..held), returns the new bar: the worst of them. */
static float reduce(candidate *spare, int64_t held, int64_t count) {
    first_k(spare, held, count);
    candidate worst = spare[0];
    for (int64_t j = 1; j < count; j++)
        if (before(&spare[j], &worst) > 0) worst = spare[j];
    return worst.value;
}

/* The `count` largest finite logits of x, sorted, into best; returns how many (fewer when the row
 * has fewer finite values). Logits are compared unscaled: dividing by a positive temperature keeps
 * their order. */
static int64_t largest(const float *x, int64_t vocab, int64_t count, candidate *best, candidate *spare) {
    int64_t held = 0, room = 2 * count;
    float bar = -INFINITY; /* a logit must exceed it to be kept */
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= vocab; i += 16) {
        __mmask16 above = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), _mm512_set1_ps(bar), _CMP_GT_OQ);
        while (above) {
            int64_t j = i + __builtin_ctz(above);
            above &= above - 1;
            if (!(x[j] > bar)) continue; /* the bar rose within this block */
            spare[held].value = x[j];
            spare[held++].token = j;
            if (held == room) {
                bar = reduce(spare, held, count);
                held = count;
            }
        }
    }
#endif
    for (; i < vocab; i++) {
        if (!(x[i] > bar)) continue;
        spare[held].value = x[i];
        spare[held++].token = i;
        if (held == room) {
            bar = reduce(spare, held, count);
            held = count;
        }
    }
    qsort(spare, held, sizeof(candidate), before);
    if (held > count) held = count;
    for (int64_t j = 0; j < held; j++) best[j] = spare[j];
    return held;
}

/* exp(max(x * inverse - top, -FLOOR)), 0 for x = -inf */
static inline float weight(float x, float inverse, float top) {
    if (x == -INFINITY) return 0.f;
    float s = x * inverse - top;
    return expf(s > -FLOOR ? s : -FLOOR);
}


/* The sum of every token's weight; each weight also into kept[] where given. */
static double total_weight(const float *x, int64_t vocab, float inverse, float top, float *kept) {
    double total = 0.;
    int64_t i = 0;
#if defined(__AVX512F__)
    __m512 sum = _mm512_setzero_ps(), scale = _mm512_set1_ps(inverse), shift = _mm512_set1_ps(top);
    __m512 floor = _mm512_set1_ps(-FLOOR), minus_inf = _mm512_set1_ps(-INFINITY);
    for (; i + 16 <= vocab; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 s = _mm512_max_ps(_mm512_fmsub_ps(v, scale, shift), floor);
        __mmask16 finite = _mm512_cmp_ps_mask(v, minus_inf, _CMP_NEQ_OQ);
        __m512 w = _mm512_maskz_mov_ps(finite, exp16(s));
        if (kept) _mm512_storeu_ps(kept + i, w);
        sum = _mm512_add_ps(sum, w);
        if ((i & 4095) == 4080) { /* partial sums in double every 4,096 tokens */
            total += _mm512_reduce_add_ps(sum);
            sum = _mm512_setzero_ps();
        }
    }
    total += _mm512_reduce_add_ps(sum);
#endif
    for (; i < vocab; i++) {
        float w = weight(x[i], inverse, top);
        if (kept) kept[i] = w;
        total += w;
    }
    return total;
}

/* The first token (vocabulary order) whose running weight passes `target`, from the weights w[]:
 * whole blocks of 64 are summed and passed over, then the block that passes it is walked. */
static int64_t walk(const float *w, int64_t vocab, double target) {
    double running = 0.;
    int64_t i = 0;
    for (; i + 64 <= vocab; i += 64) {
        float block = 0.f;
        for (int j = 0; j < 64; j++) block += w[i + j];
        if (running + block > target) break;
        running += block;
    }
    for (; i < vocab; i++) {
        running += w[i];
        if (running > target && w[i] > 0.f) return i;
    }
    while (--i >= 0) /* rounding left the target unpassed: the last token of nonzero weight */
        if (w[i] > 0.f) return i;
    return -1;
}

int sample_rows(const float *logits, int64_t n, int64_t vocab, const float *temperature,
                const float *top_p, const float *draws, int64_t count, int64_t *out, int threads) {
    if (count > MOST) count = MOST;
    if (count > vocab) count = vocab;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        candidate *best = malloc(sizeof(candidate) * 3 * count);
        float *weights = malloc(sizeof(float) * vocab);
        if (best == NULL || weights == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t r = 0; r < n; r++) {
            if (best == NULL || weights == NULL) continue;
            const float *x = logits + r * vocab;
            float inverse = 1.f / temperature[r];
            out[r] = -1;
            if (top_p[r] >= 1.f) {
                float most = -INFINITY;
                for (int64_t i = 0; i < vocab; i++) most = x[i] > most ? x[i] : most;
                if (most == -INFINITY) continue;
                float top = most * inverse;
                double total = total_weight(x, vocab, inverse, top, weights);
                out[r] = walk(weights, vocab, draws[r] * total);
                continue;
            }
            int64_t held = largest(x, vocab, count, best, best + count);
            if (held == 0) continue;
            float top = best[0].value * inverse;
            double total = total_weight(x, vocab, inverse, top, NULL), mass = 0., kept = 0.;
            int64_t keep = 0;
            for (int64_t j = 0; j < held; j++) {
                double p = weight(best[j].value, inverse, top) / total;
                if (mass < top_p[r]) { /* the mass before it is short of top_p: kept */
                    kept += p;
                    keep = j + 1;
                }
                mass += p;
            }
            if (mass < top_p[r]) continue; /* the nucleus reaches past the candidates */
            double target = draws[r] * kept, running = 0.;
            out[r] = best[keep - 1].token;
            for (int64_t j = 0; j < keep; j++) {
                running += weight(best[j].value, inverse, top) / total;
                if (running >= target) {
                    out[r] = best[j].token;
                    break;
                }
            }
        }
        free(best);
        free(weights);
    }
    return failed;
}

/* out[r] = the index of row r's largest logit, the first of equal ones (torch.argmax's rule): one
 * read of each row, rows split between the threads (torch's argmax is slower at these shapes:
 * docs/engine.md). */
void argmax_rows(const float *logits, int64_t n, int64_t vocab, int64_t *out, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < n; r++) {
        const float *x = logits + r * vocab;
        float most = -INFINITY;
        int64_t at = 0, i = 0;
#if defined(__AVX512F__)
        if (vocab >= 16) {
            __m512 best = _mm512_loadu_ps(x);
            __m512i where = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            __m512i index = where, step = _mm512_set1_epi32(16);
            for (i = 16; i + 16 <= vocab && i < INT32_MAX - 16; i += 16) {
                index = _mm512_add_epi32(index, step);
                __m512 v = _mm512_loadu_ps(x + i);
                __mmask16 above = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ); /* strictly: the first stays */
                best = _mm512_mask_mov_ps(best, above, v);
                where = _mm512_mask_mov_epi32(where, above, index);
            }
            float lanes[16];
            int32_t places[16];
            _mm512_storeu_ps(lanes, best);
            _mm512_storeu_si512(places, where);
            most = lanes[0], at = places[0];
            for (int j = 1; j < 16; j++)
                if (lanes[j] > most || (lanes[j] == most && places[j] < at)) most = lanes[j], at = places[j];
        }
#endif
        for (; i < vocab; i++)
            if (x[i] > most) most = x[i], at = i;
        out[r] = at;
    }
}
