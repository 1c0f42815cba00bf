"""shoestring.plot: metrics loading, the plain-text chart, the hand-written SVG (parses as XML,
one polyline point per metrics row) and the matplotlib PNG (skipped without matplotlib)."""
import json
import math
import xml.etree.ElementTree as ET

import pytest

from shoestring.errors import DataError
from shoestring.plot import (best_point, load_metrics, nice_ticks, series, svg_text, text_chart,
                             write_plot)

SVG_NS = "{http://www.w3.org/2000/svg}"


def _rows(n=12, converted=False):
    rows = []
    for i in range(n):
        step = 50 * (i + 1)
        val = 2.5 * math.exp(-i / 4) + 0.9
        r = {"step": step, "epoch": i / 3, "train_loss": val * 1.4, "val_loss": val * 1.2,
             "bits_per_char": val, "perplexity": math.exp(val)}
        if not converted:
            r["train_bits_per_char"] = val * 1.1 - 0.05 * i
        rows.append(r)
    return rows


def _write_jsonl(path, rows, extra=()):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in extra:
            f.write(line + "\n")


def test_load_metrics_from_run_folder_dedupes_and_reports_bad_lines(tmp_path):
    rows = _rows(5)
    again = dict(rows[2], bits_per_char=0.5)          # step 150 logged twice: the last one wins
    _write_jsonl(tmp_path / "metrics.jsonl", rows[:3] + [again] + rows[3:], ['{"step": 9', "[]"])
    warnings = []
    got = load_metrics(str(tmp_path), warn=warnings.append)
    assert [r["step"] for r in got] == [50, 100, 150, 200, 250]
    assert got[2]["bits_per_char"] == 0.5
    assert len(warnings) == 1 and "2 unreadable lines (line 7, 8)" in warnings[0]


def test_load_metrics_from_checkpoint_and_errors(tmp_path):
    ck = tmp_path / "last.json"
    ck.write_text(json.dumps({"format": "shoestring-checkpoint", "metrics": _rows(3)}))
    assert len(load_metrics(str(tmp_path))) == 3      # folder without metrics.jsonl
    assert len(load_metrics(str(ck))) == 3
    with pytest.raises(DataError, match="does not exist"):
        load_metrics(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no metrics.jsonl"):
        load_metrics(str(empty))
    (empty / "metrics.jsonl").write_text("")
    with pytest.raises(DataError, match="no metrics rows yet"):
        load_metrics(str(empty))


def test_series_converts_train_loss_when_bits_are_missing():
    s = series(_rows(3, converted=True))
    assert s["train_converted"]
    r = _rows(3, converted=True)[1]
    assert s["train"][1] == (100, pytest.approx(r["train_loss"] * r["bits_per_char"] / r["val_loss"]))
    assert not series(_rows(3))["train_converted"]
    assert best_point(_rows(4)) == (200, pytest.approx(_rows(4)[3]["bits_per_char"]))


def test_svg_parses_with_one_point_per_row(tmp_path):
    rows = _rows(17)
    path = str(tmp_path / "curve.svg")
    write_plot(rows, path, title="a <run> & more")
    root = ET.parse(path).getroot()
    assert root.tag == SVG_NS + "svg"
    lines = {p.get("data-series"): p.get("points").split() for p in root.iter(SVG_NS + "polyline")}
    assert set(lines) == {"train", "validation"}
    assert len(lines["train"]) == len(rows) and len(lines["validation"]) == len(rows)
    texts = [t.text for t in root.iter(SVG_NS + "text")]
    assert "a <run> & more" in texts and "step" in texts and "bits per character" in texts
    assert "validation" in texts and "train" in texts
    # the validation curve falls: each point is lower on the page (larger y) than the one before
    ys = [float(p.split(",")[1]) for p in lines["validation"]]
    assert ys == sorted(ys)
    # every point lies inside the drawing
    w, h = float(root.get("width")), float(root.get("height"))
    for pts in lines.values():
        for p in pts:
            x, y = map(float, p.split(","))
            assert 0 <= x <= w and 0 <= y <= h


def test_svg_with_a_single_row_and_no_train_figure():
    root = ET.fromstring(svg_text([{"step": 7, "bits_per_char": 1.25}]))
    polys = list(root.iter(SVG_NS + "polyline"))
    assert len(polys) == 1 and len(polys[0].get("points").split()) == 1
    with pytest.raises(DataError, match="no bits/char"):
        svg_text([{"step": 1}])


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_text_chart_fits_the_width(width):
    for rows in (_rows(30), _rows(2, converted=True), _rows(1)):
        chart = text_chart(rows, width=width, height=8)
        lines = chart.split("\n")
        assert max(len(line) for line in lines) <= width
        assert all(ord(c) < 128 for c in chart)
        assert "*" in chart
    assert text_chart([]) == ""


def test_text_chart_draws_the_curves_where_they_are():
    rows = [{"step": 10 * i, "bits_per_char": 3.0 - i, "train_bits_per_char": 3.0 - i}
            for i in range(3)]
    lines = text_chart(rows, width=40, height=5).split("\n")
    body = [line.split("|", 1)[1] for line in lines if "|" in line]
    assert body[0].startswith("*") and body[-1].endswith("*")     # high on the left, low on the right
    assert lines[1].startswith("3.00 |") and lines[5].startswith("1.00 |")


def test_nice_ticks():
    assert nice_ticks(0, 1000, 5) == [0, 200, 400, 600, 800, 1000]
    t = nice_ticks(0.63, 2.71, 5)
    assert t[0] <= 0.63 and t[-1] >= 2.71 and len(t) <= 8
    steps = {round(b - a, 9) for a, b in zip(t, t[1:])}
    assert len(steps) == 1 and steps.pop() in (0.2, 0.5, 1.0)
    assert nice_ticks(5, 5) == nice_ticks(5, 5.5)


def test_png_needs_matplotlib_or_says_how(tmp_path, monkeypatch):
    import shoestring.plot as plot
    path = str(tmp_path / "curve.png")
    if plot.have_matplotlib():
        write_plot(_rows(6), path)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(plot, "have_matplotlib", lambda: False)
    with pytest.raises(DataError, match=r"shoestring\[plot\]"):
        write_plot(_rows(6), str(tmp_path / "other.png"))
    with pytest.raises(DataError, match="end the name with .svg or .png"):
        write_plot(_rows(6), str(tmp_path / "curve.pdf"))
