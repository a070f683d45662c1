"""Rendered text lines with their transcripts: real glyphs from the font Pillow ships, no download.

Each line holds 4-8 digits drawn at a random size, position and ink level over a noisy background,
the kind of crop a receipt or meter reader hands its OCR model.

Example::

    x, labels, lengths = render_lines(256, seed=0)   # (256, 1, 32, 128) float32, (256, 8) int64, (256,)
"""
from __future__ import annotations

import numpy as np

from model import ALPHABET

HEIGHT, WIDTH, MAX_LEN = 32, 128, 8


def render_lines(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` lines: images (N, 1, 32, 128) in [0, 1] (ink dark on light), labels (N, 8) as class ids 1..10
    padded with 0 (the blank), and the label lengths (N,)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    fonts = {s: ImageFont.load_default(size=s) for s in (15, 16, 17, 18)}
    images = np.empty((n, 1, HEIGHT, WIDTH), np.float32)
    labels = np.zeros((n, MAX_LEN), np.int64)
    lengths = np.empty(n, np.int64)
    for i in range(n):
        k = int(rng.integers(4, MAX_LEN + 1))
        digits = rng.integers(0, len(ALPHABET), k)
        text = "".join(ALPHABET[d] for d in digits)
        size = int(rng.choice(list(fonts)))
        img = Image.new("L", (WIDTH, HEIGHT), int(rng.integers(200, 256)))
        left = int(rng.integers(0, max(1, WIDTH - int(fonts[size].getlength(text)) - 1)))
        ImageDraw.Draw(img).text((left, int(rng.integers(2, 10))), text, font=fonts[size],
                                 fill=int(rng.integers(0, 80)))
        pixels = np.asarray(img, np.float32) / 255.0 + rng.normal(0, 0.04, (HEIGHT, WIDTH))
        images[i, 0] = np.clip(pixels, 0, 1)
        labels[i, :k] = digits + 1
        lengths[i] = k
    return images, labels, lengths
