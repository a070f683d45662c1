"""Headless Chromium for the HTML report tests: a real browser renders the page to a PNG, and the tests read
its pixels (Debian's /usr/bin/chromium; `make test` installs it when it may, the tests skip without it).

Example::

    screenshot(CHROMIUM, page_path, tmp_path / "shot.png", tmp_path)
    distinct, saturated = colour_stats(read_png(tmp_path / "shot.png"))
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


def screenshot(chromium: str, page: Path, png: Path, tmp: Path) -> None:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / ('profile-' + png.stem)}", f"--screenshot={png}", "--window-size=1280,2000",
           page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert png.is_file() and png.stat().st_size > 0, f"chromium wrote no screenshot:\n{proc.stderr[-2000:]}"


def read_png(png: Path) -> "object":
    """The screenshot as an RGB uint8 array."""
    import numpy as np
    from matplotlib.image import imread

    img = imread(png)
    return (img[..., :3] * 255).round().astype(np.uint8) if img.dtype != np.uint8 else img[..., :3]


def colour_stats(rgb: "object") -> tuple[int, int]:
    """(distinct colours, saturated pixels: max - min channel > 60, i.e. not grey/black/white text)."""
    import numpy as np

    flat = np.asarray(rgb).reshape(-1, 3).astype(np.int32)
    distinct = len(np.unique(flat @ np.array([65536, 256, 1], dtype=np.int32)))
    return distinct, int((flat.max(axis=1) - flat.min(axis=1) > 60).sum())
