"""Recognise artifact files by their bytes, and say plainly what a wrong file looks like.

Example::

    detect_format("model.onnx")   # -> "onnx", or ArtifactError: "... looks like an HTML page ..."
"""
from __future__ import annotations

from pathlib import Path

from edgesdk.errors import ArtifactError

ENGINE_SUFFIXES = {".engine", ".plan", ".trt"}


def read_head(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def describe_bytes(head: bytes) -> str:
    """A short human description of what a file's first bytes look like."""
    if not head:
        return "an empty file"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer (a small text stub), not the model itself"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page (probably a download or login page saved instead of the model)"
    if text.startswith(b"<?xml"):
        return "an XML file"
    if text[:1] in (b"{", b"["):
        return "a JSON/text file"
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "a TFLite (LiteRT) flatbuffer"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a PyTorch checkpoint or .npz?)"
    if head.startswith(b"\x80") and len(head) > 1 and head[1] in range(2, 6):
        return "a Python pickle"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        pass
    return "binary data of an unknown format"


def _lfs_hint(desc: str) -> str | None:
    if "Git LFS" in desc:
        return "run `git lfs pull` (or download the real file) and try again"
    if "HTML" in desc:
        return "download the model file itself (check the URL / authentication)"
    return None


_ONNX_TAGS = {0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x52, 0x72}  # ModelProto fields after ir_version


def _looks_like_onnx(head: bytes) -> bool:
    """ModelProto starts with ir_version (tag 0x08, a small varint), then another known field tag."""
    return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 20 and head[2] in _ONNX_TAGS


def detect_format(path: str | Path) -> str:
    """Return "onnx", "tflite", "engine" or "openvino"; raise ArtifactError saying what the file is otherwise."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"artifact not found: {p}", hint="check the path")
    if p.is_dir():
        raise ArtifactError(f"{p} is a directory", expected="a model file (.onnx, .tflite, .engine)",
                            hint="pass the file, or an artifact directory with manifest.json to `load`")
    head = read_head(p)
    suffix = p.suffix.lower()
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if suffix in ENGINE_SUFFIXES and head:
        return "engine"
    if suffix == ".xml" and head.lstrip().startswith(b"<?xml"):
        return "openvino"
    desc = describe_bytes(head)
    if _looks_like_onnx(head):
        return "onnx"
    raise ArtifactError(f"{p} is not a model file edgesdk can run: it looks like {desc}",
                        expected="an ONNX (.onnx), TFLite (.tflite) or TensorRT (.engine) file",
                        found=f"{desc} ({p.stat().st_size} bytes)", hint=_lfs_hint(desc))
