"""The search directory: ``search.json`` (the whole state, rewritten atomically after every event, so a
killed search leaves a consistent file to resume from), ``trials/<id>/`` (each a complete compress output
or absent), ``front/<candidate>/`` (``best.yaml`` and the artifacts), ``search.html``/``search.md``.

Example::

    store = SearchStore.open("search-out", digest=space.digest(), resume=False)
    store.state["trials"][tid] = record; store.save()
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgesdk.errors import InputError

SCHEMA_VERSION = 1
STATE = "search.json"


class SearchStore:
    """Reads and writes a search directory; refuses to mix two searches in one."""

    def __init__(self, root: Path, state: dict[str, Any]) -> None:
        self.root, self.state = root, state

    @classmethod
    def open(cls, out_dir: str | Path, *, digest: str, resume: bool) -> "SearchStore":
        from edgesdk.atomic import check_output_path

        check_output_path(out_dir)
        root = Path(out_dir).absolute()
        state_file = root / STATE
        if state_file.is_file():
            if not resume:
                raise InputError(f"{root} already holds a search", found=str(state_file),
                                 hint="add --resume to continue it (finished trials are kept), or choose another -o")
            state = json.loads(state_file.read_text())
            if state.get("space_digest") != digest:
                raise InputError("--resume: this search directory holds another search space",
                                 expected=f"space {digest}", found=f"space {state.get('space_digest')}",
                                 hint="resume with the same flags, or start the new search in another -o")
            return cls(root, state)
        if root.exists() and any(root.iterdir()):
            raise InputError(f"{root} exists and is not a search directory", found="files without search.json",
                             hint="choose an empty or new -o folder")
        if resume:
            raise InputError(f"--resume: there is no search in {root}", hint="run the search without --resume first")
        return cls(root, {"schema_version": SCHEMA_VERSION, "space_digest": digest, "complete": False,
                          "trials": {}, "measurements": {}})

    def trial_dir(self, tid: str) -> Path:
        return self.root / "trials" / tid

    def save(self) -> None:
        from edgesdk.atomic import write_json

        self.root.mkdir(parents=True, exist_ok=True)  # not before: a search refused at the start writes nothing
        write_json(self.root / STATE, self.state)

    def finished(self, tid: str) -> bool:
        """A trial is never re-run once its compress ended (done or failed) and, if done, it was measured."""
        rec = self.state["trials"].get(tid)
        if rec is None or rec.get("status") not in ("done", "failed"):
            return False
        return rec["status"] == "failed" or tid in self.state["measurements"]

    def compressed(self, tid: str) -> bool:
        rec = self.state["trials"].get(tid)
        return bool(rec and rec.get("status") == "done" and (self.trial_dir(tid) / "manifest.json").is_file())
