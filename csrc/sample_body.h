/* sample_body.h: the sampler (ss_sample's body), compiled once per instruction set.
 *
 * Included by kernels_body.h (the SIMD tables) and kernels_scalar.c, so each table has its own
 * `sample` built with that table's compiler flags (AVX2 code generation makes it about a quarter
 * faster than the baseline build); sample.c's ss_sample calls the active table's. The code is the
 * same everywhere and its result does not depend on the build: comparisons, maxima (exact in any
 * order, on the table's vectors: NaN logits are made -inf first) and integer counts pick the
 * candidates, the lane sums are written out (no reassociation), and the only float arithmetic
 * that reaches the draw (expf, the double sums) has no multiply-add to contract. The contract is
 * in sample.c.
 */
#ifndef SS_SAMPLE_BODY_H
#define SS_SAMPLE_BODY_H

#include <float.h>
#include <math.h>
#include <string.h>
#include "ss_internal.h"

/* splitmix64 (Steele, Lea, Flood 2014): one 64-bit state word, every seed is a good seed. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double sample_uniform(uint64_t *rng)
{
    return (double)(splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0);   /* [0, 1), 53 bits */
}

typedef struct { float p; int32_t id; } ss_cand;

/* a before b: larger p first, then the lower id (a total order, so any sort gives one result) */
static int cand_before(const ss_cand *a, const ss_cand *b)
{
    return a->p > b->p || (a->p == b->p && a->id < b->id);
}

/* In-place heapsort into cand_before order (no allocation, unlike some qsort implementations). */
static void sift_down(ss_cand *a, int root, int n)
{
    for (;;) {
        int child = 2 * root + 1;
        if (child >= n) return;
        /* max-heap of the LAST element in the final order: the "largest" is the one that goes last */
        if (child + 1 < n && cand_before(&a[child], &a[child + 1])) child++;
        if (!cand_before(&a[root], &a[child])) return;
        ss_cand t = a[root]; a[root] = a[child]; a[child] = t;
        root = child;
    }
}

static void sort_cands(ss_cand *a, int n)
{
    for (int i = n / 2 - 1; i >= 0; i--) sift_down(a, i, n);
    for (int end = n - 1; end > 0; end--) {
        ss_cand t = a[0]; a[0] = a[end]; a[end] = t;
        sift_down(a, 0, end);
    }
}

/* gm[r] = max(gm[r], x[r]) for r < G (the column maxima of the top-k bound) */
static void column_max(float *restrict gm, const float *restrict x, int G)
{
    for (int r = 0; r < G; r++) gm[r] = x[r] > gm[r] ? x[r] : gm[r];
}

/* The max of x[0..n), n >= 1, on this table's vectors: exact in any order, as no NaN reaches
 * it (pass 1 made them -inf), so every instruction set gets the same value. */
static float max_of(const float *x, int n)
{
    int i = 0;
    float m = x[0];
#if defined(SS_VW)
    if (n >= SS_VW) {
        ssv v = SS_LOAD(x);
        for (i = SS_VW; i + SS_VW <= n; i += SS_VW) v = SS_MAX(v, SS_LOAD(x + i));
        m = SS_HMAX(v);
    }
#endif
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* The first id whose (masked) logit is lmax; the first allowed id when lmax is -inf (every
 * allowed logit NaN or -inf). */
static int first_max(const float *s, const uint8_t *allowed, int V, float lmax)
{
    if (lmax > -INFINITY)
        for (int i = 0; i < V; i++)
            if (s[i] == lmax) return i;
    for (int i = 0; i < V; i++)
        if (!allowed || allowed[i]) return i;
    return -1;
}

static int sample(float *work, const float *logits, const uint8_t *allowed, int V,
                  float temperature, int top_k, float top_p, uint64_t *rng)
{
    float *s = work;                          /* (V) logits, -inf where banned */
    float *prob = s + V;                      /* (V) softmax(s / temperature); (V pairs) window */
    ss_cand *cand = (ss_cand *)(prob + 2 * (size_t)V);    /* (V) candidates (p, id) */

    /* pass 1: mask and count (a NaN logit becomes -inf: it can never be drawn), then the max */
    int n_allowed = V, i;
    if (allowed) {
        n_allowed = 0;
        for (i = 0; i < V; i++) {
            const int ok = allowed[i] != 0;
            const float v = logits[i];
            s[i] = ok && v == v ? v : -INFINITY;
            n_allowed += ok;
        }
    } else {
        for (i = 0; i < V; i++) s[i] = logits[i] == logits[i] ? logits[i] : -INFINITY;
    }
    if (n_allowed == 0) return -1;
    const float lmax = max_of(s, V);

    /* the greedy answer (also the fallback below): the first allowed id holding the max, or the
     * first allowed id when every allowed logit is NaN or -inf */
    if (!(temperature > 0.0f) || top_k == 1 || n_allowed == 1 || !isfinite(lmax))
        return first_max(s, allowed, V, lmax);

    const float invT = 1.0f / temperature;
    /* #17 (reliable): below ~3e-39 (or for an infinite temperature) 1/T is inf (or 0), and
     * (s - lmax) * invT becomes NaN, which printed banned tokens; the Python check makes such
     * temperatures greedy, and so does this line for any caller of ss_sample */
    if (!(invT > 0.0f) || !(invT < INFINITY)) return first_max(s, allowed, V, lmax);
    int n = 0, sorted = 0;
    double total = 0;
    if (top_k > 0 && top_k < n_allowed) {
        /* top_k by logit, without data-dependent branches (mispredicted jumps cost more than
         * arithmetic here: a heap or a comparison sort over the candidates took most of the
         * time). A lower bound first: deal the V logits into G >= top_k columns (G a multiple
         * of 16 where V allows, so that the loop vectorises); the least column max is <= the
         * G-th largest logit, so <= the top_k-th (G distinct elements reach it). Compacting the
         * logits >= that bound (blocks of 16 whose max is below it skipped) leaves a few times
         * top_k candidates (ids rising); the exact k-th largest among them is found by
         * bisecting the order-preserving integer keys, counting in straight loops; ties at it
         * go to the lower ids. The kept ones are put in order by rank counting: rank =
         * #(larger) + #(equal with a lower id). */
        const int G = (top_k + 15) / 16 * 16 < V ? (top_k + 15) / 16 * 16 : V;
        float *gm = prob;                     /* (G) column maxima */
        for (int r = 0; r < G; r++) gm[r] = -INFINITY;
        for (i = 0; i < V; i += G)        /* the last row of columns may be short */
            column_max(gm, s + i, V - i < G ? V - i : G);
        float bound = gm[0];
        for (int r = 1; r < G; r++) bound = gm[r] < bound ? gm[r] : bound;
        if (!(bound > -INFINITY)) bound = -FLT_MAX;         /* -inf is never a candidate */
        float *cv = prob;                                  /* (V) candidate logits */
        uint32_t *ck = (uint32_t *)(prob + V);             /* (V) their integer keys */
        int32_t *ci = (int32_t *)(cand + V);               /* (V) their ids */
        int m = 0;
        for (i = 0; i < V; i += 16) {     /* the ids of the candidates, rising */
            const int e = V - i < 16 ? V : i + 16;
            if (e == i + 16 && max_of(s + i, 16) < bound) continue;
            for (int j = i; j < e; j++) {
                ci[m] = j;
                m += s[j] >= bound;
            }
        }
        for (int j = 0; j < m; j++) {     /* float -> unsigned key with the same order */
            uint32_t b;
            memcpy(&b, &s[ci[j]], 4);
            b = b == 0x80000000u ? 0u : b;    /* -0 == +0, as the float compare says */
            ck[j] = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
        }
        uint32_t t = 0;                   /* keep keys > t (every candidate's key is > 0) */
        if (m > top_k) {
            uint32_t lo = ck[0], hi = ck[0];
            for (int j = 1; j < m; j++) {
                lo = ck[j] < lo ? ck[j] : lo;
                hi = ck[j] > hi ? ck[j] : hi;
            }
            while (lo < hi) {             /* the largest t with #(key >= t) >= top_k */
                uint32_t mid = lo + (hi - lo) / 2 + 1;
                int cnt = 0;
                for (int j = 0; j < m; j++) cnt += ck[j] >= mid;
                if (cnt == top_k) { lo = mid; break; }    /* exactly top_k at or above mid */
                if (cnt > top_k) lo = mid; else hi = mid - 1;
            }
            int above = 0, from = 0;
            for (int j = 0; j < m; j++) {
                above += ck[j] > lo;
                from += ck[j] >= lo;
            }
            t = lo - 1;                   /* keep every key >= lo ... */
            if (from > top_k) {           /* ... unless too many tie at lo: the lowest ids of */
                t = lo;                   /* those are raised above it, the rest dropped */
                for (int j = 0, left = top_k - above; left > 0; j++)
                    if (ck[j] == lo) { ck[j] = lo + 1; left--; }
            }
        }
        n = 0;                            /* compact the kept ones (ids still rising) */
        for (int j = 0; j < m; j++) {
            ci[n] = ci[j];
            n += ck[j] > t;
        }
        for (int j = 0; j < n; j++) cv[j] = s[ci[j]];
        for (int j = 0; j < n; j++) {     /* rank counting: a total order, so ranks are 0..n-1 */
            float v = cv[j];
            int r = 0;
            for (int q = 0; q < n; q++) r += (cv[q] > v) | ((cv[q] == v) & (q < j));
            cand[r].p = v;
            cand[r].id = ci[j];
        }
        sorted = 1;
        for (int k = 0; k < n; k++) {
            cand[k].p = expf((cand[k].p - lmax) * invT);
            total += cand[k].p;
        }
    } else {
        /* all allowed ids: the dispatched (SIMD) softmax of s / temperature */
        for (i = 0; i < V; i++) prob[i] = (s[i] - lmax) * invT;    /* -inf stays -inf */
        ss_kernels_active()->softmax_forward(prob, prob, 1, V);
        for (i = 0; i < V; i++) {
            if (!(s[i] > -INFINITY)) continue;
            cand[n].p = prob[i];
            cand[n].id = i;
            total += prob[i];
            n++;
        }
    }
    if (n == 0) return first_max(s, allowed, V, lmax);

    if (top_p < 1.0f && !sorted) {
        /* nucleus over all allowed ids without sorting V of them: bisect a probability
         * threshold [lo, hi) so that the ids with p >= hi hold less than top_p of the mass and
         * those with p >= lo at least that much; every id with p >= hi is in the nucleus, and
         * only the few in [lo, hi) are sorted to finish it (same set as a full sort). */
        const double target = (double)top_p * total;
        float lo = 0.0f, hi = INFINITY, pmax = 0.0f;
        for (int k = 0; k < n; k++) pmax = cand[k].p > pmax ? cand[k].p : pmax;
        hi = pmax * 1.0000001f + 1e-30f;              /* mass(p >= hi) = 0 < target */
        for (int it = 0; it < 40; it++) {
            float mid = 0.5f * (lo + hi);
            if (!(mid > lo && mid < hi)) break;       /* no float left between them */
            /* mass of p >= mid and the count in [lo, hi), lane-parallel so that it vectorises
             * (prob is 0 for banned ids; float sums only steer the bisection) */
            float ms[8] = {0}, cw[8] = {0};
            int k = 0;
            for (; k + 8 <= V; k += 8)
                for (int j = 0; j < 8; j++) {
                    float pk = prob[k + j];
                    ms[j] += pk >= mid ? pk : 0.0f;
                    cw[j] += (pk >= lo && pk < hi) ? 1.0f : 0.0f;
                }
            for (; k < V; k++) {
                ms[0] += prob[k] >= mid ? prob[k] : 0.0f;
                cw[0] += (prob[k] >= lo && prob[k] < hi) ? 1.0f : 0.0f;
            }
            float mass = 0, in_window = 0;
            for (int j = 0; j < 8; j++) { mass += ms[j]; in_window += cw[j]; }
            if (in_window <= 32.0f) break;
            if ((double)mass >= target) lo = mid; else hi = mid;
        }
        /* the sure ids (p >= hi) first, in id order; then the window (lo <= p < hi) */
        ss_cand *win = (ss_cand *)prob;               /* (V) the window, set aside */
        int a = 0, nw = 0;
        double cum = 0;
        for (int k = 0; k < n; k++) {
            if (cand[k].p >= hi) { cum += cand[k].p; cand[a++] = cand[k]; }
            else if (cand[k].p >= lo) win[nw++] = cand[k];
        }
        sort_cands(win, nw);
        int w = a;
        for (int k = 0; k < nw; k++) cand[w++] = win[k];
        int keep = w;
        for (int k = a; k < w; k++) {
            cum += cand[k].p;
            if (cum >= target) { keep = k + 1; break; }
        }
        n = keep;
        total = 0;
        for (int k = 0; k < n; k++) total += cand[k].p;
    } else if (top_p < 1.0f) {
        /* top-k candidates are sorted already: the smallest prefix holding top_p of their mass */
        double target = (double)top_p * total, cum = 0;
        int keep = n;
        for (int k = 0; k < n; k++) {
            cum += cand[k].p;
            if (cum >= target) { keep = k + 1; break; }
        }
        n = keep;
        total = 0;
        for (int k = 0; k < n; k++) total += cand[k].p;
    }

    double u = sample_uniform(rng) * total, cum = 0;
    for (int k = 0; k < n; k++) {
        cum += cand[k].p;
        if (u < cum) return cand[k].id;
    }
    return cand[n - 1].id;
}

#endif /* SS_SAMPLE_BODY_H */
