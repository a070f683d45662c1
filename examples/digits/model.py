"""A small CNN for scikit-learn's 8x8 handwritten digits (input ``x``: N x 1 x 8 x 8 float32 in [0, 1]).

The CLI loads it as ``examples/digits/model.py:build``.
"""
from __future__ import annotations

import torch
from torch import nn


def _cbr(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DigitsNet(nn.Module):
    """conv-bn-relu x2, max-pool, a residual conv block, global average pool, linear head."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(_cbr(1, width), _cbr(width, 2 * width), nn.MaxPool2d(2))
        self.block = _cbr(2 * width, 2 * width)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.block(h)
        return self.head(h.mean(dim=(2, 3)))


def build(num_classes: int = 10, width: int = 32) -> DigitsNet:
    """Factory used by ``edgesdk compress examples/digits/model.py:build``."""
    return DigitsNet(num_classes, width)
