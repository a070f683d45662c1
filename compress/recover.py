"""Recovery after pruning: label-free knowledge distillation, labelled fine-tuning, or the user's own loop.

Recovery fits the machine: ``time_budget_s`` bounds it (the first steps are timed and the schedule is
planned for the steps that fit), and ``device`` trains on CUDA when one is there; the record says how many
steps ran, how long one took, where, and what the budget cut.

Example::

    info = recover(student, teacher, {"x": x_unlabelled}, steps=300, lr=1e-3)
    info = recover(student, teacher, data, steps=1000, time_budget_s=120)   # as many as fit in 2 minutes
    info = recover(student, teacher, {"x": x, "labels": y})          # KD + cross-entropy
    info = recover(student, teacher, data, hook=my_train_loop)       # hook(model, data) -> model
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from edgesdk.errors import InputError
from edgesdk.recipe import TRAIN_DEVICES

from .outputs import flat_outputs, primary_output

RecoveryHook = Callable[[Any, Mapping[str, np.ndarray]], Any]
TIMED_STEPS = 3  # steps timed before the rest are planned (they warm the learning rate up)
OVERRUN = 1.5  # a run slowed down after planning stops at this multiple of the budget


def train_device(name: str = "auto") -> str:
    """"cpu" or "cuda" for a requested training device: auto takes CUDA when torch sees one."""
    import torch

    if name not in TRAIN_DEVICES:
        raise InputError(f"unknown training device {name!r}", expected=" | ".join(TRAIN_DEVICES), found=name)
    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        raise InputError("--train-device cuda, but torch sees no CUDA device",
                         expected="an NVIDIA GPU and a CUDA build of torch", found=f"torch {torch.__version__}",
                         hint="use --train-device auto (CUDA when present, else the CPU) or cpu")
    return "cuda" if name == "cuda" or (name == "auto" and has_cuda) else "cpu"


@dataclass
class _Plan:
    """How many steps run: ``total`` is fixed after the first TIMED_STEPS are timed when there is a budget."""

    total: int
    budget_s: float | None
    step_s: float | None = None
    stopped: str | None = None

    def lr_factor(self, step: int) -> float:
        """Linear warm-up over the timed steps, then a cosine decay to 0 at ``total``."""
        if step < TIMED_STEPS:
            return (step + 1) / TIMED_STEPS
        rest = max(self.total - TIMED_STEPS, 1)
        return 0.5 * (1 + math.cos(math.pi * min(step - TIMED_STEPS, rest) / rest))

    def after(self, step: int, elapsed: float) -> bool:
        """Called after each step (0-based); plans the total after the timed steps; False: stop now."""
        if self.budget_s is None:
            return step + 1 < self.total
        if step + 1 == min(TIMED_STEPS, self.total):
            self.step_s = elapsed / (step + 1)
            fits = int(self.budget_s / self.step_s) if self.step_s > 0 else self.total
            if fits < self.total:
                self.total, self.stopped = max(fits, step + 1), "time budget"
        elif TIMED_STEPS < step + 1 < self.total and elapsed > OVERRUN * self.budget_s:
            self.total, self.stopped = step + 1, "time budget overrun (the steps slowed down)"
        return step + 1 < self.total


def recover(student: Any, teacher: Any, data: Mapping[str, np.ndarray] | None, input_names: list[str], *,
            steps: int = 1000, lr: float = 3e-3, batch_size: int = 64, temperature: float = 2.0,
            hook: RecoveryHook | None = None, seed: int = 0, time_budget_s: float | None = None,
            device: str = "cpu", on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train ``student`` in place to match ``teacher`` (and ``labels`` when the data has them).

    At most ``steps`` steps, and no more than fit in ``time_budget_s`` seconds (None: no time limit).
    ``device``: "cpu" or "cuda" (see ``train_device``); the student is handed back on the CPU and the
    teacher is never moved (a copy trains on the device). ``on_progress(step, total)`` is called as
    training goes (about 100 times in all); ``total`` shrinks once a budget has planned the run."""
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
    plan = _Plan(total=max(steps, 1), budget_s=time_budget_s)
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
    on_device = copy.deepcopy(teacher).to(device) if device != "cpu" else teacher
    student.to(device).train()
    try:
        opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, plan.lr_factor)
        losses = _train(student, on_device, data, input_names, labels, plan, batch_size, temperature, opt, sched,
                        rng, n, device, on_progress)
    finally:
        student.to("cpu").eval()  # never handed back in train mode or on the device, even when a step raised
    return {"method": "distillation" + (" + labels" if labels is not None else ""), "steps": len(losses),
            "max_steps": steps, "time_budget_s": time_budget_s, "stopped_by": plan.stopped,
            "step_time_s": round(plan.step_s, 4) if plan.step_s is not None else None, "device": device, "lr": lr,
            "batch_size": batch_size, "distilled_output": names[0], "distilled_outputs": names,
            "loss_first": round(float(np.mean(losses[:10])), 5) if losses else None,
            "loss_last": round(float(np.mean(losses[-10:])), 5) if losses else None,
            "time_s": round(time.perf_counter() - t0, 2)}


def _train(student: Any, teacher: Any, data: Mapping[str, np.ndarray], input_names: list[str],
           labels: np.ndarray | None, plan: _Plan, batch_size: int, temperature: float, opt: Any, sched: Any,
           rng: np.random.Generator, n: int, device: str,
           on_progress: Callable[[int, int], None] | None) -> list[float]:
    import torch
    import torch.nn.functional as F

    losses: list[float] = []
    t0 = time.perf_counter()
    step, going = 0, plan.total > 0
    while going:
        idx = rng.choice(n, size=min(batch_size, n), replace=False)
        batch = [torch.from_numpy(np.ascontiguousarray(data[k][idx])).to(device) for k in input_names]
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
            loss = loss + F.cross_entropy(s_out, torch.from_numpy(np.asarray(labels)[idx]).long().to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())  # .item() waits for the device: the step's time is its real time
        going = plan.after(step, time.perf_counter() - t0)
        step += 1
        if on_progress is not None and (step % max(1, plan.total // 100) == 0 or not going):
            on_progress(step, plan.total)
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
