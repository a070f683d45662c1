"""edgesdk: compress PyTorch models, export them, verify every artifact, run and benchmark them.

``import edgesdk`` is light (numpy only); torch is imported by the functions that need it.

Example::

    import edgesdk
    result = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir="out")
    print(result.report_markdown)
"""
from __future__ import annotations

from typing import Any

from . import compress
from .errors import EdgeSDKError
from .verb import make_callable
from .version import __version__


def _compress(*args: Any, **kwargs: Any) -> Any:
    """``edgesdk.compress(model, inputs, ...)`` runs :func:`edgesdk.api.compress`; imported here, at the top, so
    the compress package itself never imports the API."""
    from .api import compress as run

    return run(*args, **kwargs)


make_callable(compress.__name__, _compress)
__all__ = ["compress", "search", "check", "debug", "EdgeSDKError", "Recipe", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Recipe":
        from .recipe import Recipe

        return Recipe
    if name in ("search", "check", "debug"):  # packages that are verbs: edgesdk.search(...), edgesdk.check(...)
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'edgesdk' has no attribute {name!r}")
