"""Task metrics: what "accuracy" means for a model (top-1, CER, mIoU, multi-label F1, ...).

A :class:`Metric` turns the model outputs for ALL eval samples (concatenated along each output's
batch axis, keyed by output name, first output = the primary one) and the eval arrays (inputs
plus label arrays such as ``labels``, ``label_lengths``) into one number. ``evaluate`` runs a
session over eval data in chunks and applies a metric; ``drop`` says how much worse a value is
than a baseline whichever way the metric goes. numpy only.

Example::

    m = load_metric("cer")                       # or "top1", "miou", "path/to/m.py:fn", a callable
    base = evaluate(torch_session, eval_data, ["x"], m)
    value = evaluate(int8_session, eval_data, ["x"], m)
    assert drop(m, base, value) <= 1.0           # at most one CER point worse
"""
from __future__ import annotations

import difflib
import logging
import math
import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import EdgeSDKError, InputError, ModelLoadError
from .intake import check_labels, load_factory

log = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]
MetricFn = Callable[[Arrays, Arrays], float]


def _no_check(data: Arrays, n_samples: int) -> None:
    """The default ``check_data``: nothing to validate up front."""


@dataclass(frozen=True)
class Metric:
    """A named task metric. ``fn(outputs, data) -> float``; ``needs`` are the data keys it cannot do without.

    ``check_data(data, n_samples)`` validates the label arrays before any inference runs and raises
    InputError saying what was expected, what was found and how to fix it.

    Example::

        m = Metric("mean_out", lambda out, data: float(next(iter(out.values())).mean()), unit="")
        m.compute({"y": np.ones((2, 3))}, {})   # 1.0
    """

    name: str
    fn: MetricFn
    higher_is_better: bool = True
    unit: str = "%"
    description: str = ""
    needs: tuple[str, ...] = ()
    check_data: Callable[[Arrays, int], None] = field(default=_no_check, compare=False)

    def compute(self, outputs: Arrays, data: Arrays) -> float:
        """Apply ``fn``; a raise or a result that is not a finite number becomes an InputError naming the metric."""
        try:
            value = self.fn(outputs, data)
        except EdgeSDKError:
            raise
        except Exception as e:  # user metrics can raise anything
            raise InputError(f"metric {self.name!r} failed", found=f"{type(e).__name__}: {e}",
                             expected="fn(outputs: dict[str, ndarray], data: dict[str, ndarray]) -> float",
                             hint=f"outputs: {_describe(outputs)}; data: {_describe(data)}") from e
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(()).item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InputError(f"metric {self.name!r} did not return a finite number", expected="a finite float",
                             found=f"{type(value).__name__} {value!r}"[:200],
                             hint="return a Python float (e.g. float(score)); check for division by zero or NaN")
        return float(value)

    __call__ = compute  # a Metric is callable, so `file.py:name` may name a Metric object


def _describe(arrays: Arrays) -> str:
    return ", ".join(f"{k} {getattr(v, 'dtype', type(v).__name__)}{tuple(getattr(v, 'shape', ()))}"
                     for k, v in arrays.items()) or "none"


# ---------------------------------------------------------------- shared checks


def _primary(outputs: Arrays, metric: str) -> np.ndarray:
    """The first output (the primary one)."""
    if not outputs:
        raise InputError(f"metric {metric!r}: the model returned no outputs", expected="at least one output")
    return np.asarray(next(iter(outputs.values())))


def _require(data: Arrays, key: str, metric: str, what: str) -> np.ndarray:
    if key not in data:
        raise InputError(f"metric {metric!r} needs a `{key}` array in the eval data", expected=what,
                         found=f"keys: {', '.join(data) or 'none'}",
                         hint=f"add `{key}` to the eval .npz (numpy.savez(path, ..., {key}=array))")
    return np.asarray(data[key])


def _check_rows(out: np.ndarray, n: int, metric: str, axis: int = 0) -> None:
    if out.ndim <= axis or out.shape[axis] != n:
        raise InputError(f"metric {metric!r}: the first output does not have one row per label",
                         expected=f"{n} samples on axis {axis}", found=f"output of shape {out.shape}",
                         hint="the first output must be the task output; reorder the model's outputs")


def _int_labels(labels: np.ndarray, n: int, ndim: int, metric: str, shape: str) -> None:
    found = f"{labels.dtype} array of shape {labels.shape}"
    if labels.ndim != ndim or len(labels) != n:
        raise InputError(f"metric {metric!r}: `labels` has the wrong shape", expected=f"shape {shape} with N={n}",
                         found=found, hint="one row of labels per eval sample")
    if labels.dtype.kind not in "iu":
        raise InputError(f"metric {metric!r}: `labels` must be integers", expected=f"an int array of shape {shape}",
                         found=found, hint="labels.astype(np.int64)")


# ---------------------------------------------------------------- classification


def _check_class_labels(metric: str) -> Callable[[Arrays, int], None]:
    def check(data: Arrays, n_samples: int) -> None:
        labels = _require(data, "labels", metric, f"one int class id per sample, shape ({n_samples},)")
        check_labels(labels, n_samples, what=f"metric {metric!r}")
    return check


def _top1(outputs: Arrays, data: Arrays) -> float:
    # exactly sdk/reference.py:accuracy: argmax over the flattened non-batch dims, rounded to 0.001
    labels = _require(data, "labels", "top1", "int class ids (N,)")
    out = _primary(outputs, "top1")
    _check_rows(out, len(labels), "top1")
    if not len(labels):
        raise InputError("metric 'top1': no samples", expected="at least one labelled sample", found="0 labels")
    correct = int((out.reshape(len(labels), -1).argmax(-1) == labels).sum())
    return round(100.0 * correct / len(labels), 3)


def _top5(outputs: Arrays, data: Arrays) -> float:
    labels = _require(data, "labels", "top5", "int class ids (N,)")
    out = _primary(outputs, "top5")
    _check_rows(out, len(labels), "top5")
    if not len(labels):
        raise InputError("metric 'top5': no samples", expected="at least one labelled sample", found="0 labels")
    scores = out.reshape(len(labels), -1)
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise InputError("metric 'top5': a label is not a class of the output", expected=f"0 <= label < {scores.shape[1]}",
                         found=f"labels in [{labels.min()}, {labels.max()}]")
    true = np.take_along_axis(scores, labels.astype(np.int64)[:, None], axis=1)
    # a hit when fewer than 5 classes score strictly higher: ties count for the label, so top5 >= top1 always
    hits = (scores > true).sum(1) < min(5, scores.shape[1])
    return round(100.0 * int(hits.sum()) / len(labels), 3)


# ---------------------------------------------------------------- multi-label


def _check_multilabel(metric: str) -> Callable[[Arrays, int], None]:
    def check(data: Arrays, n_samples: int) -> None:
        labels = _require(data, "labels", metric, f"0/1 array of shape ({n_samples}, C)")
        found = f"{labels.dtype} array of shape {labels.shape}"
        if labels.ndim != 2 or len(labels) != n_samples:
            raise InputError(f"metric {metric!r}: `labels` must be one 0/1 row per sample",
                             expected=f"shape ({n_samples}, C)", found=found,
                             hint="class ids per sample: np.eye(C)[ids] for single labels")
        if labels.size and not np.isin(labels, (0, 1)).all():
            raise InputError(f"metric {metric!r}: `labels` must hold only 0 and 1", expected="values in {0, 1}",
                             found=f"values {np.unique(labels)[:8].tolist()}", hint="(labels > 0.5).astype(np.int64)")
    return check


def _multilabel_counts(outputs: Arrays, data: Arrays, metric: str, threshold: float) -> tuple[int, int, int]:
    """True positives, false positives and false negatives over every (sample, class) cell."""
    labels = _require(data, "labels", metric, "0/1 array of shape (N, C)")
    out = _primary(outputs, metric).astype(np.float64)
    _check_rows(out, len(labels), metric)
    scores = out.reshape(len(labels), -1)
    truth = labels.reshape(len(labels), -1) > 0.5
    if scores.shape != truth.shape:
        raise InputError(f"metric {metric!r}: output and labels differ in classes",
                         expected=f"output of {truth.shape[1]} values per sample", found=f"output {out.shape}")
    if scores.size and (scores.min() < 0 or scores.max() > 1):  # logits, not probabilities
        scores = 1.0 / (1.0 + np.exp(-np.clip(scores, -60, 60)))
    pred = scores > threshold
    return int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())


def _ratio(num: int, den: int, empty_ok: bool) -> float:
    """num/den in percent; 0/0 is 100 when nothing was labelled nor predicted positive, else 0."""
    return round(100.0 * num / den, 3) if den else (100.0 if empty_ok else 0.0)


def make_multilabel(kind: str = "f1", threshold: float = 0.5) -> Metric:
    """Micro-averaged multi-label F1, precision or recall in percent (``kind`` "f1" | "precision" | "recall").

    The first output holds per-class probabilities, or logits (detected: any value outside [0, 1]
    -> sigmoid); a class is predicted when its probability is > ``threshold``. ``labels`` is (N, C) in {0, 1}.
    When neither labels nor predictions have a positive, every kind is 100 (nothing to find, nothing wrong).

    Example::

        make_multilabel("f1").compute({"y": np.array([[3.0, -2.0]])}, {"labels": np.array([[1, 0]])})  # 100.0
    """
    if kind not in ("f1", "precision", "recall"):
        raise InputError(f"unknown multi-label metric kind {kind!r}", expected="f1, precision or recall", found=kind)
    name = f"multilabel_{kind}"

    def fn(outputs: Arrays, data: Arrays) -> float:
        tp, fp, fn_ = _multilabel_counts(outputs, data, name, threshold)
        empty = tp + fp + fn_ == 0
        if kind == "precision":
            return _ratio(tp, tp + fp, empty)
        if kind == "recall":
            return _ratio(tp, tp + fn_, empty)
        return _ratio(2 * tp, 2 * tp + fp + fn_, empty)

    return Metric(name, fn, True, "%", f"micro {kind} of multi-label predictions (p > {threshold}) vs 0/1 `labels`",
                  ("labels",), _check_multilabel(name))


# ---------------------------------------------------------------- CTC sequences


def edit_distances(ref: np.ndarray, ref_len: np.ndarray, hyp: np.ndarray, hyp_len: np.ndarray) -> np.ndarray:
    """Levenshtein distance of each row pair: ``ref[i, :ref_len[i]]`` vs ``hyp[i, :hyp_len[i]]`` (int arrays).

    Vectorised over rows and over the hypothesis axis (one numpy step per reference position), so
    2,000 pairs of length 32 take milliseconds.

    Example::

        edit_distances(np.array([[1, 2, 3]]), np.array([3]), np.array([[1, 3, 0]]), np.array([2]))  # [1]
    """
    n, lr = ref.shape
    lh = hyp.shape[1]
    ref_len, hyp_len = np.asarray(ref_len, np.int64), np.asarray(hyp_len, np.int64)
    cols = np.arange(lh + 1, dtype=np.int64)
    row = np.tile(cols, (n, 1))  # D[0][j] = j insertions
    rows = np.arange(n)
    result = np.where(ref_len == 0, hyp_len, 0)
    for i in range(1, lr + 1):
        cost = (hyp != ref[:, i - 1:i]).astype(np.int64)  # (n, lh) substitution cost
        tmp = np.empty_like(row)
        tmp[:, 0] = i
        tmp[:, 1:] = np.minimum(row[:, 1:] + 1, row[:, :-1] + cost)  # deletion | substitution
        # insertions chain along j: D[i][j] = min_k tmp[k] + (j - k), a running minimum
        row = np.minimum.accumulate(tmp - cols, axis=1) + cols
        done = ref_len == i
        result[done] = row[rows[done], hyp_len[done]]
    return result


def _compact(values: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move the kept entries of each row to its front; returns (rows, lengths). Entries past a length are junk."""
    order = np.argsort(~keep, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1), keep.sum(1)


def ctc_greedy_decode(logits: np.ndarray, blank: int = 0, time_major: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Best-path CTC decode of (N, T, C) (or (T, N, C) with ``time_major``): argmax, collapse repeats, drop blanks.

    Returns (tokens (N, T), lengths (N,)); row i's text is ``tokens[i, :lengths[i]]``.

    Example::

        toks, lens = ctc_greedy_decode(np.eye(3)[[[1, 1, 0, 1, 2]]])   # toks[0, :lens[0]] == [1, 1, 2]
    """
    best = np.asarray(logits).argmax(-1)
    best = best.T if time_major else best
    keep = best != blank
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    return _compact(best, keep)


def _check_sequences(metric: str, blank: int) -> Callable[[Arrays, int], None]:
    def check(data: Arrays, n_samples: int) -> None:
        labels = _require(data, "labels", metric, f"padded int array ({n_samples}, L)")
        _int_labels(labels, n_samples, 2, metric, "(N, L), padded with -1 or the blank id")
        if "label_lengths" in data:
            lengths = np.asarray(data["label_lengths"])
            if lengths.shape != (n_samples,) or lengths.dtype.kind not in "iu" or (
                    lengths.size and (lengths.min() < 0 or lengths.max() > labels.shape[1])):
                raise InputError(f"metric {metric!r}: `label_lengths` must give each label's length",
                                 expected=f"ints in [0, {labels.shape[1]}] of shape ({n_samples},)",
                                 found=f"{lengths.dtype} array of shape {lengths.shape}"
                                       + (f", values in [{lengths.min()}, {lengths.max()}]" if lengths.size else ""),
                                 hint="label_lengths[i] = number of characters in sample i")
        _, lens = _references(data, blank)
        if n_samples and not lens.sum():
            raise InputError(f"metric {metric!r}: every reference sequence is empty, so the error rate is undefined",
                             expected="at least one labelled character",
                             found=f"labels of shape {labels.shape}, all padding",
                             hint="padding is -1 or the blank id; give `label_lengths` when 0 is a real class")
    return check


def _references(data: Arrays, blank: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(data["labels"]).astype(np.int64)
    if "label_lengths" in data:
        keep = np.arange(labels.shape[1]) < np.asarray(data["label_lengths"])[:, None]
    else:  # no lengths: padding is -1 or the blank id, which is never a character
        keep = (labels >= 0) & (labels != blank)
    return _compact(labels, keep)


def _ctc_time_major(shape: tuple[int, ...], n: int, metric: str, hint: bool | None) -> bool:
    if len(shape) != 3:
        raise InputError(f"metric {metric!r}: the first output must be CTC scores", expected="(N, T, C) or (T, N, C)",
                         found=f"shape {shape}")
    if hint is not None:
        if shape[1 if hint else 0] != n:
            raise InputError(f"metric {metric!r}: the first output does not have one row per label",
                             expected=f"{'(T, N, C)' if hint else '(N, T, C)'} with N={n}", found=f"shape {shape}")
        return hint
    if shape[0] == n:  # (N, T, C) wins when T == N: the batch-first layout is the common one
        return False
    if shape[1] == n:
        return True
    raise InputError(f"metric {metric!r}: no axis of the first output matches the {n} samples",
                     expected=f"(N={n}, T, C) or (T, N={n}, C)", found=f"shape {shape}")


def make_cer(blank: int = 0, time_major: bool | None = None) -> Metric:
    """Character error rate (percent, lower is better) of greedy-decoded CTC output against ``labels``.

    The first output is (N, T, C) or (T, N, C) scores; without ``time_major`` the layout is the one
    whose batch axis has one entry per label row, (N, T, C) when both do. ``labels`` is (N, L) ints,
    cut at ``label_lengths`` (N,) when given, else padded with -1 or the blank id.
    CER = total edit distance / total reference characters * 100.

    Example::

        make_cer().compute({"y": np.eye(3)[[[1, 2, 0]]]}, {"labels": np.array([[1, 2]])})   # 0.0
    """
    def fn(outputs: Arrays, data: Arrays) -> float:
        labels = _require(data, "labels", "cer", "padded int array (N, L)")
        out = _primary(outputs, "cer")
        tm = _ctc_time_major(out.shape, len(labels), "cer", time_major)
        refs, ref_lens = _references(data, blank)
        total = int(ref_lens.sum())
        if not total:
            raise InputError("metric 'cer': every reference sequence is empty, so the error rate is undefined",
                             expected="at least one labelled character", found=f"labels of shape {labels.shape}")
        used = refs[np.arange(refs.shape[1]) < ref_lens[:, None]]
        if used.min() < 0 or used.max() >= out.shape[-1]:
            raise InputError("metric 'cer': a label id is not a class of the output",
                             expected=f"0 <= id < {out.shape[-1]} (the output's classes)",
                             found=f"ids in [{used.min()}, {used.max()}]",
                             hint="the labels must use the model's alphabet, with the blank at index "
                                  f"{blank}")
        hyp, hyp_lens = ctc_greedy_decode(out, blank, tm)
        return round(100.0 * int(edit_distances(refs, ref_lens, hyp, hyp_lens).sum()) / total, 3)

    return Metric("cer", fn, False, "%", f"character error rate of greedy CTC decoding (blank {blank})",
                  ("labels",), _check_sequences("cer", blank))


# ---------------------------------------------------------------- segmentation


def make_miou(ignore_index: int = 255) -> Metric:
    """Mean IoU in percent of argmax-over-C segmentation: first output (N, C, H, W), ``labels`` (N, H, W) ints.

    Pixels labelled ``ignore_index`` do not count; the mean is over classes present in the labels or
    the predictions (of counted pixels).

    Example::

        make_miou().compute({"y": np.eye(2)[[[[0, 1]]]].transpose(0, 3, 1, 2)}, {"labels": np.array([[[0, 0]]])})  # 25.0
    """
    def fn(outputs: Arrays, data: Arrays) -> float:
        labels = _require(data, "labels", "miou", "int class ids (N, H, W)").astype(np.int64)
        out = _primary(outputs, "miou")
        if out.ndim != labels.ndim + 1 or out.shape[:1] + out.shape[2:] != labels.shape:
            raise InputError("metric 'miou': output and labels differ in shape",
                             expected=f"output (N, C, {', '.join(map(str, labels.shape[1:]))}) for labels {labels.shape}",
                             found=f"output {out.shape}", hint="channels-last output: transpose it to (N, C, H, W)")
        classes = out.shape[1]
        valid = labels != ignore_index
        truth, pred = labels[valid], out.argmax(1)[valid]
        if not truth.size:
            raise InputError("metric 'miou': every pixel is ignored", expected="labelled pixels",
                             found=f"all labels == {ignore_index}")
        if truth.min() < 0 or truth.max() >= classes:
            raise InputError("metric 'miou': a label is not a class of the output",
                             expected=f"0 <= label < {classes} or {ignore_index} (ignored)",
                             found=f"labels in [{truth.min()}, {truth.max()}]")
        cm = np.bincount(truth * classes + pred, minlength=classes * classes).reshape(classes, classes)
        inter = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - inter
        present = union > 0
        return round(100.0 * float((inter[present] / union[present]).mean()), 3)

    def check(data: Arrays, n_samples: int) -> None:
        labels = _require(data, "labels", "miou", f"int class ids ({n_samples}, H, W)")
        _int_labels(labels, n_samples, max(labels.ndim, 2), "miou", "(N, H, W)")

    return Metric("miou", fn, True, "%", f"mean IoU of argmax segmentation (ignore {ignore_index})",
                  ("labels",), check)


# ---------------------------------------------------------------- regression


def _regression(kind: str) -> Metric:
    def fn(outputs: Arrays, data: Arrays) -> float:
        target = _require(data, "labels", kind, "float targets shaped like the output").astype(np.float64)
        out = _primary(outputs, kind).astype(np.float64)
        _check_rows(out, len(target), kind)
        if out.size != target.size or not target.size:
            raise InputError(f"metric {kind!r}: output and `labels` differ in size",
                             expected=f"labels with the output's {out.size} values", found=f"labels {target.shape}")
        err = out.reshape(target.shape) - target
        return float(np.abs(err).mean() if kind == "mae" else np.sqrt((err ** 2).mean()))

    def check(data: Arrays, n_samples: int) -> None:
        target = _require(data, "labels", kind, f"float targets ({n_samples}, ...)")
        if target.ndim < 1 or len(target) != n_samples or target.dtype.kind not in "iuf":
            raise InputError(f"metric {kind!r}: `labels` must be one numeric target row per sample",
                             expected=f"numbers of shape ({n_samples}, ...)",
                             found=f"{target.dtype} array of shape {target.shape}")
    desc = "mean absolute error" if kind == "mae" else "root mean squared error"
    return Metric(kind, fn, False, "", f"{desc} of the first output vs `labels`", ("labels",), check)


# ---------------------------------------------------------------- registry

METRICS: Mapping[str, Metric] = MappingProxyType({m.name: m for m in (
    Metric("top1", _top1, True, "%", "top-1 accuracy: argmax of the first output == `labels`", ("labels",),
           _check_class_labels("top1")),
    Metric("top5", _top5, True, "%", "top-5 accuracy: `labels` among the 5 highest scores", ("labels",),
           _check_class_labels("top5")),
    make_multilabel("f1"), make_multilabel("precision"), make_multilabel("recall"),
    make_cer(), make_miou(), _regression("mae"), _regression("rmse"))})
"""The built-in metrics by name."""

_ALIASES = {"accuracy": "top1"}  # today's word for top-1


def load_metric(spec: str | Callable[..., Any] | Metric) -> Metric:
    """A Metric from a built-in name, ``path/to/file.py:fn``, ``package.module:fn``, a callable or a Metric.

    A callable ``fn(outputs, data) -> float`` is named by ``fn.name`` or ``fn.__name__``; optional
    attributes ``higher_is_better`` (default True), ``unit``, ``needs`` (data keys; evaluate returns
    None when one is absent) are read from it.

    Example::

        load_metric("cer").higher_is_better        # False
        load_metric("metrics/wer.py:wer").name     # "wer" (or wer.name)
    """
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        key = spec.strip()
        if key.lower() in METRICS or key.lower() in _ALIASES:
            return METRICS[_ALIASES.get(key.lower(), key.lower())]
        if ":" not in key:
            close = difflib.get_close_matches(key.lower(), [*METRICS, *_ALIASES], n=1)
            raise InputError(f"unknown metric {spec!r}", expected=_SPEC_FORMS, found=repr(spec),
                             hint=f"did you mean {close[0]!r}?" if close else "write your metric as file.py:fn")
        try:
            spec = load_factory(key)
        except ModelLoadError as e:  # its wording is about model factories; say it is the metric
            raise InputError(f"cannot load metric {key!r}: {e.what.replace('model file', 'file')}", expected=_SPEC_FORMS, found=e.found,
                             hint=e.hint or "fn(outputs, data) -> float, at module level") from e
        if isinstance(spec, Metric):
            return spec
    if not callable(spec):
        raise InputError("a metric must be a name, a file.py:fn reference or a callable", expected=_SPEC_FORMS,
                         found=f"{type(spec).__name__} {spec!r}"[:200])
    return _wrap_callable(spec)


_SPEC_FORMS = (f"a built-in ({', '.join(METRICS)}), path/to/file.py:fn, package.module:fn, "
               "or a callable fn(outputs, data) -> float")


def _wrap_callable(fn: Callable[..., Any]) -> Metric:
    name = getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__
    needs = getattr(fn, "needs", ())
    needs = (needs,) if isinstance(needs, str) else tuple(needs)
    doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
    return Metric(str(name), fn, bool(getattr(fn, "higher_is_better", True)), str(getattr(fn, "unit", "")),
                  doc[0] if doc else "user metric", needs)


def default_metric(output_shapes: Sequence[Sequence[int | str]] | None,
                   data_keys: Mapping[str, Any] | Iterable[str]) -> Metric | None:
    """The metric used when none is given: top1 (today's accuracy) when there are class labels, else None.

    ``data_keys`` is the eval data (a mapping of arrays) or just its keys. top1 is chosen when
    ``labels`` is present (and, when arrays are given, 1-D ints) and the first output has a batch
    axis and at least one class axis (N, C...); unknown output shapes (None or []) do not block it.

    Example::

        default_metric([(1, 10)], {"x": x, "labels": y}).name    # "top1"
        default_metric([(1, 10)], ["x"])                          # None
    """
    keys = data_keys if isinstance(data_keys, Mapping) else set(data_keys)
    if "labels" not in keys:
        return None
    if isinstance(keys, Mapping):
        labels = np.asarray(keys["labels"])
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            return None
    if output_shapes and len(output_shapes[0]) < 2:
        return None
    return METRICS["top1"]


def drop(metric: Metric, baseline: float, value: float) -> float:
    """How many metric points ``value`` is worse than ``baseline`` (positive = worse), in either direction.

    Rounded to 9 decimals so float noise (93.1 - 92.7 = 0.40000000000000568) does not break a budget.

    Example::

        drop(METRICS["top1"], 90.0, 88.5)   # 1.5
        drop(METRICS["cer"], 2.0, 2.5)      # 0.5
    """
    diff = float(baseline) - float(value) if metric.higher_is_better else float(value) - float(baseline)
    return round(diff, 9)


# ---------------------------------------------------------------- evaluation


def _fixed_batch(session: Any) -> int | None:
    # mirrors sdk/reference.py:accuracy: the first input with a positive int batch dim fixes the batch
    inputs = getattr(session, "inputs", None) or []
    return next((s.shape[0] for s in inputs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0), None)


def _run_chunks(session: Any, eval_data: Arrays, input_names: Sequence[str], n: int,
                chunk: int) -> tuple[list[dict[str, np.ndarray]], list[int], list[int]]:
    """Per-chunk outputs, the batch fed in each chunk and the real (unpadded) sample count of each."""
    fixed = _fixed_batch(session)
    chunk = fixed or chunk  # a fixed-batch artifact takes exactly its batch: the last chunk is padded
    results, fed, real = [], [], []
    for start in range(0, n, chunk):
        feeds = {k: np.ascontiguousarray(eval_data[k][start:start + chunk]) for k in input_names}
        count = len(next(iter(feeds.values())))
        if fixed and count < chunk:
            feeds = {k: np.concatenate([v, np.repeat(v[-1:], chunk - count, axis=0)]) for k, v in feeds.items()}
        results.append({k: np.asarray(v) for k, v in session.run(feeds).items()})
        fed.append(len(next(iter(feeds.values()))))
        real.append(count)
    return results, fed, real


def _batch_axis(shapes: list[tuple[int, ...]], fed: list[int], spec_shape: Sequence[Any] | None,
                batch_dim: Any) -> int | None:
    """The axis whose size is the fed batch in every chunk; axis 0 first, then the session's batch symbol."""
    if len({len(s) for s in shapes}) != 1:
        return None
    axes = [a for a in range(len(shapes[0])) if all(s[a] == f for s, f in zip(shapes, fed))]
    if len(axes) > 1 and isinstance(batch_dim, str) and spec_shape and len(spec_shape) == len(shapes[0]):
        named = [a for a in axes if spec_shape[a] == batch_dim]  # e.g. (T, "batch", C) from a CTC export
        if len(named) == 1:
            return named[0]
    return axes[0] if axes else None


def _concat_outputs(session: Any, results: list[dict[str, np.ndarray]], fed: list[int],
                    real: list[int]) -> dict[str, np.ndarray]:
    specs = {s.name: s.shape for s in (getattr(session, "outputs", None) or []) if hasattr(s, "shape")}
    in_specs = getattr(session, "inputs", None) or []
    batch_dim = in_specs[0].shape[0] if in_specs and getattr(in_specs[0], "shape", None) else None
    merged: dict[str, np.ndarray] = {}
    for i, name in enumerate(results[0]):
        parts = [r[name] for r in results]
        axis = _batch_axis([p.shape for p in parts], fed, specs.get(name), batch_dim)
        if axis is None:
            if i == 0:
                raise InputError(f"the primary output {name!r} has no batch axis",
                                 expected=f"an axis of size {fed[0]} (the samples fed per run)",
                                 found=f"shapes {[p.shape for p in parts[:3]]}",
                                 hint="make the task output the model's first output, with one row per sample")
            log.debug("output %r has no batch axis; left out of the metric's outputs", name)
            continue
        merged[name] = np.concatenate([np.take(p, np.arange(r), axis=axis) for p, r in zip(parts, real)], axis=axis)
    return merged


def evaluate(session: Any, eval_data: Arrays, input_names: Sequence[str],
             metric: Metric | str | Callable[..., Any], chunk: int = 64) -> float | None:
    """Run ``session`` over ``eval_data`` in chunks and return ``metric`` on all outputs; None without its labels.

    ``session`` is anything with ``.run(feeds) -> dict`` (and optionally ``.inputs``/``.outputs`` specs
    with ``.shape``). A fixed-batch session gets exactly its batch: the last chunk is padded by
    repeating the last sample and the padded rows are dropped. Each output is concatenated along
    its batch axis: axis 0 when its size is the fed batch in every chunk, else the first axis that
    is (so (T, N, C) CTC output joins on axis 1); when several axes qualify, the one the session's
    output spec names like the inputs' batch dim wins, else axis 0. Non-primary outputs without a
    batch axis are left out.

    Example::

        evaluate(load("out/model.onnx"), np.load("eval.npz"), ["x"], "cer")   # e.g. 3.125
    """
    metric = load_metric(metric)
    if not input_names:
        raise InputError("evaluate needs the model's input names", expected="e.g. ['x']", found="none")
    missing = [k for k in input_names if k not in eval_data]
    if missing:
        raise InputError("the eval data lacks model inputs", expected=", ".join(input_names),
                         found=f"keys: {', '.join(eval_data)}", hint=f"add {', '.join(missing)} to the eval data")
    if any(k not in eval_data for k in metric.needs):
        return None
    n = len(eval_data[input_names[0]])
    if n == 0 or any(not len(eval_data[k]) for k in metric.needs):
        return None
    metric.check_data(eval_data, n)
    results, fed, real = _run_chunks(session, eval_data, input_names, n, chunk)
    return metric.compute(_concat_outputs(session, results, fed, real), eval_data)
