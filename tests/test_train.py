"""Training: the C model against the numpy reference, learning, resume equivalence, CLI errors."""
import json
import math
import os
import re

import numpy as np
import pytest

from shoestring import ref
from shoestring import trainer as train_mod
from shoestring.checkpoint import read_checkpoint
from shoestring.cli import main
from shoestring.dataset import Windows
from shoestring.errors import DataError
from shoestring.model import Network, split_batch
from shoestring.optim import lr_at
from shoestring.params import ModelConfig, ParamLayout

SMALL = ["--bpe-vocab-size", "300", "--embedding-dim", "16", "--gru-hidden-size", "16",
         "--gru-layers", "2", "--num-experts", "3", "--seq-length", "16", "--batch-size", "4",
         "--no-chat", "--quiet", "--sample-every", "0"]


# ---- schedule and data windows ------------------------------------------------------------------
def test_lr_schedule_warmup_then_cosine():
    assert lr_at(0, 1.0, 100, 10) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 100, 10) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 100, 10) == pytest.approx(1.0)
    assert lr_at(100, 1.0, 100, 10) == pytest.approx(0.1)      # floor 10% of peak
    mid = lr_at(55, 1.0, 100, 10)
    assert mid == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(70, 1.0, 100, 10, "constant") == 1.0


def test_split_batch_is_contiguous_and_complete():
    for B in (1, 3, 16):
        for S in (1, 2, 5):
            parts = split_batch(B, S)
            assert parts[0][0] == 0 and parts[-1][1] == B
            assert all(a < b for a, b in parts)
            assert all(parts[i][1] == parts[i + 1][0] for i in range(len(parts) - 1))


def test_windows_read_the_ring_in_order():
    data = np.arange(101, dtype=np.int32)
    w = Windows(data, B=4, T=5)
    assert w.stream_len == 25 and w.count == 5
    tok, tgt = w.window(1, offset=0)
    assert tok.shape == (4, 5)
    assert list(tok[0]) == [5, 6, 7, 8, 9] and list(tok[2]) == [55, 56, 57, 58, 59]
    assert (tgt == (tok + 1) % 101).all()
    tok, _ = w.window(0, offset=99)
    assert list(tok[0]) == [99, 100, 0, 1, 2]            # wraps around the ring
    with pytest.raises(DataError, match="fewer than one window"):
        Windows(np.arange(20, dtype=np.int32), B=4, T=5)


# ---- the C model against the numpy reference ----------------------------------------------------
def _setup(cfg, B, T, seed=0):
    lay = ParamLayout(cfg)
    params = lay.init(seed)
    rng = np.random.default_rng(seed + 1)
    params += 0.1 * rng.standard_normal(params.shape).astype(np.float32)  # non-trivial biases
    tokens = rng.integers(0, cfg.V, (B, T)).astype(np.int32)
    targets = rng.integers(0, cfg.V, (B, T)).astype(np.int32)
    h0 = (0.5 * rng.standard_normal((cfg.L, B, cfg.X, cfg.H))).astype(np.float32)
    return lay, params, tokens, targets, h0


@pytest.mark.parametrize("C,K", [(12, 3), (12, 2), (10, 1), (10, 3)], ids=["dense", "top2", "proj-top1", "proj-dense"])
def test_network_matches_numpy_reference(isa, C, K):
    cfg = ModelConfig(V=29, C=C, H=12, L=2, X=3, K=K)
    B, T = 3, 7
    lay, params, tokens, targets, h0 = _setup(cfg, B, T)
    P = lay.views(params.astype(np.float64))
    loss_ref, grads_ref, hT_ref = ref.model_loss_and_grads(P, cfg, tokens, targets, h0.astype(np.float64))

    net = Network(cfg, params, B, T, threads=1)
    h = h0.copy()
    net.zero_grads()
    loss = net.forward_backward(tokens, targets, h, 1.0 / (B * T)) / (B * T)
    grads = lay.zeros()
    net.reduce_grads(grads)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    np.testing.assert_allclose(h, hT_ref, rtol=1e-4, atol=1e-5)
    G = lay.views(grads)
    for name in lay.names():
        np.testing.assert_allclose(G[name], grads_ref[name], rtol=2e-3, atol=2e-5, err_msg=name)


def test_sharded_network_is_deterministic_and_matches_one_thread():
    cfg = ModelConfig(V=31, C=16, H=16, L=2, X=4, K=2)
    B, T = 6, 9
    lay, params, tokens, targets, h0 = _setup(cfg, B, T, seed=3)
    results = []
    for threads in (1, 3, 3):
        net = Network(cfg, params, B, T, threads=threads)
        h = h0.copy()
        net.zero_grads()
        loss = net.forward_backward(tokens, targets, h, 1.0 / (B * T))
        g = lay.zeros()
        net.reduce_grads(g)
        net.close()
        results.append((loss, h, g))
    (l1, h1, g1), (l3, h3, g3), (l3b, h3b, g3b) = results
    assert l3 == l3b and (h3 == h3b).all() and (g3 == g3b).all()       # bitwise, same threads
    assert l3 == pytest.approx(l1, rel=1e-6)
    np.testing.assert_allclose(g3, g1, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(h3, h1, rtol=1e-5, atol=1e-6)   # kernels may block by shard size


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_forward_backward_zero_is_zero_grads_first(threads):
    """zero=True (each shard zeroes its own buffer on its thread) gives the bits of zero_grads
    then forward_backward, over two windows (the second accumulates)."""
    cfg = ModelConfig(V=31, C=16, H=16, L=2, X=4, K=2)
    B, T = 6, 9
    lay, params, tokens, targets, h0 = _setup(cfg, B, T, seed=5)
    out = []
    for zero in (False, True):
        net = Network(cfg, params, B, T, threads=threads)
        for sh in net.shards:
            sh.grads.fill(7.0)                         # stale gradients from an earlier step
        h = h0.copy()
        if not zero:
            net.zero_grads()
        losses = [net.forward_backward(tokens, targets, h, 0.5, zero=zero),
                  net.forward_backward(targets, tokens, h, 0.5)]
        g = lay.zeros()
        net.reduce_grads(g)
        net.close()
        out.append((losses, h, g))
    (la, ha, ga), (lb, hb, gb) = out
    assert la == lb and np.array_equal(ha, hb)
    assert np.array_equal(ga.view(np.int32), gb.view(np.int32)) and np.all(np.isfinite(ga))


def test_worker_error_waits_for_every_shard():
    """An error on one shard propagates only after the other shards' calls have finished."""
    import threading
    import time
    cfg = ModelConfig(V=31, C=16, H=16, L=2, X=4, K=2)
    net = Network(cfg, ParamLayout(cfg).init(0), 3, 4, threads=3)
    done = []

    def fn(i):
        if i == 2:                                     # the calling thread's item fails at once
            raise ValueError("boom")
        time.sleep(0.05)
        done.append((i, threading.current_thread() is not threading.main_thread()))

    with pytest.raises(ValueError, match="boom"):
        net.run(fn, [(0,), (1,), (2,)])
    assert sorted(done) == [(0, True), (1, True)]      # the pool ran the others, and they ended
    assert net.run(lambda i: i * i, [(1,), (2,), (3,)]) == [1, 4, 9]
    net.close()


# ---- training end to end ------------------------------------------------------------------------
def _train(tmp_path, corpus, name, extra):
    out = str(tmp_path / name)
    rc = main(["train", "--model-data", corpus, "--out-dir", out] + SMALL + extra)
    return rc, out


def test_tiny_corpus_is_learned(tmp_path, tiny_corpus):
    rc, out = _train(tmp_path, tiny_corpus, "run", ["--max-steps", "150", "--lr", "0.01",
                                                   "--epochs", "50", "--eval-every", "50"])
    assert rc == 0
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [50, 100, 150]
    first_loss = math.log(300)                       # uniform over the vocabulary at the start
    assert rows[-1]["val_loss"] < 0.5 * first_loss, rows
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    for key in ("epoch", "perplexity", "bits_per_char", "lr", "grad_norm", "tokens_per_s"):
        assert key in rows[-1]
    ck = read_checkpoint(os.path.join(out, "last.json"))
    assert ck.training["step"] == 150
    assert os.path.isfile(os.path.join(out, "best.json"))
    assert os.path.isfile(os.path.join(out, "config.json"))


def straight_and_resumed(tmp_path, corpus, common, threads, monkeypatch, stop_at):
    """Train `common` straight, and again interrupted after step stop_at (as by Ctrl-C), saved
    and resumed naming only the checkpoint (and threads). -> (straight dir, resumed dir)."""
    rc, straight = _train(tmp_path, corpus, "straight", common)
    assert rc == 0
    real_step = train_mod.Trainer.step

    def step_then_interrupt(self):
        out = real_step(self)
        if self.opt.step == stop_at:
            self.stop_requested = True          # what the SIGINT handler does
        return out

    monkeypatch.setattr(train_mod.Trainer, "step", step_then_interrupt)
    rc, half = _train(tmp_path, corpus, "half", common)
    assert rc == 130
    assert read_checkpoint(os.path.join(half, "last.json")).training["step"] == stop_at
    monkeypatch.setattr(train_mod.Trainer, "step", real_step)
    # the resume names only the checkpoint (and threads): the plan comes from the checkpoint
    rc = main(["train", "--checkpoint", os.path.join(half, "last.json"), "--no-chat", "--quiet",
               "--sample-every", "0", "--threads", str(threads)])
    assert rc == 0
    return straight, half


@pytest.mark.parametrize("threads", [1, 2])
def test_resume_is_bitwise_identical(tmp_path, tiny_corpus, threads, monkeypatch):
    """N steps straight == N/2 steps, interrupted (as by Ctrl-C), saved, resumed, N/2 steps."""
    from shoestring import optim
    monkeypatch.setattr(optim, "BLOCK", 1024)    # so 2 threads split the reduction and AdamW
    monkeypatch.setattr(optim, "PARALLEL_MIN", 0)
    common = ["--epochs", "3", "--threads", str(threads), "--lr", "0.005", "--eval-every", "5",
              "--max-steps", "12"]
    straight, half = straight_and_resumed(tmp_path, tiny_corpus, common, threads, monkeypatch, 6)
    a = read_checkpoint(os.path.join(straight, "last.json"))
    b = read_checkpoint(os.path.join(half, "last.json"))
    assert a.training["step"] == b.training["step"] == 12
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.optimizer["m"], b.optimizer["m"])
    np.testing.assert_array_equal(a.optimizer["v"], b.optimizer["v"])
    assert a.state.tobytes() == b.state.tobytes()      # bit for bit
    assert a.training["rng"] == b.training["rng"]


def test_same_seed_same_weights(tmp_path, tiny_corpus):
    _, a = _train(tmp_path, tiny_corpus, "a", ["--max-steps", "3", "--seed", "7"])
    _, b = _train(tmp_path, tiny_corpus, "b", ["--max-steps", "3", "--seed", "7"])
    _, c = _train(tmp_path, tiny_corpus, "c", ["--max-steps", "3", "--seed", "8"])
    pa, pb, pc = (read_checkpoint(os.path.join(d, "last.json")).params for d in (a, b, c))
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa, pc)


# ---- command-line errors ------------------------------------------------------------------------
def _err(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_missing_data_is_one_line(tmp_path, capsys):
    rc, err = _err(capsys, ["train", "--model-data", str(tmp_path / "nope.txt")] + SMALL)
    assert rc == 1 and len(err) == 1 and "not found" in err[0] and "Traceback" not in err[0]


def test_empty_data(tmp_path, capsys):
    p = tmp_path / "empty.txt"
    p.write_text("  \n", encoding="utf-8")
    rc, err = _err(capsys, ["train", "--model-data", str(p)] + SMALL)
    assert rc == 1 and len(err) == 1 and "empty" in err[0]


def test_data_shorter_than_one_window(tmp_path, capsys):
    p = tmp_path / "short.txt"
    p.write_text("[USER] hi [EOS]\n[BOT] hello there [EOS]\n" * 3, encoding="utf-8")
    rc, err = _err(capsys, ["train", "--model-data", str(p), "--out-dir", str(tmp_path / "o")] + SMALL)
    assert rc == 1 and len(err) == 1 and "fewer than one window" in err[0]


@pytest.mark.parametrize("flags", [["--batch-size", "0"], ["--seq-length", "-3"],
                                   ["--embedding-dim", "x"], ["--lr", "nan"], ["--bogus"]])
def test_usage_errors_exit_2(tmp_path, capsys, tiny_corpus, flags):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--model-data", tiny_corpus] + flags)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_active_experts_above_experts(tmp_path, capsys, tiny_corpus):
    rc, err = _err(capsys, ["train", "--model-data", tiny_corpus, "--num-experts", "2",
                            "--active-experts", "3"])
    assert rc == 1 and len(err) == 1 and "--active-experts" in err[0]


def test_resume_flag_contradicting_checkpoint(tmp_path, capsys, tiny_corpus):
    rc, out = _train(tmp_path, tiny_corpus, "r", ["--max-steps", "2"])
    assert rc == 0
    capsys.readouterr()
    rc, err = _err(capsys, ["train", "--checkpoint", os.path.join(out, "last.json"),
                            "--gru-hidden-size", "32", "--no-chat"])
    assert rc == 1 and len(err) == 1 and "contradicts the checkpoint" in err[0]


def test_divergence_stops_with_clear_error(tmp_path, capsys, tiny_corpus):
    rc, out = _train(tmp_path, tiny_corpus, "d", ["--max-steps", "60", "--lr", "1e4",
                                                 "--grad-clip", "0", "--eval-every", "1",
                                                 "--lr-schedule", "constant", "--warmup-steps", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert "became" in err[-1] and "last good checkpoint" in err[-1]
    if os.path.exists(os.path.join(out, "last.json")):
        ck = read_checkpoint(os.path.join(out, "last.json"))   # still loadable, finite
        assert np.isfinite(ck.params).all()


def test_max_minutes_stops_saves_and_resumes(tmp_path, tiny_corpus, capsys):
    rc, out = _train(tmp_path, tiny_corpus, "m", ["--max-minutes", "0.0001", "--epochs", "50"])
    assert rc == 0
    ck = read_checkpoint(os.path.join(out, "last.json"))
    done = ck.training["step"]
    assert 1 <= done < 100                                  # far short of 50 epochs
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    assert rows[-1]["step"] == done and math.isfinite(rows[-1]["val_loss"])
    rc = main(["train", "--checkpoint", os.path.join(out, "last.json"), "--max-steps",
               str(done + 2), "--no-chat", "--quiet"])
    assert rc == 0
    assert read_checkpoint(os.path.join(out, "last.json")).training["step"] == done + 2


def test_max_minutes_alone_is_the_time_budget(tmp_path, tiny_corpus):
    """--max-minutes with no other plan plans the run to end then (not the default 5 minutes);
    with --epochs it stays a plain stop."""
    rc, out = _train(tmp_path, tiny_corpus, "a", ["--max-minutes", "0.0002"])
    assert rc == 0
    assert read_checkpoint(os.path.join(out, "last.json")).config["train"]["minutes"] == 0.0002
    rc, out = _train(tmp_path, tiny_corpus, "b", ["--max-minutes", "0.0002", "--epochs", "3"])
    assert rc == 0
    train = read_checkpoint(os.path.join(out, "last.json")).config["train"]
    assert train["minutes"] is None and train["epochs"] == 3


def test_a_budget_shorter_than_the_start_up_still_leaves_a_checkpoint(tmp_path, tiny_corpus,
                                                                     capsys):
    """A new run takes its first step whatever the budget: a budget spent before the loop (here
    6 microseconds) once ended the run with no step and no checkpoint, while it said where its
    checkpoints were (seen under the sanitizers on a slow machine)."""
    rc, out = _train(tmp_path, tiny_corpus, "a", ["--max-minutes", "0.000001"])
    assert rc == 0
    for name in ("last.json", "best.json"):
        assert read_checkpoint(os.path.join(out, name)).training["step"] == 1
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1]
    # its progress line shows no total before the plan (not a placeholder of 10**12 steps)
    capsys.readouterr()
    loud = [a for a in SMALL if a != "--quiet"]
    assert main(["train", "--model-data", tiny_corpus, "--out-dir", str(tmp_path / "b"),
                 "--max-minutes", "0.000001"] + loud) == 0
    err = capsys.readouterr().err
    assert re.search(r"^step 1 loss ", err, re.M) and "1,000,000,000,000" not in err, err


def test_carried_state_stays_bounded_at_init():
    """An untrained model's state, carried window to window, must not grow (MODEL.md §2 hazard)."""
    cfg = ModelConfig(V=50, C=16, H=16, L=2, X=3, K=3)
    B, T = 4, 16
    lay = ParamLayout(cfg)
    params = lay.init(0)
    net = Network(cfg, params, B, T, threads=1, train=False)
    rng = np.random.default_rng(0)
    h = np.zeros((cfg.L, B, cfg.X, cfg.H), np.float32)
    norms = []
    for _ in range(30):
        tok = rng.integers(0, cfg.V, (B, T)).astype(np.int32)
        net.forward(tok, tok, h)
        norms.append(float(np.sqrt((h.astype(np.float64) ** 2).sum(axis=(0, 2, 3))).max()))
    assert max(norms) < 50, norms
    assert norms[-1] < 2 * norms[4], norms


def test_resume_accepts_the_vocab_size_asked_for(tmp_path, tiny_corpus, capsys):
    """The tiny corpus runs out of merges below 300: repeating the original command with
    --checkpoint must not call --bpe-vocab-size 300 a contradiction."""
    rc, out = _train(tmp_path, tiny_corpus, "v", ["--max-steps", "2"])
    assert rc == 0
    ck = read_checkpoint(os.path.join(out, "last.json"))
    assert ck.config["model"]["V"] < 300
    rc = main(["train", "--checkpoint", os.path.join(out, "last.json"), "--max-steps", "3",
               "--model-data", tiny_corpus] + SMALL)
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()            # its one line: where the checkpoints went
    rc, err = _err(capsys, ["train", "--checkpoint", os.path.join(out, "last.json"),
                            "--bpe-vocab-size", "200", "--no-chat"])
    assert rc == 1 and "contradicts the checkpoint" in err[0]


def test_stale_temp_files_of_a_killed_save_are_removed(tmp_path, tiny_corpus):
    out = tmp_path / "s"
    out.mkdir()
    dead = out / ".last.json.999999999.0123abcd.tmp"       # no such process
    live = out / (".last.json.%d.0123abcd.tmp" % os.getpid())
    other = out / "notes.tmp"
    for p in (dead, live, other):
        p.write_text("partial", encoding="utf-8")
    rc = main(["train", "--model-data", tiny_corpus, "--out-dir", str(out), "--max-steps", "1"]
              + SMALL)
    assert rc == 0
    assert not dead.exists()
    assert live.exists() and other.exists()


def test_guard_state_resets_only_runaway_streams():
    from shoestring.params import STATE_GUARD, guard_state

    h = np.ones((2, 3, 4, 5), np.float32)
    h[:, 1] = 1e4                       # stream 1 ran away
    h[0, 2, 0, 0] = np.nan              # stream 2 is not finite
    assert guard_state(h) == 2
    assert (h[:, 1] == 0).all() and (h[:, 2] == 0).all() and (h[:, 0] == 1).all()
    assert guard_state(h) == 0
    single = np.full((2, 4, 5), STATE_GUARD, np.float32)   # a decoder's (L,X,H) state
    assert guard_state(single[:, None]) == 1 and (single == 0).all()


def test_chat_session_guards_its_carried_state(tmp_path):
    from shoestring.inference import Model
    from shoestring.tokenizer import Tokenizer

    import conftest
    tok = Tokenizer.train(texts=[conftest.TINY_CHAT], vocab_size=280)
    cfg = ModelConfig(V=tok.vocab_size, C=8, H=8, L=1, X=2, K=2)
    model = Model(cfg, ParamLayout(cfg).init(0), tok)
    chat = model.chat(max_response=3, temperature=0.0)
    chat.send("hi")
    assert chat.state_resets == 0
    chat._dec.state[...] = 1e6             # as if the state had run away
    chat.send("hi")
    assert chat.state_resets == 1
    assert np.abs(chat._dec.state).max() < 1e3


def test_parameter_count_is_exact_beyond_32_bits():
    """Sizes are Python ints (np.prod wraps at 2**31 on 32-bit ARM, which let a terabyte
    model through the memory check there)."""
    cfg = ModelConfig(V=10, C=65536, H=65536, L=1, X=3, K=3)
    lay = ParamLayout(cfg)
    per_layer = 3 * 65536 + 3 * 65536 * 65536 * 3 + 3 * 65536 * 2 + 65536 + 3
    assert lay.n == 10 * 65536 + per_layer + 10 * 65536 + 10
    assert isinstance(lay.n, int) and lay.n > 2 ** 31


# ---- threads: reduction and AdamW ---------------------------------------------------------------
def test_split_blocks_cuts_on_block_boundaries():
    from shoestring.optim import BLOCK, split_blocks
    assert split_blocks(10, 4) == [(0, 10)]                        # one block: one range
    for n in (BLOCK + 1, 3 * BLOCK, 7 * BLOCK + 5):
        for parts in (1, 2, 3, 16):
            r = split_blocks(n, parts)
            assert r[0][0] == 0 and r[-1][1] == n and len(r) == min(parts, -(-n // BLOCK))
            assert all(a[1] == b[0] for a, b in zip(r, r[1:]))
            assert all(lo % BLOCK == 0 and hi > lo for lo, hi in r)


def test_small_buffers_stay_on_one_thread(monkeypatch):
    from shoestring import optim
    n = ParamLayout(ModelConfig()).n                   # the default model: one thread
    assert n < optim.PARALLEL_MIN and optim.thread_ranges(n, 2) == [(0, n)]
    big = optim.PARALLEL_MIN + 5
    assert optim.thread_ranges(big, 2) == optim.split_blocks(big, 2) and len(
        optim.split_blocks(big, 2)) == 2
    monkeypatch.setattr(optim, "PARALLEL_MIN", 0)
    assert optim.thread_ranges(n, 2) == optim.split_blocks(n, 2)


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_reduction_is_bitwise_the_shard_order_sum(threads, monkeypatch):
    from shoestring import optim
    monkeypatch.setattr(optim, "PARALLEL_MIN", 0)      # split the reduction however small
    cfg = ModelConfig()                                # 499,486 parameters: 8 blocks
    lay = ParamLayout(cfg)
    net = Network(cfg, lay.init(0), threads, 2, threads)
    rng = np.random.default_rng(threads)
    for sh in net.shards:
        sh.grads[...] = rng.standard_normal(lay.n, dtype=np.float32) * 10.0 ** rng.integers(-4, 4)
    out = lay.zeros()
    net.reduce_grads(out)
    want = net.shards[0].grads.copy()
    for sh in net.shards[1:]:
        want += sh.grads                               # the order the reduction defines
    net.close()
    assert np.array_equal(out.view(np.int32), want.view(np.int32))


@pytest.mark.parametrize("parts", [2, 3, 5])
@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_threaded_adamw_is_bitwise_the_single_thread_update(parts, clip, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from shoestring import optim
    from shoestring.optim import BLOCK, AdamW, block_sumsq
    monkeypatch.setattr(optim, "PARALLEL_MIN", 0)      # split the update however small
    n = 4 * BLOCK + 1237                               # ranges end inside SIMD vectors
    n_decay = 2 * BLOCK + 77                           # the decay boundary inside a range
    rng = np.random.default_rng(parts)
    p0 = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32) * 0.01

    def run_update(run, k):
        opt = AdamW(n, n_decay, weight_decay=0.1)
        opt.m[...] = rng_m
        opt.v[...] = rng_v
        p = p0.copy()
        norms = [opt.update(p, g, 1e-2, clip, run, k) for _ in range(3)]
        return p, opt.m, opt.v, norms
    rng_m = rng.standard_normal(n, dtype=np.float32) * 0.01
    rng_v = np.abs(rng.standard_normal(n, dtype=np.float32)) * 1e-4
    with ThreadPoolExecutor(parts) as pool:
        def run(fn, items):
            return [f.result() for f in [pool.submit(fn, *a) for a in items]]
        threaded = run_update(run, parts)
    single = run_update(None, 1)
    for a, b in zip(threaded[:3], single[:3]):
        assert np.array_equal(a.view(np.int32), b.view(np.int32))
    assert threaded[3] == single[3]
    # the norm is the block-order sum of float64 block sums, close to numpy's
    assert single[3][0] == math.sqrt(sum(block_sumsq(g, 0, n)))
    assert single[3][0] == pytest.approx(math.sqrt(np.sum(g.astype(np.float64) ** 2)), rel=1e-12)
