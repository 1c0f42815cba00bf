"""params.py: the parameter layout of MODEL.md §1 as one flat float32 buffer with named views.

Weight-decayed matrices come first, so decay is the prefix [0, n_decay) of the buffer; the
embedding, biases and RMSNorm gains follow and are not decayed. Gradients, AdamW m and v mirror
the same layout. Per-layer tensors are named `l<l>.<name>` because a layer's input width I is C
for layer 0 and H after it.
"""
import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from .errors import ShoestringError


RECURRENT_GAIN = 0.5
EMBEDDING_STD = 0.02        # WE ~ N(0, EMBEDDING_STD^2); see ParamLayout.init
STATE_GUARD = 1000.0        # L2 norm of one stream's recurrent state that triggers a reset


def guard_state(h):
    """Reset (to zero) every stream of h (L,B,X,H) whose state norm passes STATE_GUARD or is not
    finite (MODEL.md §2: GELU is unbounded, so a carried state can grow without limit).
    Returns how many streams were reset."""
    norms = np.sqrt(np.sum(np.square(h, dtype=np.float64), axis=(0, 2, 3)))
    bad = ~(norms <= STATE_GUARD)
    if bad.any():
        h[:, bad] = 0.0
    return int(bad.sum())


@dataclass(frozen=True)
class ModelConfig:
    V: Optional[int] = 850  # vocabulary; None (a TrainConfig's model only): the trainer
                            # chooses it from the training text (config.planned_vocab)
    C: int = 96           # embedding width
    H: int = 96           # hidden width of every expert
    L: int = 2            # layers
    X: int = 6            # experts per layer
    K: int = 6            # active experts per token (K == X: dense)
    eps_rmsnorm: float = 1e-5
    cap: float = 0.0      # candidate soft cap c = cap*tanh(GELU(u)/cap); 0: c = GELU(u) (older runs)
    tie_embeddings: bool = False    # the head uses WE (needs C == H); the layout has no Wo

    def __post_init__(self):
        for name in ("V", "C", "H", "L", "X", "K"):
            v = getattr(self, name)
            if name == "V" and v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ShoestringError("model size %s must be a whole number >= 1, got %r" % (name, v))
        if self.K > self.X:
            raise ShoestringError("K=%d active experts per token cannot exceed X=%d experts "
                                  "(lower K or raise X)" % (self.K, self.X), setting=("K", "X"))
        if not (self.eps_rmsnorm > 0):
            raise ShoestringError("eps_rmsnorm must be positive, got %r" % self.eps_rmsnorm)
        if not 1e-38 <= self.eps_rmsnorm <= 3.4e38:     # 0 or infinite in float32 (#17)
            raise ShoestringError("eps_rmsnorm %r is outside what float32, the precision the "
                                  "model uses, can hold (use a value in [1e-38, 1])"
                                  % (self.eps_rmsnorm,), setting="eps_rmsnorm")
        if (not isinstance(self.cap, (int, float)) or isinstance(self.cap, bool)
                or not math.isfinite(self.cap) or self.cap < 0):
            raise ShoestringError("cap must be a finite number >= 0 (0: no cap), got %r"
                                  % (self.cap,), setting="cap")
        object.__setattr__(self, "cap", float(self.cap))
        if not isinstance(self.tie_embeddings, bool):
            raise ShoestringError("tie_embeddings must be true or false, got %r"
                                  % (self.tie_embeddings,), setting="tie_embeddings")
        if self.tie_embeddings and self.C != self.H:
            raise ShoestringError("tie_embeddings needs C == H (the head reuses the embedding), got "
                                  "C=%d, H=%d (set them equal or leave tie_embeddings off)"
                                  % (self.C, self.H), setting=("tie_embeddings", "C", "H"))

    def layer_input(self, layer):
        """I, the input width of layer `layer`."""
        return self.C if layer == 0 else self.H

    def to_dict(self):
        return asdict(self)


# One MoE-GRU layer's tensors (MODEL.md §1): name, dimension letters, weight-decayed; in the
# order of the C structs ss_moegru_weights and ss_decode_layer. I is the layer's input width (C
# for layer 0, H after); the residual projection Wp, bp exists only where I != H. This schema
# drives the layout, the per-layer views, the reference and the kernel bindings: adding a tensor
# to a layer is a line here and its field in the C structs.
LAYER_SCHEMA = (
    ("Wg", "X,I", True), ("bg", "X", False),              # router
    ("Wz", "X,H,I", True), ("bz", "X,H", False),          # update gate (input only)
    ("Wcx", "X,H,I", True), ("Wch", "X,H,H", True), ("bc", "X,H", False),    # candidate
    ("gamma", "H", False),                                # RMSNorm gain
    ("Wp", "H,I", True), ("bp", "H", False),              # residual projection (I != H only)
)
LAYER_KEYS = tuple(name for name, _, _ in LAYER_SCHEMA)
LAYER_MATRICES = tuple(name for name, _, decayed in LAYER_SCHEMA if decayed)   # Wg Wz Wcx Wch Wp
PROJECTION_KEYS = ("Wp", "bp")


def layer_shapes(I, H, X):
    """{name: (shape, dims)} of one layer's tensors in schema order; Wp, bp only when I != H."""
    size = {"I": I, "H": H, "X": X}
    return {name: (tuple(size[d] for d in dims.split(",")), dims)
            for name, dims, _ in LAYER_SCHEMA if I != H or name not in PROJECTION_KEYS}


def layer_views(views, l):
    """Layer l's tensors {name without the `l<l>.` prefix: view} from the named views."""
    pre = "l%d." % l
    return {k: views[pre + k] for k in LAYER_KEYS if pre + k in views}


def layout(cfg):
    """[(name, shape, decayed)] in buffer order: every layer's decayed matrices, the head Wo;
    then WE, every layer's biases and gains, the head bias bo."""
    mats, rest = [], []
    for l in range(cfg.L):
        for name, (shape, _) in layer_shapes(cfg.layer_input(l), cfg.H, cfg.X).items():
            decayed = LAYER_SCHEMA[LAYER_KEYS.index(name)][2]
            (mats if decayed else rest).append(("l%d.%s" % (l, name), shape))
    if not cfg.tie_embeddings:
        mats.append(("Wo", (cfg.V, cfg.H)))
    rest = [("WE", (cfg.V, cfg.C))] + rest + [("bo", (cfg.V,))]
    return [(n, s, True) for n, s in mats] + [(n, s, False) for n, s in rest]


class ParamLayout:
    """Offsets of every named tensor in the flat buffer."""

    def __init__(self, cfg):
        if cfg.V is None:
            raise ShoestringError("ModelConfig V is None: a model needs its vocabulary size "
                                  "(V=None is for a TrainConfig, whose trainer chooses it)")
        self.cfg = cfg
        self.entries = []        # [(name, shape, offset, size, decayed)]
        self.index = {}
        off = 0
        n_decay = 0
        for name, shape, decayed in layout(cfg):
            size = math.prod(shape)      # Python ints: np.prod wraps at 2**31 on 32-bit ARM
            self.index[name] = len(self.entries)
            self.entries.append((name, tuple(shape), off, size, decayed))
            off += size
            if decayed:
                n_decay = off
        self.n = off
        self.n_decay = n_decay

    def names(self):
        return [e[0] for e in self.entries]

    def shape(self, name):
        return self.entries[self.index[name]][1]

    def offset(self, name):
        return self.entries[self.index[name]][2]

    def views(self, flat):
        """{name: view into flat with the tensor's shape} (no copies)."""
        if flat.shape != (self.n,):
            raise ShoestringError("flat buffer has shape %s, expected (%d,)" % (flat.shape, self.n))
        return {name: flat[off:off + size].reshape(shape)
                for name, shape, off, size, _ in self.entries}

    def zeros(self, dtype=np.float32):
        return np.zeros(self.n, dtype=dtype)

    def init(self, seed):
        """Fresh parameters: matrices ~ N(0, 1/fan_in) (Wch scaled by RECURRENT_GAIN),
        WE ~ N(0, EMBEDDING_STD^2), biases 0, gains 1.

        WE was N(0, 1) before issue #11: rows that large barely move under AdamW (a step is about
        lr), so the embedding stayed close to random for hundreds of steps, and its large inputs
        drove the unbounded candidate into state resets (96 in 1,500 steps on nano-shakespeare);
        at 0.02 (as in GPT-2 and the PyTorch recipe) the best validation was 0.05 bits/char lower
        with no reset (BENCHMARKS.md, "What moved the figure")."""
        rng = np.random.default_rng(seed)
        flat = self.zeros()
        v = self.views(flat)
        for name, shape, _, _, _ in self.entries:
            base = name.split(".")[-1]
            if base == "WE":
                v[name][...] = rng.standard_normal(shape, dtype=np.float32) * np.float32(EMBEDDING_STD)
            elif base.startswith("W"):
                fan_in = shape[-1]
                # The recurrent matrix starts contractive (spectral radius about RECURRENT_GAIN < 1):
                # GELU is unbounded above, and at N(0, 1/H) the carried state can grow without limit.
                gain = RECURRENT_GAIN if base == "Wch" else 1.0
                v[name][...] = rng.standard_normal(shape, dtype=np.float32) * np.float32(
                    gain / np.sqrt(fan_in))
            elif base == "gamma":
                v[name][...] = 1.0
        return flat
