"""Early stopping (--patience N, issue #11): a run ends after N validations in a row without a new
best, best.json keeps the best model, and the count survives a resume."""
import json

import shoestring
from shoestring import ModelConfig, TrainConfig
from shoestring.checkpoint import read_checkpoint
from shoestring.cli import main
from shoestring.config import NEW_RUN_CAP

# a tiny model at a high learning rate without dropout memorises the tiny corpus quickly, so
# its validation loss turns up within a few dozen steps
MODEL = ModelConfig(V=300, C=16, H=24, L=1, X=2, K=2, cap=NEW_RUN_CAP)
OVERFIT = TrainConfig(model=MODEL, seq_length=16, batch_size=4, max_steps=400, eval_every=5,
                      epochs=1000, lr=0.02, threads=1, dropout=0.0, embedding_dropout=0.0,
                      weight_drop=0.0, val_fraction=0.3)


def vals(result):
    return [m["val_loss"] for m in result.metrics]


def test_patience_stops_after_n_validations_without_a_new_best(tmp_path, tiny_corpus):
    free = shoestring.train(OVERFIT, model_data=[tiny_corpus], out_dir=str(tmp_path / "free"),
                            quiet=True)
    v = vals(free)
    best_at = v.index(min(v))
    assert free.steps == 400 and not free.early_stopped
    assert best_at + 3 < len(v), "the run must overfit for this test to mean anything"
    # the first point where 3 validations in a row bring no new best
    since, stop_at = 0, None
    best = float("inf")
    for i, x in enumerate(v):
        best, since = (x, 0) if x < best else (best, since + 1)
        if since >= 3:
            stop_at = i
            break
    stopped = shoestring.train(OVERFIT.replace(patience=3), model_data=[tiny_corpus],
                               out_dir=str(tmp_path / "p3"), quiet=True)
    assert stopped.early_stopped and not stopped.interrupted
    assert vals(stopped) == v[:stop_at + 1]           # the same run, cut after the 3rd miss
    assert stopped.steps == (stop_at + 1) * 5
    best_ck = read_checkpoint(stopped.best_checkpoint)
    assert best_ck.training["step"] == (v.index(min(v[:stop_at + 1])) + 1) * 5
    last = read_checkpoint(stopped.last_checkpoint)
    assert last.training["since_best"] == 3


def test_the_patience_count_survives_a_resume(tmp_path, tiny_corpus):
    cfg = OVERFIT.replace(patience=4)
    straight = shoestring.train(cfg, model_data=[tiny_corpus], out_dir=str(tmp_path / "a"),
                                quiet=True)
    assert straight.early_stopped
    cut = straight.steps - 5                  # a validation step, one before the early stop

    def stop(run, step, metrics):
        if step == cut:
            run.stop()

    half = shoestring.train(cfg, model_data=[tiny_corpus], out_dir=str(tmp_path / "b"),
                            quiet=True, callbacks=[{"on_step_end": stop}])
    assert half.stopped and not half.early_stopped and half.steps == cut
    assert read_checkpoint(half.last_checkpoint).training["since_best"] == 3
    resumed = shoestring.train(cfg, checkpoint=half.last_checkpoint, model_data=[tiny_corpus],
                               quiet=True)
    assert resumed.early_stopped and resumed.steps == straight.steps
    assert vals(resumed) == vals(straight)


def test_cli_patience_flag(tmp_path, tiny_corpus, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model-data", tiny_corpus, "--out-dir", str(out), "--no-chat",
               "--bpe-vocab-size", "300", "--embedding-dim", "16", "--gru-hidden-size", "24",
               "--gru-layers", "1", "--num-experts", "2", "--seq-length", "16",
               "--batch-size", "4", "--lr", "0.02", "--sample-every", "0",
               "--epochs", "1000", "--max-steps", "400", "--eval-every", "5", "--threads", "1",
               "--dropout", "0", "--embedding-dropout", "0", "--weight-drop", "0",
               "--val-fraction", "0.3", "--patience", "2"])
    assert rc == 0
    err = capsys.readouterr().err
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert rows[-1]["step"] < 400
    assert "early stop at step %d" % rows[-1]["step"] in err
