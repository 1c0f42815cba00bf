"""bench_decode.py: decoding speed, weight bytes, chat start-up and memory (BENCHMARKS.md ## Decoding).

    python tools/bench_decode.py              # default model (V=850, C=H=96, L=2, X=6), K=6 and K=2
    python tools/bench_decode.py --quick      # fewer repetitions

What it measures, on one thread (BLAS pinned to one thread before numpy is imported):
  1. microseconds per token, for every instruction set usable here, float32 and int8 weights:
     the C step alone (kernels.Decoder.step with the head), the Python loop that generation used
     before ss_generate (a Python call per step and per draw), and the user's loop:
     Model.generate(stream=True) itself, as `shoestring generate` runs it (prompt fed, then the C
     loop, ss_generate, in chunks of 64 with top-k 40 / top-p 0.95, each chunk turned into
     streamed text by the tokenizer's stream decoder). [EOS] is banned during the benchmark so
     that every run generates exactly the requested number of tokens. Each figure is this
     thread's CPU time over a run of N tokens divided by N, best of several runs (the machine is
     shared: wall time would count the time other processes hold the core).
  2. weight bytes: what one token reads (the router, the K active experts, the projection and
     the head; int8: one byte per weight plus a float scale per row; layer 0's input products:
     one float32 row of the table DecodeWeights fills at load) and the packed total; from
     the bytes read per token, an ESTIMATE for a Raspberry Pi 4 and Pi 5 if every byte came from
     DRAM at a sustained single-core rate (assumed: Pi 4 ~4 GB/s, Pi 5 ~8 GB/s; not measured:
     int8 weights fit in the Pi's L2/L3, where it would be faster, and the arithmetic is ignored).
  3. the compute limit: FLOPs per token divided by numpy's single-threaded sgemm rate.
  4. start-up: wall time from spawning `python -m shoestring chat --checkpoint ck.json` on a
     pseudo-terminal (so it runs interactively) to the moment the `you> ` prompt arrives on the
     terminal; with `python -c pass` and `python -c "import numpy"` as baselines.
  5. peak RSS of a chat session: the same interactive process answers 5 turns; its VmHWM (peak
     RSS since exec, /proc/PID/status) is read before Ctrl-D; float32, --int8 and the checkpoint's
     int8 export (`shoestring export --int8`). Start-up and RSS are taken on a checkpoint the
     size of the one users chat with (best.json: weights and AdamW state), or --chat-checkpoint.
  6. with --eval CHECKPOINT TEXT (repeatable): the quality cost of int8, `shoestring eval
     CHECKPOINT --data TEXT` (validation bits per character of held-out TEXT) against the same
     with --int8, as a table.
"""
import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import platform  # noqa: E402
import pty  # noqa: E402
import select  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from benchutil import cpu_name

HERE = os.path.dirname(os.path.abspath(__file__))


def make_checkpoint(path, K, seed=1, optimizer=False):
    """Default-size model, tokenizer trained on the shipped chat corpus, untrained parameters.
    optimizer=True adds an AdamW state (m, v) as `shoestring train` saves it in best.json, so
    the file has the size of the checkpoint a user chats with (3x the weights alone)."""
    from shoestring.checkpoint import save_checkpoint
    from shoestring.data import default_corpus_path
    from shoestring.params import ModelConfig, ParamLayout
    from shoestring.tokenizer import Tokenizer

    tok = Tokenizer.train(paths=[default_corpus_path()], vocab_size=850)
    cfg = ModelConfig(V=tok.vocab_size, K=K)
    flat = ParamLayout(cfg).init(seed)
    opt = None
    if optimizer:
        rng = np.random.default_rng(seed)
        opt = {"step": 1000, "m": (1e-3 * rng.standard_normal(flat.size)).astype(np.float32),
               "v": (1e-6 * rng.random(flat.size)).astype(np.float32)}
    save_checkpoint(path, {"config": {"model": cfg.to_dict()}, "tokenizer": tok.to_dict(),
                           "params": flat, "optimizer": opt, "training": {}, "metrics": []})
    return cfg


def flops_per_token(cfg):
    macs = 0
    for l in range(cfg.L):
        I = cfg.layer_input(l)
        macs += cfg.X * I + cfg.K * (2 * cfg.H * I + cfg.H * cfg.H)
        if I != cfg.H:
            macs += cfg.H * I
    macs += cfg.V * cfg.H
    return 2 * macs


def best_of(fn, reps):
    times = [fn() for _ in range(reps)]
    return min(times), statistics.median(times)


def sgemm_rate(M, Kd, N, reps):
    """FLOP/s of numpy float32 (M,Kd)x(Kd,N), best of reps."""
    a = np.random.default_rng(0).standard_normal((M, Kd)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((Kd, N)).astype(np.float32)
    out = np.empty((M, N), np.float32)
    inner = max(1, int(2e8 / (2 * M * Kd * N)))

    def run():
        t = time.perf_counter()
        for _ in range(inner):
            np.matmul(a, b, out=out)
        return (time.perf_counter() - t) / inner
    best, _ = best_of(run, reps)
    return 2 * M * Kd * N / best


PI_DRAM_GBS = {"Raspberry Pi 4 (Cortex-A72)": 4.0, "Raspberry Pi 5 (Cortex-A76)": 8.0}


def bytes_per_token(cfg, int8):
    """Weight bytes one token reads: router, the K active experts, projection, head (+ scales);
    layer 0's input products come from one row of the table (kernels.DecodeWeights.embed_proj,
    float32) instead of its router, [Wz; Wcx] and projection matrices."""
    per_weight = 1 if int8 else 4
    rows = weights = 0
    for l in range(cfg.L):
        I = cfg.layer_input(l)
        rows += cfg.K * cfg.H
        weights += cfg.K * cfg.H * cfg.H
        if l > 0:
            rows += cfg.X + cfg.K * 2 * cfg.H
            weights += cfg.X * I + cfg.K * 2 * cfg.H * I
    rows += cfg.V
    weights += cfg.V * cfg.H
    table_row = cfg.X + cfg.K * 2 * cfg.H + (cfg.H if cfg.C != cfg.H else 0)
    return weights * per_weight + (4 * rows if int8 else 0) + 4 * table_row


def bench_tokens(model, model8, isa, n_tokens, reps, int8):
    """-> (step best, median), (python loop best, median) or None for int8, (C loop best, median)
    in seconds per token."""
    from shoestring import kernels
    kernels.set_isa(isa)
    weights = kernels.DecodeWeights(model.cfg, model.views, int8=int8)
    user = model8 if int8 else model
    user.refresh()              # its table of layer 0's input products, for this instruction set
    dec = kernels.Decoder(weights, model.allowed)
    for t in range(50):
        dec.step(t % model.cfg.V)

    cpu = time.thread_time      # CPU time of this thread: time spent descheduled does not count

    def step_only():
        t0 = cpu()
        for i in range(n_tokens):
            dec.step(100 + (i & 255))
        return (cpu() - t0) / n_tokens

    prompt = model.tokenizer.encode("hello there", allow_special=False)

    def python_loop():
        """The loop before ss_generate: one Python call per step and per draw (the settings
        bound once, as Decoder.sampler did), each id streamed as text."""
        t0 = cpu()
        d = kernels.Decoder(weights, model.allowed)
        rng = kernels.Rng(1)
        draw = functools.partial(kernels.lib.ss_sample, d._p_swork, d._p_logits, d._p_allowed,
                                 model.cfg.V, 0.8, 40, 0.95, rng._p)
        sd = model.tokenizer.stream_decoder()
        pieces = []
        for t in prompt[:-1]:
            d.step(t, head=False)
        d.step(prompt[-1])
        for _ in range(n_tokens):
            tok = draw()
            d.step(tok)
            piece = sd.feed(tok)
            if piece:
                pieces.append(piece)
        return (cpu() - t0) / n_tokens

    def c_loop():
        """The user's loop: Model.generate(stream=True), as `shoestring generate` runs it (the
        C loop in chunks, each chunk's text streamed)."""
        t0 = cpu()
        for _piece in user.generate("hello there", max_tokens=n_tokens, seed=1, stream=True):
            pass
        return (cpu() - t0) / n_tokens
    py = None if int8 else best_of(python_loop, reps)
    return best_of(step_only, reps), py, best_of(c_loop, reps), weights


def _read_until(fd, marker, timeout):
    buf = b""
    end = time.perf_counter() + timeout
    while marker not in buf:
        left = end - time.perf_counter()
        if left <= 0:
            raise RuntimeError("timed out waiting for %r; got %r" % (marker, buf[-300:]))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                raise RuntimeError("process ended before %r; got %r" % (marker, buf[-300:]))
            buf += chunk
    return buf


def shoestring_eval(ck, text_path, int8):
    """`shoestring eval CK --data TEXT --json [--int8]` in a child process -> its JSON dict."""
    import json
    r = subprocess.run([sys.executable, "-m", "shoestring", "eval", ck, "--data", text_path,
                        "--json"] + (["--int8"] if int8 else []),
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError("shoestring eval %s failed: %s" % (ck, r.stderr.strip()))
    return json.loads(r.stdout)


def quality(pairs):
    print("\nint8 quality cost: `shoestring eval CK --data TEXT` against the same with --int8 "
          "(validation bits/char of held-out text; float32: the training's forward pass; int8: the "
          "decode step chat runs; the whole text as one stream with the training's state guard)")
    print("| checkpoint | held-out text | float32 | int8 | cost |")
    print("|---|---|---|---|---|")
    for ck, text_path in pairs:
        f32 = shoestring_eval(ck, text_path, False)
        i8 = shoestring_eval(ck, text_path, True)
        print("| %s | %s (%s tokens, %s chars) | %.4f | %.4f | %+.4f |"
              % (ck, text_path, format(f32["tokens"], ","), format(f32["chars"], ","),
                 f32["bits_per_char"], i8["bits_per_char"],
                 i8["bits_per_char"] - f32["bits_per_char"]))


def chat_process(ckpt, turns, cwd, flags=()):
    """Start `shoestring chat` on a pty; -> (seconds to the first prompt, peak RSS in MiB)."""
    master, slave = pty.openpty()
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "shoestring", "chat", "--checkpoint", ckpt,
                          "--seed", "1", "--max-response", "100"] + list(flags),
                         stdin=slave, stdout=slave, stderr=slave, cwd=cwd, close_fds=True)
    os.close(slave)
    try:
        _read_until(master, b"you> ", 30)
        startup = time.perf_counter() - t0
        for i in range(turns):
            os.write(master, b"hello there, how are you today?\n")
            _read_until(master, b"you> ", 60)
        hwm = vm_hwm(p.pid)                            # the peak so far: load and every turn
        os.write(master, b"\x04")                      # Ctrl-D: end of input
        deadline = time.perf_counter() + 30
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                raise RuntimeError("chat did not exit after Ctrl-D")
            try:
                select.select([master], [], [], 0.02)
                os.read(master, 65536)
            except OSError:
                pass
        p.returncode = os.waitstatus_to_exitcode(status)
    finally:
        os.close(master)
    if p.returncode != 0:
        raise RuntimeError("chat exited with %d" % p.returncode)
    return startup, hwm if hwm is not None else ru.ru_maxrss / 1024.0


def vm_hwm(pid):
    """Peak RSS (MiB) of the process `pid` since its exec (VmHWM), or None where /proc lacks it.
    Not ru_maxrss: Linux counts in it the pages the child shared with this (bigger) benchmark
    process between fork and exec, which put this process's own size into the figure."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def baseline(code, cwd, reps):
    def run():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd)
        return time.perf_counter() - t
    return best_of(run, reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--eval", "--quality", dest="quality", nargs=2, action="append",
                    metavar=("CHECKPOINT", "TEXT"),
                    help="also report `shoestring eval` bits/char of TEXT, float32 vs --int8 "
                         "(repeatable)")
    ap.add_argument("--no-speed", action="store_true", help="only the --eval figures")
    ap.add_argument("--chat-checkpoint", metavar="CK",
                    help="measure chat start-up and peak RSS on this checkpoint (default: a "
                         "default-size one with an AdamW state, the size `shoestring train` saves)")
    args = ap.parse_args()
    if args.no_speed:
        quality(args.quality or [])
        return 0
    reps = 3 if args.quick else 9
    n_tokens = 500 if args.quick else 2000

    import shoestring
    from shoestring import kernels

    print("machine: %s, %s, %d cores; python %s, numpy %s; kernels: %s"
          % (platform.machine(), cpu_name(), os.cpu_count() or 1, platform.python_version(),
             np.__version__, ", ".join(kernels.isa_available())))
    g_big = sgemm_rate(512, 512, 512, reps)
    g_vec = sgemm_rate(1, 96, 850, reps)
    print("numpy sgemm, 1 thread: %.1f GFLOP/s (512x512x512), %.2f GFLOP/s ((1,96)x(96,850))"
          % (g_big / 1e9, g_vec / 1e9))
    default_isa = kernels.isa_active()
    with tempfile.TemporaryDirectory() as d:
        rows = []
        for K in (6, 2):
            ck = os.path.join(d, "k%d.json" % K)
            cfg = make_checkpoint(ck, K)
            model, model8 = shoestring.load(ck), shoestring.load(ck, int8=True)
            for m in (model, model8):
                if m.eos is not None:
                    m.allowed[m.eos] = 0               # fixed-length runs (benchmark only)
            fl = flops_per_token(cfg)
            # numpy streaming the same bytes: one gemv over an (n_rows, 96) matrix, which reads
            # as many bytes as one float32 decode step (layer 0's input products from the table)
            nb32 = bytes_per_token(cfg, False)
            n_rows = nb32 // 4 // 96
            g_same = sgemm_rate(1, 96, n_rows, reps)
            print("\nK=%d (%s): %.3f MFLOP/token in the model, %.2f MB of float32 weights read "
                  "per token" % (K, "dense" if K == cfg.X else "top-%d of %d" % (K, cfg.X),
                                 fl / 1e6, nb32 / 1e6))
            print("  limits at numpy's rates: %.1f us (512^3 sgemm, %.1f GFLOP/s), %.1f us (gemv "
                  "(1,96)x(96,850)), %.1f us (gemv (1,96)x(96,%d): the same bytes, %.1f GB/s)"
                  % (fl / g_big * 1e6, g_big / 1e9, fl / g_vec * 1e6,
                     2 * 96 * n_rows / g_same * 1e6, n_rows, g_same * 2 / 1e9))
            for int8 in (False, True):
                nb = bytes_per_token(cfg, int8)
                est = ", ".join("%s %.0f us" % (k, nb / (g * 1e9) * 1e6) for k, g in PI_DRAM_GBS.items())
                print("  %s weights: %.2f MB read per token; ESTIMATE if all streamed from DRAM: %s"
                      % ("int8" if int8 else "float32", nb / 1e6, est))
                for isa in kernels.isa_available():
                    (s_best, s_med), py, (c_best, c_med), w = bench_tokens(
                        model, model8, isa, n_tokens, reps, int8)
                    rows.append((K, isa, int8, s_best, c_best))
                    line = ("  %-6s %-7s step %6.1f us/token (median run %6.1f; %4.1f GFLOP/s)"
                            % ("int8" if int8 else "fp32", isa, s_best * 1e6, s_med * 1e6,
                               fl / s_best / 1e9))
                    if py:
                        line += "  python loop %6.1f us (median %6.1f)" % (py[0] * 1e6, py[1] * 1e6)
                    line += ("  user's loop (Model.generate) %6.1f us/token (median run %6.1f)  [%s; packed %.2f MB]"
                             % (c_best * 1e6, c_med * 1e6,
                                kernels.int8_kernel() if int8 else "float32", w.weight_bytes() / 1e6))
                    print(line)
        kernels.set_isa(default_isa)
        sizes = {int8: kernels.DecodeWeights(model.cfg, model.views, int8=int8).weight_bytes()
                 for int8 in (False, True)}
        print("\nweights packed for decoding (default model): float32 %.2f MB, int8 %.2f MB "
              "(with the row scales): %.2fx smaller"
              % (sizes[False] / 1e6, sizes[True] / 1e6, sizes[False] / sizes[True]))
        chat_ck = args.chat_checkpoint
        if chat_ck is None:
            chat_ck = os.path.join(d, "train.json")
            make_checkpoint(chat_ck, 6, optimizer=True)
            what = "default model with its AdamW state, as `shoestring train` saves best.json"
        else:
            chat_ck = os.path.abspath(chat_ck)
            what = chat_ck
        ck8 = os.path.join(d, "chat.int8.json")
        subprocess.run([sys.executable, "-m", "shoestring", "export", chat_ck, "--int8", "--out",
                        ck8], check=True, capture_output=True, cwd=d)
        print("chat checkpoint: %s (%.1f MB; its int8 export %.1f MB)"
              % (what, os.path.getsize(chat_ck) / 1e6, os.path.getsize(ck8) / 1e6))
        for label, path, flags in (("float32", chat_ck, ()), ("--int8", chat_ck, ("--int8",)),
                                   ("int8 export", ck8, ())):
            starts, rss = [], []
            for i in range(5 if not args.quick else 2):
                s, r = chat_process(path, 5 if i == 0 else 0, d, flags)
                starts.append(s)
                rss.append(r)
            print("%-11s start-up to the `you> ` prompt (pty): best %.3f s, median %.3f s; peak "
                  "RSS of a chat session (5 turns of up to 100 tokens) %.1f MiB"
                  % (label, min(starts), statistics.median(starts), rss[0]))
        py, _ = baseline("pass", d, 5)
        npy, _ = baseline("import numpy", d, 5)
        print("[python -c pass: %.3f s; python -c 'import numpy': %.3f s]" % (py, npy))
    if args.quality:
        quality(args.quality)
    return 0


if __name__ == "__main__":
    sys.exit(main())
