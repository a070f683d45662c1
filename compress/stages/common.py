"""Helpers the stage modules share."""
from __future__ import annotations

from typing import Any

from edgesdk.pipeline import Artifact, StageContext

# recipe quantize mode -> (file suffix, the precision the artifact records)
SUFFIX = {"fp16": "fp16", "int8": "int8", "int8-dynamic": "int8dyn"}
PRECISION = {"fp16": "fp16", "int8": "int8", "int8-dynamic": "int8"}

# what a stage exporting the PyTorch model reads besides the model (the stage cache hashes these)
MODEL_READS = ("ctx.example_inputs", "ctx.dynamic_axes", "ctx.auto_axes", "ctx.output_names")
CALIB_READS = ("ctx.example_inputs", "ctx.calib", "ctx.calib_source")  # calib_inputs picks arrays by input name
# ctx.evaluate runs a PyTorch model on the eval data with the metric: hashed through its ingredients
EVAL_READS = ("ctx.eval_data", "ctx.metric", "ctx.baseline_accuracy", "ctx.dynamic_axes", "ctx.output_names")


def calib_inputs(ctx: StageContext) -> dict[str, Any] | None:
    """The calibration arrays the quantizers take: model inputs only (no labels), capped at calib_samples."""
    if not ctx.calib:
        return None
    n = ctx.recipe.quantize.calib_samples
    return {k: ctx.calib[k][:n] for k in ctx.example_inputs}


def target_failed(ctx: StageContext, target: str, status: str, err: Exception, install: str | None = None) -> None:
    """Record a target that was skipped or failed, and say so; the other targets go on."""
    from edgesdk.errors import EdgeSDKError

    reason = err.format() if isinstance(err, EdgeSDKError) else f"{type(err).__name__}: {err}"
    ctx.target(target, status, reason, install)
    ctx.say(f"{target}: {status} - {reason.splitlines()[0]}" + (f" ({install})" if install else ""))


def size_of(model: Any, example_inputs: dict[str, Any]) -> dict[str, Any]:
    """Parameters and MACs of the PyTorch model behind an export (MACs need torch-pruning's counter)."""
    try:
        from edgesdk.compress.prune import count

        macs, params = count(model, example_inputs)
    except ImportError:
        macs, params = None, sum(p.numel() for p in model.parameters())
    return {"params": params, "macs": macs}


def axes_meta(axes: dict[str, dict[int, str]]) -> dict[str, dict[str, str]]:
    """input -> axis -> symbol with string keys (JSON)."""
    return {n: {str(a): sym for a, sym in ax.items()} for n, ax in axes.items()}


def budget_key(parent: Artifact | None, ctx: StageContext) -> dict | None:
    """With an accuracy budget the quantization also depends on what it is scored on: the reference inputs and
    PyTorch's outputs on them (the parity settings, the model), the eval data, the metric and its baseline."""
    b = ctx.budget
    if b is None:
        return None
    return {"ref_inputs": b.ref_inputs, "ref_outputs": b.ref_outputs, "calib": b.calib,
            "labelled": b.evaluate is not None, "baseline": b.baseline_accuracy, "metric": b.metric,
            **{r: getattr(ctx, r[4:]) for r in EVAL_READS}}
