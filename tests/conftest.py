"""Shared test helpers: the instruction sets to run, tiny corpora, ISA switching."""
import os
import signal

import pytest

from shoestring import kernels

# A runner that starts pytest in the background of a non-interactive shell (`cmd &`) leaves SIGINT
# ignored, and an ignored signal stays ignored across exec: every `shoestring` the tests start
# would then shrug off the Ctrl-C they send it. Give SIGINT back its default before any test runs.
# Likewise SIGTERM and SIGHUP: pytest started under `nohup` (or by a parent that ignores them)
# would pass SIG_IGN on to every child, and `shoestring` keeps an inherited SIG_IGN on purpose
# (nohup keeps a run alive), so the signal tests' children would ignore what they are sent.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
for _name in ("SIGTERM", "SIGHUP"):
    if hasattr(signal, _name) and signal.getsignal(getattr(signal, _name)) == signal.SIG_IGN:
        signal.signal(getattr(signal, _name), signal.SIG_DFL)


def isas_to_test():
    """Every ISA usable here, or only SHOESTRING_ISA when that is set (CI runs once per ISA)."""
    forced = os.environ.get("SHOESTRING_ISA", "").strip().lower()
    return [forced] if forced else kernels.isa_available()


@pytest.fixture(params=isas_to_test())
def isa(request):
    """Run the test with kernels.set_isa(<param>), restoring the previous ISA afterwards."""
    before = kernels.isa_active()
    kernels.set_isa(request.param)
    yield request.param
    kernels.set_isa(before)


TINY_CHAT = "".join(
    "[USER] what is %s plus %s [EOS]\n[BOT] %s plus %s is %s [EOS]\n\n" % (a, b, a, b, a + b)
    for a in range(10) for b in range(10)
)


@pytest.fixture
def tiny_corpus(tmp_path):
    """A small chat-format corpus file (about 5 KB) that a tiny model can learn."""
    p = tmp_path / "tiny.txt"
    p.write_text(TINY_CHAT, encoding="utf-8")
    return str(p)


# ---- the suite writes only inside temporary folders (#17) ----------------------------------------
# A snapshot of the source tree before the session and a comparison after it: a test that
# leaves a file in the tree (a runs/ folder, a checkpoint, hypothesis' example database) fails
# the session. Build outputs and the tools' own caches are not the tests' doing.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NOT_WATCHED = (".git", "build", "dist", "__pycache__", ".pytest_cache")


def _tree():
    files = {}
    for dirpath, dirnames, filenames in os.walk(_ROOT):
        dirnames[:] = [d for d in dirnames if d not in _NOT_WATCHED and not d.startswith(".venv")
                       and not d.endswith(".egg-info")]
        for f in filenames:
            if f.startswith("_shoestring_c") or f.endswith((".pyc", ".so", ".o", ".pyd")):
                continue
            p = os.path.join(dirpath, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            files[os.path.relpath(p, _ROOT)] = (st.st_size, st.st_mtime_ns)
    return files


try:                                  # hypothesis keeps its example database and caches in ./.hypothesis
    import tempfile

    from hypothesis import settings as _hyp_settings
    from hypothesis.configuration import set_hypothesis_home_dir
    _hyp_settings.register_profile("shoestring", database=None)
    _hyp_settings.load_profile("shoestring")
    _HYP_HOME = tempfile.mkdtemp(prefix="ss-hypothesis-")
    set_hypothesis_home_dir(_HYP_HOME)
except ImportError:
    _HYP_HOME = None


def pytest_sessionstart(session):
    session.config._ss_tree = _tree()


def pytest_sessionfinish(session, exitstatus):
    if _HYP_HOME:
        import shutil
        shutil.rmtree(_HYP_HOME, ignore_errors=True)
    before = getattr(session.config, "_ss_tree", None)
    if before is None:
        return
    after = _tree()
    changed = sorted(p for p in after if before.get(p) != after[p])
    if changed:
        import sys
        sys.stderr.write("\nthe test suite wrote into the source tree (tests must write only "
                         "inside temporary folders): %s\n" % ", ".join(changed[:20]))
        session.exitstatus = 1


# ---- no test leaves the process's signal dispositions changed ----------------------------------
# The suite starts `shoestring` processes and signals them; an ignored signal (SIG_IGN) or a
# blocked one is inherited across exec, so a test that left one behind would make a later test's
# child shrug off the SIGTERM/SIGHUP it is sent (and `shoestring` keeps an inherited SIG_IGN on
# purpose, for nohup). Checked after every test.
_WATCHED = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


def _dispositions():
    blocked = (frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, []))
               if hasattr(signal, "pthread_sigmask") else frozenset())
    return {s: signal.getsignal(s) for s in _WATCHED}, blocked


@pytest.fixture(autouse=True)
def _signals_left_as_found():
    before = _dispositions()
    yield
    after = _dispositions()
    assert after == before, "the test changed signal handling: %r -> %r" % (before, after)
