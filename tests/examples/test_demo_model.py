"""The residual net `make demo` compresses: it builds from its factory, runs at 32x32 and prunes 50% with its
interface kept (the demo itself is `make demo`, about two minutes)."""
from __future__ import annotations

import torch

from edgesdk.compress.prune import prune_model
from edgesdk.intake import build_model
from tests.conftest import ROOT


def test_the_demo_resnet_builds_runs_and_prunes():
    net = build_model(f"{ROOT / 'examples' / 'digits' / 'model.py'}:build_resnet").eval()
    x = {"x": torch.rand(2, 1, 32, 32)}
    assert net(x["x"]).shape == (2, 10)
    info = prune_model(net, x, ratio=0.5)
    assert info.macs_after < 0.4 * info.macs_before and net(x["x"]).shape == (2, 10)
