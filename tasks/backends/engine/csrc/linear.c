/* The model's fp32 projections, out = x @ w.T (+ bias), then one element-wise step, with AVX-512.
 *
 * The weight is packed once (linear_pack) into panels of 64 output columns, each panel [k][64]
 * contiguous (the last one zero-padded), so the inner loop streams one panel from start to end.
 * Each panel is multiplied by every row of x, six rows at a time: 6 x 64 outputs held in 24 vector
 * registers, one broadcast of x and four loads of the panel per 24 multiply-adds. A panel (147 KB
 * at k = 576), or a slice of one where k is long (slice()), stays in the core's L2 while all rows
 * pass over it, so each weight is read from memory once per call, and the next slice or panel is
 * prefetched while the current one is in use.
 *
 * Why not oneDNN: at the decode step's shapes its products waited on memory. Every step reads all
 * the layer weights (420 MB for the 135M model), none of them still cached from the step before,
 * and oneDNN ran those clearly slower than with one layer's weights reused; this kernel keeps the
 * memory busy (docs/engine.md has the figures). bench/generation.py measures both on square
 * products; INSTRUCTFORGE_MATMUL=onednn runs the engine on oneDNN, for a side-by-side run.
 *
 * Each output is one accumulator summed over k in order, then (op):
 *   0: nothing; 1: SiLU, v / (1 + exp(-v)); 2: v * other; 3: other + v  (other: [m, n])
 * so `times` and `plus` give bit-identical results to the product followed by the torch op.
 * Each thread works through a contiguous run of the panels and, done, takes the last ones of
 * another's (linear()); with few panels (n < 8 x 64 x threads) each panel's rows are split too.
 */
#include <stdint.h>
#include <stdlib.h>

#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define PANEL 64
#define ROWS 6

int64_t linear_packed_floats(int64_t n, int64_t k) { return (n + PANEL - 1) / PANEL * PANEL * k; }

/* w [n, k] (an nn.Linear weight) -> out [ceil(n / 64)][k][64], columns past n zero */
void linear_pack(const float *w, float *out, int64_t n, int64_t k) {
    for (int64_t p = 0; p < (n + PANEL - 1) / PANEL; p++)
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < PANEL; j++) {
                int64_t col = p * PANEL + j;
                out[(p * k + i) * PANEL + j] = col < n ? w[col * k + i] : 0.f;
            }
}

#if defined(__AVX512F__)
#include <immintrin.h>

int linear_available(void) { return 1; }

#include "exp16.h"

/* How many of k's inputs one pass over a panel takes. A panel whose k inputs make more than
 * SLICE_BYTES (k > 1024 here) is used in slices of k: every row passes over one slice, then the
 * next, so the slice stays in the core's L2 while all rows use it; a whole panel (2 MB at k = 8192,
 * the MLP's down projection of a 1B model) would not, and each block of six rows would read it from
 * memory again. The rows' running sums wait between slices in `partial_sums`, exactly (no rounding:
 * the sum over k is still one accumulator in order, so results do not change). */
#define SLICE_BYTES (256 * 1024)
static int64_t slice(int64_t k) {
    int64_t most = SLICE_BYTES / (PANEL * (int64_t)sizeof(float));
    if (k <= most) return k;
    int64_t slices = (k + most - 1) / most;
    return ((k + slices - 1) / slices + 15) / 16 * 16;
}

/* A thread's kept buffer `*buffer` of `*held` x 64 floats, grown to `count` x 64 where smaller,
 * never shrunk (a fresh buffer per call would be fresh pages, each a page fault); NULL if there is
 * no memory for it. */
static float *kept(float **buffer, int64_t *held, int64_t count) {
    if (count > *held) {
        float *grown = aligned_alloc(64, (size_t)count * PANEL * sizeof(float));
        if (!grown) return 0;
        free(*buffer);
        *buffer = grown, *held = count;
    }
    return *buffer;
}

/* This thread's buffer for `rows` rows' running sums of one panel (rows x 64). */
static float *partial_sums(int64_t rows) {
    static _Thread_local float *buffer = 0;
    static _Thread_local int64_t held = 0;
    return kept(&buffer, &held, rows);
}

/* The 16 outputs v of row `row`, columns col..col+15 (`mask`: those below n), finished and stored. */
static inline void finish(__m512 v, float *out, const float *bias, const float *other, int64_t row,
                          int64_t col, int64_t n, __mmask16 mask, int op) {
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias + col));
    if (op == 1) {
        __m512 e = exp16(_mm512_min_ps(_mm512_sub_ps(_mm512_setzero_ps(), v), _mm512_set1_ps(88.7f)));
        v = _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.f), e));
    } else if (op == 2) {
        v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mask, other + row * n + col));
    } else if (op == 3) {
        v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, other + row * n + col), v);
    }
    _mm512_mask_storeu_ps(out + row * n + col, mask, v);
}

/* Rows x[0..rows) (rows <= 6) times one panel. The block's output lines (and `other`'s) are
 * prefetched first, so its last step does not wait on them: prefill's products with a residual or
 * a gate to read (their [1000, 1536] operands are not in L2) ran faster for it. Each k-step also
 * prefetches one line of `ahead` (this block's share of the next panel), when given: a decode
 * step's products ran faster with those than without, and at few rows faster with one every step
 * than every other step. (Prefetches never fault: past the end is harmless.) */
static inline __attribute__((always_inline)) void block(int rows, const float *x, int64_t stride,
                                                        const float *panel, int64_t k, float *out,
                                                        const float *bias, const float *other, int64_t row,
                                                        int64_t col, int64_t n, int op, const float *ahead,
                                                        float *partial, int first, int last) {
    __m512 acc[ROWS][4];
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < 4; j++)
            acc[r][j] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(partial + (row + r) * PANEL + 16 * j);
        if (!last) continue;
        for (int j = 0; j < 4; j++) { /* the block's outputs (and `other`), read while k runs */
            if (other) _mm_prefetch((const char *)(other + (row + r) * n + col + 16 * j), _MM_HINT_T0);
            _mm_prefetch((const char *)(out + (row + r) * n + col + 16 * j), _MM_HINT_T0);
        }
    }
    for (int64_t i = 0; i < k; i++) {
        const float *w = panel + i * PANEL;
        __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16);
        __m512 w2 = _mm512_loadu_ps(w + 32), w3 = _mm512_loadu_ps(w + 48);
        if (ahead) _mm_prefetch((const char *)(ahead + i * 16), _MM_HINT_T1);
        for (int r = 0; r < rows; r++) {
            __m512 a = _mm512_set1_ps(x[r * stride + i]);
            acc[r][0] = _mm512_fmadd_ps(a, w0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, w1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(a, w2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(a, w3, acc[r][3]);
        }
    }
    if (!last) { /* the sums so far, exactly: the next slice of k goes on from them */
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < 4; j++) _mm512_storeu_ps(partial + (row + r) * PANEL + 16 * j, acc[r][j]);
        return;
    }
    for (int j = 0; j < 4; j++) {
        int64_t c = col + 16 * j, left = n - c;
        if (left <= 0) break;
        __mmask16 mask = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
        for (int r = 0; r < rows; r++) finish(acc[r][j], out, bias, other, row + r, c, n, mask, op);
    }
}

/* This thread's buffer for one slice of a bf16 panel widened to fp32 (`k` inputs x 64). */
static float *widened_slice(int64_t k) {
    static _Thread_local float *buffer = 0;
    static _Thread_local int64_t held = 0;
    return kept(&buffer, &held, k);
}

/* `count` bf16 values as fp32 (exact: a bf16 value is the high half of the fp32 one); count % 16 == 0 */
static const float *widen(const uint16_t *in, float *out, int64_t count) {
    for (int64_t e = 0; e < count; e += 16) {
        __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(in + e)));
        _mm512_store_ps(out + e, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
    }
    return out;
}

/* Rows [first, last) of x times panel p, one slice of k at a time (slice()); `next` (or NULL) is
 * the panel to prefetch meanwhile, `lines` cache lines long. Within a panel, each slice's share of
 * the panel is prefetched while the slice before it is in use; during the last slice, `next`.
 * Panels of `bf16` values are widened a slice at a time into this thread's buffer, once for all
 * the rows (the multiply-adds are then the fp32 panels' own: the same results). 1: out of memory. */
static int panel_rows(const float *x, const void *packed, float *out, const float *bias, const float *other,
                      int64_t first, int64_t last, int64_t k, int64_t n, int64_t p, const void *next,
                      int64_t lines, int op, int bf16) {
    int64_t size = bf16 ? 2 : 4; /* bytes a value */
    const char *panel = (const char *)packed + p * k * PANEL * size;
    int64_t step = slice(k);
    float *partial = step < k ? partial_sums(last) : 0;
    if (step < k && !partial) step = k; /* no memory for the partial sums: the panel whole */
    float *wide = bf16 ? widened_slice(step) : 0;
    if (bf16 && !wide) return 1;
    for (int64_t start = 0; start < k; start += step) {
        int64_t len = k - start < step ? k - start : step;
        int is_last = start + len >= k;
        /* prefetched meanwhile, a 64-byte line a k-step of each block (`ahead`) */
        const char *to = is_last ? (const char *)next : panel + (start + len) * PANEL * size;
        int64_t to_lines = is_last ? lines : (k - start - len < step ? k - start - len : step) * PANEL * size / 64;
        const char *at = panel + start * PANEL * size;
        const float *pw = bf16 ? widen((const uint16_t *)at, wide, len * PANEL) : (const float *)at;
        for (int64_t row = first, b = 0; row < last; row += ROWS, b++) {
            const float *ahead = to && b * len < to_lines ? (const float *)(to + b * len * 64) : 0;
            const float *xr = x + row * k + start;
            int64_t col = p * PANEL;
            int f = start == 0;
            switch (last - row < ROWS ? last - row : ROWS) {
            case 6: block(6, xr, k, pw, len, out, bias, other, row, col, n, op, ahead, partial, f, is_last); break;
            case 5: block(5, xr, k, pw, len, out, bias, other, row, col, n, op, ahead, partial, f, is_last); break;
            case 4: block(4, xr, k, pw, len, out, bias, other, row, col, n, op, ahead, partial, f, is_last); break;
            case 3: block(3, xr, k, pw, len, out, bias, other, row, col, n, op, ahead, partial, f, is_last); break;
            case 2: block(2, xr, k, pw, len, out, bias, other, row, col, n, op, ahead, partial, f, is_last); break;
            default: block(1, xr, k, pw, len, out, bias, other, row, col, n, op, ahead, partial, f, is_last); break;
            }
        }
    }
    return 0;
}

/* The (panel, row range) tasks of a product with `panels` panels on `threads` threads: a panel's
 * rows are split too when there are few panels, so neither thread waits on the other's extra one. */
static int64_t parts_of(int64_t panels, int threads) { return panels >= 8 * threads ? 1 : threads; }

/* A range of tasks [lo, hi) in one 64-bit word (lo in the low half), so that its owner taking from
 * the front and another thread taking from the back change it with one compare-and-swap. Each range
 * on a cache line of its own. */
typedef struct {
    _Alignas(64) uint64_t range;
} tasks_range;

#define RANGE(lo, hi) ((uint64_t)(lo) | (uint64_t)(hi) << 32)
#define MOST_THREADS 256

/* Takes the first (front) or last task of *r; -1 if it is empty. */
static int64_t take(tasks_range *r, int front) {
    uint64_t seen = __atomic_load_n(&r->range, __ATOMIC_RELAXED);
    for (;;) {
        uint32_t lo = (uint32_t)seen, hi = (uint32_t)(seen >> 32);
        if (lo >= hi) return -1;
        uint64_t left = front ? RANGE(lo + 1, hi) : RANGE(lo, hi - 1);
        if (__atomic_compare_exchange_n(&r->range, &seen, left, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return front ? lo : hi - 1;
    }
}

/* `bf16`: the panels (`packed`'s and `then`'s) hold bfloat16 values (linear_pack's panels rounded
 * to bf16, exact where the weight's values are bf16 ones, as in checkpoints published in bf16): half
 * the bytes a step reads from memory, and the same results as the fp32 panels of those values.
 *
 * `then` (or NULL): the packed weight of the product that comes next, [then_k] inputs to [then_n]
 * outputs; each thread prefetches the first panel it will take there during its last one here.
 * Without it, every product began with each thread waiting on its first panel from memory (most
 * felt at few rows, where a product is short).
 *
 * Each thread owns a contiguous run of the (panel, row range) tasks, panel-major, and works through
 * it from the front (the next panel lies next in memory, where the hardware's prefetch already
 * went); a thread done with its own run takes the last tasks of another's, from the back. Split in
 * fixed runs alone, a thread whose core was slower for a while (the other's memory traffic, another
 * process, a virtual CPU the host held back) left the other waiting at the end of every product;
 * handed out one at a time in order, the threads' panels interleaved and each core's prefetch
 * fetched its neighbour's panels too (slower at few rows, where products wait on memory). */
int linear(const float *x, const void *packed, const float *bias, const float *other, float *out,
           int64_t m, int64_t k, int64_t n, int op, int threads, const void *then, int64_t then_n,
           int64_t then_k, int bf16) {
    int64_t size = bf16 ? 2 : 4; /* bytes a value */
    int failed = 0;
    int64_t panels = (n + PANEL - 1) / PANEL;
    int64_t parts = parts_of(panels, threads); /* row ranges per panel */
    int64_t tasks = panels * parts;
    int64_t then_panels = (then_n + PANEL - 1) / PANEL, then_parts = parts_of(then_panels, threads);
    tasks_range runs[MOST_THREADS];
    if (m <= 0) return 0;
    if (threads > MOST_THREADS) threads = MOST_THREADS;
    if (threads < 1) threads = 1;
    /* each thread's own run (should OpenMP start fewer threads, the others take the runs left) */
    for (int t = 0; t < threads; t++) runs[t].range = RANGE(tasks * t / threads, tasks * (t + 1) / threads);
#pragma omp parallel num_threads(threads)
    {
        int64_t t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        int64_t from = t, task = take(&runs[t], 1);
        while (task >= 0) {
            int64_t p = task / parts, part = task % parts;
            /* row ranges on multiples of ROWS, so only the last one has a partial block */
            int64_t first = m * part / parts / ROWS * ROWS;
            int64_t last = part + 1 == parts ? m : m * (part + 1) / parts / ROWS * ROWS;
            /* the task likely next: the next one of the run this one came from, in the direction
             * taken there (it may yet be taken by another thread: then the prefetch was wasted) */
            uint64_t seen = __atomic_load_n(&runs[from].range, __ATOMIC_RELAXED);
            uint32_t lo = (uint32_t)seen, hi = (uint32_t)(seen >> 32);
            int64_t likely = lo < hi ? (int64_t)(from == t ? lo : hi - 1) : -1;
            const char *next = 0;
            int64_t lines = k * PANEL * size / 64;
            if (likely >= 0) {
                if (likely / parts != p) next = (const char *)packed + likely / parts * k * PANEL * size;
            } else if (then) { /* the first panel of this thread's own run in the next product */
                int64_t at = then_panels * then_parts * t / threads / then_parts * then_k * PANEL;
                next = (const char *)then + at * size;
                lines = then_k * PANEL * size / 64;
            }
            if (panel_rows(x, packed, out, bias, other, first, last, k, n, p, next, lines, op, bf16)) {
#pragma omp atomic write
                failed = 1;
            }
            task = take(&runs[from], from == t);
            for (int64_t other_run = 1; task < 0 && other_run < threads; other_run++) {
                from = (t + other_run) % threads;
                task = take(&runs[from], 0);
            }
        }
    }
    return failed;
}
#else
int linear_available(void) { return 0; }

int linear(const float *x, const void *packed, const float *bias, const float *other, float *out,
           int64_t m, int64_t k, int64_t n, int op, int threads, const void *then, int64_t then_n,
           int64_t then_k, int bf16) {
    (void)x, (void)packed, (void)bias, (void)other, (void)out, (void)m, (void)k, (void)n, (void)op, (void)threads;
    (void)then, (void)then_n, (void)then_k, (void)bf16;
    return -1;
}
#endif
