"""Stage adapters: wrap the compress functions as pipeline stages (registered by name)."""
from __future__ import annotations

from edgesdk.pipeline import Artifact, StageContext, register_stage

from .export_onnx import export_onnx


@register_stage("export_onnx")
def export_onnx_stage(ctx: StageContext, parent: Artifact | None) -> Artifact:
    """Export the model to ``model.onnx`` in the staging dir; exporter facts go to ``meta``."""
    cfg = ctx.recipe.export
    path = ctx.workdir / "model.onnx"
    info = export_onnx(ctx.model, ctx.example_inputs, path, opset=cfg.opset, dynamic_batch=cfg.dynamic_batch,
                       simplify=cfg.simplify, exporter=cfg.exporter, output_names=ctx.output_names)
    meta = {
        "exporter": info.exporter_used,
        "opset_requested": info.opset_requested,
        "opset": info.opset_written,
        "fallback_reason": info.fallback_reason,
        "simplified": info.simplified,
        "simplify_error": info.simplify_error,
        "warnings": list(info.warnings),
        "export_time_s": round(info.export_time_s, 3),
    }
    return Artifact(name="model.onnx", path=path, format="onnx", precision="fp32",
                    parent=parent.name if parent else "pytorch", meta=meta)


_SUFFIX = {"fp16": "fp16", "int8": "int8", "int8-dynamic": "int8dyn"}
_PRECISION = {"fp16": "fp16", "int8": "int8", "int8-dynamic": "int8"}


@register_stage("quantize_onnx")
def quantize_onnx_stage(ctx: StageContext, parent: Artifact | None) -> Artifact:
    """Quantize the parent ONNX artifact to ``<stem>.<mode>.onnx``; the accuracy budget wraps this stage."""
    from edgesdk.errors import InputError

    from .quantize import quantize_onnx

    if parent is None or parent.format != "onnx":
        raise InputError("quantize_onnx needs an ONNX artifact before it", hint="put export_onnx first in the recipe")
    q = ctx.recipe.quantize
    path = ctx.workdir / f"{parent.path.stem}.{_SUFFIX[q.mode]}.onnx"
    budget = ctx.records.get("budget")
    if budget is not None:
        info, budget_meta = budget(parent.path, path)
    else:
        info = quantize_onnx(parent.path, path, mode=q.mode, calib=ctx.calib, calib_method=q.calib_method,
                             per_channel=q.per_channel, target=q.target, nodes_to_exclude=q.exclude)
        budget_meta = None
    meta = {"quantization": info.to_dict(), "calibration": ctx.calib_source, "warnings": list(info.warnings)}
    if budget_meta is not None:
        meta["budget"] = budget_meta
    art = Artifact(name=path.name, path=path, format="onnx", precision=_PRECISION[q.mode], parent=parent.name,
                   meta=meta)
    if budget_meta is not None and not budget_meta["met"]:
        art.status = "budget_not_met"
    return art
