"""Optional reference (not a test): the same MoE-GRU model in PyTorch, to compare gradients and speed.

Builds the model of MODEL.md §1 in PyTorch from shoestring's own flat parameters, checks that
loss, gradients and the final recurrent state agree with shoestring's C model on one window,
then times training (forward + backward + AdamW) of both on one thread in the same run.
The PyTorch version is written with care: input-only parts as one batched matmul per layer for
the whole window, the recurrence as one batched einsum per step over all experts. Sparse routing
is applied as a mask (PyTorch has no cheap gather-per-expert here), so it saves no compute.

Skipped (exit 0 with a message) when torch is not installed.

    python tools/ref_torch.py [--k 6] [--steps 10]
"""
import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def torch_model(torch, cfg, P):
    """-> (params dict of leaf tensors, loss_fn(tokens, targets, h0) -> (loss, hT))."""
    T_ = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in P.items()}
    F = torch.nn.functional

    def layer(x, h, l, K):            # x (B,T,I), h (B,X,H)
        p = "l%d." % l
        Wg, bg, Wz, bz = T_[p + "Wg"], T_[p + "bg"], T_[p + "Wz"], T_[p + "bz"]
        Wcx, Wch, bc, gamma = T_[p + "Wcx"], T_[p + "Wch"], T_[p + "bc"], T_[p + "gamma"]
        B, T, I = x.shape
        X, H = Wch.shape[0], Wch.shape[1]
        g = torch.softmax(x @ Wg.T + bg, dim=-1)                                  # (B,T,X)
        if K < X:
            top = torch.topk(g, K, dim=-1).indices
            mask = torch.zeros_like(g).scatter_(-1, top, 1.0)
            gk = g * mask
            gk = gk / gk.sum(-1, keepdim=True)
        else:
            mask, gk = None, g
        zpre = torch.einsum("bti,xhi->btxh", x, Wz) + bz                           # (B,T,X,H)
        z = torch.sigmoid(zpre)
        cx = torch.einsum("bti,xhi->btxh", x, Wcx) + bc
        outs = []
        for t in range(T):
            c = F.gelu(cx[:, t] + torch.einsum("bxh,xkh->bxk", h, Wch))
            hn = (1 - z[:, t]) * h + z[:, t] * c
            if mask is not None:
                m_t = mask[:, t, :, None]
                hn = m_t * hn + (1 - m_t) * h
            h = hn
            outs.append(torch.einsum("bx,bxh->bh", gk[:, t], h))
        m = torch.stack(outs, dim=1)                                               # (B,T,H)
        r = m + (x @ T_[p + "Wp"].T + T_[p + "bp"] if I != H else x)
        y = gamma * r * torch.rsqrt((r * r).mean(-1, keepdim=True) + cfg.eps_rmsnorm)
        return y, h

    def loss_fn(tokens, targets, h0):
        x = T_["WE"][tokens]
        hs = []
        for l in range(cfg.L):
            x, hT = layer(x, h0[l], l, cfg.K)
            hs.append(hT)
        logits = x @ T_["Wo"].T + T_["bo"]
        loss = F.cross_entropy(logits.reshape(-1, cfg.V), targets.reshape(-1))
        return loss, torch.stack(hs)

    return T_, loss_fn


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("torch is not installed: skipped (pip install torch==2.13.0 to run this reference)")
        return 0
    import numpy as np

    from shoestring import kernels
    from shoestring.model import Network
    from shoestring.optim import AdamW
    from shoestring.params import ModelConfig, ParamLayout

    torch.set_num_threads(1)
    cfg = ModelConfig(K=args.k)
    B, T = 16, 80
    lay = ParamLayout(cfg)
    flat = lay.init(0)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, cfg.V, (B, T)).astype(np.int32)
    targets = rng.integers(0, cfg.V, (B, T)).astype(np.int32)
    h0 = (0.3 * rng.standard_normal((cfg.L, B, cfg.X, cfg.H))).astype(np.float32)

    # ---- agreement on one window ----
    net = Network(cfg, flat, B, T, threads=1)
    h = h0.copy()
    net.zero_grads()
    loss_c = net.forward_backward(tokens, targets, h, 1.0 / (B * T)) / (B * T)
    g_c = lay.zeros()
    net.reduce_grads(g_c)
    Tp, loss_fn = torch_model(torch, cfg, lay.views(flat))
    loss_t, hT_t = loss_fn(torch.tensor(tokens, dtype=torch.long), torch.tensor(targets, dtype=torch.long),
                           torch.tensor(h0))
    loss_t.backward()
    print("model: V=%d C=%d H=%d L=%d X=%d K=%d, B=%d T=%d, isa %s, torch %s"
          % (cfg.V, cfg.C, cfg.H, cfg.L, cfg.X, cfg.K, B, T, kernels.isa_active(), torch.__version__))
    print("loss: shoestring %.6f, torch %.6f" % (loss_c, loss_t.item()))
    print("final state: max |diff| %.2e" % np.abs(h - hT_t.detach().numpy()).max())
    G = lay.views(g_c)
    worst = max((np.abs(G[k] - Tp[k].grad.numpy()).max() / (np.abs(Tp[k].grad.numpy()).max() + 1e-12), k)
                for k in lay.names())
    print("gradients: worst max|diff|/max|grad| = %.2e (%s)" % worst)

    # ---- speed: forward + backward + AdamW, one thread each ----
    opt_c = AdamW(lay.n, lay.n_decay)
    params_t = list(Tp.values())
    opt_t = torch.optim.AdamW(params_t, lr=1e-3, weight_decay=0.01)
    tt, yt = torch.tensor(tokens, dtype=torch.long), torch.tensor(targets, dtype=torch.long)

    def step_c():
        net.zero_grads()
        net.forward_backward(tokens, targets, h, 1.0 / (B * T))
        net.reduce_grads(g_c)
        opt_c.update(flat, g_c, 1e-3, 1.0)

    def step_t():
        opt_t.zero_grad()
        loss, _ = loss_fn(tt, yt, torch.tensor(h0))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params_t, 1.0)
        opt_t.step()

    res = {}
    for name, fn in (("shoestring", step_c), ("torch", step_t)):
        fn()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            best = min(best, (time.perf_counter() - t0) / args.steps)
        res[name] = B * T / best
        print("%-10s %8.0f tokens/s (best of 3 x %d steps, 1 thread)" % (name, res[name], args.steps))
    print("speed-up shoestring / torch: %.2fx" % (res["shoestring"] / res["torch"]))
    net.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
