"""The Ray connection of a device fleet: connect, list the ``device:NAME`` resources, ship directories.

A device joins the cluster with a custom resource naming it (``ray start --address HEAD:6379 --resources
'{"device:orin-01": 1}'``); a task that asks for that resource runs on that node only. Ray is an optional
dependency (``pip install 'edgesdk[search]'``), so every ``import ray`` is inside a function.

Example::

    info = connect("10.0.0.5:6379")
    require_devices(["device:orin-01"])
    blob = pack_dir("out/")            # bytes, shipped to the device
    unpack_dir(blob, "/tmp/out")       # on the device
"""
from __future__ import annotations

import io
import logging
import os
import socket
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import InputError

RAY_EXTRA = "pip install 'edgesdk[search]'"
DEVICE_PREFIX = "device:"
# ray.init() retries an unreachable GCS for minutes; a TCP probe first answers in seconds.
PROBE_TIMEOUT_S = 5.0
_LOOPBACK = {"localhost", "127.0.0.1", "::1", ""}


def _ray() -> Any:
    """The ray module, or an InputError naming the extra that installs it."""
    try:
        import ray
    except ImportError as e:
        raise InputError("Ray is not installed here", expected="the ray package (the fleet runs on a Ray cluster)",
                         found=f"import ray failed: {e}", hint=RAY_EXTRA) from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (also ``[v6]:PORT``) split; anything else is an InputError."""
    text = address.split("://", 1)[-1]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"bad Ray address {address!r}", expected="HOST:PORT of the Ray head, e.g. 10.0.0.5:6379",
                         found=address, hint="`ray start --head` prints the address to use")
    return host.strip("[]"), int(port)


def _probe(address: str) -> None:
    """Fail in seconds when nothing listens at ``address`` (ray.init would retry for minutes)."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host or "127.0.0.1", port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as e:
        raise InputError(f"cannot reach the Ray cluster at {address}",
                         expected="a running Ray head listening at that HOST:PORT (its GCS port, 6379 by default)",
                         found=f"{type(e).__name__}: {e.strerror or e}",
                         hint="start it with `ray start --head --port 6379`, check the host, port and firewall, "
                              "or leave the address out to use RAY_ADDRESS / a local instance") from None


def _same_cluster(address: str, current: str) -> bool:
    """Whether ``address`` names the cluster this process is connected to (Ray reports 127.0.0.1 as the
    machine's own IP, so a loopback host matches on the port alone)."""
    (h1, p1), (h2, p2) = _host_port(address), _host_port(current)
    return p1 == p2 and (h1 == h2 or h1 in _LOOPBACK)


def _info(ray: Any) -> dict[str, Any]:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"address": ray.get_runtime_context().gcs_address, "nodes": len(nodes),
            "resources": dict(ray.cluster_resources())}


def connect(address: str | None = None) -> dict[str, Any]:
    """Connect this process to a Ray cluster (once; later calls return the same connection).

    ``address``: ``HOST:PORT`` of the head; ``"auto"``: the cluster ``ray start --head`` started on this
    machine; None uses ``RAY_ADDRESS`` or, without it, starts a local instance; ``"local"`` always starts a
    local one. Returns ``{address, nodes, resources}``.

    Example::

        connect("10.0.0.5:6379")["nodes"]   # 3
    """
    ray = _ray()
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    remote = address not in ("local", "auto")
    if remote:
        _probe(address)
    if ray.is_initialized():
        current = _info(ray)
        if remote and not _same_cluster(address, current["address"]):
            raise InputError(f"this process is already connected to the Ray cluster at {current['address']}",
                             expected=f"the cluster at {address}", found=current["address"],
                             hint="call ray.shutdown() first, or use one address")
        return current
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                 **({"include_dashboard": False} if address == "local" else {}))  # a cluster's own are not ours
    except Exception as e:  # ConnectionError, version mismatch (RuntimeError), ...: one message, no traceback
        raise InputError(f"cannot connect to the Ray cluster at {address}", expected="a Ray head (its GCS port) "
                         "of the same Ray and Python version as this machine",
                         found=f"{type(e).__name__}: {str(e)[:400]}",
                         hint="check the port with `ray status` on the head, and that `ray --version` and the "
                              "Python version match here") from None
    return _info(ray)


def device_name(text: str) -> str:
    """``orin-01`` or ``device:orin-01`` as the resource name ``device:orin-01``."""
    name = text.strip()
    name = name if name.startswith(DEVICE_PREFIX) else DEVICE_PREFIX + name
    if name == DEVICE_PREFIX or any(c.isspace() for c in name):
        raise InputError(f"bad device name {text!r}", expected="device:NAME, e.g. device:orin-01", found=repr(text))
    return name


def device_resources() -> dict[str, float]:
    """The ``device:NAME`` resources of the live nodes of the connected cluster, with their amounts.

    Example::

        device_resources()   # {'device:orin-01': 1.0, 'device:pi5-02': 1.0}
    """
    ray = _ray()
    if not ray.is_initialized():
        connect()
    found: dict[str, float] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            for key, amount in (node.get("Resources") or {}).items():
                if key.startswith(DEVICE_PREFIX):
                    found[key] = found.get(key, 0.0) + float(amount)
    return dict(sorted(found.items()))


def device_nodes() -> dict[str, str]:
    """``device:NAME`` -> the Ray node id of the live node that holds it."""
    ray = _ray()
    return {key: node["NodeID"] for node in ray.nodes() if node.get("Alive")
            for key in (node.get("Resources") or {}) if key.startswith(DEVICE_PREFIX)}


def require_devices(names: list[str]) -> list[str]:
    """The resource names of ``names`` (``device:`` added when missing); an InputError when no live node has one
    of them, listing those that exist.

    Example::

        require_devices(["orin-01"])   # ['device:orin-01']
    """
    wanted = list(dict.fromkeys(device_name(n) for n in names))
    if not wanted:
        raise InputError("no devices to run on", expected="one or more device:NAME resources, e.g. device:orin-01")
    have = device_resources()
    missing = [n for n in wanted if n not in have]
    if missing:
        raise InputError(f"no node of the Ray cluster has {', '.join(missing)}",
                         expected="device resources that device nodes joined with",
                         found="devices in the cluster: " + (", ".join(have) or "none"),
                         hint="on the device: ray start --address HEAD:PORT --resources '{\"device:NAME\": 1}'")
    return wanted


def _members(root: Path) -> list[tuple[Path, str]]:
    """(file, name in the archive) for every regular file under ``root``; a link may point inside only."""
    base = root.resolve()
    out = []
    for p in sorted(root.rglob("*")):
        real = p.resolve()
        if p.is_symlink() and not real.is_relative_to(base):
            raise InputError(f"{p} links outside the artifact directory", expected="files inside the directory",
                             found=f"a link to {real}", hint="copy the file into the directory instead of linking it")
        if real.is_file():
            out.append((real, p.relative_to(root).as_posix()))
    return out


def pack_dir(path: str | Path) -> bytes:
    """A gzip tar of the regular files under ``path`` (relative names; links inside are stored as files).

    Example::

        blob = pack_dir("out/")
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"not a directory: {root}", expected="an artifact directory written by compress",
                         hint="pass the -o directory of `edgesdk compress`")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:  # level 1: fast; ONNX barely shrinks
        for file, name in _members(root):
            tar.add(file, arcname=name, recursive=False)
    return buf.getvalue()


def _safe_name(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and not name.startswith(("/", "\\")) and ".." not in parts and ":" not in parts[0]


def unpack_dir(data: bytes, dest: str | Path) -> Path:
    """Extract a :func:`pack_dir` archive into ``dest``; refuses absolute names, ``..``, links and devices.

    Example::

        unpack_dir(blob, "/tmp/out")   # Path('/tmp/out')
    """
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = tar.getmembers()
            bad = [m.name for m in members if not (m.isfile() or m.isdir()) or not _safe_name(m.name)]
            if bad:
                raise InputError("refusing to unpack an archive with unsafe entries",
                                 expected="regular files and folders with relative names",
                                 found=", ".join(bad[:5]), hint="pack the directory with edgesdk.cluster.pack_dir")
            tar.extractall(out, members=members, filter="data")  # the stdlib's own check on top of ours
    except tarfile.TarError as e:
        raise InputError("not a packed artifact directory", expected="a tar archive from pack_dir",
                         found=f"{type(e).__name__}: {e}") from None
    return out
