"""Generated inputs with values the model can take, for when no real data is given.

Zeros are a poor stand-in for token ids (one token, everywhere) and a disaster for an attention mask
(a fully masked sequence). Each input gets a *role*, found from the model itself where possible:

* ``ids``: read directly by an ``nn.Embedding`` (found with forward pre-hooks): uniform in
  ``[0, num_embeddings)`` (token ids, token types, any categorical input);
* ``mask``: a name containing "mask": the example's most common value everywhere (ones for an attention
  mask, False for a PyTorch key-padding mask, where True means padding);
* ``positions``: a name containing "position" or "pos_id": ``0 .. L-1`` along the last axis;
* ``range``: anything else: uniform in the example's value range (floats in [0, 1) when the example is
  constant), integers in the example's range.

Example::

    roles = input_roles(model, examples)              # {'input_ids': Role('ids', high=30522), ...}
    feeds = generate(roles, {"input_ids": (4, 16)}, {"input_ids": "int64"}, rng)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class Role:
    """What an input holds and the value range generated for it (``high`` is exclusive for integers)."""

    kind: str  # ids | mask | positions | range
    low: float = 0.0  # for a mask: the value it holds everywhere
    high: float = 1.0
    source: str | None = None  # the embedding module that revealed the range

    def describe(self) -> str:
        if self.kind == "ids":
            return f"ids uniform in [0, {int(self.high)}) (from {self.source})"
        if self.kind == "mask":
            return f"{self.low:g} everywhere (a mask, as in the example)"
        if self.kind == "positions":
            return "positions 0..L-1"
        return f"uniform in [{self.low:g}, {self.high:g}]"


def _name_role(name: str) -> str | None:
    low = name.lower()
    if "mask" in low:
        return "mask"
    if "position" in low or "pos_id" in low:
        return "positions"
    return None


def embedding_readers(model: Any, examples: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """Which inputs an ``nn.Embedding`` reads directly (the tensor itself or a view of it):
    input name -> (module path, num_embeddings). Runs the model once on ``examples`` (in forward()'s
    order) with pre-hooks; a model that fails there reveals nothing."""
    import torch

    found: dict[str, tuple[str, int]] = {}
    by_ptr = {(t.data_ptr(), t.numel()): n for n, t in examples.items()
              if isinstance(t, torch.Tensor) and not t.is_floating_point() and t.numel()}

    def hook(path: str, module: Any) -> Any:
        def pre(_m: Any, args: tuple) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor):
                name = by_ptr.get((x.data_ptr(), x.numel()))
                if name is not None:
                    found.setdefault(name, (path, int(module.num_embeddings)))
        return pre

    handles = [m.register_forward_pre_hook(hook(p, m)) for p, m in model.named_modules()
               if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))]
    try:
        with torch.no_grad():
            model(*examples.values())
    except Exception:  # noqa: BLE001 - the caller checks the model runs and reports it properly
        pass
    finally:
        for h in handles:
            h.remove()
    return found


def input_roles(model: Any, examples: Mapping[str, Any]) -> dict[str, Role]:
    """The role of each input (see the module docstring); ``examples`` are torch tensors or numpy arrays."""
    import torch

    tensors = {n: (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v))) for n, v in examples.items()}
    readers = embedding_readers(model, tensors)
    roles: dict[str, Role] = {}
    for name, t in tensors.items():
        by_name = _name_role(name)
        if by_name == "mask":
            roles[name] = Role("mask", _mode(t))
        elif by_name is not None and not t.is_floating_point():
            roles[name] = Role(by_name)
        elif name in readers:
            path, vocab = readers[name]
            roles[name] = Role("ids", 0, vocab, source=f"{path} (nn.Embedding, {vocab} entries)")
        else:
            roles[name] = _range_role(t)
    return roles


def _mode(t: Any) -> float:
    """The most common value of a tensor (1 when it is empty)."""
    a = t.detach().cpu().numpy().ravel()
    if not a.size:
        return 1.0
    values, counts = np.unique(a, return_counts=True)
    return float(values[counts.argmax()])


def _range_role(t: Any) -> Role:
    a = t.detach().cpu().numpy()
    if a.dtype == np.bool_:
        return Role("range", 0, 1)
    if not a.size:
        return Role("range", 0.0, 1.0)
    lo, hi = float(a.min()), float(a.max())
    if np.issubdtype(a.dtype, np.floating) and hi <= lo:
        lo, hi = 0.0, 1.0
    return Role("range", lo, hi)


def generate(roles: Mapping[str, Role], shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str],
             rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One batch of inputs of the given shapes and dtypes, each filled according to its role."""
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        dtype = np.dtype(dtypes[name])
        role = roles.get(name, Role("range"))
        if role.kind == "mask":
            a = np.full(shape, role.low, dtype)
        elif role.kind == "positions":
            a = np.broadcast_to(np.arange(shape[-1] if shape else 1), shape).astype(dtype)
        elif dtype == np.bool_:
            a = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(dtype, np.floating):
            a = rng.uniform(role.low, role.high, size=shape).astype(dtype)
        else:
            hi = int(role.high) if role.kind == "ids" else int(role.high) + 1
            a = rng.integers(int(role.low), max(hi, int(role.low) + 1), size=shape).astype(dtype)
        out[name] = np.ascontiguousarray(a)
    return out


def example_inputs(model: Any, specs: list[Any], seed: int = 0) -> dict[str, Any]:
    """Example tensors for ``--input`` specs (name, shape, dtype): floats uniform in [0, 1), integer and
    mask inputs by their role (see :func:`input_roles`), found by running the model on a first guess of
    zero ids and masks that attend everywhere. Example::

        examples = example_inputs(model, [parse_input_spec("input_ids:1x16:int64")])
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    guess: dict[str, Any] = {}
    for s in specs:
        dt = getattr(torch, s.dtype)
        if dt.is_floating_point:
            guess[s.name] = torch.rand(s.shape, generator=gen).to(dt)
        else:
            # masks attend everywhere: ones, except a bool mask, which in PyTorch marks padding with True
            attend = _name_role(s.name) == "mask" and dt != torch.bool
            guess[s.name] = (torch.ones if attend else torch.zeros)(s.shape, dtype=dt)
    ints = [s for s in specs if not getattr(torch, s.dtype).is_floating_point]
    if not ints:
        return guess
    from .binding import bind_inputs, keyword_adapter

    binding = bind_inputs(model, guess)
    call = keyword_adapter(model, binding.names) if binding.keyword else model
    roles = input_roles(call, binding.order(guess))
    rng = np.random.default_rng(seed)
    made = generate({s.name: roles[s.name] for s in ints}, {s.name: s.shape for s in ints},
                    {s.name: s.dtype for s in ints}, rng)
    return {**guess, **{k: torch.from_numpy(v) for k, v in made.items()}}
