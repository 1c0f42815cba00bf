/* moegru.c: the MoE-GRU layer of MODEL.md sec. 1 over a whole window of T steps, forward and
 * exact backward through time (contract and shapes: shoestring.h, "MoE-GRU layer").
 *
 * Plan (llm.c style: big matmuls outside the time loop, only the recurrence inside it):
 *   1. router logits and softmax for all N = B*T rows at once; top-K selection per row;
 *   2. a counting sort lays every (row, selected expert) pair out "expert-grouped": expert e's
 *      positions are contiguous, ordered by step t, then by sequence b. So the rows an expert
 *      sees at step t are one contiguous segment, and all its rows one contiguous range;
 *   3. the input-only halves (update gate z, input half of the candidate) are one matmul per
 *      expert over the rows routed to it (sparse routing really skips the work);
 *   4. the time loop: per step and expert, gather the active sequences' states into the saved
 *      activations, one matmul with Wch_e, GELU, the GRU blend, scatter back, mix into r;
 *   5. residual and RMSNorm for all rows.
 * With cap > 0 the candidate is soft-capped, c = cap tanh(GELU(u) / cap) (step 4; its backward
 * uses the saved capped value); cap == 0 is the uncapped model, bit for bit as before.
 * The backward runs the same in reverse: RMSNorm and residual for all rows, the recurrence per
 * step (only dL/dh_prev = dA . Wch_e is sequential), then every weight gradient as one big
 * matmul per expert after the loop. Compute goes through the dispatched kernels of
 * ss_internal.h, so SIMD kernels speed this file up without it knowing.
 *
 * Single-threaded, no global mutable state, never allocates: buffers come from the caller.
 */
#include <string.h>
#include "ss_internal.h"

/* ---- buffer layouts ------------------------------------------------------------------------ */
/* Every region starts on a 64-byte boundary (16 floats) relative to the buffer start.          */
static size_t up16(size_t n) { return (n + 15) & ~(size_t)15; }

typedef struct {
    size_t G;       /* (N,X)    router probabilities (full softmax) */
    size_t SEL;     /* (N,K)    int32: selected experts of each row, ascending index */
    size_t GH;      /* (N,K)    gates renormalised over the selected experts */
    size_t SEG;     /* (X,T+1)  int32: expert e, step t occupies [SEG[e][t], SEG[e][t+1]) */
    size_t ROW;     /* (NK)     int32: row n = b*T + t of each expert-grouped position */
    size_t GATE;    /* (NK)     gate of each position */
    size_t Z;       /* (NK,H)   update gate z */
    size_t A;       /* (NK,H)   candidate pre-activation */
    size_t C;       /* (NK,H)   candidate GELU(A) */
    size_t HP;      /* (NK,H)   the expert state the step read (h before the update) */
    size_t R;       /* (N,H)    residual sum before RMSNorm */
    size_t RSTD;    /* (N)      RMSNorm 1/rms */
    size_t total;
} acts_layout;

static acts_layout acts_layout_of(int B, int T, int I, int H, int X, int K)
{
    (void)I;
    acts_layout L;
    size_t N = (size_t)B * T, NK = N * (size_t)K, off = 0;
#define TAKE(field, n) do { L.field = off; off += up16(n); } while (0)
    TAKE(G, N * X);
    TAKE(SEL, NK);
    TAKE(GH, NK);
    TAKE(SEG, (size_t)X * (T + 1));
    TAKE(ROW, NK);
    TAKE(GATE, NK);
    TAKE(Z, NK * H);
    TAKE(A, NK * H);
    TAKE(C, NK * H);
    TAKE(HP, NK * H);
    TAKE(R, N * H);
    TAKE(RSTD, N);
    L.total = off;
    return L;
}

typedef struct {            /* forward scratch */
    size_t logits;          /* (N,X)  router logits */
    size_t cursor;          /* (X,T)  int32: fill cursors of the counting sort */
    size_t xg;              /* (N,I)  inputs gathered for one expert */
    size_t pre;             /* (N,H)  z pre-activation of one expert */
    size_t tmp;             /* (B,H)  Wch_e . h for one segment */
    size_t wch;             /* H*(H+SS_PACK_NR_MAX): Wch_e packed for all T steps (overlaps
                               xg and pre, which the time loop does not use) */
    size_t total;
} fws_layout;

typedef struct {            /* backward scratch */
    size_t dR;              /* (N,H)  dL/dr */
    size_t dZ;              /* (NK,H) dL/d(z pre-activation) */
    size_t dA;              /* (NK,H) dL/d(candidate pre-activation) */
    size_t dstate;          /* (B,X,H) dL/dh_e, carried backwards in time (when dh is NULL) */
    size_t dc;              /* (B,H)  dL/dc for one segment */
    size_t dhp;             /* (B,H)  dL/dh_prev for one segment */
    size_t dG;              /* (N,X)  dL/dgate, then dL/dg (softmax output) */
    size_t dL;              /* (N,X)  dL/drouter logits */
    size_t xg;              /* (N,I)  inputs gathered for one expert */
    size_t dxg;             /* (N,I)  their gradient */
    size_t total;
} bws_layout;

static fws_layout fws_layout_of(int B, int T, int I, int H, int X, int K)
{
    (void)K;
    fws_layout L;
    size_t N = (size_t)B * T, off = 0;
    TAKE(logits, N * X);
    TAKE(cursor, (size_t)X * T);
    size_t packed = (size_t)H * (H + SS_PACK_NR_MAX), both = up16(N * I) + N * H;
    L.wch = off;
    TAKE(xg, N * I);
    TAKE(pre, (both < packed ? packed - up16(N * I) : N * H));
    TAKE(tmp, (size_t)B * H);
    L.total = off;
    return L;
}

static bws_layout bws_layout_of(int B, int T, int I, int H, int X, int K)
{
    bws_layout L;
    size_t N = (size_t)B * T, NK = N * (size_t)K, off = 0;
    TAKE(dR, N * H);
    TAKE(dZ, NK * H);
    TAKE(dA, NK * H);
    TAKE(dstate, (size_t)B * X * H);
    TAKE(dc, (size_t)B * H);
    TAKE(dhp, (size_t)B * H);
    TAKE(dG, N * X);
    TAKE(dL, N * X);
    TAKE(xg, N * I);
    TAKE(dxg, N * I);
    L.total = off;
    return L;
#undef TAKE
}

size_t ss_moegru_acts_floats(int B, int T, int I, int H, int X, int K)
{
    return acts_layout_of(B, T, I, H, X, K).total;
}

size_t ss_moegru_ws_floats(int B, int T, int I, int H, int X, int K)
{
    size_t f = fws_layout_of(B, T, I, H, X, K).total, b = bws_layout_of(B, T, I, H, X, K).total;
    return f > b ? f : b;
}

/* ---- routing -------------------------------------------------------------------------------- */
/* Top-K of g (X) into sel (K), ascending expert index. Expert e is selected when fewer than K
 * experts beat it (larger g, or equal g and lower index). The cap keeps exactly K even if g holds
 * NaNs (then the choice is arbitrary but memory-safe). K == X selects everything. */
static void select_topk(int32_t *sel, const float *g, int X, int K)
{
    int m = 0;
    for (int e = 0; e < X && m < K; e++) {
        int rank = 0;
        if (K < X) {
            float ge = g[e];
            for (int j = 0; j < X; j++) rank += (g[j] > ge) || (g[j] == ge && j < e);
        }
        if (rank < K) sel[m++] = e;
    }
}

/* ---- elementwise pieces of one expert step (restrict: the compiler vectorizes them) -------- */
/* y += x */
static void add_to(float *restrict y, const float *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

/* The GRU blend of one sequence: h = (1-z) h_prev + z c, written to the state; r += gate h. */
static void step_forward(float *restrict h, float *restrict r, float gate, const float *restrict z,
                         const float *restrict c, const float *restrict hp, int H)
{
    for (int i = 0; i < H; i++) {
        float hn = (1.0f - z[i]) * hp[i] + z[i] * c[i];
        h[i] = hn;
        r[i] += gate * hn;
    }
}

/* Backward of the blend for one sequence, given ds = dL/dh from later steps and dr = dL/dr:
 * dhn = ds + gate dr = dL/d(new h);  dz = dhn (c - h_prev) z (1-z) (through the sigmoid);
 * dc = dhn z;  dhp = dhn (1-z) (the direct path to h_prev; the Wch path is added later). */
static void step_backward(float *restrict dz, float *restrict dc, float *restrict dhp,
                          const float *restrict ds, const float *restrict dr, float gate,
                          const float *restrict z, const float *restrict c,
                          const float *restrict hp, int H)
{
    for (int i = 0; i < H; i++) {
        float zi = z[i], dhn = ds[i] + gate * dr[i];
        dz[i] = dhn * (c[i] - hp[i]) * zi * (1.0f - zi);
        dc[i] = dhn * zi;
        dhp[i] = dhn * (1.0f - zi);
    }
}

/* dr . ((1-z) h + z c): the gate's gradient. Eight partial sums in a fixed order, so that the
 * compiler vectorizes it without reassociation flags and the result stays deterministic. */
static float dot_new_state(const float *dr, const float *z, const float *h, const float *c, int H)
{
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= H; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += dr[i + l] * ((1.0f - z[i + l]) * h[i + l] + z[i + l] * c[i + l]);
    for (; i < H; i++) acc[i & 7] += dr[i] * ((1.0f - z[i]) * h[i] + z[i] * c[i]);
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* ---- the candidate's soft cap (bounded recurrence) ------------------------------------------- */
/* c = cap tanh(c / cap) = cap (2 sigmoid(2 c / cap) - 1) in place (cap > 0), through the
 * dispatched (SIMD) sigmoid, as the decode step computes it; tmp: n floats of scratch. The
 * candidate stays in (-cap, cap), so the state, a convex blend of candidates and the initial
 * state, stays bounded by construction. */
static void softcap_forward(const ss_kernels *k, float *restrict c, float *restrict tmp, size_t n,
                            float cap)
{
    const float k2 = 2.0f / cap;
    for (size_t i = 0; i < n; i++) tmp[i] = c[i] * k2;
    k->sigmoid_forward(c, tmp, (int64_t)n);
    for (size_t i = 0; i < n; i++) c[i] = cap * (2.0f * c[i] - 1.0f);
}

/* dc *= d(capped)/d(uncapped) = 1 - (capped / cap)^2, from the saved capped values. */
static void softcap_backward(float *restrict dc, const float *restrict capped, size_t n, float cap)
{
    const float inv = 1.0f / cap;
    for (size_t i = 0; i < n; i++) {
        float t = capped[i] * inv;
        dc[i] *= 1.0f - t * t;
    }
}

/* ---- forward -------------------------------------------------------------------------------- */
void ss_moegru_forward(float *out, float *acts, float *h, float *ws, const float *inp,
                       const ss_moegru_weights *w,
                       int B, int T, int I, int H, int X, int K, float eps, float cap)
{
    const ss_kernels *k = ss_kernels_active();
    const int N = B * T, T1 = T + 1;
    const acts_layout la = acts_layout_of(B, T, I, H, X, K);
    const fws_layout lw = fws_layout_of(B, T, I, H, X, K);
    float *G = acts + la.G, *GH = acts + la.GH, *GATE = acts + la.GATE;
    float *Z = acts + la.Z, *A = acts + la.A, *Cc = acts + la.C, *HP = acts + la.HP;
    float *R = acts + la.R, *RSTD = acts + la.RSTD;
    int32_t *SEL = (int32_t *)(acts + la.SEL), *SEG = (int32_t *)(acts + la.SEG);
    int32_t *ROW = (int32_t *)(acts + la.ROW), *cursor = (int32_t *)(ws + lw.cursor);
    float *logits = ws + lw.logits, *xg = ws + lw.xg, *pre = ws + lw.pre, *tmp = ws + lw.tmp;

    /* 1. router for every row; top-K and renormalised gates */
    k->matmul_forward(logits, inp, w->Wg, w->bg, N, I, X);
    k->softmax_forward(G, logits, N, X);
    for (int n = 0; n < N; n++) {
        const float *g = G + (size_t)n * X;
        int32_t *sel = SEL + (size_t)n * K;
        select_topk(sel, g, X, K);
        float S = 0.0f;
        for (int j = 0; j < K; j++) S += g[sel[j]];
        for (int j = 0; j < K; j++) GH[(size_t)n * K + j] = g[sel[j]] / S;
    }

    /* 2. expert-grouped layout: count per (e,t), prefix sums, fill in (t, b) order */
    memset(cursor, 0, sizeof(int32_t) * (size_t)X * T);
    for (int n = 0; n < N; n++) {
        int t = n % T;
        for (int j = 0; j < K; j++) cursor[SEL[(size_t)n * K + j] * T + t]++;
    }
    int32_t off = 0;
    for (int e = 0; e < X; e++) {
        for (int t = 0; t < T; t++) {
            int32_t c = cursor[e * T + t];
            SEG[e * T1 + t] = off;
            cursor[e * T + t] = off;
            off += c;
        }
        SEG[e * T1 + T] = off;
    }
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++) {
            int n = b * T + t;
            for (int j = 0; j < K; j++) {
                int e = SEL[(size_t)n * K + j];
                int32_t p = cursor[e * T + t]++;
                ROW[p] = n;
                GATE[p] = GH[(size_t)n * K + j];
            }
        }

    /* 3. input-only halves, one matmul per expert over the rows routed to it. An expert that
     * every row selected sees all rows in the same (t, b) order as any other such expert, so
     * consecutive ones share one gather (every expert, when K == X). */
    int xg_full = 0;
    for (int e = 0; e < X; e++) {
        int32_t e0 = SEG[e * T1], cnt = SEG[e * T1 + T] - e0;
        if (cnt == 0) continue;
        if (!(cnt == N && xg_full))
            for (int32_t j = 0; j < cnt; j++)
                memcpy(xg + (size_t)j * I, inp + (size_t)ROW[e0 + j] * I, sizeof(float) * I);
        xg_full = cnt == N;
        k->matmul_forward(pre, xg, w->Wz + (size_t)e * H * I, w->bz + (size_t)e * H, cnt, I, H);
        k->sigmoid_forward(Z + (size_t)e0 * H, pre, (int64_t)cnt * H);
        k->matmul_forward(A + (size_t)e0 * H, xg, w->Wcx + (size_t)e * H * I,
                          w->bc + (size_t)e * H, cnt, I, H);
    }

    /* residual first; the time loop adds the mix into it */
    if (w->Wp) k->matmul_forward(R, inp, w->Wp, w->bp, N, I, H);
    else memcpy(R, inp, sizeof(float) * (size_t)N * H);

    /* 4. the recurrence: per expert, per step, the active sequences as one matmul with Wch_e,
     *    packed once per expert for all T steps (the same bits as packing it on every call).
     *    Experts' states are independent and every row still receives its experts' mix in
     *    expert order, so running each expert through all steps in turn changes no bit. */
    float *WCH = ws + lw.wch;
    for (int e = 0; e < X; e++) {
        if (SEG[e * T1 + T] == SEG[e * T1]) continue;
        const float *Wch = w->Wch + (size_t)e * H * H;
        k->matmul_pack(WCH, Wch, H, H);
        for (int t = 0; t < T; t++) {
            int32_t s0 = SEG[e * T1 + t], m = SEG[e * T1 + t + 1] - s0;
            if (m == 0) continue;
            float *hp = HP + (size_t)s0 * H, *a = A + (size_t)s0 * H;
            for (int32_t j = 0; j < m; j++) {
                int b = ROW[s0 + j] / T;
                memcpy(hp + (size_t)j * H, h + ((size_t)b * X + e) * H, sizeof(float) * H);
            }
            k->matmul_forward_packed(tmp, hp, Wch, WCH, NULL, m, H, H);
            add_to(a, tmp, (size_t)m * H);
            k->gelu_forward(Cc + (size_t)s0 * H, a, (int64_t)m * H);
            if (cap > 0.0f) softcap_forward(k, Cc + (size_t)s0 * H, tmp, (size_t)m * H, cap);
            for (int32_t j = 0; j < m; j++) {
                size_t p = (size_t)s0 + j;
                int n = ROW[p];
                step_forward(h + ((size_t)(n / T) * X + e) * H, R + (size_t)n * H, GATE[p],
                             Z + p * H, Cc + p * H, HP + p * H, H);
            }
        }
    }

    /* 5. RMSNorm of every row */
    k->rmsnorm_forward(out, RSTD, R, w->gamma, N, H, eps);
}

/* ---- backward ------------------------------------------------------------------------------- */
void ss_moegru_backward(float *dinp, float *dh, const ss_moegru_grads *g, float *ws,
                        const float *dout, const float *acts, const float *inp,
                        const ss_moegru_weights *w,
                        int B, int T, int I, int H, int X, int K, float cap)
{
    const ss_kernels *k = ss_kernels_active();
    const int N = B * T, T1 = T + 1;
    const size_t NK = (size_t)N * K;
    const acts_layout la = acts_layout_of(B, T, I, H, X, K);
    const bws_layout lw = bws_layout_of(B, T, I, H, X, K);
    const float *G = acts + la.G, *GH = acts + la.GH, *GATE = acts + la.GATE;
    const float *Z = acts + la.Z, *A = acts + la.A, *Cc = acts + la.C, *HP = acts + la.HP;
    const float *R = acts + la.R, *RSTD = acts + la.RSTD;
    const int32_t *SEL = (const int32_t *)(acts + la.SEL), *SEG = (const int32_t *)(acts + la.SEG);
    const int32_t *ROW = (const int32_t *)(acts + la.ROW);
    float *dR = ws + lw.dR, *dZ = ws + lw.dZ, *dA = ws + lw.dA, *dc = ws + lw.dc;
    float *dhp = ws + lw.dhp, *dG = ws + lw.dG, *dL = ws + lw.dL;
    float *xg = ws + lw.xg, *dxg = ws + lw.dxg;
    /* dL/dh_e of every sequence, carried backwards in time: the caller's dh when given */
    float *dstate = dh ? dh : ws + lw.dstate;
    if (!dh) memset(dstate, 0, sizeof(float) * (size_t)B * X * H);

    /* RMSNorm and residual for every row */
    memset(dR, 0, sizeof(float) * (size_t)N * H);
    k->rmsnorm_backward(dR, g->gamma, dout, R, w->gamma, RSTD, N, H);
    if (w->Wp) k->matmul_backward(dinp, g->Wp, g->bp, dR, inp, w->Wp, N, I, H);
    else if (dinp) add_to(dinp, dR, (size_t)N * H);

    /* the recurrence in reverse: per step, per expert, the active sequences as one matmul */
    memset(dA, 0, sizeof(float) * NK * H);
    memset(dG, 0, sizeof(float) * (size_t)N * X);
    for (int t = T - 1; t >= 0; t--) {
        for (int e = 0; e < X; e++) {
            int32_t s0 = SEG[e * T1 + t], m = SEG[e * T1 + t + 1] - s0;
            if (m == 0) continue;
            for (int32_t j = 0; j < m; j++) {
                size_t p = (size_t)s0 + j;
                int n = ROW[p];
                float gt = GATE[p];
                const float *z = Z + p * H, *c = Cc + p * H, *hp = HP + p * H;
                const float *dr = dR + (size_t)n * H;
                const float *ds = dstate + ((size_t)(n / T) * X + e) * H;
                step_backward(dZ + p * H, dc + (size_t)j * H, dhp + (size_t)j * H, ds, dr, gt,
                              z, c, hp, H);
                dG[(size_t)n * X + e] = dot_new_state(dr, z, hp, c, H);  /* dL/dgate */
            }
            float *da = dA + (size_t)s0 * H;
            if (cap > 0.0f) softcap_backward(dc, Cc + (size_t)s0 * H, (size_t)m * H, cap);
            k->gelu_backward(da, dc, A + (size_t)s0 * H, (int64_t)m * H);
            k->matmul_backward(dhp, NULL, NULL, da, HP + (size_t)s0 * H,
                               w->Wch + (size_t)e * H * H, m, H, H);
            for (int32_t j = 0; j < m; j++) {
                int b = ROW[s0 + j] / T;
                memcpy(dstate + ((size_t)b * X + e) * H, dhp + (size_t)j * H, sizeof(float) * H);
            }
        }
    }

    /* weight gradients (and dinp) of the input-only halves: one big matmul per expert.
     * Consecutive experts that every row selected share one gather of inp and one scatter of
     * their summed dinp (same rows in the same order, see the forward). */
    int xg_full = 0;                   /* xg holds all rows in (t, b) order */
    const int32_t *pending = NULL;     /* dxg holds unscattered full-expert dinp, rows here */
    for (int e = 0; e < X; e++) {
        int32_t e0 = SEG[e * T1], cnt = SEG[e * T1 + T] - e0;
        if (cnt == 0) continue;
        const float *dAe = dA + (size_t)e0 * H, *dZe = dZ + (size_t)e0 * H;
        if (g->Wch)
            k->matmul_backward(NULL, g->Wch + (size_t)e * H * H, NULL, dAe, HP + (size_t)e0 * H,
                               w->Wch + (size_t)e * H * H, cnt, H, H);
        int reuse = cnt == N && xg_full;
        if (!reuse) {
            if (pending) {
                for (int32_t j = 0; j < N; j++)
                    add_to(dinp + (size_t)pending[j] * I, dxg + (size_t)j * I, (size_t)I);
                pending = NULL;
            }
            for (int32_t j = 0; j < cnt; j++)
                memcpy(xg + (size_t)j * I, inp + (size_t)ROW[e0 + j] * I, sizeof(float) * I);
        }
        xg_full = cnt == N;
        if (dinp && !pending) memset(dxg, 0, sizeof(float) * (size_t)cnt * I);
        k->matmul_backward(dinp ? dxg : NULL, g->Wz ? g->Wz + (size_t)e * H * I : NULL,
                           g->bz ? g->bz + (size_t)e * H : NULL, dZe, xg,
                           w->Wz + (size_t)e * H * I, cnt, I, H);
        k->matmul_backward(dinp ? dxg : NULL, g->Wcx ? g->Wcx + (size_t)e * H * I : NULL,
                           g->bc ? g->bc + (size_t)e * H : NULL, dAe, xg,
                           w->Wcx + (size_t)e * H * I, cnt, I, H);
        if (dinp && cnt == N) pending = ROW + e0;      /* scatter later, summed */
        else if (dinp)
            for (int32_t j = 0; j < cnt; j++)
                add_to(dinp + (size_t)ROW[e0 + j] * I, dxg + (size_t)j * I, (size_t)I);
    }
    if (pending)
        for (int32_t j = 0; j < N; j++)
            add_to(dinp + (size_t)pending[j] * I, dxg + (size_t)j * I, (size_t)I);

    /* router: through the renormalisation over the selected experts, then the softmax */
    for (int n = 0; n < N; n++) {
        const int32_t *sel = SEL + (size_t)n * K;
        const float *gn = G + (size_t)n * X, *ghat = GH + (size_t)n * K;
        float *d = dG + (size_t)n * X;
        float S = 0.0f, s = 0.0f;
        for (int j = 0; j < K; j++) S += gn[sel[j]];
        for (int j = 0; j < K; j++) s += ghat[j] * d[sel[j]];
        for (int j = 0; j < K; j++) d[sel[j]] = (d[sel[j]] - s) / S;   /* others stay 0 */
    }
    memset(dL, 0, sizeof(float) * (size_t)N * X);
    k->softmax_backward(dL, dG, G, N, X);
    k->matmul_backward(dinp, g->Wg, g->bg, dL, inp, w->Wg, N, I, X);
}
