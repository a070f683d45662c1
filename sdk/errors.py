"""Typed errors for edgesdk.

Every error says what was expected, what was found and what to do, so the CLI
can print it as three plain sentences without a traceback.

Example::

    raise InputError("input spec 'x:1x?x8'", expected="NAME:DIMxDIM[:dtype]",
                     found="'?' is not a dimension", hint="use an integer or 'N' for a dynamic axis")
"""
from __future__ import annotations


class EdgeSDKError(Exception):
    """Base of every error edgesdk raises on purpose."""

    exit_code = 2

    def __init__(self, what: str, *, expected: str | None = None, found: str | None = None,
                 hint: str | None = None) -> None:
        self.what = what
        self.expected = expected
        self.found = found
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        lines = [self.what]
        if self.expected is not None:
            lines.append(f"  expected: {self.expected}")
        if self.found is not None:
            lines.append(f"  found:    {self.found}")
        if self.hint is not None:
            lines.append(f"  fix:      {self.hint}")
        return "\n".join(lines)

    def one_line(self) -> str:
        """The same message on one line (for logs and API responses)."""
        parts = [self.what] + [f"{k}: {v}" for k, v in (("expected", self.expected), ("found", self.found),
                                                           ("fix", self.hint)) if v is not None]
        return " ".join("; ".join(parts).split())


class InputError(EdgeSDKError):
    """Bad user input: a CLI flag, an input spec, a data file."""


class ModelLoadError(EdgeSDKError):
    """The model factory, its weights or a checkpoint could not be loaded."""


class ArtifactError(EdgeSDKError):
    """An artifact file is missing, corrupt, of the wrong kind or changed since it was written."""


class FeedError(EdgeSDKError):
    """Feeds given to Session.run do not match the model's inputs."""


class InferenceError(EdgeSDKError):
    """The backend refused or failed a run whose feeds matched the model's signature (e.g. an empty batch)."""


class BackendUnavailableError(EdgeSDKError):
    """A runtime backend or toolchain is not installed or not usable here."""


class ExportError(EdgeSDKError):
    """An exporter failed; names the op, the exporter and what to try."""


class ParityError(EdgeSDKError):
    """An artifact's outputs differ from PyTorch beyond tolerance."""

    exit_code = 3


class BudgetError(EdgeSDKError):
    """A compression budget could not be met."""

    exit_code = 4


class OutputWriteError(EdgeSDKError):
    """The output directory could not be written (disk full, no permission, read-only filesystem)."""

    exit_code = 5
