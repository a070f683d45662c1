"""Seeded models with one planted layer whose activation range makes per-tensor INT8 fail, for edgesdk debug's
acceptance benchmark (benchmarks/debug_planted.py) and the parity-pointer test.

Each model computes the same function as its unplanted twin: one output channel (CNN) or feature (transformer)
of the planted layer is scaled up by ``scale`` and the next layer's weights that read it are scaled down by the
same factor (ReLU and LayerNorm's affine are positively homogeneous). In float nothing changes; in INT8 the
planted activation's per-tensor scale grows ``scale`` times and every other channel of it rounds to a few
levels. That is the outlier channel of a real network (a huge-scale conv channel, an LLM's outlier feature),
planted where we know it is.

Example::

    case = CASES[3]
    model, inputs = case.build()
    case.planted          # "blocks.2": the module the debug report should name first
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class PlantedCNN(nn.Module):
    """A plain conv stack (no BatchNorm, so every conv keeps its own module name), pooled into a linear head."""

    def __init__(self, widths: list[int], classes: int = 10) -> None:
        super().__init__()
        chans = [1, *widths]
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip(chans, chans[1:]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(torch.flatten(self.pool(x), 1))

    @torch.no_grad()
    def plant(self, index: int, channel: int, scale: float) -> None:
        """Block ``index``'s output ``channel`` times ``scale``; its readers' weights divided by it."""
        conv = self.blocks[index].conv
        conv.weight[channel] *= scale
        conv.bias[channel] *= scale
        if index + 1 < len(self.blocks):
            self.blocks[index + 1].conv.weight[:, channel] /= scale
        else:  # the pool is linear: the head reads the channel
            self.head.weight[:, channel] /= scale


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """A pre-norm transformer block: LayerNorm -> attention, LayerNorm -> MLP, each with a residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.ln2, self.fc1, self.act, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), \
            nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class PlantedTransformer(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x).mean(dim=1))

    @torch.no_grad()
    def plant(self, index: int, norm: str, feature: int, scale: float) -> None:
        """Block ``index``'s LayerNorm ``norm`` ('ln1'/'ln2') outputs feature ``feature`` times ``scale``; the
        Linear reading it has that input column divided by it (an LLM's outlier feature)."""
        block = self.blocks[index]
        ln = getattr(block, norm)
        ln.weight[feature] *= scale
        ln.bias[feature] *= scale
        reader = block.attn.qkv if norm == "ln1" else block.fc1
        reader.weight[:, feature] /= scale


@dataclass(frozen=True)
class Case:
    name: str
    planted: str  # the module path the report should name (a report naming a module inside it counts)
    make: Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]]
    seed: int

    def build(self) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        torch.manual_seed(self.seed)
        model, inputs = self.make()
        return model.eval(), inputs

    def calibration(self, n: int = 64) -> dict[str, torch.Tensor]:
        """``n`` calibration samples shaped like the inputs (seeded, distinct from the model's seed)."""
        _model, inputs = self.build()
        g = torch.Generator().manual_seed(10_000 + self.seed)
        return {k: torch.randn((n, *v.shape[1:]), generator=g) for k, v in inputs.items()}


def _cnn(widths: list[int], index: int, channel: int, scale: float) -> Callable[[], tuple[nn.Module, dict]]:
    def make() -> tuple[nn.Module, dict[str, torch.Tensor]]:
        m = PlantedCNN(widths)
        m.plant(index, channel, scale)
        return m, {"x": torch.randn(1, 1, 16, 16)}

    return make


def _transformer(depth: int, index: int, norm: str, feature: int, scale: float) -> Callable[[], tuple[nn.Module, dict]]:
    def make() -> tuple[nn.Module, dict[str, torch.Tensor]]:
        m = PlantedTransformer(depth=depth)
        m.plant(index, norm, feature, scale)
        return m, {"x": torch.randn(1, 12, 32)}

    return make


SCALE = 300.0  # the planted channel's growth: a real outlier channel is 20-1000x its neighbours
CASES: list[Case] = [
    Case("cnn4-block0", "blocks.0", _cnn([8, 16, 16, 32], 0, 3, SCALE), seed=0),
    Case("cnn4-block1", "blocks.1", _cnn([8, 16, 16, 32], 1, 5, SCALE), seed=1),
    Case("cnn4-block2", "blocks.2", _cnn([8, 16, 16, 32], 2, 0, SCALE), seed=2),
    Case("cnn5-block3", "blocks.3", _cnn([8, 8, 16, 16, 32], 3, 11, SCALE), seed=3),
    Case("cnn5-block1", "blocks.1", _cnn([8, 8, 16, 16, 32], 1, 7, SCALE), seed=4),
    Case("cnn3-block1", "blocks.1", _cnn([16, 32, 32], 1, 30, SCALE), seed=5),
    Case("vit2-block0-ln1", "blocks.0.ln1", _transformer(2, 0, "ln1", 4, SCALE), seed=6),
    Case("vit2-block0-ln2", "blocks.0.ln2", _transformer(2, 0, "ln2", 17, SCALE), seed=7),
    Case("vit2-block1-ln1", "blocks.1.ln1", _transformer(2, 1, "ln1", 9, SCALE), seed=8),
    Case("vit2-block1-ln2", "blocks.1.ln2", _transformer(2, 1, "ln2", 26, SCALE), seed=9),
]


def names(module: str | None, planted: str) -> bool:
    """True when the report's module is the planted one or inside it."""
    return module is not None and (module == planted or module.startswith(planted + "."))
