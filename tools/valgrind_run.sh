#!/usr/bin/env bash
# valgrind_run.sh: valgrind memcheck over a short `shoestring train` (2 threads, sparse and dense
# layers, checkpoints, a resume) and `shoestring generate` with a normally built (optimised)
# package, so the code that users run is the code that is checked. Any memcheck error fails
# (--error-exitcode=1); leaks are not errors (CPython keeps memory until exit).
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
SMALL=(--bpe-vocab-size 300 --embedding-dim 12 --gru-hidden-size 16 --gru-layers 2
       --num-experts 3 --active-experts 2 --seq-length 9 --batch-size 5 --threads 2
       --no-chat --quiet --sample-every 0 --eval-every 2)
status=0
run() {
    local name=$1; shift
    echo "== valgrind: $name =="
    local rc=0
    (cd "$WORK" && "${VG[@]}" --log-file="$WORK/$name.vg" "$@") || rc=$?
    grep -E "ERROR SUMMARY" "$WORK/$name.vg" | tail -1
    if [ "$rc" -ne 0 ]; then
        echo "valgrind_run: $name exited $rc" >&2
        grep -B2 -A30 -E "Invalid|uninitialised|Mismatched|overlap" "$WORK/$name.vg" | head -120 >&2 || true
        status=1
    fi
}
run train "$VENV/bin/python" -m shoestring train --model-data chat.txt --out-dir run \
    --max-steps 4 "${SMALL[@]}"
run resume "$VENV/bin/python" -m shoestring train --checkpoint run/last.json --model-data chat.txt \
    --max-steps 6 "${SMALL[@]}"
run generate "$VENV/bin/python" -m shoestring generate --checkpoint run/last.json \
    --prompt "[USER] what is 2 plus 3" --max-tokens 40 --seed 1 --temperature 0.9 --top-k 20 \
    --top-p 0.9
printf 'what is 1 plus 1\n/reset\nwhat is 4 plus 4\n' > "$WORK/chat.in"
run chat "$VENV/bin/python" -m shoestring chat --checkpoint run/last.json --max-response 20 \
    --seed 2 < "$WORK/chat.in"
exit "$status"
