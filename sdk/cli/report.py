"""``edgesdk report``: show one report as md/html/csv/json, merge reports across devices, compare two.

``edgesdk report FILE`` is short for ``edgesdk report show FILE``. Errors are EdgeSDKErrors, printed by the
main group without a traceback.
"""
from __future__ import annotations

import sys
from typing import Any

import click

FORMATS = ("md", "html", "csv", "json")


class _DefaultShow(click.Group):
    """A group whose first argument, when it is not a subcommand (a path, ``--json``), means ``show``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["show", *args]
        return super().parse_args(ctx, args)


def _write_or_print(text: str, output: str | None) -> None:
    """Print ``text``, or write it to ``output`` atomically; a failed write is an OutputWriteError (exit 5, like
    every other command's output), a path too long for the filesystem included."""
    from edgesdk.atomic import write_text
    from edgesdk.errors import OutputWriteError

    if output:
        try:
            write_text(output, text)
        except OSError as e:
            raise OutputWriteError(f"cannot write {output}", expected="a writable file path",
                                   found=f"{e.strerror or e}",
                                   hint="check the path and permissions, or choose another -o; nothing was "
                                        "written") from e
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=not text.endswith("\n"))


@click.group("report", cls=_DefaultShow)
def report() -> None:
    """Show, merge and compare report.json files (`edgesdk report FILE` = `report show FILE`)."""


@report.command("show", short_help="Print or write one report as md, html, csv or json.")
@click.argument("report_file", type=click.Path())
@click.option("--format", "fmt_name", type=click.Choice(FORMATS), help="View to print or write (default: md, or "
              "from the -o suffix).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the view to this file (atomically).")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def show(report_file: str, fmt_name: str | None, output: str | None, as_json: bool) -> None:
    """Print REPORT_FILE (a report.json or its directory) as Markdown, or write it as md/html/csv/json."""
    from edgesdk.report import format_for, load_report, render

    fmt_name = "json" if as_json else fmt_name
    fmt_name = format_for(output, fmt_name) if output else (fmt_name or "md")
    _write_or_print(render(load_report(report_file), fmt_name), output)


@report.command("merge", short_help="Put reports from several devices side by side.")
@click.argument("report_files", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write merged.html|.md|.json|.csv (format "
              "from the suffix).")
@click.option("--format", "fmt_name", type=click.Choice(FORMATS), help="Override the format (default md).")
def merge(report_files: tuple[str, ...], output: str | None, fmt_name: str | None) -> None:
    """Put reports from several devices side by side: rows = artifact/backend/precision/batch, columns = devices."""
    from edgesdk.report import format_for
    from edgesdk.report.merge import merge_reports, render_merged

    fmt_name = format_for(output, fmt_name) if output else (fmt_name or "md")
    _write_or_print(render_merged(merge_reports(list(report_files)), fmt_name), output)


@report.command("compare", short_help="Exit 1 when NEW regressed against BASE.")
@click.argument("base_file", type=click.Path())
@click.argument("new_file", type=click.Path())
@click.option("--max-regression", default="5%", show_default=True, metavar="PCT",
              help="Allowed slow-down of p50, loss of throughput and growth of size: 5% or 0.05.")
@click.option("--max-accuracy-drop", type=float, metavar="POINTS",
              help="Allowed accuracy drop in percentage points (default: the --max-regression percentage).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(base_file: str, new_file: str, max_regression: str, max_accuracy_drop: float | None,
            as_json: bool) -> None:
    """Compare NEW_FILE against BASE_FILE; exit 1 when any matching row regressed, 2 on bad input."""
    from edgesdk.atomic import json_text
    from edgesdk.report import load_report
    from edgesdk.report.compare import compare_reports, compare_to_text, parse_threshold

    result: dict[str, Any] = compare_reports(load_report(base_file), load_report(new_file),
                                             max_regression=parse_threshold(max_regression),
                                             max_accuracy_drop=max_accuracy_drop, base_name=base_file,
                                             new_name=new_file)
    click.echo(json_text(result) if as_json else compare_to_text(result), nl=as_json)
    if result["regressed"]:
        sys.exit(1)
