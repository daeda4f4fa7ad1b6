/* Native episode kernel of envs.regression.NonStationaryRegression (see envs/native/__init__.py).
 *
 * ek_build_episodes: for every copy b of a batch, one pass that turns the copy's random words into
 *   - inputs x (Box-Muller, exactly the formula of envs.regression.gaussians), written straight into the
 *     copy's contiguous (L, d) block of the copy-major (B, L, d) array (the caller views it time-major),
 *   - the targets of the built-in task families (sin_mean, half_cos_mean, tanh_shift(k)) per (t, b) row
 *     according to the task sequence (rows of other tasks are left to the caller),
 *   - the feedback noise (target feedback: y + sigma n, or sigma n on the caller's rows; reward feedback:
 *     sigma n, (B, L)).
 * ek_pcg64_words / ek_pcg64_inplace: every copy's PCG64 words (numpy's random_raw, exactly), from packed
 *   states or in place in numpy's own generator memory; ek_draw_words: any bit generator via bitgen_t.
 * ek_task_sequences: the task of every step and the switch flags (envs.schedules.task_sequences, exactly).
 * ek_step: the fused per-step scoring (clip, squared error, reward) and observation assembly, written
 * into the caller's observation and reward arrays (fresh ones every step: envs/native/__init__.py).
 *
 * Built with -O3 -march=native -ffp-contract=off (no fused multiply-add, no re-association), so every
 * element is the same IEEE float32 expression in vector and scalar code, whatever the batch size and
 * whatever the CPU: a copy's episode does not depend on the other copies of its batch.
 *
 * The transcendental functions are small float32 polynomials (Cephes-style, ~1-2 ulp) that the compiler
 * vectorises; the per-row sin/cos of the mean use libm in double precision (one call per row).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memagent_fastmath.h" /* memagent_expf (memagent/include, via memagent.cbuild) */

#define TASK_SIN_MEAN 0
#define TASK_HALF_COS_MEAN 1
#define TASK_TANH_SHIFT 2 /* param: the shift k */
/* any other kind (-1): a user task, computed by the caller */

#define FEEDBACK_NONE 0
#define FEEDBACK_TARGET 1
#define FEEDBACK_REWARD 2

/* ln x for x > 0 normal (Cephes logf: x = m 2^e, m in [sqrt(1/2), sqrt(2)), degree-9 polynomial) */
static inline float log_f(float x) {
    union {
        float f;
        int32_t i;
    } u = {x};
    int32_t e = ((u.i >> 23) & 0xff) - 126; /* x = m 2^e, m in [0.5, 1) */
    u.i = (u.i & 0x007fffff) | 0x3f000000;
    float m = u.f;
    const int32_t low = m < 0.707106781186547524f;
    e -= low;
    m = low ? m + m - 1.0f : m - 1.0f;
    const float z = m * m;
    float y = 7.0376836292E-2f;
    y = y * m - 1.1514610310E-1f;
    y = y * m + 1.1676998740E-1f;
    y = y * m - 1.2420140846E-1f;
    y = y * m + 1.4249322787E-1f;
    y = y * m - 1.6668057665E-1f;
    y = y * m + 2.0000714765E-1f;
    y = y * m - 2.4999993993E-1f;
    y = y * m + 3.3333331174E-1f;
    y = y * m * z;
    const float fe = (float)e;
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    float r = m + y;
    r += 0.693359375f * fe;
    return r;
}

/* cos(2 pi v) and sin(2 pi v) for v in [0, 1]: exact reduction to a = 2 pi (v - q/4), |a| <= pi/4 */
static inline void cos_sin_turn(float v, float *c_out, float *s_out) {
    const int32_t q = (int32_t)(4.0f * v + 0.5f);
    const float a = (v - 0.25f * (float)q) * 6.28318530717958648f;
    const float z = a * a;
    float s = -1.9515295891E-4f;
    s = s * z + 8.3321608736E-3f;
    s = s * z - 1.6666654611E-1f;
    s = s * z * a + a;
    float c = 2.443315711809948E-5f;
    c = c * z - 1.388731625493765E-3f;
    c = c * z + 4.166664568298827E-2f;
    c = c * z * z - 0.5f * z + 1.0f;
    const int32_t odd = q & 1;
    const float cc = odd ? s : c, ss = odd ? c : s;
    *c_out = ((q + 1) & 2) ? -cc : cc; /* quadrants 1, 2 */
    *s_out = (q & 2) ? -ss : ss;       /* quadrants 2, 3 */
}

/* tanh x (Cephes tanhf: odd polynomial below 0.625, 1 - 2 / (e^{2|x|} + 1) above) */
static inline float tanh_f(float x) {
    const float ax = x < 0 ? -x : x;
    const float z = x * x;
    float p = -5.70498872745E-3f;
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    const float small = p * z * x + x;
    float big = 1.0f - 2.0f / (memagent_expf(ax + ax) + 1.0f);
    big = x < 0 ? -big : big;
    return ax < 0.625f ? small : big;
}

/* Box-Muller of one word: z = sqrt(-2 ln u1) cos(2 pi u2), z2 = sqrt(-2 ln u1) sin(2 pi u2) from the
 * halves h1 -> u1 = (float(h1) + 0.5) 2^-32 and h2 -> u2 = float(h2) 2^-32 (float32, as numpy computes them) */
static inline void box_muller(uint32_t h1, uint32_t h2, float *z, float *z2) {
    const float scale = 2.3283064365386963e-10f; /* 2^-32 */
    float u1 = (float)h1 + 0.5f;
    u1 *= scale;
    float r = log_f(u1);
    r *= -2.0f;
    r = sqrtf(r);
    float c, s;
    cos_sin_turn((float)h2 * scale, &c, &s);
    *z = r * c;
    *z2 = r * s;
}

/* box_muller on GAUSS_BLOCK consecutive words, stage by stage (each stage one short loop over the block):
 * exactly the same float32 operations per element, but the long dependency chains of log_f's polynomial
 * are evaluated for four vectors side by side (~15% faster than one element's chain after another). */
#define GAUSS_BLOCK 64
static inline void box_muller_block(const uint32_t *restrict h1, const uint32_t *restrict h2, float *restrict z,
                                    float *restrict z2) {
    const float scale = 2.3283064365386963e-10f; /* 2^-32 */
    float m[GAUSS_BLOCK], fe[GAUSS_BLOCK], y[GAUSS_BLOCK];
    for (int j = 0; j < GAUSS_BLOCK; ++j) { /* log_f's argument reduction of u1 */
        float u1 = (float)h1[j] + 0.5f;
        u1 *= scale;
        union {
            float f;
            int32_t i;
        } u = {u1};
        int32_t e = ((u.i >> 23) & 0xff) - 126;
        u.i = (u.i & 0x007fffff) | 0x3f000000;
        const float mm = u.f;
        const int32_t low = mm < 0.707106781186547524f;
        e -= low;
        m[j] = low ? mm + mm - 1.0f : mm - 1.0f;
        fe[j] = (float)e;
    }
    for (int j = 0; j < GAUSS_BLOCK; ++j) {
        float t = 7.0376836292E-2f;
        y[j] = t * m[j] - 1.1514610310E-1f;
    }
    for (int j = 0; j < GAUSS_BLOCK; ++j) y[j] = y[j] * m[j] + 1.1676998740E-1f;
    for (int j = 0; j < GAUSS_BLOCK; ++j) y[j] = y[j] * m[j] - 1.2420140846E-1f;
    for (int j = 0; j < GAUSS_BLOCK; ++j) y[j] = y[j] * m[j] + 1.4249322787E-1f;
    for (int j = 0; j < GAUSS_BLOCK; ++j) y[j] = y[j] * m[j] - 1.6668057665E-1f;
    for (int j = 0; j < GAUSS_BLOCK; ++j) y[j] = y[j] * m[j] + 2.0000714765E-1f;
    for (int j = 0; j < GAUSS_BLOCK; ++j) y[j] = y[j] * m[j] - 2.4999993993E-1f;
    for (int j = 0; j < GAUSS_BLOCK; ++j) y[j] = y[j] * m[j] + 3.3333331174E-1f;
    for (int j = 0; j < GAUSS_BLOCK; ++j) { /* the end of log_f, then sqrt(-2 ln u1) */
        const float mm = m[j], zz = mm * mm;
        float t = y[j] * mm * zz;
        t += -2.12194440e-4f * fe[j];
        t += -0.5f * zz;
        float r = mm + t;
        r += 0.693359375f * fe[j];
        r *= -2.0f;
        y[j] = sqrtf(r);
    }
    for (int j = 0; j < GAUSS_BLOCK; ++j) {
        float c, s;
        cos_sin_turn((float)h2[j] * scale, &c, &s);
        z[j] = y[j] * c;
        z2[j] = y[j] * s;
    }
}

/* Box-Muller of one copy: 32-bit halves h of n_words words; for i < W = n_words
 *   z[i], z[W + i] = box_muller(h[i], h[W + i]) (cosines first, then sines). */
static void gaussians_row(const uint32_t *restrict h, int64_t n_words, float *restrict z) {
    const uint32_t *restrict h2 = h + n_words;
    float *restrict z2 = z + n_words;
    int64_t i = 0;
    for (; i + GAUSS_BLOCK <= n_words; i += GAUSS_BLOCK) box_muller_block(h + i, h2 + i, z + i, z2 + i);
    for (; i < n_words; ++i) box_muller(h[i], h2[i], z + i, z2 + i);
}

/* mean of a row in double precision, eight fixed accumulation chains (the same order for every row) */
static double row_mean(const float *restrict x, int d) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int j = 0;
    for (; j + 8 <= d; j += 8)
        for (int k = 0; k < 8; ++k) acc[k] += (double)x[j + k];
    for (int k = 0; j < d; ++j, ++k) acc[k] += (double)x[j];
    const double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    return s / d;
}

/* y = tanh(0.5 x + k) on n contiguous elements, TANH_BLOCK at a time stage by stage (exactly tanh_f per
 * element; the exp and the division of four vectors overlap: ~12% faster than element after element) */
#define TANH_BLOCK 64
static void tanh_shift_run(float param, const float *restrict x, float *restrict y, int64_t n) {
    int64_t i = 0;
    for (; i + TANH_BLOCK <= n; i += TANH_BLOCK) {
        float a[TANH_BLOCK], ax[TANH_BLOCK], e[TANH_BLOCK], small[TANH_BLOCK];
        for (int j = 0; j < TANH_BLOCK; ++j) {
            float v = 0.5f * x[i + j];
            v += param;
            a[j] = v;
            ax[j] = v < 0 ? -v : v;
        }
        for (int j = 0; j < TANH_BLOCK; ++j) e[j] = memagent_expf(ax[j] + ax[j]);
        for (int j = 0; j < TANH_BLOCK; ++j) {
            const float v = a[j], z = v * v;
            float p = -5.70498872745E-3f;
            p = p * z + 2.06390887954E-2f;
            p = p * z - 5.37397155531E-2f;
            p = p * z + 1.33314422036E-1f;
            p = p * z - 3.33332819422E-1f;
            small[j] = p * z * v + v;
        }
        for (int j = 0; j < TANH_BLOCK; ++j) {
            float big = 1.0f - 2.0f / (e[j] + 1.0f);
            big = a[j] < 0 ? -big : big;
            y[i + j] = ax[j] < 0.625f ? small[j] : big;
        }
    }
    for (; i < n; ++i) {
        float v = 0.5f * x[i];
        v += param;
        y[i] = tanh_f(v);
    }
}

/* targets of `rows` consecutive rows of one task (contiguous (rows, d) blocks of x and y); returns 0 for a
 * user task (rows untouched) */
static int target_rows(int kind, float param, const float *restrict x, float *restrict y, int rows, int d) {
    if (kind == TASK_SIN_MEAN || kind == TASK_HALF_COS_MEAN) {
        for (int64_t r = 0; r < rows; ++r) {
            const double m = row_mean(x + r * d, d);
            const float v = kind == TASK_SIN_MEAN ? (float)sin(m) : (float)(0.5 * cos(m));
            for (int j = 0; j < d; ++j) y[r * d + j] = v;
        }
        return 1;
    }
    if (kind == TASK_TANH_SHIFT) {
        tanh_shift_run(param, x, y, (int64_t)rows * d);
        return 1;
    }
    return 0;
}

/* Standard normal float32 samples: out (B, count) from words (B, n_words) (row stride in words),
 * count <= 2 n_words. The same values as envs.regression.gaussians up to the last bits. */
int ek_gaussians(int B, const uint64_t *words, int64_t stride, int64_t n_words, float *out, int64_t count) {
    float *z = malloc(sizeof(float) * 2 * (size_t)(n_words > 0 ? n_words : 1));
    if (!z) return -1;
    for (int b = 0; b < B; ++b) {
        gaussians_row((const uint32_t *)(words + b * stride), n_words, z);
        memcpy(out + b * count, z, sizeof(float) * (size_t)count);
    }
    free(z);
    return 0;
}

/* numpy's public bit generator interface (numpy/random/bitgen.h) */
typedef struct {
    void *state;
    uint64_t (*next_uint64)(void *st);
    uint32_t (*next_uint32)(void *st);
    double (*next_double)(void *st);
    uint64_t (*next_raw)(void *st);
} bitgen_t;

/* words[b, :n] = n raw words of copy b's bit generator, exactly what BitGenerator.random_raw(n) returns
 * (the same next_raw calls in the same order); rows are stride words apart. The caller holds the
 * generators' locks. */
void ek_draw_words(int B, bitgen_t *const *bitgens, int64_t n, uint64_t *words, int64_t stride) {
    for (int b = 0; b < B; ++b) {
        bitgen_t *g = bitgens[b];
        uint64_t (*next)(void *) = g->next_raw;
        void *state = g->state;
        uint64_t *w = words + b * stride;
        for (int64_t i = 0; i < n; ++i) w[i] = next(state);
    }
}

/* PCG64 (numpy.random.PCG64: 128-bit LCG, XSL-RR output) advanced inline, ~4x faster than a call per
 * word. state (B, 4) uint64: (state high, state low, increment high, increment low) of each copy, as
 * numpy's BitGenerator.state reports them; the states are advanced in place. words[b, :n] = the n words
 * random_raw(n) would return. Returns -1 where the compiler has no 128-bit integers (nothing written). */
#ifdef __SIZEOF_INT128__
static inline uint64_t pcg64_output(__uint128_t st) {
    const uint64_t x = (uint64_t)(st >> 64) ^ (uint64_t)st;
    const unsigned rot = (unsigned)(st >> 122);
    return (x >> rot) | (x << ((-rot) & 63));
}
#endif

#ifdef __AVX512F__
#include <immintrin.h>
typedef uint64_t u64x8 __attribute__((vector_size(64)));

/* pcg64_output(state * mult + inc) for 8 generators in the 64-bit lanes of AVX-512 vectors (rows
 * state[4k .. 4k + 3], k < 8, as ek_pcg64_words): the 64 x 64 -> 128-bit product's high half from four
 * 32 x 32 -> 64-bit products; words are gathered PCG_CHUNK at a time and written row by row. ~25% faster
 * than the scalar loop (which is bound by its three 64-bit multiplies a word); the same integers. */
#define PCG_CHUNK 32
static void pcg64_words_x8(uint64_t *state, int64_t n, uint64_t *words, int64_t stride) {
    const uint64_t mult_high = 2549297995355413924ULL, mult_low = 4865540595714422341ULL;
    const u64x8 low32 = (u64x8){0} + 0xffffffffULL;
    const u64x8 m0 = (u64x8){0} + (mult_low & 0xffffffffULL), m1 = (u64x8){0} + (mult_low >> 32);
    u64x8 hi, lo, inc_hi, inc_lo, out[PCG_CHUNK];
    for (int k = 0; k < 8; ++k) {
        hi[k] = state[4 * k], lo[k] = state[4 * k + 1], inc_hi[k] = state[4 * k + 2], inc_lo[k] = state[4 * k + 3];
    }
#define MUL32(a, b) ((u64x8)_mm512_mul_epu32((__m512i)(a), (__m512i)(b))) /* low halves, full product */
    for (int64_t i0 = 0; i0 < n; i0 += PCG_CHUNK) {
        const int m = n - i0 < PCG_CHUNK ? (int)(n - i0) : PCG_CHUNK;
        for (int i = 0; i < m; ++i) {
            const u64x8 lo1 = lo >> 32;
            const u64x8 p00 = MUL32(lo, m0), p10 = MUL32(lo1, m0), p01 = MUL32(lo, m1), p11 = MUL32(lo1, m1);
            const u64x8 t = p10 + (p00 >> 32), u = (t & low32) + p01;
            const u64x8 product_high = p11 + (t >> 32) + (u >> 32); /* of lo * mult_low */
            const u64x8 new_lo = ((u << 32) | (p00 & low32)) + inc_lo;
            const u64x8 carry = (u64x8)(new_lo < inc_lo) & 1;
            hi = hi * mult_low + lo * mult_high + product_high + inc_hi + carry;
            lo = new_lo;
            out[i] = (u64x8)_mm512_rorv_epi64((__m512i)(hi ^ lo), (__m512i)(hi >> 58));
        }
        for (int k = 0; k < 8; ++k) {
            uint64_t *w = words + k * stride + i0;
            for (int i = 0; i < m; ++i) w[i] = out[i][k];
        }
    }
#undef MUL32
    for (int k = 0; k < 8; ++k) state[4 * k] = hi[k], state[4 * k + 1] = lo[k];
}
#endif

int ek_pcg64_words(int B, uint64_t *state, int64_t n, uint64_t *words, int64_t stride) {
#ifdef __SIZEOF_INT128__
    const __uint128_t mult = ((__uint128_t)2549297995355413924ULL << 64) | 4865540595714422341ULL;
    enum { G = 4 }; /* copies advanced together: independent multiply chains overlap in the CPU */
    int first = 0;
#ifdef __AVX512F__
    for (; first + 8 <= B; first += 8) pcg64_words_x8(state + 4 * (int64_t)first, n, words + first * stride, stride);
#endif
    for (int b0 = first; b0 < B; b0 += G) {
        const int g = B - b0 < G ? B - b0 : G;
        __uint128_t st[G], inc[G];
        uint64_t *w[G];
        for (int k = 0; k < G; ++k) {
            const uint64_t *s = state + 4 * (int64_t)(b0 + (k < g ? k : 0));
            st[k] = ((__uint128_t)s[0] << 64) | s[1];
            inc[k] = ((__uint128_t)s[2] << 64) | s[3];
            w[k] = words + (b0 + (k < g ? k : 0)) * stride;
        }
        if (g == G) {
            for (int64_t i = 0; i < n; ++i)
                for (int k = 0; k < G; ++k) {
                    st[k] = st[k] * mult + inc[k];
                    w[k][i] = pcg64_output(st[k]);
                }
        } else {
            for (int k = 0; k < g; ++k)
                for (int64_t i = 0; i < n; ++i) {
                    st[k] = st[k] * mult + inc[k];
                    w[k][i] = pcg64_output(st[k]);
                }
        }
        for (int k = 0; k < g; ++k) {
            uint64_t *s = state + 4 * (int64_t)(b0 + k);
            s[0] = (uint64_t)(st[k] >> 64);
            s[1] = (uint64_t)st[k];
        }
    }
    return 0;
#else
    (void)B, (void)state, (void)n, (void)words, (void)stride;
    return -1;
#endif
}

/* ek_pcg64_words on the generators' own states, in place: pcg[b] is the address of copy b's numpy
 * pcg64_state (BitGenerator.ctypes.state_address), whose first member points to the generator's
 * {state, increment} pair of 128-bit integers; high_first says how numpy stores them (0: __uint128_t,
 * low word first on little-endian machines; 1: numpy's emulated {high, low} struct; the caller checks
 * which against BitGenerator.state once per process). No Python state dictionaries per episode. Returns
 * -1 where the compiler has no 128-bit integers or out of memory (nothing written). */
int ek_pcg64_inplace(int B, void *const *pcg, int high_first, int64_t n, uint64_t *words, int64_t stride) {
    uint64_t *packed = malloc(sizeof(uint64_t) * 4 * (size_t)(B > 0 ? B : 1));
    if (!packed) return -1;
    const int lo = high_first ? 1 : 0, hi = 1 - lo;
    for (int b = 0; b < B; ++b) {
        const uint64_t *g = *(uint64_t *const *)pcg[b];
        uint64_t *s = packed + 4 * (int64_t)b;
        s[0] = g[hi], s[1] = g[lo], s[2] = g[2 + hi], s[3] = g[2 + lo];
    }
    const int status = ek_pcg64_words(B, packed, n, words, stride);
    if (status == 0)
        for (int b = 0; b < B; ++b) {
            uint64_t *g = *(uint64_t *const *)pcg[b];
            g[hi] = packed[4 * (int64_t)b], g[lo] = packed[4 * (int64_t)b + 1];
        }
    free(packed);
    return status;
}

#define SCHEDULE_NONE 0
#define SCHEDULE_PERIOD 1
#define SCHEDULE_HAZARD 2

/* The task sequences of envs.schedules.task_sequences for the "none", "period" and "hazard" schedules,
 * exactly (the same float64 uniforms u = (w >> 11) 2^-53 and the same floors): copy b's uniforms are
 * the words words[b * stride + i], i < 1 (none) or 1 + L (period) or 1 + 2L (hazard); its pool is
 * pools[b * pool_stride + :sizes[b]]. The initial position is floor(u_0 P); at a switch step t (t a
 * multiple of period, or u_{L + 1 + t} < hazard, t >= 1) the position moves on by 1 + floor(u_{1 + t} (P - 1))
 * modulo P (none where P = 1). Writes tasks (B, L), its transpose tasks_t (L, B) and switched (L, B)
 * (tasks_t[t] != tasks_t[t - 1], 0 at t = 0). */
void ek_task_sequences(int B, int L, int kind, int period, double hazard, const uint64_t *words, int64_t stride,
                       const int64_t *pools, int64_t pool_stride, const int64_t *sizes, int64_t *tasks,
                       int64_t *tasks_t, uint8_t *switched) {
    const double scale = 1.0 / 9007199254740992.0; /* 2^-53 */
    for (int b = 0; b < B; ++b) {
        const uint64_t *w = words + b * stride;
        const int64_t *pool = pools + b * pool_stride;
        const int64_t size = sizes[b];
        int64_t *seq = tasks + (int64_t)b * L;
        int64_t pos = (int64_t)floor((double)(w[0] >> 11) * scale * (double)size);
        if (kind == SCHEDULE_NONE) {
            for (int t = 0; t < L; ++t) seq[t] = pool[pos];
            continue;
        }
        pos %= size; /* floor(u P) < P already for u < 1 */
        seq[0] = pool[pos];
        for (int t = 1, next = period; t < L; ++t) {
            int move;
            if (kind == SCHEDULE_PERIOD) {
                move = t == next;
                next += move ? period : 0;
            } else {
                move = (double)(w[L + 1 + t] >> 11) * scale < hazard;
            }
            if (move && size > 1) {
                pos += 1 + (int64_t)floor((double)(w[1 + t] >> 11) * scale * (double)(size - 1));
                pos = pos >= size ? pos - size : pos; /* pos + 1 + floor(u (P - 1)) < 2P */
            }
            seq[t] = pool[pos];
        }
    }
    for (int t = 0; t < L; ++t)
        for (int b = 0; b < B; ++b) {
            const int64_t k = tasks[(int64_t)b * L + t];
            tasks_t[(int64_t)t * B + b] = k;
            switched[(int64_t)t * B + b] = t > 0 && k != tasks[(int64_t)b * L + t - 1];
        }
}

/* Whole episodes of B copies (L = episode length + 1 rows, dimension d), copy-major outputs.
 *   words (B, stride) uint64: copy b's words; [0, n_x) inputs, [n_x, n_x + n_noise) feedback noise
 *   tasks (B, L) int64 task ids; kinds/params per task id (TASK_*; other kinds: a user task)
 *   xs, ys (B, L, d) float32 outputs; ys rows of user tasks are not written
 *   feedback: FEEDBACK_TARGET with noise: (B, L, d), y + sigma n (sigma n on user-task rows);
 *             FEEDBACK_REWARD with noise: (B, L), sigma n; otherwise unused (may be NULL).
 * Returns the number of user-task rows, or -1 if out of memory. */
int64_t ek_build_episodes(int B, int L, int d, const uint64_t *words, int64_t stride, int64_t n_x,
                          int64_t n_noise, int feedback_mode, float sigma, const int64_t *tasks,
                          const int32_t *kinds, const float *params, float *xs, float *ys, float *feedback) {
    const int64_t block = (int64_t)L * d;
    const int64_t most = n_x > n_noise ? n_x : n_noise;
    float *z = malloc(sizeof(float) * 2 * (size_t)(most > 0 ? most : 1));
    unsigned char *user = malloc((size_t)L);
    if (!z || !user) {
        free(z);
        free(user);
        return -1;
    }
    int64_t n_user = 0;
    for (int b = 0; b < B; ++b) {
        const uint64_t *w = words + b * stride;
        const int64_t *task = tasks + (int64_t)b * L;
        float *x = xs + b * block, *y = ys + b * block;
        if (2 * n_x == block) {
            gaussians_row((const uint32_t *)w, n_x, x); /* straight into the copy's block */
        } else {
            gaussians_row((const uint32_t *)w, n_x, z);
            memcpy(x, z, sizeof(float) * (size_t)block);
        }
        for (int t = 0, end; t < L; t = end) { /* runs of rows of one task (contiguous in the block) */
            const int64_t k = task[t];
            for (end = t + 1; end < L && task[end] == k; ++end) {
            }
            const int user_rows = !target_rows(kinds[k], params[k], x + (int64_t)t * d, y + (int64_t)t * d,
                                               end - t, d);
            memset(user + t, user_rows, (size_t)(end - t));
            n_user += user_rows * (end - t);
        }
        if (n_noise > 0 && feedback_mode == FEEDBACK_TARGET) {
            float *restrict f = feedback + b * block;
            gaussians_row((const uint32_t *)(w + n_x), n_noise, z);
            for (int t = 0; t < L; ++t) {
                const float *n = z + (int64_t)t * d, *yt = y + (int64_t)t * d;
                float *restrict ft = f + (int64_t)t * d;
                if (user[t]) {
                    for (int j = 0; j < d; ++j) ft[j] = n[j] * sigma;
                } else {
                    for (int j = 0; j < d; ++j) {
                        const float e = n[j] * sigma;
                        ft[j] = yt[j] + e;
                    }
                }
            }
        } else if (n_noise > 0 && feedback_mode == FEEDBACK_REWARD) {
            gaussians_row((const uint32_t *)(w + n_x), n_noise, z);
            for (int t = 0; t < L; ++t) feedback[(int64_t)b * L + t] = z[t] * sigma;
        }
    }
    free(z);
    free(user);
    return n_user;
}

/* The fixed arguments of an episode's steps (envs/native/__init__.py: _StepConfig). Strides are in
 * elements: element (t, b, j) of xs is xs[t * xs_t + b * xs_b + j], likewise ys and a target feedback;
 * a reward feedback's (t, b) is feedback[t * fb_t + b * fb_b]. */
typedef struct {
    int B, d, D, feedback_mode, n_oracle, L;
    float bound, factor;
    const float *actions;                   /* (B, d) */
    const float *xs, *ys, *feedback;        /* feedback: NULL for none */
    int64_t xs_t, xs_b, ys_t, ys_b, fb_t, fb_b;
    const int64_t *tasks;                   /* (L, B) */
    const uint8_t *revealed;                /* (L,): whether observation t carries feedback */
} StepConfig;

/* Step t of B copies into obs (B, D) and rewards (B,): rewards r_b = factor sum_j (clip(a_bj, -bound, bound) - y_t,bj)^2 (eight fixed
 * float32 accumulation chains), and observation t + 1 = [x_{t+1}, feedback about step t, one-hot(k_{t+1})]
 * (see envs.regression.observe). Exported names carry the ek_ prefix, internal ones are static: no
 * symbol interposition. */
#if defined(__GNUC__) && !defined(__clang__)
/* short row copies as inline vector loops, not calls to memcpy/memset (~20 ns each at these sizes) */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
void ek_step(const StepConfig *c, int t, float *obs, float *rewards) {
    const int B = c->B, d = c->d, D = c->D, mode = c->feedback_mode;
    const int revealed = c->revealed[t + 1];
    const float bound = c->bound;
    for (int b = 0; b < B; ++b) {
        const float *restrict a = c->actions + (int64_t)b * d;
        const float *restrict y = c->ys + t * c->ys_t + b * c->ys_b;
        const float *restrict x = c->xs + (t + 1) * c->xs_t + b * c->xs_b;
        float *restrict o = obs + (int64_t)b * D;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int j = 0;
        for (; j + 8 <= d; j += 8)
            for (int k = 0; k < 8; ++k) {
                float v = a[j + k];
                v = v < -bound ? -bound : (v > bound ? bound : v);
                const float e = v - y[j + k];
                acc[k] += e * e;
                o[j + k] = x[j + k];
            }
        for (int k = 0; j < d; ++j, ++k) {
            float v = a[j];
            v = v < -bound ? -bound : (v > bound ? bound : v);
            const float e = v - y[j];
            acc[k] += e * e;
            o[j] = x[j];
        }
        float r = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        r *= c->factor;
        rewards[b] = r;
        int off = d;
        if (mode == FEEDBACK_TARGET) {
            float *restrict of = o + d;
            if (revealed) {
                const float *restrict f = c->feedback + t * c->fb_t + b * c->fb_b;
                for (int i = 0; i < d; ++i) of[i] = f[i];
                of[d] = 1.0f;
            } else {
                for (int i = 0; i <= d; ++i) of[i] = 0.0f;
            }
            off = 2 * d + 1;
        } else if (mode == FEEDBACK_REWARD) {
            if (revealed) {
                o[d] = r + c->feedback[(t + 1) * c->fb_t + b * c->fb_b];
                o[d + 1] = 1.0f;
            } else {
                o[d] = o[d + 1] = 0.0f;
            }
            off = d + 2;
        }
        if (c->n_oracle > 0) {
            for (int i = 0; i < c->n_oracle; ++i) o[off + i] = 0.0f;
            o[off + c->tasks[(int64_t)(t + 1) * B + b]] = 1.0f;
        }
    }
    /* the next step's rows (scattered over the copy-major episode arrays) into the cache meanwhile */
    if (t + 2 < c->L) {
        for (int b = 0; b < B; ++b) {
            const float *y = c->ys + (t + 1) * c->ys_t + b * c->ys_b;
            const float *x = c->xs + (t + 2) * c->xs_t + b * c->xs_b;
            for (int j = 0; j < d; j += 16) {
                __builtin_prefetch(y + j, 0, 2);
                __builtin_prefetch(x + j, 0, 2);
            }
        }
    }
}
