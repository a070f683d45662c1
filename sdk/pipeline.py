"""Artifacts and stages.

A stage takes the model context and the previous artifact, writes its own
file(s) under the staging directory and returns a new :class:`Artifact`.
Stages are registered by name in ``STAGES`` (a dict, not an if/elif chain).

Example::

    @register_stage("export_onnx")
    def export_onnx_stage(ctx: StageContext, parent: Artifact | None) -> Artifact: ...
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from .atomic import sha256_file

log = logging.getLogger(__name__)


@dataclass
class Artifact:
    """One file produced by a stage, with everything the manifest records about it."""

    name: str
    path: Path
    format: str
    precision: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    parity: dict[str, Any] | None = None
    accuracy: float | None = None
    stage: str = ""
    parent: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"

    def to_manifest(self, root: Path) -> dict[str, Any]:
        """The manifest entry; paths are relative to the output dir. ONNX weights kept in side files
        (models over 2 GB) are listed with their own sha256, so a device checks them too."""
        extra: dict[str, Any] = {}
        if self.format == "onnx":
            from edgesdk.runtimes.safety import external_data_files

            side = [self.path.parent / f for f in external_data_files(self.path)]
            if side:
                extra["external_data"] = [{"path": f.relative_to(root).as_posix() if f.is_absolute() else str(f),
                                           "sha256": sha256_file(f), "size_bytes": f.stat().st_size} for f in side]
        return {**extra, 
            "name": self.name,
            "path": self.path.relative_to(root).as_posix() if self.path.is_absolute() else str(self.path),
            "format": self.format,
            "precision": self.precision,
            "sha256": sha256_file(self.path),
            "size_bytes": self.path.stat().st_size,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "parity": self.parity,
            "accuracy": self.accuracy,
            "stage": self.stage,
            "parent": self.parent,
            "status": self.status,
            "meta": self.meta,
        }


def _quiet(_msg: str) -> None:
    """A progress sink that says nothing (library use without a progress callback)."""


@dataclass
class StageContext:
    """What every stage can read, by name: the model, inputs, recipe, the staging dir and the run's services.

    ``model``/``variant``/``reference`` follow the latest PyTorch model (the pruned one after ``prune``);
    ``targets`` is where a stage records a target it could not deliver, and why."""

    model: Any
    example_inputs: dict[str, Any]  # torch tensors in forward()'s order
    recipe: Any
    workdir: Path
    output_names: list[str]
    calib: dict[str, Any] | None = None
    calib_source: str | None = None
    models: dict[str, Any] = field(default_factory=dict)  # "pytorch", "pytorch.pruned" -> nn.Module
    artifacts: list[Artifact] = field(default_factory=list)  # produced so far, in order (run_stages appends)
    say: Callable[[str], None] = _quiet
    evaluate: Callable[[Any], float | None] | None = None  # task metric of a PyTorch model on the eval data
    baseline_accuracy: float | None = None
    metric: Any = None  # the edgesdk.metrics.Metric behind evaluate
    recovery_hook: Callable[..., Any] | None = None
    budget: Any = None  # an AccuracyBudget wrapping the quantize stage
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    variant: str = ""  # file-name infix of the current model's exports ("" or ".pruned")
    reference: str = "pytorch"  # the name of the current PyTorch model in ``models``
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)  # input -> axis -> symbol
    auto_axes: frozenset = frozenset()  # (input, axis) the model may fix (token sequences by default)

    def target(self, name: str, status: str, reason: str | None = None, install: str | None = None) -> None:
        """Record what became of a target (ok, skipped, failed) for the manifest and the report."""
        self.targets[name] = {"status": status, "reason": reason, "install": install}


class Stage(Protocol):
    def __call__(self, ctx: StageContext, parent: Artifact | None) -> Artifact | None: ...


STAGES: dict[str, Stage] = {}


def register_stage(name: str) -> Callable[[Stage], Stage]:
    """Decorator: make a stage available to recipes under ``name``."""

    def deco(fn: Stage) -> Stage:
        STAGES[name] = fn
        return fn

    return deco


# what the progress line says while a stage runs (stages not listed show their name)
STAGE_TEXT = {
    "export_onnx": "exporting to ONNX", "prune": "pruning", "quantize_onnx": "quantizing the ONNX model",
    "export_tflite": "exporting to TFLite", "quantize_tflite": "quantizing for TFLite",
    "export_tensorrt": "building a TensorRT engine", "quantize_tensorrt": "building an INT8 TensorRT engine",
}


def run_stages(names: list[str], ctx: StageContext,
               on_artifact: Callable[[Artifact], bool | None] | None = None) -> list[Artifact]:
    """Run stages in order; each gets the previous artifact. Times are recorded in ``meta``.

    ``on_artifact`` sees each artifact as it is made; returning False drops it (its file is deleted) and
    the next stage gets the previous artifact."""
    artifacts: list[Artifact] = []
    parent: Artifact | None = None
    say = ctx.say
    for name in names:
        stage = STAGES.get(name)
        if stage is None:
            from .errors import InputError

            raise InputError(f"unknown stage {name!r}", expected=", ".join(sorted(STAGES)), found=name)
        # only these stages transform the artifact before them; the others start from PyTorch
        src = f" (from {parent.name})" if parent is not None and name in ("export_onnx", "quantize_onnx") else ""
        say(STAGE_TEXT.get(name, name) + src)
        t0 = time.perf_counter()
        art = stage(ctx, parent)
        if art is None:  # a target that failed or was skipped; the stage recorded why in ctx.targets
            continue
        art.stage = name
        art.meta.setdefault("stage_time_s", round(time.perf_counter() - t0, 3))
        log.info("stage %s -> %s (%.1fs)", name, art.path.name, art.meta["stage_time_s"])
        if on_artifact is not None and on_artifact(art) is False:  # vetoed (a target that failed verification)
            art.path.unlink(missing_ok=True)
            continue
        artifacts.append(art)
        ctx.artifacts.append(art)
        parent = art
    return artifacts
