"""The layout adapter: a fixed-batch artifact fed any batch in chunks, outputs joined on their batch axis."""
from __future__ import annotations

import numpy as np
import torch

from edgesdk.compress.export_onnx import export_onnx
from edgesdk.runtimes import load
from edgesdk.runtimes.layout import adapt_layout


class ThreeOutputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, 10)
        self.register_buffer("anchors", torch.rand(5, 4))

    def forward(self, x: torch.Tensor):  # x (N, T=3, 6)
        y = self.lin(x)
        return y.mean(1), y.transpose(0, 1), self.anchors * 1.0  # batch-first, time-major, no batch axis


def test_fixed_batch_outputs_of_every_kind(tmp_path):
    torch.manual_seed(0)
    model = ThreeOutputs().eval()
    export_onnx(model, {"x": torch.rand(1, 3, 6)}, tmp_path / "m.onnx", dynamic_batch=False,
                output_names=["logits", "tmajor", "anchors"])
    x = np.random.default_rng(0).random((4, 3, 6), dtype=np.float32)
    with load(tmp_path / "m.onnx") as sess:
        fed = adapt_layout(sess, None, rebatch=True)
        assert fed.fixed_batch == 1
        got = fed.run({"x": x})
    with torch.no_grad():
        want = [t.numpy() for t in model(torch.from_numpy(x))]
    for name, w in zip(("logits", "tmajor", "anchors"), want):
        np.testing.assert_allclose(got[name], w, atol=1e-5)
