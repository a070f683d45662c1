"""Task metrics: each built-in against hand-computed values, user metrics, and evaluate() over sessions."""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

from edgesdk.errors import InputError
from edgesdk.metrics import (METRICS, Metric, ctc_greedy_decode, default_metric, drop, edit_distances, evaluate,
                             load_metric, make_cer, make_miou, make_multilabel)


def accuracy(session, eval_data, input_names, chunk=64):
    """The top-1 accuracy edgesdk measured before task metrics (kept here as the oracle top1 must match)."""
    labels = eval_data.get("labels")
    if labels is None or not len(labels):
        return None
    correct = 0
    inputs = getattr(session, "inputs", None) or []
    fixed = next((s.shape[0] for s in inputs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0), None)
    chunk = fixed or chunk  # a fixed-batch artifact takes exactly its batch: the last chunk is padded
    for start in range(0, len(labels), chunk):
        feeds = {k: np.ascontiguousarray(eval_data[k][start:start + chunk]) for k in input_names}
        real = len(next(iter(feeds.values())))
        if fixed and real < chunk:
            feeds = {k: np.concatenate([v, np.repeat(v[-1:], chunk - real, axis=0)]) for k, v in feeds.items()}
        logits = next(iter(session.run(feeds).values()))[:real]
        correct += int((logits.reshape(real, -1).argmax(-1) == labels[start:start + real]).sum())
    return round(100.0 * correct / len(labels), 3)


@dataclass(frozen=True)
class Spec:
    name: str
    shape: tuple[Any, ...]


class ArraySession:
    """Our own stand-in for "any session": computes numpy outputs from the feeds and records the fed batches."""

    def __init__(self, fn: Callable[[np.ndarray], dict[str, np.ndarray]], batch: int | str = "batch",
                 outputs: list[Spec] | None = None) -> None:
        self.fn, self.fed = fn, []
        self.inputs = [Spec("x", (batch, 3))]
        if outputs is not None:
            self.outputs = outputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if isinstance(self.inputs[0].shape[0], int):
            assert len(feeds["x"]) == self.inputs[0].shape[0]
        self.fed.append(len(feeds["x"]))
        return self.fn(feeds["x"])


def onehot(ids: list, classes: int) -> np.ndarray:
    """Scores whose argmax over the last axis is ``ids``."""
    return np.eye(classes, dtype=np.float32)[np.asarray(ids)]


def levenshtein(a: list[int], b: list[int]) -> int:
    """Textbook O(len(a) * len(b)) dynamic programme: the oracle for the vectorised version."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


# ---------------------------------------------------------------- classification


def test_top1_and_top5_by_hand():
    scores = np.array([[0.1, 0.7, 0.2, 0.0, 0.0, 0.0],   # top1 hit
                       [0.9, 0.0, 0.05, 0.03, 0.02, 0.01],  # label 1 is 6th: top5 miss
                       [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],   # label 1 is 5th: top5 hit
                       [0.3, 0.3, 0.1, 0.1, 0.1, 0.1]])  # tie: argmax takes class 0, top5 counts the label in
    labels = np.array([1, 1, 1, 1])
    assert METRICS["top1"].compute({"y": scores}, {"labels": labels}) == 25.0
    assert METRICS["top5"].compute({"y": scores}, {"labels": labels}) == 75.0
    # fewer than 5 classes: every label is in the top 5
    assert METRICS["top5"].compute({"y": scores[:, :3]}, {"labels": np.array([2, 0, 1, 2])}) == 100.0
    # the non-batch dims are flattened, as today: (N, 2, 3) -> 6 classes
    assert METRICS["top1"].compute({"y": scores.reshape(4, 2, 3)}, {"labels": labels}) == 25.0
    assert load_metric("accuracy") is METRICS["top1"] and METRICS["top1"].higher_is_better


def test_top1_equals_reference_accuracy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 3)).astype(np.float32)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    data = {"x": x, "labels": rng.integers(0, 4, 37)}
    for batch in ("batch", 8):
        sess = ArraySession(lambda v: {"logits": v @ w, "aux": v.sum(1)}, batch=batch)
        got = evaluate(sess, data, ["x"], "top1", chunk=10)
        assert got == accuracy(sess, data, ["x"], chunk=10)
        assert got == round(100.0 * float(((x @ w).argmax(1) == data["labels"]).mean()), 3)


def test_class_labels_are_checked_before_inference():
    sess = ArraySession(lambda v: {"y": v})
    with pytest.raises(InputError, match="one class id per sample"):
        evaluate(sess, {"x": np.zeros((4, 3), np.float32), "labels": np.zeros((4, 3), np.int64)}, ["x"], "top1")
    with pytest.raises(InputError, match="integer class ids"):
        evaluate(sess, {"x": np.zeros((4, 3), np.float32), "labels": np.zeros(4)}, ["x"], "top5")
    assert sess.fed == []


# ---------------------------------------------------------------- multi-label


def test_multilabel_probabilities_by_hand():
    probs = np.array([[0.9, 0.2, 0.6],
                      [0.4, 0.7, 0.5]])   # 0.5 is not > threshold
    labels = np.array([[1, 0, 0],
                       [1, 1, 1]])
    # predicted: (0,0) (0,2) (1,1) -> TP 2 [(0,0),(1,1)], FP 1 [(0,2)], FN 2 [(1,0),(1,2)]
    assert METRICS["multilabel_precision"].compute({"y": probs}, {"labels": labels}) == round(200 / 3, 3)
    assert METRICS["multilabel_recall"].compute({"y": probs}, {"labels": labels}) == 50.0
    assert METRICS["multilabel_f1"].compute({"y": probs}, {"labels": labels}) == round(100 * 4 / 7, 3)


def test_multilabel_detects_logits():
    logits = np.array([[2.0, -1.0, 0.3], [-0.2, 0.0, 5.0]])  # sigmoid > 0.5 iff logit > 0
    labels = np.array([[1, 0, 0], [0, 1, 1]], dtype=bool)
    # predicted (0,0) (0,2) (1,2): TP 2, FP 1, FN 1 -> F1 = 4/6
    assert METRICS["multilabel_f1"].compute({"y": logits}, {"labels": labels}) == round(100 * 4 / 6, 3)
    assert make_multilabel("f1", threshold=0.9).compute({"y": logits}, {"labels": labels}) == round(100 * 2 / 4, 3)


def test_multilabel_empty_cases_and_bad_labels():
    none = np.zeros((2, 3))
    assert METRICS["multilabel_f1"].compute({"y": none}, {"labels": np.zeros((2, 3), int)}) == 100.0
    assert METRICS["multilabel_precision"].compute({"y": none}, {"labels": np.eye(2, 3, dtype=int)}) == 0.0
    with pytest.raises(InputError, match="only 0 and 1"):
        METRICS["multilabel_f1"].check_data({"labels": np.array([[0, 2]])}, 1)
    with pytest.raises(InputError, match="one 0/1 row per sample"):
        METRICS["multilabel_f1"].check_data({"labels": np.array([0, 1])}, 2)
    with pytest.raises(InputError, match="differ in classes"):
        METRICS["multilabel_f1"].compute({"y": np.zeros((2, 4))}, {"labels": np.zeros((2, 3), int)})


# ---------------------------------------------------------------- CTC / CER


def test_greedy_decode_collapses_then_drops_blanks():
    toks, lens = ctc_greedy_decode(onehot([[1, 1, 0, 1, 2, 2], [0, 0, 0, 0, 0, 0]], 3))
    assert toks[0, :lens[0]].tolist() == [1, 1, 2] and lens[1] == 0
    toks, lens = ctc_greedy_decode(onehot([[3, 3, 1, 3]], 4), blank=3)
    assert toks[0, :lens[0]].tolist() == [1]


def test_cer_by_hand_with_lengths_and_padding():
    # sample 0 reads [1, 2] for [1, 2, 3] (1 deletion); sample 1 reads [3, 3] for [3] (1 insertion)
    scores = onehot([[1, 0, 2, 2, 0], [3, 0, 3, 0, 0]], 4)
    padded = {"labels": np.array([[1, 2, 3], [3, -1, -1]])}
    blank_padded = {"labels": np.array([[1, 2, 3], [3, 0, 0]])}
    with_lengths = {"labels": np.array([[1, 2, 3], [3, 7, 7]]), "label_lengths": np.array([3, 1])}
    for data in (padded, blank_padded, with_lengths):
        METRICS["cer"].check_data(data, 2)
        assert METRICS["cer"].compute({"y": scores}, data) == 50.0  # 2 edits / 4 characters
    assert not METRICS["cer"].higher_is_better


def test_cer_time_major_and_empty_cases():
    batch_first = onehot([[1, 0, 2, 2, 0], [3, 0, 3, 0, 0]], 4)      # (N=2, T=5, C=4)
    labels = {"labels": np.array([[1, 2, 3], [3, -1, -1]])}
    assert METRICS["cer"].compute({"y": batch_first.transpose(1, 0, 2)}, labels) == 50.0  # (T, N, C) by shape
    # all-blank output: every reference character is a deletion
    assert METRICS["cer"].compute({"y": onehot(np.zeros((2, 5), int), 4)}, labels) == 100.0
    # an empty reference row counts its output as insertions: 1 + 2 edits over 3 characters
    empty_row = {"labels": np.array([[1, 2, 3], [-1, -1, -1]])}
    assert METRICS["cer"].compute({"y": batch_first}, empty_row) == round(100 * 3 / 3, 3)
    with pytest.raises(InputError, match="every reference sequence is empty"):
        METRICS["cer"].check_data({"labels": np.full((2, 3), -1)}, 2)
    with pytest.raises(InputError, match="not a class of the output"):
        METRICS["cer"].compute({"y": batch_first}, {"labels": np.array([[9], [1]])})
    with pytest.raises(InputError, match="label_lengths"):
        METRICS["cer"].check_data({"labels": np.ones((2, 3), int), "label_lengths": np.array([4, 1])}, 2)


def test_cer_ambiguous_layout_prefers_batch_first():
    scores = onehot([[1, 1], [2, 2]], 3)             # T == N == 2
    labels = {"labels": np.array([[1, -1], [2, -1]])}
    # read as (N, T, C): rows [1, 1] -> [1] and [2, 2] -> [2], both right
    assert METRICS["cer"].compute({"y": scores}, labels) == 0.0
    # told it is (T, N, C): both samples read [1, 2], one insertion each
    assert make_cer(time_major=True).compute({"y": scores}, labels) == 100.0
    with pytest.raises(InputError, match=r"\(T, N, C\) with N=3"):
        make_cer(time_major=True).compute({"y": onehot([[1, 1]], 3)}, {"labels": np.array([[1], [1], [1]])})


def test_edit_distances_match_the_textbook_dp():
    rng = np.random.default_rng(1)
    n, length = 2000, 32
    ref, hyp = rng.integers(1, 6, (n, length)), rng.integers(1, 6, (n, length))
    ref_len, hyp_len = rng.integers(0, length + 1, n), rng.integers(0, length + 1, n)
    got = edit_distances(ref, ref_len, hyp, hyp_len)
    for i in range(0, n, 40):
        assert got[i] == levenshtein(ref[i, :ref_len[i]].tolist(), hyp[i, :hyp_len[i]].tolist())
    assert edit_distances(np.array([[1, 2, 3]]), np.array([3]), np.array([[1, 3, 0]]), np.array([2])).tolist() == [1]
    assert edit_distances(np.zeros((1, 0), int), np.array([0]), np.array([[4, 4]]), np.array([2])).tolist() == [2]


# ---------------------------------------------------------------- segmentation and regression


def test_miou_by_hand_with_ignore_index():
    pred = np.array([[[0, 0], [1, 2]]])              # (N=1, H=2, W=2) predicted classes
    labels = np.array([[[0, 1], [1, 255]]])          # bottom-right is ignored
    scores = onehot(pred, 4).transpose(0, 3, 1, 2)   # (1, C=4, 2, 2); class 3 absent from both
    # class 0: inter 1, union 2; class 1: inter 1, union 2; class 2 only predicted on the ignored pixel
    assert METRICS["miou"].compute({"y": scores}, {"labels": labels}) == 50.0
    # not ignoring: class 2 becomes a false prediction of a pixel labelled 0 -> IoU 0 for class 2
    labels0 = np.array([[[0, 1], [1, 0]]])
    assert make_miou(ignore_index=-1).compute({"y": scores}, {"labels": labels0}) == round(100 * (1 / 3 + 1 / 2 + 0) / 3, 3)
    with pytest.raises(InputError, match="every pixel is ignored"):
        METRICS["miou"].compute({"y": scores}, {"labels": np.full((1, 2, 2), 255)})
    with pytest.raises(InputError, match="transpose"):
        METRICS["miou"].compute({"y": scores.transpose(0, 2, 3, 1)}, {"labels": labels})


def test_regression_metrics():
    out, target = np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 3.0, 1.0])
    assert METRICS["mae"].compute({"y": out}, {"labels": target}) == pytest.approx(4 / 3)
    assert METRICS["rmse"].compute({"y": out}, {"labels": target}) == pytest.approx(np.sqrt(10 / 3))
    assert drop(METRICS["mae"], 1.0, 1.25) == 0.25 and drop(METRICS["top1"], 93.1, 92.7) == 0.4
    assert drop(METRICS["top1"], 90.0, 91.0) == -1.0


def test_default_metric():
    y = np.arange(4)
    assert default_metric([(1, 10)], {"x": np.zeros((4, 3)), "labels": y}) is METRICS["top1"]
    assert default_metric([("batch", 3, 2)], ["x", "labels"]) is METRICS["top1"]
    assert default_metric(None, ["labels"]) is METRICS["top1"]
    assert default_metric([(1, 10)], ["x"]) is None
    assert default_metric([(1,)], ["labels"]) is None
    assert default_metric([(1, 10)], {"labels": np.zeros((4, 3), int)}) is None
    assert default_metric([(1, 10)], {"labels": np.zeros(4)}) is None


# ---------------------------------------------------------------- user metrics


def test_user_metric_from_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_factory adds the file's folder; undo it afterwards
    path = tmp_path / "my_metrics.py"
    path.write_text("import numpy as np\n\n"
                    "def exact_rows(outputs, data):\n"
                    "    '''Rows read exactly.'''\n"
                    "    y = next(iter(outputs.values()))\n"
                    "    return float((y.argmax(-1) == data['labels']).all(-1).mean() * 100)\n"
                    "exact_rows.higher_is_better = True\n"
                    "exact_rows.needs = ('labels',)\n\n"
                    "def worst(outputs, data):\n"
                    "    return float(np.abs(next(iter(outputs.values()))).max())\n"
                    "worst.name = 'max_abs'\n"
                    "worst.higher_is_better = False\n")
    m = load_metric(f"{path}:exact_rows")
    assert (m.name, m.higher_is_better, m.needs, m.description) == ("exact_rows", True, ("labels",), "Rows read exactly.")
    assert m.compute({"y": onehot([[1, 2], [1, 1]], 3)}, {"labels": np.array([[1, 2], [1, 2]])}) == 50.0
    w = load_metric(f"{path}:worst")
    assert (w.name, w.higher_is_better) == ("max_abs", False)
    assert w.compute({"y": np.array([-3.0, 2.0])}, {}) == 3.0


def test_user_metric_from_a_module(tmp_path, monkeypatch):
    (tmp_path / "edgesdk_test_metric_mod.py").write_text(
        "from edgesdk.metrics import Metric\n"
        "def count(outputs, data):\n    return len(next(iter(outputs.values())))\n"
        "ready = Metric('ready', count, unit='')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_factory adds the cwd; undo it afterwards
    try:
        assert load_metric("edgesdk_test_metric_mod:count").compute({"y": np.zeros((3, 2))}, {}) == 3.0
        ready = load_metric("edgesdk_test_metric_mod:ready")
        assert isinstance(ready, Metric) and ready.name == "ready"
    finally:
        sys.modules.pop("edgesdk_test_metric_mod", None)


def test_user_callable_and_its_failures():
    def wer(outputs, data):
        return np.float32(12.5)

    m = load_metric(wer)
    assert (m.name, m.higher_is_better, m.unit, m.needs) == ("wer", True, "", ())
    assert m.compute({}, {}) == 12.5 and isinstance(m.compute({}, {}), float)
    with pytest.raises(InputError, match=r"metric 'nan_metric' did not return a finite number[\s\S]*nan"):
        load_metric(Metric("nan_metric", lambda o, d: float("nan"))).compute({}, {})
    with pytest.raises(InputError, match=r"'<lambda>' did not return a finite number[\s\S]*str 'high'"):
        load_metric(lambda o, d: "high").compute({}, {})
    with pytest.raises(InputError, match=r"metric 'broken' failed[\s\S]*KeyError: 'boxes'"):
        load_metric(Metric("broken", lambda o, d: d["boxes"])).compute({"y": np.zeros(2)}, {"labels": np.zeros(2)})


def test_bad_specs_list_the_builtins(tmp_path):
    with pytest.raises(InputError, match=r"unknown metric 'cerr'[\s\S]*top1, top5[\s\S]*did you mean 'cer'"):
        load_metric("cerr")
    with pytest.raises(InputError, match=r"cannot load metric[\s\S]*top1"):
        load_metric(str(tmp_path / "missing.py") + ":fn")
    (tmp_path / "m.py").write_text("def other(o, d):\n    return 1.0\n")
    with pytest.raises(InputError, match=r"has no attribute 'fn'[\s\S]*other"):
        load_metric(f"{tmp_path / 'm.py'}:fn")
    with pytest.raises(InputError, match="a metric must be a name"):
        load_metric(5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- evaluate


def test_evaluate_pads_a_fixed_batch_and_drops_the_padding():
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    sess = ArraySession(lambda v: {"y": v.copy()}, batch=4)
    rows = Metric("rows", lambda o, d: float(len(o["y"])) + float(o["y"][-1, 0]) / 1000, unit="")
    assert evaluate(sess, {"x": x}, ["x"], rows) == 10 + 27 / 1000  # 10 rows, the last real sample last
    assert sess.fed == [4, 4, 4]
    dyn = ArraySession(lambda v: {"y": v.copy()})
    assert evaluate(dyn, {"x": x}, ["x"], rows, chunk=4) == 10 + 27 / 1000 and dyn.fed == [4, 4, 2]


def test_evaluate_joins_time_major_outputs_on_their_batch_axis():
    rng = np.random.default_rng(2)
    steps, classes, n = 4, 5, 10
    table = rng.normal(size=(3, steps * classes)).astype(np.float32)

    def ctc(v: np.ndarray) -> dict[str, np.ndarray]:  # (T, N, C) like torch's CTC convention
        return {"log_probs": (v @ table).reshape(len(v), steps, classes).transpose(1, 0, 2)}

    x = rng.normal(size=(n, 3)).astype(np.float32)
    data = {"x": x, "labels": rng.integers(1, classes, (n, 3))}
    expected = METRICS["cer"].compute({"y": ctc(x)["log_probs"]}, data)
    # chunks of 4, 4, 2 with T == 4: only axis 1 is the batch in every chunk
    assert evaluate(ArraySession(ctc), data, ["x"], "cer", chunk=4) == expected
    # chunks of 5, 5 with T == 5 would be ambiguous; the output spec names the batch axis
    steps = 5
    table = rng.normal(size=(3, steps * classes)).astype(np.float32)
    expected = METRICS["cer"].compute({"y": ctc(x)["log_probs"]}, data)
    named = ArraySession(ctc, outputs=[Spec("log_probs", ("T", "batch", classes))])
    assert evaluate(named, data, ["x"], "cer", chunk=5) == expected


def test_evaluate_without_labels_or_samples_and_bad_outputs():
    x = np.zeros((4, 3), np.float32)
    sess = ArraySession(lambda v: {"y": v})
    assert evaluate(sess, {"x": x}, ["x"], "top1") is None
    assert evaluate(sess, {"x": x[:0], "labels": np.zeros(0, int)}, ["x"], "top1") is None
    assert sess.fed == []
    with pytest.raises(InputError, match="lacks model inputs"):
        evaluate(sess, {"labels": np.zeros(4, int)}, ["x"], "top1")
    scalar_first = ArraySession(lambda v: {"loss": np.float32(1.0), "y": v})
    with pytest.raises(InputError, match="primary output 'loss' has no batch axis"):
        evaluate(scalar_first, {"x": x, "labels": np.zeros(4, int)}, ["x"], "top1")
    extra = ArraySession(lambda v: {"y": v, "loss": np.float32(1.0)})
    keys = Metric("keys", lambda o, d: float(len(o)), unit="")
    assert evaluate(extra, {"x": x}, ["x"], keys) == 1.0  # the batch-less output is left out


# ---------------------------------------------------------------- real onnxruntime sessions


def _export(model: Any, path: Any, example: Any, dynamic: bool) -> None:
    import torch

    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and fast for a 2-layer model
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes=axes, opset_version=17)


def test_evaluate_through_onnxruntime(tmp_path):
    import torch
    from torch import nn

    from edgesdk.runtimes import load

    class TimeMajorCTC(nn.Module):
        """(N, T, F) features -> (T, N, C) log-probabilities, as CRNNs hand them to CTCLoss."""

        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(3, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x).log_softmax(-1).permute(1, 0, 2)

    torch.manual_seed(0)
    ctc, clf = TimeMajorCTC().eval(), nn.Linear(3, 4).eval()
    x = torch.randn(10, 6, 3)
    _export(ctc, tmp_path / "ctc.onnx", x[:4], dynamic=False)       # fixed batch 4: the last chunk is padded
    _export(clf, tmp_path / "clf.onnx", x[:2, 0], dynamic=True)
    rng = np.random.default_rng(3)
    seq = {"x": x.numpy(), "labels": rng.integers(1, 5, (10, 4)), "label_lengths": rng.integers(1, 5, 10)}
    cls = {"x": x[:, 0].numpy(), "labels": rng.integers(0, 4, 10)}
    with torch.no_grad():
        want_cer = METRICS["cer"].compute({"y": ctc(x).numpy()}, seq)
        want_top1 = round(100.0 * float((clf(x[:, 0]).argmax(1).numpy() == cls["labels"]).mean()), 3)
    with load(tmp_path / "ctc.onnx", threads=1) as sess:
        assert sess.inputs[0].shape[0] == 4
        assert evaluate(sess, seq, ["x"], "cer") == want_cer
    with load(tmp_path / "clf.onnx", threads=1) as sess:
        assert evaluate(sess, cls, ["x"], "top1", chunk=3) == want_top1 == accuracy(sess, cls, ["x"], chunk=3)
