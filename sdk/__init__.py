"""edgesdk: compress PyTorch models, export them, verify every artifact, run and benchmark them.

``import edgesdk`` is light (numpy only); torch is imported by the functions that need it.

Example::

    import edgesdk
    result = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir="out")
    print(result.report_markdown)
"""
from __future__ import annotations

from typing import Any

import sys
import types

from . import compress
from .errors import EdgeSDKError
from .version import __version__


class _Verb(types.ModuleType):
    """The ``edgesdk.compress`` package is also the verb: ``edgesdk.compress(model, inputs, ...)`` runs
    :func:`edgesdk.api.compress`. Made callable here, at the top, so the package itself never imports the API."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .api import compress as run

        return run(*args, **kwargs)


sys.modules[compress.__name__].__class__ = _Verb
__all__ = ["compress", "search", "EdgeSDKError", "Recipe", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Recipe":
        from .recipe import Recipe

        return Recipe
    if name == "search":  # the search package (callable: edgesdk.search(source, space, out_dir=...))
        import importlib

        return importlib.import_module(".search", __name__)
    raise AttributeError(f"module 'edgesdk' has no attribute {name!r}")
