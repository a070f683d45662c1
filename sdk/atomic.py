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
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError, OutputWriteError

log = logging.getLogger(__name__)

_STAGE_PREFIX = ".edgesdk-stage-"
_OLD_PREFIX = ".edgesdk-old-"
_OWNER_FILE = ".edgesdk-owner"  # "PID HOST" of the run writing a staging dir; removed before the swap
_STALE_AFTER_S = 3600.0  # a staging dir whose owner cannot be checked is stale after this long unchanged


# Files are created with this mode and the kernel applies the umask at creation, as for open(): 0644 under
# the usual 022. Nothing is chmod-ed afterwards (a chmod fails on filesystems such as vfat).
_CREATE_MODE = 0o666
_DEFAULT_NAME_MAX, _DEFAULT_PATH_MAX = 255, 4096


def _limits(path: Path) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) in bytes of the filesystem holding ``path`` (asked of its nearest existing folder)."""
    probe = Path(os.path.abspath(path))
    while True:
        try:
            return os.pathconf(probe, "PC_NAME_MAX"), os.pathconf(probe, "PC_PATH_MAX")
        except (OSError, ValueError, AttributeError):  # missing, too long, or no pathconf (Windows)
            if probe.parent == probe:
                return _DEFAULT_NAME_MAX, _DEFAULT_PATH_MAX
            probe = probe.parent


def path_too_long(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot exist on its filesystem (a name over NAME_MAX bytes, or the whole over PATH_MAX), or None.

    Example::

        path_too_long("out/" + "a" * 300)   # 'the name aaaa... is 300 bytes; this filesystem allows 255'
    """
    full = Path(os.path.abspath(path))
    name_max, path_max = _limits(full)
    for part in full.parts[1:]:
        size = len(os.fsencode(part))
        if size > name_max:
            return f"the name {part[:24]}... is {size} bytes; this filesystem allows {name_max}"
    size = len(os.fsencode(str(full)))
    if size >= path_max:  # PATH_MAX counts the terminating NUL
        return f"the whole path is {size} bytes; this filesystem allows {path_max - 1}"
    return None


def check_output_path(path: str | os.PathLike) -> None:
    """Raise OutputWriteError (exit 5) before anything is written when ``path`` is too long for its filesystem.

    Example::

        check_output_path("out/model.onnx")      # fine: returns None
        check_output_path("a" * 300)             # OutputWriteError: ... too long
    """
    why = path_too_long(path)
    if why is not None:
        name_max, path_max = _limits(Path(os.path.abspath(path)))
        raise OutputWriteError(f"cannot write {path}: the path is too long for the filesystem",
                               expected=f"each name in the path at most {name_max} bytes and the whole path "
                                        f"under {path_max} bytes", found=why,
                               hint="choose a shorter -o/--out path; nothing was written")


def _fit(name: str, room: int) -> str:
    """``name`` when it fits in ``room`` bytes, else its head cut to fit plus ``~`` and 8 hex of its sha256.

    Deterministic, so a later run finds the leftovers of an earlier one under the same shortened name.
    """
    raw = os.fsencode(name)
    if len(raw) <= room:
        return name
    tag = "~" + hashlib.sha256(raw).hexdigest()[:8]
    head = name
    while head and len(os.fsencode(head)) > room - len(tag):
        head = head[:-1]  # whole characters, so a multi-byte UTF-8 name is never cut mid-character
    return head + tag


def _sibling_stem(parent: Path, prefix: str, name: str) -> str:
    """``prefix + name``, shortened so that ``stem-XXXXXXXX.PID`` fits the filesystem's NAME_MAX."""
    room = _limits(parent)[0] - len(os.fsencode(prefix)) - 9 - 8  # "-" and 8 hex, "." and a PID of up to 7 digits
    return prefix + _fit(name, room)


def temp_file_beside(path: str | os.PathLike) -> tuple[int, str]:
    """Create a new, empty temporary file in ``path``'s folder, mode 0666 & ~umask (the umask now, as open()
    applies it; tempfile.mkstemp would give 0600), its name shortened when ``path``'s is long. Returns an fd
    open for writing and the temporary name, to ``os.replace`` onto ``path`` when complete.

    Example::

        fd, tmp = temp_file_beside(out / "model.onnx")
        os.close(fd); onnx.save_model(proto, tmp); os.replace(tmp, out / "model.onnx")
    """
    path = Path(path)
    prefix = "." + _fit(path.name, _limits(path.parent)[0] - 15) + "."  # "." + 8 random + ".tmp" + slack
    for _ in range(100):
        tmp = str(path.parent / f"{prefix}{uuid.uuid4().hex[:8]}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), _CREATE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, replace), mode 0666 & ~umask.

    A path too long for its filesystem is an OutputWriteError before anything is created.
    """
    path = Path(path)
    check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
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


def _leftovers(parent: Path, prefix: str, name: str) -> list[Path]:
    """Directories in ``parent`` named exactly ``{prefix}{name}-{8 hex}[.PID]`` (not those of an output ``name-2``);
    ``prefix + name`` is shortened as ``_sibling_stem`` does when the name would not fit."""
    pattern = re.compile(re.escape(_sibling_stem(parent, prefix, name)) + r"-[0-9a-f]{8}(\.[0-9]+)?")
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    return [Path(e.path) for e in entries
            if pattern.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _owner(stage: Path) -> tuple[int, str]:
    """(PID, host) of the run writing ``stage``: from its owner file; without one, from the PID its name ends
    with (the file is missing only just after the mkdir and just before the swap, on the run's own host);
    (0, "") when neither tells."""
    try:
        pid_text, host = (stage / _OWNER_FILE).read_text().split()
        return int(pid_text), host
    except FileNotFoundError:
        named = re.search(r"-[0-9a-f]{8}\.([0-9]+)$", stage.name)
        return (int(named.group(1)), socket.gethostname()) if named else (0, "")
    except (OSError, ValueError):
        return 0, ""


def _stage_in_use(stage: Path) -> bool:
    """Whether a staging dir may belong to a live run: its owner PID (same host) is alive, or, when the
    owner cannot be checked (a foreign or unreadable owner file, a dir of an older edgesdk without the PID in
    its name), it changed within ``_STALE_AFTER_S``."""
    pid, host = _owner(stage)
    if pid > 0 and host == socket.gethostname():
        return _pid_alive(pid)
    try:
        return time.time() - stage.stat().st_mtime < _STALE_AFTER_S
    except OSError:
        return False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def clean_stale(parent: Path, name: str) -> list[Path]:
    """Remove staging/old directories left by an interrupted run; restore a lost output dir.

    If a run died between moving the previous set aside and moving the new one in,
    the previous set is put back. Staging directories of live runs are left alone.
    """
    removed: list[Path] = []
    target = parent / name
    olds = sorted(_leftovers(parent, _OLD_PREFIX, name), key=lambda p: (_mtime(p), p.name))
    if not os.path.lexists(target) and olds:
        os.replace(olds[-1], target)
        log.warning("restored the previous output set %s after an interrupted run", target)
        olds = olds[:-1]
    stages = [st for st in _leftovers(parent, _STAGE_PREFIX, name) if not _stage_in_use(st)]
    for stale in [*stages, *olds]:
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
    A symlinked ``out_dir`` is followed: the set is staged beside and swapped into its target. A path too
    long for the filesystem is an OutputWriteError before anything is created.
    """
    check_output_path(out_dir)
    try:
        out = Path(out_dir).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        raise InputError(f"cannot resolve the output path {out_dir}", found=str(e),
                         hint="fix or remove the symlink, or choose another -o/--out path") from e
    check_output_path(out)  # a symlink may lead somewhere longer
    if out != Path(os.path.abspath(out_dir)):
        log.info("the output path %s leads through a symlink; writing to %s", out_dir, out)
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
    # the PID in the name judges the dir while it has no owner file (just created, or just before the swap)
    stage = parent / f"{_sibling_stem(parent, _STAGE_PREFIX, out.name)}-{uuid.uuid4().hex[:8]}.{os.getpid()}"
    try:
        stage.mkdir()
        (stage / _OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        raise _write_error(e, out) from e
    try:
        yield stage
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS and _about(e, stage):
            raise _write_error(e, out) from e
        raise
    try:
        # Not part of the set. Until the swap the PID in the dir's name tells clean_stale whose it is.
        (stage / _OWNER_FILE).unlink(missing_ok=True)
        _swap_in(stage, out)
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        clean_stale(out.parent, out.name)  # puts the previous set back if it had been moved aside
        raise _write_error(e, out) from e


# Errnos that, raised while the set is written, mean the output location cannot take it.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO,
                 errno.ENAMETOOLONG}

_WRITE_REASONS = {
    errno.ENOSPC: ("the disk is full", "free some space"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space"),
    errno.EFBIG: ("a file is too large for the filesystem", "use another filesystem"),
    errno.EROFS: ("the filesystem is read-only", "use a writable filesystem"),
    errno.EIO: ("the disk reported an I/O error", "check the disk"),
    errno.EACCES: ("permission denied", "fix the permissions"),
    errno.EPERM: ("permission denied", "fix the permissions"),
    errno.ENAMETOOLONG: ("a name in the path is too long for the filesystem", "use a shorter path"),
    errno.ENOENT: ("the parent folder does not exist or is not a folder", "check the path"),
    errno.ENOTDIR: ("the parent folder does not exist or is not a folder", "check the path"),
}


def _about(e: OSError, stage: Path) -> bool:
    """Whether ``e`` is about the staging dir (an error naming no file counts: a failed write names none)."""
    if e.filename is None:
        return True
    try:
        return Path(os.fsdecode(e.filename)).absolute().is_relative_to(stage)
    except (TypeError, ValueError):
        return False


def _write_error(e: OSError, out: Path) -> OutputWriteError:
    what, fix = _WRITE_REASONS.get(e.errno or 0, (e.strerror or str(e), "check the path"))
    return OutputWriteError(f"cannot write the output directory {out}: {what}",
                            found=f"{e.strerror or e} ({e.filename or out})",
                            hint=f"{fix}, or choose another -o/--out; "
                                 "nothing was written: the directory holds what it held before (if anything)")


def _swap_in(stage: Path, out: Path) -> None:
    if not out.exists():
        os.replace(stage, out)
        return
    old = out.parent / f"{_sibling_stem(out.parent, _OLD_PREFIX, out.name)}-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)
