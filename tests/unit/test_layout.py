"""The layout's promises that import-linter's layer contracts do not cover by themselves."""

from __future__ import annotations

from pathlib import Path

import grimp
import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 450  # "about 400": a module past it does more than one thing


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("sdn", "nfv", "common")
    imports = nx.DiGraph((m, i) for m in graph.modules
                         for i in graph.find_modules_directly_imported_by(m))
    assert list(nx.simple_cycles(imports)) == []


def test_no_product_module_outgrows_one_concern():
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
             for package in ("sdn", "nfv", "common") for path in (ROOT / package).rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}
