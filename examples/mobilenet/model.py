"""A MobileNetV2 written here (torchvision cannot be installed with the CPU torch): inverted residual
blocks (1x1 expand, 3x3 depthwise, 1x1 linear projection) with ReLU6, the settings table and width
multiplier of Sandler et al. 2018 / torchvision's mobilenet_v2; random weights (nothing is downloaded).
Used by benchmarks/ and by the INT8 TFLite tests, the canonical mobile network.

    edgesdk compress examples/mobilenet/model.py:build --input x:1x3x224x224 --targets onnx,tflite \\
        --prune 0.3 --quantize int8 -o out/mobilenet_v2
"""
from __future__ import annotations

import torch
from torch import nn

# expansion t, output channels c, repeats n, first stride s
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _divisible(v: float, by: int = 8) -> int:
    """Channels rounded to a multiple of 8, never below 90% of ``v`` (torchvision's _make_divisible)."""
    n = max(by, int(v + by / 2) // by * by)
    return n + by if n < 0.9 * v else n


def _cbr(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [_cbr(cin, hidden)] if expand != 1 else []
        layers += [_cbr(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        cin = _divisible(32 * width)
        last = _divisible(1280 * max(1.0, width))
        layers: list[nn.Module] = [_cbr(3, cin, 3, 2)]
        for t, c, n, s in SETTINGS:
            cout = _divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(_cbr(cin, last))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def build(num_classes: int = 1000, width: float = 1.0, seed: int = 0) -> MobileNetV2:
    """MobileNetV2 (3.5M parameters at width 1.0, 300M MACs at 224x224) with seeded random weights and
    BatchNorm statistics that are not the identity, so INT8 calibration sees realistic ranges."""
    torch.manual_seed(seed)
    model = MobileNetV2(num_classes, width)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()
