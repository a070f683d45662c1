"""A content-hash cache of stage outputs, shared by compress runs (and processes) that need the same thing.

A search runs many compress runs; most of them export the same FP32 model, prune it the same way or quantize
it with the same settings. The pipeline asks this cache before running a stage: the key is a sha256 of
everything the stage's output depends on (the stage, the recipe fields it declares it reads, its parent's
content or the PyTorch model's fingerprint, the data it reads, and the versions of the tools and of edgesdk's
own code), so a key names one output exactly. An entry is a directory ``<root>/<key>/`` holding the files the
stage wrote and ``entry.json`` (the artifact's record and the target statuses the stage set). Entries are
written into a temporary directory inside ``root`` and renamed into place, so several processes can share one
cache directory: a reader sees a whole entry or none, and of two writers of one key the first rename wins.

Example::

    cache = StageCache(Path("~/.cache/edgesdk-stages").expanduser())
    key = cache.key("export_onnx", {"opset": 18, "model": "3f2a..."})
    entry = cache.lookup(key)          # None: compute, then cache.store(key, {"model.onnx": path}, record)
    if entry is not None:
        cache.restore(entry, workdir)  # the files, hard-linked (or copied) into workdir
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .atomic import json_text, sha256_file
from .errors import InputError, OutputWriteError

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the key or the entry layout changes: old entries then never match
ENTRY_FILE = "entry.json"
_TMP_PREFIX = ".tmp-"
# the tools a stage's output can depend on (distribution names; None when absent)
TOOLS = ("edgesdk", "torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxslim", "onnxscript",
         "torch-pruning", "safetensors", "litert-torch", "ai-edge-quantizer", "ai-edge-litert", "tensorflow",
         "openvino", "tensorrt")
_MEMO_MIN_BYTES = 1 << 16  # arrays this big are hashed once per run (calibration data read by several stages)
_STALE_TMP_S = 86400.0  # a temporary entry this old was left by a process that died while storing it


class Unhashable(Exception):
    """A value a stage reads that cannot be hashed soundly (a Python callable...): the stage is not cached."""


@dataclass
class CacheEntry:
    """One stored stage output: its directory, ``entry.json`` as read, and the stored file names."""

    key: str
    dir: Path
    record: dict[str, Any]

    @property
    def files(self) -> list[str]:
        return list(self.record["files"])


@functools.lru_cache(maxsize=1)
def tool_versions() -> dict[str, str | None]:
    """The installed version of each tool in TOOLS (None when absent), with the Python version and machine."""
    out: dict[str, str | None] = {}
    for dist in TOOLS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    out["python"] = ".".join(map(str, sys.version_info[:3]))
    out["machine"] = platform.machine()
    return out


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of edgesdk's own sources: an editable install keeps its version number while its code changes,
    and a stale entry from older stage code would be a wrong artifact."""
    h = hashlib.sha256()
    for pkg in ("edgesdk", "edgesdk.compress", "edgesdk.runtimes"):
        spec = importlib.util.find_spec(pkg)
        for loc in (spec.submodule_search_locations or []) if spec else []:
            for f in sorted(Path(loc).rglob("*.py")):
                h.update(f"{pkg}/{f.relative_to(loc).as_posix()}\0".encode())
                h.update(f.read_bytes())
    return h.hexdigest()


class Hasher:
    """Canonical sha256 of the values stages read: JSON-like data, arrays, tensors, modules, recipe sections.

    Anything it cannot hash soundly (a callable, an unknown object) raises Unhashable. Large arrays and
    modules are hashed once per Hasher (one run), as several stages read the same calibration data.

    >>> Hasher().digest({"opset": 18, "x": np.zeros(3)})
    '9c1d...'
    """

    def __init__(self) -> None:
        self._memo: dict[int, tuple[Any, str]] = {}  # id -> (the object, kept alive so its id stays unique; digest)

    def digest(self, obj: Any, where: str = "value") -> str:
        """Hex sha256 of ``obj``; ``where`` names it in the Unhashable message."""
        h = hashlib.sha256()
        self._feed(h, obj, where)
        return h.hexdigest()

    def _feed(self, h: Any, obj: Any, where: str) -> None:
        if obj is None or isinstance(obj, (bool, int, float, str)):
            h.update(f"{type(obj).__name__}:{obj!r};".encode())
        elif isinstance(obj, bytes):
            h.update(b"bytes:%d:" % len(obj) + obj)
        elif isinstance(obj, Mapping):
            h.update(b"dict{")
            for k in sorted(obj, key=repr):
                self._feed(h, k, where)
                self._feed(h, obj[k], f"{where}.{k}")
            h.update(b"}")
        elif isinstance(obj, (list, tuple)):
            h.update(f"{type(obj).__name__}[{len(obj)}".encode())
            for i, v in enumerate(obj):
                self._feed(h, v, f"{where}[{i}]")
            h.update(b"]")
        elif isinstance(obj, (set, frozenset)):
            h.update(b"set{" + ",".join(sorted(self.digest(v) for v in obj)).encode() + b"}")
        else:
            h.update(self._object(obj, where).encode())

    def _object(self, obj: Any, where: str) -> str:
        import numpy as np

        if isinstance(obj, np.generic):
            return f"np:{obj.dtype}:{obj.item()!r};"
        memo = self._memo.get(id(obj))
        if memo is not None and memo[0] is obj:
            return memo[1]
        if isinstance(obj, np.ndarray):
            d = _array_digest(obj)
        elif _is_tensor(obj):
            d = _tensor_digest(obj)
        elif _is_module(obj):
            d = "module:" + module_fingerprint(obj)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return self._dataclass(obj, where)  # small, and may be mutable: never remembered
        elif callable(obj):
            raise Unhashable(f"{where} is a Python callable ({getattr(obj, '__qualname__', type(obj).__name__)}), "
                             "whose behaviour cannot be hashed")
        else:
            raise Unhashable(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which the cache "
                             "cannot hash")
        if getattr(obj, "nbytes", _MEMO_MIN_BYTES) >= _MEMO_MIN_BYTES:
            self._memo[id(obj)] = (obj, d)
        return d

    def _dataclass(self, obj: Any, where: str) -> str:
        from .metrics import METRICS

        name = getattr(obj, "name", None)
        if isinstance(name, str) and METRICS.get(name) is obj:  # a built-in metric: its name says what it does
            return f"metric:{name};"
        h = hashlib.sha256(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        for f in dataclasses.fields(obj):
            self._feed(h, f.name, where)
            self._feed(h, getattr(obj, f.name), f"{where}.{f.name}")
        return f"dc:{h.hexdigest()};"


def _array_digest(a: Any) -> str:
    import numpy as np

    if a.dtype.hasobject:
        raise Unhashable(f"an array of Python objects ({a.dtype}) cannot be hashed")
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}:{a.shape}:".encode())
    h.update(memoryview(a).cast("B") if a.size else b"")
    return f"nd:{h.hexdigest()};"


def _is_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")  # no torch loaded: nothing can be a tensor
    return torch is not None and isinstance(obj, torch.Tensor)


def _is_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _tensor_digest(t: Any) -> str:
    import torch

    try:
        t = t.detach().cpu().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""  # raw: bf16 has no numpy
    except (RuntimeError, TypeError, NotImplementedError) as e:  # sparse, quantized, meta tensors...
        raise Unhashable(f"a {t.dtype} tensor of layout {t.layout} cannot be hashed ({e})") from e
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}:".encode())
    h.update(data)
    return f"t:{h.hexdigest()};"


def module_fingerprint(model: Any) -> str:
    """sha256 of what a PyTorch model computes: each submodule's class (and its source file, where its forward
    lives), its plain attributes (``self.scale = 2.0`` changes the output too), every state_dict tensor's name,
    dtype, shape and bytes, and the training flag.

    >>> module_fingerprint(torch.nn.Linear(2, 3)) == module_fingerprint(torch.nn.Linear(2, 3))
    False
    """
    h = hashlib.sha256(f"training={model.training};".encode())
    sources: dict[type, str] = {}
    for name, m in model.named_modules():
        cls = type(m)
        if cls not in sources:
            sources[cls] = _class_source_digest(cls)
        h.update(f"mod:{name}:{cls.__module__}.{cls.__qualname__}:{sources[cls]};".encode())
        for attr, v in sorted(vars(m).items()):
            if not attr.startswith("_") and attr != "training" and _plain(v):
                h.update(f"{attr}={v!r};".encode())
    for name, t in model.state_dict().items():
        h.update(f"sd:{name}:".encode() + _tensor_digest(t).encode())
    return h.hexdigest()


def _plain(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    return isinstance(v, (tuple, list)) and all(_plain(x) for x in v)


def _class_source_digest(cls: type) -> str:
    """sha256 of the file a model class is defined in (torch's own classes: their version is in the key)."""
    import inspect

    if cls.__module__.startswith("torch."):
        return "torch"
    try:
        return sha256_file(inspect.getsourcefile(cls) or "")
    except (OSError, TypeError):
        pass
    try:  # a class typed into a notebook or a REPL: its source text, or failing that its code
        return hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()
    except (OSError, TypeError):
        codes = [f.__code__ for f in vars(cls).values() if hasattr(f, "__code__")]
        return hashlib.sha256(b"".join(c.co_code + repr(c.co_consts).encode() for c in codes)).hexdigest()


class StageCache:
    """The cache directory; one object per run (it memoizes hashes of that run's data).

    >>> cache = StageCache(Path("/tmp/stages"))
    >>> cache.lookup(cache.key("export_onnx", {"opset": 18})) is None
    True
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().absolute()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputWriteError(f"cannot create the stage cache directory {self.root}", found=str(e),
                                   hint="give --cache-dir a writable directory") from e
        if not self.root.is_dir():
            raise InputError(f"the stage cache {self.root} is not a directory", hint="give --cache-dir a directory")
        self.hasher = Hasher()
        self._file_memo: dict[tuple[str, int, int, int], str] = {}
        self._clean_stale()

    def _clean_stale(self) -> None:
        import time

        for d in self.root.glob(f"{_TMP_PREFIX}*"):
            try:
                if time.time() - d.stat().st_mtime > _STALE_TMP_S:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:  # another process removed or renamed it meanwhile
                continue

    # -- keys -------------------------------------------------------------------------------------------------
    def key(self, stage: str, parts: Mapping[str, Any]) -> str:
        """The key of ``stage``'s output given everything it reads (``parts``), the tool versions and code."""
        return self.hasher.digest({"cache_version": CACHE_VERSION, "stage": stage, "tools": tool_versions(),
                                   "code": code_digest(), "parts": dict(parts)})

    def file_digest(self, path: Path) -> str:
        """sha256 of a file, remembered while the file is unchanged (a parent several stages read)."""
        st = path.stat()
        sig = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if sig not in self._file_memo:
            self._file_memo[sig] = sha256_file(path)
        return self._file_memo[sig]

    def stage_key(self, rec: Any, parent: Any, ctx: Any) -> tuple[str | None, str | None]:
        """(the key of this stage's output, None) or (None, why it is not cached).

        The key holds the recipe fields and context values the stage record ``reads``, its parent artifact
        (name, format, the meta it passes on, each file's sha256), for a stage that takes the PyTorch model
        that model's fingerprint, and what the record's ``key_with`` adds."""
        if rec.reads is None:
            return None, f"stage {rec.name} declares no reads"
        try:
            digest = self.hasher.digest
            parts = {"reads": {r: digest(self._read(r, ctx), r) for r in rec.reads},
                     "parent": None if parent is None else self._artifact(parent),
                     "extra": digest(rec.key_with(parent, ctx), rec.name) if rec.key_with is not None else None}
            if rec.takes == "model":
                parts["model"] = digest(ctx.pytorch(parent)[0], "the PyTorch model")
            return self.key(rec.name, parts), None
        except Unhashable as e:
            return None, str(e)

    def _read(self, path: str, ctx: Any) -> Any:
        """A declared read: ``ctx.NAME`` (a StageContext field) or ``section`` / ``section.field`` of the recipe."""
        head, _, rest = path.partition(".")
        obj, name = (ctx, rest) if head == "ctx" else (getattr(ctx.recipe, head, _MISSING), rest)
        if head != "ctx" and obj is _MISSING:
            raise InputError(f"a stage reads an unknown recipe section {head!r}", found=path)
        if name:
            obj = getattr(obj, name, _MISSING)
            if obj is _MISSING:
                raise InputError(f"a stage reads an unknown field {path!r}", found=path)
        return obj

    def _artifact(self, art: Any) -> dict[str, Any]:
        return {"name": art.name, "format": art.format, "precision": art.precision,
                "meta": {k: art.meta.get(k) for k in ("reference", "params", "macs")},
                "files": {f.name: self.file_digest(f) for f in art.files()}}

    # -- entries ----------------------------------------------------------------------------------------------
    def lookup(self, key: str) -> CacheEntry | None:
        """The entry stored under ``key``, or None; an entry whose files do not match their recorded sha256
        (edited in place through a hard link, half deleted) is a miss."""
        d = self.root / key
        try:
            record = json.loads((d / ENTRY_FILE).read_text())
        except (OSError, ValueError):
            return None
        if record.get("cache_version") != CACHE_VERSION or record.get("key") != key:
            return None
        for name, info in record.get("files", {}).items():
            try:
                ok = sha256_file(d / name) == info["sha256"]
            except OSError:
                ok = False
            if not ok:
                log.warning("stage cache entry %s: %s does not match its record; recomputing", key[:12], name)
                return None
        return CacheEntry(key, d, record)

    def store(self, key: str, files: Mapping[str, Path], record: Mapping[str, Any]) -> Path | None:
        """Store ``files`` (name in the entry -> the file) and ``record`` under ``key``; returns the entry dir.

        Written into a temporary directory in ``root`` and renamed into place: when another process stored the
        same key first, its entry stays and this one is discarded (both are the same output)."""
        final = self.root / key
        if (final / ENTRY_FILE).is_file():
            return final
        tmp = self.root / f"{_TMP_PREFIX}{key[:16]}-{uuid.uuid4().hex[:12]}"
        try:
            tmp.mkdir()
            listed = {}
            for name, src in files.items():
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(Path(src), dst)
                listed[name] = {"sha256": sha256_file(dst), "size_bytes": dst.stat().st_size}
            entry = {**record, "cache_version": CACHE_VERSION, "key": key, "files": listed}
            (tmp / ENTRY_FILE).write_text(json_text(entry) + "\n")
            os.rename(tmp, final)  # atomic; fails when the key exists (another process won)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if (final / ENTRY_FILE).is_file():
                return final
            log.warning("stage cache: could not store %s (%s)", key[:12], e)
            return None
        return final

    def restore(self, entry: CacheEntry, workdir: Path) -> list[Path]:
        """Hard-link (or copy, across filesystems) the entry's files into ``workdir``; returns their paths."""
        out = []
        for name in entry.files:
            dst = workdir / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex[:8]}-{dst.name}")
            _link_or_copy(entry.dir / name, tmp)
            os.replace(tmp, dst)
            out.append(dst)
        return out


_MISSING = object()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(src, dst)
