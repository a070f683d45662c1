"""What the command modules share: progress, flag parsing, writing outputs, printing reports."""
from __future__ import annotations

from typing import Any, Callable

import click

from edgesdk.atomic import json_text
from edgesdk.errors import InputError

_NO_ISOLATE_HELP = ("Load the file in this process without first trying it in a child process (faster; only "
                    "for files you trust: a crafted file can crash native parsers).")

def _say(ctx: click.Context) -> Callable[[str], None]:
    """Step progress on stderr (rich spinners on a terminal), silenced by --quiet; closed with the command."""
    from edgesdk.progress import StepProgress

    root = ctx.find_root()
    say = root.obj.get("progress")
    if say is None:
        say = root.obj["progress"] = StepProgress(quiet=bool(root.obj.get("quiet")))
        root.call_on_close(say.close)
    return say

def _positive_ints(text: str, flag: str, example: str, hint: str | None = None) -> tuple[int, ...]:
    """A comma list of positive integers for ``flag`` (``1,8,32``), in the order given; anything else (a word,
    zero, a negative, nothing at all) is one InputError naming the flag and the value."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"bad {flag} value {text!r}", expected=f"comma-separated integers, e.g. {example}",
                         found=text, hint=hint) from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"bad {flag} value {text!r}", expected=f"positive integers, e.g. {example}", found=text,
                         hint=hint)
    return values

def _batches(text: str) -> tuple[int, ...]:
    return _positive_ints(text, "--batch", "1,8,32")

def _threads(text: str | None) -> tuple[int, ...] | None:
    """``--threads 2`` or a sweep ``--threads 1,2,4`` (duplicates dropped); None leaves it to the backend."""
    if text is None:
        return None
    return tuple(dict.fromkeys(_positive_ints(text, "--threads", "2 or 1,2,4",
                                              hint="leave it out to let the backend choose")))

def _backends(text: str) -> str | tuple[str, ...]:
    """``--backend auto``, one name, or a sweep ``onnxruntime,openvino`` (duplicates dropped). ``auto`` stands
    alone: it picks one backend per artifact, so it cannot be swept next to named ones."""
    names = tuple(dict.fromkeys(b.strip() for b in text.split(",") if b.strip()))
    if len(names) == 1:
        return names[0]
    if not names or "auto" in names:
        raise InputError(f"bad --backend value {text!r}", expected="auto, one backend name, or a comma list of "
                         "backend names, e.g. onnxruntime,openvino", found=text,
                         hint="`edgesdk doctor` lists the backends installed here")
    return names

def _save(path: str, write: Callable[[str], Any]) -> None:
    """Run ``write(path)``; an OS error becomes one clear OutputWriteError (exit 5), not a traceback."""
    from edgesdk.errors import OutputWriteError

    try:
        write(path)
    except OSError as e:
        raise OutputWriteError(f"cannot write {path}", found=f"{type(e).__name__}: {e.strerror or e}",
                               hint="choose another path (its folder must be writable and not a file)") from e

def _npz_bytes(arrays: dict[str, Any]) -> bytes:
    """An .npz of ``arrays`` under their exact names (np.savez(**arrays) drops or rejects names such as
    'file' or 'allow_pickle')."""
    import io
    import zipfile

    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, a in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()

def _emit_report(report: dict[str, Any], as_json: bool) -> None:
    from edgesdk.report import to_markdown

    click.echo(json_text(report) if as_json else to_markdown(report))


def parse_backend_options(items: tuple[str, ...]) -> dict[str, Any]:
    """``("precision=bf16", "threads=2", "cuda_graph=true")`` -> {"precision": "bf16", "threads": 2,
    "cuda_graph": True}: integers and true/false are typed, the rest kept as text (the backend checks them)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"bad backend option {item!r}", expected="KEY=VALUE, e.g. -O precision=bf16")
        v: Any = value.strip()
        if v.lower() in ("true", "false"):
            v = v.lower() == "true"
        elif v.lstrip("-").isdigit():
            v = int(v)
        out[key.strip()] = v
    return out
