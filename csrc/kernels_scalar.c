/* kernels_scalar.c: the portable twin of every kernel; always built, the reference the SIMD
 * files are tested against. Plain C99, no intrinsics; loops are arranged so that compilers can
 * vectorize them with the baseline instruction set (SSE2 on x86-64), so it is not needlessly slow.
 */
#include <math.h>
#include "ss_internal.h"

/* ---- matmul ------------------------------------------------------------------------------ */
/* Few rows: out[n][o] = dot(inp[n], W[o]) + b[o], 4 output columns at a time share each inp row. */
static void matmul_forward_dot(float *out, const float *inp, const float *W, const float *b,
                               int N, int C, int OC)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * OC;
        int o = 0;
        for (; o + 4 <= OC; o += 4) {
            const float *w0 = W + (size_t)o * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
            float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            for (int c = 0; c < C; c++) {
                float xc = x[c];
                a0 += xc * w0[c]; a1 += xc * w1[c]; a2 += xc * w2[c]; a3 += xc * w3[c];
            }
            y[o] = a0 + (b ? b[o] : 0.0f);
            y[o + 1] = a1 + (b ? b[o + 1] : 0.0f);
            y[o + 2] = a2 + (b ? b[o + 2] : 0.0f);
            y[o + 3] = a3 + (b ? b[o + 3] : 0.0f);
        }
        for (; o < OC; o++) {
            const float *w = W + (size_t)o * C;
            float a = 0;
            for (int c = 0; c < C; c++) a += x[c] * w[c];
            y[o] = a + (b ? b[o] : 0.0f);
        }
    }
}

/* out(N,OC) = inp(N,C) . W(OC,C)^T + b(OC). A block of W (SC_NR output columns x SC_KC
 * reduction steps) is copied transposed into a stack panel; SC_MR rows of inp then accumulate
 * into an SC_MR x SC_NR tile whose inner loop runs along the output columns with no reduction,
 * which compilers vectorize with the baseline SIMD (SSE2: about 3x the dot-product form). */
#define SC_NR 16
#define SC_MR 4
#define SC_KC 64
_Static_assert(SC_NR <= SS_PACK_NR_MAX, "SS_PACK_NR_MAX bounds every panel width");
/* pack[k * SC_NR + j] = W[o0 + j][k0 + k] for the panel (o0, k0); columns j >= nc zero */
static void sc_pack(float *pack, const float *W, int C, int o0, int nc, int k0, int kc)
{
    for (int j = 0; j < SC_NR; j++)
        for (int k = 0; k < kc; k++)
            pack[k * SC_NR + j] = j < nc ? W[(size_t)(o0 + j) * C + k0 + k] : 0.0f;
}

/* out[:, o0:o0+nc] (+)= inp[:, k0:k0+kc] . panel, SC_MR rows at a time */
static void sc_panel(float *out, const float *inp, const float *pack, const float *b, int N,
                     int C, int OC, int o0, int nc, int k0, int kc)
{
    for (int n0 = 0; n0 < N; n0 += SC_MR) {
        int mr = N - n0 < SC_MR ? N - n0 : SC_MR;
        float acc[SC_MR][SC_NR];
        for (int m = 0; m < SC_MR; m++)
            for (int j = 0; j < SC_NR; j++) acc[m][j] = 0.0f;
        for (int k = 0; k < kc; k++) {
            const float *p = pack + k * SC_NR;
            for (int m = 0; m < mr; m++) {
                float a = inp[(size_t)(n0 + m) * C + k0 + k];
                for (int j = 0; j < SC_NR; j++) acc[m][j] += a * p[j];
            }
        }
        for (int m = 0; m < mr; m++) {
            float *y = out + (size_t)(n0 + m) * OC + o0;
            for (int j = 0; j < nc; j++)
                y[j] = (k0 ? y[j] : (b ? b[o0 + j] : 0.0f)) + acc[m][j];
        }
    }
}

static void matmul_forward(float *out, const float *inp, const float *W, const float *b,
                           int N, int C, int OC)
{
    if (N < SC_MR || C == 0) {
        matmul_forward_dot(out, inp, W, b, N, C, OC);
        return;
    }
    float pack[SC_KC * SC_NR];
    for (int o0 = 0; o0 < OC; o0 += SC_NR) {
        int nc = OC - o0 < SC_NR ? OC - o0 : SC_NR;
        for (int k0 = 0; k0 < C; k0 += SC_KC) {
            int kc = C - k0 < SC_KC ? C - k0 : SC_KC;
            sc_pack(pack, W, C, o0, nc, k0, kc);
            sc_panel(out, inp, pack, b, N, C, OC, o0, nc, k0, kc);
        }
    }
}

/* Pre-packed W: every panel matmul_forward packs, in its order (the same bits, no packing). */
static int64_t matmul_packed_floats(int C, int OC)
{
    return (int64_t)C * SC_NR * ((OC + SC_NR - 1) / SC_NR);
}

static void matmul_pack(float *packed, const float *W, int C, int OC)
{
    for (int o0 = 0; o0 < OC; o0 += SC_NR) {
        int nc = OC - o0 < SC_NR ? OC - o0 : SC_NR;
        for (int k0 = 0; k0 < C; k0 += SC_KC) {
            int kc = C - k0 < SC_KC ? C - k0 : SC_KC;
            sc_pack(packed, W, C, o0, nc, k0, kc);
            packed += (size_t)kc * SC_NR;
        }
    }
}

static void matmul_forward_packed(float *out, const float *inp, const float *W,
                                  const float *packed, const float *b, int N, int C, int OC)
{
    if (N < SC_MR || C == 0) {
        matmul_forward_dot(out, inp, W, b, N, C, OC);
        return;
    }
    for (int o0 = 0; o0 < OC; o0 += SC_NR) {
        int nc = OC - o0 < SC_NR ? OC - o0 : SC_NR;
        for (int k0 = 0; k0 < C; k0 += SC_KC) {
            int kc = C - k0 < SC_KC ? C - k0 : SC_KC;
            sc_panel(out, inp, packed, b, N, C, OC, o0, nc, k0, kc);
            packed += (size_t)kc * SC_NR;
        }
    }
}

/* dinp += dout . W ; dW += dout^T . inp ; db += sum over rows of dout */
static void matmul_backward(float *dinp, float *dW, float *db, const float *dout,
                            const float *inp, const float *W, int N, int C, int OC)
{
    if (dinp) {
        for (int n = 0; n < N; n++) {
            const float *g = dout + (size_t)n * OC;
            float *dx = dinp + (size_t)n * C;
            for (int o = 0; o < OC; o++) {
                float go = g[o];
                const float *w = W + (size_t)o * C;
                for (int c = 0; c < C; c++) dx[c] += go * w[c];
            }
        }
    }
    if (dW) {
        for (int o = 0; o < OC; o++) {
            float *dw = dW + (size_t)o * C;
            for (int n = 0; n < N; n++) {
                float go = dout[(size_t)n * OC + o];
                const float *x = inp + (size_t)n * C;
                for (int c = 0; c < C; c++) dw[c] += go * x[c];
            }
        }
    }
    if (db) {
        for (int n = 0; n < N; n++) {
            const float *g = dout + (size_t)n * OC;
            for (int o = 0; o < OC; o++) db[o] += g[o];
        }
    }
}

/* ---- RMSNorm ----------------------------------------------------------------------------- */
static void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *gain,
                            int N, int H, float eps)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * H;
        float *y = out + (size_t)n * H;
        float ss = 0;
        for (int h = 0; h < H; h++) ss += x[h] * x[h];
        float r = 1.0f / sqrtf(ss / (float)H + eps);
        rstd[n] = r;
        for (int h = 0; h < H; h++) y[h] = gain[h] * (x[h] * r);
    }
}

/* y = g * x * r, r = (mean(x^2)+eps)^-1/2:  dx = r * (g*dy) - x * r^3 * mean(g*dy*x) */
static void rmsnorm_backward(float *dinp, float *dgain, const float *dout, const float *inp,
                             const float *gain, const float *rstd, int N, int H)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * H, *dy = dout + (size_t)n * H;
        float r = rstd[n];
        float dot = 0;
        for (int h = 0; h < H; h++) dot += gain[h] * dy[h] * x[h];
        float k = dot * r * r * r / (float)H;
        if (dinp) {
            float *dx = dinp + (size_t)n * H;
            for (int h = 0; h < H; h++) dx[h] += r * gain[h] * dy[h] - k * x[h];
        }
        if (dgain)
            for (int h = 0; h < H; h++) dgain[h] += dy[h] * x[h] * r;
    }
}

/* ---- AdamW ------------------------------------------------------------------------------- */
static void adamw_step(float *params, const float *grads, float *m, float *v, int64_t n,
                       int64_t n_decay, float lr, float beta1, float beta2, float eps,
                       float weight_decay, float grad_scale, float bc1, float bc2)
{
    float ib1 = 1.0f / bc1, ib2 = 1.0f / bc2;
    for (int64_t i = 0; i < n; i++) {
        float g = grads[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float upd = (mi * ib1) / (sqrtf(vi * ib2) + eps);
        if (i < n_decay) upd += weight_decay * params[i];
        params[i] -= lr * upd;
    }
}

static double sumsq(const float *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

/* ---- elementwise ------------------------------------------------------------------------- */
static void sigmoid_forward(float *out, const float *inp, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = 1.0f / (1.0f + expf(-inp[i]));
}

static void sigmoid_backward(float *dinp, const float *dout, const float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dinp[i] += dout[i] * out[i] * (1.0f - out[i]);
}

#define SS_INV_SQRT2 0.70710678118654752f
#define SS_INV_SQRT2PI 0.39894228040143268f

static void gelu_forward(float *out, const float *inp, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erff(x * SS_INV_SQRT2));
    }
}

/* d/dx x*Phi(x) = Phi(x) + x*phi(x) */
static void gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * SS_INV_SQRT2));
        float pdf = SS_INV_SQRT2PI * expf(-0.5f * x * x);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}

static void softmax_forward(float *out, const float *inp, int N, int X)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * X;
        float *y = out + (size_t)n * X;
        float mx = x[0];
        for (int j = 1; j < X; j++) mx = x[j] > mx ? x[j] : mx;
        float s = 0;
        for (int j = 0; j < X; j++) { y[j] = expf(x[j] - mx); s += y[j]; }
        float is = 1.0f / s;
        for (int j = 0; j < X; j++) y[j] *= is;
    }
}

/* dx = y * (dy - sum(dy*y)) */
static void softmax_backward(float *dinp, const float *dout, const float *out, int N, int X)
{
    for (int n = 0; n < N; n++) {
        const float *y = out + (size_t)n * X, *dy = dout + (size_t)n * X;
        float *dx = dinp + (size_t)n * X;
        float dot = 0;
        for (int j = 0; j < X; j++) dot += dy[j] * y[j];
        for (int j = 0; j < X; j++) dx[j] += y[j] * (dy[j] - dot);
    }
}

/* losses[n] = logsumexp(x) - x[t]; dlogits = (softmax - onehot) * dscale when requested */
static void crossentropy_forward(float *losses, float *dlogits, const float *logits,
                                 const int32_t *targets, int N, int V, float dscale)
{
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V;
        float mx = x[0];
        for (int j = 1; j < V; j++) mx = x[j] > mx ? x[j] : mx;
        float s = 0;
        for (int j = 0; j < V; j++) s += expf(x[j] - mx);
        int t = targets[n];
        losses[n] = logf(s) + mx - x[t];
        if (dlogits) {
            float *d = dlogits + (size_t)n * V;
            float k = dscale / s;
            for (int j = 0; j < V; j++) d[j] = expf(x[j] - mx) * k;
            d[t] -= dscale;
        }
    }
}

/* ---- decode matrix-vector products (batch 1, panels of shoestring.h) -------------------- */
/* Each panel's 16 lanes are independent sums over c in order. Two panels at a time give the
 * compiler eight independent 128-bit chains when it vectorises the j loops. */
static void decode_matvec(float *y, const float *Wpk, const float *x, const float *b, int C, int OC)
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

/* int8 panels (bytes [g][j][k] = q[16p + j][4g + k]) times a quantised x: exact int32 sums per
 * block of 32 columns, each scaled by the block's x scale, then by the row's scale. */
static void decode_matvec_q8(float *y, const int8_t *Wpk, const float *wscale, const int8_t *xq,
                             const float *xscale, const int32_t *xsum, const float *b, int C,
                             int OC, int dot)
{
    (void)xsum;
    (void)dot;
    const int np = (OC + SS_PANEL - 1) / SS_PANEL, nblk = C / SS_Q8_BLOCK;
    for (int p = 0; p < np; p++) {
        const int8_t *w = Wpk + (size_t)p * SS_PANEL * C;
        float acc[SS_PANEL] = {0};
        for (int bk = 0; bk < nblk; bk++) {
            int32_t s[SS_PANEL] = {0};
            for (int g = 0; g < SS_Q8_BLOCK / 4; g++) {
                const int8_t *r = w + ((size_t)bk * SS_Q8_BLOCK / 4 + g) * 4 * SS_PANEL;
                const int8_t *xg = xq + bk * SS_Q8_BLOCK + 4 * g;
                for (int j = 0; j < SS_PANEL; j++)
                    s[j] += r[4 * j] * xg[0] + r[4 * j + 1] * xg[1] + r[4 * j + 2] * xg[2]
                          + r[4 * j + 3] * xg[3];
            }
            for (int j = 0; j < SS_PANEL; j++) acc[j] += (float)s[j] * xscale[bk];
        }
        int o0 = p * SS_PANEL, n = OC - o0 < SS_PANEL ? OC - o0 : SS_PANEL;
        for (int j = 0; j < n; j++) y[o0 + j] = acc[j] * wscale[o0 + j] + (b ? b[o0 + j] : 0.0f);
    }
}

static const char *q8_name(int dot) { (void)dot; return "scalar"; }

#include "sample_body.h"       /* sample: ss_sample's body, built with the baseline flags */

const ss_kernels ss_kernels_scalar = {
    matmul_forward, matmul_backward, rmsnorm_forward, rmsnorm_backward, adamw_step, sumsq,
    sigmoid_forward, sigmoid_backward, gelu_forward, gelu_backward,
    softmax_forward, softmax_backward, crossentropy_forward,
    decode_matvec, decode_matvec_q8, q8_name,
    matmul_packed_floats, matmul_pack, matmul_forward_packed, sample,
};
