"""Tiny architectures covering the graph patterns exports break on. Each builds in milliseconds."""
from __future__ import annotations

import torch
from torch import nn


class Small(nn.Module):
    """A 4 -> 16 -> 3 MLP: the fastest model to push through the whole pipeline."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


class BnNet(nn.Module):
    """Two conv + BatchNorm blocks and a linear head (pruning, Taylor importance, checkpoint layouts)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.b(self.a(h)))
        return self.head(h.mean((2, 3)))


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU6(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                                  nn.BatchNorm2d(16), nn.ReLU6(), nn.Conv2d(16, 8, 1))
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 4, 3, padding=1)
        self.right = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))
        self.fuse = nn.Conv2d(10, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1)
        return self.head(self.fuse(h).mean((2, 3)))


class TinyTransformer(nn.Module):
    """One pre-norm encoder block (multi-head attention + MLP) on [batch, 8, 32] tokens."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=64, dropout=0.0, batch_first=True,
                                                norm_first=True)
        self.head = nn.Linear(dim, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(tokens).mean(1))


class TwoInTwoOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.img = nn.Conv2d(3, 4, 3, padding=1)
        self.vec = nn.Linear(6, 4)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.relu(self.img(image)).mean((2, 3))
        return pooled + self.vec(features), torch.sigmoid(pooled)


class Unexportable(nn.Module):
    """Uses torch.linalg.eigvals (complex output), which neither ONNX exporter can express."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(x).real


def make_inputs(name: str, batch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    if name in ("TinyTransformer", "AttentionNet"):
        return {"tokens": torch.randn(batch, 8, 32, generator=g)}
    if name == "TwoInTwoOut":
        return {"image": torch.rand(batch, 3, 16, 16, generator=g), "features": torch.randn(batch, 6, generator=g)}
    if name == "Unexportable":
        return {"x": torch.randn(batch, 4, 4, generator=g)}
    return {"x": torch.rand(batch, 3, 16, 16, generator=g)}


ARCHITECTURES = {cls.__name__: cls for cls in (ConvBnRelu, Residual, Depthwise, Concat, TinyTransformer, TwoInTwoOut)}


def build(name: str) -> nn.Module:
    """Deterministic weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = ARCHITECTURES[name]()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


class HeadAttention(nn.Module):
    """BERT-style self-attention with separate q/k/v projections; heads can be pruned whole."""

    def __init__(self, dim: int = 32, num_heads: int = 4, head_dim: int = 8) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.q = nn.Linear(dim, num_heads * head_dim)
        self.k = nn.Linear(dim, num_heads * head_dim)
        self.v = nn.Linear(dim, num_heads * head_dim)
        self.out = nn.Linear(num_heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim**0.5, dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class AttentionNet(nn.Module):
    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.attn = HeadAttention(dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.head = nn.Linear(dim, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.norm(tokens + self.attn(tokens))
        return self.head((h + self.mlp(h)).mean(1))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=4),
                                  nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 1))
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


ARCHITECTURES.update({"AttentionNet": AttentionNet, "Grouped": Grouped})


class DetNet(nn.Module):
    """ONNX exports linalg.det (Det op); litert-torch has no lowering for it: a TFLite-only failure."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(9, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.lin(x.reshape(x.shape[0], 9)).reshape(-1, 3, 3)
        return torch.linalg.det(m).unsqueeze(-1)


class FlattenNet(nn.Module):
    """conv -> flatten -> linear: litert-torch cannot keep the batch symbolic through the flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))
