"""One reading of a PyTorch model's output for every stage: a tensor, a tuple/list, a dict, a Hugging Face
``ModelOutput`` (a dict subclass whose unset fields are skipped) or any nesting of them.

* ``primary_output`` is the tensor a stage trains or ranks on: ``logits`` when there is one, else the
  first tensor in order, with the name of what it took so the manifest can say so;
* ``flat_outputs`` is every tensor by name, in order (what the interface check compares).

Example::

    out = model(**inputs)                       # ImageClassifierOutput(logits=..., hidden_states=None)
    logits, name = primary_output(out)          # (tensor, "logits")
    primary_output((feats, scores))[1]          # "output[0]"
    list(flat_outputs({"scores": s, "boxes": b}))  # ["scores", "boxes"]
"""
from __future__ import annotations

from typing import Any

from edgesdk.errors import InputError

PREFERRED = "logits"  # what Hugging Face task heads return and what distillation should match


def flat_outputs(out: Any, prefix: str = "output") -> dict[str, Any]:
    """Every tensor in ``out`` by name: dict keys (``scores``, ``logits``), ``output[i]`` for sequence items
    (a named tuple's field names), dotted or indexed paths for nesting; None entries are skipped."""
    import torch

    found: dict[str, Any] = {}

    def walk(obj: Any, name: str, top: bool) -> None:
        if isinstance(obj, torch.Tensor):
            found[name] = obj
        elif isinstance(obj, dict):  # ModelOutput included: its None fields are not in its items
            for k, v in obj.items():
                walk(v, str(k) if top else f"{name}.{k}", False)
        elif isinstance(obj, (tuple, list)):
            fields = getattr(obj, "_fields", None)  # a named tuple names its items
            for i, v in enumerate(obj):
                if fields:
                    walk(v, fields[i] if top else f"{name}.{fields[i]}", False)
                else:
                    walk(v, f"{name}[{i}]", False)

    walk(out, prefix, True)
    return found


def primary_output(out: Any) -> tuple[Any, str]:
    """(the tensor to train or rank on, its name): ``logits`` when present, else the first tensor.

    Raises InputError when ``out`` holds no tensor at all.

    Example::

        primary_output(torch.zeros(2, 5))                          # (tensor, "output")
        primary_output({"scores": s, "boxes": b})                  # (s, "scores")
    """
    import torch

    if isinstance(out, torch.Tensor):
        return out, "output"
    flat = flat_outputs(out)
    if isinstance(flat.get(PREFERRED), torch.Tensor):
        return flat[PREFERRED], PREFERRED
    if not flat:
        raise InputError("the model's output holds no tensor", expected="a tensor, or a tuple/list/dict/ModelOutput "
                         "holding tensors", found=type(out).__name__,
                         hint="return the tensors to compress from forward()")
    name = next(iter(flat))
    return flat[name], name


def output_shapes(out: Any) -> dict[str, tuple[int, ...]]:
    """Every output tensor's shape by name (the interface a pruned model must keep).

    Example::

        output_shapes({"scores": torch.zeros(2, 5)})   # {"scores": (2, 5)}
    """
    return {k: tuple(v.shape) for k, v in flat_outputs(out).items()}
