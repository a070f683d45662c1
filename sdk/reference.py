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

from .errors import ArtifactError, EdgeSDKError
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


def check_artifact(session: Any, ref: ReferenceSet, entry: Mapping[str, Any], metric: Any = None) -> dict[str, Any]:
    """Parity (the artifact's own tolerances) and the task metric of a loaded session on the reference set.

    ``metric``: the manifest's metric name (``model.metric``; None means top-1 on ``labels``, as manifests
    before metrics were recorded). A user metric this machine cannot import is skipped with a note."""
    from .gate import run_reference
    from .metrics import evaluate, load_metric
    from .parity import TOLERANCE_KEYS, Tolerance

    # the reference data is in PyTorch's terms (N,C,H,W, int64 ids, every forward() argument, any batch size)
    parity = entry.get("parity") or {}
    model = (entry.get("meta") or {}).get("reference", "pytorch")
    expected = ref.outputs.get(model)
    out: dict[str, Any] = {"batches": len(ref.inputs), "reference": model, "parity": None, "accuracy": None,
                           "eval_samples": 0}
    fed, got, notes = run_reference(session, ref.inputs, (entry.get("meta") or {}).get("input_layout"))
    if expected:
        pairs = [(e, g) for e, g in zip(expected, got) if g is not None]
        # the rule the artifact was gated with; a manifest of the previous version has atol/rtol/min_cosine only
        result = compare([e for e, _ in pairs], [g for _, g in pairs], tolerance=Tolerance.from_dict(parity))
        d = result.to_dict()
        keys = ("passed", "max_abs_err", "max_rel_err", "cosine", "centered_cosine", "sqnr_db", "nrmse",
                "top1_agreement", *TOLERANCE_KEYS)
        out["parity"] = {k: None if d[k] is None else (bool(d[k]) if k == "passed" else float(d[k])) for k in keys}
        out["parity"]["nonfinite_mismatch"] = int(d["nonfinite_mismatch"])
        out["parity"]["atol_effective"] = {n: o["atol_effective"] for n, o in d["outputs"].items()}
        out["batches"] = len(pairs)
        if notes:
            out["parity"]["skipped_because"] = notes
        if not result.passed:
            out["parity"]["failure"] = result.failure_message()
    if ref.eval_data is not None:
        names = [s.name for s in session.inputs]
        try:
            m = load_metric(metric or "top1")
        except EdgeSDKError as e:  # e.g. a user's metric file that is not on this device
            out["accuracy_note"] = f"metric {metric!r} not available here: {e.what}"
            return out
        out["accuracy"] = evaluate(fed, ref.eval_data, names, m)
        out["metric"] = m.name
        out["eval_samples"] = int(len(next(iter(ref.eval_data.values()))))
    return out
