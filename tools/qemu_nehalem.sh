#!/usr/bin/env bash
# qemu_nehalem.sh: run the kernel test suite on an emulated CPU without AVX (default Nehalem),
# with the package installed in the Python given (default: the one on PATH).
#
#   tools/qemu_nehalem.sh [PYTHON] [CPU]        e.g. tools/qemu_nehalem.sh /tmp/venv/bin/python Haswell
#
# Needs qemu-x86_64-static (apt install qemu-user-static) on a Linux x86-64 host. Under Nehalem
# the dispatcher must pick the scalar kernels; the suite checks them against shoestring.ref.
# pytest runs as a script so that the source tree does not shadow the installed package.
set -euo pipefail
PY=${1:-python3}
CPU=${2:-Nehalem}
QEMU=$(command -v qemu-x86_64-static || true)
if [ -z "$QEMU" ]; then
    echo "qemu_nehalem: qemu-x86_64-static not found (apt install qemu-user-static)" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTEST=$("$PY" -c "import shutil, sys, os; p = os.path.join(os.path.dirname(sys.executable), 'pytest'); print(p if os.path.exists(p) else shutil.which('pytest') or '')")
if [ -z "$PYTEST" ]; then
    echo "qemu_nehalem: pytest is not installed for $PY (pip install pytest)" >&2
    exit 2
fi
cd "$ROOT"
unset SHOESTRING_ISA
echo "== emulated $CPU: $(cd / && "$QEMU" -cpu "$CPU" "$PY" -c 'from shoestring import kernels; print("active", kernels.isa_active(), "usable", kernels.isa_available())' 2>/dev/null) =="
exec "$QEMU" -cpu "$CPU" "$PY" "$PYTEST" -q -p no:cacheprovider tests/test_kernels.py tests/test_kernel_args.py
