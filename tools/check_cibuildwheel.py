#!/usr/bin/env python3
"""Packaging checks too slow for the test suite: what cibuildwheel and `pip install shoestring`
depend on, run locally.

    python tools/check_cibuildwheel.py                    # every check
    python tools/check_cibuildwheel.py --only build,audit # some checks
    python tools/check_cibuildwheel.py --pytest-args "-q -x tests/test_kernels.py"
    python tools/check_cibuildwheel.py --sdist dist/shoestring-0.1.0.tar.gz --only pythons,numpy1
                                       # test a given sdist (e.g. of a commit) instead of building one

Checks (each prints PASS/FAIL and its time; the exit status is 1 if any failed):
  identifiers  `cibuildwheel --print-build-identifiers` for linux, macos and windows
  build        isolated `python -m build`: one sdist and one cp39-abi3 wheel, and no deprecation
               notice in its output
  audit        `auditwheel show` names no external library beyond glibc; abi3audit (if
               installed) finds no symbol outside the limited API
  pythons      the sdist in a fresh venv for every CPython >= 3.9 found (pyenv, PATH): install
               with `pip install <sdist>[test]`, `shoestring info`, the sdist's test suite
  numpy1       the same with numpy 1.x (numpy<2 installed first) on the newest Python that has it
  noflags      the sdist built with CC set to a wrapper that rejects -mavx2 (scalar only), then
               one that rejects -mavx512f (AVX2 kept): each installs, reports what it compiled,
               and passes the kernel tests
Needs network access to the package index (fresh venvs), and `build`, `auditwheel` and
`cibuildwheel` in this Python for their checks (a missing tool fails that check with the fix).
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = ("identifiers", "build", "audit", "pythons", "numpy1", "noflags")


class CheckFailed(Exception):
    pass


def run(cmd, cwd=None, env=None, timeout=1800, show=False):
    """Runs cmd; returns its combined output; raises CheckFailed with the tail on failure."""
    r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=timeout)
    if show:
        print(textwrap.indent(r.stdout.rstrip(), "    "))
    if r.returncode != 0:
        raise CheckFailed("%s exited %d:\n%s" % (" ".join(cmd), r.returncode, r.stdout[-4000:]))
    return r.stdout


def tool(name):
    exe = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(exe):
        return exe
    found = shutil.which(name)
    if not found:
        raise CheckFailed("%s is not installed: %s -m pip install %s" % (name, sys.executable, name))
    return found


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SHOESTRING_", "CIBW_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(extra)
    return env


def find_pythons():
    """(version, path) of every CPython >= 3.9 available here, one per minor version."""
    cands = glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))
    cands += [p for p in (shutil.which("python3.%d" % m) for m in range(9, 20)) if p]
    cands.append(sys.executable)
    found = {}
    for exe in cands:
        try:
            out = subprocess.run([exe, "-c", "import sys, platform; print(platform.python_implementation(),"
                                  " '%d.%d' % sys.version_info[:2], sys.version.split()[0])"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 universal_newlines=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        parts = out.split()
        if len(parts) == 3 and parts[0] == "CPython":
            minor = tuple(int(x) for x in parts[1].split("."))
            if minor >= (3, 9) and minor not in found:
                found[minor] = (parts[2], exe)
    return [found[k] for k in sorted(found)]


class State:
    def __init__(self, workdir, pytest_args):
        self.workdir = workdir
        self.pytest_args = pytest_args
        self.sdist = None
        self.wheel = None

    def need_dist(self):
        if self.sdist is None:
            check_build(self)
            print("== (the checks below use %s)" % self.sdist)


def check_identifiers(st):
    exe = tool("cibuildwheel")
    for plat in ("linux", "macos", "windows"):
        out = run([exe, "--print-build-identifiers", "--platform", plat], cwd=ROOT, env=clean_env())
        print("    %-8s %s" % (plat, " ".join(out.split())))


def check_build(st):
    out_dir = os.path.join(st.workdir, "dist")
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        import build  # noqa: F401
    except ImportError:
        raise CheckFailed("'build' is not installed: %s -m pip install build" % sys.executable)
    # DeprecationWarnings shown, then none allowed: no setuptools notice (the TOML-table license
    # one stopped builds after 2027-02-18), nothing from the build backend
    out = run([sys.executable, "-m", "build", "--outdir", out_dir, ROOT],
              env=clean_env(PYTHONWARNINGS="default::DeprecationWarning"))
    notices = [ln for ln in out.splitlines() if re.search(r"deprecat|SetuptoolsWarning", ln, re.I)]
    if notices:
        raise CheckFailed("the build printed deprecation notices:\n" + "\n".join(notices))
    files = sorted(os.listdir(out_dir))
    sdists = [f for f in files if f.endswith(".tar.gz")]
    wheels = [f for f in files if f.endswith(".whl")]
    print("    " + "\n    ".join(files))
    if len(sdists) != 1 or len(wheels) != 1:
        raise CheckFailed("expected one sdist and one wheel, got %s" % files)
    if not re.match(r"shoestring-[^-]+-cp39-abi3-[a-z0-9_]+\.whl$", wheels[0]):
        raise CheckFailed("the wheel is not tagged cp39-abi3: %s" % wheels[0])
    st.sdist = os.path.join(out_dir, sdists[0])
    st.wheel = os.path.join(out_dir, wheels[0])


def check_audit(st):
    if st.wheel is None:
        check_build(st)
    if sys.platform.startswith("linux"):
        out = run([tool("auditwheel"), "show", st.wheel], show=True)
        if "external shared libraries" in out or "requires the following" in out:
            raise CheckFailed("the wheel needs external shared libraries (see above)")
    try:
        exe = tool("abi3audit")
    except CheckFailed as exc:
        print("    abi3audit skipped: %s" % exc)
        return
    run([exe, "--strict", "--report", st.wheel], show=True)


def _venv_test(st, python, label, pre_install=(), env_extra=None, pytest_args=None):
    venv = os.path.join(st.workdir, "venv-" + re.sub(r"[^A-Za-z0-9.]+", "_", label))
    shutil.rmtree(venv, ignore_errors=True)
    t0 = time.time()
    run([python, "-m", "venv", venv])
    py = os.path.join(venv, "Scripts" if os.name == "nt" else "bin", "python")
    env = clean_env(**(env_extra or {}))
    run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], env=env)
    if pre_install:
        run([py, "-m", "pip", "install", "-q"] + list(pre_install), env=env)
    out = run([py, "-m", "pip", "install", "-v", st.sdist + "[test]"], env=env)
    t_install = time.time() - t0
    for line in out.splitlines():
        if "shoestring:" in line and "rejects" in line:
            print("    build: " + line.strip())
    src = os.path.join(st.workdir, "src")
    if not os.path.isdir(src):
        os.makedirs(src)
        run(["tar", "-xzf", st.sdist, "-C", src, "--strip-components=1"])
    env = clean_env()
    info = run([py, "-m", "shoestring", "info"], cwd=st.workdir, env=env)
    versions = run([py, "-c", "import sys, numpy, cffi; print('Python', sys.version.split()[0],"
                    " 'numpy', numpy.__version__, 'cffi', cffi.__version__)"], cwd=st.workdir, env=env)
    print("    " + versions.strip())
    print(textwrap.indent(info.rstrip(), "    "))
    args = (pytest_args or st.pytest_args).split()
    args = [a if not a.startswith("tests") else os.path.join(src, a) for a in args]
    if not any(a.startswith(src) for a in args):
        args.append(os.path.join(src, "tests"))
    t1 = time.time()
    out = run([py, "-m", "pytest", "-p", "no:cacheprovider"] + args, cwd=st.workdir, env=env)
    tail = [ln for ln in out.splitlines() if ln.strip()][-1]
    print("    pytest: %s  (install %.0f s, tests %.0f s)" % (tail.strip("= "), t_install,
                                                          time.time() - t1))
    return info


def check_pythons(st):
    st.need_dist()
    pythons = find_pythons()
    print("    found: " + ", ".join(v for v, _ in pythons))
    failed = []
    for version, exe in pythons:
        print("  -- Python %s (%s)" % (version, exe))
        try:
            _venv_test(st, exe, "py" + version)
        except CheckFailed as exc:
            print(textwrap.indent(str(exc), "    "))
            failed.append(version)
    if failed:
        raise CheckFailed("sdist failed on Python %s" % ", ".join(failed))


def check_numpy1(st):
    st.need_dist()
    for version, exe in reversed(find_pythons()):
        if tuple(int(x) for x in version.split(".")[:2]) <= (3, 12):
            _venv_test(st, exe, "numpy1-py" + version, pre_install=["numpy<2"])
            return
    raise CheckFailed("no Python <= 3.12 here (numpy 1.x has no wheels for newer ones)")


def check_noflags(st):
    st.need_dist()
    if not sys.platform.startswith("linux") or shutil.which("gcc") is None:
        raise CheckFailed("needs Linux x86-64 with gcc")
    for rejected, absent, present in (("-mavx2", {"avx2", "avx512"}, {"scalar"}),
                                      ("-mavx512f", {"avx512"}, {"scalar", "avx2"})):
        print("  -- compiler rejects %s" % rejected)
        wrapper = os.path.join(st.workdir, "cc-reject" + rejected)
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = \"%s\" ]; then echo \"cc: error:"
                    " unrecognized option '$a'\" >&2; exit 1; fi\ndone\nexec gcc \"$@\"\n" % rejected)
        os.chmod(wrapper, 0o755)
        info = _venv_test(st, sys.executable, "noflags" + rejected, env_extra={"CC": wrapper},
                          pytest_args="-q tests/test_kernels.py tests/test_packaging.py")
        m = re.search(r"compiled in:\s*(.*)", info)
        compiled = {s.strip() for s in m.group(1).split(",")} if m else set()
        if compiled & absent or not present <= compiled:
            raise CheckFailed("compiled in %s: expected %s present and %s absent"
                              % (sorted(compiled), sorted(present), sorted(absent)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(CHECKS), help="comma-separated: " + ", ".join(CHECKS))
    ap.add_argument("--pytest-args", default="-q", help="pytest arguments for the sdist venvs")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--sdist", help="use this sdist instead of building one from the checkout")
    args = ap.parse_args()
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    bad = [c for c in only if c not in CHECKS]
    if bad:
        ap.error("unknown check(s) %s: choose from %s" % (", ".join(bad), ", ".join(CHECKS)))
    workdir = tempfile.mkdtemp(prefix="shoestring-pkgcheck-")
    st = State(workdir, args.pytest_args)
    if args.sdist:
        if not os.path.isfile(args.sdist):
            ap.error("--sdist %s: no such file" % args.sdist)
        st.sdist = os.path.abspath(args.sdist)
    results = []
    for name in only:
        print("== %s" % name, flush=True)
        t0 = time.time()
        try:
            globals()["check_" + name](st)
            results.append((name, "PASS", time.time() - t0))
        except (CheckFailed, subprocess.TimeoutExpired) as exc:
            print(textwrap.indent(str(exc), "    "))
            results.append((name, "FAIL", time.time() - t0))
        sys.stdout.flush()
    print("\n== summary")
    for name, res, secs in results:
        print("  %-12s %s  %6.0f s" % (name, res, secs))
    if args.keep:
        print("work directory kept: " + workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(r == "FAIL" for _, r, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
