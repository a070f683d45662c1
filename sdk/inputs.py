"""The run's inputs: example inputs as given, checked, bound to forward(), and the reference batches the gate runs.

Example::

    examples, named = normalize_inputs({"x": torch.rand(1, 3, 32, 32)})
    batches = reference_batches(examples_np, roles, dims, data=None, batches=16, batch_size=4, seed=0)
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import numpy as np

from .dims import BATCH, DynamicDims, check_sizes
from .errors import InputError
from .synthetic import Role, generate

log = logging.getLogger(__name__)
Feeds = dict[str, np.ndarray]


def normalize_inputs(example_inputs: Any) -> tuple[dict[str, Any], bool]:
    """(name -> torch tensor, whether the inputs came with names). A tensor or tuple has no names."""
    import torch

    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        items, named = {"input": example_inputs}, False
    elif isinstance(example_inputs, Mapping):
        items, named = dict(example_inputs), True
    elif isinstance(example_inputs, (tuple, list)):
        items, named = {f"input_{i}": t for i, t in enumerate(example_inputs)}, False
    else:
        raise InputError("example_inputs has an unsupported type",
                         expected="a tensor, a tuple of tensors, or a dict name -> tensor",
                         found=type(example_inputs).__name__)
    out = {}
    for name, value in items.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise InputError(f"example input {name!r} is not a tensor", expected="torch.Tensor or numpy array",
                             found=type(value).__name__)
        if value.ndim == 0:
            raise InputError(f"example input {name!r} is a scalar", expected="a tensor with a batch dimension",
                             found="shape ()")
        if value.dtype == torch.bfloat16:
            raise InputError(f"example input {name!r} is bfloat16, which the runtimes cannot be fed from numpy",
                             expected="float32, float16 or integer inputs",
                             hint="take float32 inputs and cast inside the model (x.to(torch.bfloat16))")
        out[str(name)] = value
    return out, named


def check_model_runs(model: Any, examples: Mapping[str, Any]) -> Any:
    """Run the model once on the example inputs (in forward()'s order); a failure there is the user's input
    spec, not our bug. Returns the output."""
    import torch

    try:
        with torch.no_grad():
            out = model(*examples.values())
    except Exception as e:  # noqa: BLE001 - any error the user's forward raises is reported as bad input
        first = " ".join(str(e).split())[:300]
        spec = ", ".join(f"{k}: {str(v.dtype).replace('torch.', '')}[{'x'.join(map(str, v.shape))}]"
                         for k, v in examples.items())
        raise InputError("the model fails on the example inputs", expected="inputs the model's forward accepts",
                         found=f"{spec} -> {type(e).__name__}: {first}",
                         hint="fix the shapes or dtypes in --input NAME:1x3x224x224[:dtype] (or --example-inputs); "
                              "each input is matched to the forward() parameter of its name") from e
    flat = list(out.values()) if isinstance(out, Mapping) else (list(out) if isinstance(out, (tuple, list)) else [out])
    bad = [type(o).__name__ for o in flat if not isinstance(o, torch.Tensor)]
    if bad or not flat:
        raise InputError("the model's outputs cannot be exported", expected="a tensor, or a flat tuple/list/dict of "
                         "tensors", found=f"{type(out).__name__} holding {', '.join(bad) or 'nothing'}",
                         hint="flatten nested outputs in forward() (return a, b, c rather than (a, (b, c)))")
    return out


def check_output_names(output_names: list[str] | None, input_names: Mapping[str, Any]) -> list[str] | None:
    if not output_names:
        return None
    names = [str(n) for n in output_names]
    twice = sorted({n for n in names if names.count(n) > 1})
    clash = sorted(set(names) & set(input_names))
    if twice or clash:
        raise InputError("output names must be distinct and differ from the input names",
                         found="; ".join(([f"repeated: {', '.join(twice)}"] if twice else [])
                                         + ([f"also inputs: {', '.join(clash)}"] if clash else [])),
                         hint="give each --output-name once, e.g. --output-name logits --output-name embedding")
    return names


def reference_batches(examples: Feeds, roles: Mapping[str, Role], dims: DynamicDims, *,
                      data: Mapping[str, np.ndarray] | None, batches: int, batch_size: int, seed: int,
                      fixed_batch: bool) -> list[Feeds]:
    """The examples, then ``batches`` more of ``batch_size``: slices of ``data`` when given, else generated
    (see edgesdk.synthetic); then two generated batches per size the gate checks each dynamic symbol at."""
    out = [examples]
    bs = len(next(iter(examples.values()))) if fixed_batch else batch_size
    if data is not None:
        n = len(data[next(iter(examples))]) if data else 0
        bs = bs if fixed_batch else max(1, min(bs, n))  # a few samples still reach the gate
        total = min(n, batches * bs)
        for start in range(0, total - bs + 1, bs):
            out.append({k: np.ascontiguousarray(data[k][start:start + bs]) for k in examples})
    rng = np.random.default_rng(seed)
    shapes = {k: (bs, *v.shape[1:]) for k, v in examples.items()}
    dtypes = {k: str(v.dtype) for k, v in examples.items()}
    while len(out) < batches + 1:
        out.append(generate(roles, shapes, dtypes, rng))
    for symbol in dims.symbols():
        for size in check_sizes(dims.sizes[symbol]):
            if size == dims.sizes[symbol]:
                continue
            resized = {k: tuple(size if dims.axes.get(k, {}).get(a) == symbol else d for a, d in enumerate(s))
                       for k, s in shapes.items()}
            out += [generate(roles, resized, dtypes, rng) for _ in range(2)]
    return out


def sizes_of(feeds: Feeds, dims: DynamicDims) -> dict[str, int]:
    """symbol -> its size in these feeds."""
    return {sym: int(feeds[name].shape[axis]) for sym in dims.symbols() for name, axis in dims.where(sym)[:1]
            if name in feeds}


def _nonfinite(outputs: Mapping[str, np.ndarray]) -> list[str]:
    return [k for k, v in outputs.items() if np.asarray(v).dtype.kind == "f" and not np.isfinite(v).all()]


def _why(e: Exception) -> str:
    """The cause of a failure in one line: an edgesdk error's found/what, else the exception's text."""
    from .errors import EdgeSDKError

    cause = e.__cause__ if isinstance(e, EdgeSDKError) and e.__cause__ is not None else e
    return f"{type(cause).__name__}: {' '.join(str(cause).split())[:200]}"


def keep_runnable(batches: list[Feeds], dims: DynamicDims, run: Callable[[Feeds], Any], *,
                  asked: set[str] = frozenset()) -> tuple[list[Feeds], list[Any], list[str]]:
    """Run the reference model on every batch; keep those it answers with finite numbers.

    A batch at a dynamic size the model itself refuses (a UNet given a size its strides cannot halve) is
    dropped with a note, and an InputError is raised when the model takes no size but the traced one of a
    symbol the user asked for. A generated batch on which the model outputs NaN/Inf (values it was never
    meant to see) is dropped with a note: NaN compared with NaN would check nothing."""
    kept, outs, notes = [], [], []
    checked: dict[str, set[int]] = {s: set() for s in dims.symbols()}
    for i, feeds in enumerate(batches):
        sizes = sizes_of(feeds, dims)
        try:
            out = run(feeds)
        except Exception as e:  # noqa: BLE001 - only extra sizes may fail; the examples ran already
            if i == 0:
                raise
            if all(sizes.get(s) == dims.sizes[s] for s in sizes):
                n, n0 = len(next(iter(feeds.values()))), len(next(iter(batches[0].values())))
                raise InputError(f"the model fails on a reference batch of {n} (the example inputs have {n0})",
                                 expected="a model that takes any batch size (the batch is dynamic by default)",
                                 found=_why(e), hint=f"if the model only takes batches of {n0}, export a fixed "
                                                     "batch: --static-batch (recipe export.dynamic_batch: false)") from e
            notes.append(f"the model does not run at {', '.join(f'{s}={v}' for s, v in sizes.items())} "
                         f"({_why(e)}); that size was not checked")
            continue
        bad = _nonfinite(out)
        if bad and i > 0:
            notes.append(f"PyTorch outputs NaN/Inf ({', '.join(bad)}) on a generated reference batch; it was left "
                         "out (pass --calib with real inputs to check more)")
            continue
        if bad:
            notes.append(f"PyTorch outputs NaN/Inf ({', '.join(bad)}) on the example inputs: those elements are "
                         "compared NaN with NaN")
        kept.append(feeds)
        outs.append(out)
        for sym, size in sizes.items():
            checked[sym].add(size)
        checked.setdefault(BATCH, set()).add(len(next(iter(feeds.values()))))
    dims.checked = {s: sorted(v) for s, v in checked.items()}
    dims.sizes.setdefault(BATCH, len(next(iter(batches[0].values()))))
    for sym in sorted(asked & set(checked)):
        if len(checked[sym]) < 2:
            raise InputError(f"the model does not run with {sym} other than {dims.sizes[sym]}, which was asked to "
                             "be dynamic", expected=f"a model that takes several sizes of {sym}",
                             found="; ".join(n for n in notes if f"{sym}=" in n)[:600] or "every other size failed",
                             hint=f"keep {sym} fixed (drop it from --dynamic-dims / the --input symbol)")
    return kept, outs, list(dict.fromkeys(notes))


def input_warnings(reference_inputs: list[Feeds], examples: Mapping[str, np.ndarray],
                   roles: Mapping[str, Role] | None = None) -> list[str]:
    """Say when the parity gate saw a single value for an integer input (not a mask, which is ones by
    design): every artifact was then verified on one token only."""
    out = []
    for name, ex in examples.items():
        if ex.dtype.kind not in "iub" or (roles and name in roles and roles[name].kind == "mask"):
            continue
        values = np.unique(np.concatenate([b[name].ravel() for b in reference_inputs if name in b]))
        if len(values) <= 1:
            out.append(f"integer input '{name}' was {values[0] if len(values) else 'empty'} in every reference batch: "
                       "parity was checked on that one value only; pass --calib (or --example-inputs) with real "
                       f"values for '{name}' (token ids, indices) to verify the artifacts properly")
    return out
