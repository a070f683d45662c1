"""The report model: ``report.json`` is the source of truth (``schema_version``); every view reads it.

Schema (documented in docs/report-schema.md)::

    {schema_version, edgesdk_version, created, device, recipe, baseline, artifacts, results}

Example::

    report = load_report("out/report.json")
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Callable

from edgesdk.errors import InputError

REPORT_SCHEMA_VERSION = 1

# Older schema versions upgraded one step at a time: {version: fn(report at version) -> report at version + 1}.
# Version 1 is the first; a future version 2 adds the 1 -> 2 step here so old reports keep loading.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

# The files write_report_views() puts next to report.json.
REPORT_VIEWS = ("report.md", "report.html", "report.csv")

def build_report(*, device: dict[str, Any], results: list[dict[str, Any]], recipe: dict[str, Any] | None = None,
                 artifacts: list[dict[str, Any]] | None = None,
                 baseline: dict[str, Any] | None = None, calibration: str | None = None) -> dict[str, Any]:
    """Assemble a report dict (see module docstring for the schema)."""
    from edgesdk.version import __version__

    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "edgesdk_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "recipe": recipe,
        "baseline": baseline,
        "calibration": calibration,
        "artifacts": artifacts or [],
        "results": results,
    }

def read_json(path: str | Path, what: str = "report") -> Any:
    """Parse a JSON file; errors name the file and the line/column of the first problem."""
    p = Path(path)
    if p.is_dir() and (p / "report.json").is_file():
        p = p / "report.json"
    if not p.is_file():
        raise InputError(f"{what} file not found: {p}", hint="pass the report.json written by compress or benchmark")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{p} is not a JSON {what}", expected="UTF-8 JSON text written by edgesdk",
                         found=f"binary data (byte {e.start} is not UTF-8)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{p} is not a JSON {what}", expected="a report.json written by edgesdk",
                         found=f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None

def _not_a_report(data: Any, source: str) -> None:
    found = f"keys: {', '.join(sorted(data)[:10])}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
    raise InputError(f"{source} is not an edgesdk report", expected="a JSON object with schema_version and results",
                     found=found, hint="pass the report.json written by `edgesdk compress` or `benchmark -o`")

def check_report(data: Any, source: str = "report") -> dict[str, Any]:
    """Check a parsed report and upgrade an older schema version; refuse foreign or newer ones."""
    if isinstance(data, dict) and data.get("kind") == "edgesdk-merged-report":
        raise InputError(f"{source} is a merged report, not a single-device report",
                         hint="pass the report.json files that were merged")
    if not isinstance(data, dict) or "schema_version" not in data:
        _not_a_report(data, source)
    version = data["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"{source} has a malformed schema_version", expected="an integer", found=repr(version))
    if version > REPORT_SCHEMA_VERSION:
        raise InputError(f"{source} was written by a newer edgesdk (report schema version {version}, "
                         f"edgesdk {data.get('edgesdk_version', '?')})",
                         expected=f"report schema version {REPORT_SCHEMA_VERSION} or older (what this edgesdk reads)",
                         found=f"schema version {version}", hint="upgrade edgesdk: pip install -U edgesdk")
    while version < REPORT_SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise InputError(f"{source} has report schema version {version}, which this edgesdk cannot upgrade",
                             expected=f"schema version {REPORT_SCHEMA_VERSION}",
                             hint="re-run the benchmark with this edgesdk version")
        data = MIGRATIONS[version](dict(data))
        version += 1
        data["schema_version"] = version
    if "results" not in data:
        _not_a_report(data, source)
    if not isinstance(data["results"], list) or not all(isinstance(r, dict) for r in data["results"]):
        raise InputError(f"{source} has malformed results", expected="a list of result objects",
                         found=type(data["results"]).__name__)
    return data

def load_report(path: str | Path) -> dict[str, Any]:
    """Read and check a report.json (or the directory holding one); clear errors for missing, non-JSON,
    foreign or newer files. Older schema versions are upgraded in memory.

    Example::

        report = load_report("out/report.json")
    """
    p = Path(path)
    if p.is_dir() and (p / "report.json").is_file():
        p = p / "report.json"
    return check_report(read_json(p), str(p))
