"""Scoring a text (MODEL.md §7): one stream at batch 1, state carried through the whole text,
every token predicted once (the first from [EOS]), sums in float64; against the numpy reference
model run over the whole text as one window."""
import math

import numpy as np
import pytest

from shoestring import evaluate, ref
from shoestring.params import ModelConfig, ParamLayout
from shoestring.tokenizer import Tokenizer

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was "
        "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.\n")


@pytest.fixture(scope="module")
def setup():
    tok = Tokenizer.train(texts=[TEXT * 3], vocab_size=300)
    cfg = ModelConfig(V=tok.vocab_size, C=12, H=16, L=2, X=3, K=2)
    params = ParamLayout(cfg).init(3)
    return tok, cfg, params


def test_score_matches_the_reference_model_over_one_window(setup):
    tok, cfg, params = setup
    ids = evaluate.encode_for_scoring(tok, TEXT)
    assert ids[0] == tok.special_id("[EOS]")
    np.testing.assert_array_equal(ids[1:], tok.encode_array(TEXT, allow_special=False))
    got = evaluate.score_tokens(cfg, params, ids, len(TEXT), window=7)
    P = ParamLayout(cfg).views(params.astype(np.float64))
    n = len(ids) - 1
    logits, _, _ = ref.model_forward(P, cfg, ids[None, :-1], np.zeros((cfg.L, 1, cfg.X, cfg.H)))
    lp = logits[0] - logits[0].max(axis=-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(axis=-1, keepdims=True))
    want = -lp[np.arange(n), ids[1:]].sum()
    assert got["tokens"] == n and got["chars"] == len(TEXT)
    assert got["nats"] == pytest.approx(want, rel=1e-5)
    assert got["bits_per_char"] == pytest.approx(want / math.log(2) / len(TEXT), rel=1e-5)
    assert got["nats_per_token"] == pytest.approx(want / n, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(want / n), rel=1e-5)
    assert got["state_resets"] == 0


def test_window_length_does_not_change_the_figure(setup):
    """The state is carried between C calls, so cutting the text differently changes nothing
    beyond float32 rounding."""
    tok, cfg, params = setup
    ids = evaluate.encode_for_scoring(tok, TEXT)
    a = evaluate.score_tokens(cfg, params, ids, len(TEXT), window=5)
    b = evaluate.score_tokens(cfg, params, ids, len(TEXT), window=1000)
    assert a["nats"] == pytest.approx(b["nats"], rel=1e-6)


def test_chat_text_keeps_its_special_tokens(setup):
    tok, cfg, params = setup
    chat = "[USER] hi [EOS]\n[BOT] hello [EOS]\n"
    ids = evaluate.encode_for_scoring(tok, chat)
    assert tok.special_id("[USER]") in ids[1:].tolist()
    plain = evaluate.encode_for_scoring(tok, "a literal [EOS] in a novel")
    assert tok.special_id("[EOS]") not in plain[1:].tolist()


def test_nothing_to_score_is_an_error(setup):
    tok, cfg, params = setup
    with pytest.raises(ValueError, match="nothing to score"):
        evaluate.score_tokens(cfg, params, np.array([2], np.int32), 0)
