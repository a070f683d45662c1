"""Quantization under an accuracy budget: find the layers INT8 hurts most and keep them in float.

1. Quantize everything; measure accuracy drop (labelled eval data) or cosine vs PyTorch (label-free).
2. If the budget is missed, rank layers by the quantization noise each adds (float vs QDQ activations,
   ``edgesdk debug``'s per-layer comparison: the same implementation as the debug command), worst first.
3. Keep the worst 1, 2, 4, ... nodes in float and re-quantize until the budget holds or
   nothing is left. The best artifact found is kept either way; the manifest lists every
   try, the reason each node stayed float (``float_nodes``) and each layer kept in float with its
   measured SQNR (``float_layers``: its module, tensor, SQNR at its output, of its average channel and
   at its inputs, the dB it lost, its rank and the nodes kept with it).

Example::

    budget = AccuracyBudget(recipe, calib, ref_in, ref_out, print, evaluate=score_on_eval_data, baseline=99.4,
                            metric=METRICS["top1"])
    info, meta = budget("model.onnx", "model.int8.onnx")
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .quantize import QuantInfo, _fixed_batch, _Reader, preprocess, quantize_onnx

log = logging.getLogger(__name__)
_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu", "Elu",
                "BatchNormalization"}
_COMPUTE = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass
class RankedLayer:
    """A layer the budget may keep in float: its nodes (the layer, the activation fused with it, the readers
    of its tensor), why (a sentence) and its figures from the per-layer comparison (SQNR at its output, of
    its average channel and at its inputs, the dB it lost; its tensor and PyTorch module)."""

    nodes: list[str]
    why: str
    figures: dict[str, Any]


class AccuracyBudget:
    """Callable used by the quantize stage when the recipe sets max_accuracy_drop or min_cosine."""

    def __init__(self, recipe: Any, calib: Mapping[str, np.ndarray] | None,
                 ref_inputs: list[dict[str, np.ndarray]], ref_outputs: list[dict[str, np.ndarray]],
                 say: Callable[[str], None], *, evaluate: Callable[[Any], float | None] | None = None,
                 baseline: float | None = None, metric: Any = None) -> None:
        """``evaluate(session)`` measures the task metric on the labelled eval data (None without labels);
        ``baseline`` is the original model's value and ``metric`` says which way is better."""
        self.q = recipe.quantize
        if calib is not None:
            calib = {k: v[:self.q.calib_samples] for k, v in calib.items()}
        self.calib, self.evaluate, self.metric = calib, evaluate, metric
        self.baseline_accuracy = baseline
        self.ref_inputs, self.ref_outputs, self.say = ref_inputs, ref_outputs, say
        # TFLite files are fed as the parity gate feeds them: the inputs named here channels-last, a batch the
        # file fixed one sample at a time; None: ONNX files, fed as they are
        self.layout: dict[str, str] | None = None

    # -- measuring ------------------------------------------------------------------
    def score(self, path: Path) -> dict[str, Any]:
        from edgesdk.metrics import drop as metric_drop
        from edgesdk.parity import compare
        from edgesdk.runtimes import load

        with load(path) as sess:
            if self.layout is not None:  # fed in the file's layout and batch, as the parity gate feeds it
                from edgesdk.gate import run_reference

                sess, got, _why = run_reference(sess, self.ref_inputs, self.layout)
                pairs = [(r, g) for r, g in zip(self.ref_outputs, got) if g is not None]
                ref, got = [r for r, _ in pairs], [g for _, g in pairs]
            else:
                ref, got = self.ref_outputs, [sess.run(f) for f in self.ref_inputs]
            cosine = compare(ref, got, atol=None, rtol=None).to_dict()["cosine"]
            acc = self.evaluate(sess) if self.evaluate is not None else None
        drop = (None if acc is None or self.baseline_accuracy is None or self.metric is None else
                round(metric_drop(self.metric, self.baseline_accuracy, acc), 3))
        ok = True
        if self.q.max_accuracy_drop is not None:
            ok &= drop is not None and drop <= self.q.max_accuracy_drop
        if self.q.min_cosine is not None:
            ok &= cosine >= self.q.min_cosine
        return {"accuracy": acc, "accuracy_drop": drop, "cosine": float(cosine), "met": bool(ok)}

    def shortfall(self, s: dict[str, Any]) -> str:
        parts = []
        if self.q.max_accuracy_drop is not None and s["accuracy_drop"] is not None:
            over = s["accuracy_drop"] - self.q.max_accuracy_drop
            if over > 0:
                parts.append(f"accuracy drop {s['accuracy_drop']:.2f} points, {over:.2f} over the "
                             f"{self.q.max_accuracy_drop} budget")
        if self.q.min_cosine is not None and s["cosine"] < self.q.min_cosine:
            parts.append(f"cosine {s['cosine']:.6f}, {self.q.min_cosine - s['cosine']:.2g} under {self.q.min_cosine}")
        return "; ".join(parts) or "budget met"

    def rank(self, pre: Path, qdq: Path) -> list[RankedLayer]:
        """The layers to keep in float, worst first: ``edgesdk debug``'s
        per-layer comparison of the QDQ model with its float source on calibration samples
        (:func:`edgesdk.debug.layers.compare_onnx`), ranked by the noise each layer adds, so deep layers are
        not blamed for error that came from above. An activation (Relu, Clip, ...) is kept in float together
        with the Conv/Gemm/MatMul that feeds it (the quantizer fuses the pair), and with the nodes that read
        the layer's tensor (while one of them is quantized, the tensor is rounded to int8 for it)."""
        import onnx

        from edgesdk.debug.layers import compare_onnx

        sample = {k: v[:32] for k, v in (self.calib or {}).items()}
        if not sample:
            return []
        fixed = _fixed_batch(pre)
        layers = compare_onnx(qdq, pre, list(_Reader(sample, batch=fixed or 8, exact=fixed is not None)))
        nodes = onnx.load(str(pre), load_external_data=False).graph.node
        producer = {out: n for n in nodes for out in n.output}
        by_name = {n.name: n for n in nodes}
        consumers: dict[str, list[Any]] = {}
        for n in nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        ranked = []
        for d in layers:  # worst first
            if d.added_noise <= 0 or d.node not in by_name:
                continue
            cur = by_name[d.node]
            group = [cur.name]
            while cur.op_type in _ACTIVATIONS and cur.input and cur.input[0] in producer:
                cur = producer[cur.input[0]]
                group.append(cur.name)
                if cur.op_type in _COMPUTE:
                    break
            # the noise of a quantized activation is its own rounding too, which stays while any node that
            # reads the tensor is quantized: those readers are kept in float with it
            group += [n.name for n in consumers.get(d.tensor, []) if n.name not in group]
            ranked.append(self._ranked(group, d))
        return ranked

    # -- the search -----------------------------------------------------------------
    def __call__(self, src: Path, dst: Path) -> tuple[QuantInfo, dict[str, Any]]:
        """Quantize the float ONNX file ``src`` into ``dst`` (onnxruntime's quantizer) under the budget."""
        q = self.q
        self.layout = None  # ONNX files take the model's own layout and batch
        work = Path(tempfile.mkdtemp(prefix=".budget-", dir=dst.parent))
        try:
            pre, pre_info = preprocess(src, work / "pre.onnx")

            def quantize(exclude: list[str], out: Path) -> QuantInfo:
                return quantize_onnx(pre, out, mode=q.mode, calib=self.calib, calib_method=q.calib_method,
                                     per_channel=q.per_channel, target=q.target, nodes_to_exclude=exclude,
                                     preprocess=False)

            best_info, meta = self.search(pre, dst, work, quantize, lambda qdq: self.rank(pre, qdq), list(q.exclude))
            best_info.preprocessed, best_info.preprocess_note = pre_info.preprocessed, pre_info.preprocess_note
            if q.mode == "int8":
                from .quantize import op_histogram

                hist = op_histogram(dst)
                if not hist.get("QuantizeLinear") and not hist.get("DequantizeLinear"):
                    best_info.warnings.append(
                        "the budget kept every quantizable node in float: this 'int8' artifact is FP32 in all but "
                        "name (larger and no faster); ship the FP32 artifact, or loosen the budget")
            return best_info, meta
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def tflite(self, src: Path, dst: Path, names: list[str], outs: list[str], *, int8_io: bool = False,
               layout: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Full-integer INT8 of the float TFLite file ``src`` (ai-edge-quantizer, as compress makes it) into
        ``dst`` under the budget: the ops writing the tensors INT8 hurts most stay float32 (NO_QUANTIZE), ranked
        by :func:`edgesdk.debug.tflite.compare_tflite_files` (the quantized file against ``src``, tensor by
        tensor); ``layout`` names the inputs the file takes channels-last. Returns (quantization record, meta)."""
        from edgesdk.debug.tflite import compare_tflite_files

        from .export_tflite import requantize_int8

        self.layout = dict(layout or {})
        moved = {k: np.ascontiguousarray(np.moveaxis(v, 1, -1)) if self.layout.get(k) == "channels_last"
                 and v.ndim == 4 else v for k, v in (self.calib or {}).items()}  # the file's own layout

        def quantize(keep: list[str], out: Path) -> dict[str, Any]:
            return requantize_int8(src, out, moved, names, outs, int8_io=int8_io, keep_float=keep)

        def rank(quantized: Path) -> list[RankedLayer]:
            sample = {k: v[:32] for k, v in (self.calib or {}).items()}
            layers = compare_tflite_files(quantized, src, [{k: v[i:i + 8] for k, v in sample.items()}
                                                           for i in range(0, len(next(iter(sample.values()))), 8)],
                                          self.layout) if sample else []
            return [self._ranked([d.tensor], d) for d in layers if d.added_noise > 0]

        work = Path(tempfile.mkdtemp(prefix=".budget-", dir=dst.parent))
        try:
            return self.search(src, dst, work, quantize, rank, [])
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _ranked(nodes: list[str], d: Any) -> RankedLayer:
        from edgesdk.debug.report import loss

        where = f" ({d.module})" if d.module else ""
        return RankedLayer(nodes, f"{loss(d)} at {d.tensor}{where}", {
            "node": d.node, "op": d.op, "tensor": d.tensor, "module": d.module, "module_class": d.module_class,
            "sqnr_db": round(d.sqnr_db, 2), "channel_sqnr_db": round(d.channel_sqnr_db, 2),
            "input_sqnr_db": round(d.input_sqnr_db, 2), "lost_db": round(d.jump_db, 2)})

    def search(self, source: Path, dst: Path, work: Path, quantize: Callable[[list[str], Path], Any],
               rank: Callable[[Path], list[RankedLayer]], base_excl: list[str]) -> tuple[Any, dict[str, Any]]:
        """The budget's search, for any quantizer: ``quantize(kept_in_float, out)`` writes a quantized file
        (returning its record), ``rank(quantized_file)`` ranks its layers worst first; ``source`` is the float
        file they start from (scored once when the full quantization misses: a float model that misses the
        budget too means no fallback can meet it). The worst 1, 2, 4, ... layers are kept in float until the
        budget holds; the best file found is left at ``dst``."""
        q = self.q
        tries: list[dict[str, Any]] = []

        def attempt(exclude: list[str], out: Path) -> tuple[Any, dict[str, Any]]:
            info = quantize(exclude, out)
            s = self.score(out)
            tries.append({"float_nodes": len(exclude), **s})
            name = self.metric.name if self.metric is not None else "accuracy"
            self.say(f"{q.mode.upper()} with {len(exclude)} node(s) kept in float: "
                     f"{self.shortfall(s) if not s['met'] else 'budget met'} (cosine {s['cosine']:.4f}"
                     + (f", {name} {s['accuracy']:.2f})" if s["accuracy"] is not None else ")"))
            return info, s

        info, best = attempt(base_excl, dst)
        best_info, reasons, layers, source_score = info, {}, [], None
        if not best["met"]:
            # every node in float is the float model itself: when that misses the budget (a pruned model
            # judged against the original), no fallback can meet it, so none is tried
            source_score = self.score(source)
            if not source_score["met"]:
                self.say(f"the float model it quantizes misses the budget too ({self.shortfall(source_score)}): "
                         "no layer kept in float can meet it")
        if not best["met"] and source_score["met"]:
            ranking = rank(dst)
            candidates = [r for r in ranking if not set(r.nodes) <= set(base_excl)]
            k = 1
            while candidates and not best["met"]:
                k = min(k, len(candidates))
                excl = list(dict.fromkeys(base_excl + [n for r in candidates[:k] for n in r.nodes]))
                trial = work / f"try{k}{dst.suffix}"
                info, s = attempt(excl, trial)
                if _better(s, best):
                    os.replace(trial, dst)
                    best, best_info = s, info
                    reasons = {node: f"{r.why} (rank {i + 1} of {len(ranking)})"
                               for i, r in enumerate(candidates[:k]) for node in r.nodes}
                    layers = [{**r.figures, "rank": i + 1, "nodes": r.nodes} for i, r in enumerate(candidates[:k])]
                if k == len(candidates):
                    break
                k *= 2
        meta = {"max_accuracy_drop": q.max_accuracy_drop, "min_cosine": q.min_cosine, "met": best["met"],
                "result": best, "shortfall": None if best["met"] else self.shortfall(best) + (
                    "" if source_score is None or source_score["met"] else
                    f"; the float model it quantizes misses the budget too ({self.shortfall(source_score)})"),
                "float_source": source_score,
                "float_nodes": reasons, "float_layers": layers, "tries": tries}
        return best_info, meta


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["met"] != b["met"]:
        return a["met"]
    if a["accuracy_drop"] is not None and b["accuracy_drop"] is not None and a["accuracy_drop"] != b["accuracy_drop"]:
        return a["accuracy_drop"] < b["accuracy_drop"]
    return a["cosine"] > b["cosine"]
