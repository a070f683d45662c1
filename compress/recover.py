"""Recovery after pruning: label-free knowledge distillation, labelled fine-tuning, or the user's own loop.

Example::

    info = recover(student, teacher, {"x": x_unlabelled}, steps=300, lr=1e-3)
    info = recover(student, teacher, {"x": x, "labels": y})          # KD + cross-entropy
    info = recover(student, teacher, data, hook=my_train_loop)       # hook(model, data) -> model
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np

from edgesdk.errors import InputError

from .outputs import flat_outputs, primary_output

RecoveryHook = Callable[[Any, Mapping[str, np.ndarray]], Any]


def recover(student: Any, teacher: Any, data: Mapping[str, np.ndarray] | None, input_names: list[str], *,
            steps: int = 1000, lr: float = 3e-3, batch_size: int = 64, temperature: float = 2.0,
            hook: RecoveryHook | None = None, seed: int = 0,
            on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train ``student`` in place to match ``teacher`` (and ``labels`` when the data has them).

    ``on_progress(step, steps)`` is called as training goes (about 100 times in all)."""
    import torch

    t0 = time.perf_counter()
    if hook is not None:
        out = hook(student, data or {})
        if out is not None and out is not student:
            raise InputError("the recovery hook must train the model in place and return it (or None)",
                             found=type(out).__name__)
        return {"method": "hook", "time_s": round(time.perf_counter() - t0, 2)}
    if not data:
        raise InputError("recovery needs data", expected="--calib data (unlabelled is fine) or a recovery hook",
                         hint="or disable recovery with --no-recover")
    n = len(data[input_names[0]])
    labels = data.get("labels")
    rng = np.random.default_rng(seed)
    teacher.eval()
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    if labels is not None:
        labels = np.asarray(labels)
        with torch.no_grad():
            probe, probe_name = primary_output(student(*[torch.from_numpy(np.ascontiguousarray(data[k][:2]))
                                                for k in input_names]))
        classes = probe.shape[1] if probe.ndim == 2 else None
        if classes is None or classes < 2:  # not a multi-class head: the labels cannot be a class target
            labels = None
        elif labels.min() < 0 or labels.max() >= classes:
            raise InputError("recovery labels are not class ids of this model",
                             expected=f"0 <= labels < {classes} (the width of output {probe_name!r})",
                             found=f"labels from {labels.min()} to {labels.max()}",
                             hint="fix the labels, or drop them to recover by distillation alone")
    with torch.no_grad():  # which outputs are matched, named for the manifest
        names = _distilled(teacher(*[torch.from_numpy(np.ascontiguousarray(data[k][:2])) for k in input_names]))
    student.train()
    try:
        losses = _train(student, teacher, data, input_names, labels, steps, batch_size, temperature, opt, sched, rng,
                        n, on_progress)
    finally:
        student.eval()  # never handed back in train mode, even when a step raised
    return {"method": "distillation" + (" + labels" if labels is not None else ""), "steps": steps, "lr": lr,
            "batch_size": batch_size, "distilled_output": names[0], "distilled_outputs": names,
            "loss_first": round(float(np.mean(losses[:10])), 5) if losses else None,
            "loss_last": round(float(np.mean(losses[-10:])), 5) if losses else None,
            "time_s": round(time.perf_counter() - t0, 2)}


def _train(student: Any, teacher: Any, data: Mapping[str, np.ndarray], input_names: list[str],
           labels: np.ndarray | None, steps: int, batch_size: int, temperature: float, opt: Any, sched: Any,
           rng: np.random.Generator, n: int, on_progress: Callable[[int, int], None] | None) -> list[float]:
    import torch
    import torch.nn.functional as F

    losses: list[float] = []
    for step in range(steps):
        idx = rng.choice(n, size=min(batch_size, n), replace=False)
        batch = [torch.from_numpy(np.ascontiguousarray(data[k][idx])) for k in input_names]
        with torch.no_grad():
            t_raw = t_out = teacher(*batch)
        s_raw = student(*batch)
        (t_out, primary), (s_out, _) = primary_output(t_out), primary_output(s_raw)
        if s_out.ndim == 2 and s_out.shape[1] > 1:  # classifier: soft-target KL
            loss = F.kl_div(F.log_softmax(s_out / temperature, 1), F.softmax(t_out / temperature, 1),
                            reduction="batchmean") * temperature**2
        else:
            loss = F.mse_loss(s_out, t_out)
        loss = loss + _other_outputs_loss(flat_outputs(s_raw), flat_outputs(t_raw), primary)
        if labels is not None and s_out.ndim == 2:
            loss = loss + F.cross_entropy(s_out, torch.from_numpy(np.asarray(labels)[idx]).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if on_progress is not None and ((step + 1) % max(1, steps // 100) == 0 or step + 1 == steps):
            on_progress(step + 1, steps)
    student.zero_grad(set_to_none=True)  # no gradients left on the returned model
    return losses


def _distilled(out: Any) -> list[str]:
    """The outputs distillation matches: the primary one first, then every other float output."""
    primary = primary_output(out)[1]
    return [primary] + [k for k, v in flat_outputs(out).items() if k != primary and v.is_floating_point()]


def _other_outputs_loss(student: dict[str, Any], teacher: dict[str, Any], primary: str) -> Any:
    """MSE on every float output besides the primary one, relative to the teacher's mean square so that
    outputs of any scale (boxes in pixels, scores near 0) weigh alike; 0 when there are none."""
    import torch.nn.functional as F

    loss = 0.0
    for name, s in student.items():
        t = teacher.get(name)
        if name == primary or t is None or not s.is_floating_point() or s.shape != t.shape:
            continue
        loss = loss + F.mse_loss(s, t) / (t.pow(2).mean() + 1e-6)
    return loss
