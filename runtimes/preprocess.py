"""Image preprocessing as data: the same spec calibrates on the workstation and replays on the device.

``compress --calib IMAGE_DIR --preprocess SPEC`` turns image files into the model's input with
an :class:`ImagePreprocess` and stores the spec in the manifest (``preprocess``); an app on the
device rebuilds it with ``ImagePreprocess.from_dict(manifest["preprocess"])`` and feeds camera
frames through the same steps. numpy plus Pillow (for decoding and resizing); no torch.

Steps, in order: decode -> channel order (RGB, BGR or GRAY) -> resize (``stretch`` to H x W, or
``crop``: shorter side to the target then a centre crop) -> float32 -> ``x * scale`` ->
``(x - mean) / std`` per channel -> layout (NCHW or NHWC).

Example::

    spec = ImagePreprocess.parse("size=224x224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225", (1, 3, 224, 224))
    x = spec.load("cat.jpg")            # float32 (3, 224, 224), ready to stack into a batch
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgesdk.errors import BackendUnavailableError, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
CHANNELS = {"RGB": 3, "BGR": 3, "GRAY": 1}


@dataclass(frozen=True)
class ImagePreprocess:
    """How an image file becomes one model input sample (no batch dimension)."""

    size: tuple[int, int]  # (height, width)
    channels: str = "RGB"  # RGB | BGR | GRAY
    layout: str = "NCHW"  # NCHW | NHWC (of the batched input)
    resize: str = "crop"  # crop (shorter side, centre crop) | stretch
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        n = CHANNELS.get(self.channels)
        if n is None:
            raise InputError(f"unknown channel order {self.channels!r}", expected="RGB | BGR | GRAY")
        if self.layout not in ("NCHW", "NHWC"):
            raise InputError(f"unknown layout {self.layout!r}", expected="NCHW | NHWC")
        if self.resize not in ("crop", "stretch"):
            raise InputError(f"unknown resize mode {self.resize!r}", expected="crop | stretch")
        if len(self.size) != 2 or min(self.size) < 1:
            raise InputError("preprocess size must be HxW with positive sides", found=str(self.size))
        for name, v in (("mean", self.mean), ("std", self.std)):
            if len(v) not in (1, n):
                raise InputError(f"preprocess {name} must have 1 or {n} values for {self.channels}",
                                 found=":".join(map(str, v)))
        if any(s == 0 for s in self.std):
            raise InputError("preprocess std must not be 0", found=":".join(map(str, self.std)))

    @property
    def shape(self) -> tuple[int, int, int]:
        """One sample's shape."""
        h, w = self.size
        c = CHANNELS[self.channels]
        return (c, h, w) if self.layout == "NCHW" else (h, w, c)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size": list(self.size), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ImagePreprocess":
        d = dict(data)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown preprocess key(s): {', '.join(sorted(unknown))}",
                             expected=", ".join(cls.__dataclass_fields__))
        for k in ("size", "mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    @classmethod
    def parse(cls, text: str | None, input_shape: Sequence[Any]) -> "ImagePreprocess":
        """``size=224x224,channels=rgb,layout=nchw,resize=crop,scale=0.00392,mean=a:b:c,std=a:b:c``.

        Anything left out comes from the model input's shape (layout, channels, size) and the
        defaults (pixels scaled to [0, 1], mean 0, std 1).
        """
        shape = list(input_shape)
        if len(shape) != 4:
            raise InputError("image calibration needs a 4-D image input", expected="N x C x H x W or N x H x W x C",
                             found=f"shape {shape}")
        nhwc = isinstance(shape[3], int) and shape[3] in (1, 3) and not (isinstance(shape[1], int)
                                                                           and shape[1] in (1, 3))
        c, h, w = (shape[3], shape[1], shape[2]) if nhwc else (shape[1], shape[2], shape[3])
        kw: dict[str, Any] = {"layout": "NHWC" if nhwc else "NCHW", "channels": "GRAY" if c == 1 else "RGB"}
        if isinstance(h, int) and isinstance(w, int):
            kw["size"] = (h, w)
        for part in filter(None, (p.strip() for p in (text or "").split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep:
                raise InputError(f"malformed preprocess item {part!r}", expected="key=value, e.g. size=224x224")
            try:
                if key == "size":
                    hh, _, ww = value.lower().partition("x")
                    kw["size"] = (int(hh), int(ww or hh))
                elif key in ("mean", "std"):
                    kw[key] = tuple(float(v) for v in value.split(":"))
                elif key == "scale":
                    kw[key] = float(value)
                elif key in ("channels", "layout"):
                    kw[key] = value.upper()
                elif key == "resize":
                    kw[key] = value.lower()
                else:
                    raise InputError(f"unknown preprocess key {key!r}",
                                     expected="size, channels, layout, resize, scale, mean, std")
            except ValueError as e:
                raise InputError(f"malformed preprocess value {part!r}", found=str(e)) from e
        if "size" not in kw:
            raise InputError("the model input has dynamic height/width", expected="size=HxW in --preprocess")
        spec = cls(**kw)
        if CHANNELS[spec.channels] != c and isinstance(c, int):
            raise InputError(f"preprocess channels {spec.channels} do not match the model input",
                             expected=f"{c} channel(s) (shape {shape})", found=f"{CHANNELS[spec.channels]}")
        return spec

    def load(self, image: str | Path | Any) -> np.ndarray:
        """One sample (float32, no batch dim) from an image file or a PIL image."""
        try:
            from PIL import Image
        except ImportError as e:
            raise BackendUnavailableError("Pillow is needed to read images", hint="pip install pillow") from e
        if isinstance(image, (str, Path)):
            try:
                with Image.open(image) as im:
                    im.load()
                    img = im.copy()
            except (OSError, ValueError) as e:
                raise InputError(f"cannot read image {image}", found=f"{type(e).__name__}: {e}",
                                 hint="remove or replace the file") from e
        else:
            img = image
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit/float grey: Pillow would clip, not rescale
            depth = np.asarray(img, dtype=np.float32)
            top = 65535.0 if img.mode.startswith("I") else max(float(depth.max()), 1.0)
            img = Image.fromarray(np.clip(np.rint(depth * (255.0 / top)), 0, 255).astype(np.uint8))
        img = img.convert("L" if self.channels == "GRAY" else "RGB")
        h, w = self.size
        if self.resize == "stretch":
            img = img.resize((w, h), Image.BILINEAR)
        else:
            r = max(h / img.height, w / img.width)
            img = img.resize((max(w, round(img.width * r)), max(h, round(img.height * r))), Image.BILINEAR)
            left, top = (img.width - w) // 2, (img.height - h) // 2
            img = img.crop((left, top, left + w, top + h))
        x = np.asarray(img, dtype=np.float32)
        x = x[:, :, None] if x.ndim == 2 else x
        if self.channels == "BGR":
            x = x[:, :, ::-1]
        x = (x * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=np.float32)


def image_files(directory: str | Path) -> list[Path]:
    """Image files directly in ``directory``, sorted by name."""
    return sorted(p for p in Path(directory).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_images(directory: str | Path, spec: ImagePreprocess, limit: int | None = None) -> np.ndarray:
    """Stack the images of ``directory`` into a batch (N, ...) with ``spec``."""
    files = image_files(directory)[:limit]
    if not files:
        raise InputError(f"{directory} holds no image files", expected=", ".join(IMAGE_SUFFIXES))
    return np.stack([spec.load(f) for f in files])
