"""Input layouts: feed artifacts whose inputs were exported channels-last from channels-first data.

A TFLite artifact made with ``--tflite-nhwc`` takes its image inputs as N,H,W,C (what apps on phones
hold); the reference and evaluation data stored with the artifacts are N,C,H,W like the PyTorch
model's. Inside the SDK (the parity gate, accuracy, the on-device re-check) such a session is
wrapped so that it takes the reference layout; apps call the artifact in its own layout.

Example::

    sess = adapt_layout(load("model.tflite"), {"x": "channels_last"})
    sess.run({"x": nchw_batch})   # transposed to N,H,W,C before the interpreter sees it
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgesdk.errors import InputError

LAYOUTS = ("channels_last",)


def to_channels_last(a: np.ndarray) -> np.ndarray:
    """N,C,... -> N,...,C (contiguous)."""
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


class LayoutAdapter:
    """A session whose named inputs are transposed before each run; everything else is the session's."""

    def __init__(self, session: Any, layouts: Mapping[str, str]) -> None:
        unknown = sorted(set(layouts.values()) - set(LAYOUTS))
        if unknown:
            raise InputError(f"unknown input layout {unknown[0]!r}", expected=", ".join(LAYOUTS), found=unknown[0],
                             hint="the manifest was written by a newer edgesdk; upgrade edgesdk on this machine")
        self._session = session
        self.layouts = dict(layouts)

    def run(self, feeds: Mapping[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
        moved = {k: (to_channels_last(np.asarray(v)) if self.layouts.get(k) == "channels_last"
                     and np.ndim(v) >= 3 else v) for k, v in feeds.items()}
        return self._session.run(moved, **kwargs)

    __call__ = run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def adapt_layout(session: Any, layouts: Mapping[str, str] | None) -> Any:
    """``session`` itself when no input changed layout, else a LayoutAdapter over it."""
    return LayoutAdapter(session, layouts) if layouts else session
