"""Pruning on Torch-Pruning's dependency graph: structured channels/filters/heads, unstructured, 2:4.

Structured pruning physically removes channels (and attention heads) across residual adds,
concatenations and depthwise/grouped convs, so dense runtimes get faster. Unstructured and
2:4 masks only zero weights: the file compresses better but dense runtimes do not speed up
(2:4 is for TensorRT's sparse kernels); the report says so.

Example::

    info = prune_model(model, {"x": x}, ratio=0.5, importance="l1")
    save_pruned(model, "out/model.pruned")      # safetensors + JSON of the pruned shapes
    rebuilt = load_pruned(factory(), "out/model.pruned")
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from edgesdk.errors import InputError, ModelLoadError
from edgesdk.recipe import PRUNE_IMPORTANCES as IMPORTANCES, PRUNE_METHODS as METHODS

log = logging.getLogger(__name__)
UNSTRUCTURED_NOTE = ("unstructured/2:4 sparsity shrinks the compressed file but does not speed up dense runtimes "
                     "(2:4 needs TensorRT sparse kernels)")


@dataclass
class PruneInfo:
    method: str
    ratio: float | None
    importance: str | None
    params_before: int
    params_after: int
    macs_before: int | None = None
    macs_after: int | None = None
    sparsity: float | None = None
    protected: list[str] = field(default_factory=list)
    heads: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def count(model: Any, example_inputs: Mapping[str, Any]) -> tuple[int | None, int]:
    """(MACs per sample, parameters) with Torch-Pruning's counter; MACs None if it cannot trace the model.

    nn.LSTM/GRU/RNN are counted here instead: Torch-Pruning's hook reads the batch and sequence length from
    the wrong dimensions (4x too high to 12x too low here) and ignores the wider input of stacked
    bidirectional layers.

    Example::

        macs, params = count(nn.LSTM(32, 64, 2, batch_first=True), {"x": torch.rand(1, 20, 32)})
        # macs == 20 * (4*64*32 + 4*64*64 + 4*64*64 + 4*64*64) == 1_146_880
    """
    import torch
    import torch_pruning as tp

    params = sum(p.numel() for p in model.parameters())
    args = tuple(example_inputs.values())
    try:
        with torch.no_grad():
            macs, _, layer_macs, _ = tp.utils.count_ops_and_params(model, args, layer_wise=True)
            recurrent = _recurrent_macs(model, args)
    except Exception as e:  # the counter traces the model; exotic modules can defeat it
        log.info("MAC counting failed: %s", e)
        return None, params
    if recurrent:
        batch = len(args[0])  # Torch-Pruning divides by the first input's batch: per-sample MACs
        theirs = sum(layer_macs.get(m) or 0 for m in recurrent)
        macs += (sum(recurrent.values()) - theirs) / batch
    return int(round(macs)), params


def _recurrent_macs(model: Any, args: tuple) -> dict[Any, int]:
    """MACs of every nn.LSTM/GRU/RNN for one forward pass over ``args`` (all samples together).

    Per time step and sample a recurrent layer multiplies by each of its input-to-hidden, hidden-to-hidden
    (and LSTM projection) matrices once, both directions included: the sum of those weights' sizes."""
    import torch

    kinds = (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN)
    mods = [m for m in model.modules() if isinstance(m, kinds)]
    if not mods:
        return {}
    found: dict[Any, int] = dict.fromkeys(mods, 0)

    def hook(m: Any, inputs: tuple, _out: Any) -> None:
        x = inputs[0]
        if isinstance(x, torch.nn.utils.rnn.PackedSequence):
            steps = x.data.shape[0]  # one row per (sample, time step) actually run
        else:
            steps = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]  # batched either way, or unbatched
        per_step = sum(p.numel() for n, p in m.named_parameters(recurse=False) if n.startswith("weight_"))
        found[m] += int(steps) * per_step

    handles = [m.register_forward_hook(hook) for m in mods]
    try:
        model(*args)
    finally:
        for h in handles:
            h.remove()
    return found


def _output_layers(model: Any, example_inputs: Mapping[str, Any]) -> list[Any]:
    """Layers whose outputs are model outputs (classifier heads): found by tracing with Torch-Pruning."""
    import torch
    import torch_pruning as tp

    dg = tp.DependencyGraph().build_dependency(model, example_inputs=tuple(example_inputs.values()))
    heads = []
    for module, node in dg.module2node.items():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv1d)) and not node.outputs:
            heads.append(module)
    return heads


_PROJ_NAMES = (("q", "k", "v"), ("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("qkv",))


def _attention_modules(model: Any) -> dict[Any, tuple[list[Any], str]]:
    """Attention blocks with separate q/k/v (or fused qkv) Linear layers and a head-count attribute.

    Matches BERT-style (query/key/value + num_attention_heads) and ViT-style (qkv + num_heads) modules;
    their heads are pruned whole, and the head-count attribute is updated after pruning.
    """
    import torch

    found = {}
    for m in model.modules():
        attr = next((a for a in ("num_heads", "num_attention_heads") if isinstance(getattr(m, a, None), int)), None)
        if attr is None or isinstance(m, torch.nn.MultiheadAttention):
            continue
        for names in _PROJ_NAMES:
            projs = [getattr(m, n, None) for n in names]
            if all(isinstance(p, torch.nn.Linear) for p in projs):
                found[m] = (projs, attr)
                break
    return found


def _importance(name: str) -> Any:
    import torch_pruning as tp

    if name not in IMPORTANCES:
        raise InputError(f"unknown pruning importance {name!r}", expected=" | ".join(IMPORTANCES), found=name)
    return {"l1": lambda: tp.importance.MagnitudeImportance(p=1), "l2": lambda: tp.importance.MagnitudeImportance(p=2),
            "bn": tp.importance.BNScaleImportance, "taylor": tp.importance.TaylorImportance}[name]()


def _taylor_grads(model: Any, data: Mapping[str, Any] | None, names: list[str], device: str = "cpu") -> None:
    """Gradients for Taylor importance: cross-entropy on the primary output when the data has class labels
    for it, else its output energy; every other float output adds its energy, so layers that feed only
    those (a box head, say) are not ranked unimportant for want of a gradient. The pass runs on ``device``
    and the model (with its gradients) is back on the CPU after it."""
    import torch

    if not data:
        raise InputError("Taylor importance needs data", expected="--calib data (labels optional)",
                         hint="or use --prune-importance l1|l2|bn")
    model.zero_grad()
    batch = {k: torch.as_tensor(data[k][:64]).to(device) for k in names}
    model.to(device)
    try:
        _taylor_loss(model, batch, data).backward()
    finally:
        model.to("cpu")  # Module.to moves the gradients along


def _taylor_loss(model: Any, batch: dict[str, Any], data: Mapping[str, Any]) -> Any:
    import torch

    from .outputs import flat_outputs, primary_output

    raw = model(*batch.values())
    out, primary = primary_output(raw)
    labels = data.get("labels") if hasattr(data, "get") else None
    if labels is not None and out.ndim == 2 and out.is_floating_point():
        loss = torch.nn.functional.cross_entropy(out, torch.as_tensor(labels[:64]).long().to(out.device))
    else:
        loss = out.float().pow(2).mean()  # label-free proxy: sensitivity of the output energy
    for name, t in flat_outputs(raw).items():
        if name != primary and t.is_floating_point() and t.requires_grad:
            loss = loss + t.pow(2).mean()
    return loss


def _resolve_protected(model: Any, names: tuple[str, ...]) -> list[Any]:
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods]
    if missing:
        close = [n for n in mods if n and any(m.split(".")[-1] in n for m in missing)][:8]
        raise InputError(f"--prune-protect names unknown module(s): {', '.join(missing)}",
                         expected="module names from model.named_modules()", found=", ".join(close) or "no close match")
    return [mods[n] for n in names]


def _shapes(model: Any, example_inputs: Mapping[str, Any]) -> dict[str, tuple[int, ...]] | str:
    """Every output tensor's shape by name (tensor, tuple, dict or ModelOutput), or why the forward failed."""
    import torch

    from .outputs import output_shapes

    try:
        with torch.no_grad():
            out = model(*example_inputs.values())
    except Exception as e:  # a broken forward is reported, not raised, so the caller can retry
        return f"{type(e).__name__}: {e}"
    return output_shapes(out)


def _widths(model: Any) -> dict[str, int]:
    import torch

    return {n: (m.out_features if isinstance(m, torch.nn.Linear) else m.out_channels) for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d))}


def prune_model(model: Any, example_inputs: Mapping[str, Any], *, ratio: float | None = 0.5, method: str = "channel",
                importance: str = "l1", target_macs: int | None = None, protect: tuple[str, ...] = (),
                round_to: int | None = 8, global_pruning: bool = False,
                data: Mapping[str, Any] | None = None, device: str = "cpu") -> PruneInfo:
    """Prune ``model`` in place; return what was removed. See the module docstring.

    The pruned model must keep its output shapes and run. Where a channel group is tied to a
    model input (a residual stream fed by the raw tokens, say) the layers whose widths broke the
    model are protected and pruning is retried from the original weights.
    """
    import copy

    want = _shapes(model, example_inputs)
    widths0 = _widths(model)
    original = copy.deepcopy(model.state_dict()), copy.deepcopy(model)
    extra: tuple[str, ...] = ()
    for attempt in range(4):
        trial = copy.deepcopy(original[1]) if attempt else model
        info = _prune_once(trial, example_inputs, ratio=ratio, method=method, importance=importance,
                           target_macs=target_macs, protect=protect + extra, round_to=round_to,
                           global_pruning=global_pruning, data=data, device=device)
        got = _shapes(trial, example_inputs)
        if got == want:
            if trial is not model:
                _adopt(model, trial)
            if extra:
                info.notes.append(f"kept the widths of {', '.join(extra)}: they are tied to a model input or output")
            return info
        changed = [n for n, w in _widths(trial).items() if w != widths0[n] and n not in extra]
        dims = {d for shape in (want.values() if isinstance(want, dict) else []) for d in shape[1:]}
        dims |= {d for x in example_inputs.values() for d in tuple(x.shape)[1:]}
        suspects = [n for n in changed if widths0[n] in dims]
        projections = {n for n, m in trial.named_modules() if any(m in projs for projs, _ in
                                                                     _attention_modules(trial).values())}
        culprits = tuple(n for n in suspects if n not in projections) or tuple(suspects)
        if not culprits:
            break
        extra += culprits
    raise InputError("pruning would change the model's interface or break its forward pass",
                     expected=f"outputs {want}", found=str(got),
                     hint="protect the layers that feed the outputs with --prune-protect NAME")


def _adopt(model: Any, pruned: Any) -> None:
    """Make ``model`` (the caller's object) the pruned one: swap its submodules and attributes."""
    model.__dict__.update(pruned.__dict__)


def _prune_once(model: Any, example_inputs: Mapping[str, Any], *, ratio: float | None, method: str, importance: str,
                target_macs: int | None, protect: tuple[str, ...], round_to: int | None, global_pruning: bool,
                data: Mapping[str, Any] | None, device: str = "cpu") -> PruneInfo:
    import torch

    if method not in METHODS:
        raise InputError(f"unknown pruning method {method!r}", expected=" | ".join(METHODS), found=method)
    if ratio is not None and not 0 < ratio < 1:
        raise InputError("pruning ratio must be between 0 and 1 (exclusive)", expected="0 < ratio < 1",
                         found=str(ratio))
    model.eval()
    macs0, params0 = count(model, example_inputs)
    names = {m: n for n, m in model.named_modules()}
    if method != "channel":
        sparsity = _mask(model, ratio if method == "unstructured" else 0.5, method, protect)
        macs1, params1 = count(model, example_inputs)
        return PruneInfo(method, ratio if method == "unstructured" else 0.5, "magnitude", params0, params1, macs0,
                         macs1, sparsity=sparsity, notes=[UNSTRUCTURED_NOTE])
    import torch_pruning as tp

    try:
        protected = _output_layers(model, example_inputs) + _resolve_protected(model, protect)
    except InputError:
        raise
    except Exception as e:  # Torch-Pruning's tracer fails on some dynamic Python code
        raise InputError("the pruner cannot trace this model", found=f"{type(e).__name__}: {str(e)[:300]}",
                         hint="protect the failing module with --prune-protect NAME, or prune without it") from e
    mha = [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    attn = _attention_modules(model)
    num_heads = {m: m.num_heads for m in mha}
    for owner, (projs, attr) in attn.items():
        num_heads.update({p: getattr(owner, attr) for p in projs})
    imp = _importance(importance)
    steps = 1 if target_macs is None else 20
    pruner = tp.pruner.MetaPruner(
        model, tuple(example_inputs.values()), importance=imp, global_pruning=global_pruning,
        pruning_ratio=ratio if target_macs is None else 0.9, iterative_steps=steps, ignored_layers=protected,
        round_to=round_to, num_heads=num_heads, prune_num_heads=bool(num_heads),
        prune_head_dims=False, head_pruning_ratio=(ratio or 0.5) if num_heads else 0.0)
    for _ in range(steps):
        if importance == "taylor":  # gradients in eval mode: BatchNorm statistics and dropout stay as they are
            _taylor_grads(model, data, list(example_inputs), device)
        pruner.step()
        model.zero_grad(set_to_none=True)
        if target_macs is not None:
            macs, _ = count(model, example_inputs)
            if macs is not None and macs <= target_macs:
                break
    model.eval()
    for m in mha:  # Torch-Pruning shrinks the projections; keep the module's bookkeeping consistent
        m.embed_dim = m.in_proj_weight.shape[0] // 3 if m.in_proj_weight is not None else m.embed_dim
        m.head_dim = m.embed_dim // m.num_heads
        m.kdim = m.vdim = m.embed_dim
    heads = {}
    for owner, (projs, attr) in attn.items():  # the module's forward reads its head count: update it
        before = getattr(owner, attr)
        after = pruner.num_heads.get(projs[0], before)
        setattr(owner, attr, after)
        width = projs[0].out_features
        for dim_attr in ("all_head_size", "inner_dim"):
            if hasattr(owner, dim_attr):
                setattr(owner, dim_attr, width)
        heads[names[owner]] = [before, after]
    macs1, params1 = count(model, example_inputs)
    info = PruneInfo("channel", ratio, importance, params0, params1, macs0, macs1,
                     protected=[names.get(m, "?") for m in protected], heads=heads)
    if mha:
        info.notes.append("nn.MultiheadAttention keeps its heads (its embed_dim is tied to the residual stream); "
                          "its feed-forward layers were pruned")
    if params1 == params0:
        info.notes.append(
            f"nothing was pruned: at ratio {ratio} with round_to={round_to} no layer could keep a multiple of "
            "round_to channels; lower --prune or the rounding multiple" if round_to else
            f"nothing was pruned at ratio {ratio}: every prunable layer is protected or tied to an input/output "
            "width; check --prune-protect")
        log.warning(info.notes[-1])
    if target_macs is not None and macs1 is not None and macs1 > target_macs:
        info.notes.append(f"reached {macs1:,} MACs, above the {target_macs:,} target at the 90% ratio cap")
    return info


def _mask(model: Any, ratio: float | None, method: str, protect: tuple[str, ...]) -> float:
    """Zero weights in place: global magnitude (unstructured) or 2-of-4 along the input dim. Returns sparsity."""
    import torch

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
              and n not in protect]
    with torch.no_grad():
        if method == "unstructured":
            allw = torch.cat([m.weight.abs().flatten() for _, m in layers])
            k = int(len(allw) * float(ratio or 0.5))
            thr = allw.kthvalue(max(k, 1)).values
            for _, m in layers:
                m.weight.mul_((m.weight.abs() > thr).to(m.weight.dtype))
        else:
            # 2:4 as TensorRT's sparse kernels read it: in every 4 consecutive input channels (at each kernel
            # position for convolutions) at most 2 non-zeros. Layers whose input channels are not a multiple
            # of 4 stay dense (and are not counted).
            layers = [(n, m) for n, m in layers if m.weight.shape[1] % 4 == 0]
            for _, m in layers:
                w = m.weight.permute(0, 2, 3, 1) if m.weight.ndim == 4 else m.weight  # K,R,S,C: C innermost
                g = w.abs().reshape(*w.shape[:-1], -1, 4)
                keep = g.argsort(dim=-1, descending=True)[..., :2]
                mask = torch.zeros_like(g).scatter_(-1, keep, 1.0).reshape(w.shape)
                if m.weight.ndim == 4:
                    mask = mask.permute(0, 3, 1, 2)
                m.weight.mul_(mask)
        total = sum(m.weight.numel() for _, m in layers)
        zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / total if total else 0.0


# -- persistence without pickle -----------------------------------------------------------
_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features", "embed_dim",
          "num_heads", "head_dim", "kdim", "vdim", "normalized_shape",
          # Hugging Face-style attention bookkeeping that forward() reads
          "num_attention_heads", "attention_head_size", "all_head_size", "inner_dim")


def describe_shapes(model: Any) -> dict[str, Any]:
    """Everything a factory-built model needs to take the pruned shapes: attributes and tensor shapes."""
    out: dict[str, Any] = {}
    for name, m in model.named_modules():
        attrs = {a: (list(v) if isinstance(v, tuple) else v) for a in _ATTRS if isinstance(v := getattr(m, a, None),
                                                                                           (int, tuple))}
        tensors = {k: list(t.shape) for k, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
                   if t is not None}
        if attrs or tensors:
            out[name] = {"type": type(m).__name__, "attrs": attrs, "tensors": tensors}
    return out


def _with(stem: Path, suffix: str) -> Path:
    return stem.parent / (stem.name + suffix)


def save_pruned(model: Any, stem: str | Path) -> tuple[Path, Path]:
    """Write ``stem.safetensors`` and ``stem.json`` (pruned shapes); no pickle anywhere."""
    from safetensors.torch import save

    from edgesdk.atomic import write_bytes, write_json

    stem = Path(stem)
    # clone: tied weights (an LM head sharing the embedding) share storage, which safetensors refuses
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    w = write_bytes(_with(stem, ".safetensors"), save(state))
    j = write_json(_with(stem, ".json"), {"format": "edgesdk-pruned-shapes", "version": 1,
                                               "modules": describe_shapes(model)})
    return w, j


def load_pruned(model: Any, stem: str | Path) -> Any:
    """Reshape a factory-built ``model`` to the recorded pruned shapes and load the weights."""
    import torch

    stem = Path(stem)
    try:
        spec = json.loads(_with(stem, ".json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read pruned shapes {_with(stem, '.json')}", found=str(e)) from e
    mods = dict(model.named_modules())
    unknown = [n for n in spec["modules"] if n not in mods]
    if unknown:
        raise ModelLoadError("the pruned description does not fit this model",
                             found=f"unknown modules: {', '.join(unknown[:8])}",
                             hint="rebuild from the same factory (and arguments) that was pruned")
    with torch.no_grad():
        for name, desc in spec["modules"].items():
            m = mods[name]
            for a, v in desc["attrs"].items():
                setattr(m, a, tuple(v) if isinstance(v, list) else v)
            for t, shape in desc["tensors"].items():
                cur = getattr(m, t)
                new = torch.zeros(shape, dtype=cur.dtype)
                if isinstance(cur, torch.nn.Parameter):
                    setattr(m, t, torch.nn.Parameter(new, requires_grad=cur.requires_grad))
                else:
                    m.register_buffer(t, new)
    from edgesdk.intake import load_weights

    load_weights(model, _with(stem, ".safetensors"))
    return model.eval()
