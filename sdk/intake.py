"""Model intake: factories, weights, input specs and data files.

Example::

    model = load_factory("examples/digits/model.py:build")()
    load_weights(model, "weights.safetensors")
    specs = [parse_input_spec("x:1x1x8x8")]
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError, ModelLoadError

log = logging.getLogger(__name__)

_DTYPES = {"float32", "float16", "float64", "bfloat16", "int64", "int32", "int8", "uint8", "bool"}
_SPEC_RE = re.compile(r"^(?P<name>[A-Za-z_][\w.\-]*)\s*:(?P<shape>[^:]+)(?::\s*(?P<dtype>\w+)\s*)?$")


@dataclass(frozen=True)
class InputSpec:
    """An input from ``--input NAME:1x3x224x224[:float32]``; symbolic dims (``x:Nx3xHxW``) are dynamic.

    ``shape`` holds the tracing sizes (a symbol's size comes from ``--dim SYM=SIZE``; a symbol in dim 0 is
    the batch, traced at 1); ``symbols`` maps axis -> symbol for the dynamic non-batch axes."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    symbols: tuple[tuple[int, str], ...] = ()


_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_dim_sizes(items: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``--dim H=160`` (repeatable, or ``H=160,W=160``) -> {"H": 160}."""
    sizes: dict[str, int] = {}
    for item in (p.strip() for text in items for p in str(text).split(",") if p.strip()):
        sym, sep, size = item.partition("=")
        if not sep or not _SYMBOL.fullmatch(sym.strip()) or not size.strip().isdigit() or int(size) < 1:
            raise InputError(f"malformed --dim {item!r}", expected="SYMBOL=SIZE, e.g. --dim H=160",
                             found=item, hint="the symbol is the one used in --input, e.g. --input x:Nx3xHxW")
        sizes[sym.strip()] = int(size)
    return sizes


def parse_input_spec(text: str, sizes: dict[str, int] | None = None) -> InputSpec:
    """Parse ``NAME:DIMxDIM...[:dtype]``; e.g. ``x:1x3x224x224:float32`` or ``x:Nx3xHxW`` with ``sizes``
    (``{"H": 160, "W": 160}``) giving each symbol's tracing size. Symbols must not contain a lowercase x
    (the separator)."""
    m = _SPEC_RE.match(text.strip())
    fmt = "NAME:DIMxDIM...[:dtype], e.g. x:1x3x224x224:float32 or x:Nx3xHxW (with --dim H=224 --dim W=224)"
    if not m:
        raise InputError(f"malformed --input spec {text!r}", expected=fmt, found=repr(text))
    dims = [d.strip() for d in re.split(r"x|(?<=\d)X(?=\d)", m.group("shape"))]  # 1X3X8 as written before
    shape: list[int] = []
    symbols: list[tuple[int, str]] = []
    for axis, d in enumerate(dims):
        if d.isdigit():  # int() would also take "1_0" or "+3"
            shape.append(int(d))
            continue
        if not _SYMBOL.fullmatch(d):
            raise InputError(f"malformed --input spec {text!r}: {d!r} is neither a size nor a symbol", expected=fmt,
                             found=f"dimensions {dims}", hint="sizes are integers; dynamic axes are names like H or "
                                                              "SEQ (without a lowercase x)")
        size = (sizes or {}).get(d, 1 if axis == 0 else None)
        if size is None:
            raise InputError(f"--input {text!r}: the dynamic axis {d} has no tracing size",
                             expected=f"--dim {d}=SIZE (the size the model is exported and checked at)",
                             found="no --dim for it", hint=f"e.g. --dim {d}=160")
        shape.append(size)
        if axis > 0:
            symbols.append((axis, d))
    if any(d < 1 for d in shape):
        raise InputError(f"malformed --input spec {text!r}: dimensions must be >= 1", expected=fmt,
                         found=str(tuple(shape)))
    dtype = (m.group("dtype") or "float32").strip().lower()
    if dtype not in _DTYPES:
        raise InputError(f"unknown dtype in --input spec {text!r}", expected=" | ".join(sorted(_DTYPES)),
                         found=dtype)
    return InputSpec(m.group("name"), tuple(shape), dtype, tuple(symbols))


def load_factory(ref: str) -> Callable[..., Any]:
    """Resolve ``path/to/file.py:factory`` or ``package.module:factory`` to a callable."""
    if ":" not in ref and Path(ref).suffix in (".pt", ".pth", ".ckpt", ".pkl"):
        raise ModelLoadError(f"{ref} is a checkpoint file; edgesdk does not unpickle model objects by default",
                             expected="path/to/file.py:factory (with --weights for a state dict)",
                             found=ref, hint="write a factory that builds the model and pass the state dict with "
                                             "--weights; only for a file you created yourself: "
                                             "--unsafe-unpickle-model (a pickle runs arbitrary code when loaded)")
    if ":" not in ref:
        raise ModelLoadError(f"model reference {ref!r} names no factory",
                             expected="path/to/file.py:factory or package.module:factory",
                             found=ref, hint="append ':build' (the function that returns your nn.Module)")
    mod_ref, _, attr = ref.rpartition(":")
    if mod_ref.endswith(".py") or "/" in mod_ref or "\\" in mod_ref:
        path = Path(mod_ref)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}", expected="an existing .py file",
                                 hint="check the path (relative to the current directory)")
        name = _module_name(path)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ModelLoadError(f"cannot import {path}", expected="a Python source file")
        module = importlib.util.module_from_spec(spec)
        # the model's folder stays importable: factories often import sibling modules when they are called
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        try:
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except Exception as e:  # user code can raise anything
            sys.modules.pop(name, None)
            raise ModelLoadError(f"importing {path} failed", found=f"{type(e).__name__}: {e}",
                                 hint=f"run `python {path}` to see the error in your code") from e
    else:
        if os.getcwd() not in sys.path:  # `package.module:factory` resolves from the current folder, as with -m
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(mod_ref)
        except Exception as e:
            raise ModelLoadError(f"cannot import module {mod_ref!r}", found=f"{type(e).__name__}: {e}",
                                 hint="check the module is installed or give a file path like models/net.py:build") from e
    fn = getattr(module, attr, None)
    if fn is None:
        names = sorted(n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_"))
        raise ModelLoadError(f"{mod_ref} has no attribute {attr!r}", expected="a factory returning an nn.Module",
                             found=f"callables: {', '.join(names[:12]) or 'none'}")
    if not callable(fn):
        raise ModelLoadError(f"{ref} is not callable", found=type(fn).__name__)
    return fn


def build_model(ref: str) -> Any:
    """Call the factory and check it returns an ``nn.Module`` (in eval mode)."""
    import torch

    fn = load_factory(ref)
    try:
        model = fn()
    except Exception as e:
        signature_problem = isinstance(e, TypeError) and "argument" in str(e)
        raise ModelLoadError(f"calling the factory {ref} failed", found=f"{type(e).__name__}: {e}",
                             hint="the factory must be callable with no arguments (wrap it: def build(): "
                                  "return Net(width=64))" if signature_problem else
                             "the error is raised by your factory's code") from e
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"the factory {ref} did not return a torch.nn.Module",
                             expected="torch.nn.Module", found=type(model).__name__)
    return model.eval()


def unpickle_model_unsafe(path: str | Path) -> Any:
    """DANGER: load a whole pickled ``nn.Module``. Unpickling runs any code the file contains.

    Only behind the CLI's ``--unsafe-unpickle-model`` / this explicitly named function; never a default.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model file not found: {p}", hint="check the path")
    log.warning("UNSAFE: unpickling %s with weights_only=False; this runs any code inside the file", p)
    try:
        model = torch.load(str(p), map_location="cpu", weights_only=False)  # edgesdk: explicit unsafe opt-in
    except Exception as e:
        raise ModelLoadError(f"cannot unpickle {p}", found=f"{type(e).__name__}: {str(e)[:300]}",
                             hint="the classes the pickle names must be importable here") from e
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{p} does not hold a torch.nn.Module", found=type(model).__name__,
                             hint="for a state dict use a factory and --weights")
    return model.eval()


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read weights without unpickling objects: safetensors, or torch.load(weights_only=True)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"weights file not found: {p}", hint="check the --weights path")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:
            raise ModelLoadError(f"cannot read safetensors file {p}", found=f"{type(e).__name__}: {e}",
                                 hint="the file may be truncated or not a safetensors file") from e
    if p.suffix not in (".pt", ".pth", ".bin", ".ckpt"):
        raise ModelLoadError(f"unknown weights format: {p.name}", expected=".safetensors, .pt, .pth",
                             found=p.suffix or "no extension")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e)
        if "weights_only" in msg or "Unsupported global" in msg or "GLOBAL" in msg:
            raise ModelLoadError(
                f"{p} is a pickled object, not a plain state dict; edgesdk does not unpickle arbitrary objects",
                expected="a state dict (torch.save(model.state_dict(), path)) or a .safetensors file",
                found=msg.splitlines()[0][:300],
                hint="re-save with `torch.save(model.state_dict(), 'w.pt')` or safetensors.torch.save_file",
            ) from e
        if isinstance(e, (zipfile.BadZipFile, EOFError)) or "zip" in msg.lower() or "pickle" in msg.lower():
            raise ModelLoadError(f"{p} is not a readable PyTorch checkpoint", found=msg.splitlines()[0][:300],
                                 hint="the file may be truncated or a Git LFS pointer") from e
        from edgesdk.runtimes.formats import describe_bytes, read_head

        raise ModelLoadError(f"cannot read weights {p}: it looks like {describe_bytes(read_head(p))}",
                             expected="a PyTorch state dict (.pt/.pth) or a .safetensors file",
                             found=f"{type(e).__name__}: {msg[:200]}",
                             hint="pass the file torch.save(model.state_dict(), path) wrote, or a .safetensors") from e
    # training checkpoints wrap the state dict: Lightning "state_dict", timm/torchvision "model", EMA copies
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and obj[key] and \
                all(isinstance(v, torch.Tensor) for v in obj[key].values()):
            log.info("using the %r entry of the checkpoint %s", key, p.name)
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{p} does not hold a state dict of tensors", found=type(obj).__name__,
                             hint="save model.state_dict() rather than the model or a training checkpoint")
    return obj


def _strip_common_prefix(state: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Drop a prefix every key shares when that makes the keys the model's (``module.`` from DataParallel,
    ``model.`` from Lightning)."""
    if not state or set(state) & set(own):
        return state
    for prefix in ("module.", "model.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix):]: v for k, v in state.items()}
            if set(stripped) & set(own):
                log.info("dropped the %r prefix from the checkpoint's keys", prefix)
                return _strip_common_prefix(stripped, own)
    return state


def load_weights(model: Any, path: str | Path) -> None:
    """Load weights strictly; list missing/unexpected keys and shape mismatches in one error."""
    state = _strip_common_prefix(read_state_dict(path), model.state_dict())
    own = model.state_dict()
    # BatchNorm's step counter is not a weight; checkpoints from some tools leave it out
    missing_ok = {k for k in own if k.endswith("num_batches_tracked") and k not in state}
    state = {**state, **{k: own[k] for k in missing_ok}}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: model {tuple(own[k].shape)} vs file {tuple(state[k].shape)}"
                  for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:8])}")
        raise ModelLoadError(f"weights {path} do not fit the model", expected="the same keys and shapes as the model",
                             found="\n            ".join(parts),
                             hint="check the factory arguments match the ones used for training")
    model.load_state_dict(state, strict=True)


def load_npz(path: str | Path, *, what: str = "inputs") -> dict[str, np.ndarray]:
    """Read an .npz file of named arrays (never with allow_pickle)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} file not found: {p}")
    with open(p, "rb") as f:
        head = f.read(512)
    if not head.startswith(b"PK"):  # not a zip: numpy would call it "pickled data", which it rarely is
        from edgesdk.runtimes.formats import describe_bytes

        raise InputError(f"{what} file {p} is not an .npz archive", expected="an .npz written by numpy.savez",
                         found=describe_bytes(head), hint="write it with numpy.savez(path, x=array, ...)")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise InputError(f"{what} file {p} is not a readable .npz of arrays", found=f"{type(e).__name__}: {e}",
                         hint="write it with numpy.savez(path, x=array, ...)") from e


def check_labels(labels: np.ndarray, n: int, *, what: str) -> None:
    """``labels`` must be one integer class id per sample (N,), as many as the inputs have samples."""
    found = f"{labels.dtype} array of shape {labels.shape}"
    if labels.ndim != 1 or len(labels) != n:
        raise InputError(f"{what}: `labels` must hold one class id per sample", expected=f"shape ({n},)",
                         found=found, hint="one-hot labels: labels.argmax(1); column vectors: labels.ravel()")
    if labels.dtype.kind not in "iu":
        raise InputError(f"{what}: `labels` must be integer class ids", expected=f"an int array of shape ({n},)",
                         found=found, hint="labels.astype(np.int64)")


def check_feeds_match(data: dict[str, np.ndarray], example: dict[str, np.ndarray], *, what: str) -> None:
    """Data arrays must have the example inputs' names, dtypes and non-batch dims; no NaN/Inf."""
    problems = []
    for name, ref in example.items():
        if name not in data:
            problems.append(f"{name}: missing (expected {ref.dtype} {('N',) + ref.shape[1:]})")
            continue
        arr = data[name]
        if arr.dtype != ref.dtype:
            problems.append(f"{name}: dtype {arr.dtype}, expected {ref.dtype}")
        if arr.ndim != ref.ndim or arr.shape[1:] != ref.shape[1:]:
            problems.append(f"{name}: shape {arr.shape}, expected (N, {', '.join(map(str, ref.shape[1:]))})")
        elif np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            problems.append(f"{name}: {int((~np.isfinite(arr)).sum())} NaN/Inf values")
    if problems:
        raise InputError(f"{what} do not match the model inputs", expected=", ".join(
            f"{n}: {a.dtype} (N, {', '.join(map(str, a.shape[1:]))})" for n, a in example.items()),
            found="; ".join(problems), hint=f"fix the {what} file (arrays named like the inputs)")


@dataclass(frozen=True)
class ModelSource:
    """A model as the CLI names it: ``file.py:factory`` (or ``package.module:factory``), optional weights,
    and its inputs as ``--input`` specs or an .npz of examples. Plain data, so it can be sent to another
    process or machine (a search trial on Ray) and rebuilt there.

    Example::

        src = ModelSource("examples/digits/model.py:build", inputs=("x:1x1x8x8",))
        net = src.build(); examples = src.examples(net)
    """

    ref: str
    weights: str | None = None
    inputs: tuple[str, ...] = ()
    dims: tuple[str, ...] = ()
    example_inputs: str | None = None

    def specs(self) -> list[InputSpec]:
        return [parse_input_spec(s, parse_dim_sizes(self.dims)) for s in self.inputs]

    def check(self) -> None:
        """The inputs are given one way: --input specs or an .npz of examples."""
        if not self.inputs and not self.example_inputs:
            raise InputError("no model inputs given", expected="--input NAME:1x3x224x224[:dtype] or "
                             "--example-inputs FILE.npz", hint="e.g. --input x:1x1x8x8")
        if self.inputs and self.example_inputs:
            raise InputError("give either --input or --example-inputs, not both")

    def build(self) -> Any:
        """The model with its weights loaded."""
        net = build_model(self.ref)
        if self.weights:
            load_weights(net, self.weights)
        return net

    def examples(self, net: Any) -> dict[str, Any]:
        """Example tensors: from the specs (token ids within the vocabulary, masks of ones), else the .npz."""
        import torch

        from .synthetic import example_inputs

        self.check()
        if self.inputs:
            return example_inputs(net, self.specs())
        return {k: torch.from_numpy(v) for k, v in load_npz(self.example_inputs, what="example inputs").items()}


def _module_name(path: Path) -> str:
    """The import name of a model file: its stem and a digest of its source, the same in every process and on
    every machine (exporters record it in the artifact, so a salted ``hash()`` would make each run's bytes
    differ and ``best.yaml`` would not reproduce a file); two files share one only when they hold the same source."""
    import hashlib

    stem = re.sub(r"\W", "_", path.stem)
    return f"edgesdk_user_model_{stem}_{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"

