#!/usr/bin/env bash
# valgrind_run.sh: valgrind memcheck over a short `shoestring train` (2 threads, sparse routing,
# checkpoints), a resume, `shoestring generate` and a scripted `shoestring chat`, with a normally
# built (optimised) package, so the code that users run is the code that is checked.
#
# Verdict, per run: FAIL on any invalid read/write/free, overlapping copy or bad syscall argument
# anywhere, and on any error of any kind with a frame in the shoestring module. Uninitialised-value
# reports whose stacks lie wholly inside CPython are counted and listed as interpreter noise:
# CPython 3.11's int.from_bytes(b"") reads an unset digit it then multiplies by zero
# (_PyLong_FromByteArray -> maybe_small_long), which memcheck cannot see through, and the small
# int it picks is then "uninitialised" wherever it flows. Leaks are not errors (CPython keeps
# memory until exit).
#
#   tools/valgrind_run.sh            # prints each run's ERROR SUMMARY
#
# Environment: VALGRIND_VENV (default .venv-valgrind; created and filled when missing),
# PYTHON (python3). PYTHONMALLOC=malloc sends every Python allocation to malloc, where memcheck
# sees it (pymalloc's arenas would hide overruns and produce false reports).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VALGRIND_VENV:-$ROOT/.venv-valgrind}
PY=${PYTHON:-python3}
command -v valgrind >/dev/null || { echo "valgrind_run: valgrind is not installed" >&2; exit 1; }
if [ ! -x "$VENV/bin/shoestring" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "$ROOT"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ss-valgrind.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" - "$WORK/chat.txt" <<'EOF'
import sys
text = "".join("[USER] what is %d plus %d [EOS]\n[BOT] %d plus %d is %d [EOS]\n\n"
               % (a, b, a, b, a + b) for a in range(10) for b in range(10))
open(sys.argv[1], "w").write(text)
EOF

export PYTHONMALLOC=malloc
VG=(valgrind --tool=memcheck --error-exitcode=1 --errors-for-leak-kinds=none --leak-check=no
    --track-origins=yes --num-callers=30 --gen-suppressions=no)
ARCH=(--bpe-vocab-size 300 --embedding-dim 12 --gru-hidden-size 16 --gru-layers 2
      --num-experts 3 --active-experts 2)
SMALL=(--seq-length 9 --batch-size 5 --threads 2 --no-chat --quiet --sample-every 0
       --eval-every 2)
cat > "$WORK/judge.py" <<'EOF'
"""Classify the error blocks of one memcheck log; exit 1 if any is ours or a real memory error."""
import re
import sys

text = open(sys.argv[1]).read()
m = re.search(r"^==(\d+)==", text, re.M)
pid = m.group(1) if m else "?"
blocks, cur = [], []
for l in text.splitlines():
    if not l.startswith("==%s==" % pid):
        continue
    l = l[len(pid) + 4:]
    if not l.strip():
        if cur:
            blocks.append(cur)
        cur = []
    else:
        cur.append(l)
if cur:
    blocks.append(cur)
KINDS = ("Invalid read", "Invalid write", "Invalid free", "Mismatched free", "overlap",
         "Syscall param", "uninitialised", "Argument 'size'", "invalid file descriptor")
errors = [b for b in blocks if any(k in b[0] for k in KINDS)]
bad, noise = [], []
for b in errors:
    ours = any("_shoestring_c" in l or "csrc/" in l for l in b)
    loader = any(f in l for l in b for f in ("dl-load.c", "dl-open.c")) and \
        "strcmp-sse2" in "".join(b[:3])          # ld.so's word-wide strncmp over RPATH strings
    (bad if ours or ("uninitialised" not in b[0] and not loader) else noise).append(b)


def origin(b):
    frames = [l for l in b[1:] if l.lstrip().startswith(("at ", "by "))]
    return frames[0].split(":", 1)[-1].strip().split(" (")[0] if frames else "?"


summary = re.findall(r"ERROR SUMMARY: .*", text)
print("  memcheck %s" % (summary[-1] if summary else "gave no summary (valgrind failed?)"))
print("  %d error contexts: %d in shoestring or real memory errors; %d CPython-only "
      "uninitialised-value or ld.so strncmp noise (first frames: %s)"
      % (len(errors), len(bad), len(noise), ", ".join(sorted({origin(b) for b in noise})) or "-"))
for b in bad:
    print("\n".join(b[:25]), file=sys.stderr)
sys.exit(1 if bad or not summary else 0)
EOF

status=0
run() {
    local name=$1; shift
    echo "== valgrind: $name =="
    local rc=0 t0
    t0=$(date +%s)
    (cd "$WORK" && "${VG[@]}" --log-file="$WORK/$name.vg" "$@" >"$WORK/$name.out") || rc=$?
    echo "  exit $rc in $(( $(date +%s) - t0 )) s; output: $(tail -c 120 "$WORK/$name.out" | tr '\n' ' ')"
    "$VENV/bin/python" "$WORK/judge.py" "$WORK/$name.vg" || status=1
    if [ "$rc" -ne 0 ] && ! grep -q "ERROR SUMMARY: [1-9]" "$WORK/$name.vg"; then
        echo "valgrind_run: $name failed (exit $rc) without a memcheck error" >&2
        status=1
    fi
}
run train "$VENV/bin/python" -m shoestring train --model-data chat.txt --out-dir run \
    --max-steps 4 "${ARCH[@]}" "${SMALL[@]}"
run resume "$VENV/bin/python" -m shoestring train --checkpoint run/last.json --model-data chat.txt \
    --max-steps 6 "${SMALL[@]}"
run generate "$VENV/bin/python" -m shoestring generate --checkpoint run/last.json \
    --prompt "[USER] what is 2 plus 3" --max-tokens 40 --seed 1 --temperature 0.9 --top-k 20 \
    --top-p 0.9
printf 'what is 1 plus 1\n/reset\nwhat is 4 plus 4\n' > "$WORK/chat.in"
run chat "$VENV/bin/python" -m shoestring chat --checkpoint run/last.json --max-response 20 \
    --seed 2 < "$WORK/chat.in"
exit "$status"
