"""The reference set stored beside the artifacts, so a device can re-check parity and accuracy without the model.

``compress`` writes ``reference.npz`` into the artifact directory: a few of the reference input
batches, the PyTorch outputs each artifact is judged against (the original model's, and the
pruned model's when pruning ran), and labelled eval samples when given, bounded in size.
``edgesdk benchmark DIR`` runs every artifact on those inputs on the device and reports parity
(with the artifact's own tolerances from the manifest) and accuracy next to latency. numpy only.

Keys: ``in:{i}:{input}``, ``out:{model}:{i}:{output}``, ``eval:{input}``, ``eval:labels``.

Example::

    info = write_reference_set(out / "reference.npz", inputs, {"pytorch": outputs}, eval_data)
    check = check_artifact(session, load_reference_set(out / "reference.npz"), manifest_entry)
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ArtifactError
from .parity import compare

FILE_NAME = "reference.npz"
MAX_BYTES = 8 << 20  # keeps the directory easy to copy to a phone or a Jetson
MAX_EVAL = 2048


@dataclass
class ReferenceSet:
    inputs: list[dict[str, np.ndarray]]
    outputs: dict[str, list[dict[str, np.ndarray]]]  # reference model name -> per-batch outputs
    eval_data: dict[str, np.ndarray] | None


def _nbytes(batches: Sequence[Mapping[str, np.ndarray]]) -> int:
    return sum(a.nbytes for b in batches for a in b.values())


def write_reference_set(path: str | Path, inputs: Sequence[Mapping[str, np.ndarray]],
                        outputs: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
                        eval_data: Mapping[str, np.ndarray] | None = None,
                        max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """Write the reference set (atomically) keeping as many batches and eval samples as fit in ``max_bytes``."""
    from .atomic import write_bytes

    per_batch = [_nbytes([x]) + sum(_nbytes([o[i]]) for o in outputs.values()) for i, x in enumerate(inputs)]
    budget = max_bytes // 2 if eval_data is not None else max_bytes
    keep = 0
    while keep < len(inputs) and sum(per_batch[:keep + 1]) <= budget:
        keep += 1
    arrays: dict[str, np.ndarray] = {}
    for i in range(keep):
        for k, v in inputs[i].items():
            arrays[f"in:{i}:{k}"] = np.asarray(v)
        for model, outs in outputs.items():
            for k, v in outs[i].items():
                arrays[f"out:{model}:{i}:{k}"] = np.asarray(v)
    n_eval = 0
    if eval_data is not None:
        total = len(next(iter(eval_data.values())))
        row = sum(np.asarray(v)[:1].nbytes for v in eval_data.values()) or 1
        n_eval = int(min(total, MAX_EVAL, (max_bytes - sum(per_batch[:keep])) // row))
        for k, v in eval_data.items():
            arrays[f"eval:{k}"] = np.asarray(v)[:n_eval]
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(path, buf.getvalue())
    return {"path": Path(path).name, "batches": keep, "eval_samples": n_eval,
            "eval_total": len(next(iter(eval_data.values()))) if eval_data is not None else 0,
            "models": sorted(outputs)}


def load_reference_set(path: str | Path) -> ReferenceSet:
    """Read a reference.npz (never with pickle)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ArtifactError(f"the reference set {p} is unreadable", found=f"{type(e).__name__}: {e}",
                            hint="copy the artifact directory again, or re-run `edgesdk compress`") from e
    inputs: dict[int, dict[str, np.ndarray]] = {}
    outputs: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    eval_data: dict[str, np.ndarray] = {}
    try:
        for key, value in data.items():
            kind, _, rest = key.partition(":")
            if kind == "in":
                i, _, name = rest.partition(":")
                inputs.setdefault(int(i), {})[name] = value
            elif kind == "out":
                model, i, name = rest.split(":", 2)
                outputs.setdefault(model, {}).setdefault(int(i), {})[name] = value
            elif kind == "eval":
                eval_data[rest] = value
        for model, batches in outputs.items():
            missing = sorted(set(inputs) - set(batches))
            if missing:
                raise KeyError(f"no outputs of {model!r} for input batch {missing[0]}")
    except (ValueError, KeyError) as e:
        raise ArtifactError(f"the reference set {p} is malformed", found=f"{type(e).__name__}: {e}",
                            expected="in:<batch>:<input>, out:<model>:<batch>:<output> and eval:<name> arrays",
                            hint="copy the artifact directory again, or re-run `edgesdk compress`") from e
    order = sorted(inputs)
    return ReferenceSet(inputs=[inputs[i] for i in order],
                        outputs={m: [o[i] for i in order] for m, o in outputs.items()},
                        eval_data=eval_data or None)


def accuracy(session: Any, eval_data: Mapping[str, np.ndarray], input_names: Sequence[str],
             chunk: int = 64) -> float | None:
    """Top-1 accuracy in percent of the first output against ``labels``; None without labels."""
    labels = eval_data.get("labels")
    if labels is None or not len(labels):
        return None
    correct = 0
    inputs = getattr(session, "inputs", None) or []
    fixed = next((s.shape[0] for s in inputs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0), None)
    chunk = fixed or chunk  # a fixed-batch artifact takes exactly its batch: the last chunk is padded
    for start in range(0, len(labels), chunk):
        feeds = {k: np.ascontiguousarray(eval_data[k][start:start + chunk]) for k in input_names}
        real = len(next(iter(feeds.values())))
        if fixed and real < chunk:
            feeds = {k: np.concatenate([v, np.repeat(v[-1:], chunk - real, axis=0)]) for k, v in feeds.items()}
        logits = next(iter(session.run(feeds).values()))[:real]
        correct += int((logits.reshape(real, -1).argmax(-1) == labels[start:start + real]).sum())
    return round(100.0 * correct / len(labels), 3)


def check_artifact(session: Any, ref: ReferenceSet, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Parity (the artifact's own tolerances) and accuracy of a loaded session on the reference set."""
    from edgesdk.runtimes.layout import adapt_layout

    # the reference data is in PyTorch's terms (N,C,H,W, int64 ids, every forward() argument)
    session = adapt_layout(session, (entry.get("meta") or {}).get("input_layout"), drop_unknown=True)
    parity = entry.get("parity") or {}
    model = (entry.get("meta") or {}).get("reference", "pytorch")
    expected = ref.outputs.get(model)
    out: dict[str, Any] = {"batches": len(ref.inputs), "reference": model, "parity": None, "accuracy": None,
                           "eval_samples": 0}
    if expected:
        got = [session.run(dict(x)) for x in ref.inputs]
        result = compare(expected, got, atol=parity.get("atol"), rtol=parity.get("rtol"),
                         min_cosine=parity.get("min_cosine"))
        d = result.to_dict()
        out["parity"] = {k: None if d[k] is None else (bool(d[k]) if k == "passed" else float(d[k]))
                         for k in ("passed", "max_abs_err", "max_rel_err", "cosine", "top1_agreement", "atol", "rtol",
                                   "min_cosine")}
        if not result.passed:
            out["parity"]["failure"] = result.failure_message()
    if ref.eval_data is not None:
        names = [s.name for s in session.inputs]
        out["accuracy"] = accuracy(session, ref.eval_data, names)
        out["eval_samples"] = int(len(ref.eval_data.get("labels", [])))
    return out
