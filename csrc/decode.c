/* decode.c: one token through the whole model at batch 1 (chat and generation), the generation
 * loop, and the int8 weights.
 *
 * Contract (MODEL.md §1, one sequence, one time step):
 *   ss_decode_pack     copies every matrix once, at model load, into row panels (below) in a
 *                      buffer of ss_decode_packed_size floats that the caller owns;
 *   ss_decode_pack_q8  the same from int8 matrices (ss_quantize_rows) into int8 panels;
 *   ss_decode_embed_proj  layer 0's input products for every token, once (a table the step reads
 *                      one row of instead of layer 0's input matrices);
 *   ss_decode_step     embeds one token, runs the L layers (router, top-K experts, mix, residual,
 *                      RMSNorm) and the head, updating the recurrent state (L,X,H) in place and
 *                      writing logits (V); logits == NULL skips the head (prompt tokens). It uses
 *                      a caller-owned workspace of ss_decode_workspace_size floats: nothing is
 *                      allocated. int8 weights when m->packed_q8 is set;
 *   ss_generate        the whole loop: prompt in, token ids out in chunks (sample.c draws).
 *
 * Panel layout: a matrix W(OC,C) becomes ceil(OC/16) panels of 16 rows; panel p stores
 * W[16p + j][c] at [p][c][j] (rows past OC are zero). The matrix-vector kernels (decode_matvec in
 * kernels_body.h for every SIMD instruction set, kernels_scalar.c for the scalar twin; chosen
 * through the dispatched table) walk each panel once with 16 independent sums per panel and no
 * horizontal sums. int8 panels group 4 columns: byte [p][g][j][k] = q[16p + j][4g + k], columns
 * padded with zeros to a multiple of 32, one float scale per row; the vector is quantised per
 * block of 32 (ss_quantize_x), so a product is exact integer block sums times two scales.
 * Packed per layer: Wg (X rows), per expert [Wz_e; Wcx_e] (2H rows) and Wch_e (H rows), then Wp
 * (H rows) when I != H; then the head Wo (V rows).
 *
 * The candidate's optional soft cap (cap > 0): c = cap * tanh(GELU(u) / cap), computed as
 * cap * (2 sigmoid(2 GELU(u) / cap) - 1) with the dispatched sigmoid; cap == 0 is GELU(u).
 */
#include <math.h>
#include <string.h>
#include "ss_internal.h"

/* ---- panels ------------------------------------------------------------------------------ */
int64_t ss_panel_size(int OC, int C)
{
    return (int64_t)((OC + SS_PANEL - 1) / SS_PANEL) * SS_PANEL * C;
}

int ss_q8_width(int C) { return (C + SS_Q8_BLOCK - 1) / SS_Q8_BLOCK * SS_Q8_BLOCK; }
int64_t ss_panel_q8_size(int OC, int C) { return ss_panel_size(OC, ss_q8_width(C)); }
int64_t ss_panel_q8_rows(int OC) { return (int64_t)((OC + SS_PANEL - 1) / SS_PANEL) * SS_PANEL; }

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

/* The int8 twin: q(OC,C) rows into int8 panels of width Cp = ss_q8_width(C), scales alongside. */
static void pack_rows_q8(int8_t *dst, float *dscale, const int8_t *q, const float *scale, int OC,
                         int C, int row0)
{
    const int Cp = ss_q8_width(C);
    for (int o = 0; o < OC; o++) {
        int r = row0 + o, j = r % SS_PANEL;
        int8_t *p = dst + (size_t)(r / SS_PANEL) * SS_PANEL * Cp + 4 * j;
        const int8_t *w = q + (size_t)o * C;
        for (int c = 0; c < C; c++) p[(size_t)(c / 4) * 4 * SS_PANEL + (c % 4)] = w[c];
        dscale[r] = scale[o];
    }
}

void ss_panel_pack(float *dst, const float *W, int OC, int C)
{
    memset(dst, 0, sizeof(float) * (size_t)ss_panel_size(OC, C));
    pack_rows(dst, W, OC, C, 0);
}

void ss_panel_pack_q8(int8_t *dst, float *dscale, const int8_t *q, const float *scale, int OC, int C)
{
    memset(dst, 0, (size_t)ss_panel_q8_size(OC, C));
    memset(dscale, 0, sizeof(float) * (size_t)ss_panel_q8_rows(OC));
    pack_rows_q8(dst, dscale, q, scale, OC, C, 0);
}

/* ---- int8 quantisation ---------------------------------------------------------------------- */
/* One symmetric scale for n values: s = max|v| / 127, q = rint(v * (127 / max)) in [-127, 127]
 * (NaN values are left out of the max and give 0). The scalar loop is the reference; on x86-64
 * the block of 32 that the decode step quantises 15 times a token (0.25 us per 96 values
 * scalar) runs on SSE2, which every x86-64 CPU has, with the same bits: the max ignores NaN as
 * the scalar comparison does, cvtps2dq rounds half to even as lrintf does, and NaN lanes are
 * zeroed as (int8_t)lrintf(NaN) is on x86-64. */
static float quantize_scalar(int8_t *q, const float *v, int n)
{
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        amax = a > amax ? a : amax;
    }
    if (!(amax > 0.0f) || !isfinite(amax)) {      /* all zero (or not finite: nothing to keep) */
        for (int i = 0; i < n; i++) q[i] = 0;
        return 0.0f;
    }
    const float inv = 127.0f / amax;
    for (int i = 0; i < n; i++) q[i] = isnan(v[i]) ? 0 : (int8_t)lrintf(v[i] * inv);
    return amax / 127.0f;
}

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define SS_QUANT_SSE2 1
static float quantize_block_sse2(int8_t *q, const float *v)    /* n == SS_Q8_BLOCK == 32 */
{
    const __m128 sign = _mm_set1_ps(-0.0f);
    __m128 m = _mm_setzero_ps();
    for (int i = 0; i < 32; i += 4)               /* max(a, m): a NaN |v| keeps m */
        m = _mm_max_ps(_mm_andnot_ps(sign, _mm_loadu_ps(v + i)), m);
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(2, 3, 0, 1)));
    const float amax = _mm_cvtss_f32(m);
    if (!(amax > 0.0f) || !isfinite(amax)) {
        memset(q, 0, 32);
        return 0.0f;
    }
    if (!isfinite(127.0f / amax)) return quantize_scalar(q, v, 32);   /* a subnormal max */
    const __m128 inv = _mm_set1_ps(127.0f / amax);
    for (int i = 0; i < 32; i += 16) {
        __m128i r[4];
        for (int j = 0; j < 4; j++) {
            const __m128 x = _mm_loadu_ps(v + i + 4 * j);
            const __m128 ok = _mm_cmpord_ps(x, x);                    /* not NaN */
            r[j] = _mm_and_si128(_mm_cvtps_epi32(_mm_mul_ps(x, inv)), _mm_castps_si128(ok));
        }
        const __m128i w = _mm_packs_epi16(_mm_packs_epi32(r[0], r[1]), _mm_packs_epi32(r[2], r[3]));
        _mm_storeu_si128((__m128i *)(q + i), w);
    }
    return amax / 127.0f;
}
#endif

static float quantize_run(int8_t *q, const float *v, int n)
{
#ifdef SS_QUANT_SSE2
    if (n == SS_Q8_BLOCK) return quantize_block_sse2(q, v);
#endif
    return quantize_scalar(q, v, n);
}

void ss_quantize_rows(int8_t *q, float *scale, const float *W, int64_t N, int C)
{
    for (int64_t n = 0; n < N; n++) scale[n] = quantize_run(q + n * C, W + n * C, C);
}

/* x(C) per block of 32, zero-padded to ss_q8_width(C); scalar: every block on the scalar loop
 * (ss_quantize_x_scalar, the twin tests compare with), else whole blocks on SSE2 where built. */
static void quantize_blocks(int8_t *xq, float *xscale, int32_t *xsum, const float *x, int C,
                            int scalar)
{
    const int Cp = ss_q8_width(C);
    for (int b = 0; b * SS_Q8_BLOCK < Cp; b++) {
        int c0 = b * SS_Q8_BLOCK, n = C - c0 < SS_Q8_BLOCK ? C - c0 : SS_Q8_BLOCK;
        int8_t *qb = xq + c0;
        xscale[b] = scalar ? quantize_scalar(qb, x + c0, n) : quantize_run(qb, x + c0, n);
        for (int i = n; i < SS_Q8_BLOCK; i++) qb[i] = 0;
        int32_t s = 0;
        for (int i = 0; i < SS_Q8_BLOCK; i++) s += qb[i];
        xsum[b] = s;
    }
}

void ss_quantize_x(int8_t *xq, float *xscale, int32_t *xsum, const float *x, int C)
{
    quantize_blocks(xq, xscale, xsum, x, C, 0);
}

void ss_quantize_x_scalar(int8_t *xq, float *xscale, int32_t *xsum, const float *x, int C)
{
    quantize_blocks(xq, xscale, xsum, x, C, 1);
}

/* ---- sizes ------------------------------------------------------------------------------- */
int64_t ss_decode_packed_size(const ss_decode_model *m)
{
    int64_t n = 0;
    for (int l = 0; l < m->L; l++) {
        int I = l == 0 ? m->C : m->H;
        n += ss_panel_size(m->X, I);
        n += (int64_t)m->X * (ss_panel_size(2 * m->H, I) + ss_panel_size(m->H, m->H));
        if (I != m->H) n += ss_panel_size(m->H, I);
    }
    return n + ss_panel_size(m->V, m->H);
}

int64_t ss_decode_packed_q8_size(const ss_decode_model *m)
{
    int64_t n = 0;
    for (int l = 0; l < m->L; l++) {
        int I = l == 0 ? m->C : m->H;
        n += ss_panel_q8_size(m->X, I);
        n += (int64_t)m->X * (ss_panel_q8_size(2 * m->H, I) + ss_panel_q8_size(m->H, m->H));
        if (I != m->H) n += ss_panel_q8_size(m->H, I);
    }
    return n + ss_panel_q8_size(m->V, m->H);
}

int64_t ss_decode_packed_q8_scales(const ss_decode_model *m)
{
    int64_t n = 0;
    for (int l = 0; l < m->L; l++) {
        int I = l == 0 ? m->C : m->H;
        n += ss_panel_q8_rows(m->X);
        n += (int64_t)m->X * (ss_panel_q8_rows(2 * m->H) + ss_panel_q8_rows(m->H));
        if (I != m->H) n += ss_panel_q8_rows(m->H);
    }
    return n + ss_panel_q8_rows(m->V);
}

/* Workspace: x (max(C,H)), g (X), gate (X), zc (2H), u (H), mix (H), res (H), z (H), cand (H),
 * picked (X ints), then for int8: xq and hq (Cp bytes each), their scales and sums (Cp/32 each);
 * each piece rounded up to a multiple of 16 floats. */
#define SS_ROUND16(n) (((int64_t)(n) + 15) / 16 * 16)
int64_t ss_decode_workspace_size(const ss_decode_model *m)
{
    int CH = m->C > m->H ? m->C : m->H, Cp = ss_q8_width(CH);
    return SS_ROUND16(CH) + 5 * SS_ROUND16(m->H) + SS_ROUND16(2 * m->H) + 3 * SS_ROUND16(m->X)
         + 2 * (SS_ROUND16(Cp / 4) + 2 * SS_ROUND16(Cp / SS_Q8_BLOCK));
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
        p += ss_panel_size(X, I);
        for (int e = 0; e < X; e++) {
            pack_rows(p, ly->Wz + (size_t)e * H * I, H, I, 0);
            pack_rows(p, ly->Wcx + (size_t)e * H * I, H, I, H);
            p += ss_panel_size(2 * H, I);
            pack_rows(p, ly->Wch + (size_t)e * H * H, H, H, 0);
            p += ss_panel_size(H, H);
        }
        if (I != H) {
            pack_rows(p, ly->Wp, H, I, 0);
            p += ss_panel_size(H, I);
        }
    }
    pack_rows(p, m->Wo, m->V, m->H, 0);
}

void ss_decode_pack_q8(int8_t *packed, float *scales, const ss_decode_model *m)
{
    int H = m->H, X = m->X;
    memset(packed, 0, (size_t)ss_decode_packed_q8_size(m));
    memset(scales, 0, sizeof(float) * (size_t)ss_decode_packed_q8_scales(m));
    int8_t *p = packed;
    float *s = scales;
    for (int l = 0; l < m->L; l++) {
        const ss_decode_layer *ly = &m->layers[l];
        int I = l == 0 ? m->C : m->H;
        pack_rows_q8(p, s, ly->qWg.q, ly->qWg.scale, X, I, 0);
        p += ss_panel_q8_size(X, I);
        s += ss_panel_q8_rows(X);
        for (int e = 0; e < X; e++) {
            size_t o = (size_t)e * H;
            pack_rows_q8(p, s, ly->qWz.q + o * I, ly->qWz.scale + o, H, I, 0);
            pack_rows_q8(p, s, ly->qWcx.q + o * I, ly->qWcx.scale + o, H, I, H);
            p += ss_panel_q8_size(2 * H, I);
            s += ss_panel_q8_rows(2 * H);
            pack_rows_q8(p, s, ly->qWch.q + o * H, ly->qWch.scale + o, H, H, 0);
            p += ss_panel_q8_size(H, H);
            s += ss_panel_q8_rows(H);
        }
        if (I != H) {
            pack_rows_q8(p, s, ly->qWp.q, ly->qWp.scale, H, I, 0);
            p += ss_panel_q8_size(H, I);
            s += ss_panel_q8_rows(H);
        }
    }
    pack_rows_q8(p, s, m->qWo.q, m->qWo.scale, m->V, m->H, 0);
}

/* ---- the step's pieces ------------------------------------------------------------------- */
/* The weights being walked: float panels, or int8 panels and their scales. */
typedef struct {
    const ss_kernels *kt;
    int q8, dot;
    const float *pf;      /* next float panel set */
    const int8_t *pq;     /* next int8 panel set */
    const float *ps;      /* its scales */
} ss_walk;

typedef struct { const float *f; const int8_t *q; const float *s; } ss_mat;

/* The next matrix (OC,C) of the packed sequence. */
static ss_mat next_mat(ss_walk *w, int OC, int C)
{
    ss_mat m = {0, 0, 0};
    if (w->q8) {
        m.q = w->pq;
        m.s = w->ps;
        w->pq += ss_panel_q8_size(OC, C);
        w->ps += ss_panel_q8_rows(OC);
    } else {
        m.f = w->pf;
        w->pf += ss_panel_size(OC, C);
    }
    return m;
}

/* A vector as the kernels take it: float32, and its int8 form when the weights are int8. */
typedef struct { const float *x; int8_t *q; float *s; int32_t *sum; } ss_vec;

static void vec_quantize(const ss_walk *w, ss_vec *v, int C)
{
    if (w->q8) ss_quantize_x(v->q, v->s, v->sum, v->x, C);
}

static void matvec(const ss_walk *w, float *y, ss_mat W, const ss_vec *v, const float *b, int C,
                   int OC)
{
    if (w->q8)
        w->kt->decode_matvec_q8(y, W.q, W.s, v->q, v->s, v->sum, b, ss_q8_width(C), OC, w->dot);
    else
        w->kt->decode_matvec(y, W.f, v->x, b, C, OC);
}

/* The step's workspace, carved from ss_decode_workspace_size floats. */
typedef struct {
    float *x;        /* (H) layer output = next layer's input */
    float *g;        /* (X) router probabilities */
    float *gate;     /* (X) mixing weight of each expert, 0 if idle */
    float *zc;       /* (2H) [Wz_e x; Wcx_e x] */
    float *u;        /* (H) Wch_e h_e */
    float *mix;      /* (H) sum of gated expert states */
    float *res;      /* (H) residual, then RMSNorm input */
    float *z;        /* (H) update gate */
    float *cand;     /* (H) candidate state */
    int *picked;     /* (X) 1 for the experts that run */
    ss_vec xv, hv;   /* int8 forms: layer input, expert state */
} ss_decode_ws;

static ss_decode_ws carve(float *work, const ss_decode_model *m)
{
    const int H = m->H, X = m->X;
    const int CH = m->C > m->H ? m->C : m->H, Cp = ss_q8_width(CH);
    ss_decode_ws w;
    w.x = work;
    w.g = w.x + SS_ROUND16(CH);
    w.gate = w.g + SS_ROUND16(X);
    w.zc = w.gate + SS_ROUND16(X);
    w.u = w.zc + SS_ROUND16(2 * H);
    w.mix = w.u + SS_ROUND16(H);
    w.res = w.mix + SS_ROUND16(H);
    w.z = w.res + SS_ROUND16(H);
    w.cand = w.z + SS_ROUND16(H);
    w.picked = (int *)(w.cand + SS_ROUND16(H));
    float *q8 = (float *)w.picked + SS_ROUND16(X);
    w.xv.x = w.hv.x = 0;
    w.xv.q = (int8_t *)q8;
    w.xv.s = q8 + SS_ROUND16(Cp / 4);
    w.xv.sum = (int32_t *)(w.xv.s + SS_ROUND16(Cp / SS_Q8_BLOCK));
    w.hv.q = (int8_t *)((float *)w.xv.sum + SS_ROUND16(Cp / SS_Q8_BLOCK));
    w.hv.s = (float *)w.hv.q + SS_ROUND16(Cp / 4);
    w.hv.sum = (int32_t *)(w.hv.s + SS_ROUND16(Cp / SS_Q8_BLOCK));
    return w;
}

static ss_walk walk_start(const ss_decode_model *m, const ss_kernels *kt)
{
    ss_walk wk = {kt, m->packed_q8 != 0, ss_int8_dot_enabled(), m->packed, m->packed_q8,
                  m->scales_q8};
    return wk;
}

/* ---- layer 0's input products, one row per token ----------------------------------------- */
/* Row layout: Wg x + bg (X, padded to 16), then [Wz_e x; Wcx_e x] of expert e at 2H*e, then
 * Wp x + bp (H) when C != H; padded to 16 floats. */
static int64_t embed_zc_at(const ss_decode_model *m) { return SS_ROUND16(m->X); }
static int64_t embed_p_at(const ss_decode_model *m)
{
    return embed_zc_at(m) + (int64_t)m->X * 2 * m->H;
}

int64_t ss_decode_embed_proj_row(const ss_decode_model *m)
{
    return SS_ROUND16(embed_p_at(m) + (m->C != m->H ? m->H : 0));
}

int64_t ss_decode_embed_proj_size(const ss_decode_model *m)
{
    return (int64_t)m->V * ss_decode_embed_proj_row(m);
}

/* The same kernel calls, on the same packed matrices and the same vector, as the step's layer 0
 * makes: so each entry has the step's bits. */
void ss_decode_embed_proj(float *table, float *work, ss_decode_model *m)
{
    const int H = m->H, X = m->X, I = m->C;
    const int64_t E = ss_decode_embed_proj_row(m), oz = embed_zc_at(m), op = embed_p_at(m);
    const ss_kernels *kt = ss_kernels_active();
    const ss_decode_layer *ly = &m->layers[0];
    ss_decode_ws w = carve(work, m);
    m->embed_proj = 0;
    for (int t = 0; t < m->V; t++) {
        float *row = table + (size_t)t * E;                     /* (E) */
        memset(row, 0, sizeof(float) * (size_t)E);              /* the padding too */
        ss_walk wk = walk_start(m, kt);
        w.xv.x = m->WE + (size_t)t * I;                         /* (C) */
        vec_quantize(&wk, &w.xv, I);
        matvec(&wk, row, next_mat(&wk, X, I), &w.xv, ly->bg, I, X);
        for (int e = 0; e < X; e++) {
            ss_mat Wzc = next_mat(&wk, 2 * H, I);
            next_mat(&wk, H, H);                                /* Wch_e: the state's */
            matvec(&wk, row + oz + (size_t)e * 2 * H, Wzc, &w.xv, 0, I, 2 * H);
        }
        if (I != H) matvec(&wk, row + op, next_mat(&wk, H, I), &w.xv, ly->bp, I, H);
    }
    m->embed_proj = table;
    m->embed_proj_kernels = kt;
    m->embed_proj_dot = ss_int8_dot_enabled();
}

/* ---- one step ---------------------------------------------------------------------------- */
void ss_decode_step(float *logits, float *state, float *work, const ss_decode_model *m, int token)
{
    const int H = m->H, X = m->X, K = m->K;
    const ss_kernels *kt = ss_kernels_active();
    ss_walk wk = walk_start(m, kt);
    ss_decode_ws w = carve(work, m);
    float *xbuf = w.x, *g = w.g, *gate = w.gate, *zc = w.zc, *u = w.u, *mix = w.mix;
    float *res = w.res, *z = w.z, *cand = w.cand;
    int *picked = w.picked;
    ss_vec xv = w.xv, hv = w.hv;
    /* (E) layer 0's input products of this token, when the table is there and still current */
    const float *row = m->embed_proj && m->embed_proj_kernels == (const void *)kt
                       && (!wk.q8 || m->embed_proj_dot == wk.dot)
                       ? m->embed_proj + (size_t)token * ss_decode_embed_proj_row(m) : 0;
    const float cap = m->cap;

    const float *x = m->WE + (size_t)token * m->C;    /* (C) embedding row, read-only */
    for (int l = 0; l < m->L; l++) {
        const ss_decode_layer *ly = &m->layers[l];
        const int I = l == 0 ? m->C : H;
        float *hl = state + (size_t)l * X * H;          /* (X,H) this layer's expert states */
        const float *tab = l == 0 ? row : 0;            /* this layer's input products, if tabled */
        xv.x = x;
        if (!tab) vec_quantize(&wk, &xv, I);
        ss_mat Wg = next_mat(&wk, X, I);

        /* router: g = softmax(Wg x + bg) (gate holds the pre-activation for a moment) */
        if (!tab) matvec(&wk, gate, Wg, &xv, ly->bg, I, X);
        kt->softmax_forward(g, tab ? tab : gate, 1, X);

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
            ss_mat Wzc = next_mat(&wk, 2 * H, I), Wch = next_mat(&wk, H, H);
            if (!picked[e]) continue;
            float *he = hl + (size_t)e * H;
            const float *bz = ly->bz + (size_t)e * H, *bc = ly->bc + (size_t)e * H;
            hv.x = he;
            vec_quantize(&wk, &hv, H);
            if (tab)
                memcpy(zc, tab + embed_zc_at(m) + (size_t)e * 2 * H, sizeof(float) * 2 * H);
            else
                matvec(&wk, zc, Wzc, &xv, 0, I, 2 * H);
            matvec(&wk, u, Wch, &hv, 0, H, H);
            for (int h = 0; h < H; h++) {
                zc[h] += bz[h];                         /* update-gate pre-activation */
                zc[H + h] += u[h] + bc[h];              /* candidate pre-activation */
            }
            kt->sigmoid_forward(z, zc, H);              /* the dispatched (SIMD) elementwise */
            kt->gelu_forward(cand, zc + H, H);
            if (cap > 0.0f) {                           /* cap tanh(c / cap) = cap (2 s(2c/cap) - 1) */
                const float k2 = 2.0f / cap;
                for (int h = 0; h < H; h++) cand[h] *= k2;
                kt->sigmoid_forward(cand, cand, H);
                for (int h = 0; h < H; h++) cand[h] = cap * (2.0f * cand[h] - 1.0f);
            }
            float ge = gate[e];
            for (int h = 0; h < H; h++) {
                float hn = (1.0f - z[h]) * he[h] + z[h] * cand[h];
                he[h] = hn;
                mix[h] += ge * hn;
            }
        }

        /* residual (projected when I != H), then RMSNorm */
        if (I != H) {
            ss_mat Wp = next_mat(&wk, H, I);
            if (tab)
                memcpy(res, tab + embed_p_at(m), sizeof(float) * H);
            else
                matvec(&wk, res, Wp, &xv, ly->bp, I, H);
            for (int h = 0; h < H; h++) res[h] += mix[h];
        } else {
            for (int h = 0; h < H; h++) res[h] = mix[h] + x[h];
        }
        float rstd;                       /* x is no longer read: the output overwrites it */
        kt->rmsnorm_forward(xbuf, &rstd, res, ly->gamma, 1, H, m->eps);
        x = xbuf;
    }
    if (logits) {
        ss_mat Wo = next_mat(&wk, m->V, H);
        xv.x = x;
        vec_quantize(&wk, &xv, H);
        matvec(&wk, logits, Wo, &xv, m->bo, H, m->V);
    }
}

/* ---- the generation loop ----------------------------------------------------------------- */
int ss_generate(ss_gen *g, const int32_t *prompt, int n_prompt, int32_t *out, int cap)
{
    const ss_decode_model *m = g->m;
    if (n_prompt > 0) {
        for (int i = 0; i < n_prompt - 1; i++) ss_decode_step(0, g->state, g->work, m, prompt[i]);
        ss_decode_step(g->logits, g->state, g->work, m, prompt[n_prompt - 1]);
        g->n_generated = 0;
        g->status = SS_GEN_RUNNING;
    }
    int n = 0;
    while (g->status == SS_GEN_RUNNING) {
        if (g->n_generated >= g->max_tokens) { g->status = SS_GEN_LIMIT; break; }
        if (g->stop) { g->status = SS_GEN_STOPPED; break; }
        if (n >= cap) break;                  /* chunk full: the caller comes back with n = 0 */
        int tok = ss_sample(g->swork, g->logits, g->allowed, m->V, g->temperature, g->top_k,
                            g->top_p, &g->rng);
        if (tok < 0) { g->status = SS_GEN_BANNED; break; }
        if (tok == g->eos) { g->status = SS_GEN_EOS; break; }
        ss_decode_step(g->logits, g->state, g->work, m, tok);
        out[n++] = tok;
        g->n_generated++;
    }
    return n;
}
