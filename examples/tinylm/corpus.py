"""Real English text that ships with every Python install: the docstrings of standard-library modules,
classes and functions, collected in a fixed order (nothing is downloaded).

    text = stdlib_text()            # ~1-2 MB of English prose and code examples
    train, held_out = split(text)   # the last 5% of paragraphs are held out
"""
from __future__ import annotations

import importlib
import inspect

MODULES = ("argparse", "asyncio", "collections", "contextlib", "csv", "dataclasses", "datetime", "decimal",
           "difflib", "email", "enum", "fractions", "functools", "gzip", "heapq", "http.client", "inspect",
           "itertools", "json", "logging", "pathlib", "pickle", "random", "re", "shutil", "socket", "sqlite3",
           "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "typing",
           "unittest", "urllib.parse", "uuid", "zipfile", "zoneinfo")


def _docs(obj: object, depth: int = 0) -> list[str]:
    out = [d for d in [inspect.getdoc(obj)] if d]
    if depth < 2:
        for name, member in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else []:
            if name.startswith("_") or not (inspect.isclass(member) or inspect.isfunction(member)):
                continue
            if getattr(member, "__module__", None) != getattr(obj, "__name__", getattr(obj, "__module__", None)) \
                    and depth == 0:
                continue  # re-exported from elsewhere: counted where it is defined
            out += _docs(member, depth + 1)
    return out


def stdlib_text(modules: tuple[str, ...] = MODULES) -> str:
    """The docstrings of ``modules`` (and their public classes, methods and functions), paragraphs separated
    by blank lines; the same text on every machine with the same Python version."""
    seen: set[str] = set()
    parts: list[str] = []
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ImportError:  # a stripped-down Python build
            continue
        for doc in _docs(mod):
            if doc not in seen and len(doc) > 40:
                seen.add(doc)
                parts.append(doc.strip())
    return "\n\n".join(parts)


def split(text: str, held_out: float = 0.05) -> tuple[str, str]:
    """(training text, held-out text): the last ``held_out`` share of paragraphs is kept for perplexity."""
    paras = text.split("\n\n")
    cut = max(1, int(len(paras) * (1 - held_out)))
    return "\n\n".join(paras[:cut]), "\n\n".join(paras[cut:])
