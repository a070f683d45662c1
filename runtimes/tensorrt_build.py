"""ONNX -> TensorRT engine, written against the TensorRT 10 Python API.

``tensorrt`` is imported lazily, inside :func:`build_engine`; everything else here (profile
computation, settings, the engine record) is plain Python so it is tested on machines without
a GPU. Nothing here imports torch, so an engine can be rebuilt on the device from the ONNX file
(``edgesdk benchmark DIR --rebuild``).

Files written beside the engine ``model.engine``:

* ``model.engine.json``: the engine record (TensorRT version, GPU name and compute capability,
  platform, precision, profiles, flags, the source ONNX and its sha256); the runtime checks it
  before it deserializes, because an engine only runs on the TensorRT version, GPU generation and
  platform it was built for;
* ``model.timing.cache``: TensorRT's timing cache, reused by the next build on the same GPU (a
  cache from another GPU or TensorRT release, e.g. in a copied directory, is ignored).

Example::

    settings = EngineSettings(precision="fp16", profiles=compute_profiles(inputs, batch=(1, 8, 32)))
    info = build_engine("out/model.onnx", "out/model.fp16.engine", settings)
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from edgesdk.errors import BackendUnavailableError, ExportError, InputError
from .tensorrt_env import INSTALL, gpu_identity, host_platform, import_tensorrt

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
Shape = tuple[int, ...]
Profile = tuple[Shape, Shape, Shape]


@dataclass(frozen=True)
class EngineSettings:
    """How to build one engine. ``profiles``: input name -> (min, opt, max) shapes."""

    precision: str = "fp32"  # fp32 | fp16 | int8 (int8 needs a QDQ ONNX: explicit quantization)
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    workspace_mb: int = 1024
    sparse_weights: bool = False  # 2:4 structured sparsity kernels (Ampere and newer)
    dla_core: int | None = None  # Jetson Xavier/Orin DLA; layers DLA cannot run fall back to the GPU
    optimization_level: int | None = None  # builder optimization level 0..5 (TensorRT default 3)
    version_compatible: bool = False  # engine runs on later TensorRT releases of the same major version
    hardware_compatibility: str = "none"  # none | ampere_plus

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown TensorRT precision {self.precision!r}", expected=" | ".join(PRECISIONS))
        if self.workspace_mb < 1:
            raise InputError("TensorRT workspace must be >= 1 MB", found=str(self.workspace_mb))
        if self.dla_core is not None and self.dla_core < 0:
            raise InputError("DLA core must be >= 0", found=str(self.dla_core))
        if self.hardware_compatibility not in ("none", "ampere_plus"):
            raise InputError("unknown hardware compatibility level", expected="none | ampere_plus",
                             found=self.hardware_compatibility)
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise InputError("builder optimization level must be 0..5", found=str(self.optimization_level))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["profiles"] = {k: [list(s) for s in v] for k, v in self.profiles.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EngineSettings":
        d = dict(data)
        d["profiles"] = {k: tuple(tuple(int(x) for x in s) for s in v) for k, v in (d.get("profiles") or {}).items()}
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def compute_profiles(inputs: Iterable[Mapping[str, Any] | Any], *, batch: tuple[int, int, int] = (1, 1, 1),
                     example_shapes: Mapping[str, Sequence[int]] | None = None,
                     overrides: Mapping[str, Profile] | None = None) -> dict[str, Profile]:
    """One optimization profile (min, opt, max per input) from the inputs' dynamic axes.

    ``inputs`` are manifest entries or TensorSpecs (``name``, ``shape`` where dynamic dims are
    strings or negative). A dynamic axis 0 is the batch and takes ``batch`` = (min, opt, max);
    another dynamic axis takes the example input's size for all three unless ``overrides`` gives
    the input's (min, opt, max). Fixed dims must agree with any override.

    Example::

        compute_profiles([{"name": "x", "shape": ["batch", 3, 224, 224]}], batch=(1, 8, 32))
        # {"x": ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))}
    """
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise InputError("TensorRT batch range must satisfy 1 <= min <= opt <= max", found=f"{lo}, {opt}, {hi}")
    overrides = dict(overrides or {})
    example_shapes = dict(example_shapes or {})
    profiles: dict[str, Profile] = {}
    for spec in inputs:
        name = spec["name"] if isinstance(spec, Mapping) else spec.name
        shape = list(spec["shape"] if isinstance(spec, Mapping) else spec.shape)
        dynamic = [i for i, d in enumerate(shape) if not isinstance(d, int) or d < 0]
        if name in overrides:
            profiles[name] = _check_override(name, shape, overrides.pop(name))
            continue
        mins, opts, maxs = list(shape), list(shape), list(shape)
        for i in dynamic:
            if i == 0:
                mins[i], opts[i], maxs[i] = lo, opt, hi
                continue
            example = example_shapes.get(name)
            if example is None or len(example) != len(shape):
                raise InputError(f"input {name!r} has a dynamic dimension {i} ({shape[i]!r}) besides the batch",
                                 expected="its size in the example inputs, or a TensorRT shape override",
                                 found=f"shape {shape}",
                                 hint=f"pass trt_shapes={{'{name}': (min, opt, max)}} (recipe tensorrt.shapes)")
            mins[i] = opts[i] = maxs[i] = int(example[i])
        profiles[name] = (tuple(mins), tuple(opts), tuple(maxs))
    if overrides:
        raise InputError("TensorRT shape override for an input the model does not have",
                         expected=", ".join(profiles) or "no inputs", found=", ".join(overrides))
    return profiles


def _check_override(name: str, shape: list[Any], prof: Sequence[Sequence[int]]) -> Profile:
    if len(prof) != 3:
        raise InputError(f"TensorRT shapes for {name!r} must be (min, opt, max)", found=str(prof))
    out = tuple(tuple(int(x) for x in s) for s in prof)
    for s in out:
        if len(s) != len(shape):
            raise InputError(f"TensorRT shape for {name!r} has the wrong rank", expected=f"rank {len(shape)} "
                             f"like {shape}", found=str(s))
        for i, d in enumerate(shape):
            if isinstance(d, int) and d >= 0 and s[i] != d:
                raise InputError(f"TensorRT shape for {name!r} changes fixed dimension {i}",
                                 expected=f"{d} (the model's shape {shape})", found=str(s))
    lo, opt, hi = out
    if any(not 1 <= a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise InputError(f"TensorRT shapes for {name!r} must satisfy 1 <= min <= opt <= max per dimension",
                         found=f"min {lo}, opt {opt}, max {hi}")
    return out  # type: ignore[return-value]


def available() -> bool:
    """True when the tensorrt package can be imported here."""
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


class _Logger:
    """Collects TensorRT's messages so errors can quote them (subclassed from trt.ILogger at use)."""

    @staticmethod
    def make(trt: Any) -> Any:
        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: list[str] = []

            def log(self, severity: Any, msg: str) -> None:  # noqa: A003 - TensorRT's callback name
                if severity <= trt.ILogger.Severity.WARNING:
                    self.messages.append(f"{severity.name}: {msg}")
                    (log.warning if severity == trt.ILogger.Severity.WARNING else log.error)("TensorRT: %s", msg)

        return Logger()


@dataclass
class EngineInfo:
    path: Path
    record: dict[str, Any]
    build_time_s: float
    warnings: list[str]


def build_engine(onnx_path: str | Path, engine_path: str | Path, settings: EngineSettings) -> EngineInfo:
    """Parse ``onnx_path``, build a serialized engine with ``settings``, write it with its record and timing cache.

    Raises ExportError naming the ONNX node TensorRT could not parse, or quoting the builder's log.
    """
    from edgesdk.atomic import sha256_file, write_bytes, write_json

    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = _Logger.make(trt)
    t0 = time.perf_counter()
    try:
        builder = trt.Builder(logger)  # the binding raises when createInferBuilder returns null (no usable GPU)
    except (TypeError, RuntimeError) as e:
        raise BackendUnavailableError("TensorRT could not create a builder", found="\n".join(logger.messages[-4:])
                                      or str(e), hint="check the NVIDIA driver and that a GPU is visible "
                                                      "(nvidia-smi); " + INSTALL) from e
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}", found="\n".join(errors) or "no parser detail",
                          hint="the named op is not supported by this TensorRT version: re-export with another "
                               "opset, or run this artifact with onnxruntime")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if settings.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif settings.precision == "int8":
        # explicit quantization: the QDQ nodes carry the scales; FP16 lets non-quantized layers use half
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    if settings.sparse_weights:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if settings.dla_core is not None:
        if builder.num_DLA_cores <= settings.dla_core:
            raise ExportError(f"DLA core {settings.dla_core} asked for", expected="a Jetson with DLA cores",
                              found=f"{builder.num_DLA_cores} DLA cores on this device")
        if settings.precision == "fp32":
            log.warning("DLA runs FP16 and INT8 layers only: with fp32 the layers fall back to the GPU")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if settings.optimization_level is not None:
        config.builder_optimization_level = settings.optimization_level
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if settings.hardware_compatibility == "ampere_plus":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    _add_profile(trt, builder, network, config, settings.profiles)
    cache_path = timing_cache_path(engine_path)
    _attach_timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path.name}",
                          found="\n".join(logger.messages[-8:]) or "the builder returned nothing",
                          hint="see the TensorRT messages above; try --trt-workspace with more MB or fp32")
    write_bytes(engine_path, bytes(serialized))
    cache = config.get_timing_cache()
    if cache is not None:
        write_bytes(cache_path, bytes(cache.serialize()))
    record = {
        "format": "tensorrt-engine",
        "tensorrt": trt.__version__,
        **gpu_identity(),
        "platform": host_platform(),
        "settings": settings.to_dict(),
        "source_onnx": {"path": _relative(onnx_path, engine_path.parent), "sha256": sha256_file(onnx_path)},
        "timing_cache": cache_path.name,
    }
    write_json(record_path(engine_path), record)
    return EngineInfo(engine_path, record, time.perf_counter() - t0,
                      [m for m in logger.messages if m.startswith("WARNING")][:20])


def _network_flags(trt: Any) -> int:
    """``create_network`` flags: 0 in TensorRT 10 (explicit batch is the only mode, EXPLICIT_BATCH is
    deprecated and ignored); TensorRT 8.x still needs EXPLICIT_BATCH for the ONNX parser."""
    try:
        major = int(str(trt.__version__).split(".")[0])
    except ValueError:
        major = 10
    if major >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _attach_timing_cache(config: Any, cache_path: Path) -> None:
    """Attach the timing cache saved by an earlier build, or a fresh one.

    ``set_timing_cache(cache, ignore_mismatch=False)`` returns False for a cache written on another
    GPU or TensorRT release (a copied artifact directory, ``--rebuild`` on the device); TensorRT then
    would not attach it, so a fresh cache is attached instead and overwrites the stale file.
    """
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    for data in ((blob, b"") if blob else (b"",)):
        try:
            cache = config.create_timing_cache(data)
            if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
                return
        except Exception as e:  # a truncated or foreign blob may be refused outright
            log.debug("timing cache refused: %s", e)
        if data:
            log.warning("ignoring %s: written by another GPU or TensorRT release, or truncated", cache_path.name)
    log.warning("TensorRT refused a timing cache; building without one")


def _parser_error(err: Any) -> str:
    node = getattr(err, "node_name", None)
    op = getattr(err, "node_operator", None)
    where = f"node {node()!r} ({op()})" if callable(node) and callable(op) else f"node #{err.node()}"
    return f"{where}: {err.desc()}"


def _add_profile(trt: Any, builder: Any, network: Any, config: Any, profiles: Mapping[str, Profile]) -> None:
    dynamic = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        if any(d < 0 for d in t.shape):
            dynamic.append(t.name)
    missing = [n for n in dynamic if n not in profiles]
    if missing:
        raise InputError("TensorRT needs min/opt/max shapes for every dynamic input",
                         found=f"no profile for {', '.join(missing)}",
                         hint="give the batch range (--trt-batch MIN:OPT:MAX) or shape overrides")
    if not dynamic:
        return
    profile = builder.create_optimization_profile()
    for name in dynamic:
        lo, opt, hi = profiles[name]
        try:
            profile.set_shape(name, lo, opt, hi)
        except (RuntimeError, TypeError, ValueError) as e:  # the binding raises on an inconsistent shape
            raise InputError(f"TensorRT refused the shapes for input {name!r}", expected="min <= opt <= max, "
                             "each of the input's rank", found=f"min {lo}, opt {opt}, max {hi}: {e}",
                             hint="fix --trt-batch MIN:OPT:MAX or the trt_shapes override") from e
    if config.add_optimization_profile(profile) < 0:
        raise InputError("TensorRT refused the optimization profile", found=str({n: profiles[n] for n in dynamic}),
                         hint="every dynamic input needs min <= opt <= max of the input's rank")


def record_path(engine_path: str | Path) -> Path:
    """Where the engine record sits: ``model.engine`` -> ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def timing_cache_path(engine_path: str | Path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.stem + ".timing.cache")


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())
