"""Train the digits CNN on scikit-learn's bundled handwritten digits (real data, no download).

    python examples/digits/train.py --out DIR [--epochs 30] [--seed 0] [--size 32]

``--size 32`` upscales the 8x8 images to 32x32 (bilinear) and trains the residual net (``build_resnet``)
instead of the small CNN: what ``make demo`` compresses.

Writes DIR/weights.safetensors, DIR/calib.npz (``x``: the unlabelled training images),
DIR/eval.npz (``x``, ``labels``: the held-out split) and DIR/train_summary.json.
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
from model import build, build_resnet  # noqa: E402


def _atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def load_data(seed: int = 0, size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_train, y_test): pixels scaled to [0, 1], N x 1 x size x size (upscaled bilinearly
    from 8x8), stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    if size != 8:
        x = torch.nn.functional.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear",
                                            align_corners=False).clamp(0, 1).numpy()
    y = d.target.astype(np.int64)
    return tuple(train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed))  # type: ignore[return-value]


def train(out_dir: str | Path, epochs: int = 30, seed: int = 0, size: int = 8) -> dict:
    """Train, evaluate on the held-out split and write the files; returns the summary."""
    from safetensors.torch import save

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.manual_seed(seed)
    x_tr, x_te, y_tr, y_te = load_data(seed, size)
    model = build() if size == 8 else build_resnet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {loss.item():.4f}", flush=True)
    model.eval()
    with torch.no_grad():
        train_acc = (model(xt).argmax(1) == yt).float().mean().item() * 100
        test_acc = (model(torch.from_numpy(x_te)).argmax(1) == torch.from_numpy(y_te)).float().mean().item() * 100
    _atomic(out / "weights.safetensors", save({k: v.contiguous() for k, v in model.state_dict().items()}))
    # calib.npz holds the unlabelled training images: quantization calibrates on the first 256,
    # recovery after pruning distils on all of them.
    for name, arrays in (("calib.npz", {"x": x_tr}), ("eval.npz", {"x": x_te, "labels": y_te})):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        _atomic(out / name, buf.getvalue())
    summary = {"epochs": epochs, "seed": seed, "size": size, "train_accuracy": round(train_acc, 2),
               "heldout_accuracy": round(test_acc, 2), "heldout_samples": int(len(y_te)),
               "seconds": round(time.time() - t0, 1)}
    _atomic(out / "train_summary.json", json.dumps(summary, indent=2).encode())
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=8, help="image size: 8 (the small CNN) or e.g. 32 (the residual net)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    s = train(args.out, args.epochs, args.seed, args.size)
    print(f"held-out accuracy {s['heldout_accuracy']:.2f}% on {s['heldout_samples']} digits "
          f"(train {s['train_accuracy']:.2f}%), {s['seconds']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
