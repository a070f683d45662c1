"""The parity gate's pointer: when an artifact fails parity in ``compress``, a quick debug pass against the
PyTorch model it was checked against names the module where the divergence starts, so the error says which
layer, not only which output element.

It runs on what the run already holds (the model in memory, the staged files, the reference inputs); it is
one more forward pass of each on a couple of batches, and only for an artifact that failed.

Example::

    c = culprit(stage / "model.int8.onnx", model, batches[:2], bridge=stage / "model.onnx")
    c.sentence   # "first diverging module: `stem.1` (ReLU), SQNR 18.2 dB from exact inputs"
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import JUMP_SHARE, _hooked, _pytorch_label, compare_with_module
from .report import FLOAT_AGREEMENT_DB, DebugReport, loss, where

log = logging.getLogger(__name__)
QUICK_BATCHES = 2  # reference batches the pointer runs: enough to see a layer fall, cheap next to the gate


@dataclass
class Culprit:
    """The quick pass's finding: the report it made and one sentence for the parity error."""

    report: DebugReport | None
    error: str | None = None  # why no pass could run (the parity failure stands on its own)

    @property
    def sentence(self) -> str:
        r = self.report
        if r is None:
            return f"no layer could be traced ({self.error})"
        jump = r.first_jump
        if jump is not None:
            return f"first diverging module: {where(jump)}, {loss(jump)}"
        if not r.layers:
            return "no PyTorch module could be matched to a tensor of the artifact"
        if r.agree:
            return (f"all {len(r.layers)} matched modules agree with PyTorch (SQNR >= {FLOAT_AGREEMENT_DB:.0f} dB): "
                    "the difference arises after them, in computation no module owns")
        worst = r.layers[0]
        return f"no layer adds noise on its own; the lowest SQNR is {where(worst)} at {worst.sqnr_db:.1f} dB"

    def to_dict(self) -> dict[str, Any]:
        r = self.report
        jump = r.first_jump if r is not None else None
        return {"summary": self.sentence, "first_jump": jump.to_dict() if jump else None,
                "matched_layers": len(r.layers) if r else 0, "inputs": r.inputs if r else None,
                "backend": r.backend if r else None, "error": self.error}


def culprit(artifact: Path, net: Any, batches: list[Mapping[str, np.ndarray]], *, bridge: Path | None = None,
            backend: str = "onnxruntime", options: Mapping[str, Any] | None = None,
            layout: Mapping[str, str] | None = None) -> Culprit:
    """Debug ``artifact`` against ``net``'s module outputs on the first :data:`QUICK_BATCHES` of ``batches``;
    ``bridge`` is the FP32 ONNX export an ONNX artifact descends from. Never raises for what the pass itself
    cannot do: the parity failure is the error, this only points at it."""
    from edgesdk.errors import EdgeSDKError

    quick = list(batches[:QUICK_BATCHES])
    try:
        layers, unmatched, how = compare_with_module(Path(artifact), net, quick, bridge=bridge, backend=backend,
                                                     options=dict(options or {}), layout=layout)
    except Exception as e:  # a pointer that cannot be made must not replace the parity error it points at
        log.debug("no culprit for %s", artifact, exc_info=True)
        msg = e.one_line() if isinstance(e, EdgeSDKError) else f"{type(e).__name__}: {e}"
        return Culprit(None, error=msg)
    report = DebugReport(artifact=str(artifact), reference=_pytorch_label(net), reference_choice=_hooked(None, how),
                         inputs=f"{len(quick)} reference batches",
                         layers=layers, jump_share=JUMP_SHARE, unmatched=unmatched, backend=backend,
                         options=dict(options or {}))
    return Culprit(report)
