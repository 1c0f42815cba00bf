"""The import graph of shoestring/: no cycle, and only the allowed arrows (import-linter, grimp).

Contracts (tests/importlinter.ini): the library never imports cli/commands; training never
imports inference or chat, nor inference training. Here too: no import cycle anywhere in the
package (function-level imports included), and kernels.py is the only importer of the compiled
module shoestring._shoestring_c.
"""
import os

import pytest

grimp = pytest.importorskip("grimp")
importlinter_cli = pytest.importorskip("importlinter.cli")

HERE = os.path.dirname(os.path.abspath(__file__))
COMPILED = "_shoestring_c"


def graph_without_compiled_module():
    """The package's import graph, less the edges that are imports of the compiled module (grimp
    cannot see an extension module and reads `from . import _shoestring_c` as `shoestring`)."""
    g = grimp.build_graph("shoestring", cache_dir=None)
    for importer in sorted(g.find_modules_that_directly_import("shoestring")):
        details = g.get_import_details(importer=importer, imported="shoestring")
        if details and all(COMPILED in d["line_contents"] for d in details):
            g.remove_import(importer=importer, imported="shoestring")
    return g


def test_contracts_hold():
    rc = importlinter_cli.lint_imports(config_filename=os.path.join(HERE, "importlinter.ini"),
                                       no_cache=True)
    assert rc == 0, "an import breaks a contract of tests/importlinter.ini (see the output above)"


def test_no_import_cycle():
    g = graph_without_compiled_module()
    cycles = []
    for a in sorted(g.modules):
        for b in sorted(g.find_modules_directly_imported_by(a)):
            chain = g.find_shortest_chain(importer=b, imported=a)
            if chain:
                cycles.append(" -> ".join((a,) + tuple(chain)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_kernels_imports_the_compiled_module():
    g = grimp.build_graph("shoestring", cache_dir=None)
    importers = set()
    for m in g.modules:
        for imported in ("shoestring", "shoestring." + COMPILED):
            if imported in g.modules or imported == "shoestring":
                for d in g.get_import_details(importer=m, imported=imported):
                    if COMPILED in d["line_contents"]:
                        importers.add(m)
    assert importers == {"shoestring.kernels"}, importers


def test_the_checks_can_fail(tmp_path):
    """The cycle check sees a cycle when there is one (so a green run means something)."""
    g = graph_without_compiled_module()
    g.add_import(importer="shoestring.errors", imported="shoestring.trainer")
    assert g.find_shortest_chain(importer="shoestring.trainer", imported="shoestring.errors")


def test_every_library_module_is_under_the_contracts():
    """A new module of shoestring/ must be named in the library contract (or be the command line),
    so that no file escapes the rules by being new."""
    import configparser
    ini = configparser.ConfigParser()
    ini.read(os.path.join(HERE, "importlinter.ini"))
    listed = set(ini["importlinter:contract:library-knows-no-command-line"]["source_modules"].split())
    package = os.path.join(os.path.dirname(HERE), "shoestring")
    modules = {"shoestring." + f[:-3] for f in os.listdir(package)
               if f.endswith(".py") and f not in ("__init__.py", "__main__.py", "cli.py", "commands.py")}
    assert modules <= listed, "not under the contracts: %s" % sorted(modules - listed)
