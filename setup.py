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


def target_arch(plat_name):
    """'x86_64', 'x86', 'aarch64', 'armv7' or 'other', for the machine the wheel is built FOR."""
    if sys.platform == "darwin":
        archs = os.environ.get("ARCHFLAGS", "").replace("-arch", " ").split()
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
    machine = platform.machine().lower()
    is64 = struct.calcsize("P") == 8
    if machine in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86_64" if is64 else "x86"
    if machine in ("aarch64", "arm64", "armv8l", "armv8b") or machine.startswith("armv"):
        if is64:
            return "aarch64"
        return "armv7"
    return "other"


def isa_flags(arch, msvc):
    """Compiler flags per instruction set for this target, before probing."""
    if arch in ("x86_64", "x86"):
        if msvc:
            return {"avx2": ["/arch:AVX2"], "avx512": ["/arch:AVX512"]}
        return {"avx2": ["-mavx2", "-mfma"], "avx512": ["-mavx512f", "-mavx2", "-mfma"]}
    if arch == "aarch64":
        return {"neon": []}
    if arch == "armv7" and not msvc:
        return {"neon": ["-mfpu=neon"]}
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
            base = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=undefined"]
        else:
            base = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
        if not msvc:
            base += ["-std=c99"]
        if native:
            base += ["-march=native"]
        ext.extra_compile_args = list(ext.extra_compile_args or []) + base
        if debug and not msvc:
            ext.extra_link_args = list(ext.extra_link_args or []) + ["-fsanitize=address,undefined"]

        arch = target_arch(self.plat_name)
        wanted = {} if env_flag("SHOESTRING_NO_SIMD") else isa_flags(arch, msvc)
        built = []
        objects = []
        for isa, flags in wanted.items():
            sources = sorted(f for f in os.listdir(CSRC) if f.endswith("_%s.c" % isa))
            if not sources:
                continue
            if not self._probe(isa, flags, base):
                print("shoestring: compiler rejects %s flags %s; %s kernels not built"
                      % (isa, flags, isa))
                continue
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

        # Build info (compiler and flags) for `shoestring info`, via a generated header.
        os.makedirs(self.build_temp, exist_ok=True)
        cc = self._compiler_name()
        info = "%s; target %s; base %s; %s" % (
            cc, arch, " ".join(base),
            ", ".join("%s: %s" % (i, " ".join(wanted[i]) or "(baseline)") for i in built)
            or "no SIMD files",
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


setup(
    cffi_modules=["build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": BuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
