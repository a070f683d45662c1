"""edgesdk: compress PyTorch models, export them, verify every artifact, run and benchmark them.

``import edgesdk`` is light (numpy only); torch is imported by the functions that need it.

Example::

    import edgesdk
    result = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir="out")
    print(result.report_markdown)
"""
from __future__ import annotations

from typing import Any

from . import compress  # the subpackage is callable: edgesdk.compress(model, inputs, ...) runs the API verb
from .errors import EdgeSDKError

__version__ = "0.1.0"
__all__ = ["compress", "EdgeSDKError", "Recipe", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Recipe":
        from .recipe import Recipe

        return Recipe
    raise AttributeError(f"module 'edgesdk' has no attribute {name!r}")
