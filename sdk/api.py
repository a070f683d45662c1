"""The one verb: ``compress(model, example_inputs, recipe) -> Result``.

Runs the recipe's stages, checks every artifact against PyTorch on the reference inputs (the parity
gate) and against the original model, measures the task metric when labelled eval data is given,
benchmarks each artifact next to the PyTorch eager baseline and writes the output directory
atomically (manifest last). The steps live in :class:`edgesdk.run.CompressRun`.

Example::

    import torch, edgesdk
    from examples.digits.model import build
    result = edgesdk.compress(build().eval(), {"x": torch.rand(1, 1, 8, 8)}, out_dir="out")
    print(result.report_markdown)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .recipe import Recipe, apply_options
from .report import REPORT_SCHEMA_VERSION
from .run import CompressRun, Progress, Result


def compress(model: Any, example_inputs: Any, recipe: Recipe | None = None, *, out_dir: str | Path,
             calib_data: Any = None,
             eval_data: Mapping[str, np.ndarray] | None = None,
             output_names: list[str] | None = None, progress: Progress | None = None,
             recovery_hook: Callable[[Any, Mapping[str, np.ndarray]], Any] | None = None,
             preprocess: Any = None, cache_dir: str | Path | None = None, **options: Any) -> Result:
    """Export ``model``, verify each artifact against it, benchmark, write ``out_dir``.

    ``example_inputs``: a dict name -> tensor (batch first; each name is a ``forward()`` parameter), or a
    tensor / tuple of tensors bound by position. ``calib_data``: a dict of arrays named like the inputs,
    an iterable of such dicts, a path (.npz or a directory of NAME.npy) or the string "random".
    ``eval_data``: a dict of arrays named like the inputs, with ``labels`` (and what the metric reads) for
    the task metric. ``options`` override recipe fields (``opset=17``, ``benchmark=False``,
    ``allow_mismatch=True``, ``quantize="int8"``, ``prune=0.5``, ``dynamic_dims={"x": [2, 3]}``,
    ``metric="cer"`` or a callable ``fn(outputs, data) -> float`` ...).
    ``recovery_hook(model, data)`` replaces the built-in distillation after pruning with your own loop.
    ``preprocess``: with ``calib_data`` a directory of images, an ImagePreprocess or its text form
    (``"size=224x224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225"``); stored in the manifest.
    ``cache_dir``: a stage cache shared by runs (and processes): a stage whose inputs an earlier run already
    hashed the same (the FP32 export, a pruned model, a quantization) is restored from it instead of recomputed;
    each artifact's ``meta["cache"]`` says which. Off by default.

    >>> result = compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir="out", benchmark=False)
    """
    metric = options.pop("metric", None)
    if isinstance(metric, str):  # a name or file.py:fn is recipe data; a callable is passed alongside
        options["metric"], metric = metric, None
    recipe = apply_options(recipe or Recipe(), **options)
    return CompressRun(model, example_inputs, recipe, out_dir=out_dir, calib_data=calib_data, eval_data=eval_data,
                       output_names=output_names, progress=progress, recovery_hook=recovery_hook,
                       preprocess=preprocess, metric=metric, cache_dir=cache_dir).run()


__all__ = ["compress", "Result", "REPORT_SCHEMA_VERSION"]
