"""Bind named inputs to ``forward()``'s parameters by name, never silently by position.

An ``.npz`` keeps its arrays in the order they were saved, a dict in the order it was built: neither
is ``forward()``'s order. ``bind_inputs`` matches every named input to the parameter of that name and
orders them as the signature does, so the exported graph's inputs carry the parameter names and each
receives what the model expects. A name no parameter takes is an input error listing the parameters
(unless ``forward`` takes ``**kwargs``). Unnamed inputs (a bare tensor, a tuple) are bound by position,
and the binding says so.

When the named inputs skip a parameter (``forward(input_ids, token_type_ids=None, attention_mask=None)``
given ``input_ids`` and ``attention_mask``) the model is called with keywords through
:func:`keyword_adapter`, a module whose positional ``forward`` passes each tensor by its name.

Example::

    b = bind_inputs(model, {"attention_mask": m, "input_ids": ids})
    b.names            # ('input_ids', 'attention_mask'): forward()'s order
    b.order(examples)  # the same dict, in that order
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InputError

_P = inspect.Parameter


@dataclass(frozen=True)
class InputBinding:
    """How the inputs reach ``forward()``: their names in signature order and how they are passed."""

    names: tuple[str, ...]
    by_name: bool  # matched to forward()'s parameters by name
    keyword: bool  # a parameter is skipped (or **kwargs takes one): the call needs keywords
    note: str | None = None  # said in the manifest and the progress log

    def order(self, items: Mapping[str, Any]) -> dict[str, Any]:
        """``items`` (keyed by input name) in the binding's order."""
        return {n: items[n] for n in self.names}

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "by": "name" if self.by_name else "position",
                "keyword_call": self.keyword, "note": self.note}


def forward_parameters(model: Any) -> list[inspect.Parameter]:
    """``forward()``'s parameters (without ``self``); [] when the signature cannot be read."""
    fn = getattr(model, "forward", model)
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins and some C extensions have no signature
        return []


def bind_inputs(model: Any, examples: Mapping[str, Any], *, named: bool = True) -> InputBinding:
    """Match ``examples`` to ``model.forward``'s parameters (see the module docstring).

    ``named=False``: the inputs came without names (a tensor or a tuple) and are bound by position; they
    take the parameter names when the signature has enough positional parameters.
    """
    params = forward_parameters(model)
    positional = [p for p in params if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)]
    given = list(examples)
    if not named:
        return _by_position(given, positional, params)
    if not params or any(p.kind is _P.VAR_POSITIONAL for p in params) and not positional:
        return InputBinding(tuple(given), by_name=False, keyword=False,
                            note=f"forward() takes *args: the inputs {', '.join(given)} are passed in the order "
                                 "given")
    takes = {p.name: p for p in params if p.kind not in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD)}
    var_kw = any(p.kind is _P.VAR_KEYWORD for p in params)
    unknown = [n for n in given if n not in takes]
    if unknown and not var_kw:
        raise InputError(f"input name{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} match"
                         f"{'' if len(unknown) > 1 else 'es'} no parameter of {type(model).__name__}.forward()",
                         expected=f"names among forward()'s parameters: {_describe(params)}",
                         found=", ".join(given),
                         hint="name each input after the forward() parameter it feeds (--input NAME:..., the "
                              "keys of --example-inputs / --calib / --eval-data)")
    missing = [p.name for p in params if p.name in takes and p.default is _P.empty and p.name not in given]
    if missing:
        raise InputError(f"{type(model).__name__}.forward() needs {', '.join(map(repr, missing))}, which no input "
                         "provides", expected=f"an input for each required parameter: {_describe(params)}",
                         found=", ".join(given), hint=f"add --input {missing[0]}:SHAPE[:dtype] (or an array of "
                                                      "that name in --example-inputs)")
    order = [p.name for p in params if p.name in given] + [n for n in given if n not in takes]
    # positional calls work when the inputs are exactly forward()'s first parameters; otherwise keywords
    keyword = order != [p.name for p in positional[:len(order)]]
    note = None
    if order != given:
        note = f"inputs reordered to forward()'s order: {', '.join(order)} (given as {', '.join(given)})"
    return InputBinding(tuple(order), by_name=True, keyword=keyword, note=note)


def _by_position(given: list[str], positional: list[inspect.Parameter],
                 params: list[inspect.Parameter]) -> InputBinding:
    takes_more = any(p.kind is _P.VAR_POSITIONAL for p in params)
    if params and len(given) > len(positional) and not takes_more:
        raise InputError(f"{len(given)} unnamed inputs for a forward() that takes {len(positional)} positional "
                         f"argument{'s' if len(positional) != 1 else ''}", expected=f"forward({_describe(params)})",
                         found=f"{len(given)} tensors", hint="pass a dict named by forward()'s parameters, e.g. "
                                                            "{'x': x, 'mask': m}")
    names = tuple(given)
    if len(positional) >= len(given) and not any(p.kind is _P.VAR_POSITIONAL for p in params[:len(given)]):
        names = tuple(p.name for p in positional[:len(given)])
    note = (f"inputs given without names were bound by position to forward({', '.join(names)})"
            if names != tuple(given) or len(given) > 1 else None)
    return InputBinding(names, by_name=False, keyword=False, note=note)


def _describe(params: list[inspect.Parameter]) -> str:
    shown = []
    for p in params:
        if p.kind is _P.VAR_POSITIONAL:
            shown.append(f"*{p.name}")
        elif p.kind is _P.VAR_KEYWORD:
            shown.append(f"**{p.name}")
        else:
            shown.append(p.name if p.default is _P.empty else f"{p.name}=...")
    return ", ".join(shown) or "none"


def keyword_adapter(model: Any, names: tuple[str, ...]) -> Any:
    """An ``nn.Module`` whose ``forward(*tensors)`` calls ``model(**dict(zip(names, tensors)))``.

    The model is its only child, named ``model``: state dicts and module paths gain a ``model.`` prefix,
    which :func:`unwrap` takes off again.
    """
    import torch

    pos_only = [p for p in forward_parameters(model) if p.kind is _P.POSITIONAL_ONLY]

    class KeywordCall(torch.nn.Module):
        """Calls the wrapped model with keywords, so a skipped parameter keeps its default (positional-only
        parameters go by position, a skipped one with its default)."""

        def __init__(self, inner: Any, keys: tuple[str, ...]) -> None:
            super().__init__()
            self.model = inner
            self.keys = tuple(keys)

        def forward(self, *tensors: Any) -> Any:
            given = dict(zip(self.keys, tensors))
            head = [given.pop(p.name, p.default) for p in pos_only]
            return self.model(*head, **given)

    adapter = KeywordCall(model, names)
    adapter.train(model.training)
    adapter.edgesdk_keyword_call = True
    return adapter


def unwrap(model: Any) -> Any:
    """The user's model inside a :func:`keyword_adapter` (the model itself otherwise)."""
    return model.model if getattr(model, "edgesdk_keyword_call", False) else model
