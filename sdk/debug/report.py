"""The debug report: the layers ranked worst first, the first jump, the noise summed over the PyTorch module
tree, JSON and Markdown views (HTML: :mod:`edgesdk.debug.html`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
    unmatched: dict[str, str] = field(default_factory=dict)  # PyTorch modules without a tensor, and why
    backend: str = "onnxruntime"  # the runtime the artifact ran on
    options: dict[str, Any] = field(default_factory=dict)  # its session options

    @property
    def runtime(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.backend} ({opts})" if opts else self.backend

    @property
    def in_graph_order(self) -> list[LayerDivergence]:
        return sorted(self.layers, key=lambda d: d.order)

    @property
    def agree(self) -> bool:
        """Every layer within float rounding of the reference (no divergence to trace)."""
        return all(d.sqnr_db >= FLOAT_AGREEMENT_DB for d in self.layers)

    @property
    def first_jump(self) -> LayerDivergence | None:
        """The first layer in graph order that adds at least ``jump_share`` of the noise the worst layer adds:
        where the divergence starts (later layers mostly carry it on)."""
        worst = self.layers[0].added_noise if self.layers else 0.0
        if worst <= 0 or self.agree:
            return None
        return next(d for d in self.in_graph_order if d.added_noise >= self.jump_share * worst)

    @property
    def modules(self) -> list["ModuleNoise"]:
        return module_tree(self.layers)

    def to_dict(self) -> dict[str, Any]:
        jump = self.first_jump
        return {"artifact": self.artifact, "backend": self.backend, "options": self.options,
                "reference": self.reference, "reference_choice": self.reference_choice,
                "inputs": self.inputs, "matched_layers": len(self.layers),
                "first_jump": jump.to_dict() if jump else None,
                "rule": {"ranked_by": "added_noise (noise power the layer adds, relative to each channel's own "
                                      "power, averaged over channels)",
                         "first_jump": f"first layer in graph order adding >= {self.jump_share:g} of the worst "
                                       "layer's added noise"},
                "modules": [asdict(m) for m in self.modules], "unmatched_modules": self.unmatched,
                "layers": [d.to_dict() for d in self.layers]}


NO_MODULE = "(no module recorded)"
FLOAT_AGREEMENT_DB = 90.0  # every layer at least this SQNR: the graphs agree to float32 rounding (no first jump)
TOP_LEVEL = "(top level)"


@dataclass
class ModuleNoise:
    """One module of the PyTorch module tree: the layers it (and its children) made, and their noise."""

    module: str  # dotted path; TOP_LEVEL for the model itself, NO_MODULE for layers without provenance
    depth: int  # 0 for a top-level child of the model
    layers: int
    worst_sqnr_db: float
    worst_tensor: str
    added_noise: float  # summed over its layers
    noise_share: float  # of the noise all matched layers add (0..1)


def module_of(d: LayerDivergence) -> str:
    return NO_MODULE if d.module is None else (d.module or TOP_LEVEL)


def module_tree(layers: list[LayerDivergence]) -> list[ModuleNoise]:
    """Every module that made a matched layer, and each of its ancestors, depth first in graph order (a parent
    before its children, siblings in the order their first layer runs)."""
    total = sum(d.added_noise for d in layers)
    members: dict[str, list[LayerDivergence]] = {}
    for d in sorted(layers, key=lambda d: d.order):
        name = module_of(d)
        parts = name.split(".") if name not in (NO_MODULE, TOP_LEVEL) else [name]
        for i in range(1, len(parts) + 1):
            members.setdefault(".".join(parts[:i]), []).append(d)
    children: dict[str, list[str]] = {}
    for path in members:  # insertion order is graph order of each path's first layer
        children.setdefault(path.rpartition(".")[0] if "." in path else "", []).append(path)
    out: list[ModuleNoise] = []

    def walk(parent: str, depth: int) -> None:
        for path in children.get(parent, []):
            ds = members[path]
            worst = min(ds, key=lambda d: d.sqnr_db)
            noise = sum(d.added_noise for d in ds)
            out.append(ModuleNoise(module=path, depth=depth, layers=len(ds), worst_sqnr_db=worst.sqnr_db,
                                   worst_tensor=worst.tensor, added_noise=noise,
                                   noise_share=round(noise / total, 4) if total > 0 else 0.0))
            walk(path, depth + 1)

    walk("", 0)
    return out


def where(d: LayerDivergence, quote: str = "`") -> str:
    """The layer's module and class for a reader, e.g. ``block.1 (Conv2d)``; the node when it has no module."""
    if d.module is None:
        return f"{quote}{d.node}{quote} ({NO_MODULE[1:-1]})"
    cls = f" ({d.module_class.rsplit('.', 1)[-1]})" if d.module_class else ""
    return f"{quote}{d.module or TOP_LEVEL}{quote}{cls}"


def loss(d: LayerDivergence) -> str:
    """What a layer lost, for a sentence: its SQNR (and its average channel's, when that tells more) after what
    its inputs had, e.g. ``SQNR 33.4 dB (average channel 0.3 dB) from exact inputs``."""
    chan = f" (average channel {d.channel_sqnr_db:.1f} dB)" if d.channel_sqnr_db < d.sqnr_db - 3 else ""
    came = ("from exact inputs" if d.input_sqnr_db >= SQNR_CAP_DB
            else f"after {d.input_sqnr_db:.1f} dB at its inputs")
    return f"SQNR {d.sqnr_db:.1f} dB{chan} {came}"


def layer_cells(d: LayerDivergence) -> dict[str, str]:
    """A layer's figures as display strings, for the Markdown and HTML tables."""
    return {"cosine": f"{d.cosine:.5f}", "SQNR dB": f"{d.sqnr_db:.1f}", "channel SQNR dB": f"{d.channel_sqnr_db:.1f}",
            "lost dB": "all (exact inputs)" if d.input_sqnr_db >= SQNR_CAP_DB else f"{d.jump_db:.1f}",
            "own quant. SQNR dB": "-" if d.local_sqnr_db is None else f"{d.local_sqnr_db:.1f}",
            "max abs err": f"{d.max_abs_err:.3g}"}


def agreement(report: DebugReport) -> str:
    """The sentence for a report without a first jump."""
    if not report.layers:
        return "No layer was matched."
    if report.agree:
        return (f"Every layer agrees within float rounding (SQNR at least {FLOAT_AGREEMENT_DB:.0f} dB; the lowest "
                f"{min(d.sqnr_db for d in report.layers):.1f} dB): nothing diverges.")
    return "No layer adds noise: the two graphs agree."


def unmatched_by_reason(report: DebugReport) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path, why in report.unmatched.items():
        out.setdefault(why, []).append(path)
    return out


def to_markdown(report: DebugReport, top: int = 15) -> str:
    jump = report.first_jump
    lines = [f"# edgesdk debug: {report.artifact}", "",
             f"Run on {report.runtime}, against {report.reference} ({report.reference_choice}), on {report.inputs}; "
             f"{len(report.layers)} layers matched.", ""]
    if jump is not None:
        lines += [f"**First jump: {where(jump)}**, {jump.op} -> `{jump.tensor}`: {loss(jump)} "
                  f"(cosine {jump.cosine:.5f}).", ""]
    else:
        lines += [agreement(report), ""]
    cols = ["cosine", "SQNR dB", "channel SQNR dB", "lost dB", "own quant. SQNR dB", "max abs err"]
    lines += ["| rank | module | op | tensor | " + " | ".join(cols) + " |", "|---" * (4 + len(cols)) + "|"]
    for i, d in enumerate(report.layers[:top], 1):
        cells = layer_cells(d)
        lines.append(f"| {i} | {where(d)} | {d.op} | `{d.tensor}` | " + " | ".join(cells[c] for c in cols) + " |")
    tops = [m for m in report.modules if m.depth == 0]
    if tops:
        lines += ["", "Noise added, by top-level module: " + ", ".join(
            f"`{m.module}` {100 * m.noise_share:.0f}% ({m.layers} layer{'s' if m.layers != 1 else ''})"
            for m in sorted(tops, key=lambda m: -m.added_noise)) + "."]
    if report.unmatched:
        lines += ["", f"{len(report.unmatched)} PyTorch modules not matched:"]
        for why, paths in unmatched_by_reason(report).items():
            lines.append(f"- {why}: " + ", ".join(f"`{p}`" for p in paths[:12])
                         + (f" and {len(paths) - 12} more" if len(paths) > 12 else ""))
    if len(report.layers) > top:
        lines.append(f"\n{len(report.layers) - top} more layers in the JSON report (-o FILE.json).")
    return "\n".join(lines) + "\n"
