"""edgesdk.compress: what changes the model (ONNX export now; pruning and quantization to come).

The package is also the one verb: ``edgesdk.compress(model, example_inputs, recipe, out_dir=...)``
calls :func:`edgesdk.api.compress`, so the package name and the verb never shadow each other.
"""
from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from edgesdk.api import compress

        return compress(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
