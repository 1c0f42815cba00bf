/* decode.c: one token through the whole model at batch 1 (chat and generation), and sampling.
 *
 * Contract (MODEL.md §1, one sequence, one time step):
 *   ss_decode_pack   copies every matrix once, at model load, into row panels (below) in a buffer
 *                    of ss_decode_packed_size floats that the caller owns;
 *   ss_decode_step   embeds one token, runs the L layers (router, top-K experts, mix, residual,
 *                    RMSNorm) and the head, updating the recurrent state (L,X,H) in place and
 *                    writing logits (V); logits == NULL skips the head (prompt tokens). It uses a
 *                    caller-owned workspace of ss_decode_workspace_size floats: nothing is allocated;
 *   ss_sample        picks the next token from logits: greedy, temperature, top-k, top-p, with a
 *                    splitmix64 generator whose 64-bit state the caller owns (same seed, same text).
 *
 * Panel layout: a matrix W(OC,C) becomes ceil(OC/16) panels of 16 rows; panel p stores
 * W[16p + j][c] at [p][c][j] (rows past OC are zero). A matrix-vector product then walks each panel
 * once with 16 independent accumulators per panel and no horizontal sums, so the same body runs
 * with one 512-bit, two 256-bit or four 128-bit registers per panel. Packed per layer: Wg (X rows),
 * per expert [Wz_e; Wcx_e] (2H rows) and Wch_e (H rows), then Wp (H rows) when I != H; then Wo.
 *
 * The matrix-vector kernel is chosen per call from the active instruction set (ss_isa_active):
 * decode_avx2.c and decode_avx512.c hold the SIMD twins of matvec_scalar below. The elementwise
 * functions (router softmax, sigmoid, exact GELU, RMSNorm) are the dispatched kernels of
 * ss_internal.h, the same ones training uses.
 */
#include <math.h>
#include <string.h>
#include "ss_internal.h"

#define SS_PANEL 16

/* y(OC) = W(OC,C) . x(C) + b(OC) with W in panels; b may be NULL. */
typedef void (*ss_matvec_fn)(float *y, const float *Wpk, const float *x, const float *b,
                             int C, int OC);

#ifdef SS_HAVE_AVX2
void ss_decode_matvec_avx2(float *y, const float *Wpk, const float *x, const float *b,
                           int C, int OC);
#endif
#ifdef SS_HAVE_AVX512
void ss_decode_matvec_avx512(float *y, const float *Wpk, const float *x, const float *b,
                             int C, int OC);
#endif

/* ---- panels ------------------------------------------------------------------------------ */
static int64_t panel_size(int OC, int C)
{
    return (int64_t)((OC + SS_PANEL - 1) / SS_PANEL) * SS_PANEL * C;
}

/* Copy rows [0, OC) of W(OC,C) into panels at dst, starting at panel row `row0` (so two matrices
 * can be stacked into one panel set: [Wz_e; Wcx_e]). dst must be zeroed beforehand. */
static void pack_rows(float *dst, const float *W, int OC, int C, int row0)
{
    for (int o = 0; o < OC; o++) {
        int r = row0 + o;
        float *p = dst + (size_t)(r / SS_PANEL) * SS_PANEL * C + (r % SS_PANEL);
        const float *w = W + (size_t)o * C;
        for (int c = 0; c < C; c++) p[(size_t)c * SS_PANEL] = w[c];
    }
}

/* The portable twin: each panel's 16 lanes are independent sums over c in order. Two panels at a
 * time give the compiler eight independent 128-bit chains when it vectorises the j loops. */
static void matvec_scalar(float *y, const float *Wpk, const float *x, const float *b, int C, int OC)
{
    int np = (OC + SS_PANEL - 1) / SS_PANEL;
    int p = 0;
    for (; p + 2 <= np; p += 2) {
        const float *w0 = Wpk + (size_t)p * SS_PANEL * C, *w1 = w0 + (size_t)SS_PANEL * C;
        float a0[SS_PANEL] = {0}, a1[SS_PANEL] = {0};
        for (int c = 0; c < C; c++) {
            float xc = x[c];
            const float *r0 = w0 + (size_t)c * SS_PANEL, *r1 = w1 + (size_t)c * SS_PANEL;
            for (int j = 0; j < SS_PANEL; j++) a0[j] += r0[j] * xc;
            for (int j = 0; j < SS_PANEL; j++) a1[j] += r1[j] * xc;
        }
        int o0 = p * SS_PANEL;
        int n1 = OC - o0 - SS_PANEL < SS_PANEL ? OC - o0 - SS_PANEL : SS_PANEL;
        for (int j = 0; j < SS_PANEL; j++) y[o0 + j] = a0[j] + (b ? b[o0 + j] : 0.0f);
        for (int j = 0; j < n1; j++) y[o0 + SS_PANEL + j] = a1[j] + (b ? b[o0 + SS_PANEL + j] : 0.0f);
    }
    for (; p < np; p++) {
        const float *w0 = Wpk + (size_t)p * SS_PANEL * C;
        float a0[SS_PANEL] = {0};
        for (int c = 0; c < C; c++) {
            float xc = x[c];
            const float *r0 = w0 + (size_t)c * SS_PANEL;
            for (int j = 0; j < SS_PANEL; j++) a0[j] += r0[j] * xc;
        }
        int o0 = p * SS_PANEL;
        int n0 = OC - o0 < SS_PANEL ? OC - o0 : SS_PANEL;
        for (int j = 0; j < n0; j++) y[o0 + j] = a0[j] + (b ? b[o0 + j] : 0.0f);
    }
}

static ss_matvec_fn pick_matvec(void)
{
    switch (ss_isa_active()) {
#ifdef SS_HAVE_AVX2
    case SS_ISA_AVX2: return ss_decode_matvec_avx2;
#endif
#ifdef SS_HAVE_AVX512
    case SS_ISA_AVX512: return ss_decode_matvec_avx512;
#endif
    default: return matvec_scalar;
    }
}

/* ---- sizes ------------------------------------------------------------------------------- */
int64_t ss_decode_packed_size(const ss_decode_model *m)
{
    int64_t n = 0;
    for (int l = 0; l < m->L; l++) {
        int I = l == 0 ? m->C : m->H;
        n += panel_size(m->X, I);
        n += (int64_t)m->X * (panel_size(2 * m->H, I) + panel_size(m->H, m->H));
        if (I != m->H) n += panel_size(m->H, I);
    }
    return n + panel_size(m->V, m->H);
}

/* Workspace: x (max(C,H)), g (X), gate (X), zc (2H), u (H), mix (H), res (H),
 * z (H), cand (H), picked (X ints); each piece rounded up to a multiple of 16 floats. */
#define SS_ROUND16(n) (((int64_t)(n) + 15) / 16 * 16)
int64_t ss_decode_workspace_size(const ss_decode_model *m)
{
    int CH = m->C > m->H ? m->C : m->H;
    return SS_ROUND16(CH) + 5 * SS_ROUND16(m->H) + SS_ROUND16(2 * m->H) + 3 * SS_ROUND16(m->X);
}

void ss_decode_pack(float *packed, const ss_decode_model *m)
{
    int H = m->H, X = m->X;
    memset(packed, 0, sizeof(float) * (size_t)ss_decode_packed_size(m));
    float *p = packed;
    for (int l = 0; l < m->L; l++) {
        const ss_decode_layer *ly = &m->layers[l];
        int I = l == 0 ? m->C : m->H;
        pack_rows(p, ly->Wg, X, I, 0);
        p += panel_size(X, I);
        for (int e = 0; e < X; e++) {
            pack_rows(p, ly->Wz + (size_t)e * H * I, H, I, 0);
            pack_rows(p, ly->Wcx + (size_t)e * H * I, H, I, H);
            p += panel_size(2 * H, I);
            pack_rows(p, ly->Wch + (size_t)e * H * H, H, H, 0);
            p += panel_size(H, H);
        }
        if (I != H) {
            pack_rows(p, ly->Wp, H, I, 0);
            p += panel_size(H, I);
        }
    }
    pack_rows(p, m->Wo, m->V, m->H, 0);
}

/* ---- one step ---------------------------------------------------------------------------- */
void ss_decode_step(float *logits, float *state, float *work, const ss_decode_model *m, int token)
{
    const int H = m->H, X = m->X, K = m->K;
    const int CH = m->C > m->H ? m->C : m->H;
    ss_matvec_fn matvec = pick_matvec();
    const ss_kernels *kt = ss_kernels_active();

    float *xbuf = work;                       /* (H) layer output = next layer's input */
    float *g = xbuf + SS_ROUND16(CH);         /* (X) router probabilities */
    float *gate = g + SS_ROUND16(X);          /* (X) mixing weight of each expert, 0 if idle */
    float *zc = gate + SS_ROUND16(X);         /* (2H) [Wz_e x; Wcx_e x] */
    float *u = zc + SS_ROUND16(2 * H);        /* (H) Wch_e h_e */
    float *mix = u + SS_ROUND16(H);           /* (H) sum of gated expert states */
    float *res = mix + SS_ROUND16(H);         /* (H) residual, then RMSNorm input */
    float *z = res + SS_ROUND16(H);           /* (H) update gate */
    float *cand = z + SS_ROUND16(H);          /* (H) candidate state */
    int *picked = (int *)(cand + SS_ROUND16(H)); /* (X) 1 for the experts that run */

    const float *x = m->WE + (size_t)token * m->C;    /* (C) embedding row, read-only */
    const float *pk = m->packed;
    for (int l = 0; l < m->L; l++) {
        const ss_decode_layer *ly = &m->layers[l];
        const int I = l == 0 ? m->C : H;
        float *hl = state + (size_t)l * X * H;          /* (X,H) this layer's expert states */
        const float *pWg = pk;
        pk += panel_size(X, I);
        const float *pExp = pk;                          /* X x ([Wz;Wcx] panels, Wch panels) */
        const int64_t zc_sz = panel_size(2 * H, I), ch_sz = panel_size(H, H);
        pk += (int64_t)X * (zc_sz + ch_sz);
        const float *pWp = 0;
        if (I != H) { pWp = pk; pk += panel_size(H, I); }

        /* router: g = softmax(Wg x + bg) (gate holds the pre-activation for a moment) */
        matvec(gate, pWg, x, ly->bg, I, X);
        kt->softmax_forward(g, gate, 1, X);

        /* top-K by g (ties: lower index), gates renormalised over the K; K == X keeps g */
        for (int e = 0; e < X; e++) picked[e] = K >= X;
        if (K >= X) {
            for (int e = 0; e < X; e++) gate[e] = g[e];
        } else {
            float tot = 0;
            for (int k = 0; k < K; k++) {
                int best = -1;
                for (int e = 0; e < X; e++)
                    if (!picked[e] && (best < 0 || g[e] > g[best])) best = e;
                picked[best] = 1;
                tot += g[best];
            }
            for (int e = 0; e < X; e++) gate[e] = picked[e] ? g[e] / tot : 0.0f;
        }

        /* selected experts: z, c, new h (idle experts keep theirs); mix = sum gate_e h_e */
        for (int h = 0; h < H; h++) mix[h] = 0.0f;
        for (int e = 0; e < X; e++) {
            if (!picked[e]) continue;
            float *he = hl + (size_t)e * H;
            const float *bz = ly->bz + (size_t)e * H, *bc = ly->bc + (size_t)e * H;
            const float *pzc = pExp + (int64_t)e * (zc_sz + ch_sz);
            matvec(zc, pzc, x, 0, I, 2 * H);
            matvec(u, pzc + zc_sz, he, 0, H, H);
            for (int h = 0; h < H; h++) {
                zc[h] += bz[h];                         /* update-gate pre-activation */
                zc[H + h] += u[h] + bc[h];              /* candidate pre-activation */
            }
            kt->sigmoid_forward(z, zc, H);              /* the dispatched (SIMD) elementwise */
            kt->gelu_forward(cand, zc + H, H);
            float ge = gate[e];
            for (int h = 0; h < H; h++) {
                float hn = (1.0f - z[h]) * he[h] + z[h] * cand[h];
                he[h] = hn;
                mix[h] += ge * hn;
            }
        }

        /* residual (projected when I != H), then RMSNorm */
        if (pWp) {
            matvec(res, pWp, x, ly->bp, I, H);
            for (int h = 0; h < H; h++) res[h] += mix[h];
        } else {
            for (int h = 0; h < H; h++) res[h] = mix[h] + x[h];
        }
        float rstd;                       /* x is no longer read: the output overwrites it */
        kt->rmsnorm_forward(xbuf, &rstd, res, ly->gamma, 1, H, m->eps);
        x = xbuf;
    }
    if (logits) matvec(logits, pk, x, m->bo, H, m->V);
}

/* ---- sampling ---------------------------------------------------------------------------- */
/* splitmix64 (Steele, Lea, Flood 2014): one 64-bit state word, every seed is a good seed. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double ss_rng_uniform(uint64_t *rng)
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

/* cand_worse(a, b): a ranks below b (smaller p, or equal p and a larger id). A min-heap on this
 * order keeps the top k seen so far with the weakest at the root. */
static int cand_worse(const ss_cand *a, const ss_cand *b)
{
    return a->p < b->p || (a->p == b->p && a->id > b->id);
}

static void heap_down_worst(ss_cand *a, int root, int n)
{
    for (;;) {
        int child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && cand_worse(&a[child + 1], &a[child])) child++;
        if (!cand_worse(&a[child], &a[root])) return;
        ss_cand t = a[root]; a[root] = a[child]; a[child] = t;
        root = child;
    }
}

/* Workspace: masked logits s (V), probabilities, later the nucleus window (V pairs),
 * candidates (V pairs). */
int64_t ss_sample_workspace_size(int V) { return 5 * (int64_t)V; }

int ss_sample(float *work, const float *logits, const uint8_t *allowed, int V,
              float temperature, int top_k, float top_p, uint64_t *rng)
{
    float *s = work;                          /* (V) logits, -inf where banned */
    float *prob = s + V;                      /* (V) softmax(s / temperature); (V pairs) window */
    ss_cand *cand = (ss_cand *)(prob + 2 * (size_t)V);    /* (V) candidates (p, id) */

    /* pass 1: mask, count and max in lane-parallel form (vectorises without reassociation) */
    float lm[8];
    int n_allowed = 0;
    for (int j = 0; j < 8; j++) lm[j] = -INFINITY;
    int i = 0;
    if (allowed) {
        for (; i + 8 <= V; i += 8)
            for (int j = 0; j < 8; j++) {
                float v = allowed[i + j] ? logits[i + j] : -INFINITY;
                s[i + j] = v;
                lm[j] = v > lm[j] ? v : lm[j];
                n_allowed += allowed[i + j] != 0;
            }
        for (; i < V; i++) {
            float v = allowed[i] ? logits[i] : -INFINITY;
            s[i] = v;
            lm[0] = v > lm[0] ? v : lm[0];
            n_allowed += allowed[i] != 0;
        }
    } else {
        for (; i + 8 <= V; i += 8)
            for (int j = 0; j < 8; j++) {
                float v = logits[i + j];
                s[i + j] = v;
                lm[j] = v > lm[j] ? v : lm[j];
            }
        for (; i < V; i++) {
            s[i] = logits[i];
            lm[0] = logits[i] > lm[0] ? logits[i] : lm[0];
        }
        n_allowed = V;
    }
    if (n_allowed == 0) return -1;
    float lmax = lm[0];
    for (int j = 1; j < 8; j++) lmax = lm[j] > lmax ? lm[j] : lmax;

    /* the greedy answer: the first allowed id holding the max (NaN logits never win) */
    int best = -1;
    for (i = 0; i < V; i++)
        if (s[i] == lmax && (!allowed || allowed[i])) { best = i; break; }
    if (best < 0)                             /* every allowed logit is NaN or -inf */
        for (i = 0; i < V; i++)
            if (!allowed || allowed[i]) { best = i; break; }
    if (!(temperature > 0.0f) || top_k == 1 || n_allowed == 1 || !isfinite(lmax)) return best;

    const float invT = 1.0f / temperature;
    int n = 0, sorted = 0;
    double total = 0;
    if (top_k > 0 && top_k < n_allowed) {
        /* top_k by logit. A lower bound first, without branches: deal the V logits into
         * top_k columns; the least column max is <= the k-th largest logit (top_k distinct
         * elements reach it). Compacting the logits >= that bound leaves a few times top_k
         * candidates, and a min-heap keeps the best top_k of them. Branches cost more here than
         * arithmetic (a heap over all V is mostly mispredicted jumps). */
        const int G = top_k;
        float *gm = prob;                     /* (G) column maxima */
        for (int r = 0; r < G; r++) gm[r] = -INFINITY;
        for (i = 0; i + G <= V; i += G)
            for (int r = 0; r < G; r++) gm[r] = s[i + r] > gm[r] ? s[i + r] : gm[r];
        for (int r = 0; i < V; i++, r++) gm[r] = s[i] > gm[r] ? s[i] : gm[r];
        float bound = gm[0];
        for (int r = 1; r < G; r++) bound = gm[r] < bound ? gm[r] : bound;
        int m = 0;
        for (i = 0; i < V; i++) {
            float v = s[i];
            cand[m].p = v;
            cand[m].id = i;
            m += (v >= bound) & (v > -INFINITY);
        }
        n = m < top_k ? m : top_k;
        for (int r = n / 2 - 1; r >= 0; r--) heap_down_worst(cand, r, n);
        for (int j = n; j < m; j++)
            if (cand[j].p > cand[0].p) {      /* ids rise with j: an equal logit is not better */
                cand[0] = cand[j];
                heap_down_worst(cand, 0, n);
            }
        sort_cands(cand, n);
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
    if (n == 0) return best;

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

    double u = ss_rng_uniform(rng) * total, cum = 0;
    for (int k = 0; k < n; k++) {
        cum += cand[k].p;
        if (u < cum) return cand[k].id;
    }
    return cand[n - 1].id;
}
