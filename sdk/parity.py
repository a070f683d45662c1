"""The parity gate: compare a candidate's outputs with PyTorch's, output by output.

Each precision has a rule, a :class:`Tolerance` (``DEFAULT_TOLERANCES``, ``tolerance_for``):

- Element rule: an element fails only when ``abs > atol_effective`` AND ``rel > rtol`` (Polygraphy's
  rule). ``atol_effective = max(atol, atol_scale * max|reference|)`` per output, so float summation
  noise on an output of magnitude 20 (log-probabilities) is not a failure while a wrong op is.
- Whole-output measures, accumulated in float64 over all batches: cosine; cosine of the mean-centred
  outputs (Pearson correlation: an offset such as sigmoid scores around 0.5 cannot inflate it); SQNR
  ``10*log10(sum ref^2 / sum (ref-cand)^2)`` (capped at ``SQNR_CAP_DB``); nrmse = rms error / std(ref);
  and, for 2-D float (N, C>=2) outputs, top-1 agreement.
- A NaN/Inf where the reference has none (or the other way round) fails, and the output's measures are
  then None ("n/a"): none of them can claim a perfect match next to a NaN.
- Integer and boolean outputs (class ids, masks, counts) must match exactly at every precision: a wrong
  class id is wrong however close the number. numpy only.

Example::

    r = compare(ref_batches, got_batches, tolerance=tolerance_for("int8"))
    r.passed, r.to_dict()["centered_cosine"], r.failure_message()
    compare(ref_batches, got_batches, atol=1e-4, rtol=1e-4)  # the keyword form: Tolerance(atol, rtol)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ArtifactError

SQNR_CAP_DB = 200.0  # identical outputs: a finite number (JSON has no Infinity) far above any real export
_CONSTANT = 1e-10  # a reference whose std is below this fraction of its rms is constant: nothing to centre


@dataclass(frozen=True)
class Tolerance:
    """Every threshold of a precision's rule; None turns that test off.

    atol/rtol None: no element test (INT8 is judged on the whole-output measures and accuracy).
    ``atol_scale``: the element rule's atol grows to ``atol_scale * max|ref|`` on large outputs.
    ``top1_margin``: a row whose argmaxes differ still agrees when the reference's values at the two
    picks are within ``top1_margin * std(ref)`` (a near tie that the precision's noise may flip).
    The defaults of the new fields keep the old rule, so ``Tolerance(atol, rtol, min_cosine)`` and
    manifests written before them are judged as before.

    Example::

        Tolerance(None, None, 0.98, min_centered_cosine=0.95, max_nrmse=0.35, min_top1=0.9)
    """

    atol: float | None
    rtol: float | None
    min_cosine: float | None = None
    atol_scale: float | None = None
    min_centered_cosine: float | None = None
    max_nrmse: float | None = None
    min_sqnr_db: float | None = None
    min_top1: float | None = None
    top1_margin: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        """The thresholds by name (the keys ``from_dict`` reads back)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Tolerance:
        """Rebuild from a manifest's ``parity`` dict; a missing key is None (the old rule).

        Example::

            Tolerance.from_dict({"atol": 1e-4, "rtol": 1e-4})  # a manifest of the previous version
        """
        d = d or {}
        values: dict[str, float | None] = {}
        for f in fields(cls):
            v = d.get(f.name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v)):
                raise ArtifactError(f"the parity tolerance {f.name!r} in the manifest is not a number",
                                    expected="a number or null", found=repr(v),
                                    hint="copy the artifact directory again, or re-run `edgesdk compress`")
            values[f.name] = None if v is None else float(v)
        return cls(**values)


TOLERANCE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Tolerance))  # in ParityResult.to_dict()

# Why these numbers (measured on a random-weight conv net with a classifier head and a sigmoid score
# map of mean 0.5, std 0.014, the hard case for the centred measures; 4 seeds):
# - fp32: float32 noise only; 1e-5 * max|ref| is ~80 float32 ulps of the largest value, which covers
#   summation/cancellation noise (an OCR log-softmax of magnitude 20 erred 1.4e-4 on an element near 0)
#   yet a wrong op, a flipped channel or a 1% scale error still fails the element rule by orders.
# - raw cosine floors are unchanged. The centred cosine and nrmse floors sit well past what genuine
#   conversions measured on the score map (fp16: nrmse <= 0.01; bf16: centred >= 0.997, nrmse <= 0.08;
#   onnxruntime static INT8: centred >= 0.98, nrmse <= 0.21) and far from a collapsed output (a constant
#   score map: centred ~0, nrmse ~1). nrmse also sees the scale and bias errors centring hides.
# - top-1: a flip between classes the reference has within top1_margin std of each other (the noise the
#   rule allows) is not counted; the floor then catches real flips: >10% of rows for INT8 (a swapped
#   class pair, a collapsed head), 5% for bf16, 2% for fp16 (one row in 64 may flip).
# - SQNR is reported, not gated: its signal power includes the offset (the constant score map reads
#   ~30 dB), so a floor would add nothing to the cosine; -20*log10(nrmse) is its offset-free form.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(1e-4, 1e-4, None, atol_scale=1e-5),
    "fp16": Tolerance(1e-2, 1e-2, 0.999, min_centered_cosine=0.999, max_nrmse=0.05, min_top1=0.98,
                      top1_margin=0.05),
    "bf16": Tolerance(5e-2, 5e-2, 0.995, min_centered_cosine=0.99, max_nrmse=0.15, min_top1=0.95,
                      top1_margin=0.15),
    "int8": Tolerance(None, None, 0.98, min_centered_cosine=0.95, max_nrmse=0.35, min_top1=0.9,
                      top1_margin=0.35),
}


def tolerance_for(precision: str, *, atol: float | None = None, rtol: float | None = None,
                  min_cosine: float | None = None) -> Tolerance:
    """The rule for ``precision`` (an unknown one gets fp32's) with the user's overrides.

    atol/rtol apply to float precisions only (integer ones have no element rule); a user atol is used
    as given (``atol_scale`` off). ``min_cosine`` is the raw cosine floor; one below the defaults also
    loosens the centred cosine floor and max_nrmse to match (so ``--min-cosine 0.9`` is not still failed
    by them), a stricter one tightens the raw floor only.

    Example::

        tolerance_for("int8", min_cosine=0.9).min_centered_cosine  # 0.9 (the default is 0.95)
    """
    tol = DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])
    floating = tol.atol is not None
    if atol is not None and floating:  # the user's atol is taken as given: no scaling to the output
        tol = replace(tol, atol=float(atol), atol_scale=None)
    if rtol is not None and floating:
        tol = replace(tol, rtol=float(rtol))
    if min_cosine is not None:
        c = float(min_cosine)
        centred, nrmse = tol.min_centered_cosine, tol.max_nrmse
        if centred is not None:
            centred = min(centred, c)
        if nrmse is not None and 0 < c < 1:
            nrmse = max(nrmse, math.sqrt(1.0 / c ** 2 - 1.0))  # the noise a cosine of c allows on zero-mean data
        tol = replace(tol, min_cosine=c, min_centered_cosine=centred, max_nrmse=nrmse)
    return tol


@dataclass
class OutputParity:
    """One output's numbers. The whole-output measures are None where they cannot be told: after a
    NaN/Inf mismatch; the centred cosine of a constant reference; top-1 outside 2-D float outputs.
    nrmse is relative to the reference's rms where the reference is constant."""

    name: str
    max_abs_err: float | None = 0.0
    max_rel_err: float | None = 0.0
    cosine: float | None = 1.0
    centered_cosine: float | None = None
    sqnr_db: float | None = None
    nrmse: float | None = None
    top1_agreement: float | None = None
    top1_exact_agreement: float | None = None
    num_elements: int = 0
    num_failed: int = 0
    nonfinite_mismatch: int = 0
    atol_effective: float | None = None
    worst: dict[str, Any] | None = None
    error: str | None = None
    failures: list[str] = field(default_factory=list)
    passed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "name"}


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _extreme(outs: list[OutputParity], key: str, pick: Any) -> float | None:
    """min/max of a measure over outputs; None when any output has a NaN/Inf mismatch (no perfect claim)."""
    if any(o.nonfinite_mismatch for o in outs):
        return None
    vals = [getattr(o, key) for o in outs if getattr(o, key) is not None]
    return pick(vals) if vals else None


@dataclass
class ParityResult:
    outputs: dict[str, OutputParity]
    tolerance: Tolerance
    passed: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def atol(self) -> float | None:
        return self.tolerance.atol

    @property
    def rtol(self) -> float | None:
        return self.tolerance.rtol

    @property
    def min_cosine(self) -> float | None:
        return self.tolerance.min_cosine

    def to_dict(self) -> dict[str, Any]:
        """Measures (worst over outputs), the tolerance's keys (``Tolerance.from_dict`` reads them) and
        per-output details."""
        outs = list(self.outputs.values())
        measures = {
            "passed": self.passed,
            "nonfinite_mismatch": sum(o.nonfinite_mismatch for o in outs),
            "max_abs_err": _extreme(outs, "max_abs_err", max) if outs else 0.0,
            "max_rel_err": _extreme(outs, "max_rel_err", max) if outs else 0.0,
            "cosine": _extreme(outs, "cosine", min) if outs else 1.0,
            "centered_cosine": _extreme(outs, "centered_cosine", min),
            "sqnr_db": _extreme(outs, "sqnr_db", min),
            "nrmse": _extreme(outs, "nrmse", max),
            "top1_agreement": _extreme(outs, "top1_agreement", min),
        }
        return {**measures, **self.tolerance.to_dict(), "outputs": {o.name: o.to_dict() for o in outs}}

    def summary(self) -> str:
        """One line; a NaN/Inf count comes first."""
        d = self.to_dict()
        head = "pass" if self.passed else "FAIL"
        nf = f"{d['nonfinite_mismatch']} NaN/Inf mismatches, " if d["nonfinite_mismatch"] else ""
        line = (f"{head}: {nf}max abs {_fmt(d['max_abs_err'], '.3g')}, max rel {_fmt(d['max_rel_err'], '.3g')}, "
                f"cosine {_fmt(d['cosine'], '.6f')}, centred cosine {_fmt(d['centered_cosine'], '.6f')}, "
                f"SQNR {_fmt(d['sqnr_db'], '.1f')} dB, nrmse {_fmt(d['nrmse'], '.3g')}")
        return line + (f", top-1 {d['top1_agreement']:.2%}" if d["top1_agreement"] is not None else "")

    def failure_message(self) -> str:
        """Name the worst failing output, why it failed, its worst element and the numbers."""
        failing = [o for o in self.outputs.values() if not o.passed]
        if not failing:
            return "; ".join(self.notes) if self.notes else "all outputs within tolerance"
        o = max(failing, key=lambda o: (o.error is not None, o.nonfinite_mismatch, o.num_failed,
                                        o.max_abs_err or 0.0))
        if o.error:
            return f"output '{o.name}': {o.error}"
        msg = f"output '{o.name}': "
        if o.nonfinite_mismatch:
            msg += f"{o.nonfinite_mismatch} NaN/Inf mismatches of {o.num_elements} elements; "
        n_bad = o.num_failed - o.nonfinite_mismatch
        if n_bad and o.atol_effective is None:
            msg += f"{n_bad} of {o.num_elements} elements differ (integer outputs must match exactly); "
        elif n_bad:
            msg += (f"{n_bad} of {o.num_elements} elements exceed atol={o.atol_effective:g} "
                    f"and rtol={self.tolerance.rtol:g}; ")
        msg += (f"max abs err {_fmt(o.max_abs_err, '.4g')}, max rel err {_fmt(o.max_rel_err, '.4g')}, "
                f"cosine {_fmt(o.cosine, '.6f')}, centred cosine {_fmt(o.centered_cosine, '.6f')}, "
                f"SQNR {_fmt(o.sqnr_db, '.1f')} dB, nrmse {_fmt(o.nrmse, '.3g')}")
        if o.worst:
            w = o.worst
            what = "first NaN/Inf mismatch" if o.nonfinite_mismatch else "worst element"
            msg += (f"; {what} batch {w['batch']} index {tuple(w['index'])}: expected {w['expected']:.9g}, "
                    f"got {w['got']:.9g}")
        if o.failures:
            msg += " (" + "; ".join(o.failures) + ")"
        return msg


def _as_batches(x: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray]) -> list[Mapping[str, np.ndarray]]:
    return [x] if isinstance(x, Mapping) else list(x)


class _Moments:
    """Float64 sums and co-moments of (ref, cand) over finite pairs, merged batch by batch (Chan et al.)
    so the centring is over all batches without holding them: numerically stable for large offsets."""

    def __init__(self) -> None:
        self.n = 0
        self.mean_r = self.mean_c = self.m2_r = self.m2_c = self.co = 0.0
        self.rr = self.cc = self.rc = self.dd = 0.0

    def add(self, r: np.ndarray, c: np.ndarray) -> None:
        nb = r.size
        if not nb:
            return
        mr, mc = float(r.mean()), float(c.mean())
        dr_, dc_ = r - mr, c - mc
        m2r, m2c, co = float((dr_ * dr_).sum()), float((dc_ * dc_).sum()), float((dr_ * dc_).sum())
        n = self.n + nb
        dr, dc, w = mr - self.mean_r, mc - self.mean_c, self.n * nb / n
        self.mean_r += dr * nb / n
        self.mean_c += dc * nb / n
        self.m2_r += m2r + dr * dr * w
        self.m2_c += m2c + dc * dc * w
        self.co += co + dr * dc * w
        self.n = n
        d = r - c
        self.rr += float((r * r).sum())
        self.cc += float((c * c).sum())
        self.rc += float((r * c).sum())
        self.dd += float((d * d).sum())

    def cosine(self) -> float:
        if self.rr > 0 and self.cc > 0:
            return max(-1.0, min(1.0, self.rc / math.sqrt(self.rr * self.cc)))
        return 1.0 if self.rr == 0 and self.cc == 0 else 0.0

    def constant_reference(self) -> bool:
        return self.m2_r <= _CONSTANT ** 2 * self.rr

    def centered_cosine(self) -> float | None:
        if self.n == 0 or self.constant_reference():
            return None
        if self.m2_c <= 0:
            return 0.0  # a constant candidate against a varying reference: no correlation at all
        return max(-1.0, min(1.0, self.co / math.sqrt(self.m2_r * self.m2_c)))

    def sqnr_db(self) -> float | None:
        if self.n == 0:
            return None
        if self.dd == 0:
            return SQNR_CAP_DB
        if self.rr == 0:
            return -SQNR_CAP_DB
        return max(-SQNR_CAP_DB, min(SQNR_CAP_DB, 10.0 * math.log10(self.rr / self.dd)))

    def nrmse(self) -> float | None:
        if self.n == 0:
            return None
        scale = self.rr if self.constant_reference() else self.m2_r  # both are sums over n: n cancels
        if scale <= 0:
            return 0.0 if self.dd == 0 else None
        return math.sqrt(self.dd / scale)


def _ref_scale(refs: list[Mapping[str, np.ndarray]], name: str) -> tuple[float, float]:
    """(max |ref|, std(ref)) over the finite reference values of one output: the element rule's atol and
    the top-1 near-tie margin need them before the candidate is judged (a cheap first pass)."""
    peak, m = 0.0, _Moments()
    for batch in refs:
        if name not in batch:
            continue
        r = np.asarray(batch[name]).astype(np.float64, copy=False).ravel()
        r = r[np.isfinite(r)]
        if r.size:
            peak = max(peak, float(np.abs(r).max()))
            m.add(r, r)
    return peak, math.sqrt(m.m2_r / m.n) if m.n else 0.0


class _OutputCheck:
    """Accumulates one output over batches: element failures, the worst element, moments, top-1."""

    def __init__(self, name: str, tol: Tolerance, peak: float, std: float) -> None:
        self.op = OutputParity(name)
        self.tol, self.std = tol, std
        if tol.atol is not None:
            self.op.atol_effective = max(tol.atol, (tol.atol_scale or 0.0) * peak)
        self.m = _Moments()
        self.agree = self.agree_exact = self.rows = 0
        self.exact = False
        self.first_nonfinite: dict[str, Any] | None = None

    def add(self, b: int, r_raw: np.ndarray, c_raw: np.ndarray) -> bool:
        """Judge batch ``b``; False (and ``error`` set) when the shapes differ."""
        op = self.op
        r, c = r_raw.astype(np.float64), c_raw.astype(np.float64)
        if r.shape != c.shape:
            op.error = f"shape {c.shape} in batch {b}, expected {r.shape}"
            return False
        self.exact = exact = r_raw.dtype.kind in "biu"  # class ids, masks, counts: only equality is right
        op.num_elements += r.size
        rf, cf = np.isfinite(r), np.isfinite(c)
        both = rf & cf
        same_nonfinite = ~rf & ~cf & ((np.isnan(r) & np.isnan(c)) | (r == c))
        mismatch_nf = ~both & ~same_nonfinite
        op.nonfinite_mismatch += int(mismatch_nf.sum())
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(both, np.abs(r - c), 0.0)
            rel = np.where(both, diff / (np.abs(r) + 1e-12), 0.0)
        if exact:
            failed = r_raw != c_raw if c_raw.dtype.kind in "biu" else (r != c) | mismatch_nf
        elif op.atol_effective is None or self.tol.rtol is None:
            failed = mismatch_nf
        else:
            failed = ((diff > op.atol_effective) & (rel > self.tol.rtol)) | mismatch_nf
        op.num_failed += int(failed.sum())
        if self.first_nonfinite is None and mismatch_nf.any():
            idx = np.unravel_index(int(mismatch_nf.argmax()), r.shape)
            self.first_nonfinite = {"batch": b, "index": [int(i) for i in idx], "expected": float(r[idx]),
                                    "got": float(c[idx]), "abs_err": None}
        self._track_worst(b, r, c, diff, rel)
        self.m.add(r[both], c[both])
        if not exact and r.ndim == 2 and r.shape[1] > 1:
            self._top1(r, c)
        return True

    def _track_worst(self, b: int, r: np.ndarray, c: np.ndarray, diff: np.ndarray, rel: np.ndarray) -> None:
        op = self.op
        if not diff.size:
            return
        bmax = float(diff.max())
        if bmax >= op.max_abs_err:
            idx = np.unravel_index(int(diff.argmax()), diff.shape)
            op.worst = {"batch": b, "index": [int(i) for i in idx], "expected": float(r[idx]),
                        "got": float(c[idx]), "abs_err": bmax}
        op.max_abs_err = max(op.max_abs_err, bmax)
        op.max_rel_err = max(op.max_rel_err, float(rel.max()))

    def _top1(self, r: np.ndarray, c: np.ndarray) -> None:
        rows = np.arange(r.shape[0])
        ra, ca = r.argmax(1), c.argmax(1)
        # a flip between near-tied classes is the precision's noise, not a different prediction
        lead = r[rows, ra] - r[rows, ca]
        tie = (self.tol.top1_margin or 0.0) * self.std
        with np.errstate(invalid="ignore"):
            self.agree += int(((ra == ca) | (lead <= tie)).sum())
        self.agree_exact += int((ra == ca).sum())
        self.rows += r.shape[0]

    def finish(self) -> OutputParity:
        op, m, t = self.op, self.m, self.tol
        if self.rows:
            op.top1_agreement, op.top1_exact_agreement = self.agree / self.rows, self.agree_exact / self.rows
        if op.nonfinite_mismatch:  # nothing may look perfect next to a NaN: the measures are n/a
            op.max_abs_err = op.max_rel_err = op.cosine = op.top1_agreement = op.top1_exact_agreement = None
            op.worst = self.first_nonfinite
        else:
            op.cosine, op.centered_cosine = m.cosine(), m.centered_cosine()
            op.sqnr_db, op.nrmse = m.sqnr_db(), m.nrmse()
        if self.exact:
            op.atol_effective = None  # equality is the rule
        op.failures = _threshold_failures(op, t)
        op.passed = op.error is None and op.num_failed == 0 and not op.failures
        return op


def _threshold_failures(op: OutputParity, t: Tolerance) -> list[str]:
    """Which whole-output floors ``op`` misses (a measure that is None is not judged here)."""
    checks = [("cosine", op.cosine, t.min_cosine, "below"), ("centred cosine", op.centered_cosine,
              t.min_centered_cosine, "below"), ("SQNR dB", op.sqnr_db, t.min_sqnr_db, "below"),
              ("nrmse", op.nrmse, t.max_nrmse, "above"), ("top-1 agreement", op.top1_agreement, t.min_top1, "below")]
    out = []
    for label, value, limit, side in checks:
        if value is None or limit is None:
            continue
        if (value < limit) if side == "below" else (value > limit):
            out.append(f"{label} {side} the {'required' if side == 'below' else 'allowed'} {limit:g}: {value:.6g}")
    return out


def compare(reference: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray],
            candidate: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray], *,
            tolerance: Tolerance | None = None, atol: float | None = None, rtol: float | None = None,
            min_cosine: float | None = None) -> ParityResult:
    """Compare batches of outputs (dicts name -> array) under ``tolerance`` (see the module docstring).

    The keyword form ``atol=, rtol=, min_cosine=`` means ``Tolerance(atol, rtol, min_cosine)`` (the old
    rule); with neither, nothing is gated but NaN/Inf and integer mismatches (measuring only).

    Example::

        compare([{"y": ref}], [{"y": got}], tolerance=tolerance_for("fp16")).passed
    """
    if tolerance is not None and (atol, rtol, min_cosine) != (None, None, None):
        raise TypeError("compare() takes tolerance= or atol=/rtol=/min_cosine=, not both")
    tol = tolerance if tolerance is not None else Tolerance(atol, rtol, min_cosine)
    refs, cands = _as_batches(reference), _as_batches(candidate)
    result = ParityResult({}, tol)
    if len(refs) != len(cands):
        result.passed = False
        result.notes.append(f"{len(refs)} reference batches vs {len(cands)} candidate batches")
    names = list(refs[0]) if refs else []
    for name in names:
        check = _OutputCheck(name, tol, *_ref_scale(refs, name))
        for b, (r_out, c_out) in enumerate(zip(refs, cands)):
            if name not in c_out:
                check.op.error = f"missing from the candidate's outputs (it has {', '.join(c_out) or 'none'})"
                break
            if not check.add(b, np.asarray(r_out[name]), np.asarray(c_out[name])):
                break
        result.outputs[name] = op = check.finish()
        result.passed &= op.passed
    if not names:
        result.passed = False
        result.notes.append("no reference outputs")
    return result
