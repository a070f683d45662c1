"""The recipe: everything a ``compress`` run does, as one frozen dataclass.

CLI flags and YAML files only build a recipe; the API runs it. ``to_dict`` and
``from_dict`` round-trip, and unknown keys are an error rather than ignored.

Example::

    r = Recipe(opset=18, targets=("onnx",))
    assert Recipe.from_dict(r.to_dict()) == r
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InputError

SCHEMA_VERSION = 1
KNOWN_TARGETS = ("onnx", "tflite", "tensorrt", "openvino")
EXPORTERS = ("auto", "dynamo", "legacy")
QUANT_MODES = ("none", "fp16", "int8", "int8-dynamic")
CALIB_METHODS = ("minmax", "entropy", "percentile")
QUANT_TARGETS = ("auto", "cpu", "tensorrt")
PRUNE_METHODS = ("channel", "unstructured", "2:4")
PRUNE_IMPORTANCES = ("l1", "l2", "bn", "taylor")


@dataclass(frozen=True)
class ParityConfig:
    """Parity gate settings; tolerances default per precision (see edgesdk.parity)."""

    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    batches: int = 16
    batch_size: int = 4
    allow_mismatch: bool = False
    seed: int = 0


@dataclass(frozen=True)
class BenchmarkConfig:
    """Benchmark settings used after every artifact is written."""

    enabled: bool = True
    batches: tuple[int, ...] = (1,)
    threads: int | None = None
    warmup: int = 10
    iterations: int = 100
    duration_s: float | None = None
    backends: tuple[str, ...] = ("auto",)  # every artifact is verified and timed on each backend that can run it


@dataclass(frozen=True)
class ExportConfig:
    """Export settings (ONNX, and the TFLite input layout)."""

    opset: int = 18
    exporter: str = "auto"
    simplify: bool = True
    dynamic_batch: bool = True
    # TFLite: take image-like inputs channels-last (N,H,W,C), as mobile camera pipelines produce them
    tflite_channels_last: bool = False


@dataclass(frozen=True)
class QuantizeConfig:
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
class PruneConfig:
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
    max_accuracy_drop: float | None = None  # for the ratio search (points, needs labelled eval data)


@dataclass(frozen=True)
class TensorRTConfig:
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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InputError naming the bad field."""
        bad = [t for t in self.targets if t not in KNOWN_TARGETS]
        if bad or not self.targets:
            raise InputError("unknown target in recipe", expected=f"one or more of {', '.join(KNOWN_TARGETS)}",
                             found=", ".join(bad) or "no targets", hint="fix --targets or 'targets:' in the recipe")
        if self.export.exporter not in EXPORTERS:
            raise InputError("unknown exporter", expected=" | ".join(EXPORTERS), found=repr(self.export.exporter))
        if not 7 <= self.export.opset <= 23:
            raise InputError("opset out of range", expected="an ONNX opset between 7 and 23 (default 18)",
                             found=str(self.export.opset))
        if self.parity.batches < 0 or self.parity.batch_size < 1:
            raise InputError("parity batches must be >= 0 and batch size >= 1",
                             found=f"batches={self.parity.batches}, batch_size={self.parity.batch_size}")
        for name in ("atol", "rtol"):
            v = getattr(self.parity, name)
            if v is not None and v < 0:
                raise InputError(f"parity {name} must be >= 0", found=str(v))
        if any(b < 1 for b in self.benchmark.batches) or not self.benchmark.batches:
            raise InputError("benchmark batch sizes must be positive integers",
                             found=",".join(map(str, self.benchmark.batches)))
        known = ("auto", "onnxruntime", "openvino", "litert", "tensorrt")
        bad_backends = [b for b in self.benchmark.backends if b not in known]
        if bad_backends or not self.benchmark.backends:
            raise InputError("unknown backend in recipe", expected=" | ".join(known),
                             found=", ".join(bad_backends) or "none")
        q = self.quantize
        for name, value, allowed in (("quantize mode", q.mode, QUANT_MODES), ("calibration method", q.calib_method,
                                     CALIB_METHODS), ("quantization target", q.target, QUANT_TARGETS)):
            if value not in allowed:
                raise InputError(f"unknown {name} {value!r}", expected=" | ".join(allowed), found=repr(value))
        if q.calib_samples < 1:
            raise InputError("calib_samples must be >= 1", found=str(q.calib_samples))
        if q.max_accuracy_drop is not None and q.max_accuracy_drop < 0:
            raise InputError("max accuracy drop must be >= 0 points", found=str(q.max_accuracy_drop))
        if q.min_cosine is not None and not 0 < q.min_cosine <= 1:
            raise InputError("min cosine must be in (0, 1]", found=str(q.min_cosine))
        p = self.prune
        for r in (p.ratio, p.ratio_max):
            if r is not None and not 0 < r < 1:
                raise InputError("pruning ratio must be between 0 and 1 (exclusive)", expected="0 < ratio < 1",
                                 found=str(r), hint="e.g. --prune 0.5 or a range --prune 0.3:0.7")
        if p.ratio_max is not None and (p.ratio is None or p.ratio_max < p.ratio):
            raise InputError("pruning range must be LOW:HIGH with LOW <= HIGH", found=f"{p.ratio}:{p.ratio_max}")
        if p.method not in PRUNE_METHODS:
            raise InputError(f"unknown pruning method {p.method!r}", expected=" | ".join(PRUNE_METHODS))
        if p.importance not in PRUNE_IMPORTANCES:
            raise InputError(f"unknown pruning importance {p.importance!r}", expected=" | ".join(PRUNE_IMPORTANCES))
        if p.recover_steps < 0 or p.recover_lr <= 0:
            raise InputError("recovery needs steps >= 0 and lr > 0", found=f"{p.recover_steps}, {p.recover_lr}")
        t = self.tensorrt
        if t.batch and (len(t.batch) != 3 or not 1 <= t.batch[0] <= t.batch[1] <= t.batch[2]):
            raise InputError("TensorRT batch range must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX",
                             found=":".join(map(str, t.batch)), hint="e.g. --trt-batch 1:8:32")
        if t.workspace_mb < 1 or (t.dla_core is not None and t.dla_core < 0):
            raise InputError("TensorRT workspace must be >= 1 MB and the DLA core >= 0",
                             found=f"workspace_mb={t.workspace_mb}, dla_core={t.dla_core}")
        if t.hardware_compatibility not in ("none", "ampere_plus"):
            raise InputError("unknown TensorRT hardware compatibility", expected="none | ampere_plus",
                             found=repr(t.hardware_compatibility))
        if self.benchmark.iterations < 1 or self.benchmark.warmup < 0:
            raise InputError("benchmark needs iterations >= 1 and warmup >= 0",
                             found=f"iterations={self.benchmark.iterations}, warmup={self.benchmark.warmup}")

    @property
    def stages(self) -> list[str]:
        """The stage names this recipe runs, in order."""
        tflite, tensorrt = "tflite" in self.targets, "tensorrt" in self.targets
        onnx = bool({"onnx", "tensorrt", "openvino"} & set(self.targets))  # TensorRT and OpenVINO read the ONNX
        stages = ["export_onnx"] if onnx else []
        if self.prune.ratio is not None or self.prune.target_macs is not None:
            stages += ["prune"] + (["export_onnx"] if onnx else [])
        if onnx and self.quantize.mode != "none":
            stages.append("quantize_onnx")
        if tensorrt:
            stages.append("export_tensorrt")
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
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        """Build a recipe from a dict; unknown keys raise InputError."""
        data = dict(data)
        data.pop("schema_version", None)
        data.pop("stages", None)
        sections = {"export": ExportConfig, "parity": ParityConfig, "benchmark": BenchmarkConfig,
                    "quantize": QuantizeConfig, "prune": PruneConfig, "tensorrt": TensorRTConfig}
        kwargs: dict[str, Any] = {}
        _check_keys("recipe", data, {f.name for f in fields(cls)})
        for key, value in data.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise InputError(f"recipe section '{key}' must be a mapping", found=type(value).__name__)
                sec = sections[key]
                _check_keys(f"recipe.{key}", value, {f.name for f in fields(sec)})
                value = {k: tuple(v) if isinstance(v, list) and k != "shapes" else v for k, v in value.items()}
                kwargs[key] = sec(**value)
            elif key == "targets":
                kwargs[key] = tuple(value) if isinstance(value, (list, tuple)) else tuple(str(value).split(","))
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
        return cls.from_dict(data)

    def replace(self, **sections: dict[str, Any]) -> "Recipe":
        """Return a copy with fields of sections overridden, e.g. ``replace(export={"opset": 17})``."""
        kwargs: dict[str, Any] = {}
        for key, value in sections.items():
            current = getattr(self, key)
            kwargs[key] = dataclasses.replace(current, **value) if dataclasses.is_dataclass(current) else value
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
    """Override recipe fields with flat options, e.g. ``apply_options(r, opset=17, benchmark=False)``."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in options.items():
        if key == "targets":
            recipe = dataclasses.replace(recipe, targets=tuple(value))
            continue
        if key not in FLAT_OPTIONS:
            raise InputError(f"unknown option {key!r}", expected=", ".join(sorted([*FLAT_OPTIONS, "targets"])),
                             found=key)
        section, name = FLAT_OPTIONS[key]
        if isinstance(value, list):
            value = tuple(value)
        sections.setdefault(section, {})[name] = value
    return recipe.replace(**sections) if sections else recipe
