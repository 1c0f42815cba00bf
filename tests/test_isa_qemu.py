"""Run-time dispatch on other CPUs, emulated by qemu user mode (qemu-x86_64-static -cpu MODEL).

The installed package, run by this very Python under an emulated Nehalem (SSE4.2, no AVX; or
Sandy Bridge, AVX without AVX2, where numpy needs AVX), must pick the scalar kernels and compute correctly; under an emulated Haswell it must pick AVX2.
Skips cleanly where qemu-x86_64-static is absent or the host is not Linux x86-64. The whole
kernel suite can be run the same way with tools/qemu_nehalem.sh.

The NEON kernels are also cross-compiled (aarch64, and 32-bit ARM with -mfpu=neon) together
with tools/kernel_crosscheck.c and run under qemu-aarch64-static / qemu-arm-static against the
scalar twin, where those cross compilers and emulators are installed
(apt install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user-static).
"""
import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

QEMU = shutil.which("qemu-x86_64-static")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_x86_qemu = pytest.mark.skipif(
    QEMU is None or not sys.platform.startswith("linux")
    or platform.machine().lower() not in ("x86_64", "amd64"),
    reason="needs qemu-x86_64-static on a Linux x86-64 host (apt install qemu-user-static)")

# Runs inside the emulator: the active ISA and, for every usable ISA, the worst relative error of
# a few kernels against shoestring.ref on the model's shapes, as one JSON line.
PROBE = r"""
import json
import numpy as np
from shoestring import kernels, ref

def rel(got, want):
    want = np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30))

rng = np.random.default_rng(0)
inp = rng.standard_normal((16, 96)).astype(np.float32)
W = (rng.standard_normal((850, 96)) * 0.1).astype(np.float32)
b = rng.standard_normal(850).astype(np.float32)
dout = rng.standard_normal((16, 850)).astype(np.float32)
x = (rng.standard_normal(1001) * 3).astype(np.float32)
targets = rng.integers(0, 850, 16).astype(np.int32)
result = {"active": kernels.isa_active(), "available": kernels.isa_available(), "errors": {}}
for isa in kernels.isa_available():
    kernels.set_isa(isa)
    err = {}
    out = np.empty((16, 850), np.float32)
    kernels.matmul_forward(out, inp, W, b)
    err["matmul_forward"] = rel(out, ref.matmul_forward(inp.astype(np.float64), W, b))
    dinp, dW, db = np.zeros_like(inp), np.zeros_like(W), np.zeros_like(b)
    kernels.matmul_backward(dinp, dW, db, dout, inp, W)
    r = ref.matmul_backward(dout.astype(np.float64), inp, W)
    err["matmul_backward"] = max(rel(dinp, r[0]), rel(dW, r[1]), rel(db, r[2]))
    y = np.empty_like(x)
    kernels.gelu_forward(y, x)
    err["gelu_forward"] = rel(y, ref.gelu_forward(x.astype(np.float64)))
    kernels.sigmoid_forward(y, x)
    err["sigmoid_forward"] = rel(y, ref.sigmoid_forward(x.astype(np.float64)))
    logits = out
    losses, dl = np.empty(16, np.float32), np.empty_like(logits)
    kernels.crossentropy_forward(losses, dl, logits, targets, 1 / 16)
    loss, rd = ref.crossentropy_forward_backward(logits.astype(np.float64), targets, 1 / 16)
    err["crossentropy"] = max(abs(float(losses.sum()) - loss) / loss, rel(dl, rd))
    g = np.empty((16, 96), np.float32)
    rstd = np.empty(16, np.float32)
    kernels.rmsnorm_forward(g, rstd, inp, np.ones(96, np.float32), 1e-5)
    err["rmsnorm_forward"] = rel(g, ref.rmsnorm_forward(inp.astype(np.float64), 1.0, 1e-5)[0])
    err["sumsq"] = abs(kernels.sumsq(x) - ref.sumsq(x)) / ref.sumsq(x)
    result["errors"][isa] = err
print(json.dumps(result))
"""


# numpy's OpenBLAS picks its kernels from CPUID, which under qemu can name a CPU newer than the
# instructions emulated (SIGILL in a float64 matmul on an emulated Sandy Bridge): name the core.
OPENBLAS_CORE = {"Nehalem": "Nehalem", "SandyBridge": "Sandybridge", "Haswell": "Haswell"}


def emulated_env(cpu):
    env = dict(os.environ)
    env.pop("SHOESTRING_ISA", None)  # the emulated CPU alone decides
    env["OPENBLAS_CORETYPE"] = OPENBLAS_CORE[cpu]
    return env


def run_emulated(cpu, *args, timeout=120):
    env = emulated_env(cpu)
    proc = subprocess.run([QEMU, "-cpu", cpu, sys.executable] + list(args), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    if proc.returncode == -4 and args[:2] != ("-c", "import numpy"):     # SIGILL: whose?
        try:
            run_emulated(cpu, "-c", "import numpy", timeout=timeout)
        except AssertionError:
            pytest.skip("this numpy itself needs a newer CPU than an emulated %s" % cpu)
    assert proc.returncode == 0, "qemu -cpu %s failed:\n%s" % (cpu, proc.stderr.decode(errors="replace"))
    return proc.stdout.decode()


_NO_AVX2 = []


def no_avx2_cpu():
    """An emulated CPU without AVX2 that this Python's numpy runs on: Nehalem (SSE4.2, no AVX),
    or Sandy Bridge (AVX, no AVX2/FMA) for a numpy built for AVX (numpy 2.4's x86-64 wheels
    stop with SIGILL on Nehalem). Both must get the scalar kernels."""
    if not _NO_AVX2:
        for cpu in ("Nehalem", "SandyBridge"):
            proc = subprocess.run([QEMU, "-cpu", cpu, sys.executable, "-c",
                                   "import numpy; numpy.ones((9, 9)) @ numpy.ones((9, 9))"],
                                  env=emulated_env(cpu), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=120)
            if proc.returncode == 0:
                _NO_AVX2.append(cpu)
                break
        else:
            _NO_AVX2.append(None)
    if _NO_AVX2[0] is None:
        pytest.skip("numpy does not run on an emulated Nehalem or Sandy Bridge")
    return _NO_AVX2[0]


@needs_x86_qemu
@pytest.mark.parametrize("cpu,expected,usable", [
    ("no-avx2", "scalar", ["scalar"]),
    ("Haswell", "avx2", ["scalar", "avx2"]),
])
def test_dispatch_and_kernels_under_emulated_cpu(cpu, expected, usable):
    from shoestring import kernels
    if cpu == "no-avx2":
        cpu = no_avx2_cpu()
    if expected not in kernels.isa_compiled():
        pytest.skip("%s kernels not compiled into this build" % expected)
    result = json.loads(run_emulated(cpu, "-c", PROBE).strip().splitlines()[-1])
    assert result["active"] == expected
    assert result["available"] == [i for i in usable if i in kernels.isa_compiled()]
    for isa, errs in result["errors"].items():
        for name, e in errs.items():
            assert e < 1e-5, "%s on emulated %s (%s): relative error %g" % (name, cpu, isa, e)


@needs_x86_qemu
def test_cli_info_reports_scalar_without_avx2():
    out = run_emulated(no_avx2_cpu(), "-m", "shoestring", "info")
    line = [ln for ln in out.splitlines() if ln.startswith("instruction set in use")]
    assert line and line[0].split(":", 1)[1].strip() == "scalar", out


@pytest.mark.parametrize("cc,qemu,flags", [
    ("aarch64-linux-gnu-gcc", "qemu-aarch64-static", []),
    ("arm-linux-gnueabihf-gcc", "qemu-arm-static", ["-mfpu=neon"]),
], ids=["aarch64", "armv7-neon"])
def test_neon_kernels_match_scalar_under_qemu(tmp_path, cc, qemu, flags):
    csrc, check = os.path.join(ROOT, "csrc"), os.path.join(ROOT, "tools", "kernel_crosscheck.c")
    if not (os.path.exists(check) and os.path.exists(os.path.join(csrc, "kernels_neon.c"))):
        pytest.skip("needs the source tree (csrc/, tools/kernel_crosscheck.c)")
    if shutil.which(cc) is None or shutil.which(qemu) is None:
        pytest.skip("needs %s and %s" % (cc, qemu))
    exe = str(tmp_path / "crosscheck")
    build = subprocess.run(
        [cc, "-O2", "-std=c99", "-static", "-DSS_HAVE_NEON", "-DSS_CHECK_TABLE=ss_kernels_neon",
         "-I", csrc] + flags + [check] + [os.path.join(csrc, f) for f in (
             "kernels_neon.c", "kernels_scalar.c", "dispatch.c", "decode.c", "sample.c")]
        + ["-lm", "-o", exe],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert build.returncode == 0, build.stdout.decode(errors="replace")
    run = subprocess.run([shutil.which(qemu), exe], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=300)
    out = run.stdout.decode(errors="replace")
    assert run.returncode == 0 and " 0 failures" in out, out
