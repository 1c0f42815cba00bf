"""setup.py: only what pyproject.toml cannot say.

- `cffi_modules`: the extension is built by cffi from csrc/ (see build_ffi.py).
- Per-file instruction-set flags: csrc/*_avx2.c, *_avx512.c, *_neon.c are compiled by
  `build_ext` with their own flags, chosen for the *target* architecture and probed first; a
  flag the compiler rejects drops that instruction set (run-time dispatch then uses scalar).
- Build switches (environment):
    SHOESTRING_NO_SIMD=1   scalar kernels only
    SHOESTRING_NATIVE=1    add -march=native to every file (opt-in; the module is then not portable)
    SHOESTRING_DEBUG=1     -O1 -g with AddressSanitizer and UndefinedBehaviorSanitizer
- The extension uses the stable ABI: one cp39-abi3 wheel per platform.
"""
import os
import platform
import shutil
import struct
import sys
import tempfile

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")

# A tiny program per instruction set: compiles only if the compiler accepts the flags.
PROBES = {
    "avx2": "#include <immintrin.h>\nint f(float *p) { __m256 a = _mm256_loadu_ps(p);"
            " a = _mm256_fmadd_ps(a, a, a); _mm256_storeu_ps(p, a); return 0; }\n",
    "avx512": "#include <immintrin.h>\nint f(float *p) { __m512 a = _mm512_loadu_ps(p);"
              " a = _mm512_fmadd_ps(a, a, a); return (int)_mm512_reduce_add_ps(a); }\n",
    "neon": "#include <arm_neon.h>\nint f(float *p) { float32x4_t a = vld1q_f32(p);"
            " a = vmlaq_f32(a, a, a); vst1q_f32(p, a); return 0; }\n",
}


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _machine_arch(machine, is64):
    """Map a machine name plus pointer width to 'x86_64', 'x86', 'aarch64', 'armv7' or 'other'."""
    machine = machine.lower()
    if machine in ("x86_64", "amd64", "x64", "i386", "i486", "i586", "i686", "x86"):
        return "x86_64" if is64 else "x86"
    if machine in ("aarch64", "arm64", "armv8l", "armv8b") or machine.startswith("arm"):
        return "aarch64" if is64 else "armv7"
    return "other"


def target_arch(plat_name, compiler_cmd=()):
    """'x86_64', 'x86', 'aarch64', 'armv7' or 'other', for the machine the wheel is built FOR.

    Cross builds name their target in different places: macOS in ARCHFLAGS (cibuildwheel,
    pip) or in the compiler's own -arch flags (python.org universal2 Pythons), Windows in the
    build_ext plat_name (win32 / win-amd64 / win-arm64), crossenv and cibuildwheel in
    _PYTHON_HOST_PLATFORM. A 32-bit Python on a 64-bit kernel (Raspberry Pi OS 32-bit on a
    64-bit kernel: machine 'aarch64', 4-byte pointers) builds for the 32-bit target.
    """
    is64 = struct.calcsize("P") == 8
    if sys.platform == "darwin":
        archs = os.environ.get("ARCHFLAGS", "").replace("-arch", " ").split()
        if not archs:
            cmd = list(compiler_cmd)
            archs = [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "-arch"]
        if len(set(archs)) > 1:
            return "other"  # universal2: one set of flags cannot fit both slices
        if archs:
            return {"arm64": "aarch64", "x86_64": "x86_64"}.get(archs[0], "other")
    if sys.platform == "win32":
        plat = (plat_name or "").lower()
        if "arm64" in plat:
            return "aarch64"
        if plat in ("win32",) or plat.endswith("-win32"):
            return "x86"
        if "amd64" in plat:
            return "x86_64"
    host = os.environ.get("_PYTHON_HOST_PLATFORM", "")
    if host and sys.platform != "darwin" and sys.platform != "win32":
        machine = host.rsplit("-", 1)[-1]  # linux-aarch64, linux-armv7l, linux-i686, ...
        return _machine_arch(machine, machine.endswith("64"))
    return _machine_arch(platform.machine(), is64)


def isa_flags(arch, msvc):
    """Candidate compiler flag sets per instruction set for this target, tried in order.

    The first set the compiler accepts (see PROBES) is used; none accepted drops that set.
    """
    if arch in ("x86_64", "x86"):
        if msvc:
            return {"avx2": [["/arch:AVX2"]], "avx512": [["/arch:AVX512"]]}
        return {"avx2": [["-mavx2", "-mfma"]], "avx512": [["-mavx512f", "-mavx2", "-mfma"]]}
    if arch == "aarch64":
        return {"neon": [[]]}  # NEON (AdvSIMD) is baseline on 64-bit ARM
    if arch == "armv7" and not msvc:
        # armhf (Debian, Raspberry Pi OS): the FPU flag is enough. A compiler defaulting to
        # ARMv6 (Raspbian's) needs the architecture too; soft-float armel needs softfp.
        # NEON is used only when the CPU's AT_HWCAP says so (dispatch.c).
        return {"neon": [["-mfpu=neon"], ["-march=armv7-a", "-mfpu=neon"],
                         ["-march=armv7-a", "-mfpu=neon", "-mfloat-abi=softfp"]]}
    return {}


class BuildExt(build_ext):
    """Compiles the per-instruction-set sources with their own flags, then the extension."""

    def build_extension(self, ext):
        msvc = self.compiler.compiler_type == "msvc"
        debug = env_flag("SHOESTRING_DEBUG")
        native = env_flag("SHOESTRING_NATIVE") and not msvc
        if msvc:
            base = ["/O2", "/fp:precise"]
        elif debug:
            # -fno-wrapv undoes Python's -fwrapv: UBSan then checks signed overflow, and GCC
            # compiles the SIMD kernels in seconds instead of many minutes
            base = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-wrapv",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
        else:
            base = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
        if not msvc:
            base += ["-std=c99"]
        if native:
            base += ["-march=native"]
        ext.extra_compile_args = list(ext.extra_compile_args or []) + base
        if debug and not msvc:
            ext.extra_link_args = list(ext.extra_link_args or []) + ["-fsanitize=address,undefined"]

        arch = target_arch(self.plat_name, getattr(self.compiler, "compiler_so", None) or ())
        candidates = {} if env_flag("SHOESTRING_NO_SIMD") else isa_flags(arch, msvc)
        wanted = {}
        built = []
        objects = []
        for isa, flag_sets in candidates.items():
            sources = sorted(f for f in os.listdir(CSRC) if f.endswith("_%s.c" % isa))
            if not sources:
                continue
            flags = next((fl for fl in flag_sets if self._probe(isa, fl, base)), None)
            if flags is None:
                print("shoestring: compiler rejects %s flags %s; %s kernels not built"
                      % (isa, " or ".join(" ".join(fl) for fl in flag_sets), isa))
                continue
            wanted[isa] = flags
            try:
                objs = self.compiler.compile(
                    [os.path.join("csrc", s) for s in sources],
                    output_dir=self.build_temp,
                    include_dirs=[CSRC],
                    extra_postargs=base + flags,
                )
            except Exception as exc:  # a compiler that accepts the flag but not our code
                print("shoestring: %s kernels failed to compile (%s); using scalar" % (isa, exc))
                continue
            objects += objs
            built.append(isa)
            ext.define_macros = list(ext.define_macros or []) + [("SS_HAVE_%s" % isa.upper(), "1")]
        ext.extra_objects = list(ext.extra_objects or []) + objects
        # Relink when any C file or header changed: build_ext's up-to-date check sees only the
        # generic sources, so an edit to a *_<isa>.c or a header would install a stale module.
        ext.depends = list(ext.depends or []) + sorted(
            os.path.join("csrc", f) for f in os.listdir(CSRC) if f.endswith((".c", ".h")))

        # Build info (compiler and flags) for `shoestring info`, via a generated header.
        os.makedirs(self.build_temp, exist_ok=True)
        cc = self._compiler_name()
        info = "%s; target %s; base %s; %s" % (
            cc, arch, " ".join(base),
            ", ".join("%s: %s" % (i, " ".join(wanted[i]) or "(baseline)") for i in built)
            or "scalar only",
        )
        with open(os.path.join(self.build_temp, "ss_build_info.h"), "w") as f:
            f.write("#define SS_BUILD_INFO %s\n" % c_string(info))
        ext.include_dirs = list(ext.include_dirs or []) + [self.build_temp]
        ext.define_macros = list(ext.define_macros or []) + [("SS_HAVE_BUILD_INFO_H", "1")]
        super().build_extension(ext)

    def _probe(self, isa, flags, base):
        tmp = tempfile.mkdtemp(prefix="ss_probe_")
        try:
            src = os.path.join(tmp, "probe_%s.c" % isa)
            with open(src, "w") as f:
                f.write(PROBES[isa])
            self.compiler.compile([src], output_dir=tmp, extra_postargs=base + flags)
            return True
        except Exception:
            return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _compiler_name(self):
        if self.compiler.compiler_type == "msvc":
            return "msvc"
        exe = getattr(self.compiler, "compiler_so", None) or ["cc"]
        return os.path.basename(exe[0])


def c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# pyproject.toml's SPDX `license` string and `license-files` need setuptools 77 (PEP 639). An
# isolated build (plain `pip install .`, `python -m build`) gets it from build-system.requires; a
# build without isolation uses the environment's setuptools, which may be older.
MIN_SETUPTOOLS = (77, 0)


def setuptools_too_old(version):
    """A one-line error when setuptools `version` cannot read pyproject.toml, else None."""
    parts = []
    for p in version.split(".")[:2]:
        digits = "".join(c for c in p if c.isdigit()) or "0"
        parts.append(int(digits))
    if tuple(parts) >= MIN_SETUPTOOLS:
        return None
    return ("shoestring: setuptools %s is too old to build this package (pyproject.toml's SPDX"
            " license needs setuptools >= 77): pip install --upgrade 'setuptools>=77'"
            " 'packaging>=24.2', or build with isolation (plain `pip install .`)" % version)


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import its helpers
    import setuptools
    _err = setuptools_too_old(setuptools.__version__)
    if _err:
        sys.exit(_err)
    setup(
        cffi_modules=["build_ffi.py:ffibuilder"],
        cmdclass={"build_ext": BuildExt},
        options={"bdist_wheel": {"py_limited_api": "cp39"}},
    )
