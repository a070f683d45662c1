"""Weight-only quantization of a causal LM's ONNX graph: MatMul weights to 4 or 8 bits in blocks (the
``com.microsoft.MatMulNBits`` op), activations stay float. One :class:`WeightOnly` choice drives both routes:
``builder_options()`` for onnxruntime-genai's model builder, ``quantize_onnx()`` (onnxruntime's
MatMulNBitsQuantizer) for the torch-export route and for HQQ, which the builder does not offer.

Round-to-nearest (``rtn``, the default) is MatMulNBitsQuantizer's DEFAULT method, MLAS's blockwise RTN, the same
code the builder's ``algo_config=default`` runs. HQQ (half-quadratic) fits a float zero point per block, so it is
asymmetric whatever ``symmetric`` says. The token embedding (a Gather) stays fp32 on both routes; the LM head is
a MatMul and is quantized with the body. ``quant_summary`` reads back from the written graph what was done.

Example::

    q = WeightOnly(bits=4, block_size=64).checked()
    quantize_onnx(Path("fp32/model.onnx"), Path("int4/model.onnx"), q)
    quant_summary(Path("int4/model.onnx"))   # {"matmulnbits": 15, "bits": [4], "lm_head": "int4", ...}
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgesdk.errors import ExportError, InputError

BLOCK_SIZES = (32, 64, 128)
METHODS = ("rtn", "hqq")
PRECISIONS = ("fp32", "fp16", "int4", "int8")  # fp16: every weight, activation and the KV cache in half
WEIGHT_ONLY = ("int4", "int8")


@dataclass(frozen=True)
class WeightOnly:
    """A weight-only quantization choice. ``accuracy_level`` is MatMulNBits' compute type: 4 quantizes the
    activations to int8 inside the kernel (the builder's CPU default, fastest on CPUs), 1 computes in fp32."""

    bits: int
    block_size: int = 32
    symmetric: bool = True
    method: str = "rtn"
    accuracy_level: int = 4

    @property
    def precision(self) -> str:
        return f"int{self.bits}"

    def checked(self) -> WeightOnly:
        """This choice after checking each value (InputError naming the flag); HQQ made asymmetric."""
        if self.bits not in (4, 8):
            raise InputError(f"weight-only quantization to {self.bits} bits is not offered", expected="int4 or int8")
        if self.block_size not in BLOCK_SIZES:
            raise InputError(f"bad --int4-block-size {self.block_size}", expected=" | ".join(map(str, BLOCK_SIZES)),
                             found=str(self.block_size), hint="32 is the most accurate, 128 the smallest")
        if self.method not in METHODS:
            raise InputError(f"unknown --int4-method {self.method!r}", expected=" | ".join(METHODS))
        if self.method == "hqq" and self.bits != 4:
            raise InputError("--int4-method hqq applies to int4 only", found=f"--quantize {self.precision}",
                             hint="int8 uses round-to-nearest")
        return replace(self, symmetric=False) if self.method == "hqq" else self

    @property
    def via_builder(self) -> bool:
        """Whether the builder can make it itself (RTN); HQQ goes through MatMulNBitsQuantizer."""
        return self.method == "rtn"

    def builder_options(self) -> list[str]:
        """The builder's KEY=VALUE extra options for this choice."""
        return [f"block_size={self.block_size}", f"is_symmetric={str(self.symmetric).lower()}",
                f"accuracy_level={self.accuracy_level}", "algo_config=default"]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": self.precision, "weights": "MatMul weights (MatMulNBits)",
                "activations": "float (weight-only)"}


def prepare_matmuls(proto: Any) -> int:
    """Rewrite what MatMulNBitsQuantizer cannot take into what it can, in place; return how many nodes changed:
    a Gemm with a constant weight (GPT-2's Conv1D exports as one) becomes MatMul + Add, and a MatMul whose
    weight is a Transpose of a constant (a tied LM head) gets the transposed copy as its own initializer."""
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    nodes, changed = [], 0
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Gemm" and len(n.input) >= 2 and n.input[1] in inits and not attrs.get("transA", 0) \
                and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0:
            w = numpy_helper.to_array(inits[n.input[1]])
            name = n.input[1]
            if attrs.get("transB", 0):
                name = f"{n.input[1]}_T"
                g.initializer.append(numpy_helper.from_array(w.T.copy(), name))
            has_bias = len(n.input) > 2 and n.input[2]
            mm_out = f"{n.output[0]}_matmul" if has_bias else n.output[0]
            nodes.append(helper.make_node("MatMul", [n.input[0], name], [mm_out], name=f"{n.name}_MatMul"))
            if has_bias:
                nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=f"{n.name}_Add"))
            changed += 1
            continue
        src = producers.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if src is not None and src.op_type == "Transpose" and src.input[0] in inits:
            w = numpy_helper.to_array(inits[src.input[0]])
            if w.ndim == 2:
                name = f"{src.input[0]}_transposed"
                if name not in inits:
                    inits[name] = numpy_helper.from_array(w.T.copy(), name)
                    g.initializer.append(inits[name])
                n.input[1] = name
                changed += 1
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    return changed


def quantizable_matmuls(proto: Any) -> int:
    """MatMul nodes whose weight (input B) is a constant 2-D initializer: what weight-only quantization takes."""
    inits = {i.name: len(i.dims) for i in proto.graph.initializer}
    return sum(1 for n in proto.graph.node if n.op_type == "MatMul" and inits.get(n.input[1]) == 2)


def quantize_onnx(src: Path, dst: Path, q: WeightOnly) -> None:
    """Write ``dst`` (model.onnx + model.onnx.data): ``src`` with its MatMul weights quantized as ``q`` says."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from edgesdk.compress.export_onnx import _first_line, _quiet, _save

    proto = onnx.load(str(src))
    prepare_matmuls(proto)
    if not quantizable_matmuls(proto):
        raise InputError(f"--quantize {q.precision} found no Linear/MatMul layer to quantize in {src.name}",
                         expected="MatMul nodes with constant 2-D weights (nn.Linear, Conv1D)",
                         found=f"ops: {dict(Counter(n.op_type for n in proto.graph.node).most_common(8))}",
                         hint="weight-only quantization is for transformer LMs; leave --quantize out")
    algo = HQQWeightOnlyQuantConfig(block_size=q.block_size, bits=q.bits) if q.method == "hqq" else None
    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # it logs every node at INFO
    try:
        with _quiet():
            quant = MatMulNBitsQuantizer(proto, bits=q.bits, block_size=q.block_size, is_symmetric=q.symmetric,
                                         accuracy_level=q.accuracy_level, algo_config=algo)
            quant.process()
    except Exception as e:  # onnxruntime's quantizer raises plain exceptions
        raise ExportError(f"{q.precision} weight-only quantization of {src.name} failed", found=_first_line(e),
                          hint="try another --int4-block-size or --int4-method") from e
    finally:
        quiet.setLevel(level)
    out = quant.model.model
    for n in out.graph.node:  # HQQ writes no accuracy_level: give every node the one asked for
        if n.op_type == "MatMulNBits" and not any(a.name == "accuracy_level" for a in n.attribute):
            n.attribute.append(onnx.helper.make_attribute("accuracy_level", q.accuracy_level))
    _save(out, dst, True)


def quant_summary(path: Path) -> dict[str, Any]:
    """What the graph at ``path`` holds, read back: MatMulNBits count and attributes, float MatMuls left, the
    embedding's and the LM head's precision."""
    import onnx
    from onnx import helper

    proto = onnx.load(str(path), load_external_data=False)
    g = proto.graph
    nbits = [n for n in g.node if n.op_type == "MatMulNBits"]
    attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in nbits]
    producers = {o: n for n in g.node for o in n.output}
    head = producers.get("logits")
    while head is not None and head.op_type not in ("MatMul", "MatMulNBits", "Gemm"):
        head = next((producers[i] for i in head.input if i in producers), None)
    head_attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute} if head is not None else {}
    inits = {i.name: len(i.dims) for i in g.initializer}
    # the token embedding: the first Gather from a 2-D table (the builder's and torch.export's graphs both)
    embed = next((n for n in g.node if n.op_type in ("Gather", "GatherBlockQuantized")
                  and inits.get(n.input[0]) == 2), None)
    return {"matmulnbits": len(nbits), "float_matmuls": quantizable_matmuls(proto),
            "bits": sorted({a.get("bits", 4) for a in attrs}), "block_size": sorted({a.get("block_size") for a in attrs}),
            "accuracy_level": sorted({a.get("accuracy_level", 0) for a in attrs}),
            "lm_head": (f"int{head_attrs.get('bits', 4)}" if head is not None and head.op_type == "MatMulNBits"
                        else "fp32" if head is not None else "not found"),
            "embedding": ("fp32 (Gather)" if embed is not None and embed.op_type == "Gather" else
                          "quantized (GatherBlockQuantized)" if embed is not None else "not found")}
