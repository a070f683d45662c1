"""The debug report: the layers ranked worst first, the first jump, JSON and Markdown views."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgesdk.parity import SQNR_CAP_DB

from .layers import LayerDivergence


@dataclass
class DebugReport:
    artifact: str
    reference: str
    reference_choice: str
    inputs: str
    layers: list[LayerDivergence] = field(default_factory=list)  # worst first
    jump_share: float = 0.1

    @property
    def in_graph_order(self) -> list[LayerDivergence]:
        return sorted(self.layers, key=lambda d: d.order)

    @property
    def first_jump(self) -> LayerDivergence | None:
        """The first layer in graph order that adds at least ``jump_share`` of the noise the worst layer adds:
        where the divergence starts (later layers mostly carry it on)."""
        worst = self.layers[0].added_noise if self.layers else 0.0
        if worst <= 0:
            return None
        return next(d for d in self.in_graph_order if d.added_noise >= self.jump_share * worst)

    def to_dict(self) -> dict[str, Any]:
        jump = self.first_jump
        return {"artifact": self.artifact, "reference": self.reference, "reference_choice": self.reference_choice,
                "inputs": self.inputs, "matched_layers": len(self.layers),
                "first_jump": jump.to_dict() if jump else None,
                "rule": {"ranked_by": "added_noise (relative noise power added by the layer)",
                         "first_jump": f"first layer in graph order adding >= {self.jump_share:g} of the worst "
                                       "layer's added noise"},
                "layers": [d.to_dict() for d in self.layers]}


def _where(d: LayerDivergence) -> str:
    if d.module is None:
        return f"`{d.node}` (no module recorded)"
    return f"`{d.module or '(top level)'}`" + (f" ({d.module_class.rsplit('.', 1)[-1]})" if d.module_class else "")


def to_markdown(report: DebugReport, top: int = 15) -> str:
    jump = report.first_jump
    lines = [f"# edgesdk debug: {report.artifact}", "",
             f"Against {report.reference} ({report.reference_choice}), on {report.inputs}; "
             f"{len(report.layers)} layers matched.", ""]
    if jump is not None:
        lines += [f"**First jump: {_where(jump)}**, {jump.op} -> `{jump.tensor}`: SQNR {jump.sqnr_db:.1f} dB "
                  f"after {jump.input_sqnr_db:.1f} dB at its inputs (cosine {jump.cosine:.5f}).", ""]
    else:
        lines += ["No layer adds noise: the two graphs agree.", ""]
    lines += ["| rank | module | op | tensor | cosine | SQNR dB | lost dB | own quant. SQNR dB | max abs err |",
              "|---|---|---|---|---|---|---|---|---|"]
    for i, d in enumerate(report.layers[:top], 1):
        own = "-" if d.local_sqnr_db is None else f"{d.local_sqnr_db:.1f}"
        lost = "all (exact inputs)" if d.input_sqnr_db >= SQNR_CAP_DB else f"{d.jump_db:.1f}"
        lines.append(f"| {i} | {_where(d)} | {d.op} | `{d.tensor}` | {d.cosine:.5f} | {d.sqnr_db:.1f} | "
                     f"{lost} | {own} | {d.max_abs_err:.3g} |")
    if len(report.layers) > top:
        lines.append(f"\n{len(report.layers) - top} more layers in the JSON report (-o FILE.json).")
    return "\n".join(lines) + "\n"
