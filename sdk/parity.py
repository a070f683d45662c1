"""The parity gate: compare a candidate's outputs with PyTorch's, output by output.

An element fails only when ``abs > atol`` AND ``rel > rtol`` (Polygraphy's rule); a NaN/Inf
where the reference has none (or the other way round) fails. Integer and boolean outputs (class
ids, masks, counts) must match exactly, at every precision: a wrong class id is wrong however
close the number. numpy only.

Example::

    r = compare(ref_batches, got_batches, atol=1e-4, rtol=1e-4)
    r.passed, r.to_dict()["max_abs_err"], r.failure_message()
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """atol/rtol None: no element-wise test (INT8 is judged on cosine and accuracy)."""

    atol: float | None
    rtol: float | None
    min_cosine: float | None = None


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(1e-4, 1e-4, None),  # the element rule is already strict at fp32
    "fp16": Tolerance(1e-2, 1e-2, 0.999),
    "bf16": Tolerance(5e-2, 5e-2, 0.995),
    "int8": Tolerance(None, None, 0.98),
}


@dataclass
class OutputParity:
    name: str
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    cosine: float = 1.0
    top1_agreement: float | None = None
    num_elements: int = 0
    num_failed: int = 0
    nonfinite_mismatch: int = 0
    worst: dict[str, Any] | None = None
    error: str | None = None
    passed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "name"}


@dataclass
class ParityResult:
    outputs: dict[str, OutputParity]
    atol: float | None
    rtol: float | None
    min_cosine: float | None = None
    passed: bool = True
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        outs = list(self.outputs.values())
        top1 = [o.top1_agreement for o in outs if o.top1_agreement is not None]
        return {
            "passed": self.passed,
            "max_abs_err": max((o.max_abs_err for o in outs), default=0.0),
            "max_rel_err": max((o.max_rel_err for o in outs), default=0.0),
            "cosine": min((o.cosine for o in outs), default=1.0),
            "top1_agreement": min(top1) if top1 else None,
            "atol": self.atol,
            "rtol": self.rtol,
            "min_cosine": self.min_cosine,
            "outputs": {o.name: o.to_dict() for o in outs},
        }

    def summary(self) -> str:
        d = self.to_dict()
        return (f"{'pass' if self.passed else 'FAIL'}: max abs {d['max_abs_err']:.3g}, max rel {d['max_rel_err']:.3g}, "
                f"cosine {d['cosine']:.6f}" + (f", top-1 {d['top1_agreement']:.2%}" if d["top1_agreement"] is not None else ""))

    def failure_message(self) -> str:
        """Name the worst failing output, its worst element and the numbers."""
        failing = [o for o in self.outputs.values() if not o.passed]
        if not failing:
            return "; ".join(self.notes) if self.notes else "all outputs within tolerance"
        o = max(failing, key=lambda o: (o.error is not None, o.num_failed, o.max_abs_err))
        if o.error:
            return f"output '{o.name}': {o.error}"
        msg = f"output '{o.name}': "
        if self.atol is not None and self.rtol is not None:
            msg += f"{o.num_failed} of {o.num_elements} elements exceed atol={self.atol:g} and rtol={self.rtol:g}; "
        msg += f"max abs err {o.max_abs_err:.4g}, max rel err {o.max_rel_err:.4g}, cosine {o.cosine:.6f}"
        if o.worst:
            w = o.worst
            msg += f"; worst element batch {w['batch']} index {tuple(w['index'])}: expected {w['expected']:.9g}, got {w['got']:.9g}"
        if o.nonfinite_mismatch:
            msg += f"; {o.nonfinite_mismatch} NaN/Inf mismatches"
        if self.min_cosine is not None and o.cosine < self.min_cosine:
            msg += f" (cosine below the required {self.min_cosine})"
        return msg


def _as_batches(x: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray]) -> list[Mapping[str, np.ndarray]]:
    return [x] if isinstance(x, Mapping) else list(x)


def compare(reference: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray],
            candidate: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray], *,
            atol: float | None, rtol: float | None, min_cosine: float | None = None) -> ParityResult:
    """Compare batches of outputs (dicts name -> array); see the module docstring for the rule."""
    refs, cands = _as_batches(reference), _as_batches(candidate)
    result = ParityResult({}, atol, rtol, min_cosine)
    if len(refs) != len(cands):
        result.passed = False
        result.notes.append(f"{len(refs)} reference batches vs {len(cands)} candidate batches")
    names = list(refs[0]) if refs else []
    for name in names:
        op = OutputParity(name)
        result.outputs[name] = op
        dot = nr = nc = 0.0
        agree = total = 0
        for b, (r_out, c_out) in enumerate(zip(refs, cands)):
            if name not in c_out:
                op.error = f"missing from the candidate's outputs (it has {', '.join(c_out) or 'none'})"
                break
            r_raw, c_raw = np.asarray(r_out[name]), np.asarray(c_out[name])
            r = r_raw.astype(np.float64)
            c = c_raw.astype(np.float64)
            if r.shape != c.shape:
                op.error = f"shape {c.shape} in batch {b}, expected {r.shape}"
                break
            exact = r_raw.dtype.kind in "biu"  # class ids, masks, counts: only equality is right, at any precision
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
            elif atol is None or rtol is None:
                failed = mismatch_nf
            else:
                failed = ((diff > atol) & (rel > rtol)) | mismatch_nf
            op.num_failed += int(failed.sum())
            if diff.size:
                bmax = float(diff.max())
                if bmax >= op.max_abs_err:
                    idx = np.unravel_index(int(diff.argmax()), diff.shape)
                    op.worst = {"batch": b, "index": [int(i) for i in idx], "expected": float(r[idx]),
                                "got": float(c[idx]), "abs_err": bmax}
                op.max_abs_err = max(op.max_abs_err, bmax)
                op.max_rel_err = max(op.max_rel_err, float(rel.max()))
            rz, cz = np.where(both, r, 0.0), np.where(both, c, 0.0)
            dot += float((rz * cz).sum())
            nr += float((rz * rz).sum())
            nc += float((cz * cz).sum())
            if r.ndim == 2 and r.shape[1] > 1:
                agree += int((r.argmax(1) == c.argmax(1)).sum())
                total += r.shape[0]
        if nr > 0 and nc > 0:
            op.cosine = dot / np.sqrt(nr * nc)
        elif nr == 0 and nc == 0:
            op.cosine = 1.0
        else:
            op.cosine = 0.0
        op.top1_agreement = agree / total if total else None
        op.passed = (op.error is None and op.num_failed == 0
                     and (min_cosine is None or op.cosine >= min_cosine))
        result.passed &= op.passed
    if not names:
        result.passed = False
        result.notes.append("no reference outputs")
    return result
