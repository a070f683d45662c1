"""Artifacts and stages: the contracts every stage keeps.

A stage is ``stage(parent, ctx) -> Artifact | None``: it transforms ``parent`` (the artifact it
``takes``, chosen by the runner from what the run made so far), writes only its own file(s) under
``ctx.workdir`` and returns a new :class:`Artifact` (None: a target it could not deliver, recorded in
``ctx.targets``). No stage runs another. Each stage registers a :class:`StageRecord`: its name, the
progress text, what it takes and yields, what it must beat on speed, and what it ``reads`` (recipe fields and
context values) so that a run with a stage cache (``ctx.cache``, see edgesdk.stage_cache) can reuse the output
of an earlier run that read the same things.

Example::

    @register_stage("quantize_onnx", text="quantizing the ONNX model", takes="onnx", yields="onnx",
                    compare_with="parent", reads=("quantize", "ctx.calib", "ctx.calib_source"))
    def quantize_onnx_stage(parent: Artifact, ctx: StageContext) -> Artifact: ...
"""
from __future__ import annotations

import copy
import logging
import os
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

    def side_files(self) -> list[Path]:
        """Weights kept beside the main file: an ONNX model's external data, an OpenVINO IR's .bin."""
        if self.format == "onnx":
            from edgesdk.runtimes.safety import external_data_files

            return [self.path.parent / f for f in external_data_files(self.path)]
        if self.format == "openvino" and self.path.with_suffix(".bin").is_file():
            return [self.path.with_suffix(".bin")]
        return []

    def files(self) -> list[Path]:
        """Every file the artifact is: the main one, its side files and, for a pruned PyTorch model, the shapes."""
        shapes = (self.meta.get("shapes_file") or {}).get("path") if self.format == "torch" else None
        return [self.path, *self.side_files(), *([self.path.parent / shapes] if shapes else [])]

    def to_manifest(self, root: Path) -> dict[str, Any]:
        """The manifest entry; paths are relative to the output dir. Weights kept in side files (ONNX models
        over 2 GB, an OpenVINO IR's .bin) are listed with their own sha256, so a device checks them too."""
        extra: dict[str, Any] = {}
        side = self.side_files()
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
    eval_data: dict[str, Any] | None = None  # the labelled eval arrays behind ``evaluate`` (what cache keys hash)
    cache: Any = None  # an edgesdk.stage_cache.StageCache: stages that declare their reads are reused from it

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
    faster than ("parent", or the stage whose artifact of the same model it replaces).

    ``reads``: what the output depends on besides the parent (and, for a "model" stage, the PyTorch model):
    recipe sections or ``section.field``, and ``ctx.NAME`` context fields; None (undeclared) is never cached.
    ``key_with(parent, ctx)`` adds values that depend on the run (an accuracy budget's reference data);
    ``restore(art, ctx)`` rebuilds what a cached artifact carries besides its files (a pruned ``module``)."""

    name: str
    fn: Stage
    text: str
    takes: str
    yields: str
    compare_with: str | None = None
    picker: Callable[[list[Artifact], "StageContext"], Artifact | None] | None = None  # when ``takes`` depends
    reads: tuple[str, ...] | None = None
    key_with: Callable[[Artifact | None, "StageContext"], Any] | None = None
    restore: Callable[[Artifact, "StageContext"], None] | None = None

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
                   picker: Callable[[list[Artifact], StageContext], Artifact | None] | None = None,
                   reads: tuple[str, ...] | None = None,
                   key_with: Callable[[Artifact | None, StageContext], Any] | None = None,
                   restore: Callable[[Artifact, StageContext], None] | None = None) -> Callable[[Stage], Stage]:
    """Decorator: make a stage available to recipes under ``name`` (see StageRecord).

    >>> @register_stage("export_onnx", text="exporting", takes="model", yields="onnx", reads=("export",))
    ... def export_onnx_stage(parent, ctx): ...
    """

    def deco(fn: Stage) -> Stage:
        STAGES[name] = StageRecord(name, fn, text, takes, yields, compare_with, picker, reads, key_with, restore)
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
        art = _run_stage(rec, parent, ctx) if ctx.cache is not None else _timed(rec, parent, ctx)
        if art is None:  # a target that failed or was skipped; the stage recorded why in ctx.targets
            continue
        log.info("stage %s -> %s (%.1fs)", name, art.path.name, art.meta["stage_time_s"])
        if art.module is not None:
            ctx.models[art.meta.get("reference", "pytorch.pruned")] = art.module
        if on_artifact is not None and on_artifact(art) is False:  # vetoed (a target that failed verification)
            art.path.unlink(missing_ok=True)
            continue
        ctx.artifacts.append(art)
    return list(ctx.artifacts)


def _timed(rec: StageRecord, parent: Artifact | None, ctx: StageContext) -> Artifact | None:
    t0 = time.perf_counter()
    art = rec.fn(parent, ctx)
    if art is not None:
        art.stage = rec.name
        art.meta.setdefault("stage_time_s", round(time.perf_counter() - t0, 3))
    return art


def _run_stage(rec: StageRecord, parent: Artifact | None, ctx: StageContext) -> Artifact | None:
    """The stage's artifact from ``ctx.cache`` when an earlier run made it from the same things, else run the
    stage and store what it wrote. ``meta["cache"]`` records which (and the key)."""
    cache = ctx.cache
    key, why = cache.stage_key(rec, parent, ctx)
    if key is None:
        art = _timed(rec, parent, ctx)
        if art is not None:
            art.meta["cache"] = {"key": None, "hit": False, "reason": f"not cached: {why}"}
        return art
    entry = cache.lookup(key)
    if entry is not None:
        art = _restore(rec, entry, ctx)
        if art is not None:
            return art
    before, targets = _listing(ctx.workdir), copy.deepcopy(ctx.targets)
    art = _timed(rec, parent, ctx)
    if art is None:  # a target not delivered: nothing to reuse (the next run tries again)
        return None
    made = {n: p for n, (p, sig) in _listing(ctx.workdir).items() if before.get(n, (None, None))[1] != sig}
    mine = set(made.values())
    missing = [f.name for f in art.files() if f not in mine]
    if missing:  # the stage left its file from before (never expected): better not cached than half cached
        art.meta["cache"] = {"key": key, "hit": False, "reason": f"not stored: {', '.join(missing)} not new"}
        return art
    changed = {t: v for t, v in ctx.targets.items() if targets.get(t) != v}
    stored = cache.store(key, made, _record(art, ctx.workdir, changed))
    art.meta["cache"] = {"key": key, "hit": False, **({} if stored else {"reason": "could not be stored"})}
    return art


def _listing(workdir: Path) -> dict[str, tuple[Path, tuple[int, int, int]]]:
    """Relative name -> (path, (inode, size, mtime)) of every file under ``workdir``."""
    out = {}
    for dirpath, _dirs, names in os.walk(workdir):
        for n in names:
            p = Path(dirpath) / n
            try:
                st = p.stat()
            except OSError:
                continue
            out[p.relative_to(workdir).as_posix()] = (p, (st.st_ino, st.st_size, st.st_mtime_ns))
    return out


def _record(art: Artifact, workdir: Path, targets: dict[str, Any]) -> dict[str, Any]:
    """What ``entry.json`` keeps of an artifact: its fields but the module and the absolute path."""
    return {"stage": art.stage, "stage_time_s": art.meta.get("stage_time_s"), "targets": targets,
            "artifact": {"name": art.name, "path": art.path.relative_to(workdir).as_posix(), "format": art.format,
                         "precision": art.precision, "parent": art.parent, "status": art.status,
                         "accuracy": art.accuracy, "session_options": art.session_options,
                         "meta": {k: v for k, v in art.meta.items() if k not in ("cache", "stage_time_s")}}}


def _restore(rec: StageRecord, entry: Any, ctx: StageContext) -> Artifact | None:
    """The artifact of a cache entry, its files in ``ctx.workdir``; None when it cannot be rebuilt here."""
    t0 = time.perf_counter()
    a = entry.record["artifact"]
    paths = ctx.cache.restore(entry, ctx.workdir)
    art = Artifact(name=a["name"], path=ctx.workdir / a["path"], format=a["format"], precision=a["precision"],
                   parent=a["parent"], meta=a["meta"], status=a["status"], accuracy=a["accuracy"],
                   session_options=a["session_options"], stage=rec.name)
    if rec.restore is not None:
        try:
            rec.restore(art, ctx)
        except Exception as e:  # a module that does not load here: compute it again instead
            log.warning("stage cache: %s could not be restored (%s); running the stage", a["name"], e)
            for p in paths:
                p.unlink(missing_ok=True)
            return None
    ctx.targets.update(entry.record.get("targets") or {})
    saved = entry.record.get("stage_time_s")
    art.meta["stage_time_s"] = round(time.perf_counter() - t0, 3)
    art.meta["cache"] = {"key": entry.key, "hit": True, "saved_s": saved}
    ctx.say(f"{rec.name}: reused {art.name} from the stage cache" + (f" (saves {saved:.1f} s)" if saved else ""))
    return art
