"""evaluate.py: how every quality figure is measured (MODEL.md §7); `shoestring eval` uses it.

A text is scored as ONE stream at batch 1: the first token is predicted from `[EOS]` with a zero
state, every later token from everything before it, the recurrent state carried through the whole
text (reset only by the state guard, which is counted); the cross-entropy is summed in float64.
Bits per character = nats / ln 2 / characters of the text; perplexity is per token.

Special tokens are recognised in chat-format text (one that contains `[USER]` or `[BOT]`), as
in training, so that a chat transcript is scored the way the model reads it; in any other text
they are plain text (MODEL.md §7: a literal "[EOS]" in a novel is just characters).

The training loop validates with score_tokens too, so its figure and `shoestring eval` agree
on the same file by construction (tests/test_evaluate.py checks it end to end).

int8 weights (`shoestring eval --int8`, or an int8 export): score_decoded runs the same stream
through the decode step that chat and generation run (kernels.Decoder over the model's packed
weights, int8 matrices times int8-quantised vectors), one token at a time, with the state guard
at the same points (every `window` tokens), so the figure is the quality of what the user gets
and its difference from score_tokens is the quality cost of int8.
"""
import math

import numpy as np

from .model import Network
from .params import guard_state
from .tokens import is_chat_format

WINDOW = 256        # tokens per C call; the figure does not depend on it beyond float rounding


def encode_for_scoring(tok, text):
    """Token ids of text, [EOS] first (the context of the first prediction)."""
    ids = tok.encode_array(text, allow_special=is_chat_format(text)).astype(np.int32)
    eos = tok.special_id("[EOS]")
    return np.concatenate([np.array([eos], np.int32), ids])


def _result(total, n, chars, resets):
    """The result dict from the summed nats `total` over n tokens of a text of `chars`."""
    nats = total / n
    return {"bits_per_char": total / math.log(2) / chars if chars > 0 else float("nan"),
            "nats_per_token": nats, "perplexity": math.exp(min(nats, 50.0)), "tokens": n,
            "chars": int(chars), "nats": total, "state_resets": resets}


def score_tokens(cfg, params, ids, chars, threads=1, window=WINDOW):
    """Score ids[1:] given ids[:-1] (ids[0] is [EOS]) as one stream carried through.

    -> {"bits_per_char", "nats_per_token", "perplexity", "tokens", "chars", "nats", "state_resets"}
    """
    n = int(len(ids)) - 1
    if n < 1:
        raise ValueError("nothing to score: the text has no tokens")
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    h = np.zeros((cfg.L, 1, cfg.X, cfg.H), np.float32)
    total, resets, nets = 0.0, 0, {}
    pos = 0
    while pos < n:
        T = min(window, n - pos)
        net = nets.get(T)
        if net is None:
            net = nets[T] = Network(cfg, params, 1, T, 1, train=False)
        inp = ids[pos:pos + T].reshape(1, T)
        tgt = ids[pos + 1:pos + 1 + T].reshape(1, T)
        total += net.forward(inp, tgt, h)
        resets += guard_state(h)
        pos += T
    for net in nets.values():
        net.close()
    return _result(total, n, chars, resets)


def score_decoded(model, ids, chars, window=WINDOW):
    """score_tokens through the decode step of `model` (an inference.Model, float32 or int8
    weights: exactly the arithmetic of chat and generation), token by token; the same result
    dict. The state guard runs every `window` tokens, as in score_tokens."""
    n = int(len(ids)) - 1
    if n < 1:
        raise ValueError("nothing to score: the text has no tokens")
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    dec = model.decoder()
    step, logits = dec.step, dec.logits
    buf = np.empty((min(window, n), model.cfg.V), np.float32)     # (T,V) logits of one window
    total, resets, pos = 0.0, 0, 0
    while pos < n:
        T = min(window, n - pos)
        for i, t in enumerate(ids[pos:pos + T].tolist()):
            step(t)
            buf[i] = logits
        lg = buf[:T].astype(np.float64)
        top = lg.max(axis=1)
        lse = top + np.log(np.exp(lg - top[:, None]).sum(axis=1))
        total += float((lse - lg[np.arange(T), ids[pos + 1:pos + 1 + T]]).sum())
        resets += guard_state(dec.state[:, None])
        pos += T
    return _result(total, n, chars, resets)


def score_model(model, text):
    """The figure of `shoestring eval` for an inference.Model: score_tokens (the training's
    forward pass) for float32 weights, score_decoded for int8 ones."""
    ids = encode_for_scoring(model.tokenizer, text)
    if model.int8:
        return score_decoded(model, ids, len(text))
    return score_tokens(model.cfg, model.params, ids, len(text))
