"""What each quantization mode left in float: read from the output graph, with a reason, and warned about."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgesdk.compress.export_onnx import export_onnx
from edgesdk.compress.quantize import op_histogram, quantize_onnx
from tests.models import build, make_inputs


class RecurrentClassifier(torch.nn.Module):
    """Token ids -> embedding -> 2-layer LSTM or GRU -> linear head on the last step."""

    def __init__(self, cell: str) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(100, 16)
        self.rnn = getattr(torch.nn, cell)(16, 32, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(32, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.emb(ids))
        return self.head(h[:, -1])


@pytest.fixture(scope="module")
def recurrent(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, RecurrentClassifier]]:
    torch.manual_seed(0)
    out = {}
    for cell in ("LSTM", "GRU"):
        model = RecurrentClassifier(cell).eval()
        path = tmp_path_factory.mktemp(cell) / "model.onnx"
        export_onnx(model, {"ids": torch.randint(0, 100, (2, 10))}, path)
        out[cell] = path, model
    return out


CALIB = {"ids": np.random.default_rng(0).integers(0, 100, (32, 10))}


def _weights(model: torch.nn.Module, *prefixes: str) -> int:
    """Weight elements (no biases) of the named submodules, as the graph's compute ops hold them."""
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes) and "bias" not in n)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_static_int8_names_the_recurrent_layers_left_in_float(recurrent, cell, tmp_path):
    src, model = recurrent[cell]
    info = quantize_onnx(src, tmp_path / "q.onnx", mode="int8", calib=CALIB)
    entry = info.float_ops[cell]
    assert entry["count"] == op_histogram(src)[cell] == op_histogram(tmp_path / "q.onnx")[cell]
    assert entry["reason"] == f"onnxruntime's QDQ quantizer has no {cell} kernel"
    assert entry["weights"] == _weights(model, "rnn")
    assert set(info.float_ops) == {cell}  # the embedding and the head are INT8
    quantized = _weights(model, "emb", "head")
    assert info.quantized_weight_fraction == pytest.approx(quantized / (quantized + _weights(model, "rnn")), abs=1e-4)
    warning = next(w for w in info.warnings if f" {cell} node" in w)
    assert warning.startswith(f"static INT8 left {entry['count']} {cell} nodes in float") and "recurrent" in warning
    assert any("quantized only" in w for w in info.warnings)  # the file stays near its FP32 size: said


def test_dynamic_int8_quantizes_lstm_but_not_gru(recurrent, tmp_path):
    src, _ = recurrent["LSTM"]
    info = quantize_onnx(src, tmp_path / "lstm.onnx", mode="int8-dynamic")
    assert "LSTM" not in info.float_ops and op_histogram(tmp_path / "lstm.onnx")["DynamicQuantizeLSTM"] == 2
    assert not any("LSTM" in w for w in info.warnings)
    assert info.float_ops["Gather"]["reason"].startswith("not among the op types dynamic INT8 quantizes")
    src, model = recurrent["GRU"]
    info = quantize_onnx(src, tmp_path / "gru.onnx", mode="int8-dynamic")
    assert info.float_ops["GRU"]["reason"] == "onnxruntime's dynamic quantizer has no GRU kernel"
    assert any(w.startswith("dynamic INT8 left 2 GRU nodes in float") for w in info.warnings)


def test_conv_net_leaves_nothing_significant_in_float(tmp_path):
    src = tmp_path / "conv.onnx"
    export_onnx(build("Residual"), make_inputs("Residual", 2), src)
    calib = {"x": np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)}
    info = quantize_onnx(src, tmp_path / "q.onnx", mode="int8", calib=calib)
    assert info.float_ops == {} and info.quantized_weight_fraction == 1.0
    assert not any("in float" in w or "quantized only" in w for w in info.warnings)
    # a node the user (or the accuracy budget) keeps in float is listed with that reason, not warned about
    conv = next(n for n in _node_names(tmp_path / "q.onnx", "Conv"))
    info = quantize_onnx(src, tmp_path / "q2.onnx", mode="int8", calib=calib, nodes_to_exclude=[conv])
    assert info.float_ops["Conv"] == {"count": 1, "nodes": [conv], "weights": info.float_ops["Conv"]["weights"],
                                      "reasons": {"excluded by the user or the accuracy budget": 1},
                                      "reason": "excluded by the user or the accuracy budget"}
    assert 0 < info.quantized_weight_fraction < 1 and not any("in float" in w for w in info.warnings)


def test_fp16_lists_only_the_nodes_kept_fp32(recurrent, tmp_path):
    src, _ = recurrent["GRU"]
    info = quantize_onnx(src, tmp_path / "h.onnx", mode="fp16")
    assert info.float_ops == {} and info.quantized_weight_fraction == 1.0
    gru = _node_names(src, "GRU")[0]
    info = quantize_onnx(src, tmp_path / "h2.onnx", mode="fp16", nodes_to_exclude=[gru])
    assert info.float_ops["GRU"]["nodes"] == [gru] and info.float_ops["GRU"]["count"] == 1
    assert info.float_ops["GRU"]["reason"] == "excluded by the user or the accuracy budget"
    assert info.to_dict()["float_ops"] is info.float_ops  # reaches the manifest with the rest of QuantInfo


def _node_names(path: Path, op: str) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == op]
