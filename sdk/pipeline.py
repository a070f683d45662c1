"""Artifacts and stages: the contracts every stage keeps.

A stage is ``stage(parent, ctx) -> Artifact | None``: it transforms ``parent`` (the artifact it
``takes``, chosen by the runner from what the run made so far), writes only its own file(s) under
``ctx.workdir`` and returns a new :class:`Artifact` (None: a target it could not deliver, recorded in
``ctx.targets``). No stage runs another. Each stage registers a :class:`StageRecord`: its name, the
progress text, what it takes and yields, and what it must beat on speed.

Example::

    @register_stage("quantize_onnx", text="quantizing the ONNX model", takes="onnx", yields="onnx",
                    compare_with="parent")
    def quantize_onnx_stage(parent: Artifact, ctx: StageContext) -> Artifact: ...
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
    """One file produced by a stage, with everything the manifest records about it. A PyTorch artifact
    (a pruned model) carries its ``module`` for the stages after it; the manifest never holds it."""

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
    recommended_backend: str | None = None  # the fastest backend that passed parity here (see measure.recommend)
    session_options: dict[str, Any] = field(default_factory=dict)  # what a session needs to run it as made
    module: Any = field(default=None, repr=False, compare=False)

    def to_manifest(self, root: Path) -> dict[str, Any]:
        """The manifest entry; paths are relative to the output dir. Weights kept in side files (ONNX models
        over 2 GB, an OpenVINO IR's .bin) are listed with their own sha256, so a device checks them too."""
        extra: dict[str, Any] = {}
        side: list[Path] = []
        if self.format == "onnx":
            from edgesdk.runtimes.safety import external_data_files

            side = [self.path.parent / f for f in external_data_files(self.path)]
        elif self.format == "openvino" and self.path.with_suffix(".bin").is_file():
            side = [self.path.with_suffix(".bin")]  # an IR's weights
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
            "recommended_backend": self.recommended_backend,
            "session_options": self.session_options,
            "meta": self.meta,
        }


def _quiet(_msg: str) -> None:
    """A progress sink that says nothing (library use without a progress callback)."""


@dataclass
class StageContext:
    """What every stage can read, by name: the original model, inputs, recipe, the staging dir and the run's
    services. ``targets`` is where a stage records a target it could not deliver, and why."""

    model: Any  # the original model (a stage that takes "model" gets the latest pruned one as its parent)
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
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)  # input -> axis -> symbol
    auto_axes: frozenset = frozenset()  # (input, axis) the model may fix (token sequences by default)

    def target(self, name: str, status: str, reason: str | None = None, install: str | None = None) -> None:
        """Record what became of a target (ok, skipped, failed) for the manifest and the report."""
        self.targets[name] = {"status": status, "reason": reason, "install": install}

    def pytorch(self, parent: Artifact | None) -> tuple[Any, str, str]:
        """(the PyTorch model a "model" stage exports, its name in ``models``, the file-name infix): the
        pruned model when ``parent`` is one, else the original."""
        if parent is not None and parent.format == "torch" and parent.module is not None:
            return parent.module, parent.meta.get("reference", "pytorch.pruned"), ".pruned"
        return self.model, "pytorch", ""


class Stage(Protocol):
    def __call__(self, parent: Artifact | None, ctx: StageContext) -> Artifact | None: ...


@dataclass(frozen=True)
class StageRecord:
    """A registered stage: ``takes`` "model" (the latest PyTorch model: the original or a pruned one) or a
    format, optionally with a precision ("onnx:fp32"); ``compare_with`` names what the artifact must be
    faster than ("parent", or the stage whose artifact of the same model it replaces)."""

    name: str
    fn: Stage
    text: str
    takes: str
    yields: str
    compare_with: str | None = None
    picker: Callable[[list[Artifact], "StageContext"], Artifact | None] | None = None  # when ``takes`` depends

    def pick(self, made: list[Artifact], ctx: "StageContext") -> Artifact | None:
        """The artifact this stage transforms: the latest one it takes, or None (the original model)."""
        if self.picker is not None:
            return self.picker(made, ctx)
        fmt, _, precision = self.takes.partition(":")
        fmt = "torch" if fmt == "model" else fmt
        found = [a for a in made if a.format == fmt and (not precision or a.precision == precision)]
        return found[-1] if found else None


STAGES: dict[str, StageRecord] = {}


def register_stage(name: str, *, text: str, takes: str, yields: str, compare_with: str | None = None,
                   picker: Callable[[list[Artifact], StageContext], Artifact | None] | None = None
                   ) -> Callable[[Stage], Stage]:
    """Decorator: make a stage available to recipes under ``name`` (see StageRecord)."""

    def deco(fn: Stage) -> Stage:
        STAGES[name] = StageRecord(name, fn, text, takes, yields, compare_with, picker)
        return fn

    return deco


def run_stages(names: list[str], ctx: StageContext,
               on_artifact: Callable[[Artifact], bool | None] | None = None) -> list[Artifact]:
    """Run stages in order; each gets the artifact its record takes. Times are recorded in ``meta``.

    ``on_artifact`` sees each artifact as it is made; returning False drops it (its file is deleted)."""
    for name in names:
        rec = STAGES.get(name)
        if rec is None:
            from .errors import InputError

            raise InputError(f"unknown stage {name!r}", expected=", ".join(sorted(STAGES)), found=name)
        parent = rec.pick(ctx.artifacts, ctx)
        ctx.say(rec.text + (f" (from {parent.name})" if parent is not None else ""))
        t0 = time.perf_counter()
        art = rec.fn(parent, ctx)
        if art is None:  # a target that failed or was skipped; the stage recorded why in ctx.targets
            continue
        art.stage = name
        art.meta.setdefault("stage_time_s", round(time.perf_counter() - t0, 3))
        log.info("stage %s -> %s (%.1fs)", name, art.path.name, art.meta["stage_time_s"])
        if art.module is not None:
            ctx.models[art.meta.get("reference", "pytorch.pruned")] = art.module
        if on_artifact is not None and on_artifact(art) is False:  # vetoed (a target that failed verification)
            art.path.unlink(missing_ok=True)
            continue
        ctx.artifacts.append(art)
    return list(ctx.artifacts)
