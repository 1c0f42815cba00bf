"""Benchmark (not a test): validation bits per character of a training recipe in a fixed budget.

Issue #11 measures shoestring by the best validation bits/char per CPU-minute. This tool splits a
corpus 90/10 by characters (train on the first 90%, validate on the last 10%; the tokenizer is
trained on the training part only), trains each recipe under the same budget, either wall-clock
(`--minutes`) or optimiser steps (`--steps`, for comparing recipes at equal step counts while the
machine is shared), and reports for each: the best and the final validation bits/char, the
train/validation gap at the end, state resets, steps and tokens/s. The whole curve goes to
`--json`.

A recipe is a name and the `shoestring train` flags that define it; recipes run one after the
other, each in its own process:

    python tools/bench_quality.py --data ../shared/data/nano-shakespeare.txt --minutes 5 \\
        --threads 2 --json runs/q.json \\
        --recipe "before #11: --lr 2e-3 --epochs 100000 --cap 0 --we-std 1" \\
        --recipe "defaults:"

A time budget gives every recipe `--max-minutes M` (the hard stop) and, unless the recipe
plans its own length (--epochs, --max-steps, --minutes), `--minutes M` (the schedule planned to
end with the budget). Research knobs that are not `shoestring train` flags (used to find which
difference between
shoestring's recipe and the PyTorch recipe of issue #11 matters) go in the same recipe string and
are applied by patching the training modules inside the recipe's own process:
    --beta2 B                AdamW beta2 (shoestring: 0.999)
    --decay-embedding        weight decay on WE as well as on the matrices
    --offsets window         stream offsets drawn in [0, T) each epoch (shoestring: [0, n))
    --mat-std S              every layer matrix (Wg, Wz, Wcx, Wch, Wp) ~ N(0, S^2), Wch included
    --wch-gain G             Wch ~ N(0, G^2/H) (shoestring: 0.5), ignored with --mat-std
    --we-std S               WE ~ N(0, S^2) (shoestring: 0.02; 1 before issue #11)
    --head-init torch        Wo, bo ~ U(-1/sqrt(H), 1/sqrt(H)) (PyTorch's Linear default)
"""
import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "nano-shakespeare.txt")


# ---- one recipe, in its own process ---------------------------------------------------------
def research_parser():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--beta2", type=float)
    p.add_argument("--decay-embedding", action="store_true")
    p.add_argument("--offsets", choices=["corpus", "window"], default="corpus")
    p.add_argument("--mat-std", type=float)
    p.add_argument("--wch-gain", type=float)
    p.add_argument("--we-std", type=float)
    p.add_argument("--head-init", choices=["shoestring", "torch"], default="shoestring")
    return p


def apply_research_knobs(k):
    """Patch the training modules for the research knobs in k (this process only)."""
    import numpy as np
    from shoestring import dataset, optim, params, trainer as train

    if k.beta2 is not None:
        class AdamW(optim.AdamW):
            def __init__(self, *a, **kw):
                kw["beta2"] = k.beta2
                super().__init__(*a, **kw)
        train.AdamW = AdamW
    if k.decay_embedding:
        init0 = params.ParamLayout.__init__

        def layout_init(self, cfg):
            init0(self, cfg)
            name, shape, off, size, _ = self.entries[self.index["WE"]]
            assert off == self.n_decay, "WE must follow the decayed matrices"
            self.n_decay += size
        params.ParamLayout.__init__ = layout_init
    if k.offsets == "window":
        dataset.Windows.random_offset = lambda self, rng: int(rng.integers(0, self.T))
    if k.mat_std is not None or k.wch_gain is not None or k.we_std is not None \
            or k.head_init != "shoestring":
        base_init = params.ParamLayout.init

        def init(self, seed):
            flat = base_init(self, seed)
            v = self.views(flat)
            rng = np.random.default_rng(seed + 1)
            for name, shape, _, _, _ in self.entries:
                b = name.split(".")[-1]
                if name.startswith("l") and b.startswith("W"):
                    if k.mat_std is not None:
                        v[name][...] = rng.standard_normal(shape) * k.mat_std
                    elif b == "Wch" and k.wch_gain is not None:
                        v[name][...] = rng.standard_normal(shape) * (k.wch_gain / math.sqrt(shape[-1]))
                elif b == "WE" and k.we_std is not None:
                    v[name][...] = rng.standard_normal(shape) * k.we_std
                elif b in ("Wo", "bo") and k.head_init == "torch":
                    bound = 1.0 / math.sqrt(self.cfg.H)
                    v[name][...] = rng.uniform(-bound, bound, shape)
            return flat
        params.ParamLayout.init = init


def run_one(spec):
    """Train one recipe (spec: dict from the parent) and write its metrics to spec['out']."""
    flags = shlex.split(spec["flags"])
    knobs, rest = research_parser().parse_known_args(flags)
    apply_research_knobs(knobs)
    from shoestring import cli
    argv = ["train", "--model-data", spec["train"], "--validation-data", spec["val"],
            "--out-dir", spec["dir"], "--threads", str(spec["threads"]), "--no-chat", "--quiet",
            "--sample-every", "0"]
    if spec.get("eval_every"):
        argv += ["--eval-every", str(spec["eval_every"])]
    plans = any(f in rest for f in ("--epochs", "--max-steps", "--minutes"))
    if spec.get("steps"):
        argv += ["--max-steps", str(spec["steps"])]
    if spec.get("minutes"):
        argv += ["--max-minutes", str(spec["minutes"])]          # the hard stop
        if not plans and not spec.get("steps"):
            argv += ["--minutes", str(spec["minutes"])]          # the schedule planned for it
    argv += rest
    t0 = time.time()
    rc = cli.main(argv)
    wall = time.time() - t0
    with open(os.path.join(spec["dir"], "metrics.jsonl")) as f:
        rows = [json.loads(l) for l in f if l.strip()]
    with open(spec["out"], "w") as f:
        json.dump({"rc": rc, "wall_s": wall, "argv": argv, "curve": rows}, f)


# ---- the parent: split, run every recipe, report ------------------------------------------
def split_corpus(path, folder, frac=0.9):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    cut = int(len(text) * frac)
    paths = os.path.join(folder, "train.txt"), os.path.join(folder, "val.txt")
    for p, t in zip(paths, (text[:cut], text[cut:])):
        with open(p, "w", encoding="utf-8") as f:
            f.write(t)
    return paths


def summarise(name, flags, res):
    rows = res["curve"]
    if not rows:
        return {"recipe": name, "flags": flags, "error": "no validation recorded"}
    best = min(rows, key=lambda r: r["bits_per_char"])
    last = rows[-1]
    return {"recipe": name, "flags": flags, "steps": last["step"],
            "best_bpc": best["bits_per_char"], "best_step": best["step"],
            "final_bpc": last["bits_per_char"],
            "gap_nats": last["val_loss"] - last["train_loss"],
            "train_loss": last["train_loss"], "val_loss": last["val_loss"],
            "state_resets": last["state_resets"],
            "tokens_per_s": sum(r["tokens_per_s"] for r in rows[1:]) / max(1, len(rows) - 1)
            if len(rows) > 1 else rows[0]["tokens_per_s"],
            "wall_s": res["wall_s"], "rc": res["rc"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data", default=DEFAULT_DATA, help="corpus, split 90/10 by characters")
    ap.add_argument("--minutes", type=float, help="wall-clock budget per recipe")
    ap.add_argument("--steps", type=int, help="optimiser-step budget per recipe")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int,
                    help="steps between validations (default: the recipe's own)")
    ap.add_argument("--recipe", action="append", default=[], metavar="'NAME: FLAGS'",
                    help="a recipe: a name, a colon, then shoestring train flags and research "
                         "knobs (repeat; default: the defaults)")
    ap.add_argument("--json", help="write the summaries and every curve here")
    ap.add_argument("--keep", help="keep the run folders here (default: a temporary folder)")
    ap.add_argument("--_single", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._single:
        with open(a._single) as f:
            return run_one(json.load(f))
    if not (a.minutes or a.steps):
        ap.error("give a budget: --minutes M or --steps N (or both)")
    recipes = a.recipe or ["defaults:"]
    root = a.keep or tempfile.mkdtemp(prefix="ss_quality_")
    os.makedirs(root, exist_ok=True)
    train_path, val_path = split_corpus(a.data, root)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = {"data": os.path.abspath(a.data), "minutes": a.minutes, "steps": a.steps,
           "threads": a.threads, "machine": _machine(), "runs": []}
    for i, r in enumerate(recipes):
        name, _, flags = r.partition(":")
        name, flags = name.strip(), flags.strip()
        d = os.path.join(root, "r%02d-%s" % (i, "".join(c if c.isalnum() else "_" for c in name)))
        os.makedirs(d, exist_ok=True)
        spec = {"train": train_path, "val": val_path, "dir": d, "threads": a.threads,
                "eval_every": a.eval_every, "steps": a.steps, "minutes": a.minutes,
                "flags": flags, "out": os.path.join(d, "result.json")}
        with open(os.path.join(d, "spec.json"), "w") as f:
            json.dump(spec, f)
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--_single",
                            os.path.join(d, "spec.json")], env=env)
        if p.returncode != 0 or not os.path.exists(spec["out"]):
            s = {"recipe": name, "flags": flags, "error": "exit status %d" % p.returncode}
            curve = []
        else:
            with open(spec["out"]) as f:
                res = json.load(f)
            s, curve = summarise(name, flags, res), res["curve"]
        out["runs"].append(dict(s, curve=curve))
        print(_row(s), flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    print()
    print(table(out["runs"]))


def _machine():
    from benchutil import cpu_name
    return cpu_name()


def _row(s):
    if "error" in s:
        return "%-24s %s" % (s["recipe"], s["error"])
    return ("%-24s steps %6d  best %.3f (step %d)  final %.3f  gap %.3f  resets %d  %.0f tok/s"
            % (s["recipe"], s["steps"], s["best_bpc"], s["best_step"], s["final_bpc"],
               s["gap_nats"], s["state_resets"], s["tokens_per_s"]))


def table(runs):
    lines = ["| recipe | flags | steps | best val bits/char (step) | final | val-train gap (nats/token) "
             "| state resets | tokens/s |", "|---|---|---|---|---|---|---|---|"]
    for s in runs:
        if "error" in s:
            lines.append("| %s | `%s` | %s |  |  |  |  |  |" % (s["recipe"], s["flags"], s["error"]))
            continue
        lines.append("| %s | `%s` | %d | %.3f (%d) | %.3f | %.3f | %d | %.0f |"
                     % (s["recipe"], s["flags"], s["steps"], s["best_bpc"], s["best_step"],
                        s["final_bpc"], s["gap_nats"], s["state_resets"], s["tokens_per_s"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
