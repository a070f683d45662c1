"""The artifact directory's manifest: what compress writes last (edgesdk.writer), vouching for every file
before it; how the device reads it back (``read_manifest``) and checks every file it names
(``verify_entry``: paths stay inside the directory, sha256 of each file and ONNX weights file).

The manifest lists each artifact with its sha256, the recipe, the model's inputs (with their dynamic axes
and the sizes the gate checked), how the inputs were bound to ``forward()``, the task metric and the
targets not delivered.

Example::

    file = verify_entry(out, read_manifest(out)["artifacts"][0])
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import sha256_file
from .errors import ArtifactError

SCHEMA_VERSION = 1


def input_specs(arrays: dict[str, np.ndarray], axes: dict[str, dict[int, str]]) -> list[dict[str, Any]]:
    """Each input's name, dtype and shape, symbolic where the axis is dynamic (``batch``, ``H``...)."""
    return [{"name": k, "dtype": str(v.dtype),
             "shape": [axes.get(k, {}).get(i, d) if i else ("batch" if 0 in axes.get(k, {}) else d)
                       for i, d in enumerate(v.shape)]}
            for k, v in arrays.items()]


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of an artifact directory, checked to be one (an object with an ``artifacts`` list)."""
    path = Path(path)
    manifest = path / "manifest.json"
    if not manifest.is_file():
        raise ArtifactError(f"{path} is a directory without manifest.json",
                            expected="an artifact file or a directory written by `edgesdk compress`",
                            hint="pass the model file itself, or the -o directory of compress")
    try:
        data = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{manifest} is not valid JSON", found=str(e)) from e
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise ArtifactError(f"{manifest} is not an edgesdk manifest", expected="an object with an 'artifacts' list")
    return data


def inside(root: Path, rel: Any, manifest: Path) -> Path:
    """``root / rel`` when it stays inside ``root`` (no absolute paths, no ``..``, no symlink out)."""
    if not isinstance(rel, str) or not rel:
        raise ArtifactError(f"{manifest} lists an artifact without a file path", found=repr(rel),
                            hint="the manifest is damaged; copy the directory again or re-run `edgesdk compress`")
    file = root / rel
    if Path(rel).is_absolute() or not file.resolve().is_relative_to(root.resolve()):
        raise ArtifactError(f"{manifest} points outside its directory: {rel!r}; refusing to open it",
                            expected="paths relative to the artifact directory",
                            hint="artifact directories are self-contained; this manifest was edited or crafted")
    return file


def verify_entry(root: Path, entry: dict[str, Any]) -> Path:
    """The artifact file of a manifest entry, after checking that it (and any ONNX external-data file it
    lists) lies inside the directory and still has the recorded sha256."""
    manifest = root / "manifest.json"
    if not isinstance(entry, dict):
        raise ArtifactError(f"{manifest} has an artifact entry that is not an object", found=repr(entry)[:100])
    file = inside(root, entry.get("path"), manifest)
    listed = entry.get("external_data") or []
    if entry.get("format") == "onnx" and file.is_file():
        from edgesdk.runtimes.safety import external_data_files

        covered = {str(Path(x.get("path", ""))) for x in listed if isinstance(x, dict)}
        for rel in external_data_files(file):
            if str((file.parent / rel).relative_to(root)) not in covered:
                raise ArtifactError(f"{file} keeps weights in {rel}, which {manifest} does not list with a sha256; "
                                    "refusing to run unverified weights",
                                    hint="re-run `edgesdk compress` (it records every weights file)")
    if entry.get("format") == "openvino" and file.with_suffix(".bin").is_file():
        covered = {str(Path(x.get("path", ""))) for x in listed if isinstance(x, dict)}
        if str(file.with_suffix(".bin").relative_to(root)) not in covered:
            raise ArtifactError(f"{file}'s weights ({file.with_suffix('.bin').name}) are not listed in {manifest} "
                                "with a sha256; refusing to run unverified weights",
                                hint="re-run `edgesdk compress` (it records every weights file)")
    for side in [{"path": entry.get("path"), "sha256": entry.get("sha256")}, *listed]:
        if not isinstance(side, dict):
            raise ArtifactError(f"{manifest} has a malformed external_data entry", found=repr(side)[:100])
        f = inside(root, side.get("path"), manifest)
        if not f.is_file():
            raise ArtifactError(f"{f} is listed in {manifest} but missing",
                                hint="copy the whole artifact directory, or re-run `edgesdk compress`")
        want = side.get("sha256")
        if not want:
            raise ArtifactError(f"{manifest} records no sha256 for {side.get('path')}; refusing to run an unverified "
                                "file", hint="re-run `edgesdk compress`, which records one for every file")
        got = sha256_file(f)
        if got != want:
            raise ArtifactError(f"{f} changed since the manifest was written; refusing to run it",
                                expected=f"sha256 {want}", found=f"sha256 {got} ({f.stat().st_size} bytes)",
                                hint="copy the directory again (a partial copy or a Git LFS pointer?) or re-run "
                                     "compress")
    return file
