"""The release: tools/check_release.py on the real workflows and on broken copies of them, a fresh
build checked for deprecation notices, and the single-sourced version.

Needs the source checkout (.github/, pyproject.toml) and PyYAML (the test extra); the build
needs `build`, setuptools >= 77 and a C compiler (.ci/run installs them). Each part skips
cleanly, naming what is missing, where that is absent (e.g. an installed wheel's test run).
"""
import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = os.path.join(ROOT, ".github", "workflows")
TOOL = os.path.join(ROOT, "tools", "check_release.py")

if not (os.path.isdir(WORKFLOWS) and os.path.exists(TOOL)):
    pytest.skip("needs the source checkout (.github/workflows, tools/)", allow_module_level=True)
yaml = pytest.importorskip("yaml", reason="PyYAML reads the workflows: pip install pyyaml")


@pytest.fixture(scope="module")
def cr():
    spec = importlib.util.spec_from_file_location("check_release_under_test", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _problems(results, name=None):
    return [p for n, probs, _, _ in results if name in (None, n) for p in probs]


def _write_workflows(tmp_path, wheels):
    d = tmp_path / "workflows"
    d.mkdir(parents=True)
    shutil.copy(os.path.join(WORKFLOWS, "ci.yml"), str(d / "ci.yml"))
    with open(str(d / "wheels.yml"), "w") as f:
        yaml.safe_dump(wheels, f, sort_keys=False)
    return str(d)


@pytest.fixture
def wheels(cr):
    return cr.load_yaml(os.path.join(WORKFLOWS, "wheels.yml"))


def test_release_checks_pass_on_this_checkout(cr):
    results = cr.run_checks(ROOT)
    assert _problems(results) == []
    names = [n for n, _, _, _ in results]
    assert names == ["trigger+needs", "artifacts", "qemu", "identifiers", "version"]
    skipped = {n: why for n, _, _, why in results if why}
    assert set(skipped) <= {"identifiers"}, skipped  # only for want of cibuildwheel


def test_check_fails_when_the_armv7l_job_registers_no_qemu(cr, wheels, tmp_path):
    job = wheels["jobs"]["test_armv7l_wheel"]
    before = len(job["steps"])
    job["steps"] = [s for s in job["steps"]
                    if not str(s.get("uses", "")).startswith("docker/setup-qemu-action")]
    assert len(job["steps"]) == before - 1
    wf = _write_workflows(tmp_path, wheels)
    probs = _problems(cr.run_checks(ROOT, wf, identifiers=False), "qemu")
    assert len(probs) == 1, probs
    assert "test_armv7l_wheel" in probs[0] and "qemu-arm" in probs[0], probs
    # and the command line says so with exit status 1
    r = subprocess.run([sys.executable, TOOL, "--workflows", wf, "--no-identifiers"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=120)
    assert r.returncode == 1, r.stdout
    assert re.search(r"^qemu +FAIL", r.stdout, re.M), r.stdout


def test_unmodified_copy_passes_so_the_failure_above_is_the_removal(cr, wheels, tmp_path):
    wf = _write_workflows(tmp_path, wheels)
    assert _problems(cr.run_checks(ROOT, wf, identifiers=False)) == []
    r = subprocess.run([sys.executable, TOOL, "--workflows", wf, "--no-identifiers"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=120)
    assert r.returncode == 0, r.stdout


def test_qemu_step_must_come_before_use_and_hold_for_the_matrix_entry(cr, wheels, tmp_path):
    # registered after the script runs: too late
    w = copy.deepcopy(wheels)
    steps = w["jobs"]["test_armv7l_wheel"]["steps"]
    q = next(i for i, s in enumerate(steps) if "setup-qemu-action" in str(s.get("uses", "")))
    steps.append(steps.pop(q))
    probs = _problems(cr.run_checks(ROOT, _write_workflows(tmp_path / "a", w), False), "qemu")
    assert any("test_armv7l_wheel" in p for p in probs), probs
    # the build job's qemu step limited to the aarch64 entry: the armv7l build lacks qemu-arm
    w = copy.deepcopy(wheels)
    for s in w["jobs"]["build_wheels"]["steps"]:
        if "setup-qemu-action" in str(s.get("uses", "")):
            s["if"] = "matrix.archs == 'aarch64'"
    probs = _problems(cr.run_checks(ROOT, _write_workflows(tmp_path / "b", w), False), "qemu")
    assert len(probs) == 1 and "build_wheels" in probs[0] and "armv7l" in probs[0], probs
    # registering arm64 only is not enough for armhf
    w = copy.deepcopy(wheels)
    for s in w["jobs"]["test_armv7l_wheel"]["steps"]:
        if "setup-qemu-action" in str(s.get("uses", "")):
            s["with"]["platforms"] = "arm64"
    probs = _problems(cr.run_checks(ROOT, _write_workflows(tmp_path / "c", w), False), "qemu")
    assert any("qemu-arm " in p for p in probs), probs


@pytest.mark.parametrize("breakage, expected", [
    (lambda w: w["jobs"]["publish"]["needs"].append("sign_wheels"), "does not exist"),
    (lambda w: w["jobs"]["test_sdist"].__setitem__("if", "github.event_name == 'pull_request'"),
     "test_sdist: needed by publish but its if:"),
    (lambda w: w["jobs"]["publish"].__setitem__("if", "github.ref == 'refs/heads/main'"),
     "publish: its if:"),
    (lambda w: w["on"]["push"].__setitem__("tags", ["release-*"]), "do not match v"),
    (lambda w: w["jobs"]["build_sdist"].__setitem__("needs", "test_sdist"), "needs cycle"),
    (lambda w: w["jobs"]["publish"]["steps"].pop(1), "does not download artifact 'sdist'"),
    (lambda w: w["jobs"]["test_armv7l_wheel"]["steps"][1]["with"].__setitem__(
        "name", "cibw-wheels-ubuntu-24.04-arm-armv7"), "which no job it needs uploads"),
])
def test_publish_graph_breakages_are_caught(cr, wheels, tmp_path, breakage, expected):
    w = copy.deepcopy(wheels)
    breakage(w)
    probs = _problems(cr.run_checks(ROOT, _write_workflows(tmp_path, w), identifiers=False))
    assert any(expected in p for p in probs), probs


def test_readme_platform_table_must_match_the_identifiers(cr, wheels, tmp_path):
    if cr.cibuildwheel_exe() is None:
        pytest.skip("cibuildwheel is not installed (pip install cibuildwheel)")
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    table = cr.readme_wheels(readme)
    assert "manylinux_*_armv7l" in table and "win_arm64" in table, table
    probs, notes = [], []
    cr.check_identifiers(ROOT, wheels, "0.1.0", readme, probs, notes)
    assert probs == [], probs
    # a README row dropped, and a runner dropped: both reported
    short = readme.replace(", `musllinux_*_aarch64`", "")
    probs = []
    cr.check_identifiers(ROOT, wheels, "0.1.0", short, probs, [])
    assert any("lacks" in p and "musllinux_*_aarch64" in p for p in probs), probs
    w = copy.deepcopy(wheels)
    w["jobs"]["build_wheels"]["strategy"]["matrix"]["include"] = [
        e for e in w["jobs"]["build_wheels"]["strategy"]["matrix"]["include"]
        if e["os"] != "windows-11-arm"]
    probs = []
    cr.check_identifiers(ROOT, w, "0.1.0", readme, probs, [])
    assert any("no runner builds" in p and "win_arm64" in p for p in probs), probs
    # an Apple-silicon wheel cross-built on the Intel runner cannot be tested there
    w = copy.deepcopy(wheels)
    for e in w["jobs"]["build_wheels"]["strategy"]["matrix"]["include"]:
        if e["os"] == "macos-15-intel":
            e["archs"] = "x86_64,arm64"
    probs = []
    cr.check_identifiers(ROOT, w, "0.1.0", readme, probs, [])
    assert any("cross-built" in p and "macosx_arm64" in p for p in probs), probs


@pytest.mark.parametrize("expr, expected", [
    ("github.event_name == 'push' && startsWith(github.ref, 'refs/tags/v')", True),
    ("${{ github.event_name == 'pull_request' }}", False),
    ("matrix.archs == 'armv7l'", True),
    ("matrix.archs != 'armv7l' || runner.os == 'Linux'", True),
    ("!(runner.os == 'linux') && success()", False),        # comparisons ignore case
    ("contains(github.ref, 'tags') && always()", True),
    ("failure()", False),
])
def test_expression_evaluator(cr, expr, expected):
    ctx = cr.push_context("0.1.0")
    ctx.update(matrix={"archs": "armv7l"}, runner={"os": "Linux"})
    assert cr.condition(expr, ctx) is expected


def test_expression_evaluator_refuses_what_it_cannot_know(cr):
    with pytest.raises(cr.Unknown):
        cr.condition("needs.build.outputs.ok == 'true'", cr.push_context("0.1.0"))
    with pytest.raises(cr.Unknown):
        cr.condition("hashFiles('x') != ''", cr.push_context("0.1.0"))


def test_matrix_include_follows_github_rules(cr):
    job = {"strategy": {"matrix": {"os": ["a"], "py": ["1", "2"], "np": [""],
                                   "include": [{"os": "a", "py": "1", "extra": "x"},
                                               {"os": "a", "py": "1", "np": "old"},
                                               {"os": "b", "py": "3"}],
                                   "exclude": [{"py": "2"}]}}}
    got = cr.matrix_entries(job, {})
    assert got == [{"os": "a", "py": "1", "np": "", "extra": "x"},
                   {"os": "a", "py": "1", "np": "old"}, {"os": "b", "py": "3"}]


def test_cibuildwheel_config_for_armv7l_and_musllinux():
    try:
        import tomllib
    except ImportError:
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        cfg = tomllib.load(f)["tool"]["cibuildwheel"]
    # numpy has cp39 musllinux wheels: no musllinux test skip
    assert not [s for s in cfg["test-skip"] if "musllinux" in s], cfg["test-skip"]
    over = [o for o in cfg.get("overrides", []) if o["select"] == "*-manylinux_armv7l"]
    assert len(over) == 1, cfg.get("overrides")
    before = over[0]["before-all"]
    before = " ".join(before) if isinstance(before, list) else before
    assert "libffi-dev" in before and "apt-get install" in before, before


# ---------------------------------------------------------------- the build and the version

def _version_py():
    spec = importlib.util.spec_from_file_location("check_release_version", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.package_version(ROOT)


def _setuptools_ok():
    from importlib import metadata
    for dist in ("build", "setuptools", "cffi"):
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "%s is not installed (pip install build 'setuptools>=77' cffi)" % dist
    for dist, low in (("setuptools", (77, 0)), ("packaging", (24, 2))):
        try:
            v = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue  # setuptools then uses its own copy of packaging
        if tuple(int(p) for p in v.split(".")[:2] if p.isdigit()) < low:
            return "%s %s is too old to build (pip install -U 'setuptools>=77' 'packaging>=24.2')" % (dist, v)
    return None


def _copy_tracked(dst):
    skip = {"build", "dist", ".git", ".venv", ".venv-ci", "__pycache__", ".pytest_cache",
            ".hypothesis", "runs"}
    shutil.copytree(ROOT, dst, ignore=lambda d, names: [
        n for n in names if n in skip or n.endswith((".egg-info", ".so", ".pyd", ".o"))])


def test_version_is_read_without_importing_the_package(tmp_path):
    why = _setuptools_ok()
    if why:
        pytest.skip(why)
    src = tmp_path / "src"
    (src / "shoestring").mkdir(parents=True)
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, f), str(src / f))
    shutil.copy(os.path.join(ROOT, "shoestring", "version.py"), str(src / "shoestring"))
    (src / "shoestring" / "__init__.py").write_text("raise ImportError('imported!')\n")
    code = ("from setuptools.config.pyprojecttoml import read_configuration;"
            "print(read_configuration('pyproject.toml')['project']['version'])")
    r = subprocess.run([sys.executable, "-c", code], cwd=str(src), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
    assert r.stdout.strip().splitlines()[-1] == _version_py()
    assert "imported!" not in r.stdout


def test_fresh_build_prints_no_deprecation_notice(tmp_path):
    """`python -m build` (sdist, then the wheel from it) with DeprecationWarnings shown: no
    notice from setuptools (e.g. the `license = {text}` one that stops working 2027-02-18).
    Without isolation, so it needs no network: the environment's setuptools (>= 77, as
    build-system.requires says) builds it. Scalar kernels only, to keep the compile short; the
    notices come from the configuration, not the compiler flags."""
    why = _setuptools_ok()
    if why:
        pytest.skip(why)
    if shutil.which(os.environ.get("CC", "gcc")) is None and shutil.which("cc") is None:
        pytest.skip("no C compiler")
    src = tmp_path / "src"
    _copy_tracked(str(src))
    out = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SHOESTRING_", "SETUPTOOLS_", "PYTHONWARNINGS"))}
    env.update(SHOESTRING_NO_SIMD="1", PYTHONWARNINGS="default::DeprecationWarning,"
               "default::PendingDeprecationWarning")
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                        str(src)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:]
    notices = [ln for ln in r.stdout.splitlines()
               if re.search(r"deprecat|SetuptoolsWarning|2027", ln, re.I)]
    assert notices == [], "\n".join(notices)
    version = _version_py()
    files = sorted(os.listdir(str(out)))
    assert files[0] == "shoestring-%s-cp39-abi3-%s.whl" % (version, files[0].split("-")[-1][:-4])
    assert files[1] == "shoestring-%s.tar.gz" % version
    with zipfile.ZipFile(str(out / files[0])) as z:
        meta = z.read("shoestring-%s.dist-info/METADATA" % version).decode()
        names = z.namelist()
    assert "License-Expression: MIT" in meta and "License-File: LICENSE" in meta, meta[:2000]
    assert not re.search(r"^License: ", meta, re.M)
    for label in ("Homepage", "Issues", "Changelog"):
        assert re.search(r"^Project-URL: %s, https://" % label, meta, re.M), label
    assert re.search(r"^Classifier: Development Status :: ", meta, re.M)
    assert "shoestring-%s.dist-info/licenses/LICENSE" % version in names
    # every module and asset of the package is in the wheel (the corpus, the serve page, ...)
    pkg = src / "shoestring"
    wanted = sorted(str(f.relative_to(src)).replace(os.sep, "/") for f in pkg.rglob("*")
                    if f.is_file() and f.suffix in (".py", ".txt", ".html", ".js", ".css", ".json")
                    and "__pycache__" not in f.parts)
    missing = [f for f in wanted if f not in names]
    assert not missing, "the wheel lacks %s (package-data in pyproject.toml)" % missing
    assert "shoestring/data/chat.txt" in wanted
    with tarfile.open(str(out / files[1])) as tf:
        shipped = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"CHANGELOG.md", "LICENSE", "shoestring/version.py"} <= shipped


def test_installed_version_is_the_source_version():
    from importlib import metadata
    import shoestring
    try:
        installed = metadata.version("shoestring")
    except metadata.PackageNotFoundError:
        pytest.skip("shoestring is not installed as a distribution")
    assert shoestring.__version__ == installed == _version_py()
