"""Causal language models: intake (a Hugging Face folder or a factory), KV-cache ONNX export (onnxruntime-genai's
model builder, or torch.export with a KV-cache wrapper), weight-only int4/int8 quantization (MatMulNBits) and
the LLM parity measures (prefill logits, greedy tokens, perplexity). The pipeline that runs them and writes the
artifact directory is ``edgesdk.llm`` (sdk/llm.py); the ONNX layout both routes produce is ``export.LAYOUT``.

Example::

    with open_source("./my-llm") as src:
        route, _ = route_for(src)
        fp32 = export_artifact(src, "fp32", None, workdir / "fp32", workdir, route)
        int4 = export_artifact(src, "int4", WeightOnly(bits=4), workdir / "int4", workdir, route, fp32)
"""
from __future__ import annotations

from .export import LAYOUT, ROUTE_BUILDER, ROUTE_TORCH, export_artifact, route_for
from .intake import LLMSource, open_source
from .quantize import WeightOnly

__all__ = ["LAYOUT", "ROUTE_BUILDER", "ROUTE_TORCH", "LLMSource", "WeightOnly", "export_artifact", "open_source",
           "route_for"]
