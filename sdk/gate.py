"""The parity gate: a reference set and an artifact in, a parity record out (Polygraphy's Comparator loop).

The artifact runs on one backend over the reference inputs, fed in the PyTorch model's terms (layout,
integer width and batch are adapted, see edgesdk.runtimes.layout); its outputs are compared with the
reference model's under the precision's tolerance (edgesdk.parity), and its task metric is measured on
the labelled eval data. A batch the artifact cannot take (a dimension it fixed, such as a TFLite whose
height litert-torch could not keep dynamic) is left out and the record says which sizes were checked.

Example::

    rec = check(path, "onnxruntime", ref_in, ref_out, tolerance_for("int8"), metric=top1, eval_data=ev)
    rec.parity["passed"], rec.accuracy, rec.parity["checked_batches"]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .parity import ParityResult, Tolerance, compare

Feeds = dict[str, np.ndarray]


@dataclass
class GateRecord:
    """What one backend made of one artifact on the reference set."""

    backend: str
    result: ParityResult
    parity: dict[str, Any]
    accuracy: float | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    outputs_got: list[Feeds | None]  # per reference batch; None where the artifact could not take it
    dropped_inputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.result.passed)


def _fits(specs: Mapping[str, Any], feeds: Feeds, layout: Mapping[str, str] | None) -> str | None:
    """Why the artifact cannot take ``feeds`` (a fixed non-batch dim of another size), or None."""
    for name, spec in specs.items():
        a = feeds.get(name)
        if a is None:
            continue
        shape = a.shape
        if (layout or {}).get(name) == "channels_last" and a.ndim >= 3:  # as the adapter will feed it
            shape = (shape[0], *shape[2:], shape[1])
        for axis, d in enumerate(spec.shape):
            if axis > 0 and isinstance(d, int) and d > 0 and axis < len(shape) and shape[axis] != d:
                return f"{name} dim {axis} is fixed at {d} in the artifact (the batch has {shape[axis]})"
    return None


def run_reference(session: Any, ref_in: Sequence[Feeds], layout: Mapping[str, str] | None
                  ) -> tuple[Any, list[Feeds | None], list[str]]:
    """Feed the reference inputs (PyTorch's terms) to a loaded session: (the adapted session, its outputs per
    batch, None where a batch does not fit a dimension the artifact fixed, and the reasons)."""
    from edgesdk.runtimes.layout import adapt_layout

    fed = adapt_layout(session, layout, drop_unknown=True, rebatch=True)
    specs = {s.name: s for s in session.inputs}
    got: list[Feeds | None] = []
    notes: list[str] = []
    for feeds in ref_in:
        why = _fits(specs, feeds, layout)
        if why is not None:
            notes.append(why)
            got.append(None)
            continue
        got.append(fed.run(feeds))
    return fed, got, sorted(set(notes))


def check(path: str | Path, backend: str, ref_in: Sequence[Feeds], ref_out: Sequence[Feeds], tolerance: Tolerance, *,
          layout: Mapping[str, str] | None = None, eval_data: Mapping[str, np.ndarray] | None = None,
          metric: Any = None, input_names: Sequence[str] = (),
          options: Mapping[str, Any] | None = None) -> GateRecord:
    """Run the artifact at ``path`` on ``backend`` (with the session ``options`` it is made for, e.g. OpenVINO's
    bf16 precision) over ``ref_in`` and compare with ``ref_out``."""
    from edgesdk.runtimes import load

    from .metrics import evaluate

    with load(path, backend=backend, **dict(options or {})) as sess:
        fed, got, notes = run_reference(sess, ref_in, layout)
        specs = {s.name for s in sess.inputs}
        dropped = sorted(set(ref_in[0]) - specs) if ref_in else []
        pairs = [(r, g) for r, g in zip(ref_out, got) if g is not None]
        result = compare([r for r, _ in pairs], [g for _, g in pairs], tolerance=tolerance)
        accuracy = None
        if eval_data is not None and metric is not None:
            names = [n for n in input_names if n in specs]
            accuracy = evaluate(fed, eval_data, names, metric)
        parity = {**result.to_dict(), "batches": len(pairs), "backend": sess.backend}
        if len(pairs) < len(ref_in):
            parity["skipped_batches"] = len(ref_in) - len(pairs)
            parity["skipped_because"] = sorted(set(notes))
        return GateRecord(backend=sess.backend, result=result, parity=parity, accuracy=accuracy,
                          inputs=[s.to_dict() for s in sess.inputs], outputs=[s.to_dict() for s in sess.outputs],
                          outputs_got=got, dropped_inputs=dropped, notes=notes)


def agreement(reference: Sequence[Feeds], got: Sequence[Feeds | None]) -> dict[str, Any]:
    """How far an artifact's (or a pruned model's) outputs are from the original model's: measured, not
    gated (the pruning budget reads it)."""
    pairs = [(r, g) for r, g in zip(reference, got) if g is not None]
    d = compare([r for r, _ in pairs], [g for _, g in pairs], tolerance=Tolerance(None, None)).to_dict()
    return {k: d.get(k) for k in ("cosine", "centered_cosine", "top1_agreement", "max_abs_err", "sqnr_db")}
