"""Backend registry: one record per backend, the single source for loading, ``doctor``, CLI choices, recipe
validation and install hints. Entries are "module:Class" strings, imported on first use.

Adding a backend means one file and one ``register_backend(BackendRecord(...))`` line here (or in your own
package: the record is all edgesdk needs).

Example::

    sess = load("out/")                      # an artifact dir: the first artifact a backend here can run
    sess = load("model.onnx", backend="onnxruntime", threads=2)
    [b.name for b in backends_for("onnx")]   # ['onnxruntime', 'openvino']
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesdk.errors import ArtifactError, BackendUnavailableError, EdgeSDKError

from .base import Session
from .formats import detect_format


@dataclass(frozen=True)
class BackendRecord:
    """Everything edgesdk knows about a backend without importing it."""

    name: str
    entry: str  # "module:Class" of its Session
    package: str  # the import name that must be findable for it to be installed
    formats: tuple[str, ...]  # file formats it runs (artifact formats: onnx, tflite, engine, openvino)
    install: str  # the command that installs it
    detail: str | None = None  # "module:function" returning a line for `doctor` (providers, devices, GPU)
    verifies: bool = True  # compress may verify and time artifacts on it (torch is the reference, not a target)
    in_auto: bool = True  # compress --backends auto tries it on every artifact of its formats (else: by name only)

    def installed(self) -> bool:
        """The package can be found here (cheap: nothing is imported)."""
        return importlib.util.find_spec(self.package) is not None


BACKENDS: dict[str, BackendRecord] = {}


def register_backend(record: BackendRecord) -> BackendRecord:
    """Add (or replace) a backend. For each format, backends registered earlier are preferred."""
    BACKENDS[record.name] = record
    return record


for _r in (
    BackendRecord("onnxruntime", "edgesdk.runtimes.onnxruntime:OrtSession", "onnxruntime", ("onnx",),
                  "pip install 'edgesdk[onnx]'", "edgesdk.runtimes.onnxruntime:doctor_detail"),
    BackendRecord("torch", "edgesdk.runtimes.torch:TorchSession", "torch", (), "pip install 'edgesdk[compress]'",
                  verifies=False),
    BackendRecord("openvino", "edgesdk.runtimes.openvino:OpenVINOSession", "openvino", ("onnx", "openvino"),
                  "pip install 'edgesdk[openvino]'", "edgesdk.runtimes.openvino:doctor_detail"),
    BackendRecord("litert", "edgesdk.runtimes.litert:LiteRTSession", "ai_edge_litert", ("tflite",),
                  "pip install 'edgesdk[tflite]'"),
    BackendRecord("tensorrt", "edgesdk.runtimes.tensorrt:TensorRTSession", "tensorrt", ("engine",),
                  "pip install 'edgesdk[tensorrt]' --extra-index-url https://pypi.nvidia.com",
                  "edgesdk.runtimes.tensorrt:doctor_detail"),
):
    register_backend(_r)


def record(name: str) -> BackendRecord:
    """The record of a backend name; an unknown name is an error listing the known ones."""
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}", expected=", ".join(BACKENDS), found=name)
    return BACKENDS[name]


def backend_names(*, verifying: bool = False) -> tuple[str, ...]:
    """Every registered backend name (``verifying``: only those compress can verify artifacts on)."""
    return tuple(n for n, r in BACKENDS.items() if r.verifies or not verifying)


def auto_backends(fmt: Any) -> list[str]:
    """What ``--backends auto`` verifies and times an artifact of ``fmt`` on: every installed backend for the
    format that compress verifies on and that takes part in auto, in order of preference."""
    return [n for n in format_backends(fmt) if BACKENDS[n].verifies and BACKENDS[n].in_auto and backend_installed(n)]


def format_backends(fmt: Any) -> list[str]:
    """The backends that run files of ``fmt``, in order of preference (registration order)."""
    return [n for n, r in BACKENDS.items() if fmt in r.formats]


def install_hint(name: str) -> str:
    return record(name).install


def backend_installed(backend: str) -> bool:
    """True when the Python package a backend needs can be imported here (cheap: no import)."""
    return record(backend).installed()


def backend_class(name: str) -> type[Session]:
    """Import and return the Session class for a backend name."""
    rec = record(name)
    if not rec.installed():
        raise BackendUnavailableError(f"the {name} backend is not installed", found=f"no module {rec.package}",
                                      hint=rec.install)
    module, _, cls = rec.entry.partition(":")
    return getattr(importlib.import_module(module), cls)


def unrunnable_reason(fmt: Any, backend: str = "auto") -> str | None:
    """Why no backend here can run files of format ``fmt`` (None when one can): ``backend`` names one, or
    "auto" takes any installed backend for the format."""
    candidates = format_backends(fmt)
    if backend != "auto":
        return None if backend in candidates else f"the {backend} backend cannot run {fmt} files"
    if not candidates:
        return f"no runtime backend for {fmt} files"
    if not any(backend_installed(b) for b in candidates):
        return f"not installed here: {install_hint(candidates[0])}"
    return None


def preferred_backend(entry: dict[str, Any]) -> str | None:
    """The backend compress recommended for a manifest entry (the fastest that passed parity), when that
    recommendation was measured on this machine and the backend is installed; else None (the format's
    default applies). A recommendation made on a workstation says nothing about a phone or a Jetson."""
    from .fingerprint import machine_key

    best = entry.get("recommended_backend")
    choice = (entry.get("meta") or {}).get("backend_choice") or {}
    if not isinstance(best, str) or best not in format_backends(entry.get("format")):
        return None
    if choice.get("machine") != machine_key() or not backend_installed(best):
        return None
    return best


def as_made(entry: dict[str, Any], backend: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(backend, session options) for running a manifest entry as compress made it: "auto" becomes the
    recommended backend when it holds here (``preferred_backend``), and the entry's ``session_options`` (an
    OpenVINO bf16 precision, say) come first, under the caller's own options."""
    if backend == "auto":
        backend = preferred_backend(entry) or "auto"
    made = entry.get("session_options")
    return backend, {**(made if isinstance(made, dict) else {}), **options}


def _from_dir(path: Path, artifact: str | None, backend: str = "auto") -> tuple[Path, dict[str, Any]]:
    """The artifact of a directory to load and its manifest entry: the named one, else the first a backend
    here can run; its files verified against the manifest (edgesdk.manifest)."""
    from edgesdk.manifest import read_manifest, verify_entry

    entries = [e for e in read_manifest(path)["artifacts"] if isinstance(e, dict)]
    names = [e.get("name") for e in entries]
    for e in entries:
        if artifact is not None and e.get("name") != artifact:
            continue
        if artifact is not None or unrunnable_reason(e.get("format"), backend) is None:
            return verify_entry(path, e), e
    on = "" if backend == "auto" else f" for the {backend} backend"
    raise ArtifactError(f"no runnable artifact in {path}{on}" + (f" named {artifact!r}" if artifact else ""),
                        found=f"artifacts: {', '.join(map(str, names)) or 'none'}",
                        hint="pass artifact=NAME, or install the backend for these formats (`edgesdk doctor`)")


def load(path: str | Path, backend: str = "auto", threads: int | None = None, device: str = "auto",
         *, artifact: str | None = None, isolate: bool = False, **options: Any) -> Session:
    """Open ``path`` (a model file or an artifact directory) with a backend and return the loaded Session.

    ONNX external-data references are checked first (they must stay inside the model's folder).
    ``isolate=True`` loads and runs the file once in a child process before loading it here, so a
    crafted file that crashes or hangs a native parser raises ArtifactError instead (the CLI does
    this by default for files it is given).
    """
    from .safety import check_onnx_external_data, probe_in_child

    p = Path(path)
    if p.is_dir():
        p, entry = _from_dir(p, artifact, backend)
        backend, options = as_made(entry, backend, options)
    fmt = detect_format(p)
    if backend == "auto":
        candidates = format_backends(fmt)
        usable = [b for b in candidates if backend_installed(b)]
        if not usable:
            if candidates:
                raise BackendUnavailableError(f"no backend installed for {fmt} files like {p.name}",
                                              hint=install_hint(candidates[0]))
            raise BackendUnavailableError(f"no backend can run {fmt} files like {p.name}",
                                          hint="see `edgesdk doctor`")
        backend = usable[0]
    cls = backend_class(backend)
    if backend not in format_backends(fmt):
        if backend != "torch":
            raise ArtifactError(f"{p} is a {fmt} file; the {backend} backend cannot run it",
                                expected=f"a file for {backend}",
                                hint="use backend='auto' to pick the right backend")
    if fmt == "onnx":
        check_onnx_external_data(p)
    if isolate:
        probe_in_child(p, backend)
    sess = cls(p, threads=threads, device=device, **options)
    try:
        return sess.load()
    except EdgeSDKError:
        raise
    except Exception as e:  # a native loader's own exception type
        raise ArtifactError(f"the {backend} backend cannot load {p}", expected="a valid model file",
                            found=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}",
                            hint="the file may be truncated or corrupt; re-export it") from e


def backend_status() -> list[dict[str, Any]]:
    """One dict per backend: name, available, version, detail (providers...), install command."""
    out = []
    for name, rec in BACKENDS.items():
        row: dict[str, Any] = {"name": name, "available": False, "version": None, "detail": None,
                               "install": rec.install, "formats": list(rec.formats)}
        if rec.installed():
            try:
                row["version"] = importlib.metadata.version(rec.package.replace("_", "-"))
            except importlib.metadata.PackageNotFoundError:
                row["version"] = None
            row["available"] = True
            try:
                if rec.detail:
                    module, _, fn = rec.detail.partition(":")
                    row["detail"] = getattr(importlib.import_module(module), fn)()
            except (ImportError, OSError, RuntimeError, EdgeSDKError) as e:
                what = e.what if isinstance(e, EdgeSDKError) else f"import failed: {e}"
                row["available"], row["detail"] = False, what
        out.append(row)
    return out
