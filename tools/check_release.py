#!/usr/bin/env python3
"""Checks of the release workflow that need no runner: would a tag push really publish?

    python tools/check_release.py                       # every check, this checkout
    python tools/check_release.py --workflows DIR       # check other workflow files (e.g. a copy)
    python tools/check_release.py --no-identifiers      # skip the check that runs cibuildwheel

Reads .github/workflows/wheels.yml and ci.yml (PyYAML), pyproject.toml, README.md, CHANGELOG.md
and shoestring/version.py, and checks, for a push of the tag v<version>:

  trigger      the workflow runs on that tag push, and `publish` runs on it (its `if:` holds)
  needs        every job `publish` needs, directly or through other jobs, exists, has no cycle,
               runs on that push (its `if:` holds) and has a non-empty matrix
  artifacts    every artifact a needed job or `publish` downloads is uploaded by a job it needs,
               and `publish` downloads every artifact those jobs upload (all wheels, the sdist)
  qemu         every step that runs foreign code through binfmt_misc (cibuildwheel for a Linux
               architecture the runner cannot execute, tools/test_arm64.sh) comes after a step
               registering that qemu handler (docker/setup-qemu-action, tonistiigi/binfmt,
               update-binfmts) whose `if:` holds for the same matrix entry; in every workflow
  identifiers  per build_wheels runner, `cibuildwheel --print-build-identifiers` (the version the
               workflow pins, if installed) selects at least one wheel, only for the runner's own
               OS, and all runners together build exactly the wheels of the README's platform
               table; macOS and Windows wheels are built on their own architecture (so tested)
  version      CHANGELOG.md's newest entry is the version, the tag pattern matches v<version>

GitHub's runner labels are mapped to architectures by RUNNERS below; the ARM Linux runners are
taken not to execute 32-bit ARM code (their Neoverse cores have no AArch32). Exit status 1 when a
check fails; each failure names the job and step. tests/test_release.py runs this.
"""
import argparse
import ast
import fnmatch
import itertools
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# runner label -> (OS, architectures it executes natively)
RUNNERS = [
    (re.compile(r"^ubuntu-.*-arm$"), ("linux", {"aarch64"})),
    (re.compile(r"^ubuntu-"), ("linux", {"x86_64", "i686"})),
    (re.compile(r"^macos-(13|15-intel|.*-large)$"), ("macos", {"x86_64"})),
    (re.compile(r"^macos-"), ("macos", {"arm64"})),
    (re.compile(r"^windows-.*-arm$"), ("windows", {"ARM64"})),
    (re.compile(r"^windows-"), ("windows", {"AMD64", "x86"})),
]
# cibuildwheel's Linux architecture -> the qemu handler (setup-qemu-action platform) it needs
QEMU_FOR_CIBW = {"aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
                 "riscv64": "riscv64", "i686": "386", "x86_64": "amd64"}
# tools/test_arm64.sh --arch -> qemu handler, and the cibuildwheel architecture it is
QEMU_FOR_DEBIAN = {"arm64": ("arm64", "aarch64"), "armhf": ("arm", "armv7l")}
# setup-qemu-action / binfmt platform spellings -> handler names
PLATFORM_ALIASES = {"linux/arm64": "arm64", "aarch64": "arm64", "arm64/v8": "arm64",
                    "linux/arm/v7": "arm", "linux/arm/v6": "arm", "arm/v7": "arm", "arm/v6": "arm",
                    "armhf": "arm", "armv7": "arm", "linux/ppc64le": "ppc64le",
                    "linux/s390x": "s390x", "linux/riscv64": "riscv64", "linux/386": "386",
                    "linux/amd64": "amd64", "x86_64": "amd64"}
QEMU_NAME = {"arm64": "aarch64", "arm": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
             "riscv64": "riscv64", "386": "i386", "amd64": "x86_64"}


class Unknown(Exception):
    """An expression this checker cannot evaluate without a runner."""


# ---------------------------------------------------------------- GitHub expressions

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|"
                    r"(?P<op>==|!=|&&|\|\||<=|>=|[!()<>,\[\]])|"
                    r"(?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_*][A-Za-z0-9_\-]*)*))")


def _tokens(text):
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise Unknown("cannot parse %r at %r" % (text, text[pos:]))
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


def _lookup(name, ctx):
    cur = ctx
    for part in name.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            raise Unknown("%s is not known before the run" % name)
    return cur


def _norm(v):
    return v.lower() if isinstance(v, str) else v


def evaluate(text, ctx):
    """Evaluates a GitHub Actions expression (the subset workflows use in `if:`) in ctx."""
    toks = _tokens(text)
    pos = [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else (None, None)

    def take(value=None):
        tok = peek()
        if value is not None and tok[1] != value:
            raise Unknown("expected %r in %r" % (value, text))
        pos[0] += 1
        return tok

    def primary():
        kind, val = take()
        if kind == "str":
            return val[1:-1].replace("''", "'")
        if kind == "num":
            return float(val)
        if kind == "op" and val == "(":
            v = disj()
            take(")")
            return v
        if kind == "op" and val == "!":
            return not truthy(primary())
        if kind == "name":
            if val in ("true", "false"):
                return val == "true"
            if val == "null":
                return None
            if peek() == ("op", "("):
                take("(")
                args = []
                while peek() != ("op", ")"):
                    args.append(disj())
                    if peek() == ("op", ","):
                        take(",")
                take(")")
                return call(val, args)
            return _lookup(val, ctx)
        raise Unknown("unexpected %r in %r" % (val, text))

    def cmp():
        left = primary()
        while peek()[1] in ("==", "!="):
            op = take()[1]
            right = primary()
            same = _norm(left) == _norm(right)
            left = same if op == "==" else not same
        return left

    def conj():
        v = cmp()
        while peek()[1] == "&&":
            take()
            r = cmp()
            v = r if truthy(v) else v
        return v

    def disj():
        v = conj()
        while peek()[1] == "||":
            take()
            r = conj()
            v = v if truthy(v) else r
        return v

    v = disj()
    if pos[0] != len(toks):
        raise Unknown("trailing text in %r" % text)
    return v


def truthy(v):
    return v not in (None, False, 0, "", 0.0)


def call(name, args):
    name = name.lower()
    if name in ("success", "always"):
        return True
    if name in ("failure", "cancelled"):
        return False
    s = [str(a).lower() if a is not None else "" for a in args]
    if name == "startswith":
        return s[0].startswith(s[1])
    if name == "endswith":
        return s[0].endswith(s[1])
    if name == "contains":
        if isinstance(args[0], list):
            return any(_norm(x) == _norm(args[1]) for x in args[0])
        return s[1] in s[0]
    if name == "format":
        out = str(args[0])
        for i, a in enumerate(args[1:]):
            out = out.replace("{%d}" % i, str(a))
        return out
    raise Unknown("function %s() is not known before the run" % name)


def condition(value, ctx):
    """The value of an `if:` (absent means success(), i.e. true here)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    m = re.fullmatch(r"\$\{\{(.*)\}\}", text, re.S)
    return truthy(evaluate(m.group(1) if m else text, ctx))


def substitute(text, ctx):
    """A string with its ${{ ... }} parts evaluated."""
    if not isinstance(text, str):
        return text

    def one(m):
        v = evaluate(m.group(1), ctx)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return "" if v is None else str(v)
    return re.sub(r"\$\{\{(.*?)\}\}", one, text)


# ---------------------------------------------------------------- workflows

def load_yaml(path):
    import yaml
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if isinstance(doc, dict) and True in doc and "on" not in doc:  # YAML 1.1 reads `on` as true
        doc["on"] = doc.pop(True)
    return doc


def matrix_entries(job, ctx):
    """The matrix combinations of a job ([{}] when it has no matrix), GitHub's include rules."""
    matrix = (job.get("strategy") or {}).get("matrix")
    if matrix is None:
        return [{}]
    if isinstance(matrix, str):
        raise Unknown("matrix %r is computed during the run" % matrix)
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    for k, v in axes.items():
        if not isinstance(v, list):
            raise Unknown("matrix axis %s is computed during the run" % k)
    combos = [dict(zip(axes, vals)) for vals in itertools.product(*axes.values())] if axes else []
    for ex in matrix.get("exclude") or []:
        combos = [c for c in combos if not all(c.get(k) == v for k, v in ex.items())]
    originals = [dict(c) for c in combos]
    extra = []
    for inc in matrix.get("include") or []:
        matched = False
        for c, orig in zip(combos, originals):
            if all(orig.get(k) == v for k, v in inc.items() if k in axes):
                matched = True
                for k, v in inc.items():
                    if k not in axes:
                        c[k] = v
        if not matched:
            extra.append(dict(inc))
    return combos + extra


def runner(job, ctx):
    label = substitute(job.get("runs-on"), ctx)
    if isinstance(label, list):
        label = label[0]
    for pattern, info in RUNNERS:
        if pattern.search(str(label)):
            return str(label), info
    raise Unknown("runner %r is not in tools/check_release.py's RUNNERS" % label)


def steps_of(job):
    return list(job.get("steps") or [])


def step_name(i, step):
    return "step %d (%s)" % (i + 1, step.get("name") or step.get("uses") or
                              (step.get("run") or "").strip().splitlines()[0][:50])


def push_context(version):
    tag = "v" + version
    return {"github": {"event_name": "push", "ref": "refs/tags/" + tag, "ref_name": tag,
                       "ref_type": "tag", "event": {}, "repository": "owner/shoestring"},
            "env": {}, "vars": {}, "secrets": {}, "inputs": {}, "needs": {}}


def job_context(base, wf, job, entry, label_info):
    ctx = dict(base)
    ctx["matrix"] = entry
    env = {}
    env.update(wf.get("env") or {})
    env.update(job.get("env") or {})
    ctx["env"] = {k: str(v) for k, v in env.items()}
    if label_info is not None:
        os_name = {"linux": "Linux", "macos": "macOS", "windows": "Windows"}[label_info[0]]
        ctx["runner"] = {"os": os_name}
    return ctx


# ---------------------------------------------------------------- checks

def check_trigger_and_needs(wf, version, problems):
    jobs = wf.get("jobs") or {}
    on = wf.get("on") or {}
    if isinstance(on, str):
        on = {on: None}
    elif isinstance(on, list):
        on = {k: None for k in on}
    push = on.get("push", "missing") if "push" in on else "missing"
    tag = "v" + version
    if push == "missing":
        problems.append("wheels.yml: not triggered by push, so a tag push runs nothing")
    elif push is not None:
        tags = push.get("tags")
        ignore = push.get("tags-ignore") or []
        if tags is None and (push.get("branches") is not None or push.get("paths") is not None):
            problems.append("wheels.yml: push is filtered (branches/paths) with no `tags:`, "
                            "so the tag %s does not trigger it" % tag)
        elif tags is not None and not any(fnmatch.fnmatchcase(tag, p) for p in tags):
            problems.append("wheels.yml: push tags %s do not match %s" % (tags, tag))
        if any(fnmatch.fnmatchcase(tag, p) for p in ignore):
            problems.append("wheels.yml: tags-ignore %s excludes %s" % (ignore, tag))
    if "publish" not in jobs:
        problems.append("wheels.yml: no `publish` job")
        return []
    ctx = push_context(version)
    try:
        if not condition(jobs["publish"].get("if"), ctx):
            problems.append("publish: its if: (%s) is false on a push of %s"
                            % (jobs["publish"].get("if"), tag))
    except Unknown as exc:
        problems.append("publish: cannot tell whether it runs on a tag push: %s" % exc)
    # every job publish needs, transitively, with cycle detection
    order, state = [], {}

    def visit(name, chain):
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            problems.append("needs cycle: %s" % " -> ".join(chain + [name]))
            return
        if name not in jobs:
            problems.append("%s needs job %r, which does not exist"
                            % (chain[-1] if chain else "publish", name))
            return
        state[name] = "active"
        needs = jobs[name].get("needs") or []
        for dep in [needs] if isinstance(needs, str) else needs:
            visit(dep, chain + [name])
        state[name] = "done"
        order.append(name)
    visit("publish", [])
    for name in order:
        if name == "publish":
            continue
        job = jobs[name]
        try:
            if not condition(job.get("if"), ctx):
                problems.append("%s: needed by publish but its if: (%s) is false on a push of %s, "
                                "so publish is skipped" % (name, job.get("if"), tag))
            if not matrix_entries(job, ctx):
                problems.append("%s: needed by publish but its matrix is empty" % name)
        except Unknown as exc:
            problems.append("%s: cannot tell whether it runs on a tag push: %s" % (name, exc))
    return order


def _closure(jobs, name):
    seen, todo = set(), [name]
    while todo:
        n = todo.pop()
        needs = (jobs.get(n) or {}).get("needs") or []
        for dep in [needs] if isinstance(needs, str) else needs:
            if dep not in seen and dep in jobs:
                seen.add(dep)
                todo.append(dep)
    return seen


def check_artifacts(wf, version, order, problems):
    jobs = wf.get("jobs") or {}
    base = push_context(version)
    uploads = {}    # job -> artifact names
    downloads = {}  # job -> [(step, name or None, pattern or None)]
    for name in order:
        job = jobs.get(name) or {}
        try:
            entries = matrix_entries(job, base)
        except Unknown as exc:
            problems.append("%s: %s" % (name, exc))
            continue
        for entry in entries:
            ctx = job_context(base, wf, job, entry, None)
            for i, step in enumerate(steps_of(job)):
                uses = str(step.get("uses") or "")
                w = step.get("with") or {}
                try:
                    if not condition(step.get("if"), ctx):
                        continue
                    if uses.startswith("actions/upload-artifact"):
                        uploads.setdefault(name, set()).add(substitute(w.get("name", "artifact"), ctx))
                    elif uses.startswith("actions/download-artifact"):
                        downloads.setdefault(name, []).append(
                            (step_name(i, step), substitute(w.get("name"), ctx),
                             substitute(w.get("pattern"), ctx)))
                except Unknown as exc:
                    problems.append("%s %s: %s" % (name, step_name(i, step), exc))
    for name, items in downloads.items():
        available = set()
        for dep in _closure(jobs, name):
            available |= uploads.get(dep, set())
        for where, art, pattern in items:
            if art:
                if art not in available:
                    problems.append("%s %s: downloads artifact %r, which no job it needs uploads "
                                    "(they upload %s)" % (name, where, art, sorted(available)))
            elif pattern:
                if not any(fnmatch.fnmatchcase(a, pattern) for a in available):
                    problems.append("%s %s: pattern %r matches no artifact of the jobs it needs"
                                    % (name, where, pattern))
            # no name and no pattern: every artifact is downloaded
    if "publish" in jobs:
        got = [(a, p) for _, a, p in downloads.get("publish", [])]
        for dep in _closure(jobs, "publish"):
            for art in sorted(uploads.get(dep, set())):
                if not any((a is None and p is None) or a == art or
                           (a is None and p and fnmatch.fnmatchcase(art, p)) for a, p in got):
                    problems.append("publish: does not download artifact %r (uploaded by %s), "
                                    "so it would not be published" % (art, dep))


def _registered_platforms(step, ctx):
    """The qemu handlers a step registers (a set; 'all' for every one), or None."""
    uses = str(step.get("uses") or "")
    run = str(step.get("run") or "")
    w = step.get("with") or {}
    names = set()
    if uses.startswith("docker/setup-qemu-action"):
        plats = substitute(str(w.get("platforms", "all")), ctx)
        names = {p.strip() for p in plats.split(",") if p.strip()}
    elif "tonistiigi/binfmt" in run:
        for m in re.finditer(r"--install[= ]+(\S+)", run):
            names |= set(m.group(1).split(","))
    elif "update-binfmts" in run:
        names |= {m.group(1) for m in re.finditer(r"update-binfmts\s+--enable\s+qemu-(\S+)", run)}
        names = {{"aarch64": "arm64", "i386": "386", "x86_64": "amd64"}.get(n, n) for n in names}
    else:
        return None
    return {PLATFORM_ALIASES.get(n, n) for n in names}


def _cibw_archs(step, ctx, pyproject, plat):
    env = dict(ctx.get("env") or {})
    env.update({k: str(v) for k, v in (step.get("env") or {}).items()})
    archs = env.get("CIBW_ARCHS_" + plat.upper()) or env.get("CIBW_ARCHS")
    if archs is not None:
        archs = substitute(archs, ctx)
        return archs.replace(",", " ").split()
    cfg = (pyproject.get("tool") or {}).get("cibuildwheel") or {}
    archs = (cfg.get(plat) or {}).get("archs", cfg.get("archs", "auto"))
    return archs if isinstance(archs, list) else str(archs).split()


def _test_arm64_arches(run):
    m = re.search(r"test_arm64\.sh\b([^\n]*)", run)
    if not m:
        return None
    args = m.group(1)
    a = re.search(r"--arch[= ]+(\S+)", args)
    arch = a.group(1) if a else "all"
    return ["arm64", "armhf"] if arch == "all" else [arch]


def check_qemu(wf_name, wf, version, pyproject, problems):
    """Each step that runs foreign code through binfmt_misc comes after its handler's setup."""
    jobs = wf.get("jobs") or {}
    base = push_context(version)
    for name, job in jobs.items():
        try:
            entries = matrix_entries(job, base)
        except Unknown as exc:
            problems.append("%s %s: %s" % (wf_name, name, exc))
            continue
        for entry in entries:
            ctx = job_context(base, wf, job, entry, None)
            try:
                label, (os_name, native) = runner(job, ctx)
            except Unknown as exc:
                problems.append("%s %s: %s" % (wf_name, name, exc))
                continue
            ctx = job_context(base, wf, job, entry, (os_name, native))
            where = "%s job %s%s" % (wf_name, name, (" %s" % entry) if entry else "")
            registered = set()
            for i, step in enumerate(steps_of(job)):
                try:
                    if not condition(step.get("if"), ctx):
                        continue
                except Unknown as exc:
                    problems.append("%s %s: %s" % (where, step_name(i, step), exc))
                    continue
                got = _registered_platforms(step, ctx)
                if got is not None:
                    registered |= got
                    continue
                run = str(step.get("run") or "")
                needed = []  # (handler, what)
                if re.search(r"(^|\s|-m\s+)cibuildwheel(\s|$)", run) and os_name == "linux":
                    for arch in _cibw_archs(step, ctx, pyproject, "linux"):
                        if arch in ("auto", "native", "all", "auto64", "auto32"):
                            continue
                        if arch not in native:
                            needed.append((QEMU_FOR_CIBW.get(arch, arch), "cibuildwheel %s" % arch))
                arches = _test_arm64_arches(run)
                for deb in arches or []:
                    handler, arch = QEMU_FOR_DEBIAN.get(deb, (deb, deb))
                    if arch not in native:
                        needed.append((handler, "tools/test_arm64.sh --arch %s" % deb))
                for handler, what in needed:
                    if handler not in registered and "all" not in registered:
                        problems.append(
                            "%s %s: %s on %s needs the qemu-%s binfmt handler, which no earlier "
                            "step registers (add docker/setup-qemu-action with platforms: %s "
                            "before it)" % (where, step_name(i, step), what, label,
                                            QEMU_NAME.get(handler, handler), handler))


def readme_wheels(readme_text):
    """The wheel platform tags in the README's platform table (`manylinux_*_x86_64`, ...)."""
    lines = readme_text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines)
                     if re.match(r"\|\s*platform\s*\|\s*wheel\s*\|", ln))
    except StopIteration:
        raise ValueError("README.md has no '| platform | wheel |' table")
    tags = set()
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        if len(cells) >= 2:
            tags |= set(re.findall(r"`([^`]+)`", cells[1]))
    return tags


def wheel_tag(identifier):
    """cp39-manylinux_x86_64 -> manylinux_*_x86_64 (the README's spelling); win_amd64 as is."""
    plat = identifier.split("-", 1)[1]
    m = re.match(r"(manylinux|musllinux|macosx)_(.+)$", plat)
    return "%s_*_%s" % (m.group(1), m.group(2)) if m else plat


def cibuildwheel_exe():
    exe = os.path.join(os.path.dirname(sys.executable), "cibuildwheel")
    return exe if os.path.exists(exe) else shutil.which("cibuildwheel")


def cibuildwheel_version():
    """The version of cibuildwheel installed in this Python, or None."""
    from importlib import metadata
    try:
        return metadata.version("cibuildwheel")
    except metadata.PackageNotFoundError:
        return None


def identifier_arch(identifier):
    """cp39-manylinux_armv7l -> armv7l, cp39-macosx_arm64 -> arm64, cp39-win_amd64 -> AMD64."""
    plat = identifier.split("-", 1)[1]
    if plat.startswith("win"):
        return {"win_amd64": "AMD64", "win_arm64": "ARM64", "win32": "x86"}.get(plat, plat)
    return re.sub(r"^(manylinux|musllinux|macosx)_", "", plat)


def check_identifiers(root, wf, version, readme_text, problems, notes):
    exe = cibuildwheel_exe()
    if exe is None:
        raise Unknown("cibuildwheel is not installed (pip install cibuildwheel==%s)"
                      % ((wf.get("env") or {}).get("CIBUILDWHEEL_VERSION", "")))
    pinned = str((wf.get("env") or {}).get("CIBUILDWHEEL_VERSION", ""))
    have = cibuildwheel_version()
    if pinned and have and have != pinned:
        notes.append("cibuildwheel %s here, the workflow pins %s" % (have, pinned))
    jobs = wf.get("jobs") or {}
    job = jobs.get("build_wheels")
    if job is None:
        problems.append("wheels.yml: no build_wheels job")
        return
    base = push_context(version)
    built = set()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIBW_")}
    for entry in matrix_entries(job, base):
        ctx = job_context(base, wf, job, entry, None)
        label, (os_name, native) = runner(job, ctx)
        ctx = job_context(base, wf, job, entry, (os_name, native))
        step = next((s for s in steps_of(job) if "cibuildwheel" in str(s.get("run") or "")
                     and "--output-dir" in str(s.get("run") or "")), None)
        if step is None:
            problems.append("build_wheels: no step runs cibuildwheel")
            return
        archs = _cibw_archs(step, ctx, {}, os_name)
        cmd = [exe, "--print-build-identifiers", "--platform", os_name]
        if archs:
            cmd += ["--archs", ",".join(archs)]
        r = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
        if r.returncode != 0:
            problems.append("build_wheels %s: %s failed: %s" % (entry, " ".join(cmd[1:]),
                                                                r.stderr.strip()[-500:]))
            continue
        ids = r.stdout.split()
        notes.append("%-18s %-8s %s" % (label, ",".join(archs), " ".join(ids)))
        if not ids:
            problems.append("build_wheels on %s (archs %s): cibuildwheel selects no wheel, so "
                            "the job fails" % (label, ",".join(archs)))
        for ident in ids:
            arch = identifier_arch(ident)
            if os_name in ("macos", "windows") and arch not in native:
                problems.append("build_wheels on %s: %s is cross-built, so cibuildwheel cannot "
                                "test it; build it on a %s runner" % (label, ident, arch))
            built.add(wheel_tag(ident))
    table = readme_wheels(readme_text)
    if built != table:
        if built - table:
            problems.append("README's platform table lacks wheels the workflow builds: %s"
                            % sorted(built - table))
        if table - built:
            problems.append("README's platform table lists wheels no runner builds: %s"
                            % sorted(table - built))


def package_version(root):
    with open(os.path.join(root, "shoestring", "version.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__"
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError("no literal __version__ in shoestring/version.py")


def check_changelog(root, version, problems):
    path = os.path.join(root, "CHANGELOG.md")
    if not os.path.exists(path):
        problems.append("CHANGELOG.md is missing")
        return
    with open(path, encoding="utf-8") as f:
        heads = re.findall(r"^## \[?([0-9][^\]\s]*)\]?", f.read(), re.M)
    if not heads:
        problems.append("CHANGELOG.md has no '## [x.y.z]' entry")
    elif heads[0] != version:
        problems.append("CHANGELOG.md's newest entry is %s, the version is %s (shoestring/version.py)"
                        % (heads[0], version))


def run_checks(root=ROOT, workflows=None, identifiers=True):
    """[(check, problems, notes, skipped)]: PASS when problems is empty; skipped is the reason a
    check could not run here (a missing tool), else None."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError:
            tomllib = None
    workflows = workflows or os.path.join(root, ".github", "workflows")
    wheels = load_yaml(os.path.join(workflows, "wheels.yml"))
    others = {}
    for fn in sorted(os.listdir(workflows)):
        if fn.endswith((".yml", ".yaml")) and fn != "wheels.yml":
            others[fn] = load_yaml(os.path.join(workflows, fn))
    pyproject = {}
    if tomllib is not None:
        with open(os.path.join(root, "pyproject.toml"), "rb") as f:
            pyproject = tomllib.load(f)
    version = package_version(root)
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    results = []

    p = []
    order = check_trigger_and_needs(wheels, version, p)
    results.append(("trigger+needs", p, ["publish needs, in order: %s" % ", ".join(order)], None))
    p = []
    check_artifacts(wheels, version, order, p)
    results.append(("artifacts", p, [], None))
    p = []
    check_qemu("wheels.yml", wheels, version, pyproject, p)
    for fn, wf in others.items():
        check_qemu(fn, wf, version, pyproject, p)
    results.append(("qemu", p, [], None))
    if identifiers:
        p, notes = [], []
        try:
            check_identifiers(root, wheels, version, readme, p, notes)
            results.append(("identifiers", p, notes, None))
        except Unknown as exc:
            results.append(("identifiers", [], None, str(exc)))
    p = []
    check_changelog(root, version, p)
    results.append(("version", p, ["version %s, tag v%s" % (version, version)], None))
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=ROOT, help="the checkout (default: this one)")
    ap.add_argument("--workflows", help="the workflow directory (default: ROOT/.github/workflows)")
    ap.add_argument("--no-identifiers", action="store_true",
                    help="skip the check that runs cibuildwheel --print-build-identifiers")
    args = ap.parse_args(argv)
    try:
        import yaml  # noqa: F401
    except ImportError:
        print("check_release: PyYAML is not installed: %s -m pip install pyyaml" % sys.executable,
              file=sys.stderr)
        return 2
    failed = False
    for name, problems, notes, skipped in run_checks(args.root, args.workflows,
                                                     not args.no_identifiers):
        status = "SKIP (%s)" % skipped if skipped else ("FAIL" if problems else "PASS")
        print("%-14s %s" % (name, status))
        for n in notes or []:
            print("    " + n)
        for prob in problems:
            print("    - " + prob)
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
