/*
 * Native CPU kernel for one DNC memory-access step with one write head (Graves et al., Nature 2016,
 * Methods), forward and backward: the same values and gradients as
 * memagent.memory.fused._AccessStep.forward / _access_step_backward, as plain loops over raw
 * float32 / float64 pointers (no torch headers; loaded through ctypes by memagent.memory.native).
 *
 * Layout (row-major, contiguous, batch first):
 *   vec  (B, V)  raw interface: read keys R W | write key W | write vector W | strengths R + 1 |
 *                sigmoid block (erase W | free R, allocation 1 if allocation | write gate 1) |
 *                read modes 3 R (backward, forward, content) if temporal links
 *   M (B, N, W), u (B, N), L (B, N, N), p (B, N), rw (B, R, N), ww (B, N)
 * Outputs of the forward: reads (B, R, W), M_t, u_t, L_t, p_t, w^r_t (B, R, N), w^w_t (B, N).
 * The backward takes the same inputs and w^r_t (the forward saves nothing else: everything of step t is
 * recomputed from the inputs, fused with the gradient passes) and the gradients of the outputs; the
 * gradients of M_t and L_t may be NULL (zero).
 *
 * The file includes itself twice to instantiate every function for float (suffix _f32) and
 * double (_f64).
 */
#ifndef ACCESS_KERNEL_BODY
#define ACCESS_KERNEL_BODY

#include <fenv.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "memagent_fastmath.h" /* memagent_expf (memagent/include, via memagent.cbuild) */

/* threads: how many threads the call may use (the batch loop is split into that many contiguous
 * chunks of samples; 1 or less: the calling thread alone) */
typedef struct {
    int B, N, W, R, V, alloc, links;
    double decay, eps;
    int threads;
} access_cfg;

int access_kernel_version(void) { return 3; }

/* ------------------------------------------------------------------------------------------------
 * A small persistent pthread pool for the batch loops (no OpenMP runtime: torch brings its own).
 *
 * Every sample's work is independent of the others' and done by exactly the same code whichever
 * thread runs it, so results are bitwise identical for every thread count. A call splits
 * b = 0..B-1 into n contiguous chunks (n <= threads, n <= B, each chunk at least `grain` units of
 * estimated work; n = 1 runs inline); the calling thread and the pool's workers take chunks from
 * one atomic word (generation << 32 | next chunk << 16 | chunks), so a worker that wakes late
 * leaves its chunk to the others. Idle workers watch that word for ~300 us, yielding the core
 * between looks (the next call usually comes within microseconds: a DNC step makes ~4 calls with a
 * few small matrix products between them), then sleep on a condition variable. When workers come
 * late (the cores are busy with other work) calls use fewer chunks for a while (pool.limit). One
 * dispatch at a time: a second thread that calls while the pool is busy runs its call inline (same
 * results). After fork() the child starts with an empty pool (pthread_atfork): its workers are
 * created again at its first parallel call.
 * ------------------------------------------------------------------------------------------------ */
#define POOL_MAX 256
#define WORD(gen, next, n) (((uint64_t)(gen) << 32) | ((uint64_t)(next) << 16) | (uint64_t)(n))
#define WORD_GEN(w) ((uint32_t)((w) >> 32))
#define WORD_NEXT(w) ((int)(((w) >> 16) & 0xffff))
#define WORD_N(w) ((int)((w) & 0xffff))

typedef void (*pool_fn)(const void *arg, int s0, int s1);

/* The floating-point mode a worker copies from the caller (threads start with their creator's):
 * on x86-64 the MXCSR control bits (rounding, flush-to-zero, denormals-are-zero; not the sticky
 * exception flags), elsewhere the whole fenv. */
#if defined(__x86_64__)
typedef unsigned fpstate_t;
static inline fpstate_t fp_get(void) { return __builtin_ia32_stmxcsr() & ~0x3fu; }
static inline int fp_same(const fpstate_t *a, const fpstate_t *b) { return *a == *b; }
static inline void fp_set(const fpstate_t *s) { __builtin_ia32_ldmxcsr(*s | (__builtin_ia32_stmxcsr() & 0x3fu)); }
#else
typedef fenv_t fpstate_t;
static inline fpstate_t fp_get(void) {
    fenv_t e;
    fegetenv(&e);
    return e;
}
static inline int fp_same(const fpstate_t *a, const fpstate_t *b) { return memcmp(a, b, sizeof(fenv_t)) == 0; }
static inline void fp_set(const fpstate_t *s) { fesetenv(s); }
#endif

static struct {
    pthread_mutex_t dispatch; /* held by the thread whose call the pool runs */
    pthread_mutex_t sleep;    /* guards the condition variable */
    pthread_cond_t wake;
    _Atomic uint64_t word;
    _Atomic int done;     /* chunks finished in the current generation */
    _Atomic int sleepers; /* workers blocked on `wake` */
    _Atomic long parallel_calls;
    long late_calls; /* calls whose workers came late (the back-off's trigger) */
    int workers;
    pool_fn fn; /* the current job (stable while any of its chunks is unfinished) */
    const void *arg;
    int B;
    fpstate_t fp; /* the caller's floating-point mode (rounding, flush-to-zero) */
    /* back-off when the workers come late (the machine's cores are busy with other work): a call
     * uses at most `limit` chunks; halved after a late call, doubled again after 64 calls on time;
     * at 1, one call in 256 tries 2 chunks (a probe). Results do not depend on it. */
    int limit, on_time, probe;
} pool = {.dispatch = PTHREAD_MUTEX_INITIALIZER,
          .sleep = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER,
          .limit = POOL_MAX};

static double pool_grain = 3.0e4; /* minimum estimated work per chunk (units ~ flops: ~3 us) */
static long pool_spin_ns = 300000; /* how long an idle worker spins (yielding) before it sleeps */
static int pool_adaptive = 1;      /* the back-off above (tests switch it off) */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Take and run chunks of generation `gen` until none is left; returns the number run. */
static int pool_take_chunks(uint32_t gen, fpstate_t *fp) {
    int ran = 0;
    uint64_t w = atomic_load(&pool.word);
    for (;;) {
        if (WORD_GEN(w) != gen || WORD_NEXT(w) >= WORD_N(w)) return ran;
        if (!atomic_compare_exchange_weak(&pool.word, &w, w + ((uint64_t)1 << 16))) continue;
        /* the chunk is ours: the job's fields stay valid until it is counted done */
        const int next = WORD_NEXT(w), n = WORD_N(w), B = pool.B;
        if (fp && !fp_same(fp, &pool.fp)) { /* a worker: take the caller's mode */
            fp_set(&pool.fp);
            *fp = pool.fp;
        }
        pool.fn(pool.arg, (int)((long)next * B / n), (int)((long)(next + 1) * B / n));
        ++ran;
        atomic_fetch_add(&pool.done, 1);
        w = atomic_load(&pool.word);
    }
}

static void *pool_worker(void *start) {
    uint32_t seen = (uint32_t)(uintptr_t)start;
    fpstate_t fp = fp_get();
    for (;;) {
        uint64_t w = atomic_load(&pool.word);
        if (WORD_GEN(w) == seen) { /* idle: spin for a while, then sleep until the next call */
            /* pause a few microseconds, then yield the core between looks: a thread that waits for
             * this core (another process's, torch's, or the caller itself on a busy machine) runs */
            const long until = now_ns() + pool_spin_ns;
            for (int i = 1; WORD_GEN(w = atomic_load(&pool.word)) == seen; ++i) {
                if (i < 64) {
                    cpu_relax();
                    continue;
                }
                sched_yield();
                if (now_ns() > until) break;
            }
            if (WORD_GEN(w) == seen) {
                pthread_mutex_lock(&pool.sleep);
                atomic_fetch_add(&pool.sleepers, 1); /* then read the word: pairs with pool_run */
                while (WORD_GEN(w = atomic_load(&pool.word)) == seen) pthread_cond_wait(&pool.wake, &pool.sleep);
                atomic_fetch_sub(&pool.sleepers, 1);
                pthread_mutex_unlock(&pool.sleep);
            }
        }
        seen = WORD_GEN(w);
        pool_take_chunks(seen, &fp);
    }
    return NULL;
}

/* Start workers until there are `want` (the dispatch lock held); returns how many exist. */
static int pool_grow(int want) {
    if (want > POOL_MAX - 1) want = POOL_MAX - 1;
    if (pool.workers >= want) return pool.workers;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* workers inherit a full mask: signals go elsewhere */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    const uint32_t gen = WORD_GEN(atomic_load(&pool.word));
    while (pool.workers < want) {
        pthread_t tid;
        if (pthread_create(&tid, &attr, pool_worker, (void *)(uintptr_t)gen) != 0) break;
        ++pool.workers;
    }
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return pool.workers;
}

static void pool_prepare_fork(void) { pthread_mutex_lock(&pool.dispatch); }
static void pool_parent_after_fork(void) { pthread_mutex_unlock(&pool.dispatch); }
static void pool_child_after_fork(void) {
    /* the workers do not exist in the child: forget them (new ones start at the next call) */
    pool.workers = 0;
    atomic_store(&pool.sleepers, 0);
    atomic_store(&pool.done, 0);
    pthread_mutex_init(&pool.sleep, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_mutex_init(&pool.dispatch, NULL);
}

__attribute__((constructor)) static void pool_init(void) {
    const char *spin = getenv("MEMAGENT_NATIVE_SPIN_US"); /* validated (with a warning) in Python */
    if (spin && *spin) {
        char *end;
        const long us = strtol(spin, &end, 10);
        if (*end == 0 && us >= 0 && us <= 10000000) pool_spin_ns = us * 1000L;
    }
    pthread_atfork(pool_prepare_fork, pool_parent_after_fork, pool_child_after_fork);
}

/* Run fn(arg, s0, s1) over b = 0..B-1 in contiguous chunks on up to `threads` threads, each chunk
 * at least `grain` units of work (cost: the units per sample). */
static void pool_run(int threads, int B, double cost, pool_fn fn, const void *arg) {
    int n = threads < B ? threads : B;
    if (n > POOL_MAX) n = POOL_MAX;
    const double by_work = B * cost / pool_grain;
    if (by_work < n) n = (int)by_work;
    if (n <= 1 || pthread_mutex_trylock(&pool.dispatch) != 0) { /* small, or the pool is busy */
        fn(arg, 0, B);
        return;
    }
    if (pool_adaptive && n > pool.limit) { /* backing off: fewer chunks, or inline but for a probe */
        n = pool.limit > 1 ? pool.limit : (++pool.probe % 256 == 0 ? 2 : 1);
        if (n == 1) {
            pthread_mutex_unlock(&pool.dispatch);
            fn(arg, 0, B);
            return;
        }
    }
    n = 1 + (pool_grow(n - 1) < n - 1 ? pool.workers : n - 1);
    pool.fn = fn;
    pool.arg = arg;
    pool.B = B;
    pool.fp = fp_get();
    atomic_store(&pool.done, 0);
    const uint32_t gen = WORD_GEN(atomic_load(&pool.word)) + 1;
    atomic_store(&pool.word, WORD(gen, 0, n));
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.sleep);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.sleep);
    }
    const long t0 = now_ns();
    const int mine = pool_take_chunks(gen, NULL);
    const long t1 = now_ns();
    for (int i = 1; atomic_load(&pool.done) < n; ++i) { /* the other chunks are in flight */
        if (i < 64)
            cpu_relax();
        else
            sched_yield();
    }
    if (pool_adaptive) {
        /* late: the last worker finished long after a chunk's time (it was not running) */
        const long wait = now_ns() - t1, chunk = mine > 0 ? (t1 - t0) / mine : 0;
        if (mine > 0 && wait > 4 * chunk + 100000) {
            pool.limit = n / 2 > 1 ? n / 2 : 1;
            pool.on_time = 0;
            ++pool.late_calls;
        } else if (pool.limit < POOL_MAX && (pool.limit == 1 || ++pool.on_time >= 64)) {
            pool.limit = 2 * pool.limit < POOL_MAX ? 2 * pool.limit : POOL_MAX; /* a probe on time: 2 */
            pool.on_time = 0;
        }
    }
    atomic_fetch_add(&pool.parallel_calls, 1);
    pthread_mutex_unlock(&pool.dispatch);
}

/* ---- for tests and benchmarks */
int pool_workers(void) { return pool.workers; }
long pool_parallel_calls(void) { return atomic_load(&pool.parallel_calls); }
void pool_set_grain(double grain) { pool_grain = grain > 0 ? grain : 0; }
int pool_limit(void) { return pool.limit; }
long pool_late_calls(void) { return pool.late_calls; }
/* on != 0: back off when workers come late (the default); 0: always use the threads asked for. Both
 * reset the limit. */
void pool_set_adaptive(int on) {
    pthread_mutex_lock(&pool.dispatch);
    pool_adaptive = on != 0;
    pool.limit = POOL_MAX;
    pool.on_time = 0;
    pthread_mutex_unlock(&pool.dispatch);
}
double pool_get_grain(void) { return pool_grain; }

/* the benchmark's job: `*(long *)arg` nanoseconds of busy work per sample */
static void pool_busy(const void *arg, int s0, int s1) {
    const long until = now_ns() + *(const long *)arg * (s1 - s0);
    while (now_ns() < until) cpu_relax();
}

/* Mean nanoseconds per call of a job of `work_ns` busy nanoseconds per sample over B samples on
 * `threads` threads (forced past the grain; work_ns = 0: an empty job), `iters` calls, each after
 * `gap_ns` of busy waiting (other work: 0 back to back; longer than the spin, the workers sleep).
 * The dispatch cost is this minus the job's own time, work_ns * ceil(B / threads). */
double pool_dispatch_ns(int threads, int B, int iters, long gap_ns, long work_ns) {
    const double grain = pool_grain;
    pool_grain = 0;
    pool_run(threads, B, 1, pool_busy, &work_ns); /* start the workers */
    long total = 0;
    for (int i = 0; i < iters; ++i) {
        if (gap_ns > 0) {
            const long until = now_ns() + gap_ns;
            while (now_ns() < until) cpu_relax();
        }
        const long t0 = now_ns();
        pool_run(threads, B, 1, pool_busy, &work_ns);
        total += now_ns() - t0;
    }
    pool_grain = grain;
    return (double)total / (iters > 0 ? iters : 1);
}

#define real float
#define FN(name) name##_f32
#include "access_kernel.c"
#undef real
#undef FN

#define real double
#define FN(name) name##_f64
#include "access_kernel.c"
#undef real
#undef FN

#else /* ------------------------------------------------------------------ templated body */

typedef struct {
    real v;
    int i;
} FN(pair);

/* Per-sample intermediates of the forward pass (one block, reused across the batch). */
typedef struct {
    real *strength; /* R + 1: read strengths, write strength (>= 1) */
    real *gate;     /* sigmoid block */
    real *mode;     /* 3 R */
    real *knorm;    /* R + 1: |k| of read keys, write key */
    real *pre;      /* N: u + w^w - u w^w */
    real *psi;      /* N */
    real *mnorm;    /* N: |M_{t-1, n}| */
    real *wsim;     /* N: write cosine similarity */
    real *wc;       /* N: write content weighting */
    real *su;       /* N: sorted eps + (1 - eps) u_t */
    real *sprod;    /* N: exclusive cumulative product of su */
    real *salloc;   /* N: sorted allocation */
    real *alloc;    /* N: allocation weighting */
    int *order;     /* N: free list */
    FN(pair) *pairs; /* (eps + (1 - eps) u_t[n], n) */
    real *ww;       /* N: w^w_t */
    real *Mt;       /* N W: M_t (backward only; the forward writes the output) */
    real *zero;     /* N + W zeros */
    real *rnorm;    /* N: |M_{t, n}| */
    real *rsim;     /* R N: read cosine similarity */
    real *rc;       /* R N: read content weighting */
    real *f, *b;    /* R N: forward / backward weightings */
    real *rwt;      /* R N: new read weights (backward only) */
    /* backward buffers */
    real *grw, *gf, *gb, *gread, *growread, *grc, *gdot, *gmn, *row, *grow, *gw, *gp, *gu, *gww;
    real *gMt;      /* N W */
    real *kept_pre, *kept_suf; /* (R + 1) N each */
    real *msc, *gwn; /* N each: the memory rows' |M_t| term, d w^w from the erase-and-write */
    real *gwp;       /* LZ N (<= 16 N): partial sums of gwn, one vector per row */
} FN(work);

static size_t FN(work_size)(const access_cfg *c, int backward) {
    size_t N = c->N, W = c->W, R = c->R;
    size_t n = (R + 1) + (W + R + 2) + 3 * R + (R + 1) + 12 * N + 5 * R * N + N * W + N + W;
    if (backward) n += 8 * R * N + 6 * N + N * W + 2 * (R + 1) * N + 18 * N;
    return n * sizeof(real) + N * sizeof(int) + N * sizeof(FN(pair)) + 64;
}

/* Estimated work per sample of one access step (units ~ flops; only compared with pool_grain). */
static double FN(step_cost)(const access_cfg *c, int backward) {
    const double N = c->N, W = c->W, R = c->R;
    const double cost = N * W * (2 * R + 4) + (c->alloc ? N * N : 0) + (c->links ? N * N * (2 * R + 3) : 0);
    return backward ? 2.5 * cost : cost;
}

/* A work block, 64-byte aligned (the same alignment whichever thread allocates it, so that the
 * vectorised loops over it take the same path: results do not depend on the thread count). */
static char *FN(work_alloc)(const access_cfg *c, int backward) {
    return (char *)aligned_alloc(64, (FN(work_size)(c, backward) + 63) / 64 * 64);
}

static void FN(work_init)(FN(work) * k, const access_cfg *c, char *mem, int backward) {
    size_t N = c->N, W = c->W, R = c->R;
    real *p = (real *)mem;
#define TAKE(field, count) (k->field = p, p += (count))
    TAKE(strength, R + 1);
    TAKE(gate, W + R + 2);
    TAKE(mode, 3 * R);
    TAKE(knorm, R + 1);
    TAKE(pre, N);
    TAKE(psi, N);
    TAKE(mnorm, N);
    TAKE(wsim, N);
    TAKE(wc, N);
    TAKE(su, N);
    TAKE(sprod, N);
    TAKE(salloc, N);
    TAKE(alloc, N);
    TAKE(ww, N);
    TAKE(rnorm, N);
    TAKE(row, N);
    TAKE(rsim, R * N);
    TAKE(rc, R * N);
    TAKE(f, R * N);
    TAKE(b, R * N);
    TAKE(rwt, R * N);
    TAKE(Mt, N * W);
    TAKE(zero, N + W); /* a zero row: stands for an absent (NULL, all-zero) incoming gradient */
    memset(k->zero, 0, sizeof(real) * (N + W));
    if (backward) {
        TAKE(grw, R * N);
        TAKE(gf, R * N);
        TAKE(gb, R * N);
        TAKE(gread, R * N);
        TAKE(growread, R * N);
        TAKE(grc, R * N);
        TAKE(gdot, R * N);
        TAKE(gmn, N);
        TAKE(grow, N);
        TAKE(gw, N);
        TAKE(gp, N);
        TAKE(gu, N);
        TAKE(gww, N);
        TAKE(gMt, N * W);
        TAKE(kept_pre, (R + 1) * N);
        TAKE(kept_suf, (R + 1) * N);
        TAKE(msc, N);
        TAKE(gwn, N);
        TAKE(gwp, 16 * N);
    }
#undef TAKE
    k->order = (int *)p;
    k->pairs = (FN(pair) *)(k->order + N);
}

/* exp: the vectorisable memagent_expf for float32, libm for float64 (the tests' reference precision) */
static inline real FN(exp)(real x) { return sizeof(real) == 4 ? (real)memagent_expf((float)x) : (real)exp(x); }

static inline real FN(sigmoid)(real x) { return (real)1 / ((real)1 + FN(exp)(-x)); }

/* tanh(x) = sign(x) (1 - 2 / (e^{2|x|} + 1)) in float32 (absolute error ~1e-7), libm in float64 */
static inline real FN(tanh)(real x) {
    if (sizeof(real) == 8) return (real)tanh(x);
    const real a = x < 0 ? -x : x;
    const real t = 1 - 2 / (FN(exp)(2 * a) + 1);
    return x < 0 ? -t : t;
}

/* torch.nn.functional.softplus (beta 1, threshold 20) */
static real FN(softplus)(real x) { return x > (real)20 ? x : (real)log1p(exp(x)); }

static real FN(dot)(const real *restrict a, const real *restrict b, int n) {
    /* two independent accumulation chains (a single vector chain is latency bound at these sizes) */
    const int h = n / 2;
    const real *restrict a2 = a + h, *restrict b2 = b + h;
    real s0 = 0, s1 = 0;
#pragma omp simd reduction(+ : s0, s1)
    for (int i = 0; i < h; ++i) {
        s0 += a[i] * b[i];
        s1 += a2[i] * b2[i];
    }
    if (n & 1) s0 += a[n - 1] * b[n - 1];
    return s0 + s1;
}

/* out[h] = keys[h] . x for H keys of width W (rows of keys), and x . x into *self: one pass over x */
static inline __attribute__((always_inline)) void FN(row_dots_h)(const real *restrict x,
                                                                 const real *restrict keys, int W,
                                                                 real *restrict out, real *restrict self,
                                                                 const int H) {
    real acc[8] = {0}; /* H <= 8 */
    real sq = 0;
#pragma omp simd reduction(+ : acc, sq)
    for (int j = 0; j < W; ++j) {
        const real xj = x[j];
        sq += xj * xj;
        for (int h = 0; h < H; ++h) acc[h] += keys[h * W + j] * xj;
    }
    for (int h = 0; h < H; ++h) out[h] = acc[h];
    *self = sq;
}

static void FN(row_dots)(const real *x, const real *keys, int W, int H, real *out, real *self) {
    switch (H) {
        case 1: FN(row_dots_h)(x, keys, W, out, self, 1); break;
        case 2: FN(row_dots_h)(x, keys, W, out, self, 2); break;
        case 3: FN(row_dots_h)(x, keys, W, out, self, 3); break;
        case 4: FN(row_dots_h)(x, keys, W, out, self, 4); break;
        case 5: FN(row_dots_h)(x, keys, W, out, self, 5); break;
        case 6: FN(row_dots_h)(x, keys, W, out, self, 6); break;
        case 7: FN(row_dots_h)(x, keys, W, out, self, 7); break;
        case 8: FN(row_dots_h)(x, keys, W, out, self, 8); break;
        default:
            for (int h = 0; h < H; ++h) out[h] = FN(dot)(keys + h * W, x, W);
            *self = FN(dot)(x, x, W);
    }
}

/* One row i of the link forward: L_t[i, :] = (1 - w_i - w) o L_{t-1}[i, :] + w_i p (zero at i),
 * f[r, i] = L_t[i, :] . w^r_r, b[r, :] += w^r[r, i] L_t[i, :]. R a constant after inlining. */
static inline __attribute__((always_inline)) void FN(link_row_forward_r)(
    int N, int i, const real *restrict lrow, const real *restrict w, const real *restrict p,
    const real *restrict rw, real *restrict lt, real *restrict f, real *restrict b, const int R) {
    const real wi = w[i], a = 1 - wi;
    real fs[8] = {0}, rwi[8]; /* R <= 8 (larger R: the generic row below) */
    for (int r = 0; r < R; ++r) rwi[r] = rw[r * N + i];
#pragma omp simd reduction(+ : fs)
    for (int j = 0; j < N; ++j) {
        real l = (a - w[j]) * lrow[j] + wi * p[j];
        l = j == i ? 0 : l;
        lt[j] = l;
        for (int r = 0; r < R; ++r) {
            fs[r] += l * rw[r * N + j];
            b[r * N + j] += rwi[r] * l;
        }
    }
    for (int r = 0; r < R; ++r) f[r * N + i] = fs[r];
}

/* One row i of the link backward, from L_{t-1}[i, :] and dL_t[i, :]:
 *   g = dL_t + sum_r (gf[r, i] w^r_r + w^r[r, i] gb_r)   (zero at i; gf = pi_2 dw^r, gb = pi_1 dw^r)
 *   h[r, i] = L_t[i, :] . dw^r_r,  q[r, :] += dw^r[r, i] L_t[i, :]   (for d pi and d w^r_{t-1})
 *   dw[i] += g . (p - L_{t-1}[i, :]),  dw[:] -= g o L_{t-1}[i, :],  dp += w_i g,
 *   dL_{t-1}[i, :] = (1 - w_i - w) o g. */
static inline __attribute__((always_inline)) void FN(link_row_backward_r)(
    int N, int i, const real *restrict lrow, const real *restrict glrow, const real *restrict w,
    const real *restrict p, const real *restrict rw, const real *restrict grw, const real *restrict gb,
    const real *restrict gfi, real *restrict h, real *restrict q, real *restrict gw, real *restrict gp,
    real *restrict glp, const int R) {
    const real wi = w[i], a = 1 - wi;
    real hs[8] = {0}, rwi[8], grwi[8], gf[8]; /* R <= 8 (larger R: the generic row below) */
    for (int r = 0; r < R; ++r) {
        rwi[r] = rw[r * N + i];
        grwi[r] = grw[r * N + i];
        gf[r] = gfi[r];
    }
    real gwi = 0;
#pragma omp simd reduction(+ : hs, gwi)
    for (int j = 0; j < N; ++j) {
        const real lp = lrow[j], scale = a - w[j];
        const real l = j == i ? 0 : scale * lp + wi * p[j];
        real g = glrow[j];
        for (int r = 0; r < R; ++r) {
            hs[r] += l * grw[r * N + j];
            q[r * N + j] += grwi[r] * l;
            g += gf[r] * rw[r * N + j] + rwi[r] * gb[r * N + j];
        }
        g = j == i ? 0 : g;
        const real gl = g * lp;
        gwi += g * p[j] - gl;
        gw[j] -= gl;
        gp[j] += wi * g;
        glp[j] = scale * g;
    }
    gw[i] += gwi;
    for (int r = 0; r < R; ++r) h[r * N + i] = hs[r];
}

/* The same rows for any number of heads (one pass per head; R > 8). */
static void FN(link_row_forward_any)(int N, int i, const real *lrow, const real *w, const real *p,
                                     const real *rw, real *lt, real *f, real *b, int R) {
    const real wi = w[i], a = 1 - wi;
    for (int j = 0; j < N; ++j) lt[j] = j == i ? 0 : (a - w[j]) * lrow[j] + wi * p[j];
    for (int r = 0; r < R; ++r) {
        const real rwi = rw[r * N + i];
        f[r * N + i] = FN(dot)(lt, rw + r * N, N);
        for (int j = 0; j < N; ++j) b[r * N + j] += rwi * lt[j];
    }
}

static void FN(link_row_backward_any)(int N, int i, const real *lrow, const real *glrow, const real *w,
                                      const real *p, const real *rw, const real *grw, const real *gb,
                                      const real *gfi, real *h, real *q, real *gw, real *gp, real *glp,
                                      real *lt, real *g, int R) {
    const real wi = w[i], a = 1 - wi;
    for (int j = 0; j < N; ++j) {
        lt[j] = j == i ? 0 : (a - w[j]) * lrow[j] + wi * p[j];
        g[j] = glrow[j];
    }
    for (int r = 0; r < R; ++r) {
        const real rwi = rw[r * N + i], grwi = grw[r * N + i], gf = gfi[r];
        h[r * N + i] = FN(dot)(lt, grw + r * N, N);
        for (int j = 0; j < N; ++j) {
            q[r * N + j] += grwi * lt[j];
            g[j] += gf * rw[r * N + j] + rwi * gb[r * N + j];
        }
    }
    g[i] = 0;
    real gwi = 0;
    for (int j = 0; j < N; ++j) {
        const real gl = g[j] * lrow[j];
        gwi += g[j] * p[j] - gl;
        gw[j] -= gl;
        gp[j] += wi * g[j];
        glp[j] = (a - w[j]) * g[j];
    }
    gw[i] += gwi;
}

#define LINK_SWITCH(R, CALL, ANY)            \
    switch (R) {                             \
        case 1: CALL(1); break;              \
        case 2: CALL(2); break;              \
        case 3: CALL(3); break;              \
        case 4: CALL(4); break;              \
        case 5: CALL(5); break;              \
        case 6: CALL(6); break;              \
        case 7: CALL(7); break;              \
        case 8: CALL(8); break;              \
        default: ANY; break;                 \
    }

/* ---- tiled link forward (N a multiple of 8, R <= 8). The plain row loop above reloads its per-head
 * pointers from the stack every vector iteration and loads / stores the R rows of b for every row of
 * the link. Here TR rows go together over all column blocks of 8: the per-column quantities of a block
 * (w, p, w^r_r) are packed (one pointer, constant offsets), f[r, i] stays in registers as 8 lane sums
 * until the end of the rows, and the b[r, block] accumulators (packed too) are loaded and stored once
 * per TR rows. Same arithmetic per entry as link_row_forward_r; b sums the rows in the same order, f's
 * sums are split across the lanes. The 8-lane vector type and its helpers serve the blocked link
 * backward below too. */
typedef real FN(v8) __attribute__((vector_size(8 * sizeof(real))));
typedef __typeof__(__builtin_choose_expr(sizeof(real) == 4, (int32_t)0, (int64_t)0)) FN(rint);
typedef FN(rint) FN(iv8) __attribute__((vector_size(8 * sizeof(real)))); /* a comparison's lanes */

/* lanes of (a, b) picked by index (0-7: a, 8-15: b): clang and GCC >= 12 have __builtin_shufflevector,
 * older GCC (e.g. 11, Ubuntu 22.04's) only __builtin_shuffle with an integer mask vector (forced by
 * -DMEMAGENT_GCC_SHUFFLE, for the tests) */
#ifndef SHUF8
#if !defined(MEMAGENT_GCC_SHUFFLE) && (defined(__clang__) || __GNUC__ >= 12)
#define SHUF8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUF8(a, b, ...) __builtin_shuffle(a, b, (FN(iv8)){__VA_ARGS__})
#endif
#endif

static inline FN(v8) FN(ld8)(const real *x) {
    FN(v8) v;
    memcpy(&v, x, sizeof v);
    return v;
}

static inline void FN(st8)(real *x, FN(v8) v) { memcpy(x, &v, sizeof v); }

static inline real FN(hsum8)(FN(v8) v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

#ifndef LINK_PF
#define LINK_PF 1
#endif
/* L_t = (1 - w 1^T - 1 w^T) o L_{t-1} + w p^T (zero diagonal), f_r = L_t w^r_r, b_r = L_t^T w^r_r;
 * pk: N / 8 * (2 + R) vectors, acc: N / 8 * R vectors (scratch). TR (rows per pass) divides 8. */
static inline __attribute__((always_inline)) void FN(link_forward_tiled_r)(
    int N, const real *restrict L, const real *restrict w, const real *restrict p, const real *restrict rw,
    real *restrict Lt, real *restrict f, real *restrict b, FN(v8) *restrict pk, FN(v8) *restrict acc,
    const int R, const int TR) {
    const int nb = N / 8, PS = 2 + R;
    for (int jb = 0; jb < nb; ++jb) {
        FN(v8) *P = pk + jb * PS;
        P[0] = FN(ld8)(w + 8 * jb);
        P[1] = FN(ld8)(p + 8 * jb);
        for (int r = 0; r < R; ++r) {
            P[2 + r] = FN(ld8)(rw + r * N + 8 * jb);
            acc[jb * R + r] = (FN(v8)){0};
        }
    }
    for (int i0 = 0; i0 < N; i0 += TR) {
        real a[8], wi[8], rwi[8][8];
        FN(v8) fv[8][8];
        for (int t = 0; t < TR; ++t) {
            wi[t] = w[i0 + t];
            a[t] = 1 - wi[t];
            for (int r = 0; r < R; ++r) {
                rwi[t][r] = rw[r * N + i0 + t];
                fv[t][r] = (FN(v8)){0};
            }
        }
        const int ib = i0 / 8, il = i0 % 8; /* the TR rows' diagonal entries: block ib, lanes il.. */
        const int PF = i0 + (LINK_PF + 1) * TR <= N ? LINK_PF : 0;
        const real *lrow = L + (size_t)i0 * N;
        real *ltrow = Lt + (size_t)i0 * N;
        for (int jb = 0; jb < nb; ++jb) {
            const FN(v8) *P = pk + jb * PS;
            FN(v8) *A = acc + jb * R;
            FN(v8) lt[8];
            if (PF && (jb * 8 * (int)sizeof(real)) % 64 == 0)
                for (int t = 0; t < TR; ++t) { /* the rows PF tiles ahead, one cache line at a time */
                    __builtin_prefetch(lrow + (size_t)(PF * TR + t) * N + 8 * jb, 0, 3);
                    __builtin_prefetch(ltrow + (size_t)(PF * TR + t) * N + 8 * jb, 1, 3);
                }
            for (int t = 0; t < TR; ++t)
                lt[t] = (a[t] - P[0]) * FN(ld8)(lrow + (size_t)t * N + 8 * jb) + wi[t] * P[1];
            if (jb == ib)
                for (int t = 0; t < TR; ++t) lt[t][il + t] = 0;
            for (int t = 0; t < TR; ++t) FN(st8)(ltrow + (size_t)t * N + 8 * jb, lt[t]);
            for (int r = 0; r < R; ++r) {
                FN(v8) s = A[r];
                for (int t = 0; t < TR; ++t) {
                    fv[t][r] += lt[t] * P[2 + r];
                    s += rwi[t][r] * lt[t];
                }
                A[r] = s;
            }
        }
        for (int t = 0; t < TR; ++t)
            for (int r = 0; r < R; ++r) f[r * N + i0 + t] = FN(hsum8)(fv[t][r]);
    }
    for (int jb = 0; jb < nb; ++jb)
        for (int r = 0; r < R; ++r) FN(st8)(b + r * N + 8 * jb, acc[jb * R + r]);
}

/* rows per pass of the tiled link forward: TR R vectors of f sums in registers (at most 16) */
#define LINK_FORWARD_TR(R) ((R) <= 2 ? 8 : (R) <= 4 ? 4 : 2)

static void FN(link_forward)(int N, int R, const real *L, const real *w, const real *p, const real *rw,
                             real *Lt, real *f, real *b) {
    if (N % 8 == 0 && R <= 8) {
        const size_t count = (size_t)(N / 8) * (2 + 2 * R);
        /* scratch on the stack up to 8 KiB (float32; N = 128, R = 4 needs 5 KiB), else on the heap */
        FN(v8) stack[256], *heap = count > 256 ? (FN(v8) *)aligned_alloc(64, sizeof(FN(v8)) * count) : NULL;
        FN(v8) *pk = heap ? heap : stack, *acc = pk + (size_t)(N / 8) * (2 + R);
#define CALL(RR) FN(link_forward_tiled_r)(N, L, w, p, rw, Lt, f, b, pk, acc, RR, LINK_FORWARD_TR(RR))
        LINK_SWITCH(R, CALL, )
#undef CALL
        free(heap);
        return;
    }
    memset(b, 0, sizeof(real) * (size_t)R * N);
    for (int i = 0; i < N; ++i) {
        const real *lrow = L + (size_t)i * N;
        real *lt = Lt + (size_t)i * N;
#define CALL(RR) FN(link_row_forward_r)(N, i, lrow, w, p, rw, lt, f, b, RR)
        LINK_SWITCH(R, CALL, FN(link_row_forward_any)(N, i, lrow, w, p, rw, lt, f, b, R))
#undef CALL
    }
}

/* 64-byte vectors (16 float or 8 double lanes: one AVX-512 register) for the backward's streaming loops,
 * which are bound by their arithmetic: twice the float lanes per instruction of the 8-lane blocks. */
#ifndef LZ
#define LZ ((int)(64 / sizeof(real))) /* lanes of FN(vz) */
#endif
typedef real FN(vz) __attribute__((vector_size(64)));

static inline FN(vz) FN(ldz)(const real *x) {
    FN(vz) v;
    memcpy(&v, x, sizeof v);
    return v;
}

static inline void FN(stz)(real *x, FN(vz) v) { memcpy(x, &v, sizeof v); }

/* the sum of the lanes: the 8-lane halves added, then a tree */
static inline real FN(hsumz)(FN(vz) v) {
    FN(v8) h[LZ / 8];
    memcpy(h, &v, sizeof v);
    FN(v8) s = h[0];
    for (int k = 1; k < LZ / 8; ++k) s += h[k];
    return FN(hsum8)(s);
}

/* Memory the next sample's passes will read (up to 4 regions), fetched into the cache a slice per link
 * row while the link pass computes (it is bound by its arithmetic; the memory passes by their loads). */
#ifndef PREFETCH_PLAN /* once for both instantiations */
#define PREFETCH_PLAN
typedef struct {
    const char *at[4];
    size_t bytes[4], step[4]; /* step: bytes per link row (bytes / N) */
} prefetch_plan;

static inline void prefetch_slice(const prefetch_plan *pf, int i, int n) {
    for (int k = 0; k < 4; ++k) {
        if (!pf->at[k]) continue;
        const size_t step = pf->step[k], lo = step * i, hi = i == n - 1 ? pf->bytes[k] : lo + step;
        for (size_t b = lo & ~(size_t)63; b < hi; b += 64) __builtin_prefetch(pf->at[k] + b, 0, 2);
    }
}

/* Subnormal numbers flushed to zero and read as zero (x86-64: MXCSR FTZ | DAZ) until fp_set(&returned):
 * the backward's usage and allocation chains carry gradients that decay below FLT_MIN (about 7% of d u
 * and d w^w at the benchmark's size), and every operation on a subnormal costs a ~100-cycle assist. The
 * results change only by amounts below the smallest normal number. Elsewhere: nothing changes. */
static inline fpstate_t flush_subnormals(void) {
    const fpstate_t in = fp_get();
#if defined(__x86_64__)
    __builtin_ia32_ldmxcsr(__builtin_ia32_stmxcsr() | 0x8040u);
#endif
    return in;
}
#endif

/* ---- blocked link backward (N a multiple of LZ, R <= 8): the per-column quantities of all heads are
 * packed block by block (LZ columns: w, p, w^r_r, dw^r_r, gb_r; then the column accumulators q_r, dw, dp)
 * so that the row loop walks one packed array with constant offsets (no pointer per head: the plain
 * row loop above runs out of registers and reloads its 23 pointers from the stack), in 64-byte GCC vector
 * types; fetches `pf` meanwhile. Other sizes take the row loop. */
static inline __attribute__((always_inline)) void FN(link_backward_blocked_z_r)(
    int N, const real *restrict L, const real *restrict gL, const real *restrict w, const real *restrict p,
    const real *restrict rw, const real *restrict grw, const real *restrict gb, const real *restrict gf,
    real *restrict h, real *restrict q, real *restrict gw, real *restrict gp, real *restrict gLp,
    const real *restrict zero, FN(vz) *restrict pk, FN(vz) *restrict acc, const prefetch_plan *pf, const int R) {
    const int nb = N / LZ, PS = 2 + 3 * R, AS = R + 2;
    const size_t ahead = gL ? 4 * (size_t)N : 0;
    for (int jb = 0; jb < nb; ++jb) {
        FN(vz) *P = pk + jb * PS, *A = acc + jb * AS;
        P[0] = FN(ldz)(w + LZ * jb);
        P[1] = FN(ldz)(p + LZ * jb);
        for (int r = 0; r < R; ++r) {
            P[2 + r] = FN(ldz)(rw + r * N + LZ * jb);
            P[2 + R + r] = FN(ldz)(grw + r * N + LZ * jb);
            P[2 + 2 * R + r] = FN(ldz)(gb + r * N + LZ * jb);
        }
        for (int f = 0; f < AS; ++f) A[f] = (FN(vz)){0};
    }
    for (int i = 0; i < N; ++i) {
        const real wi = w[i], a = 1 - wi;
        real rwi[8], grwi[8], gfi[8];
        for (int r = 0; r < R; ++r) {
            rwi[r] = rw[r * N + i];
            grwi[r] = grw[r * N + i];
            gfi[r] = gf[r * N + i];
        }
        const real *lrow = L + (size_t)i * N, *glrow = gL ? gL + (size_t)i * N : zero;
        real *glp = gLp + (size_t)i * N;
        const int ib = i / LZ, il = i % LZ;
        if (pf) prefetch_slice(pf, i, N);
        FN(vz) hv[8], gwv = {0};
        for (int r = 0; r < R; ++r) hv[r] = (FN(vz)){0};
        for (int jb = 0; jb < nb; ++jb) {
            const FN(vz) *P = pk + jb * PS;
            FN(vz) *A = acc + jb * AS;
            __builtin_prefetch(lrow + ahead + LZ * jb, 0, 3); /* four rows ahead (and the next sample's) */
            __builtin_prefetch(glrow + ahead + LZ * jb, 1, 3);
            const FN(vz) lp = FN(ldz)(lrow + LZ * jb), scale = a - P[0];
            FN(vz) lt = scale * lp + wi * P[1];
            if (jb == ib) lt[il] = 0; /* zero diagonal */
            FN(vz) g = FN(ldz)(glrow + LZ * jb);
            for (int r = 0; r < R; ++r) {
                hv[r] += lt * P[2 + R + r];
                A[r] += grwi[r] * lt;
                g += gfi[r] * P[2 + r] + rwi[r] * P[2 + 2 * R + r];
            }
            if (jb == ib) g[il] = 0;
            const FN(vz) gl = g * lp;
            gwv += g * P[1] - gl;
            A[R] -= gl;
            A[R + 1] += wi * g;
            FN(stz)(glp + LZ * jb, scale * g);
        }
        for (int r = 0; r < R; ++r) h[r * N + i] = FN(hsumz)(hv[r]);
        gw[i] += FN(hsumz)(gwv);
    }
    for (int jb = 0; jb < nb; ++jb) {
        const FN(vz) *A = acc + jb * AS;
        for (int r = 0; r < R; ++r) FN(stz)(q + r * N + LZ * jb, A[r]);
        FN(stz)(gw + LZ * jb, FN(ldz)(gw + LZ * jb) + A[R]);
        FN(stz)(gp + LZ * jb, A[R + 1]);
    }
}

static void FN(link_backward)(int N, int R, const real *L, const real *gL, const real *w, const real *p,
                              const real *rw, const real *grw, const real *gb, const real *gf, real *h,
                              real *q, real *gw, real *gp, real *gLp, real *row, real *grow, const real *zero,
                              const prefetch_plan *pf) {
    if (N % LZ == 0 && R <= 8) {
        const size_t bytes = ((size_t)(N / LZ) * (2 + 3 * R + R + 2) * sizeof(FN(vz)) + 63) / 64 * 64;
        FN(vz) *pk = (FN(vz) *)aligned_alloc(64, bytes), *acc = pk + (size_t)(N / LZ) * (2 + 3 * R);
#define CALL(RR) FN(link_backward_blocked_z_r)(N, L, gL, w, p, rw, grw, gb, gf, h, q, gw, gp, gLp, zero, pk, acc, pf, RR)
        LINK_SWITCH(R, CALL, )
#undef CALL
        free(pk);
        return;
    }
    real gfi[R];
    memset(q, 0, sizeof(real) * (size_t)R * N);
    memset(gp, 0, sizeof(real) * N);
    for (int i = 0; i < N; ++i) {
        for (int r = 0; r < R; ++r) gfi[r] = gf[r * N + i];
        const real *lrow = L + (size_t)i * N, *glrow = gL ? gL + (size_t)i * N : zero;
        real *glp = gLp + (size_t)i * N;
#define CALL(RR) FN(link_row_backward_r)(N, i, lrow, glrow, w, p, rw, grw, gb, gfi, h, q, gw, gp, glp, RR)
        LINK_SWITCH(R, CALL,
                    FN(link_row_backward_any)(N, i, lrow, glrow, w, p, rw, grw, gb, gfi, h, q, gw, gp, glp, row,
                                              grow, R))
#undef CALL
    }
}


/* One memory row n of the backward through the reads, the read content weighting and the
 * erase-and-write, fused (R a constant after inlining):
 *   dM_t[n] = incoming + sum_r w^r_t[r, n] d reads[r] + sum_r gdot[r] k_r + M_t[n] sc   (reads, cosine)
 *   dk_r += gdot[r] M_t[n];  then through M_t = M + w o (v - M o e): dM[n], d e, d v, d w[n] */
static inline __attribute__((always_inline)) void FN(memory_row_backward_r)(
    int W, const real *restrict m, const real *restrict mt, const real *restrict gi, const real *restrict gR,
    const real *restrict keys, const real *restrict a, const real *restrict gd, real sc, real wn,
    const real *restrict erase, const real *restrict wv, real *restrict gk, real *restrict g_e,
    real *restrict g_v, real *restrict gmo, real *restrict gwn_out, const int R) {
    real ar[8], gr[8];
    for (int r = 0; r < R; ++r) {
        ar[r] = a[r];
        gr[r] = gd[r];
    }
    real gwn = 0;
#pragma omp simd reduction(+ : gwn)
    for (int j = 0; j < W; ++j) {
        const real mtj = mt[j];
        real gm = gi[j] + mtj * sc;
        for (int r = 0; r < R; ++r) {
            gm += ar[r] * gR[r * W + j] + gr[r] * keys[r * W + j];
            gk[r * W + j] += gr[r] * mtj;
        }
        const real me = m[j] * erase[j];
        gwn += gm * (wv[j] - me);
        g_e[j] -= wn * gm * m[j];
        g_v[j] += wn * gm;
        gmo[j] = gm - gm * wn * erase[j];
    }
    *gwn_out = gwn;
}

/* The sums of 8 vectors at once: out[k] = sum of the lanes of v[k] (a transpose-and-add tree: 21 shuffles
 * and adds for 8 sums instead of 8 separate horizontal sums). */
static inline FN(v8) FN(reduce8)(const FN(v8) *v) {
#define LO(a, b) SHUF8(a, b, 0, 8, 2, 10, 4, 12, 6, 14)
#define HI(a, b) SHUF8(a, b, 1, 9, 3, 11, 5, 13, 7, 15)
    const FN(v8) s0 = LO(v[0], v[1]) + HI(v[0], v[1]), s1 = LO(v[2], v[3]) + HI(v[2], v[3]);
    const FN(v8) s2 = LO(v[4], v[5]) + HI(v[4], v[5]), s3 = LO(v[6], v[7]) + HI(v[6], v[7]);
#undef LO
#undef HI
    /* s0 = [a01 b01 a23 b23 a45 b45 a67 b67] (a = v[0], b = v[1]) */
#define LO(a, b) SHUF8(a, b, 0, 1, 8, 9, 4, 5, 12, 13)
#define HI(a, b) SHUF8(a, b, 2, 3, 10, 11, 6, 7, 14, 15)
    const FN(v8) t0 = LO(s0, s1) + HI(s0, s1), t1 = LO(s2, s3) + HI(s2, s3);
#undef LO
#undef HI
    /* t0 = [a0123 b0123 c0123 d0123 a4567 b4567 c4567 d4567] */
    return SHUF8(t0, t1, 0, 1, 2, 3, 8, 9, 10, 11) +
           SHUF8(t0, t1, 4, 5, 6, 7, 12, 13, 14, 15);
}

/* d reads -> d w^r_t: out[r, n] = add[r, n] + M_t[n, :] . dr_r, 8 rows n at a time (N and W multiples of 8):
 * 8 accumulators, one per row, then one transpose-and-add for their 8 sums. */
static void FN(read_dots_blocked)(int N, int W, int R, const real *restrict Mt, const real *restrict gR,
                                  const real *restrict add, real *restrict out) {
    const int nb = W / 8;
    for (int n = 0; n < N; n += 8) {
        if (n + 8 < N) /* the next 8 rows into L1 (they come from L2: M_t was fetched during the last link pass) */
            for (size_t b = 0; b < 8 * (size_t)W * sizeof(real); b += 64)
                __builtin_prefetch((const char *)(Mt + (size_t)(n + 8) * W) + b, 0, 3);
        for (int r = 0; r < R; ++r) {
            const real *m = Mt + (size_t)n * W, *k = gR + r * W;
            FN(v8) acc[8];
            for (int i = 0; i < 8; ++i) acc[i] = (FN(v8)){0};
            for (int jb = 0; jb < nb; ++jb) {
                const FN(v8) kv = FN(ld8)(k + 8 * jb);
                for (int i = 0; i < 8; ++i) acc[i] += FN(ld8)(m + (size_t)i * W + 8 * jb) * kv;
            }
            FN(st8)(out + r * N + n, FN(ld8)(add + r * N + n) + FN(reduce8)(acc));
        }
    }
}

/* d w^r_t = (d w^r_t from the next step) + M_t d reads^T, (R, N) */
static void FN(read_dots_backward)(int N, int W, int R, const real *Mt, const real *gR, const real *add,
                                   real *out) {
    if (W % 8 == 0 && N % 8 == 0) {
        FN(read_dots_blocked)(N, W, R, Mt, gR, add, out);
        return;
    }
    real dots[64], sq;
    real *d = R <= 64 ? dots : (real *)malloc(sizeof(real) * R);
    for (int n = 0; n < N; ++n) {
        FN(row_dots)(Mt + (size_t)n * W, gR, W, R, d, &sq);
        for (int r = 0; r < R; ++r) out[r * N + n] = add[r * N + n] + d[r];
    }
    if (d != dots) free(d);
}

/* The memory rows' backward (the same quantities as memory_row_backward_r for every row n) in passes over
 * CB column blocks of LZ lanes (W a multiple of LZ, R <= 8): for the pass's columns the heads' d reads dr_r
 * and keys k_r, their gradients dk_r, d e, d v, e and v stay in registers (or L1) while the rows stream by:
 *   dM_t[n] = dM_t^in[n] + sc_n M_t[n] + sum_r (w^r_t[r, n] dr_r + gdot[r, n] k_r),  dk_r += gdot[r, n] M_t[n],
 *   d w[n] = dM_t[n] . (v - M[n] o e),  d e -= w_n dM_t[n] o M[n],  d v += w_n dM_t[n],
 *   dM[n] = dM_t[n] o (1 - w_n e).
 * CB = MEM_CB blocks a pass where R <= MEM_CB_R and they divide W / LZ (W = 64 floats: one pass, each row's
 * 256 bytes read once, in order, rows MEM_PF ahead prefetched into L1; one block a pass made four strided
 * passes over M, M_t and dM_t, which do not fit L1 together, and waited on L2 for every row: with the prefetch 0.92x a call).
 * gi (the incoming dM_t, row stride gi_stride: 0 for an all-zero row) may be the same buffer as gmo. gwp: N
 * vectors of partial sums of d w[n] when more than one pass (scratch, LZ N values); gwn (N) the result. */
#ifndef MEM_PF
#define MEM_PF 8 /* rows ahead */
#endif
#ifndef MEM_CB
#if defined(__AVX512F__) /* 32 vector registers: the 4 R + 8 accumulators dk_r, d e, d v stay in them */
#define MEM_CB 4   /* column blocks a pass where R <= MEM_CB_R and they divide W / LZ; else 1 */
#define MEM_CB_R 4
#else /* fewer registers (and 64-byte vectors split in 2 or 4): one block a pass, as many instantiations */
#define MEM_CB 1
#define MEM_CB_R 0
#endif
#endif
static inline __attribute__((always_inline)) void FN(memory_backward_blocked_r)(
    int N, int W, const real *restrict M, const real *restrict Mt, const real *gi, size_t gi_stride,
    const real *restrict gR, const real *restrict keys, const real *restrict an, const real *restrict gdot,
    const real *restrict sc, const real *restrict w, const real *restrict erase, const real *restrict wv,
    real *restrict gk, real *restrict g_e, real *restrict g_v, real *gmo, real *restrict gwp,
    real *restrict gwn, const int R, const int CB) {
    const int nb = W / LZ;
    for (int jb = 0; jb < nb; jb += CB) {
        const int o = LZ * jb;
        FN(vz) GR[8][MEM_CB], K[8][MEM_CB], GK[8][MEM_CB], E[MEM_CB], WV[MEM_CB], GE[MEM_CB], GV[MEM_CB];
        for (int c = 0; c < CB; ++c) {
            for (int r = 0; r < R; ++r) {
                GR[r][c] = FN(ldz)(gR + r * W + o + LZ * c);
                K[r][c] = FN(ldz)(keys + r * W + o + LZ * c);
                GK[r][c] = FN(ldz)(gk + r * W + o + LZ * c);
            }
            E[c] = FN(ldz)(erase + o + LZ * c);
            WV[c] = FN(ldz)(wv + o + LZ * c);
            GE[c] = FN(ldz)(g_e + o + LZ * c);
            GV[c] = FN(ldz)(g_v + o + LZ * c);
        }
        for (int n = 0; n < N; ++n) {
            const size_t row = (size_t)n * W + o;
            FN(vz) x[MEM_CB], xt[MEM_CB], gm[MEM_CB];
            for (int c = 0; c < CB; ++c) {
                __builtin_prefetch(M + row + MEM_PF * W + LZ * c, 0, 3);
                __builtin_prefetch(Mt + row + MEM_PF * W + LZ * c, 0, 3);
                __builtin_prefetch(gi + (n + MEM_PF) * gi_stride + o + LZ * c, 1, 3);
                x[c] = FN(ldz)(M + row + LZ * c);
                xt[c] = FN(ldz)(Mt + row + LZ * c);
                gm[c] = FN(ldz)(gi + n * gi_stride + o + LZ * c) + xt[c] * sc[n];
            }
            for (int r = 0; r < R; ++r) {
                const real g = gdot[r * N + n], a = an[r * N + n];
                for (int c = 0; c < CB; ++c) {
                    gm[c] += a * GR[r][c] + g * K[r][c];
                    GK[r][c] += g * xt[c];
                }
            }
            FN(vz) part = gm[0] * (WV[0] - x[0] * E[0]);
            for (int c = 1; c < CB; ++c) part += gm[c] * (WV[c] - x[c] * E[c]);
            if (CB == nb)
                gwn[n] = FN(hsumz)(part);
            else
                FN(stz)(gwp + LZ * n, jb ? FN(ldz)(gwp + LZ * n) + part : part);
            const real wn = w[n];
            for (int c = 0; c < CB; ++c) {
                const FN(vz) wg = wn * gm[c];
                GE[c] -= wg * x[c];
                GV[c] += wg;
                FN(stz)(gmo + row + LZ * c, gm[c] - wg * E[c]);
            }
        }
        for (int c = 0; c < CB; ++c) {
            for (int r = 0; r < R; ++r) FN(stz)(gk + r * W + o + LZ * c, GK[r][c]);
            FN(stz)(g_e + o + LZ * c, GE[c]);
            FN(stz)(g_v + o + LZ * c, GV[c]);
        }
    }
    if (CB != nb)
        for (int n = 0; n < N; ++n) gwn[n] = FN(hsumz)(FN(ldz)(gwp + LZ * n));
}

static void FN(memory_row_backward_any)(int W, const real *m, const real *mt, const real *gi, const real *gR,
                                        const real *keys, const real *a, const real *gd, real sc, real wn,
                                        const real *erase, const real *wv, real *gk, real *g_e, real *g_v,
                                        real *gmo, real *gwn_out, int R) {
    real gwn = 0;
    for (int j = 0; j < W; ++j) {
        real gm = gi[j] + mt[j] * sc;
        for (int r = 0; r < R; ++r) {
            gm += a[r] * gR[r * W + j] + gd[r] * keys[r * W + j];
            gk[r * W + j] += gd[r] * mt[j];
        }
        const real me = m[j] * erase[j];
        gwn += gm * (wv[j] - me);
        g_e[j] -= wn * gm * m[j];
        g_v[j] += wn * gm;
        gmo[j] = gm - gm * wn * erase[j];
    }
    *gwn_out = gwn;
}

/* out = softmax(scale * x) over n entries */
static void FN(softmax)(const real *x, real scale, real *out, int n) {
    real m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int i = 0; i < n; ++i) m = x[i] * scale > m ? x[i] * scale : m;
    real s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; ++i) {
        out[i] = FN(exp)(x[i] * scale - m);
        s += out[i];
    }
    const real inv = 1 / s;
#pragma omp simd
    for (int i = 0; i < n; ++i) out[i] *= inv;
}

/* gradient of the logits of a softmax with probabilities p and output gradient g (in place in g) */
static void FN(softmax_backward)(const real *p, real *g, int n) {
    real s = FN(dot)(p, g, n);
    for (int i = 0; i < n; ++i) g[i] = p[i] * (g[i] - s);
}

/* k . M[n] into dots[n] and |M[n]|^2 into sq[n] for the N rows of M (W a multiple of 8): 8 rows at a time,
 * independent vector accumulators, the 8 rows' sums of a quantity by one transpose-and-add; the last rows
 * (N not a multiple of 8) one at a time with horizontal sums. */
static void FN(key_dots_blocked)(int N, int W, const real *restrict M, const real *restrict key,
                                 real *restrict dots, real *restrict sq) {
    const int nv = W / 8;
    int n = 0;
    for (; n + 8 <= N; n += 8) {
        FN(v8) d[8] = {{0}}, q[8] = {{0}};
        const real *m = M + (size_t)n * W;
        for (int c = 0; c < nv; ++c) {
            const FN(v8) kv = FN(ld8)(key + 8 * c);
            for (int t = 0; t < 8; ++t) {
                const FN(v8) x = FN(ld8)(m + (size_t)t * W + 8 * c);
                d[t] += x * kv;
                q[t] += x * x;
            }
        }
        FN(st8)(dots + n, FN(reduce8)(d));
        FN(st8)(sq + n, FN(reduce8)(q));
    }
    for (; n < N; ++n) {
        FN(v8) d = {0}, q = {0};
        for (int c = 0; c < nv; ++c) {
            const FN(v8) x = FN(ld8)(M + (size_t)n * W + 8 * c);
            d += x * FN(ld8)(key + 8 * c);
            q += x * x;
        }
        dots[n] = FN(hsum8)(d);
        sq[n] = FN(hsum8)(q);
    }
}

/* The erase-and-write M_t[n] = M[n] + w_n (v - M[n] o e) (when `write`; else M_t given) fused with the read
 * keys' dot products: dots[r, n] = k_r . M_t[n], sq[n] = |M_t[n]|^2 (W a multiple of 8, R <= 8). The keys,
 * e and v are packed per column vector (constant offsets); each row of M is loaded once; the sums of 8 rows'
 * accumulators of one quantity by one transpose-and-add. (4 rows per pass, the packed vectors loaded once
 * per 4 rows, was ~5% faster on a hot memory pass but 1.2-1.9% slower in train-step A/Bs: 4 store streams
 * into cold memory.) */
/* One row: its R + 1 accumulators (8 lanes each) into a[r] and q. */
static inline __attribute__((always_inline)) void FN(write_read_row)(int W, const FN(v8) *restrict pk,
                                                                    const real *restrict m, real *restrict mt,
                                                                    real wn, int write, FN(v8) *restrict q,
                                                                    FN(v8) *restrict a, const int R) {
    const int nv = W / 8, PS = R + 2;
    FN(v8) acc[8], qq = {0};
    for (int r = 0; r < R; ++r) acc[r] = (FN(v8)){0};
    for (int c = 0; c < nv; ++c) {
        const FN(v8) *P = pk + c * PS;
        FN(v8) x;
        if (write) {
            const FN(v8) mv = FN(ld8)(m + 8 * c);
            x = mv + wn * (P[1] - mv * P[0]);
            FN(st8)(mt + 8 * c, x);
        } else {
            x = FN(ld8)(mt + 8 * c);
        }
        qq += x * x;
        for (int r = 0; r < R; ++r) acc[r] += x * P[2 + r];
    }
    *q = qq;
    for (int r = 0; r < R; ++r) a[r] = acc[r];
}

static inline __attribute__((always_inline)) void FN(write_read_dots_r)(
    int N, int W, const real *restrict M, real *restrict Mt, const real *restrict ww,
    const real *restrict erase, const real *restrict wv, const real *restrict keys, real *restrict dots,
    real *restrict sq, int write, const int R) {
    const int nv = W / 8, PS = R + 2;
    const size_t count = (size_t)nv * PS;
    FN(v8) stack[128], *heap = count > 128 ? (FN(v8) *)aligned_alloc(64, sizeof(FN(v8)) * count) : NULL;
    FN(v8) *pk = heap ? heap : stack;
    for (int c = 0; c < nv; ++c) {
        pk[c * PS] = FN(ld8)(erase + 8 * c);
        pk[c * PS + 1] = FN(ld8)(wv + 8 * c);
        for (int r = 0; r < R; ++r) pk[c * PS + 2 + r] = FN(ld8)(keys + (size_t)r * W + 8 * c);
    }
    int n0 = 0;
    for (; n0 + 8 <= N; n0 += 8) {
        FN(v8) q8[8], a8[8][8], at[8];
        for (int t = 0; t < 8; ++t) {
            const size_t o = (size_t)(n0 + t) * W;
            FN(write_read_row)(W, pk, M + o, Mt + o, ww[n0 + t], write, q8 + t, at, R);
            for (int r = 0; r < R; ++r) a8[r][t] = at[r];
        }
        FN(st8)(sq + n0, FN(reduce8)(q8));
        for (int r = 0; r < R; ++r) FN(st8)(dots + (size_t)r * N + n0, FN(reduce8)(a8[r]));
    }
    for (; n0 < N; ++n0) { /* the last rows (N not a multiple of 8): one at a time, generic */
        const real *m = M + (size_t)n0 * W;
        real *mt = Mt + (size_t)n0 * W;
        if (write) {
            const real w = ww[n0];
#pragma omp simd
            for (int j = 0; j < W; ++j) mt[j] = m[j] + w * (wv[j] - m[j] * erase[j]);
        }
        real d[8];
        FN(row_dots)(mt, keys, W, R, d, sq + n0);
        for (int r = 0; r < R; ++r) dots[(size_t)r * N + n0] = d[r];
    }
    free(heap);
}

/* The ascending stable order of s (N a multiple of 8): rank n = #{m: s_m < s_n} + #{m < n: s_m == s_n},
 * order[rank n] = n; vectorised over NB blocks of 8 n at a time against one broadcast s_m (NB a constant:
 * NB compares per broadcast): for m before an n-block s_m <= s_n counts, after it s_m < s_n, inside it the
 * full test. */
static inline __attribute__((always_inline)) void FN(rank_pass)(int N, const real *restrict s, int *restrict order,
                                                                int n0, const int NB) {
    FN(v8) v[4];
    FN(iv8) cnt[4], idx[4];
    for (int q = 0; q < NB; ++q) {
        v[q] = FN(ld8)(s + n0 + 8 * q);
        cnt[q] = (FN(iv8)){0};
        for (int l = 0; l < 8; ++l) idx[q][l] = n0 + 8 * q + l;
    }
    for (int m = 0; m < n0; ++m) {
        const FN(v8) sm = (FN(v8)){0} + s[m];
        for (int q = 0; q < NB; ++q) cnt[q] -= sm <= v[q];
    }
    for (int qm = 0; qm < NB; ++qm) /* m inside the NB blocks: block qm */
        for (int m = n0 + 8 * qm; m < n0 + 8 * qm + 8; ++m) {
            const FN(v8) sm = (FN(v8)){0} + s[m];
            for (int q = 0; q < NB; ++q) {
                if (q < qm)
                    cnt[q] -= sm < v[q];
                else if (q > qm)
                    cnt[q] -= sm <= v[q];
                else
                    cnt[q] -= (sm < v[q]) | ((sm == v[q]) & (m < idx[q]));
            }
        }
    for (int m = n0 + 8 * NB; m < N; ++m) {
        const FN(v8) sm = (FN(v8)){0} + s[m];
        for (int q = 0; q < NB; ++q) cnt[q] -= sm < v[q];
    }
    for (int q = 0; q < NB; ++q)
        for (int l = 0; l < 8; ++l) order[cnt[q][l]] = n0 + 8 * q + l;
}

static void FN(rank_order_blocked)(int N, const real *restrict s, int *restrict order) {
    int n0 = 0;
    for (; n0 + 32 <= N; n0 += 32) FN(rank_pass)(N, s, order, n0, 4);
    for (; n0 + 16 <= N; n0 += 16) FN(rank_pass)(N, s, order, n0, 2);
    for (; n0 < N; n0 += 8) FN(rank_pass)(N, s, order, n0, 1);
}

/* The allocation over the free list (float32; N a multiple of 4, N <= 1024): su[j] = s[phi_j], the exclusive
 * products sprod[j] = prod_{i<j} su[i], salloc[j] = (1 - su[j]) sprod[j], alloc[phi_j] = salloc[j]. The product
 * runs in double as 4 independent chains over quarters of the list (a quarter's product of >= eps factors
 * stays normal in double), then each quarter is scaled by the product of the quarters before it; the carried
 * product is flushed to zero below FLT_MIN, and so are the float results (no subnormal arithmetic). One
 * rounding to float instead of one per factor: within float rounding of the sequential product. */
static void FN(alloc_sorted_split)(int N, const int *restrict order, const FN(pair) *restrict pairs,
                                   real *restrict su, real *restrict sprod, real *restrict salloc,
                                   real *restrict alloc) {
    const int S = N / 4;
    const real tiny = (real)FLT_MIN;
    double part[1024];
    for (int j = 0; j < N; ++j) su[j] = pairs[order[j]].v;
    double p0 = 1, p1 = 1, p2 = 1, p3 = 1;
    for (int j = 0; j < S; ++j) {
        part[j] = p0;
        part[S + j] = p1;
        part[2 * S + j] = p2;
        part[3 * S + j] = p3;
        p0 *= su[j];
        p1 *= su[S + j];
        p2 *= su[2 * S + j];
        p3 *= su[3 * S + j];
    }
    double carry[4] = {1, p0, 0, 0};
    carry[1] = carry[1] < FLT_MIN ? 0 : carry[1];
    carry[2] = carry[1] * p1;
    carry[2] = carry[2] < FLT_MIN ? 0 : carry[2];
    carry[3] = carry[2] * p2;
    carry[3] = carry[3] < FLT_MIN ? 0 : carry[3];
    for (int q = 0; q < 4; ++q) {
        const double cq = carry[q];
#pragma omp simd
        for (int j = q * S; j < (q + 1) * S; ++j) {
            const double pd = cq * part[j];
            const real prod = pd < FLT_MIN ? 0 : (real)pd;
            real a = (1 - su[j]) * prod;
            a = a < tiny ? 0 : a;
            sprod[j] = prod;
            salloc[j] = a;
        }
    }
    for (int j = 0; j < N; ++j) alloc[order[j]] = salloc[j];
}

/* The step up to the link: activations, usage u_t, write weighting w^w_t, M_t (into Mt), read
 * content weightings on M_t. */
/* aux (per sample, (4 + R) N values) keeps the step's costliest intermediates for the backward:
 * |M_{t-1,n}| (N), write similarity (N), |M_{t,n}| (N), read similarities (R N), allocation order (N).
 * aux_mode: 0 none, 1 save them, 2 load them (skip the dot products and the sort). have_mt: Mt already
 * holds M_t (skip the erase-and-write). */
static void FN(stage_memory)(const access_cfg *c, FN(work) * k, const real *vec, const real *M,
                             const real *u, const real *rw, const real *pww, real *ut, real *Mt, real *aux,
                             int aux_mode, int have_mt) {
    const int N = c->N, W = c->W, R = c->R;
    const real eps = (real)c->eps, decay = (real)c->decay;
    const real *keys = vec, *wk = vec + R * W, *wv = vec + (R + 1) * W;
    const real *raw_s = vec + (R + 2) * W, *raw_g = raw_s + R + 1;
    const int nsig = W + (c->alloc ? R + 1 : 0) + 1;
    for (int h = 0; h <= R; ++h) k->strength[h] = 1 + FN(softplus)(raw_s[h]);
    for (int i = 0; i < nsig; ++i) k->gate[i] = FN(sigmoid)(raw_g[i]);
    if (c->links) {
        const real *raw_m = raw_g + nsig;
        for (int r = 0; r < R; ++r) FN(softmax)(raw_m + 3 * r, 1, k->mode + 3 * r, 3);
    }
    const real *erase = k->gate, *free_g = k->gate + W;
    const real wg = k->gate[nsig - 1];
    /* u_t = (u + w - u w) psi, psi = prod_i (1 - f^i w^{r,i}_{t-1}) (times the decay) */
    {
        real *restrict psi = k->psi, *restrict pre = k->pre;
        const real start = c->alloc ? 1 : decay;
        for (int n = 0; n < N; ++n) psi[n] = start;
        if (c->alloc) { /* head by head over n (vectorised), the same products in the same order */
            for (int r = 0; r < R; ++r) {
                const real fr = free_g[r];
                const real *restrict rwr = rw + (size_t)r * N;
#pragma omp simd
                for (int n = 0; n < N; ++n) psi[n] *= 1 - fr * rwr[n];
            }
            if (decay != 1)
                for (int n = 0; n < N; ++n) psi[n] *= decay;
        }
#pragma omp simd
        for (int n = 0; n < N; ++n) {
            pre[n] = u[n] + pww[n] - u[n] * pww[n];
            ut[n] = pre[n] * psi[n];
        }
    }
    /* write content weighting c^w = softmax(beta D(k, M_{t-1})) */
    k->knorm[R] = (real)sqrt(FN(dot)(wk, wk, W) + eps);
    real *aux_mnorm = aux, *aux_wsim = aux + N, *aux_rnorm = aux + 2 * N, *aux_rsim = aux + 3 * N;
    real *aux_order = aux + (3 + R) * N;
    if (aux_mode == 2) {
        memcpy(k->mnorm, aux_mnorm, sizeof(real) * N);
        memcpy(k->wsim, aux_wsim, sizeof(real) * N);
    } else {
        /* k . M_{t-1}[n] into wsim, |M_{t-1}[n]|^2 into mnorm; then the norms and cosines, vectorised */
        if (W % 8 == 0) {
            FN(key_dots_blocked)(N, W, M, wk, k->wsim, k->mnorm);
        } else {
            for (int n = 0; n < N; ++n) FN(row_dots)(M + (size_t)n * W, wk, W, 1, k->wsim + n, k->mnorm + n);
        }
        const real kn = k->knorm[R];
#pragma omp simd
        for (int n = 0; n < N; ++n) {
            const real mn = (real)sqrt(k->mnorm[n] + eps);
            k->mnorm[n] = mn;
            k->wsim[n] = k->wsim[n] / (kn * mn + eps);
        }
        if (aux_mode == 1) {
            memcpy(aux_mnorm, k->mnorm, sizeof(real) * N);
            memcpy(aux_wsim, k->wsim, sizeof(real) * N);
        }
    }
    FN(softmax)(k->wsim, k->strength[R], k->wc, N);
    /* allocation a[phi_j] = (1 - u[phi_j]) prod_{i<j} u[phi_i], phi the ascending free list */
    if (c->alloc) {
        const real ga = k->gate[W + R];
        for (int n = 0; n < N; ++n) {
            k->pairs[n].v = eps + (1 - eps) * ut[n];
            k->pairs[n].i = n;
        }
        /* stable ascending order by ranks: rank n = #{m: s_m < s_n or (s_m == s_n and m < n)}
         * (branch-free and vectorised; N^2 compares beat a merge sort's mispredictions here) */
        if (aux_mode == 2) {
            for (int j = 0; j < N; ++j) k->order[j] = (int)aux_order[j];
        } else {
            for (int n = 0; n < N; ++n) k->su[n] = k->pairs[n].v;
            if (N % 8 == 0) {
                FN(rank_order_blocked)(N, k->su, k->order);
            } else {
                for (int n = 0; n < N; ++n) {
                    const real v = k->su[n];
                    int rank = 0;
#pragma omp simd reduction(+ : rank)
                    for (int m = 0; m < N; ++m) rank += (k->su[m] < v) | ((k->su[m] == v) & (m < n));
                    k->order[rank] = n;
                }
            }
            if (aux_mode == 1)
                for (int j = 0; j < N; ++j) aux_order[j] = (real)k->order[j];
        }
        {
            /* (restrict locals: through k's fields every store would reload the pointers.) The product is
             * flushed to zero below the smallest normal number: a running product of N usages otherwise
             * crosses the subnormal range, ~100 cycles per multiplication there (changes below 1e-37). */
            const int *restrict order = k->order;
            const FN(pair) *restrict pairs = k->pairs;
            real *restrict su = k->su, *restrict sprod = k->sprod, *restrict salloc = k->salloc;
            real *restrict alloc = k->alloc;
            const real tiny = sizeof(real) == 4 ? (real)FLT_MIN : (real)DBL_MIN;
            if (sizeof(real) == 4 && N % 4 == 0 && N <= 1024) {
                FN(alloc_sorted_split)(N, order, pairs, su, sprod, salloc, alloc);
            } else {
                real prod = 1;
                for (int j = 0; j < N; ++j) {
                    const real sj = pairs[order[j]].v;
                    real a = (1 - sj) * prod;
                    a = a < tiny ? 0 : a;
                    su[j] = sj;
                    sprod[j] = prod;
                    salloc[j] = a;
                    alloc[order[j]] = a;
                    prod *= sj;
                    prod = prod < tiny ? 0 : prod;
                }
            }
        }
        for (int n = 0; n < N; ++n) k->ww[n] = wg * (ga * k->alloc[n] + (1 - ga) * k->wc[n]);
    } else {
        for (int n = 0; n < N; ++n) k->ww[n] = wg * k->wc[n];
    }
    /* M_t = M_{t-1} o (1 - w e^T) + w v^T; read content weightings c^{r,i} = softmax(beta_i D(k_i, M_t)) */
    for (int r = 0; r < R; ++r) k->knorm[r] = (real)sqrt(FN(dot)(keys + r * W, keys + r * W, W) + eps);
    const int blocked = W % 8 == 0 && R <= 8;
    if (aux_mode == 2 || !blocked) {
        if (!have_mt) {
            for (int n = 0; n < N; ++n) {
                const real *m = M + (size_t)n * W;
                real *mt = Mt + (size_t)n * W;
                const real w = k->ww[n];
#pragma omp simd
                for (int j = 0; j < W; ++j) mt[j] = m[j] + w * (wv[j] - m[j] * erase[j]);
            }
        }
    }
    if (aux_mode == 2) {
        memcpy(k->rnorm, aux_rnorm, sizeof(real) * N);
        memcpy(k->rsim, aux_rsim, sizeof(real) * (size_t)R * N);
    } else {
        /* k_r . M_t[n] into rsim[r, n], |M_t[n]|^2 into rnorm[n] (fused with the erase-and-write when
         * blocked); then the norms and cosines, vectorised */
        if (blocked) {
#define CALL(RR) FN(write_read_dots_r)(N, W, M, Mt, k->ww, erase, wv, keys, k->rsim, k->rnorm, !have_mt, RR)
            LINK_SWITCH(R, CALL, )
#undef CALL
        } else {
            real d[64];
            real *dots = R <= 64 ? d : (real *)malloc(sizeof(real) * R);
            for (int n = 0; n < N; ++n) {
                FN(row_dots)(Mt + (size_t)n * W, keys, W, R, dots, k->rnorm + n);
                for (int r = 0; r < R; ++r) k->rsim[r * N + n] = dots[r];
            }
            if (dots != d) free(dots);
        }
#pragma omp simd
        for (int n = 0; n < N; ++n) k->rnorm[n] = (real)sqrt(k->rnorm[n] + eps);
        for (int r = 0; r < R; ++r) {
            const real kr = k->knorm[r];
            real *sim = k->rsim + r * N;
#pragma omp simd
            for (int n = 0; n < N; ++n) sim[n] = sim[n] / (kr * k->rnorm[n] + eps);
        }
        if (aux_mode == 1) {
            memcpy(aux_rnorm, k->rnorm, sizeof(real) * N);
            memcpy(aux_rsim, k->rsim, sizeof(real) * (size_t)R * N);
        }
    }
    for (int r = 0; r < R; ++r) FN(softmax)(k->rsim + r * N, k->strength[r], k->rc + r * N, N);
}

/* w^r_t = pi_1 b + pi_2 f + pi_3 c^r (or c^r without links) */
static void FN(stage_read_weights)(const access_cfg *c, FN(work) * k, real *restrict rwt) {
    const int N = c->N, R = c->R;
    const real *restrict rc = k->rc;
    if (!c->links) {
        memcpy(rwt, rc, sizeof(real) * (size_t)R * N);
        return;
    }
    const real *restrict b = k->b, *restrict f = k->f;
    for (int r = 0; r < R; ++r) {
        const real m0 = k->mode[3 * r], m1 = k->mode[3 * r + 1], m2 = k->mode[3 * r + 2];
        const size_t o = (size_t)r * N;
#pragma omp simd
        for (int n = 0; n < N; ++n) rwt[o + n] = m2 * rc[o + n] + (m0 * b[o + n] + m1 * f[o + n]);
    }
}

/* reads r^i = M_t^T w^{r,i} for R <= 8, W a multiple of 8: CW column vectors of all R reads stay in
 * registers over the memory rows (one load of M_t per R FMAs); wT (N R) holds w^r transposed, so a row's
 * R weights are at constant offsets. Sums over n in the same order as the plain loop. */
static inline __attribute__((always_inline)) void FN(reads_blocked_r)(int N, int W, const real *restrict wT,
                                                                     const real *restrict Mt,
                                                                     real *restrict reads, const int R,
                                                                     const int CW) {
    const int nv = W / 8;
    int c0 = 0;
    for (; c0 + CW <= nv; c0 += CW) {
        FN(v8) acc[8][4];
        for (int r = 0; r < R; ++r)
            for (int c = 0; c < CW; ++c) acc[r][c] = (FN(v8)){0};
        for (int n = 0; n < N; ++n) {
            const real *mt = Mt + (size_t)n * W + 8 * c0, *a = wT + (size_t)n * R;
            FN(v8) m[4];
            for (int c = 0; c < CW; ++c) m[c] = FN(ld8)(mt + 8 * c);
            for (int r = 0; r < R; ++r)
                for (int c = 0; c < CW; ++c) acc[r][c] += a[r] * m[c];
        }
        for (int r = 0; r < R; ++r)
            for (int c = 0; c < CW; ++c) FN(st8)(reads + (size_t)r * W + 8 * (c0 + c), acc[r][c]);
    }
    for (; c0 < nv; ++c0) { /* the last column vectors, one at a time */
        FN(v8) acc[8];
        for (int r = 0; r < R; ++r) acc[r] = (FN(v8)){0};
        for (int n = 0; n < N; ++n) {
            const FN(v8) m = FN(ld8)(Mt + (size_t)n * W + 8 * c0);
            for (int r = 0; r < R; ++r) acc[r] += wT[(size_t)n * R + r] * m;
        }
        for (int r = 0; r < R; ++r) FN(st8)(reads + (size_t)r * W + 8 * c0, acc[r]);
    }
}

/* column vectors per pass of the blocked reads: R CW accumulators (at most 16) */
#define READS_CW(R) ((R) <= 4 ? 4 : 2)

/* reads r^i = M_t^T w^{r,i} */
static void FN(stage_reads)(const access_cfg *c, const real *rwt, const real *Mt, real *reads) {
    const int N = c->N, W = c->W, R = c->R;
    if (W % 8 == 0 && R <= 8) {
        real stack[2048]; /* w^r transposed: on the stack up to 2048 values (N = 128, R = 4: 512) */
        real *heap = (size_t)N * R > 2048 ? (real *)malloc(sizeof(real) * N * R) : NULL;
        real *wT = heap ? heap : stack;
        for (int r = 0; r < R; ++r)
            for (int n = 0; n < N; ++n) wT[n * R + r] = rwt[r * N + n];
#define CALL(RR) FN(reads_blocked_r)(N, W, wT, Mt, reads, RR, READS_CW(RR))
        LINK_SWITCH(R, CALL, )
#undef CALL
        free(heap);
        return;
    }
    memset(reads, 0, sizeof(real) * (size_t)R * W);
    for (int n = 0; n < N; ++n) {
        const real *mt = Mt + (size_t)n * W;
        for (int r = 0; r < R; ++r) {
            const real a = rwt[r * N + n];
            real *out = reads + r * W;
#pragma omp simd
            for (int j = 0; j < W; ++j) out[j] += a * mt[j];
        }
    }
}

typedef struct {
    const access_cfg *c;
    const real *vec;
    const real *M;
    const real *u;
    const real *L;
    const real *p;
    const real *rw;
    const real *ww;
    real *reads;
    real *Mt;
    real *ut;
    real *Lt;
    real *pt;
    real *rwt;
    real *wwt;
    real *aux;
} FN(access_forward_job);

static void FN(access_forward_chunk)(const void *job, int s0, int s1) {
    const FN(access_forward_job) *J = (const FN(access_forward_job) *)job;
    const access_cfg *c = J->c;
    const real *vec = J->vec;
    const real *M = J->M;
    const real *u = J->u;
    const real *L = J->L;
    const real *p = J->p;
    const real *rw = J->rw;
    const real *ww = J->ww;
    real *reads = J->reads;
    real *Mt = J->Mt;
    real *ut = J->ut;
    real *Lt = J->Lt;
    real *pt = J->pt;
    real *rwt = J->rwt;
    real *wwt = J->wwt;
    real *aux = J->aux;
    const int N = c->N, W = c->W, R = c->R, V = c->V;
    char *mem = FN(work_alloc)(c, 0);
    FN(work) k;
    FN(work_init)(&k, c, mem, 0);
    for (int s = s0; s < s1; ++s) {
        const real *rws = rw + (size_t)s * R * N;
        const size_t nw = (size_t)s * N * W;
        FN(stage_memory)(c, &k, vec + (size_t)s * V, M + nw, u + (size_t)s * N, rws, ww + (size_t)s * N,
                         ut + (size_t)s * N, Mt + nw, aux ? aux + (size_t)s * (4 + R) * N : NULL, aux ? 1 : 0, 0);
        memcpy(wwt + (size_t)s * N, k.ww, sizeof(real) * N);
        if (c->links) {
            /* L_t[i,j] = (1 - w_i - w_j) L[i,j] + w_i p_j (zero diagonal); f = L_t w^r, b = L_t^T w^r,
             * in one pass over the link. */
            const real *Ls = L + (size_t)s * N * N, *ps = p + (size_t)s * N, *w = k.ww;
            real *Lts = Lt + (size_t)s * N * N;
            FN(link_forward)(N, R, Ls, w, ps, rws, Lts, k.f, k.b);
            real sw = 0;
            for (int n = 0; n < N; ++n) sw += w[n];
            for (int n = 0; n < N; ++n) pt[(size_t)s * N + n] = w[n] + (1 - sw) * ps[n];
        }
        FN(stage_read_weights)(c, &k, rwt + (size_t)s * R * N);
        FN(stage_reads)(c, rwt + (size_t)s * R * N, Mt + nw, reads + (size_t)s * R * W);
    }
    free(mem);
}

void FN(access_forward)(const access_cfg *c, const real *vec, const real *M, const real *u, const real *L,
                        const real *p, const real *rw, const real *ww, real *reads, real *Mt, real *ut,
                        real *Lt, real *pt, real *rwt, real *wwt, real *aux) {
    const FN(access_forward_job) job = {c, vec, M, u, L, p, rw, ww, reads, Mt, ut, Lt, pt, rwt, wwt, aux};
    pool_run(c->threads, c->B, FN(step_cost)(c, 0), FN(access_forward_chunk), &job);
}

/* Cosine-similarity backward for H keys against memory rows: gdot (H, N) is d loss / d dot / denom
 * already; accumulates into gmem (N, W) and writes gkeys (H, W) (key-norm term included). */
static void FN(cosine_backward)(int N, int W, int H, const real *mem, const real *norm, const real *keys,
                                const real *knorm, const real *sim, real *gdot, real *gmn, real *gmem,
                                real *gkeys, int stride_gkeys) {
    /* gden = -gdot sim; |k| and |M| gradients */
    memset(gmn, 0, sizeof(real) * N);
    for (int h = 0; h < H; ++h) {
        real gkn = 0;
        for (int n = 0; n < N; ++n) {
            const real gden = -gdot[h * N + n] * sim[h * N + n];
            gkn += gden * norm[n];
            gmn[n] += gden * knorm[h];
        }
        real *gk = gkeys + h * stride_gkeys;
        const real *kk = keys + h * W;
        const real sc = gkn / knorm[h];
        for (int j = 0; j < W; ++j) gk[j] = kk[j] * sc;
    }
    if (H == 1 && W % LZ == 0 && W <= 8 * LZ) { /* one key, W in at most 8 vectors: dk stays in registers */
        const int nb = W / LZ;
        FN(vz) KK[8], GK[8];
        for (int jb = 0; jb < nb; ++jb) {
            KK[jb] = FN(ldz)(keys + LZ * jb);
            GK[jb] = FN(ldz)(gkeys + LZ * jb);
        }
        for (int n = 0; n < N; ++n) {
            const real *m = mem + (size_t)n * W;
            real *gm = gmem + (size_t)n * W;
            const real sc = gmn[n] / norm[n], g = gdot[n];
            for (int jb = 0; jb < nb; ++jb) {
                const FN(vz) x = FN(ldz)(m + LZ * jb);
                FN(stz)(gm + LZ * jb, FN(ldz)(gm + LZ * jb) + x * sc + g * KK[jb]);
                GK[jb] += g * x;
            }
        }
        for (int jb = 0; jb < nb; ++jb) FN(stz)(gkeys + LZ * jb, GK[jb]);
        return;
    }
    for (int n = 0; n < N; ++n) {
        const real *m = mem + (size_t)n * W;
        real *gm = gmem + (size_t)n * W;
        const real sc = gmn[n] / norm[n];
#pragma omp simd
        for (int j = 0; j < W; ++j) gm[j] += m[j] * sc;
        for (int h = 0; h < H; ++h) {
            const real g = gdot[h * N + n];
            const real *kk = keys + h * W;
            real *gk = gkeys + h * stride_gkeys;
#pragma omp simd
            for (int j = 0; j < W; ++j) {
                gm[j] += g * kk[j];
                gk[j] += g * m[j];
            }
        }
    }
}

typedef struct {
    const access_cfg *c;
    const real *vec;
    const real *M;
    const real *u;
    const real *L;
    const real *p;
    const real *rw;
    const real *ww;
    const real *rwt;
    const real *g_reads;
    const real *g_Mt;
    const real *g_ut;
    const real *g_Lt;
    const real *g_pt;
    const real *g_rwt;
    const real *g_wwt;
    real *g_vec;
    real *g_M;
    real *g_u;
    real *g_L;
    real *g_p;
    real *g_rw;
    real *g_ww;
    const real *aux;
    const real *Mt_in;
} FN(access_backward_job);

static void FN(access_backward_chunk)(const void *job, int s0, int s1) {
    const FN(access_backward_job) *J = (const FN(access_backward_job) *)job;
    const access_cfg *c = J->c;
    const real *vec = J->vec;
    const real *M = J->M;
    const real *u = J->u;
    const real *L = J->L;
    const real *p = J->p;
    const real *rw = J->rw;
    const real *ww = J->ww;
    const real *rwt = J->rwt;
    const real *g_reads = J->g_reads;
    const real *g_Mt = J->g_Mt;
    const real *g_ut = J->g_ut;
    const real *g_Lt = J->g_Lt;
    const real *g_pt = J->g_pt;
    const real *g_rwt = J->g_rwt;
    const real *g_wwt = J->g_wwt;
    real *g_vec = J->g_vec;
    real *g_M = J->g_M;
    real *g_u = J->g_u;
    real *g_L = J->g_L;
    real *g_p = J->g_p;
    real *g_rw = J->g_rw;
    real *g_ww = J->g_ww;
    const real *aux = J->aux;
    const real *Mt_in = J->Mt_in;
    const int N = c->N, W = c->W, R = c->R, V = c->V;
    const real eps = (real)c->eps, decay = (real)c->decay;
    const int nsig = W + (c->alloc ? R + 1 : 0) + 1;
    const fpstate_t fp_in = flush_subnormals();
    char *mem = FN(work_alloc)(c, 1);
    FN(work) k;
    FN(work_init)(&k, c, mem, 1);
    real *ut = k.gu; /* u_t is only needed inside the stage; g_u is filled later */
    for (int s = s0; s < s1; ++s) {
        const real *v = vec + (size_t)s * V, *Ms = M + (size_t)s * N * W, *us = u + (size_t)s * N;
        const real *rws = rw + (size_t)s * R * N, *pww = ww + (size_t)s * N;
        const real *gR = g_reads + (size_t)s * R * W, *gMts = g_Mt ? g_Mt + (size_t)s * N * W : NULL;
        real *gv = g_vec + (size_t)s * V, *gMs = g_M + (size_t)s * N * W, *grw_prev = g_rw + (size_t)s * R * N;
        /* recompute the step (or load what the forward kept, and take M_t when given) */
        real *Mt_s = Mt_in ? (real *)Mt_in + (size_t)s * N * W : k.Mt; /* read only when given */
        FN(stage_memory)(c, &k, v, Ms, us, rws, pww, ut, Mt_s, aux ? (real *)aux + (size_t)s * (4 + R) * N : NULL,
                         aux ? 2 : 0, Mt_in != NULL);
        const real *w = k.ww, *erase = k.gate, *free_g = k.gate + W, *wv = v + (R + 1) * W;
        const real wg = k.gate[nsig - 1];
        /* d w^r_t: from the next step and from the reads */
        FN(read_dots_backward)(N, W, R, Mt_s, gR, g_rwt + (size_t)s * R * N, k.grw);
        memset(grw_prev, 0, sizeof(real) * (size_t)R * N);
        memset(k.gw, 0, sizeof(real) * N);
        real gmode[3 * 64 + 3];
        real *gmodes = R <= 64 ? gmode : (real *)malloc(sizeof(real) * 3 * R);
        if (c->links) {
            const real *Ls = L + (size_t)s * N * N, *ps = p + (size_t)s * N, *gLs = g_Lt ? g_Lt + (size_t)s * N * N : NULL;
            const real *gps = g_pt + (size_t)s * N;
            real *gLp = g_L + (size_t)s * N * N, *gpp = g_p + (size_t)s * N;
            for (int r = 0; r < R; ++r)
                for (int n = 0; n < N; ++n) {
                    k.gf[r * N + n] = k.mode[3 * r + 1] * k.grw[r * N + n];
                    k.gb[r * N + n] = k.mode[3 * r] * k.grw[r * N + n];
                }
            /* one pass over (L_{t-1}, dL_t): h = L_t dw^r, q = dw^r L_t, dw^w, dp, dL_{t-1} */
            /* meanwhile fetch what the memory pass reads next (M_{t-1}, dM_t) and the next sample's M_t and
             * kept intermediates (its first passes) */
            const size_t nw = (size_t)N * W * sizeof(real);
            prefetch_plan pf = {{(const char *)Ms, (const char *)gMts}, {nw, gMts ? nw : 0}, {0}};
            if (s + 1 < s1) {
                pf.at[2] = Mt_in ? (const char *)(Mt_s + (size_t)N * W) : NULL;
                pf.bytes[2] = nw;
                pf.at[3] = aux ? (const char *)(aux + (size_t)(s + 1) * (4 + R) * N) : NULL;
                pf.bytes[3] = (size_t)(4 + R) * N * sizeof(real);
            }
            for (int j = 0; j < 4; ++j) pf.step[j] = pf.bytes[j] / N;
            FN(link_backward)(N, R, Ls, gLs, w, ps, rws, k.grw, k.gb, k.gf, k.f, k.b, k.gw, k.gp, gLp, k.row,
                              k.grow, k.zero, &pf);
            /* p_t = (1 - sum w) p_{t-1} + w */
            real sw = 0, gpp_dot = 0;
            for (int n = 0; n < N; ++n) {
                sw += w[n];
                gpp_dot += gps[n] * ps[n];
            }
            for (int n = 0; n < N; ++n) {
                gpp[n] = k.gp[n] + (1 - sw) * gps[n];
                k.gw[n] += gps[n] - gpp_dot;
            }
            /* f = L_t w^r, b = L_t^T w^r (w^r of step t-1): d pi_1 = dw^r . b = w^r . h,
             * d pi_2 = dw^r . f = w^r . q; d w^r_{t-1} = pi_1 h + pi_2 q (k.f holds h, k.b holds q) */
            for (int r = 0; r < R; ++r) {
                const real m0 = k.mode[3 * r], m1 = k.mode[3 * r + 1];
                for (int n = 0; n < N; ++n) grw_prev[r * N + n] = m0 * k.f[r * N + n] + m1 * k.b[r * N + n];
                gmodes[3 * r] = FN(dot)(rws + r * N, k.f + r * N, N);
                gmodes[3 * r + 1] = FN(dot)(rws + r * N, k.b + r * N, N);
                gmodes[3 * r + 2] = FN(dot)(k.grw + r * N, k.rc + r * N, N);
                for (int n = 0; n < N; ++n) k.grc[r * N + n] = k.mode[3 * r + 2] * k.grw[r * N + n];
            }
        } else {
            memcpy(k.grc, k.grw, sizeof(real) * (size_t)R * N);
        }
        /* read content weighting: softmax and cosine similarity backward (the |k| and |M_t| parts) */
        real g_rs[65];
        real *g_rstr = R + 1 <= 65 ? g_rs : (real *)malloc(sizeof(real) * (R + 1));
        memset(k.gmn, 0, sizeof(real) * N);
        for (int r = 0; r < R; ++r) {
            real *gl = k.grc + r * N;
            FN(softmax_backward)(k.rc + r * N, gl, N);
            g_rstr[r] = FN(dot)(gl, k.rsim + r * N, N);
            /* d dot / denom, in place of gl ((R, N): a vectorised pass; the row loop takes it transposed) */
            real gkn = 0;
            const real str = k.strength[r], kn = k.knorm[r];
            const real *restrict rsim = k.rsim + r * N, *restrict rnorm = k.rnorm;
            real *restrict gmn = k.gmn, *restrict gdr = gl;
#pragma omp simd reduction(+ : gkn)
            for (int n = 0; n < N; ++n) {
                const real gd = gdr[n] * str / (kn * rnorm[n] + eps);
                const real gden = -gd * rsim[n];
                gdr[n] = gd;
                gkn += gden * rnorm[n];
                gmn[n] += gden * kn;
            }
            const real sc = gkn / k.knorm[r];
            for (int j = 0; j < W; ++j) gv[r * W + j] = v[r * W + j] * sc;
        }
        /* one pass over the memory rows: reads, read cosine and erase-and-write backward */
        real *g_e = gv + (R + 2) * W + (R + 1); /* raw erase slot: written as d e first, activated later */
        real *g_v = gv + (R + 1) * W;
        for (int j = 0; j < W; ++j) g_e[j] = g_v[j] = 0;
        const real *rwt_s = rwt + (size_t)s * R * N; /* w^r_t, saved by the forward */
        if (W % LZ == 0 && R <= 8) {
            for (int n = 0; n < N; ++n) k.msc[n] = k.gmn[n] / k.rnorm[n];
#define CALLC(RR, CB)                                                                                        \
    FN(memory_backward_blocked_r)(N, W, Ms, Mt_s, gMts ? gMts : k.zero, gMts ? (size_t)W : 0, gR, v, rwt_s, k.grc,  \
                                  k.msc, w, erase, wv, gv, g_e, g_v, gMs, k.gwp, k.gwn, RR, CB)
#if MEM_CB > 1
#define CALL(RR)                                           \
    do {                                                   \
        if ((RR) <= MEM_CB_R && (W / LZ) % MEM_CB == 0)    \
            CALLC(RR, (RR) <= MEM_CB_R ? MEM_CB : 1);      \
        else                                               \
            CALLC(RR, 1);                                  \
    } while (0)
#else
#define CALL(RR) CALLC(RR, 1)
#endif
            LINK_SWITCH(R, CALL, )
#undef CALL
#undef CALLC
            for (int n = 0; n < N; ++n) k.gww[n] = g_wwt[(size_t)s * N + n] + k.gw[n] + k.gwn[n];
        } else {
            real a_n[64];
            real *an = R <= 64 ? a_n : (real *)malloc(sizeof(real) * R);
            for (int r = 0; r < R; ++r)
                for (int n = 0; n < N; ++n) k.gdot[n * R + r] = k.grc[r * N + n]; /* (N, R): a row per slot */
            for (int n = 0; n < N; ++n) {
                const real *m = Ms + (size_t)n * W, *mt = Mt_s + (size_t)n * W, *gi = gMts ? gMts + (size_t)n * W : k.zero;
                real *gmo = gMs + (size_t)n * W;
                const real *gd = k.gdot + n * R, sc = k.gmn[n] / k.rnorm[n], wn = w[n];
                for (int r = 0; r < R; ++r) an[r] = rwt_s[r * N + n];
                real gwn;
#define CALL(RR) FN(memory_row_backward_r)(W, m, mt, gi, gR, v, an, gd, sc, wn, erase, wv, gv, g_e, g_v, gmo, &gwn, RR)
                LINK_SWITCH(R, CALL,
                            FN(memory_row_backward_any)(W, m, mt, gi, gR, v, an, gd, sc, wn, erase, wv, gv, g_e, g_v,
                                                        gmo, &gwn, R))
#undef CALL
                k.gww[n] = g_wwt[(size_t)s * N + n] + k.gw[n] + gwn;
            }
            if (an != a_n) free(an);
        }
        /* write weighting w^w = g^w (g^a a + (1 - g^a) c^w) and allocation */
        real *gu_new = k.gu; /* reuse: u_t no longer needed */
        const real *gut = g_ut + (size_t)s * N;
        real g_wg = 0, g_ga = 0;
        real *gwc = k.grow;
        if (c->alloc) {
            const real ga = k.gate[W + R];
            for (int n = 0; n < N; ++n) {
                const real inner = ga * k.alloc[n] + (1 - ga) * k.wc[n];
                const real gin = wg * k.gww[n];
                g_wg += k.gww[n] * inner;
                g_ga += gin * (k.alloc[n] - k.wc[n]);
                gwc[n] = (1 - ga) * gin;
                gu_new[n] = gut[n];
            }
            /* a[phi_j] = (1 - s_j) prod_{i<j} s_i: d s_k = sum_{j>k} g_j a_j / s_k - g_k prod_{i<k} s_i */
            real tail = 0;
            for (int j = N - 1; j >= 0; --j) {
                const real gs = ga * wg * k.gww[k.order[j]];
                const real gsu = tail / k.su[j] - gs * k.sprod[j];
                gu_new[k.order[j]] += (1 - eps) * gsu;
                tail += gs * k.salloc[j];
            }
        } else {
            for (int n = 0; n < N; ++n) {
                g_wg += k.gww[n] * k.wc[n];
                gwc[n] = wg * k.gww[n];
                gu_new[n] = gut[n];
            }
        }
        /* write content weighting against M_{t-1} */
        FN(softmax_backward)(k.wc, gwc, N);
        g_rstr[R] = FN(dot)(gwc, k.wsim, N);
        for (int n = 0; n < N; ++n) k.gdot[n] = gwc[n] * k.strength[R] / (k.knorm[R] * k.mnorm[n] + eps);
        FN(cosine_backward)(N, W, 1, Ms, k.mnorm, v + R * W, k.knorm + R, k.wsim, k.gdot, k.gmn, gMs,
                            gv + R * W, W);
        /* usage u_t = (u + w - u w) psi, psi = prod_i (1 - f^i w^{r,i}) (times the decay) */
        real *gus = g_u + (size_t)s * N, *gwwp = g_ww + (size_t)s * N;
        real *g_free = gv + (R + 2) * W + (R + 1) + W;
        if (c->alloc) {
            for (int r = 0; r < R; ++r) g_free[r] = 0;
            /* products of the other heads' kept factors: exclusive prefix times exclusive suffix */
            for (int n = 0; n < N; ++n) {
                k.kept_pre[n] = 1;
                k.kept_suf[R * N + n] = 1;
            }
            for (int r = 0; r < R; ++r)
                for (int n = 0; n < N; ++n)
                    k.kept_pre[(r + 1) * N + n] = k.kept_pre[r * N + n] * (1 - free_g[r] * rws[r * N + n]);
            for (int r = R - 1; r >= 0; --r)
                for (int n = 0; n < N; ++n)
                    k.kept_suf[r * N + n] = k.kept_suf[(r + 1) * N + n] * (1 - free_g[r] * rws[r * N + n]);
            for (int r = 0; r < R; ++r) {
                real gf_r = 0;
                for (int n = 0; n < N; ++n) {
                    const real gk = gu_new[n] * k.pre[n] * decay * k.kept_pre[r * N + n] * k.kept_suf[(r + 1) * N + n];
                    gf_r -= gk * rws[r * N + n];
                    grw_prev[r * N + n] -= gk * free_g[r];
                }
                g_free[r] = gf_r;
            }
        }
        for (int n = 0; n < N; ++n) {
            const real gpre = gu_new[n] * k.psi[n];
            gus[n] = gpre * (1 - pww[n]);
            gwwp[n] = gpre * (1 - us[n]);
        }
        /* activations: oneplus' = sigmoid, sigmoid' = s (1 - s), softmax modes */
        real *gstr = gv + (R + 2) * W;
        const real *raw_s = v + (R + 2) * W;
        for (int h = 0; h <= R; ++h) gstr[h] = g_rstr[h] * FN(sigmoid)(raw_s[h]);
        real *gsig = gstr + R + 1;
        if (c->alloc) gsig[W + R] = g_ga;
        gsig[nsig - 1] = g_wg;
        for (int i = 0; i < nsig; ++i) gsig[i] *= k.gate[i] * (1 - k.gate[i]);
        if (c->links) {
            real *gm = gsig + nsig;
            for (int r = 0; r < R; ++r) {
                for (int j = 0; j < 3; ++j) gm[3 * r + j] = gmodes[3 * r + j];
                FN(softmax_backward)(k.mode + 3 * r, gm + 3 * r, 3);
            }
        }
        if (gmodes != gmode) free(gmodes);
        if (g_rstr != g_rs) free(g_rstr);
    }
    free(mem);
    fp_set(&fp_in);
}

void FN(access_backward)(const access_cfg *c, const real *vec, const real *M, const real *u, const real *L,
                         const real *p, const real *rw, const real *ww, const real *rwt, const real *g_reads, const real *g_Mt,
                         const real *g_ut, const real *g_Lt, const real *g_pt, const real *g_rwt,
                         const real *g_wwt, real *g_vec, real *g_M, real *g_u, real *g_L, real *g_p, real *g_rw,
                         real *g_ww, const real *aux, const real *Mt_in) {
    const FN(access_backward_job) job = {c, vec, M, u, L, p, rw, ww, rwt, g_reads, g_Mt, g_ut, g_Lt, g_pt, g_rwt, g_wwt, g_vec, g_M, g_u, g_L, g_p, g_rw, g_ww, aux, Mt_in};
    pool_run(c->threads, c->B, FN(step_cost)(c, 1), FN(access_backward_chunk), &job);
}

/* LSTM cell from pre-activation gates [i, f, g, o] (nn.LSTMCell's order), rows of the batch:
 * c = s(f) c_prev + s(i) tanh(g), h = s(o) tanh(c). gates (B, 4H), c_prev, c (B, H) contiguous; h (B, H)
 * with row stride ldh (the sequence writes h_t straight into the controller's next input row
 * [r_t | h_t], ldh = R W + H). */
typedef struct {
    int B;
    int H;
    const real *gates;
    const real *c_prev;
    real *h;
    int ldh;
    real *c;
    int threads;
} FN(lstm_forward_job);

static void FN(lstm_forward_chunk)(const void *job, int s0, int s1) {
    const FN(lstm_forward_job) *J = (const FN(lstm_forward_job) *)job;
    int H = J->H;
    const real *gates = J->gates;
    const real *c_prev = J->c_prev;
    real *h = J->h;
    real *c = J->c;
    const size_t ldh = (size_t)J->ldh;
    for (int s = s0; s < s1; ++s) {
        const real *g = gates + (size_t)s * 4 * H, *cp = c_prev + (size_t)s * H;
        real *hs = h + (size_t)s * ldh, *cs = c + (size_t)s * H;
#pragma omp simd
        for (int j = 0; j < H; ++j) {
            const real ig = FN(sigmoid)(g[j]), fg = FN(sigmoid)(g[H + j]);
            const real gg = FN(tanh)(g[2 * H + j]), og = FN(sigmoid)(g[3 * H + j]);
            cs[j] = fg * cp[j] + ig * gg;
            hs[j] = og * FN(tanh)(cs[j]);
        }
    }
}

void FN(lstm_forward)(int B, int H, const real *gates, const real *c_prev, real *h, int ldh, real *c,
                      int threads) {
    const FN(lstm_forward_job) job = {B, H, gates, c_prev, h, ldh, c, threads};
    pool_run(threads, B, 40.0 * H, FN(lstm_forward_chunk), &job);
}

/* Backward of lstm_forward: d gates (B, 4H) and d c_prev (B, H) from dc (B, H) and
 * dh = dh_a + dh_b + dh_c, three (B, H) terms with row strides lda, ldb, ldc:
 * the sequence passes dh_t's parts from the interface layer (d vecs_t W_i), from the output (d hiddens
 * [:, t]) and from the next step's controller (the h columns of d[r_t | h_t]). */
typedef struct {
    int B;
    int H;
    const real *gates;
    const real *c_prev;
    const real *c;
    const real *dh_a;
    int lda;
    const real *dh_b;
    int ldb;
    const real *dh_c;
    int ldc;
    const real *gc;
    real *g_gates;
    real *gc_prev;
    int threads;
} FN(lstm_backward_job);

static void FN(lstm_backward_chunk)(const void *job, int s0, int s1) {
    const FN(lstm_backward_job) *J = (const FN(lstm_backward_job) *)job;
    int H = J->H;
    const real *gates = J->gates;
    const real *c_prev = J->c_prev;
    const real *c = J->c;
    const real *gc = J->gc;
    real *g_gates = J->g_gates;
    real *gc_prev = J->gc_prev;
    for (int s = s0; s < s1; ++s) {
        const real *g = gates + (size_t)s * 4 * H, *cp = c_prev + (size_t)s * H, *cs = c + (size_t)s * H;
        const real *gcs = gc + (size_t)s * H;
        const real *ha = J->dh_a + (size_t)s * J->lda;
        const real *hb = J->dh_b + (size_t)s * J->ldb, *hc = J->dh_c + (size_t)s * J->ldc;
        real *gg_out = g_gates + (size_t)s * 4 * H, *gcp = gc_prev + (size_t)s * H;
#pragma omp simd
        for (int j = 0; j < H; ++j) {
            const real ig = FN(sigmoid)(g[j]), fg = FN(sigmoid)(g[H + j]);
            const real gg = FN(tanh)(g[2 * H + j]), og = FN(sigmoid)(g[3 * H + j]);
            const real tc = FN(tanh)(cs[j]);
            const real dh = (ha[j] + hb[j]) + hc[j];
            const real dc = gcs[j] + dh * og * (1 - tc * tc);
            gg_out[j] = dc * gg * ig * (1 - ig);
            gg_out[H + j] = dc * cp[j] * fg * (1 - fg);
            gg_out[2 * H + j] = dc * ig * (1 - gg * gg);
            gg_out[3 * H + j] = dh * tc * og * (1 - og);
            gcp[j] = dc * fg;
        }
    }
}

void FN(lstm_backward)(int B, int H, const real *gates, const real *c_prev, const real *c, const real *dh_a,
                       int lda, const real *dh_b, int ldb, const real *dh_c, int ldc, const real *gc,
                       real *g_gates, real *gc_prev, int threads) {
    const FN(lstm_backward_job) job = {B, H, gates, c_prev, c, dh_a, lda, dh_b, ldb, dh_c, ldc, gc, g_gates, gc_prev, threads};
    pool_run(threads, B, 50.0 * H, FN(lstm_backward_chunk), &job);
}

/* out = a + b (b may be NULL: out = a) for B rows of n values, row strides lda, ldb, ldo: the reads' d r_t
 * (the output's part plus the next step's controller part) and r_t copied into the controller's next input
 * row [r_t | h_t]. Inline (a few KiB). */
void FN(add_rows)(int B, int n, const real *a, int lda, const real *b, int ldb, real *out, int ldo) {
    for (int s = 0; s < B; ++s) {
        const real *as = a + (size_t)s * lda;
        real *os = out + (size_t)s * ldo;
        if (!b) {
            memcpy(os, as, sizeof(real) * (size_t)n);
            continue;
        }
        const real *bs = b + (size_t)s * ldb;
#pragma omp simd
        for (int j = 0; j < n; ++j) os[j] = as[j] + bs[j];
    }
}

/* dst[j, i] = src[i, j] for a rows x cols matrix (row strides lds, ldd): 8 x 8 blocks transposed in
 * registers (three rounds of lane shuffles), the edges one by one: the panels of the controller's weights
 * W_r^T, W_hh^T, W_i^T packed once per sequence call (pack_panels; torch's strided copy of a transposed
 * column slice took several times as long). Inline. */
void FN(transpose)(int rows, int cols, const real *src, int lds, real *dst, int ldd) {
    const int rows8 = rows - rows % 8, cols8 = cols - cols % 8;
    for (int i = 0; i < rows8; i += 8)
        for (int j = 0; j < cols8; j += 8) {
            FN(v8) a[8], t[8], u[8];
            for (int k = 0; k < 8; ++k) a[k] = FN(ld8)(src + (size_t)(i + k) * lds + j);
            for (int k = 0; k < 8; k += 2) { /* t[k] = [a0 b0 a1 b1 a4 b4 a5 b5] of rows a = k, b = k+1 */
                t[k] = SHUF8(a[k], a[k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
                t[k + 1] = SHUF8(a[k], a[k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
            }
            for (int k = 0; k < 8; k += 4) /* u[k + c] = column c (and c + 4) of rows k..k+3 */
                for (int h = 0; h < 2; ++h) {
                    u[k + 2 * h] = SHUF8(t[k + h], t[k + 2 + h], 0, 1, 8, 9, 4, 5, 12, 13);
                    u[k + 2 * h + 1] = SHUF8(t[k + h], t[k + 2 + h], 2, 3, 10, 11, 6, 7, 14, 15);
                }
            for (int c = 0; c < 4; ++c) {
                FN(st8)(dst + (size_t)(j + c) * ldd + i, SHUF8(u[c], u[4 + c], 0, 1, 2, 3, 8, 9, 10, 11));
                FN(st8)(dst + (size_t)(j + 4 + c) * ldd + i, SHUF8(u[c], u[4 + c], 4, 5, 6, 7, 12, 13, 14, 15));
            }
        }
    for (int i = 0; i < rows; ++i) /* the edges: the last cols % 8 columns, the last rows % 8 rows */
        for (int j = i < rows8 ? cols8 : 0; j < cols; ++j) dst[(size_t)j * ldd + i] = src[(size_t)i * lds + j];
}

/* ---- The controller's per-step products against packed weights: out (B, n) (+)= a (B, K) w (K, n), B a
 * batch of a few rows. At small B such a product is bound by the weight's trip from memory more than by its
 * arithmetic: the access step between two products evicts the weights from the caches (in a train step at
 * the benchmark's size MKL's (16, 384) x (384, 512) forward product took 229 us, 101 us with the weight in
 * cache). Here the weight is packed once per sequence call into column panels of PL lanes, panel p one
 * contiguous (K, PL) block (columns p PL .. p PL + PL - 1, zero past n) read in order and fetched 16 rows
 * ahead; the rows of `out` under NP panels stay in registers (MR rows at a time) over the whole K loop.
 * In a train step the four products take 0.75-0.84x MKL's time. Each out[i, j] sums its K terms in the
 * order k = 0..K-1, after its old value when accumulating: a sample's result does not depend on the other
 * rows, the batch size or the thread count. */
#ifndef PRODUCT_SHAPE /* once for both instantiations */
#define PRODUCT_SHAPE
/* vector bytes, accumulator registers and rows of the largest block (PRODUCT_ACC / PRODUCT_ROWS panels) */
#if defined(__AVX512F__)
#define PRODUCT_BYTES 64 /* 32 registers: 8 rows x 3 panels */
#define PRODUCT_ACC 24
#define PRODUCT_ROWS 8
#elif defined(__AVX__)
#define PRODUCT_BYTES 32 /* 16 registers: blocks of 6 rows x 2 panels */
#define PRODUCT_ACC 12
#define PRODUCT_ROWS 6
#elif defined(__aarch64__)
#define PRODUCT_BYTES 16 /* 32 registers: 8 rows x 3 panels */
#define PRODUCT_ACC 24
#define PRODUCT_ROWS 8
#else
#define PRODUCT_BYTES 16
#define PRODUCT_ACC 8
#define PRODUCT_ROWS 4
#endif
#endif
#ifndef PRODUCT_PF
#define PRODUCT_PF 16 /* rows of a panel fetched ahead (past its end: the next panel's; never faults) */
#endif
#define PL ((int)(PRODUCT_BYTES / sizeof(real))) /* lanes of a panel */
typedef real FN(pv) __attribute__((vector_size(PRODUCT_BYTES)));

/* lanes per panel of this build (the packed weight's layout) */
int FN(panel_lanes)(void) { return PL; }

/* Rows k0 .. k0 + K - 1 and columns n0 .. n0 + n - 1 of a packed (Ktot, ntot) weight from the (K, n) block
 * src (element (k, j) at src[k sk + j sn]): dst[(p Ktot + k) PL + l] = w[k, p PL + l]; the lanes past ntot
 * of these rows are set to zero. Two calls pack [W_r | W_hh]^T (or [W_r | W_hh]) from its two parameters.
 * Panel by panel: rows of PL values copied (sn = 1), or a transposed block's (sk = 1) full panels through
 * the 8 x 8 register transposes; the rest value by value. */
void FN(pack_panels)(int K, int n, const real *src, long sk, long sn, real *dst, int Ktot, int k0, int n0,
                     int ntot) {
    const int p0 = n0 / PL, p1 = (n0 + n + PL - 1) / PL;
    for (int p = p0; p < p1; ++p) {
        const int l0 = p == p0 ? n0 - p * PL : 0, l1 = (p + 1) * PL <= n0 + n ? PL : n0 + n - p * PL;
        const real *s = src + (long)(p * PL + l0 - n0) * sn; /* element (0, p PL + l0 - n0) */
        real *d = dst + ((size_t)p * Ktot + k0) * PL;
        if (sk == 1 && l0 == 0 && l1 == PL && sn <= INT_MAX) {
            FN(transpose)(PL, K, s, (int)sn, d, PL);
        } else if (sn == 1 && l1 - l0 == PL) {
            for (int k = 0; k < K; ++k) memcpy(d + (size_t)k * PL, s + (long)k * sk, sizeof(real) * PL);
        } else if (sn == 1) {
            for (int k = 0; k < K; ++k) memcpy(d + (size_t)k * PL + l0, s + (long)k * sk, sizeof(real) * (l1 - l0));
        } else {
            for (int k = 0; k < K; ++k)
                for (int l = l0; l < l1; ++l) d[(size_t)k * PL + l] = s[(long)k * sk + (long)(l - l0) * sn];
        }
    }
    if (ntot % PL) {
        const int p = ntot / PL;
        for (int k = 0; k < K; ++k)
            for (int l = ntot % PL; l < PL; ++l) dst[((size_t)p * Ktot + k0 + k) * PL + l] = 0;
    }
}

typedef struct {
    int B, K, n, first, group;
    const real *at; /* a's row blocks, each k-major: block (i0, MR) at at[i0 K], a[i0 + r, k] at [k MR + r] */
    const real *pk;
    real *out;
    int ldo, accumulate;
} FN(product_job);

static inline FN(pv) FN(ldp)(const real *x) {
    FN(pv) v;
    memcpy(&v, x, sizeof v);
    return v;
}

/* out[0..MR, NP panels from the panel at pk] (+)= a[0..MR, :] w[:, those panels], a's block k-major (x);
 * width: lanes of the last of the NP panels that are columns of out */
static inline __attribute__((always_inline)) void FN(product_block)(int K, const real *restrict x,
                                                                  const real *restrict pk, real *restrict out,
                                                                  int ldo, int width, int accumulate,
                                                                  const int MR, const int NP) {
    FN(pv) s[4][8];
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q)
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
            FN(pv) v = {0};
            if (accumulate && (q < NP - 1 || width == PL))
                v = FN(ldp)(out + (size_t)r * ldo + q * PL);
            else if (accumulate)
                memcpy(&v, out + (size_t)r * ldo + q * PL, sizeof(real) * width);
            s[q][r] = v;
        }
    for (int k = 0; k < K; ++k, x += MR) {
        FN(pv) w[4];
#pragma GCC unroll 4
        for (int q = 0; q < NP; ++q) {
            w[q] = FN(ldp)(pk + ((size_t)q * K + k) * PL);
            __builtin_prefetch(pk + ((size_t)q * K + k + PRODUCT_PF) * PL, 0, 3);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
            for (int q = 0; q < NP; ++q) s[q][r] += x[r] * w[q];
    }
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q)
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r)
            if (q < NP - 1 || width == PL)
                memcpy(out + (size_t)r * ldo + q * PL, &s[q][r], sizeof s[q][r]);
            else
                memcpy(out + (size_t)r * ldo + q * PL, &s[q][r], sizeof(real) * width);
}

/* rows of a block: the largest of 8, 6, 4, 2, 1 that is at most `most` */
static inline int FN(block_rows)(int most) {
    return most >= 8 ? 8 : most >= 6 ? 6 : most >= 4 ? 4 : most >= 2 ? 2 : 1;
}

static void FN(product_chunk)(const void *job, int p0, int p1) {
    const FN(product_job) *J = (const FN(product_job) *)job;
    const int B = J->B, K = J->K, P = (J->n + PL - 1) / PL, ldo = J->ldo, acc = J->accumulate;
    for (int p = p0; p < p1;) {
        const int NP = p + J->group <= p1 ? J->group : 1;
        const int width = p + NP == P ? J->n - (P - 1) * PL : PL;
        const real *pk = J->pk + (size_t)p * K * PL;
        for (int i0 = 0; i0 < B;) {
            const int MR = FN(block_rows)(J->first < B - i0 ? J->first : B - i0);
            const real *x = J->at + (size_t)i0 * K;
            real *out = J->out + (size_t)i0 * ldo + (size_t)p * PL;
#define PBLOCK(mr, np)                                         \
    case mr * 10 + np:                                         \
        FN(product_block)(K, x, pk, out, ldo, width, acc, mr, np); \
        break;
#define PBLOCKS(mr) PBLOCK(mr, 1) PBLOCK(mr, 2) PBLOCK(mr, 3) PBLOCK(mr, 4)
            switch (MR * 10 + NP) {
                PBLOCKS(8)
                PBLOCKS(6)
                PBLOCKS(4)
                PBLOCKS(2)
                PBLOCKS(1)
                default: abort(); /* unreachable: see packed_product's block shapes */
            }
#undef PBLOCKS
#undef PBLOCK
            i0 += MR;
        }
        p += NP;
    }
}

/* out (B, n), row stride ldo, (+)= a (B, K), row stride lda, times the weight packed by pack_panels (K, n):
 * accumulate != 0 adds to out. a is first transposed by row blocks (on the stack up to 8192 values):
 * one pointer then walks a block's rows (with a row stride the compiler kept MR row pointers and spilled
 * them). The panels are split over up to `threads` threads. */
void FN(packed_product)(int B, int K, int n, const real *a, int lda, const real *pk, real *out, int ldo,
                        int accumulate, int threads) {
    /* the first (largest) row block: `first` rows and `group` panels (at most 4) at a time, group first
     * <= PRODUCT_ACC accumulators; smaller blocks for the rows left, with the same panels */
    const int first = FN(block_rows)(B < PRODUCT_ROWS ? B : PRODUCT_ROWS);
    const int group = PRODUCT_ACC / first < 4 ? PRODUCT_ACC / first : 4;
    real stack[8192];
    const size_t count = (size_t)B * K;
    real *at = count <= 8192 ? stack : (real *)malloc(sizeof(real) * count);
    for (int i0 = 0; i0 < B;) {
        const int MR = FN(block_rows)(first < B - i0 ? first : B - i0);
        FN(transpose)(MR, K, a + (size_t)i0 * lda, lda, at + (size_t)i0 * K, MR);
        i0 += MR;
    }
    const FN(product_job) job = {B, K, n, first, group, at, pk, out, ldo, accumulate};
    pool_run(threads, (n + PL - 1) / PL, 2.0 * B * K * PL, FN(product_chunk), &job);
    if (at != stack) free(at);
}
#undef PL

/* M_t = M_{t-1} + w o (v - M_{t-1} o e) alone (the same arithmetic as the access step), to rebuild a
 * memory the sequence backward did not keep. vec (B, V), M (B, N, W), ww (B, N) -> out (B, N, W). */
typedef struct {
    const access_cfg *c;
    const real *vec;
    const real *M;
    const real *ww;
    real *out;
} FN(erase_write_job);

static void FN(erase_write_chunk)(const void *job, int s0, int s1) {
    const FN(erase_write_job) *J = (const FN(erase_write_job) *)job;
    const access_cfg *c = J->c;
    const real *vec = J->vec;
    const real *M = J->M;
    const real *ww = J->ww;
    real *out = J->out;
    const int N = c->N, W = c->W, R = c->R, V = c->V;
    real e[4096];
    real *erase = W <= 4096 ? e : (real *)malloc(sizeof(real) * W);
    for (int s = s0; s < s1; ++s) {
        const real *v = vec + (size_t)s * V, *wv = v + (R + 1) * W, *raw_e = v + (R + 2) * W + (R + 1);
        for (int j = 0; j < W; ++j) erase[j] = FN(sigmoid)(raw_e[j]);
        for (int n = 0; n < N; ++n) {
            const real *m = M + ((size_t)s * N + n) * W;
            real *mt = out + ((size_t)s * N + n) * W;
            const real w = ww[(size_t)s * N + n];
#pragma omp simd
            for (int j = 0; j < W; ++j) mt[j] = m[j] + w * (wv[j] - m[j] * erase[j]);
        }
    }
    if (erase != e) free(erase);
}

void FN(erase_write)(const access_cfg *c, const real *vec, const real *M, const real *ww, real *out) {
    const FN(erase_write_job) job = {c, vec, M, ww, out};
    pool_run(c->threads, c->B, 3.0 * c->N * c->W, FN(erase_write_chunk), &job);
}

#endif
