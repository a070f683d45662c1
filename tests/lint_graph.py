"""Build the import graph of edgesdk as it is laid out installed (sdk/ is edgesdk, compress/ and runtimes/
are its subpackages) in a temporary copy, for the import contracts and the cycle check in test_hygiene."""
from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def installed_layout(dest: Path) -> Path:
    """Copy the sources into ``dest/edgesdk/...`` (grimp and import-linter walk one package directory)."""
    pkg = dest / "edgesdk"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "sdk", pkg, ignore=ignore)
    shutil.copytree(ROOT / "compress", pkg / "compress", ignore=ignore)
    shutil.copytree(ROOT / "runtimes", pkg / "runtimes", ignore=ignore)
    return dest


def cycles(graph) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan), each sorted."""
    mods = sorted(graph.modules)
    adj = {m: [i for i in graph.find_modules_directly_imported_by(m) if i in graph.modules] for m in mods}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for m in mods:
        if m not in index:
            visit(m)
    return out
