"""The Session template every backend follows (Polygraphy's runner shape).

The constructor is cheap; ``load()`` allocates; ``run(feeds)`` validates the
feeds and then calls the backend's ``_run_impl``; ``close()`` frees. Backends
override only the ``_impl`` methods and ``inputs``/``outputs``.

Example::

    with OrtSession("model.onnx", threads=2) as sess:
        out = sess.run({"x": np.zeros((1, 3, 224, 224), np.float32)})
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgesdk.errors import EdgeSDKError, FeedError, InferenceError


@dataclass(frozen=True)
class TensorSpec:
    """Name, numpy dtype name and shape of a model input or output; dynamic dims are strings."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    def describe(self) -> str:
        return f"{self.dtype}[{', '.join(map(str, self.shape))}]"


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


class _Check:
    """Precomputed per-input checks so the fast path costs a few attribute reads."""

    __slots__ = ("name", "dtype", "ndim", "fixed", "batch")

    def __init__(self, spec: TensorSpec) -> None:
        self.name = spec.name
        try:  # types numpy cannot name (bfloat16, float8, ...) are left to the backend to check
            self.dtype = np.dtype(spec.dtype) if spec.dtype != "bfloat16" else None
        except TypeError:
            self.dtype = None
        self.ndim = len(spec.shape)
        self.fixed = tuple((i, d) for i, d in enumerate(spec.shape) if isinstance(d, int) and d >= 0)
        self.batch = bool(spec.shape) and spec.shape[0] == "batch"  # the shared dynamic batch dimension


@dataclass(frozen=True)
class Option:
    """A backend option: its type(s), default and a one-line help."""

    types: type | tuple[type, ...]
    default: Any
    help: str


class Session:
    """Base class of every runtime backend. Thread-safe ``run``; context manager.

    A backend declares the options it takes in ``option_specs``; any other keyword is an InputError
    listing the valid ones (a misspelt ``cuda_grpah=True`` is never ignored)."""

    backend: str = "base"
    option_specs: dict[str, Option] = {}

    def __init__(self, path: str | Path | None = None, *, threads: int | None = None, device: str = "auto",
                 **options: Any) -> None:
        self.path = Path(path) if path is not None else None
        self.threads = threads
        self.device = device
        self.options = self._check_options(options)
        self.load_time_s: float | None = None
        self._loaded = False
        self._load_lock = threading.Lock()
        self._checks: tuple[_Check, ...] = ()
        self._names: frozenset[str] = frozenset()

    @classmethod
    def _check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        from edgesdk.errors import InputError

        specs = cls.option_specs
        valid = ", ".join(f"{k} ({v.help})" for k, v in specs.items()) or "none"
        unknown = sorted(set(options) - set(specs))
        if unknown:
            raise InputError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for the "
                             f"{cls.backend} backend", expected=f"options it takes: {valid}",
                             found=", ".join(f"{k}={options[k]!r}" for k in unknown), hint="check the spelling")
        for key, value in options.items():
            spec = specs[key]
            ok = value is None and spec.default is None or isinstance(value, spec.types)
            if not ok or (isinstance(value, bool) and bool not in _as_tuple(spec.types)):
                names = " or ".join(t.__name__ for t in _as_tuple(spec.types))
                raise InputError(f"option {key!r} of the {cls.backend} backend must be {names}",
                                 expected=f"{key}: {spec.help}", found=f"{value!r} ({type(value).__name__})")
        return {**{k: v.default for k, v in specs.items()}, **options}

    # -- backend hooks ---------------------------------------------------------------
    def _load_impl(self) -> None:
        raise NotImplementedError

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _close_impl(self) -> None:
        pass

    # A backend whose specs are TensorSpec lists sets ``_in``/``_out`` in ``_load_impl``; these properties
    # (and ``close``, which clears them) serve it. Others override ``inputs``/``outputs``.
    _in: list[TensorSpec] | None = None
    _out: list[TensorSpec] | None = None

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs (loads the session on first use)."""
        if self._in is None:
            self.load()
        return list(self._in or [])

    @property
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs (loads the session on first use)."""
        if self._out is None:
            self.load()
        return list(self._out or [])

    # -- template --------------------------------------------------------------------
    def load(self) -> "Session":
        """Allocate the backend session (idempotent, thread-safe)."""
        if self._loaded:
            return self
        with self._load_lock:
            if not self._loaded:
                t0 = time.perf_counter()
                self._load_impl()
                self.load_time_s = time.perf_counter() - t0
                self._checks = tuple(_Check(s) for s in self.inputs)
                self._names = frozenset(c.name for c in self._checks)
                self._batched = tuple(c.name for c in self._checks if c.batch)
                self._loaded = True
        return self

    def run(self, feeds: Mapping[str, Any], *, check_finite: bool = False) -> dict[str, np.ndarray]:
        """Validate ``feeds`` (name -> array) and run; returns name -> array."""
        if not self._loaded:
            self.load()
        if not isinstance(feeds, dict):
            feeds = dict(feeds) if isinstance(feeds, Mapping) else self._not_a_mapping(feeds)
        ok = len(feeds) == len(self._checks)
        if ok:
            for c in self._checks:
                a = feeds.get(c.name)
                if (a.__class__ is not np.ndarray or a.dtype != c.dtype or a.ndim != c.ndim
                        or not a.flags.c_contiguous):
                    ok = False
                    break
                for i, d in c.fixed:
                    if a.shape[i] != d:
                        ok = False
                        break
                if not ok:
                    break
            if ok and len(self._batched) > 1 and len({feeds[n].shape[0] for n in self._batched}) > 1:
                ok = False  # inputs that disagree on the batch size: explained by _validate
        if not ok:
            feeds = self._validate(feeds)
        if check_finite:
            self._check_finite(feeds)
        try:
            return self._run_impl(feeds)
        except EdgeSDKError:
            raise
        except Exception as e:  # a native backend's own exception type: name the run, keep the message
            raise self._inference_error(feeds, e) from e

    __call__ = run

    def generate(self, input_ids: Any, **options: Any) -> np.ndarray:
        """Token ids generated after ``input_ids`` by a causal LM with a KV cache (docs/llm.md); the options and
        the result are those of ``edgesdk.runtimes.generation.generate``."""
        from .generation import generate

        return generate(self, input_ids, **options)

    def synchronize(self) -> None:
        """Wait for queued device work (GPU backends override); called by the benchmark loop."""

    def close(self) -> None:
        """Free the backend session; the object can be loaded again."""
        if self._loaded:
            self._close_impl()
            self._in = self._out = None
            self._loaded = False
        generation = sys.modules.get("edgesdk.runtimes.generation")  # loaded only by sessions that generated
        if generation is not None:
            generation.release(self)

    def __enter__(self) -> "Session":
        return self.load()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path) if self.path else ''!r}, backend={self.backend!r})"

    def _inference_error(self, feeds: Mapping[str, Any], e: Exception) -> InferenceError:
        first = " ".join(str(e).split())[:400] or type(e).__name__
        got = ", ".join(f"{k}: {getattr(v, 'dtype', '?')}{list(getattr(v, 'shape', ()))}" for k, v in feeds.items())
        return InferenceError(f"{self._who()}: the backend failed to run these feeds",
                              expected=self._expected(), found=f"{got} -> {type(e).__name__}: {first}",
                              hint="the feeds match the model's signature but the backend rejected them (an empty "
                                   "batch, or a size the model cannot take?); the session is still usable")

    # -- slow path: explain everything that is wrong in one error -------------------
    def _not_a_mapping(self, feeds: Any) -> dict[str, Any]:
        raise FeedError(f"{self._who()}: feeds must be a dict of input name -> numpy array",
                        expected=self._expected(), found=type(feeds).__name__,
                        hint="call run({'name': array, ...})")

    def _who(self) -> str:
        return f"{self.backend} session for {self.path.name if self.path else 'model'}"

    def _expected(self) -> str:
        return ", ".join(f"{s.name}: {s.describe()}" for s in self.inputs)

    def _validate(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        problems: list[str] = []
        names = set(feeds)
        for missing in sorted(self._names - names):
            problems.append(f"{missing}: missing")
        for extra in sorted(names - self._names):
            problems.append(f"{extra}: not an input of this model")
        clean: dict[str, np.ndarray] = {}
        by_name = {s.name: s for s in self.inputs}
        for c in self._checks:
            if c.name not in feeds:
                continue
            a = feeds[c.name]
            spec = by_name[c.name]
            if not isinstance(a, np.ndarray):
                problems.append(f"{c.name}: got a {type(a).__name__}, expected a numpy array {spec.describe()} "
                                "(wrap it with np.asarray(..., dtype=...))")
                continue
            if c.dtype is not None and a.dtype != c.dtype:
                problems.append(f"{c.name}: dtype {a.dtype}, expected {c.dtype} (use .astype(np.{c.dtype}))")
            if a.ndim != c.ndim:
                problems.append(f"{c.name}: rank {a.ndim} {tuple(a.shape)}, expected rank {c.ndim} {spec.describe()}")
            else:
                bad = [f"dim {i} is {a.shape[i]}, expected {d}" for i, d in c.fixed if a.shape[i] != d]
                if bad:
                    problems.append(f"{c.name}: shape {tuple(a.shape)}: {'; '.join(bad)}")
            clean[c.name] = a if a.flags.c_contiguous else np.ascontiguousarray(a)
        sizes = {n: clean[n].shape[0] for n in getattr(self, "_batched", ()) if n in clean and clean[n].ndim}
        if len(set(sizes.values())) > 1:
            problems.append("inputs disagree on the batch size: " + ", ".join(f"{n} {b}" for n, b in sizes.items()))
        if problems:
            raise FeedError(f"{self._who()}: the feeds do not match the model inputs",
                            expected=self._expected(),
                            found="\n            ".join(problems),
                            hint="fix the listed inputs; `edgesdk inspect MODEL` shows what the model takes")
        return clean

    def _check_finite(self, feeds: dict[str, np.ndarray]) -> None:
        bad = [f"{k}: {int((~np.isfinite(v)).sum())} NaN/Inf values" for k, v in feeds.items()
               if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]
        if bad:
            raise FeedError(f"{self._who()}: non-finite values in the feeds (check_finite=True)",
                            found="; ".join(bad), hint="clean the inputs or call run without check_finite")
