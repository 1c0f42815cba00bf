"""Tokenizer tests: losslessness, specials, the fast paths against their slow twins, known answers,
determinism, chunked training, serialisation, and every bad input through the CLI."""
import json
import os
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoestring import tokenizer as tk
from shoestring.cli import main
from shoestring.dataset import read_text_chunks
from shoestring.errors import TokenizerError
from shoestring.tokenizer import SPECIALS, Tokenizer, pretokenize_reference

# A small corpus with chat turns, Slovak, CJK, emoji, combining marks, tabs and \r\n.
CORPUS = "".join(
    "[USER] what is %d plus %d?[EOS]\n[BOT] %d plus %d is %d.[EOS]\n\n" % (a, b, a, b, a + b)
    for a in range(7) for b in range(7)
) + (
    "Dobrý deň, ako sa máš? Ďakujem, mám sa veľmi dobre. Kôň žerie ďatelinu.\r\n" * 5
    + "東京は日本の首都です。我爱北京天安门。\n" * 4
    + "emoji 🙂🙂 and flags 🇸🇰 and ZWJ 👩‍💻 families\n" * 4
    + "cafe\u0301 na\u0131ve\ttabs\tand  double  spaces, don't we'll o'er 'tis\n" * 6
)

# Any text UTF-8 can represent (no lone surrogates), and the same with specials mixed in.
utf8_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=120)
piece_soup = st.lists(
    st.one_of(utf8_text, st.sampled_from(SPECIALS + ("[", "]", " ", "  ", "'", "\n", "\r\n", "EOS"))),
    max_size=12).map("".join)
FAST = settings(max_examples=150, deadline=None)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(texts=[CORPUS], vocab_size=420)


def run_cli(capsys, *argv):
    rc = main(["tokenizer", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    assert rc == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("shoestring: error: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ---- pre-tokenisation ---------------------------------------------------------------------------
@FAST
@given(text=st.one_of(st.text(max_size=80), piece_soup))
def test_pretokenize_regex_matches_reference_rules(tok, text):
    for allow in (True, False):
        pieces = tok.pretokenize(text, allow_special=allow)
        assert "".join(pieces) == text
        assert pieces == pretokenize_reference(text, SPECIALS if allow else ())


def test_pretokenize_examples(tok):
    assert tok.pretokenize("Hello world,  don't   stop!!\n\nnow 123abc") == [
        "Hello", " world", ",", " ", " don't", "  ", " stop", "!!", "\n", "\n", "now", " 123", "abc"]
    assert tok.pretokenize("hi[EOS] [BOT]x.[PAD]") == ["hi", "[EOS]", " ", "[BOT]", "x", ".", "[PAD]"]
    assert tok.pretokenize("hi[EOS]", allow_special=False) == ["hi", "[", "EOS", "]"]


@FAST
@given(text=st.one_of(st.text(max_size=80), piece_soup))
def test_safe_cut_splits_pretokenisation_exactly(tok, text):
    p = tk._safe_cut(text)
    assert 0 <= p <= len(text)
    if p:
        assert not text[p - 1].isspace() and text[p].isspace()
        for allow in (True, False):
            assert (tok.pretokenize(text, allow) ==
                    tok.pretokenize(text[:p], allow) + tok.pretokenize(text[p:], allow))


# ---- losslessness and specials ------------------------------------------------------------------
@FAST
@given(text=piece_soup)
def test_round_trip_any_text(tok, text):
    for allow in (True, False):
        ids = tok.encode(text, allow_special=allow)
        assert tok.decode(ids) == text
        assert all(0 <= i < tok.vocab_size for i in ids)


@FAST
@given(text=piece_soup)
def test_allow_special_false_never_yields_special_ids(tok, text):
    ids = tok.encode(text, allow_special=False)
    assert all(i >= len(SPECIALS) for i in ids)
    assert tk._PLAIN_RE.findall(text) == tok.pretokenize(text, allow_special=False)


@FAST
@given(text=piece_soup)
def test_encode_matches_slow_twin(tok, text):
    for allow in (True, False):
        assert tok.encode(text, allow) == tok.encode_slow(text, allow)


@FAST
@given(text=piece_soup)
def test_encode_array_matches_encode(tok, text):
    arr = tok.encode_array(text)
    assert arr.dtype == np.int32
    assert arr.tolist() == tok.encode(text)


def test_encode_array_chunked_path(tok, monkeypatch):
    text = CORPUS * 3
    want = tok.encode(text)
    monkeypatch.setattr(tk, "_ENCODE_CHUNK_CHARS", 97)
    got = Tokenizer.from_dict(tok.to_dict()).encode_array(text)
    assert got.tolist() == want


def test_cache_eviction_keeps_results(tok, monkeypatch):
    text = CORPUS[:3000]
    want = tok.encode_slow(text)
    monkeypatch.setattr(tk, "_CACHE_MAX", 5)
    t2 = Tokenizer.from_dict(tok.to_dict())
    for _ in range(3):
        assert t2.encode(text) == want
        assert t2.encode(text, allow_special=False) == tok.encode_slow(text, allow_special=False)
    assert len(t2._cache_special) < 2 * len(set(t2.pretokenize(text)))


def test_specials_glued_and_plain(tok):
    eos, bot, user = tok.special_id("[EOS]"), tok.special_id("BOT"), tok.special_id("[USER]")
    assert (eos, bot, user) == (2, 1, 0)
    ids = tok.encode("hi[EOS]")
    assert ids[-1] == eos and tok.decode(ids[:-1]) == "hi"
    ids = tok.encode("[USER]hello[EOS][BOT][[EOS]]")
    assert ids[0] == user and ids.count(eos) == 2 and ids.count(bot) == 1
    assert tok.decode(ids) == "[USER]hello[EOS][BOT][[EOS]]"
    plain = tok.encode("hi[EOS]", allow_special=False)
    assert eos not in plain and tok.decode(plain) == "hi[EOS]"
    assert tok.encode("[EOS]") == [eos]


def test_unseen_characters_fall_back_to_bytes(tok):
    text = "\U0001F9EC ᚠᛇᚻ \x00\x7f"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.special_id("[UNK]") not in ids


def test_lone_surrogate_is_an_error(tok):
    with pytest.raises(TokenizerError, match="lone surrogate U\\+D800 at index 2"):
        tok.encode("ab\ud800cd")
    with pytest.raises(TokenizerError, match="lone surrogate"):
        Tokenizer.train(texts=["ok \udfff"], vocab_size=300)


def test_encode_rejects_non_str(tok):
    with pytest.raises(TokenizerError, match="str"):
        tok.encode(b"bytes")


# ---- decoding -----------------------------------------------------------------------------------
def test_decode_partial_utf8_is_replaced(tok):
    off = len(SPECIALS)
    e_acute = "é".encode("utf-8")
    assert tok.decode([off + e_acute[0]]) == "\ufffd"
    assert tok.decode([off + ord("a"), off + e_acute[0], off + e_acute[1]]) == "aé"
    assert tok.decode(np.array([off + 0xFF, off + ord("b")], dtype=np.int64)) == "\ufffdb"


@pytest.mark.parametrize("bad", [[-1], [10 ** 6], [1.5], np.array([[1]]), np.array([0.5])])
def test_decode_rejects_bad_ids(tok, bad):
    with pytest.raises(TokenizerError):
        tok.decode(bad)


@FAST
@given(text=piece_soup, noise=st.lists(st.integers(0, 419), max_size=8), seed=st.integers(0, 99))
def test_stream_decode_equals_batch_decode_at_every_split(tok, text, noise, seed):
    ids = tok.encode(text)
    rnd = random.Random(seed)
    for n in noise:  # arbitrary ids, including lone bytes that break characters apart
        ids.insert(rnd.randint(0, len(ids)), n)
    full = tok.decode(ids)
    sd = tok.stream_decoder()
    emitted = ""
    for k, i in enumerate(ids):
        emitted += sd.feed(i)
        assert full.startswith(emitted)
        # What is emitted after k+1 ids plus what a flush would add is decode(ids[:k+1]).
        probe = tok.stream_decoder()
        prefix = "".join(probe.feed(j) for j in ids[:k + 1])
        assert prefix == emitted and prefix + probe.flush() == tok.decode(ids[:k + 1])
    assert emitted + sd.flush() == full
    assert sd.flush() == ""
    # feed_many over chunks of any size emits what feeding the same ids one by one emits
    one, many = tok.stream_decoder(), tok.stream_decoder()
    cuts = sorted(rnd.sample(range(len(ids) + 1), min(3, len(ids) + 1)))
    for a, b in zip([0] + cuts, cuts + [len(ids)]):
        assert many.feed_many(ids[a:b]) == "".join(one.feed(i) for i in ids[a:b])
    assert many.flush() == one.flush()


def test_stream_decoder_feed_many_checks_ids(tok):
    sd = tok.stream_decoder()
    with pytest.raises(TokenizerError):
        sd.feed_many([3, tok.vocab_size])
    with pytest.raises(TokenizerError):
        sd.feed_many([1.5])


def test_stream_decoder_holds_incomplete_characters(tok):
    off = len(SPECIALS)
    sd = tok.stream_decoder()
    b = "🙂".encode("utf-8")
    assert [sd.feed(off + x) for x in b] == ["", "", "", "🙂"]
    assert sd.feed(off + b[0]) == ""
    assert sd.flush() == "\ufffd"
    with pytest.raises(TokenizerError):
        sd.feed(tok.vocab_size)


def test_id_to_piece(tok):
    off = len(SPECIALS)
    assert tok.id_to_piece(2) == "[EOS]"
    assert tok.id_to_piece(off + ord("\n")) == "\\n"
    assert tok.id_to_piece(off + ord("\\")) == "\\\\"
    assert tok.id_to_piece(off + 0xE2) == "<0xE2>"
    assert tok.id_to_piece(off + ord(" ")) == " "
    assert all(isinstance(tok.id_to_piece(i), str) for i in range(tok.vocab_size))
    with pytest.raises(TokenizerError):
        tok.id_to_piece(-1)
    with pytest.raises(TokenizerError, match="unknown special token"):
        tok.special_id("[NOPE]")


# ---- training: known answers, determinism, chunking ---------------------------------------------
def test_known_answer_aaab():
    t = Tokenizer.train(texts=["aaab aaab"], vocab_size=270)
    a, b, sp = 5 + ord("a"), 5 + ord("b"), 5 + ord(" ")
    # (a,a) counts 4; then (a,b) and (aa,a) tie at 2 and b"a" < b"aa" picks (a,b); then
    # (aa,ab) counts 2; then (" ", aaab) counts 1; then no pair is left (vocab stops at 265).
    assert t.merges == [(a, a), (a, b), (261, 262), (sp, 263)]
    assert t.vocab_size == 265
    assert t.encode("aaab aaab") == [263, 264]
    assert t.encode("aaa") == [261, a]
    assert t.encode("ab") == [262]
    assert t.id_to_piece(264) == " aaab"
    assert t.stats["bytes"] == 9 and t.stats["tokens"] == 2


def test_known_answer_tie_break_by_bytes():
    t = Tokenizer.train(texts=["ba ab"], vocab_size=262)
    # Every pair counts 1; (b" ", b"a") is the lexicographically smallest pair of byte strings.
    assert t.merges == [(5 + ord(" "), 5 + ord("a"))]
    # Byte order, not id order: after (a,a) -> 261 = "aa", the pairs (" ", "aa"), (" ", "b") and
    # ("b", "y") all count 1; b"aa" < b"b" although id 261 > id 103.
    t = Tokenizer.train(texts=["aa aa by"], vocab_size=270)
    sp, a, b, y = (5 + ord(c) for c in " aby")
    assert t.merges == [(a, a), (sp, 261), (sp, b), (263, y)]
    assert t.encode("aa aa by") == [261, 262, 264]


def test_specials_are_never_merged():
    t = Tokenizer.train(texts=["[USER] hi [EOS]\n[BOT] hi there [EOS]\n" * 20], vocab_size=300)
    assert all(a >= 5 and b >= 5 for a, b in t.merges)
    assert t.encode("[USER] hi [EOS]")[0] == 0


def test_training_is_deterministic(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text(CORPUS, encoding="utf-8")
    t1 = Tokenizer.train(paths=[p], vocab_size=450)
    t2 = Tokenizer.train(paths=[str(p)], vocab_size=450)
    t3 = Tokenizer.train(texts=[CORPUS], vocab_size=450)
    assert t1.merges == t2.merges == t3.merges
    assert t1 == t3 and len(t1.merges) == 450 - 261


def _naive_merges(texts, vocab_size):
    """BPE merges by a from-scratch recount every merge (the incremental trainer's slow twin)."""
    from collections import Counter
    words = Counter(p for t in texts for p in pretokenize_reference(t, SPECIALS) if p not in SPECIALS)
    seqs = {w: [5 + b for b in w.encode("utf-8")] for w in words}
    pieces = {i: bytes([i - 5]) for i in range(5, 261)}
    merges = []
    while len(merges) < vocab_size - 261:
        pc = Counter()
        for w, s in seqs.items():
            for p in zip(s, s[1:]):
                pc[p] += words[w]
        if not pc:
            break
        best = min(pc, key=lambda p: (-pc[p], pieces[p[0]], pieces[p[1]], p))
        new = 261 + len(merges)
        pieces[new] = pieces[best[0]] + pieces[best[1]]
        merges.append(best)
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def test_incremental_training_matches_naive_recount():
    """The incremental trainer against a from-scratch recount every merge (its slow twin)."""
    texts = [CORPUS[:1500]]
    assert Tokenizer.train(texts=texts, vocab_size=330).merges == _naive_merges(texts, 330)


@pytest.mark.parametrize("seed", range(6))
def test_local_pair_updates_match_naive_recount_on_repetitive_text(seed):
    """Runs of one byte (overlapping pairs: aaaa), alternations (abab), long distinct pre-tokens
    of random Chinese (3-byte characters, 64 to a pre-token) and mixes: where a merge's
    neighbour updates (x, a) -> (x, new), (b, y) -> (new, y) are easiest to get wrong."""
    import random
    rng = random.Random(seed)
    alphabets = ["a", "ab", "aab ", "ab\n", "\u4e00\u4e01\u4e02", "xy'z ", "aaab", "\u4e00a "]
    texts = []
    for _ in range(3):
        alpha = rng.choice(alphabets)
        texts.append("".join(rng.choice(alpha) for _ in range(rng.randrange(50, 400))))
    texts.append("".join(chr(rng.randrange(0x4E00, 0x4E40)) for _ in range(300)))
    vocab = rng.choice([280, 320, 400])
    assert Tokenizer.train(texts=texts, vocab_size=vocab).merges == _naive_merges(texts, vocab)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000])
def test_chunk_boundaries_do_not_change_training(tmp_path, chunk):
    p = tmp_path / "c.txt"
    p.write_bytes(CORPUS.encode("utf-8"))
    assert len(CORPUS.encode("utf-8")) > 1000
    want = Tokenizer.train(texts=[CORPUS], vocab_size=400).merges
    got = Tokenizer.train(paths=[p], vocab_size=400, chunk_bytes=chunk).merges
    assert got == want


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunked_replace_decoding_matches_one_decode(tmp_path, chunk):
    data = CORPUS.encode("utf-8")[:3000]
    data = data[:100] + b"\xff\xe2\x82" + data[100:500] + b"\xf0\x9f" + data[500:] + b"\xe2"
    p = tmp_path / "bad.txt"
    p.write_bytes(data)
    text = data.decode("utf-8", "replace")
    assert "".join(read_text_chunks(p, "replace", chunk_bytes=chunk)) == text
    want = Tokenizer.train(texts=[text], vocab_size=330).merges
    assert Tokenizer.train(paths=[p], vocab_size=330, encoding_errors="replace",
                           chunk_bytes=chunk).merges == want


def test_invalid_utf8_names_file_and_offset(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"hello world " * 10 + b"\xff rest")
    with pytest.raises(TokenizerError, match=r"bad\.txt is not valid UTF-8: byte 0xff at byte "
                                             r"offset 120 .*encoding_errors replace") as exc_info:
        Tokenizer.train(paths=[p], vocab_size=300, chunk_bytes=16)
    assert exc_info.value.settings == ("encoding_errors",)     # the CLI names its flag
    q = tmp_path / "cut.txt"
    q.write_bytes(b"abc \xe2\x82")
    with pytest.raises(TokenizerError, match="truncated character at byte offset 4"):
        Tokenizer.train(paths=[q], vocab_size=300)


def test_training_argument_errors(tmp_path):
    with pytest.raises(TokenizerError, match="too small.*261"):
        Tokenizer.train(texts=["abc"], vocab_size=260)
    with pytest.raises(TokenizerError, match="no tokenizer training data"):
        Tokenizer.train(vocab_size=300)
    with pytest.raises(TokenizerError, match="empty"):
        Tokenizer.train(texts=["", "[EOS]"], vocab_size=300)
    with pytest.raises(TokenizerError, match="must start with punctuation"):
        Tokenizer.train(texts=["abc"], vocab_size=300, special_tokens=("EOS",))
    with pytest.raises(TokenizerError, match="must not contain whitespace"):
        Tokenizer(special_tokens=("[A B]",))
    with pytest.raises(TokenizerError, match="apostrophe"):
        Tokenizer(special_tokens=("'x",))
    p = tmp_path / "single.txt"
    p.write_text("one file given as a bare path", encoding="utf-8")
    assert Tokenizer.train(paths=p, vocab_size=270).vocab_size == 270


def test_custom_specials():
    t = Tokenizer.train(texts=["<|sep|>a b<|sep|>c<|end|>"] * 3, vocab_size=280,
                        special_tokens=("<|sep|>", "<|end|>"))
    assert t.vocab_size <= 280 and t.encode("x<|end|>")[-1] == 1
    assert t.encode("<|sep|>", allow_special=False)[0] >= 2
    assert Tokenizer.from_dict(t.to_dict()) == t


# ---- serialisation ------------------------------------------------------------------------------
def test_save_load_and_dict_round_trip(tok, tmp_path):
    d = json.loads(json.dumps(tok.to_dict()))
    assert Tokenizer.from_dict(d) == tok
    p = tmp_path / "tok.json"
    tok.save(p)
    t2 = Tokenizer.load(p)
    assert t2 == tok and t2.vocab_size == tok.vocab_size
    assert t2.encode(CORPUS) == tok.encode(CORPUS)
    assert os.listdir(tmp_path) == ["tok.json"]  # no temporary file left behind
    ck = tmp_path / "ck.json"
    ck.write_text(json.dumps({"format": "shoestring-checkpoint", "tokenizer": tok.to_dict()}))
    assert Tokenizer.load(ck) == tok


def _mutations():
    base = Tokenizer.train(texts=["aaab aaab"], vocab_size=270).to_dict()

    def m(fn):
        d = json.loads(json.dumps(base))
        fn(d)
        return d
    return [
        ("not a dict", [1, 2], "JSON object"),
        ("missing merges", m(lambda d: d.pop("merges")), "missing key 'merges'"),
        ("format", m(lambda d: d.update(format="gpt2")), "format"),
        ("version", m(lambda d: d.update(version=2)), "version 2"),
        ("pretokenizer", m(lambda d: d.update(pretokenizer="x")), "pre-tokenizer"),
        ("future id", m(lambda d: d["merges"].__setitem__(0, [5, 300])), "merges\\[0\\]"),
        ("special id", m(lambda d: d["merges"].__setitem__(1, [2, 5])), "never merged"),
        ("repeat", m(lambda d: d["merges"].append([102, 102])), "repeats"),
        ("not ints", m(lambda d: d["merges"].__setitem__(0, ["a", 5])), "pair of integer"),
        ("bool", m(lambda d: d["merges"].__setitem__(0, [True, 5])), "pair of integer"),
        ("triple", m(lambda d: d["merges"].__setitem__(0, [5, 6, 7])), "pair of integer"),
        ("merges type", m(lambda d: d.update(merges={})), "list"),
        ("vocab", m(lambda d: d.update(vocab_size=999)), "vocab_size"),
        ("specials", m(lambda d: d.update(special_tokens=["[A]", "[A]"])), "duplicate"),
        ("specials type", m(lambda d: d.update(special_tokens="[A]")), "list of strings"),
    ]


@pytest.mark.parametrize("name,d,msg", _mutations(), ids=[x[0] for x in _mutations()])
def test_from_dict_rejects_malformed(name, d, msg):
    with pytest.raises(TokenizerError, match="malformed.*" + msg):
        Tokenizer.from_dict(d)


# ---- command line -------------------------------------------------------------------------------
def test_cli_train_save_load_encode(tmp_path, capsys):
    data = tmp_path / "c.txt"
    data.write_text(CORPUS, encoding="utf-8")
    out = tmp_path / "tok.json"
    rc, o, e = run_cli(capsys, "--bpe-data", str(data), "--bpe-vocab-size", "300", "--out", str(out))
    assert rc == 0 and e == ""
    assert "trained tokenizer: 300 tokens (5 special, 256 bytes, 39 merges)" in o
    assert "saved to" in o
    assert Tokenizer.load(out) == Tokenizer.train(texts=[CORPUS], vocab_size=300)
    rc, o, e = run_cli(capsys, "--load", str(out), "--encode", "what is[EOS]\n")
    assert rc == 0
    lines = o.splitlines()
    assert lines[0].startswith("loaded tokenizer from")
    ids = Tokenizer.load(out).encode("what is[EOS]\n")
    assert lines[2] == "ids: " + " ".join(map(str, ids))
    assert lines[-2].strip() == "2  '[EOS]'" and lines[-1].strip() == "%d  '\\n'" % ids[-1]
    ck = tmp_path / "ck.json"
    ck.write_text(json.dumps({"tokenizer": Tokenizer.load(out).to_dict(), "params": {}}))
    rc, o, e = run_cli(capsys, "--load", str(ck))
    assert rc == 0 and "300 tokens" in o


def test_cli_replace_mode_reads_bad_bytes(tmp_path, capsys):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"fine text \xff\xfe more text")
    rc, o, e = run_cli(capsys, "--bpe-data", str(p), "--bpe-vocab-size", "270",
                       "--encoding-errors", "replace")
    assert rc == 0 and "trained tokenizer" in o


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text("some text here", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 ok".encode("latin-1"))
    notjson = tmp_path / "x.json"
    notjson.write_text("{not json", encoding="utf-8")
    nodir = tmp_path / "nodir"
    nodir.mkdir()
    cases = [
        (["--bpe-data", str(tmp_path / "missing.txt")], ["not found", "missing.txt"]),
        (["--bpe-data", str(nodir)], ["folder", "has no .txt files"]),
        (["--bpe-data", str(empty)], ["empty.txt", "empty"]),
        (["--bpe-data", str(good), "--bpe-vocab-size", "100"], ["too small", "261"]),
        (["--bpe-data", str(bad)], ["latin1.txt", "not valid UTF-8", "byte offset 3",
                                    "--encoding-errors replace"]),
        (["--load", str(tmp_path / "nope.json")], ["not found"]),
        (["--load", str(notjson)], ["not valid JSON", "line 1"]),
        (["--load", str(good)], ["not valid JSON"]),
    ]
    for argv, needles in cases:
        rc, o, e = run_cli(capsys, *argv)
        assert_one_line_error(rc, e, *needles)
    mal = tmp_path / "mal.json"
    mal.write_text(json.dumps({"format": "shoestring-bpe"}), encoding="utf-8")
    rc, o, e = run_cli(capsys, "--load", str(mal))
    assert_one_line_error(rc, e, "mal.json", "malformed", "missing key")


def test_cli_usage_errors(tmp_path, capsys):
    rc, o, e = run_cli(capsys)
    assert rc == 2 and "nothing to do" in e
    rc, o, e = run_cli(capsys, "--bpe-data", "a.txt", "--load", "b.json")
    assert rc == 2 and "not both" in e


def test_constructor_validates_merges():
    assert Tokenizer([(5, 6), (261, 7)]).vocab_size == 263
    assert Tokenizer([np.array([5, 6])]).merges == [(5, 6)]
    for merges, msg in [([(5, 261)], "only ids 5..260"), ([(0, 5)], "never merged"),
                        ([(5, 6), (5, 6)], "repeats"), ([(5,)], "pair of integer")]:
        with pytest.raises(TokenizerError, match=msg):
            Tokenizer(merges)
    with pytest.raises(TokenizerError, match="encoding_errors"):
        Tokenizer.train(texts=["abc"], vocab_size=300, encoding_errors="ignore")


def test_decode_rejects_non_integer_ids_with_one_clear_error():
    tok = Tokenizer.train(texts=["aaab aaab"], vocab_size=262)
    for ids in ([float("-inf")], [1.5], [5, "x"], [float("nan")]):
        with pytest.raises(TokenizerError, match="must be integers"):
            tok.decode(ids)
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([-1])
