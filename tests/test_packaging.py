"""Packaging: wheel selection, target-architecture flags, a build whose compiler rejects a SIMD
flag, and the sdist's contents.

These run from a source checkout or an unpacked sdist (setup.py next to tests/); where that or a
tool is missing (cibuildwheel, a C compiler, setuptools, git) the test is skipped, so the suite
still runs against an installed wheel (cibuildwheel's test step). The slower end-to-end checks
(isolated `python -m build`, auditwheel, fresh venvs per Python, the ARM roots) live in
tools/check_cibuildwheel.py and tools/test_arm64.sh.
"""
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP_PY = os.path.join(ROOT, "setup.py")
HAVE_SOURCE = os.path.exists(SETUP_PY) and os.path.isdir(os.path.join(ROOT, "csrc"))
needs_source = pytest.mark.skipif(not HAVE_SOURCE, reason="needs the source tree (setup.py, csrc/)")

EXPECTED_IDENTIFIERS = {
    "linux": [
        "cp39-manylinux_x86_64", "cp314-manylinux_x86_64",
        "cp39-manylinux_aarch64", "cp314-manylinux_aarch64",
        "cp39-manylinux_armv7l",
        "cp39-musllinux_x86_64", "cp314-musllinux_x86_64",
        "cp39-musllinux_aarch64", "cp314-musllinux_aarch64",
    ],
    "macos": ["cp39-macosx_x86_64", "cp39-macosx_arm64", "cp314-macosx_x86_64", "cp314-macosx_arm64"],
    "windows": ["cp39-win_amd64", "cp314-win_amd64", "cp39-win_arm64", "cp314-win_arm64"],
}


def _cibuildwheel():
    exe = os.path.join(os.path.dirname(sys.executable), "cibuildwheel")
    return exe if os.path.exists(exe) else shutil.which("cibuildwheel")


@needs_source
@pytest.mark.parametrize("plat", sorted(EXPECTED_IDENTIFIERS))
def test_cibuildwheel_builds_one_abi3_wheel_per_platform_arch(plat):
    exe = _cibuildwheel()
    if exe is None:
        pytest.skip("cibuildwheel is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIBW_")}
    r = subprocess.run([exe, "--print-build-identifiers", "--platform", plat], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = r.stdout.split()
    assert sorted(got) == sorted(EXPECTED_IDENTIFIERS[plat])
    # Only cp39 builds: every cp314 identifier reuses (and tests) the cp39-abi3 wheel.
    built = sorted(i.split("-", 1)[1] for i in got if i.startswith("cp39-"))
    assert len(built) == len(set(built))


@pytest.fixture(scope="module")
def setup_module_ns():
    """setup.py's helpers, imported without running setup()."""
    if not HAVE_SOURCE:
        pytest.skip("needs the source tree (setup.py, csrc/)")
    pytest.importorskip("setuptools")
    spec = importlib.util.spec_from_file_location("shoestring_setup_under_test", SETUP_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Pointer:
    def __init__(self, size):
        self.size = size

    def calcsize(self, fmt):
        assert fmt == "P"
        return self.size


@pytest.mark.parametrize("sysplat, machine, ptr, env, plat_name, cmd, expected", [
    ("linux", "x86_64", 8, {}, "linux-x86_64", (), "x86_64"),
    ("linux", "x86_64", 4, {}, "linux-x86_64", (), "x86"),          # 32-bit Python, 64-bit kernel
    ("linux", "i686", 4, {}, "linux-i686", (), "x86"),
    ("linux", "aarch64", 8, {}, "linux-aarch64", (), "aarch64"),
    ("linux", "aarch64", 4, {}, "linux-aarch64", (), "armv7"),      # Pi OS 32-bit on a 64-bit kernel
    ("linux", "armv7l", 4, {}, "linux-armv7l", (), "armv7"),
    ("linux", "armv6l", 4, {}, "linux-armv6l", (), "armv7"),        # flags probed; NEON by HWCAP
    ("linux", "x86_64", 8, {"_PYTHON_HOST_PLATFORM": "linux-aarch64"}, "linux-aarch64", (), "aarch64"),
    ("linux", "x86_64", 8, {"_PYTHON_HOST_PLATFORM": "linux-armv7l"}, "linux-armv7l", (), "armv7"),
    ("linux", "riscv64", 8, {}, "linux-riscv64", (), "other"),
    ("darwin", "arm64", 8, {"ARCHFLAGS": "-arch x86_64"}, "macosx-11.0-arm64", (), "x86_64"),
    ("darwin", "x86_64", 8, {"ARCHFLAGS": "-arch arm64"}, "macosx-10.9-x86_64", (), "aarch64"),
    ("darwin", "arm64", 8, {"ARCHFLAGS": "-arch arm64 -arch x86_64"}, "", (), "other"),
    ("darwin", "arm64", 8, {}, "", ("clang", "-arch", "arm64", "-arch", "x86_64"), "other"),
    ("darwin", "arm64", 8, {}, "", ("clang", "-arch", "arm64"), "aarch64"),
    ("darwin", "arm64", 8, {}, "", ("clang",), "aarch64"),
    ("win32", "AMD64", 8, {}, "win-amd64", (), "x86_64"),
    ("win32", "AMD64", 8, {}, "win-arm64", (), "aarch64"),           # cross-built on x64
    ("win32", "AMD64", 4, {}, "win32", (), "x86"),
])
def test_target_arch_names_the_machine_the_wheel_is_for(setup_module_ns, monkeypatch, sysplat,
                                                        machine, ptr, env, plat_name, cmd, expected):
    for k in ("ARCHFLAGS", "_PYTHON_HOST_PLATFORM"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(setup_module_ns.sys, "platform", sysplat)
    monkeypatch.setattr(setup_module_ns.platform, "machine", lambda: machine)
    monkeypatch.setattr(setup_module_ns, "struct", _Pointer(ptr))
    assert setup_module_ns.target_arch(plat_name, cmd) == expected


def test_isa_flags_per_target(setup_module_ns):
    f = setup_module_ns.isa_flags
    assert f("x86_64", False)["avx2"][0] == ["-mavx2", "-mfma"]
    assert "-mavx512f" in f("x86_64", False)["avx512"][0]
    assert f("x86", True) == {"avx2": [["/arch:AVX2"]], "avx512": [["/arch:AVX512"]]}
    assert f("aarch64", False) == {"neon": [[]]} and f("aarch64", True) == {"neon": [[]]}
    assert f("armv7", False)["neon"][0] == ["-mfpu=neon"]
    assert all("-mfpu=neon" in fl for fl in f("armv7", False)["neon"])
    assert f("other", False) == {}


def _can_build_here():
    if not HAVE_SOURCE:
        return "needs the source tree (setup.py, csrc/)"
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return "the flag-rejecting compiler wrapper is for x86-64 Linux"
    if shutil.which("gcc") is None:
        return "gcc is not installed"
    for dist in ("setuptools", "cffi", "pip"):
        # installed-distribution metadata, not find_spec: setuptools' distutils shim stops
        # working in a process that has looked up "pip" through the import system
        if not _installed(dist):
            return "%s is not installed (needed for a --no-build-isolation build)" % dist
    return _old_setuptools()


def _installed(dist):
    from importlib import metadata
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def _old_setuptools():
    """Why this environment's setuptools cannot build the package without isolation, or None."""
    # the installed version, without importing setuptools here (its distutils shim must not
    # load after the standard library's distutils)
    from importlib import metadata
    try:
        version = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        return "setuptools is not installed"
    major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if major_minor < (77, 0):  # the SPDX license in pyproject.toml; setup.py says the same
        return ("setuptools %s < 77 cannot read pyproject.toml (pip install -U 'setuptools>=77')"
                % version)
    if _installed("packaging"):  # setuptools >= 77 reads SPDX expressions with packaging >= 24.2
        v = tuple(int(p) for p in metadata.version("packaging").split(".")[:2] if p.isdigit())
        if v < (24, 2):
            return "packaging %s < 24.2 (pip install -U 'packaging>=24.2')" % metadata.version("packaging")
    return None


def _copy_source(dst):
    """The files an sdist ships, without build outputs (other builds may be running in ROOT)."""
    skip = {"build", "dist", ".git", ".venv", ".venv-ci", "__pycache__", ".pytest_cache",
            ".hypothesis"}
    shutil.copytree(ROOT, dst, ignore=lambda d, names: [
        n for n in names if n in skip or n.endswith((".egg-info", ".so", ".pyd", ".o"))])


# Both SIMD sets need -mavx2, so this build is scalar only. tools/check_cibuildwheel.py also
# rejects -mavx512f (AVX2 kept, AVX-512 dropped) and runs the kernel tests on both builds.
@pytest.mark.parametrize("rejected, absent, present", [
    ("-mavx2", {"avx2", "avx512"}, {"scalar"}),
])
def test_build_with_a_compiler_that_rejects_a_simd_flag(tmp_path, rejected, absent, present):
    why = _can_build_here()
    if why:
        pytest.skip(why)
    src = tmp_path / "src"
    _copy_source(str(src))
    wrapper = tmp_path / "cc"
    wrapper.write_text(textwrap.dedent("""\
        #!/bin/sh
        for a in "$@"; do
            if [ "$a" = "%s" ]; then echo "cc: error: unrecognized option '$a'" >&2; exit 1; fi
        done
        exec gcc "$@"
        """ % rejected))
    wrapper.chmod(0o755)
    env = dict(os.environ, CC=str(wrapper), PIP_NO_INPUT="1")
    for k in ("SHOESTRING_NO_SIMD", "SHOESTRING_NATIVE", "SHOESTRING_DEBUG", "SHOESTRING_ISA",
              "CFLAGS", "LDSHARED"):
        env.pop(k, None)
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-build-isolation",
                        "--no-deps", "-w", str(wheels), str(src)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "compiler rejects" in r.stdout + r.stderr
    (whl,) = os.listdir(str(wheels))
    assert "-cp39-abi3-" in whl, whl
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target",
                        str(site), str(wheels / whl)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    check = textwrap.dedent("""\
        import json, numpy as np
        from shoestring import kernels, ref
        out = {"compiled": kernels.isa_compiled(), "info": kernels.build_info(), "err": {}}
        rng = np.random.default_rng(0)
        x = rng.standard_normal((7, 19)).astype(np.float32)
        W = rng.standard_normal((13, 19)).astype(np.float32)
        b = rng.standard_normal(13).astype(np.float32)
        want = ref.matmul_forward(x, W, b)
        for isa in kernels.isa_available():
            kernels.set_isa(isa)
            got = np.zeros((7, 13), np.float32)
            kernels.matmul_forward(got, x, W, b)
            out["err"][isa] = float(np.max(np.abs(got - want)))
        print(json.dumps(out))
        """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOESTRING_")}
    env["PYTHONPATH"] = str(site)
    r = subprocess.run([sys.executable, "-c", check], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    compiled = set(res["compiled"])
    assert not (compiled & absent), res
    assert present <= compiled, res
    assert res["err"] and max(res["err"].values()) < 1e-4, res


@needs_source
def test_sdist_ships_every_tracked_source_test_and_tool(tmp_path):
    """An sdist must build and test on a machine with only a C compiler."""
    if shutil.which("git") is None or not os.path.exists(os.path.join(ROOT, ".git")):
        pytest.skip("needs a git checkout")
    if not _installed("setuptools") or not _installed("cffi"):
        pytest.skip("needs setuptools and cffi")
    why = _old_setuptools()
    if why:
        pytest.skip(why)
    r = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:  # e.g. a copied checkout owned by another user (safe.directory)
        pytest.skip("git cannot list the files here: %s" % r.stderr.strip()[:200])
    tracked = [f for f in r.stdout.splitlines() if os.path.exists(os.path.join(ROOT, f))]
    src = tmp_path / "src"
    for f in tracked:
        os.makedirs(os.path.dirname(str(src / f)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), str(src / f))
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(dist)], cwd=str(src),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (name,) = os.listdir(str(dist))
    assert name == "shoestring-%s.tar.gz" % _version()
    with tarfile.open(str(dist / name)) as tf:
        shipped = {m.split("/", 1)[1] for m in tf.getnames() if "/" in m}
    wanted = [f for f in tracked
              if f.startswith(("csrc/", "shoestring/", "tests/", "tools/"))
              or f in ("setup.py", "build_ffi.py", "pyproject.toml", "README.md", "LICENSE",
                       "MANIFEST.in", "CHANGELOG.md")]
    missing = sorted(set(wanted) - shipped)
    assert not missing, "MANIFEST.in misses these tracked files: %s" % missing
    for must in ("csrc/shoestring.h", "csrc/ss_internal.h", "csrc/dispatch.c", "build_ffi.py",
                 "setup.py", "tests/test_packaging.py", "tools/test_arm64.sh"):
        assert must in shipped, must


def _version():
    """shoestring.__version__ as written in shoestring/version.py (tools/check_release.py reads it)."""
    spec = importlib.util.spec_from_file_location(
        "check_release_for_version", os.path.join(ROOT, "tools", "check_release.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.package_version(ROOT)


def test_extension_uses_the_stable_abi():
    """The installed module is the abi3 build (one wheel for CPython 3.9 and later)."""
    from shoestring import _shoestring_c
    path = _shoestring_c.__file__
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ""
    if sys.platform == "win32":  # abi3 modules on Windows are plain .pyd, no version tag
        assert os.path.basename(path) == "_shoestring_c.pyd", path
    else:
        assert ".abi3." in os.path.basename(path), path
        assert suffix not in os.path.basename(path) or ".abi3." in suffix, (path, suffix)
