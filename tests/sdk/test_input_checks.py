"""What compress does with inputs that used to slip through: data arrays that are not inputs, labels of the
wrong shape, a backend list that cannot run an artifact, fixed-batch models with data, integer outputs,
FP16 exclusions, bfloat16 examples, nested outputs, a budget that leaves nothing quantized."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import edgesdk
from edgesdk.errors import InputError
from tests.models import Small


class ArgmaxHead(Small):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).argmax(-1)


class Nested(Small):
    def forward(self, x: torch.Tensor):
        y = self.net(x)
        return y, (y, y)


X = {"x": torch.from_numpy(np.random.default_rng(1).random((1, 4), dtype=np.float32))}  # not the import order's


def _data(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).random((n, 4), dtype=np.float32)}


def test_extra_arrays_in_calibration_data_are_ignored_and_labels_kept(tmp_path):
    torch.manual_seed(0)
    calib = {"a_meta": np.zeros(3, np.float32), **_data(), "labels": np.zeros(64, np.int64)}
    # what is checked is the data handling; an INT8 4-16-3 MLP with random weights may or may not hold parity
    res = edgesdk.compress(Small(), X, out_dir=tmp_path / "o", calib_data=calib, quantize="int8", benchmark=False,
                           allow_mismatch=True)
    art = {a["name"]: a for a in res.manifest["artifacts"]}["model.int8.onnx"]
    assert "64 samples" in art["meta"]["calibration"] and art["meta"]["quantization"]["calib_samples"] == 64


@pytest.mark.parametrize("labels, needle", [
    (np.zeros((64, 1), np.int64), "one class id per sample"),
    (np.zeros(10, np.int64), "one class id per sample"),
    (np.zeros(64, np.float32), "integer class ids"),
])
def test_eval_labels_are_checked(tmp_path, labels, needle):
    with pytest.raises(InputError, match=needle):
        edgesdk.compress(Small(), X, out_dir=tmp_path / "o", eval_data={**_data(), "labels": labels}, benchmark=False)
    assert not (tmp_path / "o").exists()


def test_a_backend_list_that_cannot_run_an_artifact_is_refused(tmp_path):
    with pytest.raises(InputError, match="none of the requested backends can run model.onnx"):
        edgesdk.compress(Small(), X, out_dir=tmp_path / "o", backends=["litert"], benchmark=False)
    assert not (tmp_path / "o").exists()


def test_fixed_batch_model_with_calibration_eval_and_int8(tmp_path):
    torch.manual_seed(0)
    data = _data(50)
    res = edgesdk.compress(Small(), X, out_dir=tmp_path / "o", dynamic_batch=False, calib_data=data,
                           eval_data={**data, "labels": np.zeros(50, np.int64)}, quantize="int8", benchmark=False,
                           allow_mismatch=True)  # a random-weight MLP's INT8 parity is not what this checks
    arts = {a["name"]: a for a in res.manifest["artifacts"]}
    assert arts["model.onnx"]["inputs"][0]["shape"] == [1, 4]
    assert arts["model.onnx"]["parity"]["batches"] == 17 and arts["model.int8.onnx"]["parity"]["batches"] == 17
    assert arts["model.onnx"]["accuracy"] is not None  # 50 samples through a batch-1 model, last chunk padded


def test_integer_outputs_must_match_exactly(tmp_path):
    torch.manual_seed(0)
    res = edgesdk.compress(ArgmaxHead(), X, out_dir=tmp_path / "o", benchmark=False)
    out = res.manifest["artifacts"][0]["parity"]["outputs"]["output"]
    assert out["num_failed"] == 0 and res.manifest["artifacts"][0]["parity"]["passed"]


def test_fp16_keeps_the_excluded_nodes_in_fp32(tmp_path):
    torch.manual_seed(0)
    res = edgesdk.compress(Small(), X, out_dir=tmp_path / "a", quantize="fp16", benchmark=False)
    graph = onnx.load(str(tmp_path / "a" / "model.onnx")).graph
    first = next(n.name for n in graph.node if n.op_type in ("Gemm", "MatMul"))
    edgesdk.compress(Small(), X, out_dir=tmp_path / "b", quantize="fp16", quant_exclude=[first], benchmark=False)
    fp16 = onnx.load(str(tmp_path / "b" / "model.fp16.onnx")).graph
    node = next(n for n in fp16.node if n.name == first)
    weights = {i.name: i.data_type for i in fp16.initializer}
    assert all(weights[w] == onnx.TensorProto.FLOAT for w in node.input if w in weights)
    assert any(t == onnx.TensorProto.FLOAT16 for t in weights.values())  # the rest is FP16
    assert res.manifest["artifacts"][1]["parity"]["passed"]


def test_bfloat16_examples_and_nested_outputs_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="bfloat16"):
        edgesdk.compress(Small().to(torch.bfloat16), {"x": torch.rand(1, 4, dtype=torch.bfloat16)},
                         out_dir=tmp_path / "o")
    with pytest.raises(InputError, match="flatten nested outputs"):
        edgesdk.compress(Nested(), X, out_dir=tmp_path / "o")


def test_wrong_input_shape_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"the model fails on the example inputs") as e:
        edgesdk.compress(Small(), {"x": torch.rand(1, 5)}, out_dir=tmp_path / "o")
    assert "x: float32[1x5]" in e.value.format()


def test_a_budget_that_keeps_everything_in_float_says_so(tmp_path):
    torch.manual_seed(0)
    # a cosine only FP32 reaches: the search ends with every quantizable node in float
    res = edgesdk.compress(Small(), X, out_dir=tmp_path / "o", calib_data=_data(), quantize="int8",
                           min_cosine=0.99999999, benchmark=False)
    int8 = next(a for a in res.manifest["artifacts"] if a["name"] == "model.int8.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "o" / "model.int8.onnx")).graph.node}
    assert "QuantizeLinear" not in ops
    assert any("FP32 in all but name" in w for w in int8["meta"]["warnings"]), int8["meta"]["warnings"]


class TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(32, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids).mean(1))


def test_integer_inputs_get_values_the_model_can_take(tmp_path):
    """Token ids read by an nn.Embedding are generated uniform in [0, vocab); an integer input nothing
    reveals the range of, seen as one value only, is still flagged."""
    torch.manual_seed(0)
    res = edgesdk.compress(TokenModel(), {"ids": torch.zeros(1, 8, dtype=torch.int64)}, out_dir=tmp_path / "a",
                           benchmark=False)
    assert not any("integer input 'ids'" in w for w in res.report["warnings"])
    with np.load(tmp_path / "a" / "reference.npz") as z:
        ids = np.concatenate([z[k].ravel() for k in z.files if k.startswith("in:") and k.endswith(":ids")])
    assert ids.min() >= 0 and ids.max() < 32 and len(np.unique(ids)) > 16

    class Shift(nn.Module):  # adds its integer input: no embedding says what values it takes
        def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            return x + k

    res = edgesdk.compress(Shift(), {"x": torch.rand(1, 4), "k": torch.zeros(1, 4, dtype=torch.int64)},
                           out_dir=tmp_path / "b", benchmark=False)
    assert any("integer input 'k' was 0 in every reference batch" in w for w in res.report["warnings"])


def test_a_pruning_range_without_labels_is_refused_up_front(tmp_path):
    with pytest.raises(InputError, match="needs labelled eval data"):
        edgesdk.compress(Small(), X, out_dir=tmp_path / "o", prune=0.3, prune_max=0.7, max_accuracy_drop=1.0,
                         eval_data=_data())
    assert not (tmp_path / "o").exists()


class DictOut(Small):
    def forward(self, x: torch.Tensor):
        y = self.net(x)
        return {"logits": y, "probs": y.softmax(-1)}


def test_dict_outputs_keep_their_keys_as_output_names(tmp_path):
    torch.manual_seed(0)
    res = edgesdk.compress(DictOut(), X, out_dir=tmp_path / "o", benchmark=False)
    art = res.manifest["artifacts"][0]
    assert [o["name"] for o in art["outputs"]] == ["logits", "probs"] and art["parity"]["passed"]
    from edgesdk.runtimes import load

    with load(tmp_path / "o" / "model.onnx") as sess:
        assert set(sess.run({"x": np.zeros((2, 4), np.float32)})) == {"logits", "probs"}


class Unused(Small):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_an_input_the_model_never_reads_is_named_not_blamed(tmp_path):
    res = edgesdk.compress(Unused(), {"x": torch.rand(1, 4), "mask": torch.rand(1, 4)}, out_dir=tmp_path / "o",
                           benchmark=False)
    art = res.manifest["artifacts"][0]
    assert art["parity"]["passed"] and [i["name"] for i in art["inputs"]] == ["x"]
    assert any("has no input 'mask'" in w for w in art["meta"]["warnings"])


def test_output_names_must_be_distinct_and_not_inputs(tmp_path):
    with pytest.raises(InputError, match="repeated: a"):
        edgesdk.compress(Small(), X, out_dir=tmp_path / "o", output_names=["a", "a"])
    with pytest.raises(InputError, match="also inputs: x"):
        edgesdk.compress(Small(), X, out_dir=tmp_path / "o", output_names=["x"])


def test_random_calibration_gives_ids_within_the_vocabulary(tmp_path):
    res = edgesdk.compress(TokenModel(), {"ids": torch.zeros(1, 8, dtype=torch.int64)}, out_dir=tmp_path / "o",
                           calib_data="random", quantize="int8-dynamic", benchmark=False)
    assert "RANDOM" in res.manifest["calibration"]
    assert not any("integer input 'ids'" in w for w in res.report["warnings"])


def test_a_prune_that_removes_nothing_skips_recovery_and_says_so(tmp_path):
    torch.manual_seed(0)
    res = edgesdk.compress(Small(), X, out_dir=tmp_path / "o", prune=0.5, prune_round_to=16, calib_data=_data(),
                           benchmark=False)  # 16 hidden units cannot keep a multiple of 16 at 50%
    pruned = next(a for a in res.manifest["artifacts"] if a["stage"] == "prune")
    assert pruned["meta"]["recovery"] == {"method": "none", "reason": "nothing was pruned"}
    assert any("nothing was pruned" in w for w in res.report["warnings"] + pruned["meta"]["warnings"])


def test_a_bool_padding_mask_is_generated_as_the_example_has_it(tmp_path):
    """True marks padding in a PyTorch key_padding_mask: a mask of ones would pad every key (NaN outputs that
    'agree' with NaN). Masks follow the example's value, and NaN reference batches are left out."""
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.att = nn.MultiheadAttention(16, 2, batch_first=True)
            self.head = nn.Linear(16, 4)

        def forward(self, input_ids: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
            h = self.emb(input_ids)
            return self.head(self.att(h, h, h, key_padding_mask=key_padding_mask)[0].mean(1))

    torch.manual_seed(0)
    ex = {"input_ids": torch.randint(0, 50, (1, 8)), "key_padding_mask": torch.zeros(1, 8, dtype=torch.bool)}
    res = edgesdk.compress(Attn().eval(), ex, out_dir=tmp_path / "o", benchmark=False)
    with np.load(tmp_path / "o" / "reference.npz") as z:
        outs = [z[k] for k in z.files if k.startswith("out:")]
        masks = [z[k] for k in z.files if k.endswith(":key_padding_mask")]
    assert all(np.isfinite(o).all() for o in outs) and not any(m.any() for m in masks)
    assert [i["shape"] for i in res.manifest["artifacts"][0]["inputs"]] == [["batch", "sequence"]] * 2


def test_a_few_calibration_samples_still_reach_the_gate(tmp_path):
    data = {"x": np.full((3, 4), 7.0, np.float32)}
    edgesdk.compress(Small(), X, out_dir=tmp_path / "o", calib_data=data, benchmark=False)
    with np.load(tmp_path / "o" / "reference.npz") as z:
        assert any((z[k] == 7.0).all() for k in z.files if k.startswith("in:"))


def test_a_static_batch_other_than_one_is_timed_at_its_batch(tmp_path):
    torch.manual_seed(0)
    res = edgesdk.compress(Small(), {"x": torch.rand(2, 4)}, out_dir=tmp_path / "o", dynamic_batch=False,
                           iterations=3, warmup=1)
    assert {(r["artifact"], r["batch"]) for r in res.report["results"]} >= {("model.onnx", 2)}
    assert ("model.onnx", 1) not in {(r["artifact"], r["batch"]) for r in res.report["results"]}
