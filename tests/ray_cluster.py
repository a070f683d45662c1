"""A real two-node Ray cluster on this machine, for tests of the device fleet.

Fixture ``ray_cluster`` (session-scoped) yields ``RayCluster(address, device)``:

- ``address``: ``"127.0.0.1:PORT"``, the head's GCS address (pass it to ``ray.init``, ``edgesdk.cluster.connect``
  or ``--ray-address``); this process's driver is already connected to it.
- ``device``: ``"device:test-01"``, the custom resource of the second node (a task that asks for
  ``resources={device: 1}`` runs there only).

The head (``--num-cpus 2``) and the device node (``--num-cpus 1``) are two ``ray start --block`` processes with
their own short ``--temp-dir`` (/tmp/rt-XXXX: Ray's socket paths have a length limit) and a free GCS port. Teardown
ends those two processes only (SIGTERM makes ``ray start --block`` stop the processes it started, a process
group kill follows if not), never ``ray stop``, which would stop every Ray process on the machine.

Token auth: Ray 2.60 turns it on by itself when ~/.ray/auth_token exists (any local ``ray.init()`` writes
one), so the cluster runs with its own random token, and while the fixture is active this process's
``os.environ`` has ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN``: subprocesses that inherit the environment
(``edgesdk ... --ray-address``) connect; one given a custom ``env=`` must copy those two variables.

Use it from another test file with (ruff sees the test parameter as a redefinition: F811)::

    from tests.ray_cluster import ray_cluster  # noqa: F401

    def test_x(ray_cluster):  # noqa: F811
        ...
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

DEVICE = "device:test-01"
START_DEADLINE_S = 120.0
STOP_WAIT_S = 30.0


@dataclass(frozen=True)
class RayCluster:
    """What ``ray_cluster`` yields: the head's address and the device node's resource name."""

    address: str
    device: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _ray_cli() -> list[str]:
    exe = Path(sys.executable).with_name("ray")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "ray.scripts.scripts"]


def _auth_env(token: str) -> dict[str, str]:
    """Token auth with this cluster's own token: Ray 2.60 turns token auth on by itself when ~/.ray/auth_token
    exists (any local ray.init() writes one), so every process of the test says which token it uses."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def _start(args: list[str], log: Path, token: str) -> subprocess.Popen:
    """``ray start --block ARGS`` in its own process group, its output in ``log``."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **_auth_env(token)}
    env.pop("RAY_ADDRESS", None)
    with open(log, "wb") as out:
        return subprocess.Popen([*_ray_cli(), "start", "--block", "--disable-usage-stats", *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def _wait_started(proc: subprocess.Popen, log: Path, deadline: float) -> None:
    """Until ``ray start`` says its node runs (it then blocks); fails with its output when it exits first."""
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start did not start (exit {proc.poll()}):\n{log.read_text(errors='replace')}")
        time.sleep(0.2)


def _wait_nodes(ray, count: int, deadline: float) -> None:  # noqa: ANN001
    while True:
        alive = [n for n in ray.nodes() if n.get("Alive")]
        if len(alive) >= count and any(DEVICE in (n.get("Resources") or {}) for n in alive):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray cluster has {len(alive)} live nodes, expected {count}: {alive}")
        time.sleep(0.2)


def _use_auth(env: dict[str, str | None]) -> dict[str, str | None]:
    """Set (None: unset) these variables in this process and make Ray re-read them; returns the old values."""
    old = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token auth: nothing cached to refresh
        return old
    Config.initialize("")  # what ray.init does itself after changing RAY_AUTH_MODE: the config is cached
    AuthenticationTokenLoader.instance().reset_cache()
    return old


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each ``ray start --block`` (it stops the processes it started); SIGKILL its group if it hangs."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # anything of this node still in its group (workers, agents)
        except ProcessLookupError:
            pass
        p.wait()


@contextmanager
def local_cluster() -> Iterator[RayCluster]:
    """A head and a ``device:test-01`` node on 127.0.0.1; the driver of this process connected to it
    (benchmarks/search.py uses it too)."""
    import ray

    temp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    token = secrets.token_hex(32)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + START_DEADLINE_S
    procs: list[subprocess.Popen] = []
    old_env: dict[str, str | None] | None = None
    small = ["--object-store-memory", str(100 * 1024 * 1024), "--temp-dir", str(temp), "--node-ip-address",
             "127.0.0.1"]
    try:
        procs.append(_start(["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard=false", *small],
                            temp / "head.log", token))
        _wait_started(procs[0], temp / "head.log", deadline)
        procs.append(_start(["--address", address, "--num-cpus", "1", "--resources", f'{{"{DEVICE}": 1}}', *small],
                            temp / "device.log", token))
        _wait_started(procs[1], temp / "device.log", deadline)
        if ray.is_initialized():
            ray.shutdown()
        old_env = _use_auth(_auth_env(token))
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        _wait_nodes(ray, 2, deadline)
        yield RayCluster(address=address, device=DEVICE)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if old_env is not None:
            _use_auth(old_env)
        _stop(procs)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """The two-node cluster of :func:`local_cluster` for the whole test session."""
    pytest.importorskip("ray")
    with local_cluster() as cluster:
        yield cluster
