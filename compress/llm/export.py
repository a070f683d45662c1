"""KV-cache ONNX export of a causal LM, by one of two routes, both to the same layout (``LAYOUT``):

- ``onnxruntime-genai builder`` for the architectures its model builder writes (``BUILDER_ARCHITECTURES``):
  fused kernels (GroupQueryAttention, SkipSimplifiedLayerNormalization, rotary embedding inside GQA), its own
  int4/int8 MatMulNBits, and the genai_config.json onnxruntime-genai reads;
- ``torch export`` for the others (GPT-2...): ``KVCacheLM`` wraps the transformers model so its inputs and
  outputs are the flat tensors of the layout, exported by torch.export (dynamo) with dynamic batch, sequence
  and past lengths; quantized afterwards by ``quantize.quantize_onnx``.

Every artifact folder also gets the source's tokenizer and generation_config.json, and the layout is checked
on the written file (``check_layout``) so one runtime serves both routes.

Example::

    route, why_not_builder = route_for(src)
    made = export_artifact(src, "fp32", None, stage / "fp32", work, route)
    made.meta["route"], made.meta["ops"]["GroupQueryAttention"]
"""
from __future__ import annotations

import functools
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.errors import ExportError

from .intake import LLMSource, kv_tensors, offline
from .quantize import WeightOnly, quant_summary, quantize_onnx

ROUTE_BUILDER = "onnxruntime-genai builder"
ROUTE_TORCH = "torch export"
# The dense text decoders onnxruntime-genai's builder (0.18) writes: the ``create_model`` dispatch of
# onnxruntime_genai/models/builder.py, less the MoE ones it builds for CUDA only and the multimodal ones.
BUILDER_ARCHITECTURES = frozenset({
    "Ernie4_5ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "GraniteForCausalLM",
    "HunYuanDenseV1ForCausalLM", "InternLM2ForCausalLM", "Lfm2ForCausalLM", "LlamaForCausalLM",
    "MistralForCausalLM", "NemotronForCausalLM", "OlmoForCausalLM", "PhiForCausalLM", "Phi3ForCausalLM",
    "Phi3SmallForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "SmolLM3ForCausalLM"})

# The ONNX LM layout (the builder's): names, element types and axes, shared with the runtime's generate loop.
LAYOUT = {
    "inputs": {"input_ids": ("int64", ["batch_size", "sequence_length"]),
               "attention_mask": ("int64", ["batch_size", "total_sequence_length"]),
               "position_ids": ("int64", ["batch_size", "sequence_length"]),  # optional
               "past_key_values.{i}.key": ("float32", ["batch_size", "kv_heads", "past_sequence_length", "head_dim"]),
               "past_key_values.{i}.value": ("float32", ["batch_size", "kv_heads", "past_sequence_length", "head_dim"])},
    "outputs": {"logits": ("float32", ["batch_size", "sequence_length", "vocab"]),
                "present.{i}.key": ("float32", ["batch_size", "kv_heads", "total_sequence_length", "head_dim"]),
                "present.{i}.value": ("float32", ["batch_size", "kv_heads", "total_sequence_length", "head_dim"])},
}
OPTIONAL_INPUTS = ("position_ids",)


def cache_names(num_layers: int, prefix: str) -> list[str]:
    """``past_key_values.0.key, past_key_values.0.value, ...`` (or ``present.*``), layer by layer."""
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


@dataclass
class Made:
    """One artifact folder's model file and what the manifest says about how it was made."""

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def route_for(src: LLMSource) -> tuple[str, str | None]:
    """(route, why not the builder): the builder where it supports the architecture, else torch export. Also
    torch export when a Linear other than the LM head has ``vocab`` outputs: the builder (0.18) takes every
    such Linear for the LM head (``has_lm_head``) and wires the logits to the wrong tensor (measured: fp32
    cosine 0.15 against PyTorch for hidden 1024 = vocab 1024)."""
    import torch

    if src.architecture not in BUILDER_ARCHITECTURES:
        return ROUTE_TORCH, None
    head = src.model.get_output_embeddings()
    clash = [name for name, m in src.model.named_modules()
             if isinstance(m, torch.nn.Linear) and m is not head and m.out_features == src.vocab_size]
    if clash:
        return ROUTE_TORCH, (f"{len(clash)} Linear layers besides the LM head have {src.vocab_size} outputs (e.g. "
                             f"{clash[0]}), which onnxruntime-genai's builder mistakes for the LM head")
    return ROUTE_BUILDER, None


def refuse_unmade(src: LLMSource, precision: str, route: str) -> None:
    """ExportError when ``route`` does not make ``precision``: fp16 comes from the builder only (torch export's
    graph would need every op's CPU fp16 kernel, which onnxruntime does not have)."""
    if precision == "fp16" and route == ROUTE_TORCH:
        raise ExportError(f"the fp16 artifact of {src.architecture} is not made: fp16 comes from onnxruntime-genai's "
                          "builder, and this model goes through torch export",
                          expected=f"an architecture the builder builds ({', '.join(sorted(BUILDER_ARCHITECTURES))})",
                          hint="leave fp16 out of --quantize; int8/int4 weight-only work on this route")


def export_artifact(src: LLMSource, precision: str, quant: WeightOnly | None, out: Path, work: Path,
                    route: str, fp32: Made | None = None) -> Made:
    """Write ``out/`` (model.onnx + data, tokenizer, generation and genai configs) for one precision by
    ``route``. Quantized precisions start from the ``fp32`` artifact where the route quantizes afterwards (torch
    export, and HQQ on the builder route)."""
    refuse_unmade(src, precision, route)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model.onnx"
    if route == ROUTE_BUILDER and (quant is None or quant.via_builder):
        meta = run_builder(src, precision, quant, out, work)
    elif quant is None:
        meta = export_torch(src, model)
    else:
        if fp32 is None:
            raise ValueError("a quantized artifact needs the fp32 one first")
        quantize_onnx(fp32.path, model, quant)
        meta = {"quantized_from": "fp32/model.onnx", "quantizer": "onnxruntime MatMulNBitsQuantizer"}
        if (fp32.path.parent / "genai_config.json").is_file():
            shutil.copy2(fp32.path.parent / "genai_config.json", out / "genai_config.json")
    for f in src.side_files():
        shutil.copy2(f, out / f.name)
    if route == ROUTE_TORCH and not (out / "genai_config.json").exists():
        write_genai_config(src, out)
    io = check_layout(model, src.num_layers)
    meta = {"route": route, **meta, "io": io, "ops": op_histogram(model),
            "quantization": ({**quant.to_dict(), "graph": quant_summary(model)} if quant is not None else None),
            "export_time_s": round(time.perf_counter() - t0, 3)}
    return Made(model, meta)


def run_builder(src: LLMSource, precision: str, quant: WeightOnly | None, out: Path, work: Path) -> dict[str, Any]:
    """onnxruntime-genai's model builder, called in-process (parse_extra_options + create_model, what its CLI
    runs) for the CPU execution provider; its prints and progress bars are kept off the console."""
    from edgesdk.compress.export_onnx import _first_line, _quiet

    options = ["hf_token=false", *(quant.builder_options() if quant is not None else [])]
    cache = work / "builder-cache"
    try:
        with offline(), _quiet() as said:
            from onnxruntime_genai.models import builder

            extra = builder.parse_extra_options(None, str(src.folder), str(out), precision, "cpu", str(cache),
                                                options)
            builder.create_model(None, str(src.folder), str(out), precision, "cpu", str(cache), **extra)
    except ImportError as e:
        raise ExportError("onnxruntime-genai's model builder is not installed", found=_first_line(e),
                          hint="pip install 'edgesdk[llm-compress]'") from e
    except Exception as e:  # the builder raises bare Exception, ValueError, KeyError, NotImplementedError...
        raise BuilderFailed(_first_line(e), said.getvalue()[-2000:]) from e
    import onnxruntime_genai

    return {"builder": {"version": onnxruntime_genai.__version__, "precision": precision,
                        "execution_provider": "cpu", "extra_options": options}}


class BuilderFailed(Exception):
    """The builder could not build this model (a config it does not handle); the caller falls back to torch
    export and records why."""

    def __init__(self, reason: str, output: str) -> None:
        super().__init__(reason)
        self.reason, self.output = reason, output


def export_torch(src: LLMSource, path: Path) -> dict[str, Any]:
    """Export ``src.model`` wrapped in KVCacheLM with torch.export (dynamo) to ``path`` + ``path.data``."""
    import torch
    from torch.export import Dim

    from edgesdk.compress.export_onnx import _failing_op, _first_line, _quiet, _save

    wrapper = KVCacheLM(src.model, src.num_layers).eval()
    names = ["input_ids", "attention_mask", *cache_names(src.num_layers, "past_key_values")]
    outs = ["logits", *cache_names(src.num_layers, "present")]
    batch, seq, past = 2, 3, 4  # distinct sizes, none 0 or 1: torch.export would specialise those
    vocab = min(src.vocab_size, int(src.tokenizer.vocab_size or src.vocab_size))
    args = (torch.randint(0, vocab, (batch, seq)), torch.ones(batch, past + seq, dtype=torch.long),
            *[torch.zeros(batch, src.kv_heads, past, src.head_dim) for _ in range(2 * src.num_layers)])
    b, s, p, t = (Dim("batch_size"), Dim("sequence_length"), Dim("past_sequence_length"),
                  Dim("total_sequence_length"))
    shapes = ({0: b, 1: s}, {0: b, 1: t}, tuple({0: b, 2: p} for _ in range(2 * src.num_layers)))
    try:
        with torch.no_grad(), _quiet() as said:
            prog = torch.onnx.export(wrapper, args, None, dynamo=True, input_names=names, output_names=outs,
                                     opset_version=18, dynamic_shapes=shapes, optimize=True, verbose=False)
    except Exception as e:  # torch.export and the ONNX translator raise many types
        op = _failing_op(f"{e}\n{said.getvalue()}")
        raise ExportError(f"{src.architecture} cannot be exported with a KV cache: neither onnxruntime-genai's "
                          f"builder (it does not support this architecture) nor torch.export"
                          + (f" (it fails on {op})" if op else ""), found=_first_line(e),
                          hint="the builder supports " + ", ".join(sorted(BUILDER_ARCHITECTURES)[:8]) + "...; "
                               "otherwise rewrite the op" + (f" {op}" if op else "") + " or report the model") from e
    proto = prog.model_proto
    for vi in proto.graph.output:  # present.* come out as "past_sequence_length + sequence_length"
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and "+" in d.dim_param:
                d.dim_param = "total_sequence_length"
    _save(proto, path, True)
    return {"exporter": f"torch.onnx.export(dynamo=True) {torch.__version__}", "opset": 18,
            "wrapper": "KVCacheLM: DynamicCache from the past_key_values.* inputs, position_ids from attention_mask"}


@functools.lru_cache(maxsize=None)
def _kv_cache_lm() -> type:
    """The wrapper class, made on first use so that importing this module does not import torch."""
    import torch

    class _KVCacheLM(torch.nn.Module):
        """forward(input_ids, attention_mask, *past) -> (logits, *present): a transformers causal LM with its
        cache as flat tensors (layer by layer, key then value) in the builder's layout. position_ids come from
        the mask (cumsum - 1), as the builder's graphs compute them, so left-padded batches work."""

        def __init__(self, model: Any, num_layers: int) -> None:
            super().__init__()
            import inspect

            self.model, self.num_layers = model, num_layers
            params = inspect.signature(model.forward).parameters
            self.cache_arg = "cache" if "cache" in params else "past_key_values"

        def forward(self, input_ids: Any, attention_mask: Any, *past: Any) -> tuple[Any, ...]:
            from transformers import DynamicCache

            cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)])
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=True, **{self.cache_arg: cache})
            return (out.logits, *[t for kv in kv_tensors(out) for t in kv])

    return _KVCacheLM


def KVCacheLM(model: Any, num_layers: int) -> Any:  # noqa: N802 - a class made on first use (torch is lazy)
    """The KV-cache wrapper module around ``model`` (see ``_kv_cache_lm``)."""
    return _kv_cache_lm()(model, num_layers)


def write_genai_config(src: LLMSource, out: Path) -> None:
    """A genai_config.json for a torch-export artifact, in the builder's schema (decoder I/O names, sizes,
    token ids, greedy search), so onnxruntime-genai tools can read the folder where they know the model type."""
    from edgesdk.atomic import write_json

    cfg, gen = src.model.config, getattr(src.model, "generation_config", None)
    ids = {k: getattr(gen, k, None) if getattr(gen, k, None) is not None else getattr(cfg, k, None)
           for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    context = next((getattr(cfg, k) for k in ("max_position_embeddings", "n_positions", "n_ctx")
                    if getattr(cfg, k, None)), 2048)
    heads = next((getattr(cfg, k) for k in ("num_attention_heads", "n_head") if getattr(cfg, k, None)), src.kv_heads)
    write_json(out / "genai_config.json", {
        "model": {**ids, "context_length": context, "type": src.model_type, "vocab_size": src.vocab_size,
                  "decoder": {"filename": "model.onnx", "head_size": src.head_dim, "hidden_size": heads * src.head_dim,
                              "num_attention_heads": heads, "num_hidden_layers": src.num_layers,
                              "num_key_value_heads": src.kv_heads, "session_options": {"provider_options": []},
                              "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                                         "past_key_names": "past_key_values.%d.key",
                                         "past_value_names": "past_key_values.%d.value"},
                              "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                                          "present_value_names": "present.%d.value"}}},
        "search": {"do_sample": False, "max_length": context, "num_beams": 1, "past_present_share_buffer": False}})


_ONNX_TYPES = {1: "float32", 7: "int64", 10: "float16", 16: "bfloat16", 6: "int32"}


def check_layout(path: Path, num_layers: int) -> dict[str, Any]:
    """The model's inputs and outputs (name, type, dims), after checking they are the layout's: every name
    present (position_ids optional), nothing else, cache tensors of rank 4; ExportError listing what differs."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def spec(vi: Any) -> dict[str, Any]:
        t = vi.type.tensor_type
        return {"name": vi.name, "dtype": _ONNX_TYPES.get(t.elem_type, str(t.elem_type)),
                "shape": [d.dim_param or d.dim_value for d in t.shape.dim]}

    ins, outs = [spec(v) for v in proto.graph.input], [spec(v) for v in proto.graph.output]
    want_in = {"input_ids", "attention_mask", *cache_names(num_layers, "past_key_values")}
    want_out = {"logits", *cache_names(num_layers, "present")}
    got_in, got_out = {s["name"] for s in ins}, {s["name"] for s in outs}
    problems = [f"missing input {n}" for n in sorted(want_in - got_in)]
    problems += [f"unexpected input {n}" for n in sorted(got_in - want_in - set(OPTIONAL_INPUTS))]
    problems += [f"missing output {n}" for n in sorted(want_out - got_out)]
    problems += [f"{s['name']} has rank {len(s['shape'])}, expected 4" for s in ins + outs
                 if s["name"].startswith(("past_key_values.", "present.")) and len(s["shape"]) != 4]
    if problems:
        raise ExportError(f"{path} does not follow the LLM ONNX layout", expected="input_ids, attention_mask, "
                          "past_key_values.{i}.key|value -> logits, present.{i}.key|value", found="; ".join(problems))
    return {"inputs": ins, "outputs": outs}


def op_histogram(path: Path) -> dict[str, int]:
    """Op type -> count in the graph (MatMulNBits, GroupQueryAttention... say which kernels run)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n in proto.graph.node).most_common())
