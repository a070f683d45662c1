"""The search on a real two-node Ray cluster on 127.0.0.1 (tests/ray_cluster.py): 8 trials of the digits
model run as Ray tasks across the cluster; a trial's worker is killed mid-trial, then the search driver
itself; ``--resume`` finishes the search without re-running a finished trial. Then the latency of a
search is taken on the ``device:`` node."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.ray_cluster import ray_cluster  # noqa: F401

EDGESDK = [sys.executable, "-m", "edgesdk.cli"]
DEADLINE_S = 600.0


def _wait_for(what: str, check, proc: subprocess.Popen | None = None):
    """Poll ``check()`` until it returns something true; fail if the search process ended first."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the search ended (rc {proc.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what}")


def _marks(out: Path) -> list[Path]:
    root = out / "attempts"
    return sorted(p for p in root.glob("*/*") if p.suffix != ".done") if root.is_dir() else []


def _attempts(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in _marks(out):
        counts[p.parent.name] = counts.get(p.parent.name, 0) + 1
    return counts


def _state(out: Path) -> dict:
    try:
        return json.loads((out / "search.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet (it is replaced whole, never torn)
        return {}


def _kill_a_running_trial(out: Path, proc: subprocess.Popen) -> tuple[str, int]:
    """Freeze the worker of a trial attempt; if that attempt has not ended (it cannot while frozen), kill it.
    Returns (trial id, pid killed)."""
    seen: set[Path] = set()
    while True:
        mark = _wait_for("a trial attempt to start", lambda: next((m for m in _marks(out) if m not in seen), None),
                         proc)
        seen.add(mark)
        pid = int(mark.read_text())
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            continue
        if not mark.with_name(mark.name + ".done").exists():
            os.kill(pid, signal.SIGKILL)
            return mark.parent.name, pid
        os.kill(pid, signal.SIGCONT)


def test_search_on_two_nodes_survives_a_lost_worker_and_a_killed_driver(ray_cluster, search_flags, tmp_path):  # noqa: F811
    out = tmp_path / "search"
    flags = search_flags(out, "0,0.3,0.5,0.7", "fp32,int8", "onnxruntime", "--engine", "ray",
                         "--ray-address", ray_cluster.address, "--max-accuracy-drop", "2")
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen([*EDGESDK, *flags], stdout=log, stderr=subprocess.STDOUT)
    try:
        killed_trial, killed_pid = _kill_a_running_trial(out, proc)
        finished = _wait_for("three trials to finish", lambda: [t for t, r in _state(out).get("trials", {}).items()
                                                                 if r.get("status") in ("done", "failed")]
                             if len(_state(out).get("trials", {})) >= 3 else None, proc)
    finally:
        proc.kill()
        proc.wait()
    before = _attempts(out)
    state = _state(out)
    assert len(state["plan"]) == 8 and not state["complete"]

    res = subprocess.run([*EDGESDK, *flags, "--resume"], capture_output=True, text=True, timeout=DEADLINE_S)
    assert res.returncode == 0, res.stdout + res.stderr
    st = json.loads((out / "search.json").read_text())
    assert st["complete"] and st["engine"]["engine"] == "ray" and st["engine"]["nodes"] == 2
    done = [t for t, r in st["trials"].items() if r["status"] == "done"]
    # a pruned model too far from the original (prune 0.7 after 20 recovery steps) is a failed trial with its
    # reason, kept in the table; nothing else may fail
    assert all(t in done or r.get("kind") == "budget" for t, r in st["trials"].items()), st["trials"]
    assert len(done) >= 6
    after = _attempts(out)
    for tid in finished:  # a trial that finished before the driver died was not run again
        if st["trials"][tid]["status"] in ("done", "failed") and tid in state["trials"]:
            assert after[tid] == before[tid], tid
    rec = st["trials"][killed_trial]
    assert rec["pid"] != killed_pid and rec["attempt"] >= 2 and after[killed_trial] >= 2
    assert sorted({c["trial"] for c in st["candidates"]}) == sorted(done) and st["front"]
    assert all(c["feasible"] for c in st["candidates"] if c["on_front"])
    for tid in st["trials"]:
        assert (out / "trials" / tid / "manifest.json").is_file()


def test_latency_taken_on_the_device_node(ray_cluster, search_flags, tmp_path):  # noqa: F811
    out = tmp_path / "on-device"
    res = subprocess.run([*EDGESDK, *search_flags(out, "0", "fp32", "onnxruntime", "--engine", "ray",
                                                  "--ray-address", ray_cluster.address, "--measure-on",
                                                  ray_cluster.device)],
                         capture_output=True, text=True, timeout=DEADLINE_S)
    assert res.returncode == 0, res.stdout + res.stderr
    st = json.loads((out / "search.json").read_text())
    (m,) = st["measurements"].values()
    assert m["device"]["fleet_resource"] == ray_cluster.device
    assert [c["device"] for c in st["candidates"]] == [ray_cluster.device]
    res = subprocess.run([*EDGESDK, *search_flags(tmp_path / "nope", "0", "fp32", "onnxruntime",
                                                  "--ray-address", ray_cluster.address, "--measure-on",
                                                  "device:nope")], capture_output=True, text=True, timeout=DEADLINE_S)
    assert res.returncode == 2 and ray_cluster.device in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "nope").exists()
