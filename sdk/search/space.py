"""The search space, its budgets and objectives: data built from flags or a YAML ``search:`` section.

A trial is one compress run (a prune setting x a precision, on the targets its backends need); every
backend, thread count and batch of the space is then measured on each trial's artifact, so one trial
yields several candidates without compressing again.

Example::

    space = SearchSpace.from_options(prune="0:0.7", prune_steps=3, precisions="fp32,int8",
                                     backends="onnxruntime,openvino")
    [t.label for t in space.trials()]   # ['fp32', 'int8', 'prune0.35 fp32', ...]
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from edgesdk.errors import InputError

# precision -> compress's quantize mode; int8-fallback is static INT8 under the search's accuracy budget: the
# layers INT8 hurts most are kept in float until it holds (compress's accuracy budget, edgesdk.compress.budget)
PRECISIONS = {"fp32": "none", "fp16": "fp16", "bf16": "bf16", "int8": "int8", "int8-dynamic": "int8-dynamic",
              "int8-fallback": "int8"}
ARTIFACT_PRECISIONS = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8": "int8", "int8-dynamic": "int8",
                       "int8-fallback": "int8"}  # the precision its manifest entries carry
FALLBACK = "int8-fallback"
FALLBACK_TARGETS = ("onnx", "tflite")  # what compress's accuracy budget re-quantizes with layers kept in float
BACKEND_TARGETS = {"onnxruntime": "onnx", "openvino": "onnx", "litert": "tflite", "tensorrt": "tensorrt"}
LATENCY_STATS = ("p50", "p90")
DEFAULT_PRUNE_STEPS = 4
SEARCH_RECOVER_STEPS = 100  # a fixed number of steps: a time-budgeted recovery would not reproduce from best.yaml


def _split(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(str(v).strip() for v in items if str(v).strip())
    if not out:
        raise InputError(f"the search space has no {what}", expected=f"at least one {what}", found=repr(value))
    return out


def parse_prune(text: Any, steps: int = DEFAULT_PRUNE_STEPS) -> tuple[float, ...]:
    """Prune ratios: a range ``"0:0.7"`` in ``steps`` even points, a list ``"0,0.3,0.5"``, or numbers.

    >>> parse_prune("0:0.6", 4)
    (0.0, 0.2, 0.4, 0.6)
    """
    if text is None:
        return (0.0,)
    if isinstance(text, (int, float)):
        values: list[float] = [float(text)]
    elif isinstance(text, str) and ":" in text:
        lo, _, hi = text.partition(":")
        try:
            a, b = float(lo), float(hi)
        except ValueError:
            raise InputError(f"bad prune range {text!r}", expected="LOW:HIGH, e.g. 0:0.7", found=text) from None
        if steps < 1 or b < a:
            raise InputError(f"bad prune range {text!r}", expected="LOW <= HIGH and --prune-steps >= 1",
                             found=f"{text} in {steps} steps")
        values = [a] if steps == 1 or a == b else [a + (b - a) * i / (steps - 1) for i in range(steps)]
    else:
        try:
            values = [float(v) for v in _split(text, "prune ratio")]
        except ValueError:
            raise InputError(f"bad prune ratios {text!r}", expected="a range 0:0.7 or a list 0,0.3,0.5",
                             found=str(text)) from None
    bad = [v for v in values if not 0.0 <= v < 1.0]
    if bad:
        raise InputError("prune ratios must lie in [0, 1)", found=", ".join(map(str, bad)),
                         hint="0 means not pruned; e.g. --prune 0:0.7")
    return tuple(dict.fromkeys(round(v, 3) for v in values))


@dataclass(frozen=True)
class Budgets:
    """What every candidate must meet; None: no limit. Accuracy points need labelled eval data."""

    max_accuracy_drop: float | None = None
    min_cosine: float | None = None
    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    max_rss_mb: float | None = None

    def shortfalls(self, c: Mapping[str, Any], latency: str) -> list[str]:
        """Why candidate ``c`` misses the budgets (empty: it meets them all)."""
        why = []
        checks = (("max_accuracy_drop", "accuracy_drop", "accuracy drop {v:.2f} points > {b}", 1),
                  ("min_cosine", "cosine", "cosine vs PyTorch {v:.5f} < {b}", -1),
                  ("max_latency_ms", latency, f"{latency} latency {{v:.3f}} ms > {{b}} ms", 1),
                  ("max_size_mb", "size_mb", "size {v:.3f} MB > {b} MB", 1),
                  ("max_rss_mb", "peak_rss_mb", "peak RSS {v:.1f} MB > {b} MB", 1))
        for name, key, text, sign in checks:
            bound, value = getattr(self, name), c.get(key)
            if bound is None:
                continue
            if value is None:
                why.append(f"{key} was not measured ({name.replace('_', '-')} {bound} cannot be checked)")
            elif (value - bound) * sign > 0:
                why.append(text.format(v=value, b=bound))
        return why


@dataclass(frozen=True)
class Trial:
    """One compress run of the search: its id is the hash of the recipe it runs (same recipe, same id)."""

    prune: float
    precision: str
    prune_method: str = "channel"
    importance: str = "l1"

    @property
    def label(self) -> str:
        pruned = "" if not self.prune else (f"prune{self.prune:g}" + ("" if self.prune_method == "channel" else
                                            f"/{self.prune_method}") + ("" if self.importance == "l1" else
                                                                        f"/{self.importance}") + " ")
        return pruned + self.precision


@dataclass(frozen=True)
class SearchSpace:
    """Prune ratios x methods x importances x precisions (the trials) and backends x threads x batches (what
    each trial's artifacts are measured on), with the budgets and the objectives."""

    prune: tuple[float, ...] = (0.0,)
    prune_methods: tuple[str, ...] = ("channel",)
    importances: tuple[str, ...] = ("l1",)
    precisions: tuple[str, ...] = ("fp32",)
    backends: tuple[str, ...] = ("onnxruntime",)
    threads: tuple[int | None, ...] = (None,)
    batches: tuple[int, ...] = (1,)
    latency: str = "p50"
    budgets: Budgets = field(default_factory=Budgets)
    max_trials: int | None = None

    def __post_init__(self) -> None:
        for name in ("prune", "prune_methods", "importances", "precisions", "backends", "threads", "batches"):
            if not getattr(self, name):
                raise InputError(f"the search space has no {name.replace('_', ' ')}",
                                 expected=f"at least one value for {name}", found="an empty list")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise InputError(f"unknown precision {bad[0]!r} in the search space", expected=", ".join(PRECISIONS),
                             found=",".join(self.precisions))
        if FALLBACK in self.precisions and self.budgets.max_accuracy_drop is None and self.budgets.min_cosine is None:
            raise InputError(f"{FALLBACK} keeps layers in float until the accuracy budget holds: the search has none",
                             expected="--max-accuracy-drop POINTS and/or --min-cosine C",
                             hint="give a budget, or search plain int8")
        if FALLBACK in self.precisions and not any(BACKEND_TARGETS.get(b) in FALLBACK_TARGETS for b in self.backends):
            raise InputError(f"{FALLBACK} is ONNX or TFLite INT8 with layers kept in float: none of the backends "
                             "runs it", expected="onnxruntime, openvino or litert among --backends",
                             found=",".join(self.backends), hint="search plain int8 there")
        bad = [b for b in self.backends if b not in BACKEND_TARGETS]
        if bad:
            raise InputError(f"unknown backend {bad[0]!r} in the search space", expected=", ".join(BACKEND_TARGETS),
                             found=",".join(self.backends))
        if self.latency not in LATENCY_STATS:
            raise InputError(f"unknown latency objective {self.latency!r}", expected=" or ".join(LATENCY_STATS))
        if self.max_trials is not None and self.max_trials < 1:
            raise InputError("--trials must be at least 1", found=str(self.max_trials))

    @classmethod
    def from_options(cls, *, prune: Any = None, prune_steps: int = DEFAULT_PRUNE_STEPS, prune_methods: Any = None,
                     importances: Any = None, precisions: Any = None, backends: Any = None, threads: Any = None,
                     batches: Any = None, latency: str = "p50", trials: int | None = None,
                     **budgets: Any) -> "SearchSpace":
        """The space from flag-like values (comma strings or lists); None keeps a default."""
        def ints(value: Any, what: str) -> tuple[Any, ...] | None:
            if value is None:
                return None
            try:
                return tuple(None if v in ("auto", "none") else int(v) for v in _split(value, what))
            except ValueError:
                raise InputError(f"bad {what} list {value!r}", expected="integers, e.g. 1,2", found=str(value)) from None

        given = {"prune": parse_prune(prune, prune_steps) if prune is not None else None,
                 "prune_methods": _split(prune_methods, "prune method") or None,
                 "importances": _split(importances, "importance") or None,
                 "precisions": _split(precisions, "precision") or None,
                 "backends": _split(backends, "backend") or None,
                 "threads": ints(threads, "thread count"), "batches": ints(batches, "batch size")}
        return cls(**{k: v for k, v in given.items() if v is not None}, latency=latency, max_trials=trials,
                   budgets=Budgets(**{k: v for k, v in budgets.items() if v is not None}))

    @classmethod
    def from_yaml_section(cls, data: Mapping[str, Any], **overrides: Any) -> "SearchSpace":
        """The space of a recipe file's ``search:`` section; flags given in ``overrides`` win."""
        known = {"prune", "prune_steps", "prune_methods", "importances", "precisions", "backends", "threads",
                 "batches", "latency", "trials", "budgets"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown key {unknown[0]!r} in the recipe's search section", expected=", ".join(
                sorted(known)), found=", ".join(unknown))
        merged: dict[str, Any] = {k: v for k, v in data.items() if k != "budgets"}
        merged.update(dict(data.get("budgets") or {}))
        merged.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.from_options(**merged)
        except TypeError as e:
            raise InputError("bad budget in the recipe's search section", found=str(e),
                             expected=", ".join(f.name for f in Budgets.__dataclass_fields__.values())) from None

    @property
    def targets(self) -> tuple[str, ...]:
        """The compress targets the backends need (onnx for onnxruntime and OpenVINO, tflite for LiteRT)."""
        return tuple(dict.fromkeys(BACKEND_TARGETS[b] for b in self.backends))

    def trials(self) -> list[Trial]:
        """Every trial of the grid (an unpruned setting once, whatever the methods), in a stable order."""
        out: list[Trial] = []
        for ratio, method, imp, prec in itertools.product(self.prune, self.prune_methods, self.importances,
                                                          self.precisions):
            t = Trial(ratio, prec) if ratio == 0 else Trial(ratio, prec, method, imp)
            if t not in out:
                out.append(t)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """What a resumed search must match: the trials and the measurement settings. Budgets and the latency
        objective only judge the measurements, so ``--resume`` with other budgets re-ranks without re-running."""
        kept = {k: v for k, v in self.to_dict().items() if k not in ("budgets", "latency", "max_trials")}
        return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]
