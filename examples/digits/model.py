"""CNNs for scikit-learn's handwritten digits (input ``x``: N x 1 x H x W float32 in [0, 1]).

``build``: a small CNN for the native 8x8 images (``examples/digits/model.py:build``, what the tests use).
``build_resnet``: a residual net for the digits upscaled to 32x32 (``train.py --size 32``), large enough
that pruning, INT8 and the choice of backend each pay, which is what ``make demo`` shows.
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


class _Residual(nn.Module):
    """Two 3x3 conv-bn layers with a shortcut (a 1x1 conv-bn when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class DigitsResNet(nn.Module):
    """A ResNet-style net for 32x32 digits: stem, three stages of two residual blocks (widths w, 2w, 4w, the
    last two halving the resolution), global average pool, linear head."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.stem = _cbr(1, w)
        self.stages = nn.Sequential(_Residual(w, w, 1), _Residual(w, w, 1), _Residual(w, 2 * w, 2),
                                    _Residual(2 * w, 2 * w, 1), _Residual(2 * w, 4 * w, 2),
                                    _Residual(4 * w, 4 * w, 1))
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


def build_resnet(num_classes: int = 10, width: int = 32) -> DigitsResNet:
    """Factory used by ``edgesdk compress examples/digits/model.py:build_resnet --input x:1x1x32x32``."""
    return DigitsResNet(num_classes, width)
