"""Device fingerprint: what a benchmark ran on. Fast, torch-free, never raises.

Example::

    fp = device_fingerprint()
    fp["cpu_model"], fp["isa"], fp["gpu"], fp["jetson"]
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
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
                             capture_output=True, text=True, errors="replace", timeout=3)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:  # "couldn't communicate with the driver" is not a GPU name
        return None
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    return "; ".join(lines) or None


# L4T release -> JetPack release (NVIDIA's JetPack archive); TensorRT/CUDA versions follow JetPack.
_JETPACK = {"36.4.4": "6.2.1", "36.4.3": "6.2", "36.4.0": "6.1", "36.3.0": "6.0", "36.2.0": "6.0 DP",
            "35.6.0": "5.1.4", "35.5.0": "5.1.3", "35.4.1": "5.1.2", "35.3.1": "5.1.1", "35.2.1": "5.1",
            "35.1.0": "5.0.2", "32.7.6": "4.6.6", "32.7.5": "4.6.5", "32.7.4": "4.6.4", "32.7.3": "4.6.3",
            "32.7.2": "4.6.2", "32.7.1": "4.6.1", "32.6.1": "4.6"}


def parse_jetson(model: str | None, release: str | None) -> dict[str, Any] | None:
    """Board model, L4T and JetPack release from /proc/device-tree/model and /etc/nv_tegra_release.

    Example::

        parse_jetson("NVIDIA Jetson Orin Nano Developer Kit\x00", "# R36 (release), REVISION: 4.3, GCID: ...")
        # {"model": "NVIDIA Jetson Orin Nano Developer Kit", "l4t": "36.4.3", "jetpack": "6.2"}
    """
    if not model:
        return None
    model = model.replace("\x00", "").strip()
    if "jetson" not in model.lower() and "nvidia" not in model.lower():
        return None
    l4t = None
    if release:
        # "# R36 (release), REVISION: 4.3, GCID: ..." -> "36.4.3"; anything else is not a release we can name
        m = re.search(r"R(\d+)\b.*?REVISION:\s*(\d+(?:\.\d+)*)", release.splitlines()[0] if release.strip() else "")
        l4t = f"{m.group(1)}.{m.group(2)}" if m else None
    jetpack = None
    if l4t:
        parts = (l4t.split(".") + ["0", "0"])[:3]
        jetpack = _JETPACK.get(".".join(parts))
    return {"model": model, "l4t": l4t, "jetpack": jetpack}


def _jetson() -> dict[str, Any] | None:
    return parse_jetson(_read("/proc/device-tree/model"), _read("/etc/nv_tegra_release"))


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


def machine_key() -> str:
    """What a backend recommendation holds for: the CPU model, architecture and core count (no GPU query:
    cheap enough for every ``load``)."""
    return f"{_cpu()[0]} | {platform.machine()} | {os.cpu_count()} cores"


def bf16_supported(isa: list[str] | None = None) -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX-BF16): without it OpenVINO runs a bf16
    hint in f32, so a bf16 artifact would be slower than asked and no faster than FP32."""
    flags = set(_cpu()[1] if isa is None else isa)
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def int8_saturates(isa: list[str] | None = None) -> bool:
    """Whether this is an x86 CPU whose 8-bit integer dot products saturate: AVX2 without VNNI (no
    avx512_vnni, avx_vnni or amx_int8). Its u8 x s8 multiply-add (VPMADDUBSW) adds pairs into int16, which
    overflows with full-range 8-bit weights, so onnxruntime's fused INT8 kernels lose accuracy there
    (measured: cosine 0.989 instead of 0.9998 on the digits CNN, and 0.57 with int8 activations) unless
    the weights use 7 bits (``reduce_range``). Example::

        if int8_saturates(): quantize with reduce_range=True
    """
    flags = set(_cpu()[1] if isa is None else isa)
    return "avx2" in flags and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}
