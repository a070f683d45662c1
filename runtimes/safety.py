"""Safe loading of untrusted model files.

Two defences, both used by :func:`edgesdk.runtimes.load`:

* :func:`check_onnx_external_data` reads only the ONNX protobuf (no tensor data) and refuses
  external-data references that leave the model's folder (``..``, absolute paths, symlinks or hard
  links), and offsets/lengths that are negative, not integers, or past the end of the data file.
* :func:`probe` loads files in a child process first (``load(..., isolate=True)``; on by default in
  the CLI). Native parsers (onnxruntime, the LiteRT interpreter, OpenVINO) are known to crash or
  hang on crafted files; in a child that becomes an ArtifactError naming the file and the signal
  instead of the death of the calling process.

Example::

    check_onnx_external_data("model.onnx")            # raises ArtifactError on an escaping location
    [result] = probe(["upload.tflite"]); result.raise_for_error()
"""
from __future__ import annotations

import json
import math
import mmap
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable, Iterator

from edgesdk import errors
from edgesdk.errors import ArtifactError, EdgeSDKError

PROBE_TIMEOUT_S = 120.0

# -- ONNX external data -------------------------------------------------------------------------

_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
             17: 1, 18: 1, 19: 1, 20: 1}  # onnx.TensorProto.DataType -> bytes per element (fixed-size types)


def _may_have_external_data(path: Path) -> bool:
    """Cheap pre-check: an external tensor carries a ``location`` key in its proto."""
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return m.find(b"location") != -1


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto in a graph, its nodes' attributes and subgraphs."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):  # Constant(sparse_value=...): its values/indices may be external
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        for sp in attr.sparse_tensors:
            yield sp.values
            yield sp.indices
        if attr.HasField("g"):
            yield from _tensors(attr.g)
        for g in attr.graphs:
            yield from _tensors(g)


def _external_tensors(model: Any) -> Iterator[Any]:
    """Every tensor of a loaded ModelProto (graph, subgraphs, functions) whose data lives in another file."""
    import onnx

    tensors = [*_tensors(model.graph), *(t for fn in model.functions for node in fn.node for t in _node_tensors(node))]
    return (t for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL)


def external_data_files(path: str | Path) -> list[str]:
    """The files an ONNX model's external tensors live in, relative to its folder (sorted, unique)."""
    p = Path(path)
    if not _may_have_external_data(p):
        return []
    import onnx

    model = onnx.load(str(p), load_external_data=False)
    return sorted({e.value for t in _external_tensors(model) for e in t.external_data if e.key == "location"})


def check_onnx_external_data(path: str | Path) -> int:
    """Refuse external-data references that escape ``path``'s folder or point past their file.

    Returns the number of external tensors checked. Raises ArtifactError naming the tensor, the
    location and the reason.
    """
    p = Path(path)
    if not _may_have_external_data(p):
        return 0
    try:
        import onnx
    except ImportError:  # the runtime extra installs onnx; without it the backend's own checks apply
        return 0
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ArtifactError(f"{p} is not a readable ONNX model", found=f"{type(e).__name__}: {str(e)[:200]}",
                            hint="the file may be truncated or corrupt; re-export it") from e
    base = p.parent.resolve()
    checked = 0
    for t in _external_tensors(model):
        _check_external(p, base, t)
        checked += 1
    return checked


def _check_external(model: Path, base: Path, t: Any) -> None:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")

    def refuse(why: str, hint: str = "re-export the model with its weights beside it, or inline them") -> None:
        raise ArtifactError(f"{model.name}: tensor {t.name!r} has unsafe external data: {why}",
                            expected="a location relative to the model's folder, inside it, with valid offsets",
                            found=f"location={loc!r}, offset={info.get('offset')!r}, length={info.get('length')!r}",
                            hint=hint)

    if not loc:
        refuse("no location")
    if "\x00" in loc or PurePosixPath(loc).is_absolute() or PureWindowsPath(loc).is_absolute() \
            or PureWindowsPath(loc).drive:
        refuse("an absolute path")
    parts = PurePosixPath(loc.replace("\\", "/")).parts
    if ".." in parts:
        normal = os.path.normpath(loc.replace("\\", "/"))
        if normal == ".." or normal.startswith("../"):
            refuse("'..' leads out of the model's folder")
        refuse("'..' in the path (not allowed, even when it stays inside)")
    target = base / loc
    try:
        resolved = target.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):  # RuntimeError: a symlink loop
        refuse("the data file does not exist", hint="copy the .data file(s) next to the model")
    if not resolved.is_relative_to(base):
        refuse(f"it resolves outside the model's folder (to {resolved}) through a symlink")
    if not resolved.is_file():
        refuse("it is not a regular file")
    st = resolved.stat()
    if st.st_nlink > 1:
        refuse("the data file is a hard link (it may alias a file outside the folder)",
               hint="copy the data file instead of linking it")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        refuse("offset/length are not integers")
    if offset < 0 or (length is not None and length < 0):
        refuse("a negative offset or length")
    end = offset + (length if length is not None else 0)
    if offset > st.st_size or end > st.st_size:
        refuse(f"offset+length ({end}) is past the end of the {st.st_size}-byte data file")
    itemsize = _ITEMSIZE.get(t.data_type)
    if length is not None and itemsize is not None:
        want = math.prod(t.dims) * itemsize
        if want != length:
            refuse(f"length {length} does not match the tensor's shape {list(t.dims)} ({want} bytes)")


# -- child-process probing ----------------------------------------------------------------------

@dataclass
class ProbeResult:
    """What loading one file in a child process did."""

    path: str
    outcome: str  # ok | refused | crashed | hung
    error: dict[str, Any] | None = None  # the child's SDK error: class, what, expected, found, hint
    signal: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_error(self, backend: str = "auto") -> EdgeSDKError | None:
        """The SDK error this outcome means in the parent (None when the file loaded and ran)."""
        if self.outcome == "ok":
            return None
        if self.outcome == "refused" and self.error:
            cls = getattr(errors, str(self.error.get("class")), None)
            if not (isinstance(cls, type) and issubclass(cls, EdgeSDKError)):
                cls = ArtifactError
            return cls(self.error.get("what") or f"cannot load {self.path}", expected=self.error.get("expected"),
                       found=self.error.get("found"), hint=self.error.get("hint"))
        if self.outcome == "hung":
            return ArtifactError(f"loading {self.path} did not finish in the time allowed; refusing it",
                                 found="the parser hung in a child process (killed)",
                                 hint="the file is corrupt or crafted; re-export it or raise the timeout")
        name = signal.Signals(self.signal).name if self.signal and self.signal in signal.Signals._value2member_map_ \
            else str(self.signal)
        return ArtifactError(f"{self.path} crashed the {backend} parser in a child process ({name})",
                             expected="a valid model file", found=f"the child process died with {name}",
                             hint="the file is corrupt or crafted; it was not loaded into this process")

    def raise_for_error(self, backend: str = "auto") -> None:
        err = self.to_error(backend)
        if err is not None:
            raise err


def probe(paths: Iterable[str | Path], backend: str = "auto", timeout_s: float = PROBE_TIMEOUT_S,
          run: bool = True) -> list[ProbeResult]:
    """Load (and with ``run``, run once on zeros) each file in child processes; never in this one.

    One child handles many files in turn and reports each as a JSON line; when a file kills or
    hangs the child, that file is marked and a new child goes on with the next one.
    """
    order = [str(p) for p in paths]
    todo = list(order)
    results: dict[str, ProbeResult] = {}
    env = {**os.environ, "PYTHONFAULTHANDLER": ""}
    while todo:
        # -P: the current folder is not put on the child's sys.path, so a stray numpy.py or onnxruntime.py
        # there is never imported by the process that is meant to isolate untrusted files
        safe_path = ["-P"] if sys.version_info >= (3, 11) else []  # 3.10: the child drops it itself (_child)
        cmd = [sys.executable, *safe_path, "-m", "edgesdk.runtimes.probe_child", backend, "1" if run else "0"]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=env)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(todo).encode())  # JSON: paths with newlines or spaces arrive intact
            proc.stdin.close()
        except BrokenPipeError:  # the child died before reading; handled below like any early death
            pass
        current: str | None = None
        hung = False
        fd, pending = proc.stdout.fileno(), b""
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        while True:
            if not sel.select(timeout=timeout_s):
                hung = True  # nothing for timeout_s: the current file hangs the parser
                proc.kill()
                break
            chunk = os.read(fd, 1 << 16)  # our own buffer: every complete line is handled before waiting again
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if not line.startswith("\x1e"):  # not ours (a native library that wrote to our pipe)
                    continue
                msg = json.loads(line[1:])
                if msg["event"] == "start":
                    current = msg["path"]
                else:
                    results[msg["path"]] = ProbeResult(msg["path"], msg["outcome"], msg.get("error"),
                                                       detail=msg.get("detail") or {})
                    current = None
        sel.close()
        proc.stdout.close()
        rc = proc.wait()
        if current is not None:  # the child died (or hung) on this file
            results[current] = ProbeResult(current, "hung" if hung else "crashed",
                                           signal=-rc if rc < 0 else None, detail={"returncode": rc})
        left = [p for p in todo if p not in results]
        if left and len(left) == len(todo):  # the child died before it started on any file
            raise ArtifactError("the safe-mode child process could not start", found=f"exit code {rc}",
                                hint=f"run `{' '.join(cmd)}` by hand to see why, or load without isolation")
        todo = left
    return [results[p] for p in order]


def probe_in_child(path: str | Path, backend: str = "auto", timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise the SDK error loading ``path`` would give, found in a child process; return when it is safe."""
    probe([path], backend, timeout_s)[0].raise_for_error(backend)
