#!/usr/bin/env bash
# sanitize.sh: build shoestring with AddressSanitizer + UndefinedBehaviorSanitizer
# (SHOESTRING_DEBUG=1: -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined) into
# its own venv, then run the tests that drive the C code (kernels, MoE-GRU, decode and sampling,
# the whole model, training end to end, bad checkpoints) under the sanitizers. Any report fails.
#
#   tools/sanitize.sh [extra pytest args]
#
# Environment: SANITIZE_VENV (default .venv-sanitize; reused when it exists), PYTHON (python3).
# The interpreter is not instrumented, so the ASan runtime is LD_PRELOADed; leak checking is off
# because CPython keeps its own memory to the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${SANITIZE_VENV:-$ROOT/.venv-sanitize}
PY=${PYTHON:-python3}
CC=${CC:-gcc}
t0=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "numpy>=1.21" "cffi>=1.15" "setuptools>=77" wheel pytest hypothesis

# Build from a clean copy of the tree: an in-tree build/ directory holds optimised objects that
# setuptools would otherwise reuse (newer than their sources) and link into the debug module.
SRC=$(mktemp -d "${TMPDIR:-/tmp}/ss-sanitize-src.XXXXXX")
trap 'rm -rf "$SRC"' EXIT
tar --exclude=./build --exclude='./.venv*' --exclude=./.git --exclude='*.egg-info' \
    --exclude='__pycache__' -cf - . | tar -xf - -C "$SRC"
echo "== sanitize: building with SHOESTRING_DEBUG=1 =="
SHOESTRING_DEBUG=1 "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps \
    --no-cache-dir --force-reinstall "$SRC"

SO=$(cd / && "$VENV/bin/python" -c "import glob, os, importlib.util as u; \
d = os.path.dirname(u.find_spec('shoestring').origin); print(glob.glob(d + '/_shoestring_c*')[0])")
if ! nm -D "$SO" | grep __asan_report >/dev/null; then   # no -q: nm must not get SIGPIPE
    echo "sanitize: $SO is not instrumented (ASan symbols missing)" >&2
    exit 1
fi

ASAN_LIB=$("$CC" -print-file-name=libasan.so)
UBSAN_LIB=$("$CC" -print-file-name=libubsan.so)
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONMALLOC=malloc          # every Python allocation through the ASan allocator
export PYTHONFAULTHANDLER=1

# The module in use is the instrumented one (imported outside the source tree).
(cd / && "$VENV/bin/python" -) <<'EOF'
from shoestring import kernels
print("sanitize:", kernels.build_info())
assert "-fsanitize=address,undefined" in kernels.build_info(), kernels.build_info()
EOF

echo "== sanitize: tests under ASan + UBSan =="
cd "$ROOT"
LOG=$(mktemp "${TMPDIR:-/tmp}/ss-sanitize-log.XXXXXX")
rc=0
"$VENV/bin/pytest" -q -p no:cacheprovider \
    tests/test_kernels.py tests/test_kernel_args.py tests/test_moegru.py tests/test_decode.py \
    tests/test_chat.py tests/test_checkpoint.py tests/test_ref_model.py \
    tests/test_train.py tests/test_threads.py tests/test_regularisers.py tests/test_reliability.py \
    --deselect "tests/test_reliability.py::test_bad_input_gives_one_error_line[train --model-data one 5 MB line (valid)]" \
    --deselect "tests/test_reliability.py::test_bad_input_gives_one_error_line[tokenizer --bpe-data one 5 MB line (valid)]" \
    "$@" 2>&1 | tee "$LOG" || rc=$?
# A sanitizer report aborts the process (non-zero), but also grep for it in case a report came
# from a child process whose failure a test tolerated.
if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$LOG"; then
    echo "sanitize: a sanitizer reported an error (see above)" >&2
    rc=1
fi
rm -f "$LOG"
echo "sanitize: finished in $(( $(date +%s) - t0 )) s with status $rc"
exit "$rc"
