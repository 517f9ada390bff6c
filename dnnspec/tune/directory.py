"""The search directory: claimed under its lock, with nothing in it followed or trusted.

Only the `tune` holding the directory's lock writes it, so a second `tune` on the same
`--out` stops at once instead of recording its trials over the first one's. A symbolic
link anywhere in the directory is refused: the tuner would otherwise write a log, a whole
trial run or the results wherever it points. Files are replaced atomically (never opened
through a link), and search.json and results.jsonl are read as untrusted input.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

from dnnspec.errors import error
from dnnspec.files import DirectoryLock, MiB, make_directory, read_bytes, write_text
from dnnspec.tune.results import TrialResult, read_results, results_text

STATE = "search.json"
RESULTS = "results.jsonl"
MAX_STATE_BYTES = 1 * MiB
"""Largest search.json read (it holds a few lines)."""


class SearchDirectory:
    """`with SearchDirectory(out) as folder:` holds the directory's lock; `claim` then
    prepares it and `record` appends a result."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.lock = DirectoryLock(out)
        self.results: list[TrialResult] = []
        """What results.jsonl holds, in order."""

    def __enter__(self) -> SearchDirectory:
        make_directory(self.out, "the search directory")
        self.lock.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.lock.__exit__(kind, exc, tb)

    def refuse_link(self, path: Path) -> None:
        """Stop when `path` (inside the directory) is a symbolic link."""
        if path.is_symlink():
            raise error(
                f"'{path}' is a symbolic link: a search directory holds only what tune "
                "wrote there, and tune does not write through links",
                help="remove the link, or choose another --out",
            )

    def refuse_links(self) -> None:
        """Stop at the first symbolic link anywhere in the directory."""
        for folder, dirs, files in os.walk(self.out):  # links to folders are listed, not walked
            for name in sorted([*dirs, *files]):
                self.refuse_link(Path(folder) / name)

    def claim(self, identity: dict[str, Any], resume: bool, overwrite: bool) -> list[TrialResult]:
        """Prepare the directory for the search `identity` names; on resume, the results
        recorded so far (a resume of a different search is refused)."""
        self.refuse_links()
        state = self.out / STATE
        if resume:
            if not state.exists():
                raise error(f"'{self.out}' holds no search to resume", help="run without --resume")
            recorded = self._read_state()
            changed = [k for k in identity if recorded.get(k) != identity[k]]
            if changed:
                raise error(
                    f"the search in '{self.out}' was started with a different "
                    + ", ".join(changed),
                    help="resume with the same spec and options, or start again with --overwrite",
                )
            self.results = read_results(self.out / RESULTS)
            return list(self.results)
        if state.exists() and not overwrite:
            raise error(
                f"'{self.out}' already holds a search",
                help="continue it with --resume, replace it with --overwrite, "
                "or choose another --out",
            )
        if overwrite:
            for name in ("trials", "logs"):
                shutil.rmtree(self.out / name, ignore_errors=True)
            for name in ("results.csv", "best.dnn"):
                (self.out / name).unlink(missing_ok=True)
        write_text(state, json.dumps(identity, indent=2) + "\n", "the search state")
        self.results = []
        write_text(self.out / RESULTS, "", "the search results")
        return []

    def _read_state(self) -> dict[str, Any]:
        path = self.out / STATE
        data = read_bytes(path, "search state", MAX_STATE_BYTES)
        try:
            state = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            state = None
        if not isinstance(state, dict):
            raise error(
                f"'{path}' is damaged: it is not the JSON object tune writes",
                help="start again with --overwrite, or choose another --out",
            )
        return state

    def record(self, result: TrialResult) -> None:
        """Add `result` to results.jsonl (the file is replaced whole, so a kill or a full
        disk leaves the previous version, never a torn line)."""
        self.results.append(result)
        write_text(self.out / RESULTS, results_text(self.results), "the search results")
