"""Dynamic dimensions: which axes of which inputs stay symbolic in the artifacts, under what names.

The batch (axis 0) is dynamic by default and named ``batch``. Any other axis can be made dynamic:
a symbol in the input spec (``--input x:Nx3xHxW --dim H=160 --dim W=160``), or ``--dynamic-dims x:2,3``
(recipe ``export.dynamic_dims: {x: [2, 3]}``). The sequence axis of token-id inputs (integer inputs of
shape (N, L)) is dynamic by default under the name ``sequence``, shared by their masks. Axes given the
same symbol must have the same size; the exporter finds which unnamed axes the model needs equal.

The parity gate checks each symbol at its tracing size and at a smaller and a larger one
(:func:`check_sizes`); the manifest records the symbols and the sizes checked.

Example::

    dims = resolve({"x": (1, 3, 160, 160)}, {"x": {2: "H", 3: "W"}})
    dims.axes     # {'x': {0: 'batch', 2: 'H', 3: 'W'}}
    check_sizes(160)   # (96, 160, 224)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import InputError

BATCH, SEQUENCE = "batch", "sequence"
SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class DynamicDims:
    """input -> axis -> symbol, plus the tracing size of each symbol and what the gate checked."""

    axes: dict[str, dict[int, str]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # symbol -> its size in the example inputs
    checked: dict[str, list[int]] = field(default_factory=dict)  # symbol -> sizes the gate ran
    notes: list[str] = field(default_factory=list)

    def symbols(self, batch: bool = False) -> list[str]:
        """The symbols in first-seen order (without ``batch`` unless asked)."""
        seen = [s for ax in self.axes.values() for s in ax.values()]
        return [s for s in dict.fromkeys(seen) if batch or s != BATCH]

    def where(self, symbol: str) -> list[tuple[str, int]]:
        return [(name, axis) for name, ax in self.axes.items() for axis, s in ax.items() if s == symbol]

    def to_dict(self) -> dict[str, Any]:
        return {s: {"inputs": [f"{n}:{a}" for n, a in self.where(s)], "traced": self.sizes.get(s),
                    "checked": self.checked.get(s, [self.sizes.get(s)] if s in self.sizes else [])}
                for s in self.symbols(batch=True)}


def parse_axes(value: Mapping[str, Any], inputs: Mapping[str, tuple[int, ...]]) -> dict[str, dict[int, str | None]]:
    """``export.dynamic_dims`` ({x: [2, 3]} or {x: {2: H}}) -> input -> axis -> symbol (None: name it)."""
    out: dict[str, dict[int, str | None]] = {}
    for name, spec in value.items():
        if name not in inputs:
            raise InputError(f"export.dynamic_dims names {name!r}, which is not an input",
                             expected=f"one of {', '.join(inputs)}", found=name)
        items = spec.items() if isinstance(spec, Mapping) else ((a, None) for a in _axis_list(name, spec))
        for axis, sym in items:
            axis = _axis(name, axis, len(inputs[name]))
            if sym is not None and not SYMBOL.fullmatch(str(sym)):
                raise InputError(f"bad symbol {sym!r} for {name}:{axis}", expected="a name like H, W or seq",
                                 found=repr(sym))
            out.setdefault(name, {})[axis] = None if sym is None else str(sym)
    return out


def _axis_list(name: str, spec: Any) -> list[Any]:
    if isinstance(spec, str):
        return [s for s in re.split(r"[,\s]+", spec.strip()) if s]
    if isinstance(spec, (list, tuple)):
        return list(spec)
    if isinstance(spec, int) and not isinstance(spec, bool):
        return [spec]
    raise InputError(f"export.dynamic_dims.{name} must list axes", expected="e.g. [2, 3] or {2: H, 3: W}",
                     found=repr(spec))


def _axis(name: str, axis: Any, rank: int) -> int:
    try:
        a = int(str(axis))
    except ValueError:
        raise InputError(f"bad axis {axis!r} for input {name!r}", expected=f"an integer in [1, {rank - 1}]",
                         found=repr(axis)) from None
    if not 1 <= a < rank:
        raise InputError(f"axis {a} of input {name!r} cannot be made dynamic",
                         expected=f"an axis in [1, {rank - 1}] (the input has rank {rank}; axis 0 is the batch)",
                         found=str(a), hint="the batch is dynamic already (--static-batch fixes it)")
    return a


def resolve(shapes: Mapping[str, tuple[int, ...]], asked: Mapping[str, Mapping[int, str | None]] | None = None, *,
            dtypes: Mapping[str, str] | None = None, dynamic_batch: bool = True,
            dynamic_sequence: bool = True) -> DynamicDims:
    """The dynamic axes of the inputs (see the module docstring). ``asked``: input -> axis -> symbol or None.

    Unnamed axes never share a symbol with another axis of the same input (H and W of a square image stay
    independent). Token sequences (integer (N, L) inputs) are named ``sequence``, and a mask of the same
    length (bool, float or int, a name with "mask") shares it; a second token input of another length (a
    decoder's ids) gets ``sequence_<input>``."""
    dims = DynamicDims()
    wanted: dict[str, dict[int, str | None]] = {n: dict(ax) for n, ax in (asked or {}).items()}
    named = {sym for ax in wanted.values() for sym in ax.values() if sym}
    seq_lengths = {s[1] for n, s in shapes.items() if _is_token_ids(s, (dtypes or {}).get(n, ""))}
    sequences: set[str] = set()
    if dynamic_sequence:
        for name, shape in shapes.items():
            token = _is_token_ids(shape, (dtypes or {}).get(name, ""))
            mask = len(shape) == 2 and "mask" in name.lower() and shape[1] in seq_lengths
            if (token or mask) and shape[1] >= 2 and 1 not in wanted.get(name, {}):
                wanted.setdefault(name, {})[1] = None
                sequences.add(name)
                what = "token ids" if token else "a mask of the token sequence"
                dims.notes.append(f"{name}: the sequence axis (1) is dynamic ({what}); --static-sequence fixes it")
    sequence_of: dict[int, str] = {}  # automatic sequence symbol by length
    for name, shape in shapes.items():
        axes: dict[int, str] = {0: BATCH} if dynamic_batch and shape else {}
        for axis, sym in sorted(wanted.get(name, {}).items()):
            size = shape[axis]
            if sym is None and name in sequences:
                sym = sequence_of.setdefault(size, SEQUENCE if not sequence_of and SEQUENCE not in named
                                             else f"{SEQUENCE}_{name}")
            sym = sym or f"{name}_{axis}"
            if size < 2:
                raise InputError(f"{name}:{axis} ({sym}) is traced at size {size}; a dynamic axis needs size >= 2",
                                 expected="a tracing size of at least 2", found=str(size),
                                 hint=f"give a larger example size, e.g. --dim {sym}=16")
            if dims.sizes.setdefault(sym, size) != size:
                raise InputError(f"symbol {sym!r} has two sizes in the example inputs",
                                 expected="one size per symbol", found=f"{dims.sizes[sym]} and {size}",
                                 hint="give each independent axis its own symbol")
            axes[axis] = sym
        dims.axes[name] = axes
    return dims


def _is_token_ids(shape: tuple[int, ...], dtype: str) -> bool:
    return len(shape) == 2 and str(dtype).startswith(("int", "uint"))


def check_sizes(size: int) -> tuple[int, ...]:
    """Sizes the gate runs a symbol at: about half and one and a half times the tracing size, kept to the
    largest power of two dividing it (up to 32), so strided nets (a UNet needs multiples of 16) take them."""
    step = 1
    while size % (step * 2) == 0 and step < min(32, size // 2):
        step *= 2
    small = max(2, round(size / 2 / step) * step)
    large = max(size + step, round(size * 1.5 / step) * step)
    return tuple(sorted({small, size, large}))
