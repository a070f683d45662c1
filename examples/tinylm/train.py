"""Train a small Llama-shaped language model on real English text that ships with Python (the standard
library's docstrings), offline, in a few minutes on 2 cores, and save it as a Hugging Face folder that
``edgesdk compress`` takes.

    python examples/tinylm/train.py --out DIR [--minutes 2.5] [--seed 0]
    edgesdk compress DIR/model --quantize int4 --eval-text DIR/heldout.txt -o DIR/out

Writes DIR/model/ (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
generation_config.json), DIR/heldout.txt (the held-out 5% of paragraphs, never trained on) and
DIR/train_summary.json (steps, time, held-out perplexity before and after training).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import split, stdlib_text  # noqa: E402
from hf import config, save_model, save_tokenizer  # noqa: E402

SIZES = {"hidden": 192, "layers": 3, "heads": 6, "kv_heads": 2, "context": 512}
SEQ, BATCH = 64, 16


def perplexity(model: torch.nn.Module, ids: torch.Tensor, windows: int = 16) -> float:
    """exp(mean next-token loss) over up to ``windows`` consecutive windows of SEQ tokens of ``ids``."""
    n = min(windows, (len(ids) - 1) // SEQ)
    x = ids[: n * SEQ].view(n, SEQ)
    with torch.no_grad():
        return math.exp(float(model(input_ids=x, labels=x).loss))


def train(out: Path, minutes: float = 2.5, seed: int = 0, max_steps: int = 100_000) -> dict:
    """Tokenizer, model, AdamW with warm-up and cosine decay until ``minutes`` (or ``max_steps``) are spent."""
    import transformers as tf

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    folder = out / "model"
    text, held_out = split(stdlib_text())
    tok = save_tokenizer(folder, text, vocab_size=2048)
    (out / "heldout.txt").write_text(held_out)
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
    held = torch.tensor(tok(held_out, add_special_tokens=False)["input_ids"])
    model = tf.AutoModelForCausalLM.from_config(config("llama", len(tok), **SIZES))
    model.eval()
    before = perplexity(model, held)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    budget, t0, step = minutes * 60, time.time(), 0
    model.train()
    while step < max_steps and time.time() - t0 < budget:
        frac = (time.time() - t0) / budget  # the schedule follows the time spent, not a step count
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        starts = torch.randint(0, len(ids) - SEQ - 1, (BATCH,), generator=gen)
        x = torch.stack([ids[int(i):int(i) + SEQ] for i in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
    model.eval()
    summary = {"steps": step, "train_s": round(time.time() - t0, 1), "tokens_seen": step * BATCH * SEQ,
               "parameters": sum(p.numel() for p in model.parameters()), "train_tokens": len(ids),
               "heldout_ppl_before": round(before, 2), "heldout_ppl_after": round(perplexity(model, held), 2)}
    save_model(folder, model=model)
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--minutes", type=float, default=2.5, help="training time budget (default 2.5)")
    ap.add_argument("--max-steps", type=int, default=100_000, help="stop after this many steps at the latest")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        raise SystemExit(f"error: --out {args.out} exists and is not a directory")
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(train(args.out, args.minutes, args.seed, args.max_steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
