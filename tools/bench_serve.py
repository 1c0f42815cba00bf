"""bench_serve.py: `shoestring serve` under load: many concurrent multi-turn conversations.

    python tools/bench_serve.py --checkpoint run/best.json            # 32 clients x 20 turns
    python tools/bench_serve.py --clients 8 --turns 5 --out serve.json    # a quick look

Three servers are started in turn (`python -m shoestring serve`, each its own process), and
the clients (threads here, one keep-alive connection each, streaming) talk to them over HTTP:
  1. load: --clients conversations at once, --turns turns each; each request carries the whole
     conversation so far (as OpenAI clients do) and its own seed (client c, turn t: 1000 c + t).
     Counted: errors (any non-200, broken stream or missing [DONE]), time to first token (p50,
     p99), completion tokens per second in aggregate over the wall time;
  2. reference: a fresh server and ONE client running every conversation alone, one after the
     other, with the same messages and seeds: every reply must equal the loaded run's (no
     cross-talk between concurrent requests). Its uncontended timings give the cost of turn 1
     against turn --turns (time to first token = feeding the new message; the cache makes both
     the same size of work);
  3. replay: a server with --cache-mb 0 answering each conversation's last turn from scratch
     (the whole history fed again): what a cache miss costs; its replies must equal too.
Without --checkpoint, a model of the default size (ModelConfig()) with a tokenizer trained on
the bundled corpus and untrained weights is used: speed figures hold, the text is noise and
replies run to --max-tokens. Figures on a shared machine are preliminary: run it under
`flock /tmp/ss-bench.lock` with nothing else running.
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = ["hello there", "what is your name?", "what do you like to do?", "tell me a story",
           "what is 2 plus 3?", "how are you today?", "which colour do you like?",
           "where do you live?", "can you help me?", "what time is it?", "thank you",
           "do you like music?", "what is the weather like?", "who are you?", "goodbye"]


def default_checkpoint(path):
    """A default-size model (untrained weights, tokenizer from the bundled corpus) at path."""
    from shoestring.checkpoint import save_checkpoint
    from shoestring.params import ModelConfig, ParamLayout
    from shoestring.tokenizer import Tokenizer
    import shoestring.data
    data = os.path.dirname(shoestring.data.__file__)
    texts = [open(os.path.join(data, f), encoding="utf-8").read()
             for f in sorted(os.listdir(data)) if f.endswith(".txt")]
    tok = Tokenizer.train(texts=texts, vocab_size=850)
    cfg = ModelConfig(V=tok.vocab_size)
    save_checkpoint(path, {"config": {"model": cfg.to_dict()}, "tokenizer": tok.to_dict(),
                           "params": ParamLayout(cfg).init(1), "optimizer": None,
                           "training": {}, "metrics": []})


class ServerProcess:
    def __init__(self, ckpt, *extra):
        self.p = subprocess.Popen([sys.executable, "-m", "shoestring", "serve", ckpt, "--port", "0",
                                   "--quiet"] + list(extra), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if not line.startswith("shoestring serve: http://"):
            raise SystemExit("the server did not start: %s%s" % (line, self.p.stderr.read()))
        hostport = line.split()[2][len("http://"):].rstrip("/")
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)

    def stop(self):
        self.p.terminate()
        self.p.communicate(timeout=30)


def turn(conn, messages, seed, max_tokens):
    """One streamed chat request: (reply, ttft s, total s, usage); raises on any error."""
    body = json.dumps({"messages": messages, "seed": seed, "max_tokens": max_tokens,
                       "temperature": 0.8, "stream": True,
                       "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError("status %d: %s" % (r.status, r.read()[:200]))
    pieces, ttft, usage, done = [], None, None, False
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            done = True
            continue
        d = json.loads(data)
        if d.get("usage"):
            usage = d["usage"]
        for c in d["choices"]:
            text = c["delta"].get("content")
            if text:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                pieces.append(text)
    total = time.perf_counter() - t0
    if not done or usage is None:
        raise RuntimeError("the stream ended without usage or [DONE]")
    return "".join(pieces), (total if ttft is None else ttft), total, usage


def conversation(srv, c, turns, max_tokens, record):
    """Run conversation c for `turns` turns on one connection; record[t] = (reply, ttft, total,
    usage) or an exception."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=300)
    conn.request("GET", "/health")            # connect first: turn 1 is timed like the others
    conn.getresponse().read()
    msgs = []
    try:
        for t in range(turns):
            msgs.append({"role": "user", "content": PROMPTS[(c * 7 + t) % len(PROMPTS)]})
            try:
                out = turn(conn, msgs, 1000 * c + t, max_tokens)
            except Exception as exc:          # counted as an error; the conversation stops
                record.append(exc)
                return msgs
            record.append(out)
            msgs.append({"role": "assistant", "content": out[0]})
    finally:
        conn.close()
    return msgs


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="checkpoint to serve (default: a default-size untrained model)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=48, help="most tokens of a reply (default: 48)")
    ap.add_argument("--replay", type=int, default=8, help="conversations replayed without cache")
    ap.add_argument("--out", help="write the figures as JSON here too")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench_serve_")
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = os.path.join(tmp, "default.json")
        default_checkpoint(ckpt)
    mt = str(max(args.max_tokens, 1))

    # 1. load: every conversation at once
    srv = ServerProcess(ckpt, "--max-tokens", mt)
    records = [[] for _ in range(args.clients)]
    convs = [None] * args.clients

    def run(c):
        convs[c] = conversation(srv, c, args.turns, args.max_tokens, records[c])

    threads = [threading.Thread(target=run, args=(c,)) for c in range(args.clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    srv.stop()
    errors = [r for rec in records for r in rec if isinstance(r, Exception)]
    ok = [r for rec in records for r in rec if not isinstance(r, Exception)]
    ttfts = [r[1] for r in ok]
    tokens = sum(r[3]["completion_tokens"] for r in ok)
    cached = sum(1 for rec in records for r in rec[1:] if not isinstance(r, Exception)
                 and r[3].get("prompt_tokens_details", {}).get("cached_tokens", 0) > 0)

    # 2. reference: one client, one conversation at a time, fresh server
    srv = ServerProcess(ckpt, "--max-tokens", mt)
    ref = [[] for _ in range(args.clients)]
    for c in range(args.clients):
        conversation(srv, c, args.turns, args.max_tokens, ref[c])
    srv.stop()
    mismatch = sum(1 for c in range(args.clients) for a, b in zip(records[c], ref[c])
                   if isinstance(a, Exception) or isinstance(b, Exception) or a[0] != b[0])
    mismatch += sum(abs(len(records[c]) - len(ref[c])) for c in range(args.clients))
    first = [ref[c][0] for c in range(args.clients) if not isinstance(ref[c][0], Exception)]
    last = [ref[c][-1] for c in range(args.clients) if not isinstance(ref[c][-1], Exception)]

    # 3. replay: the last turn of some conversations with no cache (the whole history fed)
    srv = ServerProcess(ckpt, "--max-tokens", mt, "--cache-mb", "0")
    replay, replay_bad = [], 0
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=300)
    for c in range(min(args.replay, args.clients)):
        msgs = convs[c][:-1]                      # up to the last user message
        if len(msgs) != 2 * args.turns - 1:
            replay_bad += 1
            continue
        out = turn(conn, msgs, 1000 * c + args.turns - 1, args.max_tokens)
        replay.append(out)
        replay_bad += out[0] != ref[c][-1][0]
    conn.close()
    srv.stop()

    def ms(x):
        return round(1000 * x, 2)

    def per_token(rs):
        return ms(sum(r[2] - r[1] for r in rs) / max(1, sum(r[3]["completion_tokens"] - 1 for r in rs)))

    fig = {
        "machine": "%s, %d cores" % (os.uname().machine, os.cpu_count() or 1),
        "checkpoint": args.checkpoint or "default size, untrained",
        "clients": args.clients, "turns": args.turns, "max_tokens": args.max_tokens,
        "requests": len(ok) + len(errors), "errors": len(errors),
        "error_examples": [str(e)[:200] for e in errors[:3]],
        "cross_talk_mismatches": mismatch,
        "load_wall_s": round(wall, 2),
        "load_ttft_p50_ms": ms(pct(ttfts, 0.5)), "load_ttft_p99_ms": ms(pct(ttfts, 0.99)),
        "load_completion_tokens": tokens,
        "load_tokens_per_s": round(tokens / wall, 1),
        "load_turns_after_first_served_from_cache": "%d of %d" % (cached, len(ok) - args.clients),
        "alone_turn1_ttft_ms": ms(sum(r[1] for r in first) / max(1, len(first))),
        "alone_turnN_ttft_ms": ms(sum(r[1] for r in last) / max(1, len(last))),
        "alone_turn1_prompt_tokens_fed": round(sum(r[3]["prompt_tokens"] for r in first) / max(1, len(first)), 1),
        "alone_turnN_prompt_tokens_fed": round(sum(r[3]["prompt_tokens"] - r[3].get(
            "prompt_tokens_details", {}).get("cached_tokens", 0) for r in last) / max(1, len(last)), 1),
        "alone_turnN_prompt_tokens_total": round(sum(r[3]["prompt_tokens"] for r in last) / max(1, len(last)), 1),
        "alone_turn1_ms_per_token": per_token(first), "alone_turnN_ms_per_token": per_token(last),
        "replay_turnN_ttft_ms": ms(sum(r[1] for r in replay) / max(1, len(replay))),
        "replay_mismatches": replay_bad,
    }
    print("shoestring serve under load (%s; %s)" % (fig["machine"], fig["checkpoint"]))
    for k, v in fig.items():
        print("  %-45s %s" % (k, v))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(fig, f, indent=1)
    return 1 if errors or mismatch or replay_bad else 0


if __name__ == "__main__":
    sys.exit(main())
