"""Models that are not our examples, the shapes users bring: a two-output detector, BERT with ids and a mask,
a ViT, LSTM and GRU classifiers, a UNet with skip concatenations. Built from code or transformers configs
(random weights, nothing downloaded); each builds in well under a second."""
from __future__ import annotations

import torch
from torch import nn


class Detector(nn.Module):
    """A single-stage detector head over a small backbone: boxes (N, A, 4) and sigmoid scores (N, A, 3)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()

        def down(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.backbone = nn.Sequential(down(3, 16), down(16, 32), down(32, 32), down(32, 64))
        self.boxes = nn.Conv2d(64, 4, 1)
        self.scores = nn.Conv2d(64, classes, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.backbone(image)
        boxes = self.boxes(f).flatten(2).transpose(1, 2)
        scores = torch.sigmoid(self.scores(f)).flatten(2).transpose(1, 2)
        return boxes, scores


class RecurrentClassifier(nn.Module):
    """A sequence classifier over float features (N, T, F): an LSTM or a GRU, then a linear head."""

    def __init__(self, cell: str = "lstm", features: int = 16, hidden: int = 32, classes: int = 5) -> None:
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)
        return self.head(h[:, -1])


class UNet(nn.Module):
    """Two downsamplings, two upsamplings, skip connections concatenated: any H, W divisible by 4."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.enc1, self.enc2, self.mid = conv(3, 16), conv(16, 32), conv(32, 64)
        self.up2, self.dec2 = nn.ConvTranspose2d(64, 32, 2, stride=2), conv(64, 32)
        self.up1, self.dec1 = nn.ConvTranspose2d(32, 16, 2, stride=2), conv(32, 16)
        self.out = nn.Conv2d(16, classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)


def bert_classifier() -> nn.Module:
    """transformers' BertForSequenceClassification from a small config (returns a ModelOutput)."""
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=64, num_labels=3)
    cfg._attn_implementation = "eager"
    return BertForSequenceClassification(cfg).eval()


def vit_classifier() -> nn.Module:
    """transformers' ViTForImageClassification from a small config (returns a ModelOutput)."""
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=128, num_labels=5)
    cfg._attn_implementation = "eager"
    return ViTForImageClassification(cfg).eval()
