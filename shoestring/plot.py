"""plot.py: loss curves of a run -- a plain-text chart for the terminal, SVG and PNG files.

    rows = load_metrics("runs/20261201-101010")    # metrics.jsonl, or a checkpoint's history
    print(text_chart(rows))                          # no dependencies, ASCII only
    write_svg(rows, "curve.svg")                     # hand-written SVG, opens in any browser
    write_png(rows, "curve.png")                     # needs matplotlib (shoestring[plot])

The curves are bits per character (tokenizer-independent, MODEL.md §7) against the optimiser
step: validation from each row's `bits_per_char`; training from `train_bits_per_char`, or for
runs that did not record it, `train_loss` converted with the validation text's characters per
token (bits_per_char / val_loss), which the legend then says. Each metrics row (one per
evaluation) is one point of each curve; a step logged twice (a run resumed after being killed
between logging and saving) keeps its last row.

The SVG is written by hand rather than through a plotting library so that `shoestring plot`
works on a bare Raspberry Pi: axes with 1-2-5 ticks, a light grid, one polyline per curve, the
best validation point marked, a legend.
"""
import json
import math
import os
from xml.sax.saxutils import escape

from .errors import DataError

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#d62728"


# ---- reading ------------------------------------------------------------------------------------
def _rows_from_jsonl(path):
    rows, bad = [], []
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError("cannot read %s: %s" % (path, e.strerror or e)) from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad.append(i)
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad.append(i)
    return rows, bad


def _rows_from_checkpoint(path):
    from .checkpoint import _from_json

    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError("cannot read the metrics of %s (%s) (give a run folder, its "
                        "metrics.jsonl or a checkpoint)" % (path, e)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), list):
        raise DataError("%s holds no metrics history (give a run folder, its metrics.jsonl or a "
                        "checkpoint written by `shoestring train`)" % path)
    return [r for r in _from_json(doc["metrics"]) if isinstance(r, dict)], []


def load_metrics(path, warn=None):
    """The metrics rows of a run: `path` is a run folder (its metrics.jsonl, else the history
    in last.json or best.json), a metrics .jsonl file or a checkpoint. Rows are sorted by step,
    one per step. Unreadable lines are skipped and passed to warn(message) when given."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("metrics.jsonl", "last.json", "best.json"):
            p = os.path.join(path, name)
            if os.path.isfile(p):
                return load_metrics(p, warn)
        raise DataError("%s holds no metrics.jsonl, last.json or best.json (give the folder a "
                        "training run wrote, like runs/20261201-101010)" % path)
    if not os.path.exists(path):
        raise DataError("%s does not exist (give a run folder, its metrics.jsonl or a checkpoint)"
                        % path)
    if path.endswith(".jsonl"):
        rows, bad = _rows_from_jsonl(path)
    else:
        rows, bad = _rows_from_checkpoint(path)
    if bad and warn is not None:
        warn("%s: skipped %d unreadable line%s (line %s)" % (
            path, len(bad), "" if len(bad) == 1 else "s", ", ".join(map(str, bad[:5]))
            + (", ..." if len(bad) > 5 else "")))
    by_step = {}
    for r in rows:
        s = r.get("step")
        if isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s):
            by_step[s] = r
    if not by_step:
        raise DataError("%s has no metrics rows yet (a run logs one at each evaluation)" % path)
    return [by_step[s] for s in sorted(by_step)]


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def series(rows):
    """{"train": [(step, bpc)], "val": [(step, bpc)], "train_converted": bool}."""
    train, val, converted = [], [], False
    for r in rows:
        step = r["step"]
        if _num(r.get("bits_per_char")):
            val.append((step, float(r["bits_per_char"])))
        if _num(r.get("train_bits_per_char")):
            train.append((step, float(r["train_bits_per_char"])))
        elif _num(r.get("train_loss")) and _num(r.get("bits_per_char")) and _num(r.get("val_loss")) \
                and r["val_loss"] > 0:
            train.append((step, float(r["train_loss"]) * r["bits_per_char"] / r["val_loss"]))
            converted = True
    return {"train": train, "val": val, "train_converted": converted}


def best_point(rows):
    """(step, validation bits/char) of the lowest validation figure, or None."""
    val = series(rows)["val"]
    return min(val, key=lambda p: (p[1], p[0])) if val else None


# ---- ticks --------------------------------------------------------------------------------------
def nice_ticks(lo, hi, n=5):
    """About n round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9 + step:
        ticks.append(round(t, 12))
        if t >= hi - step * 1e-9:
            break
        t += step
    return ticks


def _fmt_tick(v, step):
    if step >= 1 and abs(v) >= 1 and float(v).is_integer():
        return format(int(v), ",")
    digits = max(0, -int(math.floor(math.log10(step)))) if step > 0 else 2
    return "%.*f" % (digits, v)


def _extent(pts_lists):
    xs = [p[0] for pts in pts_lists for p in pts]
    ys = [p[1] for pts in pts_lists for p in pts]
    return min(xs), max(xs), min(ys), max(ys)


# ---- terminal chart -----------------------------------------------------------------------------
def text_chart(rows, width=72, height=12):
    """A plain-text chart (ASCII) of train (`.`) and validation (`*`) bits/char, `width`
    characters wide at most; '' when there is nothing to draw."""
    s = series(rows)
    curves = [(pts, ch) for pts, ch in ((s["train"], "."), (s["val"], "*")) if pts]
    if not curves:
        return ""
    x0, x1, y0, y1 = _extent([c[0] for c in curves])
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.05, y1 + 0.05
    labels = ["%.2f" % v for v in (y1, (y0 + y1) / 2, y0)]
    lw = max(len(t) for t in labels)
    cols = max(10, width - lw - 2)
    height = max(3, height)
    grid = [[" "] * cols for _ in range(height)]

    def col(x):
        return 0 if x1 == x0 else int(round((x - x0) / (x1 - x0) * (cols - 1)))

    def row(y):
        return int(round((y1 - y) / (y1 - y0) * (height - 1)))

    for pts, ch in curves:
        if len(pts) == 1:
            grid[row(pts[0][1])][col(pts[0][0])] = ch
            continue
        for (xa, ya), (xb, yb) in zip(pts, pts[1:]):      # a point in every column between
            ca, cb = col(xa), col(xb)
            for c in range(ca, cb + 1):
                t = 0.0 if cb == ca else (c - ca) / (cb - ca)
                grid[row(ya + t * (yb - ya))][c] = ch
    out = []
    out.append("bits/char   . train   * validation"[:width])
    if s["train_converted"]:
        out.append("(train: loss converted at the validation text's characters per token)"[:width])
    for i, line in enumerate(grid):
        label = labels[0] if i == 0 else labels[2] if i == height - 1 else \
            labels[1] if i == (height - 1) // 2 else ""
        out.append("%*s |%s" % (lw, label, "".join(line).rstrip()))
    out.append("%*s +%s" % (lw, "", "-" * cols))
    left, right = format(int(x0), ","), format(int(x1), ",") + " steps"
    out.append("%*s  %s%*s" % (lw, "", left, max(1, cols - len(left)), right))
    return "\n".join(line.rstrip() for line in out)


# ---- SVG ----------------------------------------------------------------------------------------
def svg_text(rows, title=None, width=720, height=420):
    """The SVG document (a str) of the run's curves."""
    s = series(rows)
    curves = [(pts, color, name) for pts, color, name in (
        (s["train"], TRAIN_COLOR, "train" + (" (converted)" if s["train_converted"] else "")),
        (s["val"], VAL_COLOR, "validation")) if pts]
    if not curves:
        raise DataError("the metrics hold no bits/char figures to plot")
    x0, x1, y0, y1 = _extent([c[0] for c in curves])
    xt = nice_ticks(min(0, x0), x1, 6)
    pad = (y1 - y0) * 0.05 or 0.05
    yt = nice_ticks(y0 - pad, y1 + pad, 5)
    xlo, xhi, ylo, yhi = xt[0], xt[-1], yt[0], yt[-1]
    ml, mr, mt, mb = 64, 20, 40 if title else 20, 48
    pw, ph = width - ml - mr, height - mt - mb

    def X(x):
        return ml + (x - xlo) / ((xhi - xlo) or 1) * pw

    def Y(y):
        return mt + ph - (y - ylo) / ((yhi - ylo) or 1) * ph

    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
         'font-family="sans-serif" font-size="12">' % (width, height, width, height),
         '<rect width="100%" height="100%" fill="white"/>']
    if title:
        o.append('<text x="%d" y="24" font-size="14" font-weight="bold">%s</text>'
                 % (ml, escape(title)))
    xstep = xt[1] - xt[0] if len(xt) > 1 else 1
    ystep = yt[1] - yt[0] if len(yt) > 1 else 1
    o.append('<g stroke="#e5e5e5" stroke-width="1">')
    for t in xt:
        o.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>' % (X(t), mt, X(t), mt + ph))
    for t in yt:
        o.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>' % (ml, Y(t), ml + pw, Y(t)))
    o.append('</g>')
    o.append('<g stroke="black" stroke-width="1"><line x1="%d" y1="%d" x2="%d" y2="%d"/>'
             '<line x1="%d" y1="%d" x2="%d" y2="%d"/>' % (ml, mt + ph, ml + pw, mt + ph,
                                                           ml, mt, ml, mt + ph))
    for t in xt:
        o.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>' % (X(t), mt + ph, X(t), mt + ph + 5))
    for t in yt:
        o.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>' % (ml - 5, Y(t), ml, Y(t)))
    o.append('</g>')
    o.append('<g text-anchor="middle">')
    for t in xt:
        o.append('<text x="%.1f" y="%d">%s</text>' % (X(t), mt + ph + 19, _fmt_tick(t, xstep)))
    o.append('<text x="%.1f" y="%d">step</text>' % (ml + pw / 2, height - 8))
    o.append('</g><g text-anchor="end">')
    for t in yt:
        o.append('<text x="%d" y="%.1f">%s</text>' % (ml - 8, Y(t) + 4, _fmt_tick(t, ystep)))
    o.append('</g>')
    o.append('<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">'
             'bits per character</text>' % (mt + ph / 2))
    for pts, color, name in curves:
        o.append('<polyline fill="none" stroke="%s" stroke-width="2" stroke-linejoin="round" '
                 'data-series="%s" points="%s"/>'
                 % (color, escape(name.split(" ")[0]),
                    " ".join("%.1f,%.1f" % (X(x), Y(y)) for x, y in pts)))
    best = best_point(rows)
    if best is not None:
        bx, by = X(best[0]), Y(best[1])
        o.append('<circle cx="%.1f" cy="%.1f" r="4" fill="none" stroke="%s" stroke-width="2"/>'
                 % (bx, by, VAL_COLOR))
        anchor = "end" if bx > ml + pw * 0.7 else "start"
        o.append('<text x="%.1f" y="%.1f" text-anchor="%s" fill="%s">best %.3f (step %s)</text>'
                 % (bx + (-8 if anchor == "end" else 8), by - 8, anchor, VAL_COLOR, best[1],
                    format(int(best[0]), ",")))
    lw = 48 + 7 * max(len(name) for _, _, name in curves)      # about 7 px a character
    lx, ly = ml + pw - lw - 10, mt + 10
    o.append('<rect x="%d" y="%d" width="%d" height="%d" fill="white" stroke="#999"/>'
             % (lx, ly, lw, 12 + 18 * len(curves)))
    for i, (_, color, name) in enumerate(curves):
        y = ly + 16 + 18 * i
        o.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>'
                 % (lx + 8, y - 4, lx + 30, y - 4, color))
        o.append('<text x="%d" y="%d">%s</text>' % (lx + 36, y, escape(name)))
    o.append('</svg>')
    return "\n".join(o) + "\n"


def write_svg(rows, path, title=None):
    from .dataset import atomic_write_text
    atomic_write_text(path, svg_text(rows, title), what="plot")


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_png(rows, path, title=None):
    """The same chart through matplotlib (the optional extra shoestring[plot])."""
    if not have_matplotlib():
        raise DataError("writing a PNG needs matplotlib (pip install 'shoestring[plot]'), or "
                        "write an SVG instead (--out curve.svg)")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = series(rows)
    fig, ax = plt.subplots(figsize=(7.2, 4.2), dpi=100)
    try:
        if s["train"]:
            ax.plot(*zip(*s["train"]), color=TRAIN_COLOR,
                    label="train" + (" (converted)" if s["train_converted"] else ""))
        if s["val"]:
            ax.plot(*zip(*s["val"]), color=VAL_COLOR, label="validation")
        best = best_point(rows)
        if best is not None:
            ax.plot([best[0]], [best[1]], "o", mfc="none", color=VAL_COLOR)
            xs = [p[0] for p in s["val"] + s["train"]]
            right = best[0] > min(xs) + 0.7 * (max(xs) - min(xs))
            ax.annotate("best %.3f (step %s)" % (best[1], format(int(best[0]), ",")), best,
                        textcoords="offset points", xytext=(-8 if right else 8, 8),
                        ha="right" if right else "left", color=VAL_COLOR)
        ax.set_xlabel("step")
        ax.set_ylabel("bits per character")
        if title:
            ax.set_title(title)
        ax.grid(True, color="#e5e5e5")
        ax.legend()
        fig.tight_layout()
        import io
        from .dataset import atomic_write_bytes
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        atomic_write_bytes(path, buf.getvalue(), what="plot")
    finally:
        plt.close(fig)


def write_plot(rows, path, title=None):
    """SVG or PNG by the extension of `path`."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".svg":
        write_svg(rows, path, title)
    elif ext == ".png":
        write_png(rows, path, title)
    else:
        raise DataError("cannot tell the plot format from %s (end the name with .svg or .png)" % path)
