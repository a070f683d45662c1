"""The recipe: everything a ``compress`` run does, as one frozen dataclass.

CLI flags and YAML files only build a recipe; the API runs it. ``to_dict`` and
``from_dict`` round-trip, and unknown keys are an error rather than ignored.

Every field is checked against its annotation when a section is built (from YAML,
a dict, flat options or code), so a bad value is an InputError naming
``section.field``, never a TypeError deep inside a stage. A few lenient forms are
normalized: a single string for a list of strings (``targets: onnx,tflite``), a
single integer for a list of integers, ``tensorrt.batch: "1:8:32"``, integral
floats for integers and PyYAML's dot-less floats (``atol: 1e-3`` reads as a string).

Example::

    r = Recipe(export=ExportConfig(opset=18), targets=("onnx",))
    assert Recipe.from_dict(r.to_dict()) == r
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Callable, Union, get_args, get_origin, get_type_hints

from .errors import InputError

SCHEMA_VERSION = 1
KNOWN_TARGETS = ("onnx", "tflite", "tensorrt", "openvino")
EXPORTERS = ("auto", "dynamo", "legacy")
QUANT_MODES = ("none", "fp16", "int8", "int8-dynamic")
CALIB_METHODS = ("minmax", "entropy", "percentile")
QUANT_TARGETS = ("auto", "cpu", "tensorrt")
PRUNE_METHODS = ("channel", "unstructured", "2:4")
PRUNE_IMPORTANCES = ("l1", "l2", "bn", "taylor")


def backend_choices() -> tuple[str, ...]:
    """"auto" and every backend compress can verify on, read from the runtime registry (the single source)."""
    from edgesdk.runtimes.registry import backend_names

    return ("auto", *backend_names(verifying=True))

TRT_HARDWARE_COMPATIBILITY = ("none", "ampere_plus")


class _Section:
    """Base of the recipe sections: coerce and check every field on construction (and on ``replace``)."""

    def __post_init__(self) -> None:
        _normalize(self, _SECTION_NAMES[type(self)])


@dataclass(frozen=True)
class ParityConfig(_Section):
    """Parity gate settings; tolerances default per precision (see edgesdk.parity)."""

    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    batches: int = 16
    batch_size: int = 4
    allow_mismatch: bool = False
    seed: int = 0


@dataclass(frozen=True)
class BenchmarkConfig(_Section):
    """Benchmark settings used after every artifact is written."""

    enabled: bool = True
    batches: tuple[int, ...] = (1,)
    threads: int | None = None
    warmup: int = 10
    iterations: int = 100
    duration_s: float | None = None
    backends: tuple[str, ...] = ("auto",)  # every artifact is verified and timed on each backend that can run it


@dataclass(frozen=True)
class ExportConfig(_Section):
    """Export settings (ONNX, and the TFLite input layout)."""

    opset: int = 18
    exporter: str = "auto"
    simplify: bool = True
    dynamic_batch: bool = True
    # TFLite: take image-like inputs channels-last (N,H,W,C), as mobile camera pipelines produce them
    tflite_channels_last: bool = False
    # input -> axes (or axis -> symbol) kept dynamic besides the batch, e.g. {x: [2, 3]} or {x: {2: H, 3: W}}
    dynamic_dims: dict[str, Any] = field(default_factory=dict)
    dynamic_sequence: bool = True  # the sequence axis of token-id inputs (integer (N, L)) is dynamic


@dataclass(frozen=True)
class QuantizeConfig(_Section):
    """Quantization of the ONNX artifact (onnxruntime.quantization)."""

    mode: str = "none"  # none | fp16 | int8 | int8-dynamic
    calib_method: str = "minmax"  # minmax | entropy | percentile
    per_channel: bool = True
    target: str = "auto"  # auto | cpu | tensorrt: picks activation/weight types
    calib_samples: int = 256
    exclude: tuple[str, ...] = ()  # node names kept in float
    max_accuracy_drop: float | None = None  # points; needs labelled eval data
    min_cosine: float | None = None  # label-free budget against the FP32 model


@dataclass(frozen=True)
class PruneConfig(_Section):
    """Pruning of the PyTorch model before export (Torch-Pruning)."""

    ratio: float | None = None  # 0 < r < 1; None: no pruning
    ratio_max: float | None = None  # with ratio: search the largest ratio in [ratio, ratio_max] under the budget
    method: str = "channel"  # channel | unstructured | 2:4
    importance: str = "l1"  # l1 | l2 | bn | taylor
    target_macs: int | None = None
    protect: tuple[str, ...] = ()
    round_to: int | None = 8
    global_pruning: bool = False
    recover: bool = True
    recover_steps: int = 1000
    recover_lr: float = 3e-3
    max_accuracy_drop: float | None = None  # metric points, needs labelled eval data: the ratio search's budget,
    # or with a fixed ratio the most the pruned model may lose (default 2 points when labels are given)
    min_cosine: float | None = None  # label-free: least cosine vs the original model (default 0.95)


@dataclass(frozen=True)
class EvalConfig(_Section):
    """The task metric every artifact is measured with on labelled eval data, and budgets read (points)."""

    metric: str = "auto"  # auto (top-1 on class-id labels) | top1 | top5 | cer | miou | multilabel_f1 | file.py:fn


@dataclass(frozen=True)
class TensorRTConfig(_Section):
    """TensorRT engine builds from the ONNX artifacts (target ``tensorrt``)."""

    batch: tuple[int, ...] = ()  # (min, opt, max) of the dynamic batch; () = 1, the largest benchmark batch, 64+
    workspace_mb: int = 1024
    sparse_weights: bool = False  # 2:4 sparse kernels (prune with --prune-method 2:4 first)
    dla_core: int | None = None  # Jetson DLA core, GPU fallback on
    optimization_level: int | None = None  # builder optimization level 0..5
    version_compatible: bool = False
    hardware_compatibility: str = "none"  # none | ampere_plus
    shapes: dict[str, Any] = field(default_factory=dict)  # input -> [min, opt, max] shapes for other dynamic dims


@dataclass(frozen=True)
class Recipe:
    """What a compress run does. Build it from flags, YAML or code; it is data."""

    targets: tuple[str, ...] = ("onnx",)
    export: ExportConfig = field(default_factory=ExportConfig)
    parity: ParityConfig = field(default_factory=ParityConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    tensorrt: TensorRTConfig = field(default_factory=TensorRTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", _coerce("targets", self.targets, _hints_of(Recipe)["targets"]))
        for name, section in _SECTIONS.items():
            if not isinstance(getattr(self, name), section):
                raise InputError(f"recipe section '{name}' must be an instance of {section.__name__}",
                                 found=type(getattr(self, name)).__name__,
                                 hint=f"build it with Recipe.from_dict({{'{name}': {{...}}}})")
        self._check_fields()

    def _check_fields(self) -> None:
        _check_value("targets", self.targets)
        for name in _SECTIONS:
            section = getattr(self, name)
            for f in fields(section):
                _check_value(f"{name}.{f.name}", getattr(section, f.name))

    def validate(self) -> "Recipe":
        """Raise InputError naming the bad field: each field's value, then combinations that would be ignored.

        Field values are checked whenever a Recipe is built; the combinations only here, on the final
        recipe (a YAML file may rely on flags given with it), which compress and --dry-run call.
        """
        self._check_fields()
        self._check_pruning()
        self._check_budgets()
        return self

    def _check_pruning(self) -> None:
        p = self.prune
        if p.ratio_max is not None and (p.ratio is None or p.ratio_max < p.ratio):
            raise InputError("pruning range must be LOW:HIGH with LOW <= HIGH",
                             expected="prune.ratio <= prune.ratio_max", found=f"{p.ratio}:{p.ratio_max}",
                             hint="e.g. --prune 0.3:0.7")
        if p.method == "2:4" and ((p.ratio is not None and p.ratio != 0.5) or p.ratio_max is not None):
            raise InputError("prune.method 2:4 has a fixed 50% sparsity pattern (2 of every 4 weights)",
                             expected="prune.ratio unset or 0.5, and no range",
                             found=f"ratio {p.ratio}" + (f":{p.ratio_max}" if p.ratio_max is not None else ""),
                             hint="drop --prune (or use --prune-method unstructured for another sparsity)")
        if p.method == "unstructured" and p.ratio is None:
            raise InputError("prune.method unstructured needs a sparsity ratio", expected="prune.ratio in (0, 1)",
                             found="no ratio", hint="e.g. --prune 0.5 --prune-method unstructured")
        if p.target_macs is not None and p.method != "channel":
            raise InputError(f"prune.target_macs needs channel pruning, not prune.method {p.method}",
                             expected="prune.method channel", found=f"method {p.method}",
                             hint="zeroed weights (unstructured, 2:4) do not remove MACs; use --prune-method channel")
        if p.target_macs is not None and p.ratio_max is not None:
            raise InputError("prune.target_macs picks the ratio itself; it cannot be combined with a pruning range",
                             found=f"target_macs {p.target_macs}, range {p.ratio}:{p.ratio_max}",
                             hint="give either --prune-target-macs or --prune LOW:HIGH")

    def _check_budgets(self) -> None:
        """Budgets only apply to a pruning range or to quantization; refuse ones nothing would read."""
        q, p = self.quantize, self.prune
        searched = p.ratio_max is not None
        if searched and p.max_accuracy_drop is None and q.max_accuracy_drop is None:
            raise InputError("a pruning range needs an accuracy budget",
                             expected="--prune LOW:HIGH with --max-accuracy-drop POINTS (labelled --eval-data)",
                             found=f"prune range {p.ratio}:{p.ratio_max} and no max_accuracy_drop",
                             hint="or give a single ratio, e.g. --prune 0.5")
        pruned = p.ratio is not None or p.target_macs is not None or p.method == "2:4"
        for name in ("max_accuracy_drop", "min_cosine"):
            if getattr(p, name) is not None and not pruned:
                raise InputError(f"prune.{name} is set but nothing is pruned", expected="--prune RATIO|LOW:HIGH",
                                 found="no prune.ratio", hint=f"add --prune 0.5, or remove prune.{name}")
        if q.mode != "none":
            return
        # --max-accuracy-drop is the run's budget: with pruning alone it bounds what the pruned model may lose
        unused = "min_cosine" if q.min_cosine is not None else (
            "max_accuracy_drop" if q.max_accuracy_drop is not None and not pruned else None)
        if unused is not None:
            raise InputError(f"quantize.{unused} is set but nothing is quantized: a quantization budget needs "
                             "--quantize int8/fp16/int8-dynamic", expected="quantize.mode int8 | fp16 | int8-dynamic",
                             found="quantize.mode none", hint="add --quantize int8 (or remove the budget)")

    @property
    def stages(self) -> list[str]:
        """The stage names this recipe runs, in order."""
        tflite, tensorrt = "tflite" in self.targets, "tensorrt" in self.targets
        onnx = bool({"onnx", "tensorrt", "openvino"} & set(self.targets))  # TensorRT and OpenVINO read the ONNX
        stages = ["export_onnx"] if onnx else []
        p = self.prune
        if p.ratio is not None or p.target_macs is not None or p.method == "2:4":  # 2:4 has a fixed sparsity
            stages += ["prune"] + (["export_onnx"] if onnx else [])
        if onnx and self.quantize.mode != "none":
            stages.append("quantize_onnx")
        if tensorrt:
            stages.append("export_tensorrt")
            if self.quantize.mode == "int8" and self.quantize.target != "tensorrt":
                stages.append("quantize_onnx_trt")  # the CPU INT8 uses uint8 activations; TensorRT needs symmetric
            if self.quantize.mode != "none":
                stages.append("quantize_tensorrt")
        if tflite:
            stages.append("export_tflite")
            if self.quantize.mode != "none":
                stages.append("quantize_tflite")
        return stages

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["schema_version"] = SCHEMA_VERSION
        d["stages"] = self.stages
        return _lists(d)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        """Build a recipe from a dict; unknown keys and badly typed values raise InputError."""
        if not isinstance(data, Mapping):
            raise InputError("a recipe must be a mapping", found=type(data).__name__)
        data = dict(data)
        version = data.pop("schema_version", SCHEMA_VERSION)
        if type(version) is not int or version != SCHEMA_VERSION:
            raise InputError(f"unsupported recipe schema_version {version!r}", expected=str(SCHEMA_VERSION),
                             found=repr(version), hint="write the recipe for this edgesdk version, or upgrade edgesdk")
        data.pop("stages", None)  # derived from the rest; written by to_dict for readers
        _check_keys("recipe", data, {f.name for f in fields(cls)})
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in _SECTIONS:
                value = {} if value is None else value  # an empty section, e.g. every line commented out
                if not isinstance(value, Mapping):
                    raise InputError(f"recipe section '{key}' must be a mapping", found=type(value).__name__,
                                     hint=f"write '{key}:' followed by indented 'field: value' lines")
                sec = _SECTIONS[key]
                _check_keys(f"recipe.{key}", value, {f.name for f in fields(sec)})
                kwargs[key] = sec(**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Recipe":
        """Load a recipe from a YAML file."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise InputError(f"recipe file not found: {p}", hint="check the --recipe path")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise InputError(f"recipe file {p} is not valid YAML", found=str(e).splitlines()[0]) from e
        if not isinstance(data, dict):
            raise InputError(f"recipe file {p} must hold a mapping", found=type(data).__name__)
        try:
            return cls.from_dict(data)
        except InputError as e:
            raise InputError(f"recipe file {p}: {e.what}", expected=e.expected, found=e.found, hint=e.hint) from None

    def replace(self, **sections: dict[str, Any]) -> "Recipe":
        """Return a copy with fields of sections overridden, e.g. ``replace(export={"opset": 17})``."""
        kwargs: dict[str, Any] = {}
        _check_keys("recipe", sections, {f.name for f in fields(self)})
        for key, value in sections.items():
            current = getattr(self, key)
            if dataclasses.is_dataclass(current):
                _check_keys(f"recipe.{key}", value, {f.name for f in fields(current)})
                value = dataclasses.replace(current, **value)
            kwargs[key] = value
        return dataclasses.replace(self, **kwargs)


def _check_keys(where: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputError(f"unknown key(s) in {where}: {', '.join(unknown)}",
                         expected=f"keys among {', '.join(sorted(allowed))}",
                         found=", ".join(unknown), hint="fix the spelling or remove the key")


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


# Flat option names accepted by ``edgesdk.compress(**options)`` and mapped onto recipe sections.
FLAT_OPTIONS: dict[str, tuple[str, str]] = {
    "opset": ("export", "opset"),
    "tflite_channels_last": ("export", "tflite_channels_last"),
    "exporter": ("export", "exporter"),
    "simplify": ("export", "simplify"),
    "dynamic_batch": ("export", "dynamic_batch"),
    "atol": ("parity", "atol"),
    "rtol": ("parity", "rtol"),
    "min_cosine": ("parity", "min_cosine"),
    "allow_mismatch": ("parity", "allow_mismatch"),
    "parity_batches": ("parity", "batches"),
    "parity_batch_size": ("parity", "batch_size"),
    "seed": ("parity", "seed"),
    "benchmark": ("benchmark", "enabled"),
    "batches": ("benchmark", "batches"),
    "threads": ("benchmark", "threads"),
    "warmup": ("benchmark", "warmup"),
    "iterations": ("benchmark", "iterations"),
    "duration_s": ("benchmark", "duration_s"),
    "backends": ("benchmark", "backends"),
    "quantize": ("quantize", "mode"),
    "calib_method": ("quantize", "calib_method"),
    "per_channel": ("quantize", "per_channel"),
    "quant_target": ("quantize", "target"),
    "calib_samples": ("quantize", "calib_samples"),
    "quant_exclude": ("quantize", "exclude"),
    "max_accuracy_drop": ("quantize", "max_accuracy_drop"),
    "min_cosine_budget": ("quantize", "min_cosine"),
    "prune": ("prune", "ratio"),
    "prune_max": ("prune", "ratio_max"),
    "prune_method": ("prune", "method"),
    "prune_importance": ("prune", "importance"),
    "prune_target_macs": ("prune", "target_macs"),
    "prune_protect": ("prune", "protect"),
    "prune_round_to": ("prune", "round_to"),
    "recover": ("prune", "recover"),
    "recover_steps": ("prune", "recover_steps"),
    "recover_lr": ("prune", "recover_lr"),
    "prune_max_accuracy_drop": ("prune", "max_accuracy_drop"),
    "prune_min_cosine": ("prune", "min_cosine"),
    "dynamic_dims": ("export", "dynamic_dims"),
    "dynamic_sequence": ("export", "dynamic_sequence"),
    "metric": ("eval", "metric"),
    "max_metric_drop": ("quantize", "max_accuracy_drop"),
    "trt_batch": ("tensorrt", "batch"),
    "trt_workspace_mb": ("tensorrt", "workspace_mb"),
    "trt_sparse": ("tensorrt", "sparse_weights"),
    "trt_dla_core": ("tensorrt", "dla_core"),
    "trt_optimization_level": ("tensorrt", "optimization_level"),
    "trt_version_compatible": ("tensorrt", "version_compatible"),
    "trt_hardware_compatibility": ("tensorrt", "hardware_compatibility"),
    "trt_shapes": ("tensorrt", "shapes"),
}


def apply_options(recipe: Recipe, **options: Any) -> Recipe:
    """Override recipe fields with flat options, e.g. ``apply_options(r, opset=17, benchmark=False)``.

    Values are coerced and checked like recipe fields (``targets="onnx,tflite"``, ``batches=8``).
    """
    if not isinstance(recipe, Recipe):
        raise InputError("recipe must be an edgesdk Recipe", found=type(recipe).__name__,
                         hint="build one with Recipe.from_yaml(path) or Recipe.from_dict({...})")
    sections: dict[str, Any] = {}
    for key, value in options.items():
        if key == "targets":
            sections["targets"] = value
            continue
        if key not in FLAT_OPTIONS:
            raise InputError(f"unknown option {key!r}", expected=", ".join(sorted([*FLAT_OPTIONS, "targets"])),
                             found=key)
        section, name = FLAT_OPTIONS[key]
        sections.setdefault(section, {})[name] = value
    return recipe.replace(**sections) if sections else recipe


# -- field checks ---------------------------------------------------------------------------------------------------

_SECTIONS: dict[str, type] = {"export": ExportConfig, "parity": ParityConfig, "benchmark": BenchmarkConfig,
                              "quantize": QuantizeConfig, "prune": PruneConfig, "tensorrt": TensorRTConfig,
                              "eval": EvalConfig}
_SECTION_NAMES: dict[type, str] = {cls: name for name, cls in _SECTIONS.items()}


@dataclass(frozen=True)
class _Bound:
    """A numeric range a field (or each element of a list field) must lie in."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False

    def holds(self, v: float) -> bool:
        return ((self.lo is None or (v > self.lo if self.open_lo else v >= self.lo))
                and (self.hi is None or (v < self.hi if self.open_hi else v <= self.hi)))

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.open_lo else '>='} {self.lo}"
        return f"in {'(' if self.open_lo else '['}{self.lo}, {self.hi}{')' if self.open_hi else ']'}"


_AT_LEAST_0, _AT_LEAST_1, _POSITIVE = _Bound(0), _Bound(1), _Bound(0, open_lo=True)
_COSINE, _RATIO = _Bound(0, 1, open_lo=True), _Bound(0, 1, open_lo=True, open_hi=True)

# section.field -> the range its value (each element, for lists) must lie in; None is always allowed where typed so
_BOUNDS: dict[str, _Bound] = {
    "export.opset": _Bound(7, 23),
    "parity.atol": _AT_LEAST_0, "parity.rtol": _AT_LEAST_0, "parity.min_cosine": _COSINE,
    "parity.batches": _AT_LEAST_1, "parity.batch_size": _AT_LEAST_1, "parity.seed": _AT_LEAST_0,
    "benchmark.batches": _AT_LEAST_1, "benchmark.threads": _AT_LEAST_1, "benchmark.warmup": _AT_LEAST_0,
    "benchmark.iterations": _AT_LEAST_1, "benchmark.duration_s": _POSITIVE,
    "quantize.calib_samples": _AT_LEAST_1, "quantize.max_accuracy_drop": _AT_LEAST_0, "quantize.min_cosine": _COSINE,
    "prune.ratio": _RATIO, "prune.ratio_max": _RATIO, "prune.target_macs": _AT_LEAST_1,
    "prune.round_to": _AT_LEAST_1, "prune.recover_steps": _AT_LEAST_0, "prune.recover_lr": _POSITIVE,
    "prune.max_accuracy_drop": _AT_LEAST_0, "prune.min_cosine": _COSINE,
    "tensorrt.batch": _AT_LEAST_1, "tensorrt.workspace_mb": _AT_LEAST_1, "tensorrt.dla_core": _AT_LEAST_0,
    "tensorrt.optimization_level": _Bound(0, 5),
}
# section.field -> (what one value is called, the allowed values)
_CHOICES: dict[str, tuple[str, "tuple[str, ...] | Callable[[], tuple[str, ...]]"]] = {
    "targets": ("target", KNOWN_TARGETS), "export.exporter": ("exporter", EXPORTERS),
    "benchmark.backends": ("backend", backend_choices), "quantize.mode": ("quantize mode", QUANT_MODES),
    "quantize.calib_method": ("calibration method", CALIB_METHODS),
    "quantize.target": ("quantization target", QUANT_TARGETS), "prune.method": ("pruning method", PRUNE_METHODS),
    "prune.importance": ("pruning importance", PRUNE_IMPORTANCES),
    "tensorrt.hardware_compatibility": ("TensorRT hardware compatibility", TRT_HARDWARE_COMPATIBILITY),
}
_NON_EMPTY = {"targets", "benchmark.batches", "benchmark.backends"}
# list fields that also take one string of items: "onnx,tflite", "1,8", "1:8:32"
_SEPARATORS = {"targets": ",", "benchmark.backends": ",", "benchmark.batches": ",", "tensorrt.batch": ":"}
# advice added to errors about these fields
_HINTS: dict[str, str] = {
    "targets": "fix --targets or 'targets:' in the recipe, e.g. targets: [onnx, tflite]",
    "export.opset": "the default is 18",
    "benchmark.threads": "leave it out to let the backend choose",
    "prune.ratio": "e.g. --prune 0.5 or a range --prune 0.3:0.7 (recipe: ratio: 0.3, ratio_max: 0.7)",
    "prune.ratio_max": "e.g. --prune 0.3:0.7",
    "tensorrt.batch": 'MIN:OPT:MAX, e.g. batch: [1, 8, 32] or batch: "1:8:32"',
}
_COLON_FIELDS = {"prune.method", "tensorrt.batch"}  # values written with colons, which YAML 1.1 may read as base 60
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # PyYAML leaves 1e-3 (no dot) a string
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


@cache
def _hints_of(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _normalize(section: Any, name: str) -> None:
    """Coerce each field of a frozen section to its annotated type, then check its range and choices."""
    for f in fields(section):
        where = f"{name}.{f.name}"
        value = _coerce(where, getattr(section, f.name), _hints_of(type(section))[f.name])
        _check_value(where, value)
        object.__setattr__(section, f.name, value)


def _bad(where: str, what: str, value: Any, expected: str) -> InputError:
    hint = None
    if where in _COLON_FIELDS and type(value) is int and value >= 60:  # YAML 1.1: unquoted 2:4 is 124
        text = _base60(value)
        hint = f'quote it: "{text}" (YAML reads an unquoted {text} as the base-60 number {value})'
    elif isinstance(value, str) and expected.endswith("unquoted"):  # opset: '17', enabled: 'false'
        hint = "write the value without quotes (YAML reads a quoted value as text)"
    return InputError(f"{where} {what}", expected=expected, found=f"{value!r} ({type(value).__name__})",
                      hint=hint or _HINTS.get(where))


def _base60(value: int) -> str:
    digits: list[str] = []
    while value:
        value, rest = divmod(value, 60)
        digits.append(str(rest))
    return ":".join(reversed(digits))


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_describe(a) for a in inner) + " (or null)"
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if origin is dict:
        return "a mapping"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(where: str, value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (a field annotation), or an InputError naming ``where``."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(where, value, inner)
    if value is None:
        raise _bad(where, "cannot be null", value, _describe(tp))
    if tp is bool:
        if not isinstance(value, bool):
            raise _bad(where, "must be true or false", value, "true or false, unquoted")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()):
            raise _bad(where, "must be an integer", value, "an integer, unquoted")
        return int(value)
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(where, "must be a number", value, "a number, e.g. 0.001 or 1e-3")
        if not math.isfinite(value):
            raise _bad(where, "must be a finite number", value, "a finite number (not NaN or infinity)")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _bad(where, "must be a string", value, _describe_choices(where) or "a string")
        return value
    if origin is tuple:
        elem = args[0]
        if isinstance(value, str):
            sep = _SEPARATORS.get(where)
            items: list[Any] = [v.strip() for v in value.split(sep)] if sep else [value]
            if elem is int:
                if not all(re.fullmatch(r"[-+]?\d+", v) for v in items):
                    raise _bad(where, "must be a list of integers", value,
                               f"integers{f' separated by {sep!r}' if sep else ''} or a list")
                items = [int(v) for v in items]
            elif sep:
                items = [v for v in items if v]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        elif elem is int and type(value) in (int, float) and where != "tensorrt.batch":
            items = [value]  # batches: 8 -> (8,); a TensorRT batch range needs MIN:OPT:MAX
        else:
            raise _bad(where, f"must be {_describe(tp)}", value, _describe(tp))
        return tuple(_coerce(where, v, elem) for v in items)
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _bad(where, "must be a mapping", value, "a mapping of input name -> value")
        return dict(value)
    return value


def _check_value(where: str, value: Any) -> None:
    """Range and choice checks of one (already coerced) field value; None passes."""
    items = value if isinstance(value, tuple) else (value,)
    if where in _NON_EMPTY and not items:
        raise InputError(f"{where} cannot be empty", expected=_describe_choices(where) or "at least one value",
                         found="nothing", hint=_HINTS.get(where))
    if where in _CHOICES:
        noun, allowed = _CHOICES[where]
        allowed = allowed() if callable(allowed) else allowed
        bad = [v for v in items if v not in allowed]
        if bad:
            raise InputError(f"unknown {noun} {', '.join(map(repr, bad))} in {where}",
                             expected=" | ".join(allowed), found=", ".join(map(str, bad)), hint=_HINTS.get(where))
    bound = _BOUNDS.get(where)
    if bound is not None:
        bad = [v for v in items if v is not None and not bound.holds(v)]
        if bad:
            raise InputError(f"{where} must be {bound}", expected=f"{where} {bound}",
                             found=", ".join(map(str, bad)), hint=_HINTS.get(where))
    if where == "tensorrt.batch" and value and (len(value) != 3 or not value[0] <= value[1] <= value[2]):
        raise InputError("tensorrt.batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX",
                         found=":".join(map(str, value)), hint="e.g. --trt-batch 1:8:32 or batch: [1, 8, 32]")


def _describe_choices(where: str) -> str | None:
    if where not in _CHOICES:
        return None
    allowed = _CHOICES[where][1]
    return " | ".join(allowed() if callable(allowed) else allowed)
