"""Device fingerprint: what a benchmark ran on. Fast, torch-free, never raises.

Example::

    fp = device_fingerprint()
    fp["cpu_model"], fp["isa"], fp["gpu"], fp["jetson"]
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

_ISA = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
        "neon", "asimd", "asimddp", "sve", "i8mm")
_PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "tensorrt", "ai-edge-litert", "openvino")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _cpu() -> tuple[str | None, list[str]]:
    text = _read("/proc/cpuinfo") or ""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    isa = [f for f in _ISA if f in flags]
    if "asimddp" in isa:
        isa.append("dotprod")
    return model or platform.processor() or None, isa


def _gpu() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=3)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    return "; ".join(lines) or None


def _jetson() -> dict[str, Any] | None:
    model = _read("/proc/device-tree/model")
    if not model:
        return None
    model = model.replace("\x00", "").strip()
    if "jetson" not in model.lower() and "nvidia" not in model.lower():
        return None
    release = _read("/etc/nv_tegra_release")
    l4t = None
    if release:
        # "# R36 (release), REVISION: 3.0, GCID: ..." -> "36.3.0"
        first = release.splitlines()[0]
        try:
            major = first.split("R", 1)[1].split()[0]
            rev = first.split("REVISION:", 1)[1].split(",")[0].strip()
            l4t = f"{major}.{rev}"
        except IndexError:
            l4t = first.strip()
    return {"model": model, "l4t": l4t}


def _versions() -> dict[str, str]:
    out = {}
    for pkg in _PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def device_fingerprint() -> dict[str, Any]:
    """CPU model, cores, ISA flags that matter, GPU, Jetson board, OS, Python and package versions."""
    model, isa = _cpu()
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "isa": isa,
        "machine": platform.machine(),
        "gpu": _gpu(),
        "jetson": _jetson(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": _versions(),
    }
