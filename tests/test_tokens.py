"""Streaming encode into a compact array, exact character counts, and the token cache."""
import json
import os

import numpy as np
import pytest

from shoestring import tokens as tk
from shoestring.cli import main
from shoestring.errors import DataError
from shoestring.tokenizer import Tokenizer

# multi-byte characters (2, 3 and 4 bytes), specials, long words, apostrophes, digit runs,
# whitespace runs: every kind of pre-token, so small chunks cut inside all of them
TEXT = ("[USER] Ünïcödé wörds, 中文字符 and emoji 🙂🙂 [BOT] don't stop: 12345 67\n\n"
        "  indented   spaces\tand tabs [EOS]" + " superlongwordwithoutanybreaks" * 3 +
        " naïve café — «quoted» ∑∫ " * 4 + "[USER]tight[BOT]x\n")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(texts=[TEXT * 3, "the cat sat on the mat " * 20], vocab_size=330)


def write(tmp_path, name, text, bom=False):
    p = tmp_path / name
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return str(p)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_streaming_encode_gives_the_whole_file_ids(tmp_path, tok, chunk):
    """Chunks of 1..7 bytes end inside 2-, 3- and 4-byte characters and inside every kind of
    pre-token; the ids are still those of encoding each whole file at once."""
    a = write(tmp_path, "a.txt", TEXT, bom=True)
    b = write(tmp_path, "b.txt", TEXT[::-1] + "tail")
    enc = tk.encode_files(tok, [a, b], chunk_bytes=chunk)
    want = np.concatenate([tok.encode_array(TEXT), tok.encode_array(TEXT[::-1] + "tail")])
    assert enc.ids.dtype == np.uint16
    assert enc.ids.tolist() == want.tolist()
    assert enc.chars == len(TEXT) + len(TEXT) + 4          # the BOM is not text
    assert enc.chat


def test_encode_limit_keeps_a_prefix_and_its_characters(tmp_path, tok):
    p = write(tmp_path, "a.txt", TEXT * 5)
    full = tk.encode_files(tok, [p]).ids
    enc = tk.encode_files(tok, [p], limit=37, chunk_bytes=16)
    assert enc.ids.tolist() == full[:37].tolist()
    assert enc.chars == tk.count_chars(tok, full[:37])


def test_int32_ids_above_65535(tmp_path):
    """A vocabulary over 65,535 ids is stored as int32 and its large ids survive."""
    merges = [(5 + i % 256, 5 + i // 256) for i in range(65536)]     # every byte pair
    zz = 261 + ord("z") + 256 * ord("z")
    big = Tokenizer(merges + [(zz, zz)])                              # "zzzz": id 65797
    assert big.vocab_size == 65798
    text = "zzzz yy \u00e9\u00e9 ok zzzz"
    p = write(tmp_path, "a.txt", text)
    enc = tk.encode_files(big, [p], chunk_bytes=3)
    assert enc.ids.dtype == np.int32
    assert enc.ids.tolist() == big.encode(text) and max(enc.ids) > 65535
    assert tk.id_dtype(65535) == np.uint16 and tk.id_dtype(65536) == np.int32


def test_character_counts_are_exact_for_any_slice(tok):
    ids = tok.encode_array(TEXT)
    assert tk.count_chars(tok, ids) == len(TEXT)
    for cut in range(len(ids) + 1):
        head, tail = ids[:cut], ids[cut:]
        assert tk.count_chars(tok, head) + tk.count_chars(tok, tail) == len(TEXT)
        whole = tok.decode_bytes(head)
        try:      # where the cut falls between characters, the count is the decoded length
            assert tk.count_chars(tok, head) == len(whole.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    # a byte-fallback character split over tokens counts once, in the token holding its lead byte
    byte_tok = Tokenizer([])
    ids = byte_tok.encode_array("\u4e2d")
    assert len(ids) == 3 and [tk.count_chars(byte_tok, ids[i:i + 1]) for i in range(3)] == [1, 0, 0]


def test_check_texts_errors(tmp_path):
    blank = write(tmp_path, "blank.txt", "  \n\t ")
    with pytest.raises(DataError, match="empty"):
        tk.check_texts([blank])
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\x80abc" + b"\x00" * 10)
    with pytest.raises(DataError, match="looks binary"):
        tk.check_texts([str(binary)])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 ok".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8: .* at byte offset 3"):
        tk.check_texts([str(bad)])


# ---- the token cache ---------------------------------------------------------------------------
def cached(tok, paths, folder, errors="strict"):
    lines = []
    enc, how = tk.cached_encode(tok, paths, errors, str(folder), lines.append)
    return enc, how, lines


def test_cache_is_used_when_valid(tmp_path, tok, monkeypatch):
    p = write(tmp_path, "a.txt", TEXT * 4)
    run = tmp_path / "run"
    run.mkdir()
    first, how, lines = cached(tok, [p], run)
    assert how == "encoded" and not lines
    assert (run / "tokens.bin").stat().st_size == 2 * len(first.ids)
    meta = json.loads((run / "tokens.json").read_text())
    assert meta["count"] == len(first.ids) and meta["dtype"] == "uint16"

    def boom(*a, **k):
        raise AssertionError("encoded although the cache is valid")
    monkeypatch.setattr(tk, "encode_files", boom)
    again, how, lines = cached(Tokenizer.from_dict(tok.to_dict()), [p], run)
    assert how == "cache" and not lines
    assert again.ids.dtype == np.uint16 and again.ids.tolist() == first.ids.tolist()
    assert (again.chars, again.chat) == (first.chars, first.chat)


@pytest.mark.parametrize("change", ["data", "tokenizer", "encoding_errors", "another file"])
def test_stale_cache_is_rebuilt(tmp_path, tok, change):
    p = write(tmp_path, "a.txt", TEXT * 4)
    run = tmp_path / "run"
    run.mkdir()
    cached(tok, [p], run)
    paths, use, errors = [p], tok, "strict"
    if change == "data":         # same size, other bytes
        write(tmp_path, "a.txt", (TEXT * 4).replace("tabs", "bats"))
    elif change == "tokenizer":
        use = Tokenizer.train(texts=[TEXT], vocab_size=300)
    elif change == "encoding_errors":
        errors = "replace"
    else:
        paths = [p, write(tmp_path, "b.txt", "more text")]
    enc, how, lines = cached(use, paths, run, errors)
    assert how == "encoded" and not lines          # stale: rebuilt without complaint
    want = np.concatenate([use.encode_array(open(q, encoding="utf-8").read()) for q in paths])
    assert enc.ids.tolist() == want.tolist()
    assert cached(use, paths, run, errors)[1] == "cache"     # and the new cache is used next


@pytest.mark.parametrize("damage", ["truncated", "flipped", "sidecar", "missing bin", "big id"])
def test_damaged_cache_is_refused_with_one_line_and_rebuilt(tmp_path, tok, damage):
    p = write(tmp_path, "a.txt", TEXT * 4)
    run = tmp_path / "run"
    run.mkdir()
    first = cached(tok, [p], run)[0]
    binp, meta = run / "tokens.bin", run / "tokens.json"
    raw = bytearray(binp.read_bytes())
    if damage == "truncated":
        binp.write_bytes(bytes(raw[:-2]))
    elif damage == "flipped":
        raw[10] ^= 0x40
        binp.write_bytes(bytes(raw))
    elif damage == "sidecar":
        meta.write_text('{"format": "shoestring-tokens", "vers')
    elif damage == "missing bin":
        binp.unlink()
    else:    # an id past the vocabulary, with a CRC that matches it
        ids = np.frombuffer(bytes(raw), "<u2").copy()
        ids[3] = tok.vocab_size + 7
        binp.write_bytes(ids.tobytes())
        m = json.loads(meta.read_text())
        m["crc32"] = tk._crc(ids)
        meta.write_text(json.dumps(m))
    enc, how, lines = cached(tok, [p], run)
    assert how == "encoded" and len(lines) == 1 and "damaged" in lines[0], lines
    assert enc.ids.tolist() == first.ids.tolist()
    assert cached(tok, [p], run)[1:] == ("cache", [])


def test_training_reads_the_cache_on_a_second_run_and_on_resume(tmp_path, tiny_corpus, capsys):
    small = ["--bpe-vocab-size", "300", "--embedding-dim", "16", "--gru-hidden-size", "16",
             "--num-experts", "3", "--seq-length", "16", "--batch-size", "4", "--no-chat",
             "--sample-every", "0", "--threads", "1", "--epochs", "3"]
    out = str(tmp_path / "run")
    argv = ["train", "--model-data", tiny_corpus, "--out-dir", out, "--max-steps", "2"] + small
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "tokens encoded" in err and os.path.isfile(os.path.join(out, "tokens.bin"))
    for n in ("last.json", "best.json", "metrics.jsonl"):      # a folder holding a run refuses
        os.unlink(os.path.join(out, n))                         # a new one (#17): clear it first
    assert main(argv) == 0                                      # a second run, same data
    assert "read from the token cache" in capsys.readouterr().err
    assert main(["train", "--checkpoint", os.path.join(out, "last.json"), "--max-steps", "4"]
                + small) == 0                                  # a resume
    assert "read from the token cache" in capsys.readouterr().err


def test_val_tokens_bounds_validation_and_says_so(tmp_path, tiny_corpus, capsys):
    from shoestring import trainer as tr

    small = ["--bpe-vocab-size", "300", "--embedding-dim", "16", "--gru-hidden-size", "16",
             "--num-experts", "3", "--seq-length", "8", "--batch-size", "2", "--no-chat",
             "--sample-every", "0", "--threads", "1", "--max-steps", "1"]
    seen = []
    orig = tr.Trainer.evaluate

    def spy(self):
        seen.append(len(self.val_tokens))
        return orig(self)
    tr.Trainer.evaluate = spy
    try:
        assert main(["train", "--model-data", tiny_corpus, "--out-dir", str(tmp_path / "a"),
                     "--val-tokens", "40"] + small) == 0
        err = capsys.readouterr().err
        assert "validation scores the first 40 tokens of" in err
        assert main(["train", "--model-data", tiny_corpus, "--out-dir", str(tmp_path / "b"),
                     "--val-tokens", "0"] + small) == 0
        err = capsys.readouterr().err
        assert "validation scores all" in err
    finally:
        tr.Trainer.evaluate = orig
    assert seen[0] == 41 and seen[1] > 41


def test_validation_bits_per_char_are_exact_for_what_is_scored(tmp_path, tok):
    """evaluate() divides by the characters of exactly the target tokens it scored."""
    import math

    from shoestring.config import TrainConfig
    from shoestring.params import ModelConfig
    from shoestring.trainer import Trainer

    ids = tok.encode_array(TEXT * 8)
    cfg = ModelConfig(V=tok.vocab_size, C=8, H=8, L=1, X=2, K=2)
    conf = TrainConfig(model=cfg, seq_length=7, batch_size=3, threads=1, epochs=1)
    val = ids[:100]
    t = Trainer(conf, cfg, tok, ids, val, out_dir=str(tmp_path))
    loss, _, bpc = t.evaluate()
    # the targets scored: every token after the first (the context), as one stream (MODEL.md §7)
    tgt = val[1:]
    assert bpc == pytest.approx(loss * len(tgt) / math.log(2) / tk.count_chars(tok, tgt),
                                rel=1e-12)
    t.net.close()


def test_validation_rule_reads_special_names_as_text_outside_chat_files(tmp_path):
    """specials="chat": a file without [USER]/[BOT] keeps "[EOS]" as characters (eval's rule);
    a chat file keeps its special tokens, also when a marker straddles two read chunks."""
    from shoestring.tokens import encode_files, file_is_chat_format
    tok = Tokenizer.train(texts=["the cat sat on the mat, he's gone and more text " * 20],
                          vocab_size=300)
    eos = tok.special_id("[EOS]")
    plain = tmp_path / "plain.txt"
    plain.write_text("he's gone.[EOS] and more text\n" * 50, "utf-8")
    assert eos in encode_files(tok, [str(plain)]).ids.tolist()
    got = encode_files(tok, [str(plain)], specials="chat").ids
    assert eos not in got.tolist()
    assert got.tolist() == tok.encode(plain.read_text("utf-8"), allow_special=False)
    chat = tmp_path / "chat.txt"
    text = "x" * 1021 + "[USER] hi [EOS]\n[BOT] hello [EOS]\n"
    chat.write_text(text, "utf-8")
    assert file_is_chat_format(str(chat), chunk_bytes=1024)    # "[USER]" straddles 1024
    assert not file_is_chat_format(str(plain), chunk_bytes=16)
    got = encode_files(tok, [str(chat)], specials="chat", chunk_bytes=1024).ids
    assert got.tolist() == tok.encode(text, allow_special=True) and eos in got.tolist()
