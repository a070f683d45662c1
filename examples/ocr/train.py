"""Train the CRNN text-line reader on rendered digit lines (CTC loss), then write what compress needs.

    python examples/ocr/train.py --out DIR [--steps 500] [--seed 0] [--calib-lines 256]

Writes DIR/weights.safetensors, DIR/calib.npz (``x``: unlabelled lines), DIR/eval.npz (``x``, ``labels``,
``label_lengths``: held-out lines with transcripts, for ``--metric cer``) and DIR/train_summary.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import render_lines  # noqa: E402
from model import build  # noqa: E402


def _atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _greedy_cer(logp: torch.Tensor, labels: np.ndarray, lengths: np.ndarray) -> float:
    """Character error rate (%) of greedy CTC decoding, the way edgesdk's `cer` metric computes it."""
    from edgesdk.metrics import METRICS

    return METRICS["cer"].compute({"logp": logp.numpy()}, {"labels": labels, "label_lengths": lengths})


def train(out_dir: str | Path, steps: int = 500, seed: int = 0, batch: int = 32, calib_lines: int = 256) -> dict:
    """Train on freshly rendered lines, evaluate on a held-out set and write the files; returns the summary."""
    from safetensors.torch import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.manual_seed(seed)
    x_tr, y_tr, l_tr = render_lines(4096, seed=seed)
    x_ev, y_ev, l_ev = render_lines(256, seed=seed + 1)
    model = build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps, pct_start=0.15)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    gen = np.random.default_rng(seed)
    for step in range(steps):
        idx = gen.integers(0, len(x_tr), batch)
        logp = model(torch.from_numpy(x_tr[idx]))
        targets = torch.from_numpy(y_tr[idx])
        loss = ctc(logp, targets, torch.full((batch,), logp.shape[0], dtype=torch.long), torch.from_numpy(l_tr[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1:4d}/{steps}  ctc loss {loss.item():.3f}", flush=True)
    model.eval()
    with torch.no_grad():
        cer = _greedy_cer(model(torch.from_numpy(x_ev)), y_ev, l_ev)
    _atomic(out / "weights.safetensors", save({k: v.contiguous() for k, v in model.state_dict().items()}))
    for name, arrays in (("calib.npz", {"x": x_tr[:calib_lines]}),
                         ("eval.npz", {"x": x_ev, "labels": y_ev, "label_lengths": l_ev})):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        _atomic(out / name, buf.getvalue())
    summary = {"steps": steps, "seed": seed, "heldout_cer": round(cer, 2), "heldout_lines": int(len(x_ev)),
               "seconds": round(time.time() - t0, 1)}
    _atomic(out / "train_summary.json", json.dumps(summary, indent=2).encode())
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib-lines", type=int, default=256,
                    help="unlabelled lines in calib.npz (INT8 TFLite calibrates on each, one at a time)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    s = train(args.out, args.steps, args.seed, calib_lines=args.calib_lines)
    print(f"held-out CER {s['heldout_cer']:.2f}% on {s['heldout_lines']} lines, {s['seconds']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
