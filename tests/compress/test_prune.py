"""Structured pruning on every graph pattern, masks, persistence, recovery, and pruning in the pipeline."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import edgesdk
from edgesdk.compress.prune import load_pruned, prune_model, save_pruned
from edgesdk.compress.recover import recover
from edgesdk.errors import BudgetError, InputError
from tests.conftest import DIGITS_MODEL
from tests.models import BnNet, build, make_inputs


@pytest.mark.parametrize("name", ["Residual", "Concat", "Depthwise", "Grouped", "AttentionNet", "ConvBnRelu"])
def test_channel_pruning_keeps_interface_and_round_trips(name, tmp_path):
    model, ex = build(name), make_inputs(name, 2)
    with torch.no_grad():
        before = model(*ex.values())
    info = prune_model(model, ex, ratio=0.5, round_to=None)
    assert info.params_after < 0.8 * info.params_before and info.macs_after < info.macs_before
    assert "head" in info.protected
    with torch.no_grad():
        after = model(*ex.values())
    assert after.shape == before.shape
    save_pruned(model, tmp_path / "p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.safetensors"]
    rebuilt = load_pruned(build(name), tmp_path / "p")
    with torch.no_grad():
        assert torch.equal(rebuilt(*ex.values()), after)  # identical outputs after the round trip


def test_attention_heads_are_pruned_whole():
    model, ex = build("AttentionNet"), make_inputs("AttentionNet", 2)
    info = prune_model(model, ex, ratio=0.5, round_to=None)
    assert info.heads == {"attn": [4, 2]} and model.attn.num_heads == 2
    assert model.attn.q.out_features == 2 * model.attn.head_dim


def test_round_to_multiple_and_target_macs():
    model, ex = build("Residual"), make_inputs("Residual", 1)
    prune_model(model, ex, ratio=0.4, round_to=4)
    assert all(m.out_channels % 4 == 0 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    model = build("ConvBnRelu")
    info = prune_model(model, make_inputs("ConvBnRelu", 1), ratio=None, target_macs=60_000, round_to=None)
    assert info.macs_after <= 60_000 < info.macs_before


@pytest.mark.parametrize("method, expect", [("unstructured", 0.6), ("2:4", 0.5)])
def test_masks_report_sparsity_and_say_no_speedup(method, expect):
    model, ex = build("ConvBnRelu"), make_inputs("ConvBnRelu", 1)
    info = prune_model(model, ex, ratio=0.6, method=method)
    assert info.sparsity == pytest.approx(expect, abs=0.1)
    assert info.params_after == info.params_before and "not speed up" in info.notes[0]
    if method == "2:4":
        w = model.body[3].weight  # K=8, C=8, 3x3: TensorRT reads 2:4 along C at each kernel position
        groups = w.permute(0, 2, 3, 1).reshape(8, 3, 3, -1, 4)
        assert ((groups != 0).sum(-1) <= 2).all()


def test_bad_prune_inputs():
    model, ex = build("Residual"), make_inputs("Residual", 1)
    with pytest.raises(InputError, match="between 0 and 1"):
        prune_model(model, ex, ratio=1.5)
    with pytest.raises(InputError, match="unknown module"):
        prune_model(model, ex, ratio=0.5, protect=("nothere",))
    with pytest.raises(InputError, match="Taylor importance needs data"):
        prune_model(model, ex, ratio=0.5, importance="taylor")


def test_taylor_importance_with_data():
    model, ex = build("Residual"), make_inputs("Residual", 1)
    info = prune_model(model, ex, ratio=0.5, importance="taylor", round_to=None,
                       data={"x": make_inputs("Residual", 16)["x"].numpy()})
    assert info.params_after < info.params_before


def test_recovery_hook_is_called():
    teacher = build("Residual")
    student = build("Residual")
    calls = []
    info = recover(student, teacher, {"x": np.zeros((4, 3, 16, 16), np.float32)}, ["x"],
                   hook=lambda m, d: calls.append(len(d["x"])))
    assert calls == [4] and info["method"] == "hook"


def test_pipeline_prune_recover_quantize_on_digits(digits, tmp_path):
    model, calib, eval_data = digits
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                           eval_data=eval_data, prune=0.5, quantize="int8", recover_steps=1000,
                           benchmark=False)  # steps alone: no time budget, the same training on any machine
    names = [a["name"] for a in res.manifest["artifacts"]]
    assert names == ["model.onnx", "model.pruned.safetensors", "model.pruned.onnx", "model.pruned.int8.onnx"]
    fp32, pruned, pruned_onnx, pruned_int8 = res.manifest["artifacts"]
    assert pruned["meta"]["macs"] < 0.4 * fp32["meta"]["macs"]
    assert pruned["meta"]["accuracy_before_recovery"] < pruned["meta"]["accuracy_after_recovery"]
    assert fp32["accuracy"] - pruned_onnx["accuracy"] <= 1.0, (fp32["accuracy"], pruned_onnx["accuracy"])
    assert pruned_onnx["parity"]["passed"] and pruned_onnx["meta"]["reference"] == "pytorch.pruned"
    assert pruned_onnx["meta"]["vs_original"]["cosine"] < 1.0
    assert pruned_int8["meta"]["reference"] == "pytorch.pruned" and pruned_int8["parity"]["passed"]
    shapes = tmp_path / "o" / pruned["meta"]["shapes_file"]["path"]
    assert json.loads(shapes.read_text())["format"] == "edgesdk-pruned-shapes"
    rebuilt = load_pruned(edgesdk.intake.build_model(f"{DIGITS_MODEL}:build"), tmp_path / "o" / "model.pruned")
    from edgesdk.runtimes import load

    x = eval_data["x"][:8]
    with torch.no_grad(), load(tmp_path / "o" / "model.pruned.onnx") as sess:
        np.testing.assert_allclose(rebuilt(torch.from_numpy(x)).numpy(), sess.run({"x": x})["output"], atol=1e-4)


def test_pruning_range_search_under_budget(digits, tmp_path):
    model, calib, eval_data = digits
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                           eval_data=eval_data, prune=0.3, prune_max=0.9, prune_max_accuracy_drop=1.0,
                           recover_steps=300, benchmark=False)
    search = res.manifest["artifacts"][1]["meta"]["search"]
    assert search["met"] and 0.3 <= search["chosen"] <= 0.9 and len(search["tries"]) >= 1
    assert all(t["met"] == (t["drop"] <= 1.0) for t in search["tries"])
    with pytest.raises(InputError, match="accuracy budget"):
        edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "p", calib_data=calib,
                         prune=0.3, prune_max=0.7, benchmark=False)


def test_unmeetable_pruning_budget(digits, tmp_path):
    model, calib, eval_data = digits
    with pytest.raises(BudgetError):
        edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                         eval_data=eval_data, prune=0.7, prune_max=0.8, prune_max_accuracy_drop=0.0,
                         recover_steps=0, benchmark=False)
    assert (tmp_path / "o" / "manifest.json").is_file()


# -- MACs of recurrent layers ---------------------------------------------------------------
class _Recurrent(torch.nn.Module):
    """A stacked recurrent layer fed (N, T, F) whatever its own layout: seq-first layers get it transposed."""

    def __init__(self, cell: str, bidirectional: bool, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.rnn = getattr(torch.nn, cell)(32, 64, num_layers=2, batch_first=batch_first,
                                           bidirectional=bidirectional)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x if self.batch_first else x.transpose(0, 1))[0]


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell, gates", [("LSTM", 4), ("GRU", 3)])
def test_recurrent_macs_match_the_hand_formula(cell, gates, bidirectional, batch_first):
    from edgesdk.compress.prune import count

    hidden, inp, steps = 64, 32, 20
    d = 2 if bidirectional else 1
    # per sample and time step: each layer and direction multiplies its input and its hidden state by the
    # gate matrices; layer 2 reads both directions of layer 1
    per_step = d * gates * ((inp * hidden + hidden * hidden) + (d * hidden * hidden + hidden * hidden))
    model = _Recurrent(cell, bidirectional, batch_first).eval()
    macs, params = count(model, {"x": torch.randn(3, steps, inp)})
    assert macs == steps * per_step, (macs, steps * per_step)
    assert params == sum(p.numel() for p in model.parameters())


def test_recurrent_macs_scale_with_sequence_and_not_batch():
    from edgesdk.compress.prune import count

    model = _Recurrent("LSTM", False, True).eval()
    short, _ = count(model, {"x": torch.randn(2, 10, 32)})
    assert count(model, {"x": torch.randn(5, 10, 32)})[0] == short  # MACs are per sample
    assert count(model, {"x": torch.randn(2, 30, 32)})[0] == 3 * short


# -- ModelOutput, dict and tuple outputs ------------------------------------------------------
def _vit():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=128, num_labels=5)
    return transformers.ViTForImageClassification(cfg).eval(), {"pixel_values": torch.randn(4, 3, 32, 32)}


class _Detector(torch.nn.Module):
    """A shared trunk with a score head and a box branch; returns a dict (as detectors do) or a tuple."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU())
        self.box_branch = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU())
        self.scores = torch.nn.Linear(16, 5)
        self.boxes = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> Any:
        h = self.trunk(x)
        scores, boxes = self.scores(h.mean((2, 3))), self.boxes(self.box_branch(h).mean((2, 3)))
        return {"scores": scores, "boxes": boxes} if self.as_dict else (scores, boxes)


def _data(ex: dict, n: int = 32, classes: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    data = {k: rng.standard_normal((n, *v.shape[1:])).astype(np.float32) for k, v in ex.items()}
    return {**data, "labels": rng.integers(0, classes, n)}


@pytest.mark.parametrize("importance", ["l1", "l2", "bn", "taylor"])
def test_prune_hugging_face_model_output(importance):
    from edgesdk.compress.outputs import flat_outputs

    model, ex = _vit()
    with torch.no_grad():
        before = model(**ex)
    info = prune_model(model, ex, ratio=0.5, importance=importance, round_to=None, data=_data(ex))
    with torch.no_grad():
        after = model(**ex)
    assert type(after) is type(before) and after.logits.shape == before.logits.shape == (4, 5)
    assert list(flat_outputs(after)) == ["logits"]
    if importance != "bn":  # ViT has no BatchNorm: the bn importance finds nothing to rank, and says so
        assert info.params_after < 0.6 * info.params_before and all(v[1] < v[0] for v in info.heads.values())
    else:
        assert info.params_after == info.params_before and "nothing was pruned" in info.notes[-1]


@pytest.mark.parametrize("as_dict", [True, False])
@pytest.mark.parametrize("importance", ["l1", "taylor"])
def test_prune_dict_and_tuple_outputs(as_dict, importance):
    model, ex = _Detector(as_dict).eval(), {"x": torch.randn(2, 3, 8, 8)}
    info = prune_model(model, ex, ratio=0.5, importance=importance, round_to=None, data=_data(ex))
    with torch.no_grad():
        out = model(**ex)
    scores, boxes = (out["scores"], out["boxes"]) if as_dict else out
    assert scores.shape == (2, 5) and boxes.shape == (2, 4)
    assert model.trunk[0].out_channels == 8 and model.box_branch[0].out_channels == 8
    assert {"scores", "boxes"} <= set(info.protected)


def test_recover_distils_logits_of_a_model_output():
    import copy

    model, ex = _vit()
    teacher = copy.deepcopy(model)
    prune_model(model, ex, ratio=0.5, round_to=None)
    data = _data(ex)
    data.pop("labels")
    info = recover(model, teacher, data, ["pixel_values"], steps=40, lr=3e-3, batch_size=16)
    assert info["distilled_output"] == "logits" and info["distilled_outputs"] == ["logits"]
    assert info["loss_last"] < info["loss_first"]


@pytest.mark.parametrize("as_dict", [True, False])
def test_recover_matches_every_output_of_dict_and_tuple_models(as_dict):
    import copy

    teacher = _Detector(as_dict).eval()
    student = copy.deepcopy(teacher)
    ex = {"x": torch.randn(2, 3, 8, 8)}
    prune_model(student, ex, ratio=0.5, round_to=None)
    data = _data(ex, n=64)
    data.pop("labels")
    x = torch.from_numpy(data["x"])

    def box_error() -> float:
        with torch.no_grad():
            s, t = student(x), teacher(x)
        s, t = (s["boxes"], t["boxes"]) if as_dict else (s[1], t[1])
        return float((s - t).pow(2).mean())

    err0 = box_error()
    info = recover(student, teacher, data, ["x"], steps=150, lr=3e-3, batch_size=32)
    names = ["scores", "boxes"] if as_dict else ["output[0]", "output[1]"]
    assert info["distilled_output"] == names[0] and info["distilled_outputs"] == names
    assert box_error() < 0.5 * err0  # the box head is matched too, not only the primary output


def test_taylor_importance_leaves_batchnorm_statistics_alone():
    model = BnNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    data = {"x": np.random.default_rng(0).random((16, 3, 8, 8), dtype=np.float32)}
    prune_model(model, {"x": torch.rand(1, 3, 8, 8)}, ratio=0.5, importance="taylor", round_to=None,
                data=data, protect=("body.0", "body.3"))  # nothing prunable: only the importance pass runs
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not model.training


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 8)
        self.mid = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 16, bias=False)
        self.lm_head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.relu(self.mid(self.emb(ids))))


def test_tied_weights_save_and_reload(tmp_path):
    model = Tied().eval()
    save_pruned(model, tmp_path / "m")
    again = load_pruned(Tied(), tmp_path / "m")
    ids = torch.randint(0, 16, (2, 5))
    assert torch.equal(again(ids), model(ids))


def test_recovery_labels_outside_the_classes_are_an_input_error():
    teacher, student = build("Residual"), build("Residual")
    x = make_inputs("Residual", 8)["x"].numpy()
    classes = teacher(torch.from_numpy(x[:1])).shape[1]
    with pytest.raises(InputError, match=f"0 <= labels < {classes}"):
        recover(student, teacher, {"x": x, "labels": np.full(8, classes)}, ["x"], steps=2)
    assert not student.training


# -- recovery that fits the machine: a time budget, the training device -----------------------------------------
def _residual_pair() -> tuple[Any, Any, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    teacher, student = build("Residual"), build("Residual")
    return teacher, student, {"x": np.random.default_rng(0).random((16, 3, 16, 16), dtype=np.float32)}


def test_a_time_budget_plans_the_steps_that_fit_after_timing_the_first():
    from edgesdk.compress.recover import TIMED_STEPS

    teacher, student, data = _residual_pair()
    # no step fits in a microsecond: the timed steps are all that run, whatever the machine's speed
    info = recover(student, teacher, data, ["x"], steps=50, time_budget_s=1e-6, batch_size=4)
    assert info["steps"] == TIMED_STEPS and info["max_steps"] == 50 and info["stopped_by"] == "time budget"
    assert info["step_time_s"] > 0 and info["device"] == "cpu" and not student.training
    # a budget nothing can reach runs every step and says nothing was cut
    info = recover(student, teacher, data, ["x"], steps=6, time_budget_s=1e9, batch_size=4)
    assert info["steps"] == 6 and info["stopped_by"] is None
    info = recover(student, teacher, data, ["x"], steps=5, batch_size=4)  # no budget: exactly the steps
    assert info["steps"] == 5 and info["time_budget_s"] is None and info["step_time_s"] is None


def test_the_schedule_warms_up_then_decays_to_zero_at_the_planned_end():
    from edgesdk.compress.recover import TIMED_STEPS, _Plan

    plan = _Plan(total=20, budget_s=None)
    lrs = [plan.lr_factor(s) for s in range(20)]
    assert lrs[:TIMED_STEPS] == sorted(lrs[:TIMED_STEPS]) and lrs[TIMED_STEPS - 1] == 1.0
    assert lrs[TIMED_STEPS:] == sorted(lrs[TIMED_STEPS:], reverse=True) and plan.lr_factor(20) == 0.0
    plan = _Plan(total=1000, budget_s=10.0)
    assert plan.after(TIMED_STEPS - 1, elapsed=TIMED_STEPS * 0.5)  # 0.5 s a step: 20 fit in 10 s
    assert plan.total == 20 and plan.stopped == "time budget" and plan.lr_factor(20) == 0.0
    assert not plan.after(5, elapsed=1000.0) and plan.total == 6 and "overrun" in plan.stopped


def test_recipe_recovery_limits_default_to_two_minutes_unless_steps_are_given():
    from edgesdk.compress.stages.prune import recovery_limits
    from edgesdk.recipe import Recipe, apply_options

    assert recovery_limits(Recipe().prune) == (1000, 120.0)
    assert recovery_limits(apply_options(Recipe(), recover_steps=300).prune) == (300, None)
    assert recovery_limits(apply_options(Recipe(), recover_time=30).prune) == (1000, 30.0)
    assert recovery_limits(apply_options(Recipe(), recover_steps=300, recover_time=30).prune) == (300, 30.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_train_device_cuda_without_cuda_is_refused_clearly():
    from edgesdk.compress.recover import train_device

    assert train_device("auto") == "cpu" and train_device("cpu") == "cpu"
    with pytest.raises(InputError, match="torch sees no CUDA device"):
        train_device("cuda")


@pytest.mark.gpu
def test_recovery_and_taylor_train_on_cuda_and_hand_the_model_back_on_the_cpu():
    teacher, student, data = _residual_pair()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    info = recover(student, teacher, data, ["x"], steps=5, batch_size=4, device="cuda")
    assert info["device"] == "cuda" and info["steps"] == 5
    assert all(p.device.type == "cpu" for p in [*student.parameters(), *teacher.parameters()])
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # the teacher is not trained
    prune_model(student, {"x": torch.rand(1, 3, 16, 16)}, ratio=0.5, importance="taylor", round_to=None,
                data=data, device="cuda")
    assert all(p.device.type == "cpu" for p in student.parameters())


def test_compress_records_what_recovery_ran_and_bought(digits, tmp_path):
    model, calib, eval_data = digits
    res = edgesdk.compress(model, {"x": torch.rand(1, 1, 8, 8)}, out_dir=tmp_path / "o", calib_data=calib,
                           prune=0.5, recover_steps=40, prune_min_cosine=0.5, benchmark=False)
    rec = next(a for a in res.manifest["artifacts"] if a["stage"] == "prune")["meta"]["recovery"]
    assert rec["steps"] == 40 and rec["device"] == "cpu" and res.manifest["recipe"]["prune"]["train_device"] == "auto"
    assert rec["cosine_after"] > rec["cosine_before"]  # distillation moved the pruned model towards the original
    assert "recovery 40 steps" in (tmp_path / "o" / "report.md").read_text()


def test_pruning_on_random_calibration_warns_that_recovery_learns_little(tmp_path):
    model = build("Residual")
    res = edgesdk.compress(model, make_inputs("Residual", 1), out_dir=tmp_path / "o", calib_data="random",
                           prune=0.5, prune_round_to=None, recover_steps=3, prune_min_cosine=0.01, benchmark=False)
    from edgesdk.report.tables import report_warnings

    assert any("recovery distilled on random inputs" in w for w in report_warnings(res.report))
