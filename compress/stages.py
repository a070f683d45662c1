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
