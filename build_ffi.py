"""cffi builder (out-of-line API mode): the C API is csrc/shoestring.h, read verbatim.

setup.py names this file in `cffi_modules`; the per-instruction-set sources are compiled by
setup.py's build_ext with their own flags and linked in as extra objects.
"""
import glob
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
ISA_SUFFIXES = ("_avx2.c", "_avx512.c", "_neon.c")


def cdef_text():
    """The header with preprocessor lines and C++ guards removed (cffi's parser sees no '#')."""
    with open(os.path.join(CSRC, "shoestring.h"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    drop = ('extern "C" {', "}")
    return "\n".join(ln for ln in lines if not ln.lstrip().startswith("#") and ln.strip() not in drop)


def generic_sources():
    """Every csrc/*.c that needs no special instruction-set flags, relative to the project."""
    return sorted(
        os.path.relpath(p, HERE).replace(os.sep, "/")
        for p in glob.glob(os.path.join(CSRC, "*.c"))
        if not p.endswith(ISA_SUFFIXES)
    )


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "shoestring._shoestring_c",
    '#include "shoestring.h"\n',
    sources=generic_sources(),
    include_dirs=["csrc"],
    py_limited_api=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
