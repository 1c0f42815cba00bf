"""Issue #11 in the training loop: the regularisers through the whole C network against the numpy
reference, tied embeddings, weight averaging, the time budget, exact resume with all of them,
and `shoestring eval` agreeing with the training loop's validation figure on the same file."""
import json
import os

import numpy as np
import pytest

from shoestring import TrainConfig, ref
from shoestring import trainer as train_mod
from shoestring.checkpoint import read_checkpoint
from shoestring.cli import main
from shoestring.model import Masks, Network, dropout_mask
from shoestring.params import ModelConfig, ParamLayout
from test_train import _setup, _train, straight_and_resumed

REG = ["--dropout", "0.2", "--embedding-dropout", "0.2", "--weight-drop", "0.2", "--ema", "0.9"]


# ---- the C network with masks against the reference ---------------------------------------------
@pytest.mark.parametrize("C,K,tie,cap", [(12, 3, False, 0.0), (10, 2, False, 1.5),
                                         (12, 2, True, 2.0)], ids=["dense", "proj-top2-cap", "tied-cap"])
def test_network_with_masks_matches_reference(isa, C, K, tie, cap):
    cfg = ModelConfig(V=29, C=C, H=12, L=2, X=3, K=K, cap=cap, tie_embeddings=tie)
    B, T = 3, 7
    lay, params, tokens, targets, h0 = _setup(cfg, B, T)
    assert ("Wo" in lay.names()) != tie
    rng = np.random.default_rng(9)
    masks = Masks(embedding=dropout_mask(rng, (cfg.V,), 0.3),
                  inputs=[dropout_mask(rng, (B, cfg.layer_input(l)), 0.3) for l in range(cfg.L)],
                  head=dropout_mask(rng, (B, cfg.H), 0.3))
    wch = [dropout_mask(rng, (cfg.X, cfg.H, cfg.H), 0.3) for _ in range(cfg.L)]
    P = lay.views(params.astype(np.float64))
    ref_masks = {"embedding": masks.embedding.astype(np.float64),
                 "inputs": [m.astype(np.float64) for m in masks.inputs],
                 "head": masks.head.astype(np.float64),
                 "Wch": [m.astype(np.float64) for m in wch]}
    loss_ref, grads_ref, hT_ref = ref.model_loss_and_grads(P, cfg, tokens, targets,
                                                           h0.astype(np.float64), ref_masks)
    net = Network(cfg, params, B, T, threads=2, weight_drop=True)
    net.set_weight_masks(wch)
    h = h0.copy()
    net.zero_grads()
    loss = net.forward_backward(tokens, targets, h, 1.0 / (B * T), masks) / (B * T)
    grads = lay.zeros()
    net.reduce_grads(grads)
    net.close()
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    np.testing.assert_allclose(h, hT_ref, rtol=1e-4, atol=1e-5)
    G = lay.views(grads)
    for name in lay.names():
        np.testing.assert_allclose(G[name], grads_ref[name], rtol=2e-3, atol=2e-5, err_msg=name)
    # the masks act only in training: a forward without gradients ignores them
    h2 = h0.copy()
    plain = Network(cfg, params, B, T, train=False).forward(tokens, targets, h2)
    P_ref, _, _ = ref.model_loss_and_grads(P, cfg, tokens, targets, h0.astype(np.float64))
    assert plain / (B * T) == pytest.approx(P_ref, rel=1e-5)


def test_tied_embeddings_need_equal_widths():
    from shoestring.errors import ShoestringError
    with pytest.raises(ShoestringError, match="tie_embeddings needs C == H"):
        ModelConfig(C=8, H=12, tie_embeddings=True)
    assert ParamLayout(ModelConfig(tie_embeddings=True)).n == ParamLayout(ModelConfig()).n - 850 * 96


# ---- training end to end ------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2])
def test_resume_with_regularisers_and_ema_is_bitwise(tmp_path, tiny_corpus, threads, monkeypatch):
    from shoestring import optim
    monkeypatch.setattr(optim, "BLOCK", 1024)    # so 2 threads split the reduction and AdamW
    monkeypatch.setattr(optim, "PARALLEL_MIN", 0)
    common = ["--epochs", "3", "--threads", str(threads), "--lr", "0.005", "--eval-every", "5",
              "--max-steps", "12"] + REG
    straight, half = straight_and_resumed(tmp_path, tiny_corpus, common, threads, monkeypatch, 7)
    a = read_checkpoint(os.path.join(straight, "last.json"))
    b = read_checkpoint(os.path.join(half, "last.json"))
    for key in ("m", "v", "train_params"):
        np.testing.assert_array_equal(a.optimizer[key], b.optimizer[key], err_msg=key)
    np.testing.assert_array_equal(a.params, b.params)          # the average
    assert a.training["rng"] == b.training["rng"]
    # the average is not the trained weights, and the regularisers changed the run
    assert not np.array_equal(a.params, a.optimizer["train_params"])
    rc, plain = _train(tmp_path, tiny_corpus, "plain", common[:-len(REG)])
    p = read_checkpoint(os.path.join(plain, "last.json"))
    assert "train_params" not in p.optimizer
    assert not np.array_equal(p.params, a.optimizer["train_params"])


PLAIN_WITH_MARKERS = ("No, no, he's gone.[EOS]\nWhiles thou art waking.[EOS] A literal [PAD] "
                      "and [UNK] in a play are characters.\n" * 3)
CHAT_VAL = "[USER] what is 3 plus 4 [EOS]\n[BOT] 3 plus 4 is 7 [EOS]\n\n" * 3


@pytest.mark.parametrize("text", [CHAT_VAL, PLAIN_WITH_MARKERS], ids=["chat", "plain-with-markers"])
def test_eval_agrees_with_training_validation(tmp_path, tiny_corpus, capsys, text):
    """Also on a text that is not in the chat format but holds literal special-token names
    (as nano-shakespeare's tail does): both read them as characters (MODEL.md §7)."""
    val = tmp_path / "val.txt"
    val.write_text(text, "utf-8")
    rc, out = _train(tmp_path, tiny_corpus, "run", ["--max-steps", "20", "--eval-every", "10",
                                                   "--validation-data", str(val), "--ema", "0.9"])
    assert rc == 0
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    best = min(rows, key=lambda r: r["val_loss"])
    capsys.readouterr()
    assert main(["eval", "--checkpoint", os.path.join(out, "best.json"), "--data", str(val),
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(got) >= {"bits_per_char", "nats_per_token", "tokens", "chars"}
    assert got["chars"] == len(val.read_text("utf-8"))
    assert got["bits_per_char"] == pytest.approx(best["bits_per_char"], rel=1e-12)
    assert got["nats_per_token"] == pytest.approx(best["val_loss"], rel=1e-12)
    assert main(["eval", "--checkpoint", os.path.join(out, "best.json"), "--data", str(val)]) == 0
    assert "bits/char" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", os.path.join(out, "best.json"),
                 "--data", str(tmp_path / "missing.txt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]


def test_time_budget_plans_the_schedule_and_resume_keeps_it(tmp_path, tiny_corpus, monkeypatch):
    """--minutes: the run stops when the budget is spent, with the cosine planned to end there;
    the plan (total steps, warm-up) and the time spent are kept in the checkpoint."""
    clock = [1000.0]
    monkeypatch.setattr(train_mod.time, "time", lambda: clock[0])
    real_step = train_mod.Trainer.step

    def timed_step(self):
        clock[0] += 0.06                      # 0.06 s a step: a 0.1-minute budget is 100 steps
        return real_step(self)

    monkeypatch.setattr(train_mod.Trainer, "step", timed_step)
    rc, out = _train(tmp_path, tiny_corpus, "run", ["--minutes", "0.1"])
    assert rc == 0
    ck = read_checkpoint(os.path.join(out, "last.json"))
    tr = ck.training
    assert 90 <= tr["step"] <= 101
    assert tr["planned_total"] == pytest.approx(100, abs=3)
    assert tr["elapsed_s"] == pytest.approx(6.0, abs=0.2)
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    assert len(rows) >= 15                    # about 20 validations in a budget
    assert rows[-1]["lr"] == pytest.approx(0.1 * TrainConfig().lr, rel=0.2)  # the cosine's floor
    assert ck.config["train"]["minutes"] == 0.1
    # resuming a spent budget trains nothing; a larger budget is planned again from where it is
    resume = ["train", "--checkpoint", os.path.join(out, "last.json"), "--no-chat", "--quiet",
              "--sample-every", "0"]
    assert main(resume) == 0
    assert read_checkpoint(os.path.join(out, "last.json")).training["step"] == tr["step"]
    assert main(resume + ["--minutes", "0.2"]) == 0
    tr2 = read_checkpoint(os.path.join(out, "last.json")).training
    assert tr2["step"] == pytest.approx(200, abs=8)
    assert tr2["elapsed_s"] == pytest.approx(12.0, abs=0.5)


def test_cap_keeps_the_state_bounded_in_training(tmp_path, tiny_corpus):
    """One active expert at a high learning rate resets the uncapped state every few windows;
    the capped model never needs the guard."""
    rc, out = _train(tmp_path, tiny_corpus, "run", ["--max-steps", "60", "--lr", "0.02",
                                                   "--active-experts", "1", "--eval-every", "30"])
    assert rc == 0
    ck = read_checkpoint(os.path.join(out, "last.json"))
    assert ck.config["model"]["cap"] == 4.0
    assert ck.training["state_resets"] == 0
    state = ck.state
    assert state.max() <= 4.0 and state.min() >= -0.17


def test_checkpoint_without_cap_loads_as_uncapped(tmp_path, tiny_corpus):
    rc, out = _train(tmp_path, tiny_corpus, "run", ["--max-steps", "2", "--cap", "0"])
    assert rc == 0
    path = os.path.join(out, "last.json")
    text = open(path, encoding="ascii").read()
    assert '"cap": 0.0, ' in text
    old = text.replace('"cap": 0.0, ', "").replace(', "tie_embeddings": false', "")
    with open(path, "w", encoding="ascii") as f:
        f.write(old)
    ck = read_checkpoint(path)
    assert "cap" not in ck.config["model"]
    from shoestring.inference import load
    assert load(path).cfg.cap == 0.0
