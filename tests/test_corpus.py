"""The shipped chat corpus: installed with the package, in the MODEL.md §4 format, true to its
facts, and exactly what tools/make_corpus.py generates."""
import importlib.resources
import importlib.util
import os
import re
from pathlib import Path

import pytest

import shoestring.data
from shoestring.errors import DataError

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_corpus.py"
LINE = re.compile(r"^\[(USER|BOT)\] (.+) \[EOS\]$")
SPECIALS = ("[USER]", "[BOT]", "[EOS]", "[PAD]", "[UNK]")


def load_tool():
    spec = importlib.util.spec_from_file_location("make_corpus", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tool():
    return load_tool()


@pytest.fixture(scope="module")
def raw():
    with open(shoestring.data.default_corpus_path(), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def dialogues(raw):
    """[[(role, body), ...], ...] parsed strictly; format errors fail in test_format instead."""
    out = []
    for block in raw.decode("utf-8").split("\n\n"):
        out.append([LINE.match(line).groups() for line in block.strip("\n").split("\n")])
    return out


def bot_lines(dialogues):
    return [body for d in dialogues for role, body in d if role == "BOT"]


# ---- the installed file ---------------------------------------------------------------------

def test_default_corpus_path_is_the_installed_file():
    path = shoestring.data.default_corpus_path()
    assert os.path.isabs(path) and os.path.isfile(path)
    assert os.path.dirname(path) == os.path.dirname(os.path.abspath(shoestring.data.__file__))
    assert importlib.resources.files("shoestring.data").joinpath("chat.txt").is_file()


def test_default_corpus_path_missing_file_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(os.path, "isfile", lambda p: False)
    with pytest.raises(DataError, match="default chat corpus is missing.*--model-data"):
        shoestring.data.default_corpus_path()


def test_size_and_encoding(raw):
    assert 100 * 1024 < len(raw) < 400 * 1024
    raw.decode("utf-8")  # raises on invalid UTF-8
    assert b"\r" not in raw and b"\t" not in raw


# ---- format (MODEL.md §4) -------------------------------------------------------------------

def test_format(raw):
    text = raw.decode("utf-8")
    assert text.endswith("]\n") and not text.startswith("\n")
    assert "\n\n\n" not in text, "dialogues are separated by exactly one blank line"
    n_dialogues = 0
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        n_dialogues += 1
        assert len(lines) % 2 == 0 and 2 <= len(lines) <= 10, block
        for i, line in enumerate(lines):
            m = LINE.match(line)
            assert m, "bad line %r" % line
            role, body = m.groups()
            assert role == ("USER" if i % 2 == 0 else "BOT"), "turns must alternate from [USER]: %r" % block
            assert body == body.strip(), line
            for s in SPECIALS:
                assert s not in body, "special token text inside a turn body: %r" % line
    assert n_dialogues >= 500


def test_dialogues_are_mostly_multi_turn(dialogues):
    pairs = [len(d) // 2 for d in dialogues]
    assert max(pairs) == 5
    assert sum(p >= 2 for p in pairs) >= 0.9 * len(pairs)


# ---- regeneration ---------------------------------------------------------------------------

def test_tool_reproduces_the_shipped_file_byte_for_byte(tool, raw):
    assert tool.generate().encode("utf-8") == raw, (
        "shoestring/data/chat.txt differs from the tool's output "
        "(run: python tools/make_corpus.py --out shoestring/data/chat.txt)")


def test_tool_command_line_writes_the_same_bytes(tool, raw, tmp_path):
    out = tmp_path / "chat.txt"
    assert tool.main(["--out", str(out)]) == 0
    assert out.read_bytes() == raw


def test_seed_changes_output_and_is_deterministic(tool):
    a = tool.generate(seed=1, n_dialogues=40)
    assert a == tool.generate(seed=1, n_dialogues=40)
    assert a != tool.generate(seed=2, n_dialogues=40)


def test_rng_is_uniform_and_in_range(tool):
    rng = tool.Rng(7)
    counts = [0] * 6
    for _ in range(6000):
        counts[rng.below(6)] += 1
    assert all(800 < c < 1200 for c in counts), counts
    with pytest.raises(ValueError):
        rng.below(0)


def test_check_body_rejects_special_tokens_and_untrimmed_text(tool):
    for bad in ("hello [EOS]", "[USER] hi", "", " hi", "hi\nthere", "a [PAD] b"):
        with pytest.raises(ValueError):
            tool.check_body(bad)
    tool.check_body("Hello there!")


# ---- the facts are right --------------------------------------------------------------------

def test_arithmetic_answers_are_correct(dialogues):
    seen = 0
    for body in bot_lines(dialogues):
        for x, op, y, z in re.findall(r"(\d+) (plus|minus|take away|\+|-) (\d+) (?:is|=) (\d+)", body):
            x, y, z = int(x), int(y), int(z)
            assert z == (x + y if op in ("plus", "+") else x - y), body
            seen += 1
        for n, m in re.findall(r"The number after (\d+) is (\d+)", body):
            assert int(m) == int(n) + 1, body
        for n, m in re.findall(r"The number before (\d+) is (\d+)", body):
            assert int(m) == int(n) - 1, body
        for a, b in re.findall(r"^(\d+) is bigger than (\d+)", body):
            assert int(a) > int(b), body
        if re.fullmatch(r"\d+(, \d+)+\.", body):  # counting
            nums = [int(v) for v in body[:-1].split(", ")]
            assert nums == list(range(nums[0], nums[-1] + 1)), body
    assert seen > 50


def test_days_months_and_spelling_are_correct(tool, dialogues):
    days, months = tool.DAYS, tool.MONTHS
    checked = 0
    for body in bot_lines(dialogues):
        for d, n in re.findall(r"The day after (\w+) is (\w+)", body) + re.findall(r"If today is (\w+), tomorrow is (\w+)", body):
            assert days[(days.index(d) + 1) % 7] == n, body
            checked += 1
        for d, p in re.findall(r"The day before (\w+) is (\w+)", body):
            assert days[(days.index(d) - 1) % 7] == p, body
        for m, n in re.findall(r"The month after (\w+) is (\w+)", body):
            assert months[(months.index(m) + 1) % 12] == n, body
        for w, letters in re.findall(r"(\w+) is spelled ([a-z](?:-[a-z])*)\.", body):
            assert letters.replace("-", "") == w.lower(), body
            checked += 1
        for w, n in re.findall(r"The word (\w+) has (\d+) letters", body):
            assert len(w) == int(n), body
    assert checked > 50


def test_every_capital_is_taught_and_right(tool, dialogues):
    text = "\n".join(bot_lines(dialogues))
    assert len(tool.CAPITALS) >= 30
    for country, city in tool.CAPITALS:
        assert city in text, "the capital of %s never appears" % country
    for country, city in re.findall(r"The capital of ([A-Z][\w ]+?|the [\w ]+?) is ([A-Z][\w ]+)\.", text):
        assert (country, city) in tool.CAPITALS, (country, city)


def test_identity_is_consistent(dialogues):
    for d in dialogues:
        for (_, q), (_, a) in zip(d[0::2], d[1::2]):
            if re.search(r"what('s| is) your name|what are you called", q, re.I):
                assert "shoestring" in a, (q, a)


def test_name_recall_refers_to_the_name_given_earlier(dialogues):
    recalled = 0
    for d in dialogues:
        given = None
        for (_, q), (_, a) in zip(d[0::2], d[1::2]):
            m = re.search(r"(?:Nice to meet you, |Hello, |Hi |Thank you, )([A-Z][a-z]+)[!.]", a)
            if m and m.group(1) != "I":
                given = m.group(1)
            m = re.fullmatch(r"(?:Yes, your|Your|You told me your) name is ([A-Z][a-z]+)\.|You are ([A-Z][a-z]+)\.", a)
            if m:
                assert (m.group(1) or m.group(2)) == given, d
                recalled += 1
    assert recalled > 30


def test_day_recall_follows_the_day_the_user_gave(tool, dialogues):
    days = tool.DAYS
    recalled = 0
    for d in dialogues:
        today = None
        for (_, q), (_, a) in zip(d[0::2], d[1::2]):
            m = re.match(r"(?:Thank you\. Today is|Okay, today is|Thanks! I will remember that it is) (\w+)\.", a)
            if m:
                today = days.index(m.group(1))
            m = re.fullmatch(r"(Tomorrow is|Yesterday was|You told me it is) (\w+)\.", a)
            if m:
                step = {"Tomorrow is": 1, "Yesterday was": -1, "You told me it is": 0}[m.group(1)]
                assert today is not None and m.group(2) == days[(today + step) % 7], d
                recalled += 1
    assert recalled > 20
