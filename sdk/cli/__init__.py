"""The ``edgesdk`` command line: one module per command group; each parses flags, builds a recipe or call,
runs the API and prints.

Errors from edgesdk print as plain sentences with a non-zero exit; a Python traceback appears only with
``--debug``.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

import click

from edgesdk.errors import EdgeSDKError

log = logging.getLogger("edgesdk")


class _Group(click.Group):
    """Turns EdgeSDKError into a clean message and exit code; other errors say how to get details.

    A reader that closes stdout early (``edgesdk inspect m.onnx | head``) ends the command quietly with exit 0.
    """

    @staticmethod
    def _stdout_broken() -> bool:
        """Whether stdout is a pipe whose reader has gone (POLLERR), so a BrokenPipeError was about stdout and
        not about a pipe to a child process. True where poll cannot tell (the common case)."""
        import select

        if not hasattr(select, "poll"):  # Windows: cannot tell
            return True
        try:
            fd = sys.stdout.fileno()
        except (OSError, ValueError, AttributeError):  # not a real file (click's test runner): another pipe broke
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))

    @staticmethod
    def _stdout_gone() -> None:
        """Point stdout (and stderr when it is the same pipe) at /dev/null, so that the flush at interpreter
        exit cannot fail again on the closed pipe (Python docs, signal module, "Note on SIGPIPE")."""
        import os

        try:
            fd = sys.stdout.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError, AttributeError):  # not a real file (click's test runner): nothing to do
            return
        try:
            same = os.path.sameopenfile(fd, sys.stderr.fileno())
        except (OSError, ValueError, AttributeError):
            same = False
        os.dup2(devnull, fd)
        if same:  # `2>&1 | head`: the progress and error lines would hit the closed pipe too
            os.dup2(devnull, sys.stderr.fileno())
        os.close(devnull)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            rv = super().invoke(ctx)
            sys.stdout.flush()  # a reader that left shows up here, not as a failed flush at interpreter exit
            return rv
        except BrokenPipeError:
            if not self._stdout_broken():  # a pipe to a child process broke: a real failure
                return self._internal_error(ctx)
            self._stdout_gone()  # the reader of our stdout closed early, like `yes | head`: not an error
            sys.exit(0)
        except EdgeSDKError as e:
            if ctx.obj and ctx.obj.get("debug"):  # the traceback, then the same exit code as without --debug
                import traceback

                traceback.print_exc()
            click.secho(f"error: {e.format()}", fg="red", err=True)
            sys.exit(e.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.secho("interrupted; the output directory was left as it was", err=True)
            sys.exit(130)
        except Exception:  # an unexpected failure: short message unless --debug
            return self._internal_error(ctx)

    @staticmethod
    def _internal_error(ctx: click.Context) -> Any:
        """Report the exception being handled as an internal error (exit 1); re-raise it with --debug."""
        e = sys.exc_info()[1]
        if ctx.obj and ctx.obj.get("debug"):
            raise  # called from an except block: re-raises the exception being handled, for its traceback
        click.secho(f"internal error: {type(e).__name__}: {e}\n(re-run with --debug for the traceback, "
                    "and please report it)", fg="red", err=True)
        sys.exit(1)

@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-q", "--quiet", is_flag=True, help="Print only results and errors.")
@click.version_option(package_name="edgesdk")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """edgesdk: compress PyTorch models, export them verified, run and benchmark them on the device."""
    ctx.ensure_object(dict)
    ctx.obj.update(debug=debug, quiet=quiet)
    level = logging.DEBUG if debug else (logging.ERROR if quiet else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


from .check import check  # noqa: E402  (the command modules only need click and the API)
from .compress import compress  # noqa: E402
from .debug import debug as debug_cmd  # noqa: E402
from .device import benchmark, doctor, inspect_cmd, run_cmd  # noqa: E402
from .llm import generate  # noqa: E402
from .report import report  # noqa: E402
from .search import search  # noqa: E402

for _cmd, _name in ((compress, "compress"), (benchmark, "benchmark"), (run_cmd, "run"), (inspect_cmd, "inspect"),
                    (doctor, "doctor"), (report, "report"), (generate, "generate"), (search, "search"),
                    (check, "check"), (debug_cmd, "debug")):
    main.add_command(_cmd, _name)

__all__ = ["main"]
