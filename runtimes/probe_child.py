"""The child side of safe-mode loading (edgesdk.runtimes.safety.probe): loads and runs each file it is sent
and reports one JSON line per event, so a file that crashes or hangs a native parser takes only this process
down. Run as ``python -P -m edgesdk.runtimes.probe_child BACKEND RUN``.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

from edgesdk.errors import EdgeSDKError

_MAX_PROBE_FEED_BYTES = 256 << 20


def _feed_bytes(inputs: Any) -> float:
    """Bytes of batch-1 feeds for these specs, without allocating them (inf when a dim is unknown)."""
    import numpy as np

    total = 0.0
    for spec in inputs:
        dims = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(spec.shape)]
        if not all(isinstance(d, int) and d >= 0 for d in dims):
            return math.inf
        try:
            itemsize = np.dtype("float32" if spec.dtype == "bfloat16" else spec.dtype).itemsize
        except TypeError:
            return math.inf
        total += math.prod(dims) * itemsize
    return total


def _child(backend: str, run: bool) -> None:
    """The child side: one JSON line per event on stdout."""
    import numpy as np

    from .bench import make_feeds
    from .registry import load

    # native libraries print to fd 1; keep a private copy of it for the protocol and send fd 1 to stderr
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def emit(**msg: Any) -> None:
        proto.write("\x1e" + json.dumps(msg) + "\n")
        proto.flush()

    for path in json.loads(sys.stdin.read() or "[]"):
        emit(event="start", path=path)
        detail: dict[str, Any] = {}
        try:
            with load(path, backend=backend, isolate=False) as sess:
                detail["backend"] = sess.backend
                if run and _feed_bytes(sess.inputs) <= _MAX_PROBE_FEED_BYTES:
                    try:
                        feeds = make_feeds(sess.inputs, batch=1)
                    except EdgeSDKError:
                        feeds = None  # dynamic dims besides the batch: loading is the check
                    if feeds is not None:
                        out = sess.run(feeds)
                        detail["ran"] = True
                        detail["finite"] = bool(all(np.isfinite(v).all() for v in out.values()
                                                    if v.dtype.kind == "f"))
            emit(event="done", path=path, outcome="ok", detail=detail)
        except EdgeSDKError as e:
            emit(event="done", path=path, outcome="refused",
                 error={"class": type(e).__name__, "what": e.what, "expected": e.expected, "found": e.found,
                        "hint": e.hint})
        except Exception as e:  # noqa: BLE001 - reported to the parent, which decides
            emit(event="done", path=path, outcome="refused",
                 error={"class": "ArtifactError", "what": f"cannot load {path}", "unwrapped": type(e).__name__,
                        "found": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}",
                        "hint": "the file may be corrupt; re-export it"})


if __name__ == "__main__":
    if sys.version_info < (3, 11) and sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path.pop(0)  # as -P does on 3.11+: numpy, onnx and the backends are imported after this
    _child(sys.argv[1] if len(sys.argv) > 1 else "auto", (sys.argv[2] if len(sys.argv) > 2 else "1") == "1")
