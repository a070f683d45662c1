"""A CRNN text-line reader (CNN + 2-layer BiLSTM + CTC), the architecture of the published CRNN OCR models.

Input: grayscale text lines ``x`` (N, 1, 32, 128) in [0, 1]. Output: per-column log-probabilities over
the alphabet plus the CTC blank (index 0), time-major ``(T=32, N, C)`` as CTC losses take them.

Example::

    model = build()
    logp = model(torch.rand(4, 1, 32, 128))   # (32, 4, 11)
"""
from __future__ import annotations

import torch
from torch import nn

ALPHABET = "0123456789"  # class i + 1; 0 is the CTC blank


class CRNN(nn.Module):
    def __init__(self, classes: int = len(ALPHABET) + 1, hidden: int = 48) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: tuple[int, int]) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(pool))

        # 32x128 -> 16x64 -> 8x32 -> 4x32 -> 1x32: one feature column per 4 pixels of width
        self.cnn = nn.Sequential(block(1, 16, (2, 2)), block(16, 32, (2, 2)), block(32, 48, (2, 1)),
                                 nn.Conv2d(48, 64, (4, 1)), nn.BatchNorm2d(64), nn.ReLU())
        self.rnn = nn.LSTM(64, hidden, num_layers=2, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x).squeeze(2).permute(2, 0, 1)  # (T, N, 128)
        h, _ = self.rnn(f)
        return self.head(h).log_softmax(-1)


def build() -> CRNN:
    return CRNN().eval()
