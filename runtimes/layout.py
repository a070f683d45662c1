"""Feed artifacts from the reference data compress stored, whatever layout or integer width they took.

A TFLite artifact made with ``--tflite-nhwc`` takes its image inputs as N,H,W,C (what apps on phones
hold); TFLite also stores token ids as int32 where PyTorch used int64; an exporter may drop an input
the model never reads. The reference and evaluation data stored with the artifacts are in the
PyTorch model's terms. Inside the SDK (the parity gate, accuracy, the on-device re-check) a session
is wrapped so that it takes that data; apps call the artifact in its own terms.

Example::

    sess = adapt_layout(load("model.tflite"), {"x": "channels_last"})
    sess.run({"x": nchw_batch})   # transposed to N,H,W,C before the interpreter sees it
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgesdk.errors import FeedError, InputError

LAYOUTS = ("channels_last",)


def to_channels_last(a: np.ndarray) -> np.ndarray:
    """N,C,... -> N,...,C (contiguous)."""
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


class LayoutAdapter:
    """A session whose feeds are put in its own terms before each run; everything else is the session's."""

    def __init__(self, session: Any, layouts: Mapping[str, str] | None = None, drop_unknown: bool = False,
                 rebatch: bool = False) -> None:
        layouts = dict(layouts or {})
        unknown = sorted(set(layouts.values()) - set(LAYOUTS))
        if unknown:
            raise InputError(f"unknown input layout {unknown[0]!r}", expected=", ".join(LAYOUTS), found=unknown[0],
                             hint="the manifest was written by a newer edgesdk; upgrade edgesdk on this machine")
        self._session = session
        self.layouts = layouts
        self.drop_unknown = drop_unknown
        self._specs = {s.name: s for s in session.inputs}  # read once, not on every run
        batches = {s.shape[0] for s in self._specs.values() if s.shape and isinstance(s.shape[0], int)}
        # a fixed-batch artifact (a TFLite litert-torch could not keep dynamic) takes batches of exactly its size
        self.fixed_batch = batches.pop() if rebatch and len(batches) == 1 and min(batches) > 0 else None

    def run(self, feeds: Mapping[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
        specs = self._specs
        moved = {}
        for k, v in feeds.items():
            if k not in specs and self.drop_unknown:
                continue  # an input the exporter dropped because the model never reads it
            if self.layouts.get(k) == "channels_last" and np.ndim(v) >= 3:
                v = to_channels_last(np.asarray(v))
            spec = specs.get(k)
            if spec is not None and isinstance(v, np.ndarray) and v.dtype != spec.dtype:
                v = _narrow(k, v, spec.dtype)
            moved[k] = v
        n = len(next(iter(moved.values()))) if moved else 0
        if self.fixed_batch is not None and n and n != self.fixed_batch:
            return _in_chunks(self._session, moved, self.fixed_batch, **kwargs)
        return self._session.run(moved, **kwargs)

    __call__ = run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _in_chunks(session: Any, feeds: dict[str, Any], size: int, **kwargs: Any) -> dict[str, np.ndarray]:
    """Run ``feeds`` through a fixed-batch session ``size`` samples at a time (the last chunk padded with
    its last sample) and join the outputs along their batch axis: axis 0 when it has the chunk's size,
    else the first axis that has it (time-major outputs such as CTC's (T, N, C)); an output with no such
    axis is passed through from the first chunk."""
    n = len(next(iter(feeds.values())))
    parts: dict[str, list[np.ndarray]] = {}
    axes: dict[str, int] = {}
    for start in range(0, n, size):
        chunk = {k: np.asarray(v)[start:start + size] for k, v in feeds.items()}
        real = len(next(iter(chunk.values())))
        if real < size:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], size - real, axis=0)]) for k, v in chunk.items()}
        for name, out in session.run(chunk, **kwargs).items():
            axis = axes.setdefault(name, 0 if out.ndim and out.shape[0] == size else
                                   next((i for i, d in enumerate(out.shape) if d == size), -1))
            parts.setdefault(name, []).append(np.take(out, range(real), axis=axis) if axis >= 0 else out)
    # an output with no axis of the batch's size (anchors, a constant table) is the same for every chunk
    return {name: np.concatenate(p, axis=axes[name]) if axes[name] >= 0 else p[0] for name, p in parts.items()}


def _narrow(name: str, v: np.ndarray, dtype: str) -> np.ndarray:
    """int64 ids into an int32 input (TFLite has no int64 ids); anything else is left for validation."""
    try:
        target = np.dtype(dtype)
    except TypeError:
        return v
    if v.dtype.kind in "iu" and target.kind in "iu":
        info = np.iinfo(target)
        if v.size and (v.min() < info.min or v.max() > info.max):
            raise FeedError(f"input {name!r}: values do not fit the artifact's {target}",
                            found=f"{v.min()}..{v.max()}", expected=f"{info.min}..{info.max}")
        return v.astype(target)
    return v


def adapt_layout(session: Any, layouts: Mapping[str, str] | None, *, drop_unknown: bool = False,
                 rebatch: bool = False) -> Any:
    """A LayoutAdapter over ``session``: channels-last transposes for ``layouts``, integer ids narrowed to
    the artifact's width, (``drop_unknown``) feeds for inputs the artifact does not have dropped, and
    (``rebatch``) any batch size fed to a fixed-batch artifact in chunks of its size."""
    return LayoutAdapter(session, layouts, drop_unknown, rebatch)
