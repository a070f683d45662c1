"""One check for every bad-input case of `edgesdk debug`: exit 2, the words in the message, no traceback,
no report file written."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from edgesdk.cli import main


def assert_refused(cases: list[tuple[list[str], str]], tmp_path: Path) -> None:
    for args, words in cases:
        out = tmp_path / "report.json"
        res = CliRunner().invoke(main, ["debug", *args, "-o", str(out)])
        assert res.exit_code == 2, (args, res.output)
        assert words in res.output and "Traceback" not in res.output, (args, res.output)
        assert not out.exists()
