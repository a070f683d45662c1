"""Calibration and evaluation data: .npz files, directories of .npy or of images, Python iterables, or random.

Everything is checked against the model's example inputs (names, dtypes, non-batch dims,
finite values) before it is used, and the source is recorded for the manifest.

Example::

    data = load_calibration("calib.npz", examples)           # dict name -> array (N, ...)
    data = load_calibration("random", examples, samples=64)  # only when asked for explicitly
    data = load_calibration("images/", examples, preprocess=ImagePreprocess.parse("size=224x224", shape))
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edgesdk.errors import InputError
from edgesdk.intake import check_feeds_match, check_labels, load_npz

log = logging.getLogger(__name__)


def _from_dir(path: Path) -> dict[str, np.ndarray]:
    files = sorted(path.glob("*.npy"))
    if not files:
        raise InputError(f"calibration directory {path} holds no .npy files",
                         expected="NAME.npy per input (arrays N x ...), or use a .npz file",
                         found=", ".join(sorted(p.name for p in path.iterdir())[:8]) or "an empty directory")
    out = {}
    for f in files:
        try:
            out[f.stem] = np.load(f, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"cannot read {f}", found=str(e), hint="save arrays with numpy.save") from e
    return out


def _from_iterable(batches: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    collected: dict[str, list[np.ndarray]] = {}
    for i, batch in enumerate(batches):
        if not isinstance(batch, Mapping):
            raise InputError("calibration iterable must yield dicts of input name -> array",
                             found=f"item {i} is a {type(batch).__name__}")
        for k, v in batch.items():
            arr = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            collected.setdefault(k, []).append(arr)
    if not collected:
        raise InputError("calibration iterable yielded nothing")
    return {k: np.concatenate(v) for k, v in collected.items()}


def image_preprocess(source: Any, examples: Mapping[str, np.ndarray], spec: Any = None) -> Any:
    """The ImagePreprocess for ``source`` when it is a directory of images (else None); ``spec`` is text or a spec."""
    from edgesdk.runtimes.preprocess import ImagePreprocess, image_files

    npy_dir = isinstance(source, (str, Path)) and Path(source).is_dir() and any(Path(source).glob("*.npy"))
    if not isinstance(source, (str, Path)) or not Path(source).is_dir() or not image_files(source) or \
            (npy_dir and spec is None):  # arrays beside a stray preview image: the arrays are the data
        if spec is not None:
            raise InputError("--preprocess applies to a calibration directory of images",
                             found=f"calibration source {source!r}")
        return None
    if len(examples) != 1:
        raise InputError("a directory of images can only feed a model with one input",
                         found=f"inputs {', '.join(examples)}", hint="use a .npz with one array per input")
    if isinstance(spec, ImagePreprocess):
        return spec
    return ImagePreprocess.parse(spec, next(iter(examples.values())).shape)


def load_calibration(source: Any, examples: Mapping[str, np.ndarray], *, samples: int | None = None,
                     seed: int = 0, what: str = "calibration data",
                     preprocess: Any = None, roles: Mapping[str, Any] | None = None) -> tuple[dict[str, np.ndarray], str]:
    """Return (arrays named like the inputs, a description of the source) after checking them.

    ``preprocess`` (an ImagePreprocess) turns a directory of images into the single input. ``"random"``
    generates values each input can take (``roles`` from edgesdk.synthetic: token ids within the
    vocabulary, masks of ones), never all-zero ids.
    """
    if isinstance(source, str) and source == "random":
        from edgesdk.synthetic import generate

        n = samples or 64
        data = generate(roles or {}, {k: (n, *ex.shape[1:]) for k, ex in examples.items()},
                        {k: str(ex.dtype) for k, ex in examples.items()}, np.random.default_rng(seed))
        return data, f"RANDOM data ({n} samples) - not representative of real inputs"
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir() and preprocess is not None:
            from edgesdk.runtimes.preprocess import load_images

            name, ex = next(iter(examples.items()))
            images = load_images(p, preprocess, limit=samples)
            if ex.dtype != images.dtype:  # float16 or integer (uint8 camera-style) model inputs
                if np.issubdtype(ex.dtype, np.integer):
                    info = np.iinfo(ex.dtype)
                    images = np.clip(np.rint(images), info.min, info.max)
                images = images.astype(ex.dtype)
            data = {name: images}
            desc = f"images in {p}, preprocessed {preprocess.to_dict()}"
        elif p.is_dir():
            data, desc = _from_dir(p), f"directory {p}"
        elif p.suffix == ".npz" or p.is_file():
            data, desc = load_npz(p, what=what), f"file {p}"
        else:
            raise InputError(f"{what} not found: {p}", expected="FILE.npz, a directory of NAME.npy, or 'random'")
    elif isinstance(source, Mapping):
        data, desc = {k: np.asarray(v) for k, v in source.items()}, "in-memory arrays"
    else:
        data, desc = _from_iterable(source), "Python iterable"
    data = {k: v for k, v in data.items() if k in examples or k == "labels"}  # other arrays are not inputs
    check_feeds_match({k: v for k, v in data.items() if k != "labels"}, dict(examples), what=what)
    n = len(next(iter(data[k] for k in examples)))
    if "labels" in data and np.ndim(data["labels"]) != 1:  # sequences, masks, multi-label: eval data's business
        log.info("%s: `labels` of shape %s are not class ids; recovery distils without them", what,
                 np.shape(data["labels"]))
        data.pop("labels")
    elif "labels" in data:
        check_labels(data["labels"], n, what=what)
    if samples is not None and n > samples:
        data = {k: v[:samples] for k, v in data.items()}
        n = samples
    return data, f"{desc} ({n} samples)"
