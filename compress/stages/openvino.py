"""bf16 through OpenVINO: the float ONNX model converted to an OpenVINO IR (FP32 weights) that sessions run with
OpenVINO's bf16 inference precision, on CPUs with bf16 arithmetic (AVX512-BF16 or AMX)."""
from __future__ import annotations

from edgesdk.errors import InputError
from edgesdk.pipeline import Artifact, StageContext, register_stage

BF16_OPTIONS = {"precision": "bf16"}  # the session option the artifact runs with (manifest `session_options`)


@register_stage("bf16_openvino", text="converting to an OpenVINO IR for bf16", takes="onnx:fp32",
                yields="openvino", compare_with="parent")
def bf16_openvino_stage(parent: Artifact | None, ctx: StageContext) -> Artifact:
    """``<stem>.bf16.xml`` (+ ``.bin``) from the float ONNX artifact; the gate runs it in bf16."""
    from edgesdk.runtimes.fingerprint import bf16_supported

    if parent is None:
        raise InputError("bf16_openvino needs an ONNX artifact before it", hint="put export_onnx first in the recipe")
    if not bf16_supported():  # CompressRun refuses before any work; this guards a recipe run stage by stage
        raise InputError("--quantize bf16 needs a CPU with bf16 arithmetic", expected="AVX512-BF16 or AMX-BF16",
                         found="neither on this CPU", hint="use --quantize fp16 or int8")
    import openvino as ov

    xml = ctx.workdir / f"{parent.path.stem}.bf16.xml"
    ov.save_model(ov.convert_model(str(parent.path)), str(xml), compress_to_fp16=False)  # weights stay FP32
    meta = {"reference": parent.meta.get("reference", "pytorch"), "params": parent.meta.get("params"),
            "macs": parent.meta.get("macs"),
            "conversion": {"from": parent.name, "tool": f"openvino {ov.get_version()}", "weights": "fp32",
                           "inference_precision": "bf16"}}
    return Artifact(name=xml.name, path=xml, format="openvino", precision="bf16", parent=parent.name, meta=meta,
                    session_options=dict(BF16_OPTIONS))
