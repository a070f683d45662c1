"""Reports: ``report.json`` (the model, edgesdk.report.model) is the source of truth; Markdown, HTML and CSV
are views of it, registered in ``VIEWS`` (a new view is one module and one line there). ``merge`` puts
reports from several devices side by side; ``compare`` gates CI on regressions.

Example::

    report = load_report("out/report.json")
    print(render(report, "md"))
    write_report_views("out", report)      # report.md, report.html, report.csv
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from edgesdk.atomic import json_text
from edgesdk.errors import InputError

from .csv_view import CSV_COLUMNS, to_csv, write_csv
from .markdown import to_markdown
from .model import MIGRATIONS, REPORT_SCHEMA_VERSION, REPORT_VIEWS, build_report, check_report, load_report, read_json
from .tables import device_summary, fmt, fmt_size, steps_rows, table_rows


def _to_html(report: dict[str, Any]) -> str:
    from .html_view import to_html  # html and charts load on use: the CLI's text paths stay light

    return to_html(report)


# Views by format name; each takes the report dict and returns text.
VIEWS: dict[str, Callable[[dict[str, Any]], str]] = {
    "md": to_markdown,
    "html": _to_html,
    "csv": to_csv,
    "json": lambda report: json_text(report) + "\n",
}
SUFFIX_FORMATS = {".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".csv": "csv", ".json": "json"}


def format_for(path: str | Path, given: str | None = None) -> str:
    """The view format for an output file: ``given`` if set, else from the suffix; clear error otherwise."""
    if given:
        return given
    fmt_name = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt_name is None:
        raise InputError(f"cannot tell the report format of {path}", expected=f"a name ending in "
                         f"{', '.join(SUFFIX_FORMATS)}", found=repr(Path(path).suffix or "no suffix"),
                         hint="rename the output or pass --format md|html|csv|json")
    return fmt_name


def render(report: dict[str, Any], fmt_name: str = "md") -> str:
    """The report as text in one of the registered views (md, html, csv, json)."""
    view = VIEWS.get(fmt_name)
    if view is None:
        raise InputError(f"unknown report format {fmt_name!r}", expected=", ".join(VIEWS))
    return view(report)


def write_report_views(out_dir: str | Path, report: dict[str, Any]) -> list[str]:
    """Write report.md, report.html and report.csv next to report.json (atomically); return their names.

    HTML charts need matplotlib (``pip install 'edgesdk[report]'``); without it the page has the tables
    and says how to get the charts.
    """
    from edgesdk.atomic import write_text

    out = Path(out_dir)
    for name in REPORT_VIEWS:
        write_text(out / name, render(report, SUFFIX_FORMATS[Path(name).suffix]))
    return list(REPORT_VIEWS)


__all__ = ["REPORT_SCHEMA_VERSION", "REPORT_VIEWS", "MIGRATIONS", "VIEWS", "CSV_COLUMNS", "build_report",
           "check_report", "load_report", "read_json", "to_markdown", "to_csv", "write_csv", "render", "format_for",
           "write_report_views", "table_rows", "steps_rows", "fmt", "fmt_size", "device_summary"]
