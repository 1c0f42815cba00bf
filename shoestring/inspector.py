"""inspector.py: what a checkpoint holds, for `shoestring inspect CHECKPOINT [--json]`.

describe(path) validates the header, config and layout like the loader (without decoding any
tensor) and returns a JSON-able dict: the architecture and parameter count, the tokenizer (size,
special tokens, merges), training progress (steps, epochs, tokens seen), the best and the last
validation figures, the carried recurrent state's shape, the data fingerprints and paths, who
wrote the file and when, and the file's parts with their sizes (version 1 files, whose state is
a list under "training", included). format_text(info) is the human-readable form of the same dict.
"""
import json
import math
import os

from .checkpoint import _Reader

PART_NAMES = {
    "params": "parameters (float32)",
    "optimizer": "optimizer state (AdamW m, v)",
    "state": "carried recurrent state (to resume)",
    "training": "training state",
    "tokenizer": "tokenizer",
    "metrics": "metrics history",
    "config": "config",
}


def _dumped_size(key, value):
    """Bytes of `"key": value` as checkpoint.encode_checkpoint writes it (one line per key)."""
    return len(json.dumps(key)) + 2 + len(json.dumps(value, allow_nan=False, ensure_ascii=True)) + 2


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _figures(row):
    if not row:
        return None
    out = {k: row[k] for k in ("step", "epoch", "val_loss", "bits_per_char", "perplexity",
                                "train_loss", "train_bits_per_char") if _num(row.get(k))}
    return out or None


def _list_shape(v):
    """The shape of a nested list (a version 1 state), following first elements."""
    shape = []
    while isinstance(v, list):
        shape.append(len(v))
        v = v[0] if v else None
    return shape


def describe(path):
    """A JSON-able description of the checkpoint at `path` (raises CheckpointError)."""
    r = _Reader(path)
    doc = r.read_document()
    r.check_header(doc)
    pl = r.check_layout(doc)
    config = r.plain(doc["config"], "config")
    training = r.plain(doc["training"], "training")
    metrics = [m for m in r.plain(doc["metrics"], "metrics") if isinstance(m, dict)]
    tok = r.plain(doc["tokenizer"], "tokenizer")
    model = config["model"]
    train_cfg = config.get("train") if isinstance(config.get("train"), dict) else {}

    # sizes of the file's parts: one top-level key per line in files shoestring writes
    parts, state_shape = [], None
    for key in ("params", "optimizer", "state", "training", "tokenizer", "metrics", "config"):
        if doc.get(key) is None:
            continue
        n = _dumped_size(key, doc[key])
        if key == "state" and isinstance(doc[key], dict):
            state_shape = doc[key].get("shape")
        if key == "training" and isinstance(doc[key], dict) and "state" in doc[key]:   # version 1
            state = _dumped_size("state", doc[key]["state"])
            parts.append({"part": "training.state", "what": PART_NAMES["state"], "bytes": state})
            n -= state
            state_shape = _list_shape(doc[key]["state"])
        parts.append({"part": key, "what": PART_NAMES[key], "bytes": n})
    size = r.size
    parts.append({"part": "header", "what": "header and layout",
                  "bytes": max(0, size - sum(p["bytes"] for p in parts))})

    step = training.get("step")
    if not _num(step) and doc["optimizer"] is not None:
        step = doc["optimizer"].get("step")
    B, T, acc = (train_cfg.get(k) for k in ("batch_size", "seq_length", "accumulate"))
    tokens_seen = step * B * T * (acc or 1) if all(_num(x) for x in (step, B, T)) else None
    epoch = metrics[-1].get("epoch") if metrics and _num(metrics[-1].get("epoch")) else \
        training.get("epoch")
    best_row = None
    rows = [m for m in metrics if _num(m.get("val_loss"))]
    if rows:
        best_row = min(rows, key=lambda m: (m["val_loss"], m.get("step", 0)))
    best = _figures(best_row)
    if best is None and _num(training.get("best_val")):
        best = {"val_loss": training["best_val"]}

    specials = tok.get("special_tokens", [])
    return {
        "file": os.fspath(path),
        "bytes": size,
        "format": doc["format"], "version": doc["version"],
        "created_by": doc["created_by"], "created_at": doc["created_at"],
        "weights_only": bool(training.get("weights_only")) or doc["optimizer"] is None,
        "can_resume": doc["optimizer"] is not None and "rng" in training,
        "model": model,
        "parameters": pl.n,
        "tensors": [{"name": name, "shape": list(shape)} for name, shape, _, _, _ in pl.entries],
        "tokenizer": {"vocab_size": tok.get("vocab_size"), "special_tokens": specials,
                      "merges": len(tok.get("merges", [])), "pretokenizer": tok.get("pretokenizer")},
        "training": {"steps": step, "epochs": epoch, "tokens_seen": tokens_seen,
                     "planned_epochs": train_cfg.get("epochs"),
                     "max_steps": train_cfg.get("max_steps"),
                     "batch_size": B, "seq_length": T, "accumulate": acc,
                     "lr": train_cfg.get("lr"), "seed": train_cfg.get("seed"),
                     "state_resets": training.get("state_resets"),
                     "state_shape": state_shape,
                     "evaluations": len(metrics)},
        "best": best,
        "last": _figures(metrics[-1]) if metrics else None,
        "data": {"train_fingerprint": training.get("train_fingerprint"),
                 "model_data": train_cfg.get("model_data"),
                 "validation_data": train_cfg.get("validation_data"),
                 "exported_from": training.get("exported_from")},
        "parts": parts,
    }


def _size(n):
    if n >= 1e6:
        return "%.1f MB" % (n / 1e6)
    if n >= 1e3:
        return "%.1f KB" % (n / 1e3)
    return "%d B" % n


def _g(n):
    return "-" if n is None else format(n, ",") if isinstance(n, int) else "%g" % n


def format_text(info):
    """The report `shoestring inspect` prints (plain text, at most 80 columns a line)."""
    m = info["model"]
    routing = "dense" if m.get("K") == m.get("X") else "top-%s of %s experts" % (m.get("K"), m.get("X"))
    extra = ", ".join("%s=%s" % (k, m[k]) for k in sorted(m) if k not in
                      ("V", "C", "H", "L", "X", "K", "eps_rmsnorm"))
    lines = [
        "%s" % info["file"],
        "  written by      %s on %s (format v%s)" % (info["created_by"], info["created_at"],
                                                        info["version"]),
        "  kind            %s" % ("weights only (export; chat, generate, eval; cannot resume)"
                                  if info["weights_only"] else "full (can resume training)"),
        "model",
        "  parameters      %s" % format(info["parameters"], ","),
        "  architecture    MoE-GRU: V=%s C=%s H=%s L=%s X=%s K=%s (%s)"
        % (m.get("V"), m.get("C"), m.get("H"), m.get("L"), m.get("X"), m.get("K"), routing),
    ]
    if extra:
        lines.append("  also            %s" % extra)
    t = info["tokenizer"]
    lines += [
        "tokenizer",
        "  vocabulary      %s tokens (%d special, 256 bytes, %s merges)"
        % (_g(t["vocab_size"]), len(t["special_tokens"]), _g(t["merges"])),
        "  special tokens  %s" % " ".join(t["special_tokens"]),
    ]
    tr = info["training"]
    ep = tr["epochs"]
    lines += [
        "training",
        "  steps           %s%s" % (_g(tr["steps"]),
                                    " of at most %s" % _g(tr["max_steps"]) if tr["max_steps"] else ""),
        "  epochs          %s%s" % ("-" if ep is None else "%.2f" % ep,
                                    " of %s planned" % tr["planned_epochs"] if tr["planned_epochs"] else ""),
        "  tokens seen     %s%s" % (_g(tr["tokens_seen"]),
                                    " (batch %s x %s tokens%s)" % (tr["batch_size"], tr["seq_length"],
                                                                   " x %d" % tr["accumulate"] if (tr["accumulate"] or 1) > 1 else "")
                                    if tr["tokens_seen"] is not None else ""),
    ]
    if tr["state_shape"]:
        lines.append("  carried state   %s (L x B x X x H, float32)"
                     % " x ".join(map(str, tr["state_shape"])))
    if tr["state_resets"] is not None:
        lines.append("  state resets    %s" % _g(tr["state_resets"]))
    for key, name in (("best", "best validation"), ("last", "last validation")):
        f = info[key]
        if not f:
            continue
        bits = []
        if "bits_per_char" in f:
            bits.append("%.4f bits/char" % f["bits_per_char"])
        if "val_loss" in f:
            bits.append("loss %.4f" % f["val_loss"])
        if "perplexity" in f:
            bits.append("ppl %.2f" % f["perplexity"])
        if "step" in f:
            bits.append("at step %s" % _g(f["step"]))
        lines.append("  %-15s %s" % (name, ", ".join(bits)))
    d = info["data"]
    lines.append("data")
    lines.append("  fingerprint     %s" % (d["train_fingerprint"] or "-"))
    for p in d["model_data"] or []:
        lines.append("  model data      %s" % p)
    if d["validation_data"]:
        lines.append("  validation      %s" % d["validation_data"])
    if d["exported_from"]:
        lines.append("  exported from   %s" % d["exported_from"])
    lines.append("file: %s" % _size(info["bytes"]))
    for p in info["parts"]:
        share = 100.0 * p["bytes"] / info["bytes"] if info["bytes"] else 0.0
        lines.append("  %-15s %9s %5.1f%%  %s" % (p["part"], _size(p["bytes"]), share, p["what"]))
    return "\n".join(lines)


def to_json(info):
    return json.dumps(info, indent=2, ensure_ascii=False, default=str)
