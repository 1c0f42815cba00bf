"""Shared test helpers: the instruction sets to run, tiny corpora, ISA switching."""
import os

import pytest

from shoestring import kernels


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
