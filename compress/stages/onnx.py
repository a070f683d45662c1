"""ONNX stages: export the (original or pruned) PyTorch model, quantize the float ONNX."""
from __future__ import annotations

from edgesdk.errors import InputError
from edgesdk.pipeline import Artifact, StageContext, register_stage
from edgesdk.progress import counter

from .common import CALIB_READS, MODEL_READS, PRECISION, SUFFIX, axes_meta, budget_key, calib_inputs, size_of


@register_stage("export_onnx", text="exporting to ONNX", takes="model", yields="onnx", reads=("export", *MODEL_READS))
def export_onnx_stage(parent: Artifact | None, ctx: StageContext) -> Artifact:
    """Export the model (the pruned one when ``parent`` is) to ``model[.pruned].onnx``."""
    from edgesdk.compress.export_onnx import export_onnx

    cfg = ctx.recipe.export
    model, reference, variant = ctx.pytorch(parent)
    path = ctx.workdir / f"model{variant}.onnx"
    info = export_onnx(model, ctx.example_inputs, path, opset=cfg.opset, dynamic_batch=cfg.dynamic_batch,
                       simplify=cfg.simplify, exporter=cfg.exporter, output_names=ctx.output_names,
                       dynamic_axes=ctx.dynamic_axes, auto_axes=ctx.auto_axes)
    meta = {
        "exporter": info.exporter_used,
        "opset_requested": info.opset_requested,
        "opset": info.opset_written,
        "fallback_reason": info.fallback_reason,
        "simplified": info.simplified,
        "simplify_error": info.simplify_error,
        "warnings": list(info.warnings),
        "export_time_s": round(info.export_time_s, 3),
        "reference": reference,
        "dynamic_axes": axes_meta(info.dynamic_axes),
        **size_of(model, ctx.example_inputs),
    }
    return Artifact(name=path.name, path=path, format="onnx", precision="fp32",
                    parent=parent.name if parent else "pytorch", meta=meta)


@register_stage("quantize_onnx", text="quantizing the ONNX model", takes="onnx:fp32", yields="onnx",
                compare_with="parent", reads=("quantize", *CALIB_READS), key_with=budget_key)
def quantize_onnx_stage(parent: Artifact | None, ctx: StageContext) -> Artifact:
    """Quantize the float ONNX artifact to ``<stem>.<mode>.onnx``; the accuracy budget wraps this stage."""
    from edgesdk.compress.quantize import quantize_onnx

    if parent is None:
        raise InputError("quantize_onnx needs an ONNX artifact before it", hint="put export_onnx first in the recipe")
    q = ctx.recipe.quantize
    path = ctx.workdir / f"{parent.path.stem}.{SUFFIX[q.mode]}.onnx"
    budget_meta = None
    if ctx.budget is not None:
        info, budget_meta = ctx.budget(parent.path, path)
    else:
        info = quantize_onnx(parent.path, path, mode=q.mode, calib=calib_inputs(ctx), calib_method=q.calib_method,
                             per_channel=q.per_channel, target=q.target, nodes_to_exclude=q.exclude,
                             on_progress=counter(ctx.say))
    meta = {"quantization": info.to_dict(), "calibration": ctx.calib_source, "warnings": list(info.warnings),
            "reference": parent.meta.get("reference", "pytorch")}
    if budget_meta is not None:
        meta["budget"] = budget_meta
    art = Artifact(name=path.name, path=path, format="onnx", precision=PRECISION[q.mode], parent=parent.name,
                   meta=meta)
    if budget_meta is not None and not budget_meta["met"]:
        art.status = "budget_not_met"
    return art
