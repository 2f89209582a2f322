"""The layout's promises that import-linter's layer contracts do not cover by themselves."""

from __future__ import annotations

from pathlib import Path

import grimp
import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 400


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("sdn", "nfv", "common")
    imports = nx.DiGraph((m, i) for m in graph.modules
                         for i in graph.find_modules_directly_imported_by(m))
    assert list(nx.simple_cycles(imports)) == []
