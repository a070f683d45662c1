"""bf16 through OpenVINO: the float ONNX model converted to an OpenVINO IR (FP32 weights) that sessions run with
OpenVINO's bf16 inference precision, on CPUs with bf16 arithmetic (AVX512-BF16 or AMX)."""
from __future__ import annotations

from edgesdk.errors import InputError
from edgesdk.pipeline import Artifact, StageContext, register_stage

BF16_OPTIONS = {"precision": "bf16"}  # the session option the artifact runs with (manifest `session_options`)


def require_bf16() -> None:
    """Refuse bf16 on a CPU without bf16 arithmetic or without OpenVINO: OpenVINO would run the bf16 hint in
    f32 and the artifact would be a slower copy of the FP32 one. CompressRun calls it before any work."""
    from edgesdk.errors import BackendUnavailableError
    from edgesdk.runtimes.fingerprint import _cpu, bf16_supported
    from edgesdk.runtimes.registry import backend_installed, install_hint

    if not bf16_supported():
        model, isa = _cpu()
        raise InputError("--quantize bf16 needs a CPU with bf16 arithmetic, and this one has none",
                         expected="an x86 CPU with AVX512-BF16 or AMX-BF16 (Intel Cooper Lake, Sapphire Rapids "
                                  "and later; AMD Zen 4 and later)",
                         found=f"{model or 'unknown CPU'}: {', '.join(isa) or 'no ISA flags read'}",
                         hint="use --quantize fp16 (GPUs) or int8 (CPUs); run bf16 on a machine that has it")
    if not backend_installed("openvino"):
        raise BackendUnavailableError("--quantize bf16 runs through OpenVINO, which is not installed",
                                      hint=install_hint("openvino"))


@register_stage("bf16_openvino", text="converting to an OpenVINO IR for bf16", takes="onnx:fp32",
                yields="openvino", compare_with="parent", reads=())  # the parent and OpenVINO's version only
def bf16_openvino_stage(parent: Artifact | None, ctx: StageContext) -> Artifact:
    """``<stem>.bf16.xml`` (+ ``.bin``) from the float ONNX artifact; the gate runs it in bf16."""
    if parent is None:
        raise InputError("bf16_openvino needs an ONNX artifact before it", hint="put export_onnx first in the recipe")
    require_bf16()  # CompressRun has checked before any work; this guards a recipe run stage by stage
    import openvino as ov

    xml = ctx.workdir / f"{parent.path.stem}.bf16.xml"
    ov.save_model(ov.convert_model(str(parent.path)), str(xml), compress_to_fp16=False)  # weights stay FP32
    meta = {"reference": parent.meta.get("reference", "pytorch"), "params": parent.meta.get("params"),
            "macs": parent.meta.get("macs"),
            "conversion": {"from": parent.name, "tool": f"openvino {ov.get_version()}", "weights": "fp32",
                           "inference_precision": "bf16"}}
    return Artifact(name=xml.name, path=xml, format="openvino", precision="bf16", parent=parent.name, meta=meta,
                    session_options=dict(BF16_OPTIONS))
