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
QUANT_MODES = ("none", "fp16", "int8", "int8-dynamic", "bf16")  # bf16: OpenVINO IR run in bf16 on CPUs with it
CALIB_METHODS = ("minmax", "entropy", "percentile")
QUANT_TARGETS = ("auto", "cpu", "tensorrt")
PRUNE_METHODS = ("channel", "unstructured", "2:4")
PRUNE_IMPORTANCES = ("l1", "l2", "bn", "taylor")
TRAIN_DEVICES = ("auto", "cpu", "cuda")  # where recovery and Taylor importance train


def backend_choices() -> tuple[str, ...]:
    """"auto" and every backend compress can verify on, read from the runtime registry (the single source)."""
    from edgesdk.runtimes.registry import backend_names

    return ("auto", *backend_names(verifying=True))

TRT_HARDWARE_COMPATIBILITY = ("none", "ampere_plus")


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
Choices = Union[tuple[str, ...], Callable[[], tuple[str, ...]]]


def setting(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
            option: str | None = None, aliases: tuple[str, ...] = (), bound: _Bound | None = None,
            choices: Choices | None = None, noun: str | None = None, sep: str | None = None,
            hint: str | None = None, non_empty: bool = False, colon: bool = False) -> Any:
    """A recipe field with everything the checks and the flat options need, in one place.

    option: the flat name for ``compress(**options)`` (default: the field name); aliases: other names for the
    same field; bound: the range its value (each element, for lists) must lie in (None always passes where the
    type allows it); choices/noun: the allowed values and what one is called; sep: the separator of a list
    given as one string ("onnx,tflite", "1:8:32"); hint: advice added to errors about the field; non_empty: a
    list that may not be empty; colon: values written with colons, which YAML 1.1 may read as base 60.
    """
    meta = {"option": option, "aliases": aliases, "bound": bound, "choices": choices, "noun": noun, "sep": sep,
            "hint": hint, "non_empty": non_empty, "colon": colon}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """Base of the recipe sections: coerce and check every field on construction (and on ``replace``)."""

    def __post_init__(self) -> None:
        _normalize(self, _SECTION_NAMES[type(self)])


@dataclass(frozen=True)
class ParityConfig(_Section):
    """Parity gate settings; tolerances default per precision (see edgesdk.parity)."""

    atol: float | None = setting(None, bound=_AT_LEAST_0)
    rtol: float | None = setting(None, bound=_AT_LEAST_0)
    min_cosine: float | None = setting(None, option="parity_min_cosine", bound=_COSINE)
    batches: int = setting(16, option="parity_batches", bound=_AT_LEAST_1)
    batch_size: int = setting(4, option="parity_batch_size", bound=_AT_LEAST_1)
    allow_mismatch: bool = setting(False)
    seed: int = setting(0, bound=_AT_LEAST_0)


@dataclass(frozen=True)
class BenchmarkConfig(_Section):
    """Benchmark settings used after every artifact is written."""

    enabled: bool = setting(True, option="benchmark")
    batches: tuple[int, ...] = setting((1,), bound=_AT_LEAST_1, sep=",", non_empty=True)
    threads: int | None = setting(None, bound=_AT_LEAST_1, hint="leave it out to let the backend choose")
    warmup: int = setting(10, bound=_AT_LEAST_0)
    iterations: int = setting(100, bound=_AT_LEAST_1)
    duration_s: float | None = setting(None, bound=_POSITIVE)
    # every artifact is verified and timed on each backend that can run it
    backends: tuple[str, ...] = setting(("auto",), choices=backend_choices, noun="backend", sep=",", non_empty=True)


@dataclass(frozen=True)
class ExportConfig(_Section):
    """Export settings (ONNX, and the TFLite input layout)."""

    opset: int = setting(18, bound=_Bound(7, 23), hint="the default is 18")
    exporter: str = setting("auto", choices=EXPORTERS, noun="exporter")
    simplify: bool = setting(True)
    dynamic_batch: bool = setting(True)
    # TFLite: take image-like inputs channels-last (N,H,W,C), as mobile camera pipelines produce them
    tflite_channels_last: bool = setting(False)
    # TFLite full-integer INT8: keep int8 input/output tensors (apps feeding int8 themselves); by default the
    # file takes float32 and quantizes inside the graph, which XNNPACK runs as one op
    tflite_int8_io: bool = setting(False)
    # input -> axes (or axis -> symbol) kept dynamic besides the batch, e.g. {x: [2, 3]} or {x: {2: H, 3: W}}
    dynamic_dims: dict[str, Any] = setting(factory=dict)
    dynamic_sequence: bool = setting(True)  # the sequence axis of token-id inputs (integer (N, L)) is dynamic


@dataclass(frozen=True)
class QuantizeConfig(_Section):
    """Quantization of the ONNX artifact (onnxruntime.quantization)."""

    mode: str = setting("none", option="quantize", choices=QUANT_MODES, noun="quantize mode")
    calib_method: str = setting("minmax", choices=CALIB_METHODS, noun="calibration method")
    per_channel: bool = setting(True)
    # auto | cpu | tensorrt: picks activation/weight types
    target: str = setting("auto", option="quant_target", choices=QUANT_TARGETS, noun="quantization target")
    calib_samples: int = setting(256, bound=_AT_LEAST_1)
    exclude: tuple[str, ...] = setting((), option="quant_exclude")  # node names kept in float
    # points of the task metric; needs labelled eval data
    max_accuracy_drop: float | None = setting(None, aliases=("max_metric_drop",), bound=_AT_LEAST_0)
    # label-free budget against the FP32 model (the CLI's --min-cosine)
    min_cosine: float | None = setting(None, aliases=("min_cosine_budget",), bound=_COSINE)


@dataclass(frozen=True)
class PruneConfig(_Section):
    """Pruning of the PyTorch model before export (Torch-Pruning)."""

    ratio: float | None = setting(None, option="prune", bound=_RATIO,  # 0 < r < 1; None: no pruning
                                  hint="e.g. --prune 0.5 or a range --prune 0.3:0.7 (recipe: ratio: 0.3, ratio_max: 0.7)")
    # with ratio: search the largest ratio in [ratio, ratio_max] under the budget
    ratio_max: float | None = setting(None, option="prune_max", bound=_RATIO, hint="e.g. --prune 0.3:0.7")
    method: str = setting("channel", option="prune_method", choices=PRUNE_METHODS, noun="pruning method", colon=True)
    importance: str = setting("l1", option="prune_importance", choices=PRUNE_IMPORTANCES, noun="pruning importance")
    target_macs: int | None = setting(None, option="prune_target_macs", bound=_AT_LEAST_1)
    protect: tuple[str, ...] = setting((), option="prune_protect")
    round_to: int | None = setting(8, option="prune_round_to", bound=_AT_LEAST_1)
    global_pruning: bool = setting(False, option="prune_global")
    recover: bool = setting(True)
    # at most this many distillation steps; None: up to 1000 within the time budget
    recover_steps: int | None = setting(None, bound=_AT_LEAST_0)
    # seconds recovery may take (the first steps are timed); None: 120 s, or no limit when recover_steps is set
    recover_time_s: float | None = setting(None, option="recover_time", bound=_POSITIVE,
                                           hint="e.g. --recover-time 2m, 90s or 90 (seconds)")
    train_device: str = setting("auto", choices=TRAIN_DEVICES, noun="training device")  # auto: CUDA when present
    recover_lr: float = setting(3e-3, bound=_POSITIVE)
    # metric points, needs labelled eval data: the ratio search's budget, or with a fixed ratio the most the
    # pruned model may lose (default 2 points when labels are given)
    max_accuracy_drop: float | None = setting(None, option="prune_max_accuracy_drop", bound=_AT_LEAST_0)
    # label-free: least cosine vs the original model (default 0.95)
    min_cosine: float | None = setting(None, option="prune_min_cosine", bound=_COSINE)


@dataclass(frozen=True)
class EvalConfig(_Section):
    """The task metric every artifact is measured with on labelled eval data, and budgets read (points)."""

    # auto (top-1 on class-id labels) | top1 | top5 | cer | miou | multilabel_f1 | file.py:fn
    metric: str = setting("auto")


@dataclass(frozen=True)
class TensorRTConfig(_Section):
    """TensorRT engine builds from the ONNX artifacts (target ``tensorrt``)."""

    # (min, opt, max) of the dynamic batch; () = 1, the largest benchmark batch, 64+
    batch: tuple[int, ...] = setting((), option="trt_batch", bound=_AT_LEAST_1, sep=":", colon=True,
                                     hint='MIN:OPT:MAX, e.g. batch: [1, 8, 32] or batch: "1:8:32"')
    workspace_mb: int = setting(1024, option="trt_workspace_mb", bound=_AT_LEAST_1)
    # 2:4 sparse kernels (prune with --prune-method 2:4 first)
    sparse_weights: bool = setting(False, option="trt_sparse")
    dla_core: int | None = setting(None, option="trt_dla_core", bound=_AT_LEAST_0)  # Jetson DLA core, GPU fallback
    optimization_level: int | None = setting(None, option="trt_optimization_level", bound=_Bound(0, 5))
    version_compatible: bool = setting(False, option="trt_version_compatible")
    hardware_compatibility: str = setting("none", option="trt_hardware_compatibility",
                                          choices=TRT_HARDWARE_COMPATIBILITY, noun="TensorRT hardware compatibility")
    # input -> [min, opt, max] shapes for other dynamic dims
    shapes: dict[str, Any] = setting(factory=dict, option="trt_shapes")


@dataclass(frozen=True)
class Recipe:
    """What a compress run does. Build it from flags, YAML or code; it is data."""

    targets: tuple[str, ...] = setting(("onnx",), choices=KNOWN_TARGETS, noun="target", sep=",", non_empty=True,
                                       hint="fix --targets or 'targets:' in the recipe, e.g. targets: [onnx, tflite]")
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
        if q.mode == "bf16" and (q.max_accuracy_drop is not None or q.min_cosine is not None):
            raise InputError("a quantization budget applies to int8/fp16 quantization, not to bf16",
                             expected="bf16 without --max-accuracy-drop/--min-cosine (its parity rule has its "
                                      "own tolerance)", found="quantize.mode bf16 with a budget",
                             hint="drop the budget, or use --quantize int8 with it")
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
        mode = self.quantize.mode
        if onnx and mode == "bf16":
            stages.append("bf16_openvino")
        elif onnx and mode != "none":
            stages.append("quantize_onnx")
        if tensorrt:
            stages.append("export_tensorrt")
            if self.quantize.mode == "int8" and self.quantize.target != "tensorrt":
                stages.append("quantize_onnx_trt")  # the CPU INT8 uses uint8 activations; TensorRT needs symmetric
            if mode not in ("none", "bf16"):
                stages.append("quantize_tensorrt")
        if tflite:
            stages.append("export_tflite")
            if mode not in ("none", "bf16"):  # TFLite has no bf16 mode: the FP32 file is the one for phones
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



def _field_specs() -> dict[str, Mapping[str, Any]]:
    """"section.field" (and "targets") -> the field's metadata, read from the dataclass fields."""
    specs: dict[str, Mapping[str, Any]] = {"targets": next(f for f in fields(Recipe) if f.name == "targets").metadata}
    for name, cls in _SECTIONS.items():
        specs.update({f"{name}.{f.name}": f.metadata for f in fields(cls)})
    return specs


def _flat_options() -> dict[str, tuple[str, str]]:
    """Flat option name -> (section, field), derived from the fields; a name can mean one field only."""
    options: dict[str, tuple[str, str]] = {}
    for name, cls in _SECTIONS.items():
        for f in fields(cls):
            for option in (f.metadata.get("option") or f.name, *f.metadata.get("aliases", ())):
                if option in options or option == "targets":
                    raise AssertionError(f"option {option!r} would name both {options.get(option)} and "
                                         f"{name}.{f.name}; give one of them option=...")
                options[option] = (name, f.name)
    return options


_SPECS = _field_specs()
# Flat option names accepted by ``edgesdk.compress(**options)`` (and ``targets``), each naming one field
FLAT_OPTIONS: dict[str, tuple[str, str]] = _flat_options()


def _spec(where: str, key: str) -> Any:
    return _SPECS.get(where, {}).get(key)


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
    if _spec(where, "colon") and type(value) is int and value >= 60:  # YAML 1.1: unquoted 2:4 is 124
        text = _base60(value)
        hint = f'quote it: "{text}" (YAML reads an unquoted {text} as the base-60 number {value})'
    elif isinstance(value, str) and expected.endswith("unquoted"):  # opset: '17', enabled: 'false'
        hint = "write the value without quotes (YAML reads a quoted value as text)"
    return InputError(f"{where} {what}", expected=expected, found=f"{value!r} ({type(value).__name__})",
                      hint=hint or _spec(where, "hint"))


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
            sep = _spec(where, "sep")
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
    hint = _spec(where, "hint")
    if _spec(where, "non_empty") and not items:
        raise InputError(f"{where} cannot be empty", expected=_describe_choices(where) or "at least one value",
                         found="nothing", hint=hint)
    if _spec(where, "choices") is not None:
        allowed = _allowed(where)
        bad = [v for v in items if v not in allowed]
        if bad:
            raise InputError(f"unknown {_spec(where, 'noun')} {', '.join(map(repr, bad))} in {where}",
                             expected=" | ".join(allowed), found=", ".join(map(str, bad)), hint=hint)
    bound = _spec(where, "bound")
    if bound is not None:
        bad = [v for v in items if v is not None and not bound.holds(v)]
        if bad:
            raise InputError(f"{where} must be {bound}", expected=f"{where} {bound}",
                             found=", ".join(map(str, bad)), hint=hint)
    if where == "tensorrt.batch" and value and (len(value) != 3 or not value[0] <= value[1] <= value[2]):
        raise InputError("tensorrt.batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX",
                         found=":".join(map(str, value)), hint="e.g. --trt-batch 1:8:32 or batch: [1, 8, 32]")


def _allowed(where: str) -> tuple[str, ...]:
    allowed = _spec(where, "choices")
    return allowed() if callable(allowed) else allowed


def _describe_choices(where: str) -> str | None:
    return " | ".join(_allowed(where)) if _spec(where, "choices") is not None else None
