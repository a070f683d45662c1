"""Crash-safe writes.

Files are written to a temporary name in the same directory and moved into
place with ``os.replace``. A whole output set is built in a sibling staging
directory and swapped in at the end, so an interrupted run leaves either
nothing new or the previous complete set.

Example::

    with staged_output_dir("out") as stage:
        write_bytes(stage / "model.onnx", data)
        write_json(stage / "manifest.json", manifest)   # manifest last
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError, OutputWriteError

log = logging.getLogger(__name__)

_STAGE_PREFIX = ".edgesdk-stage-"
_OLD_PREFIX = ".edgesdk-old-"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return write_bytes(path, text.encode("utf-8"))


def _finite(obj: Any) -> Any:
    """``obj`` with NaN/Infinity floats replaced by None (they are not JSON; strict parsers reject them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def json_text(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text: numpy values converted, NaN/Infinity written as null, keys in insertion order."""
    def default(o: Any) -> Any:
        try:
            return _json_default(o)
        except TypeError:
            return str(o)

    return json.dumps(_finite(json.loads(json.dumps(obj, default=default))), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic JSON write (strict JSON, see json_text)."""
    return write_text(path, json_text(obj) + "\n")


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def clean_stale(parent: Path, name: str) -> list[Path]:
    """Remove staging/old directories left by an interrupted run; restore a lost output dir.

    If a run died between moving the previous set aside and moving the new one in,
    the previous set is put back.
    """
    removed: list[Path] = []
    target = parent / name
    olds = sorted(parent.glob(f"{_OLD_PREFIX}{name}-*"))
    if not target.exists() and olds:
        os.replace(olds[-1], target)
        log.warning("restored the previous output set %s after an interrupted run", target)
        olds = olds[:-1]
    for stale in [*parent.glob(f"{_STAGE_PREFIX}{name}-*"), *olds]:
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    if removed:
        log.info("removed %d stale temporary director%s next to %s", len(removed),
                 "y" if len(removed) == 1 else "ies", target)
    return removed


@contextlib.contextmanager
def staged_output_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging directory; on success it replaces ``out_dir`` as a whole.

    On an exception the staging directory is removed and ``out_dir`` is untouched.
    """
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a directory",
                         expected="a directory (new or from an earlier run)",
                         found="a file", hint="choose another -o/--out path or remove the file")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise InputError(f"output directory {out} is not empty and holds no edgesdk manifest",
                         expected="a new directory, or one written by an earlier edgesdk run",
                         found=f"{sum(1 for _ in out.iterdir())} other entries",
                         hint="choose another -o/--out path; edgesdk replaces its output dir as a whole")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the output directory {parent}", found=str(e),
                         hint="check the path and permissions") from e
    clean_stale(parent, out.name)
    stage = parent / f"{_STAGE_PREFIX}{out.name}-{uuid.uuid4().hex[:8]}"
    try:
        stage.mkdir()
    except OSError as e:
        raise _write_error(e, out) from e
    try:
        yield stage
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
            raise _write_error(e, out) from e
        raise
    try:
        _swap_in(stage, out)
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        clean_stale(out.parent, out.name)  # puts the previous set back if it had been moved aside
        raise _write_error(e, out) from e


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}


def _write_error(e: OSError, out: Path) -> OutputWriteError:
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the filesystem is read-only", errno.EIO: "the disk reported an I/O error"}.get(
        e.errno, "permission denied")
    return OutputWriteError(f"cannot write the output directory {out}: {what}",
                            found=f"{e.strerror or e} ({e.filename or out})",
                            hint="free some space or fix the permissions, or choose another -o/--out; "
                                 "nothing was written: the directory holds what it held before (if anything)")


def _swap_in(stage: Path, out: Path) -> None:
    if not out.exists():
        os.replace(stage, out)
        return
    old = out.parent / f"{_OLD_PREFIX}{out.name}-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)
