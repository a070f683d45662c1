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


@dataclass
class StageContext:
    """What every stage can read: the model, inputs, recipe and the staging dir."""

    model: Any
    example_inputs: dict[str, Any]
    recipe: Any
    workdir: Path
    output_names: list[str]
    calib: dict[str, Any] | None = None
    calib_source: str | None = None
    models: dict[str, Any] = field(default_factory=dict)
    records: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)  # produced so far, in order (run_stages appends)


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
    say = ctx.records.get("say")
    for name in names:
        stage = STAGES.get(name)
        if stage is None:
            from .errors import InputError

            raise InputError(f"unknown stage {name!r}", expected=", ".join(sorted(STAGES)), found=name)
        if say is not None:  # only these stages transform the artifact before them; the others start from PyTorch
            src = f" (from {parent.name})" if parent is not None and name in ("export_onnx", "quantize_onnx") else ""
            say(STAGE_TEXT.get(name, name) + src)
        t0 = time.perf_counter()
        art = stage(ctx, parent)
        if art is None:  # a target that failed or was skipped; the stage recorded why in ctx.records["targets"]
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
