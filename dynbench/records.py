"""Records: one flat dict per (run, knob value), kept in one JSON-lines file per run, written atomically under
a lock, so that any number of processes can add to one file.

Field names listed in the README's contract are read by the report, the tests and outside tools: extend
them, never rename them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

from dynbench.locks import exclusive


def stable_hash(obj: Any) -> str:
    """A short hash of a JSON-able object, independent of dict order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def git_dirty() -> bool | None:
    """Whether tracked files other than ``results/`` differ from the commit (records made from uncommitted code
    say so; records and plots written meanwhile, by this run or another, are not code)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                             capture_output=True, text=True, check=True)
        return bool(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return None


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide records from the other users of a shared folder
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _clean(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class RecordFile:
    """The records of one run, one per knob point, in a file that any number of processes add to at once:
    ``add`` merges into the file as it is on disk, under the file's lock, and replaces it atomically, so the
    file ends with every process's points and is never seen half-written, and a crash loses nothing finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._version: Optional[int] = None  # once set, records of other method versions are left out of reads
        self.records = self._read()

    def _read(self) -> list[dict[str, Any]]:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return self._kept([json.loads(line) for line in lines if line.strip()])

    def _kept(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if self._version is None or r.get("method_version") == self._version]

    @staticmethod
    def _key(record: dict[str, Any]) -> tuple[Any, Any]:
        return record["knob_value"], record.get("infer_knob_value")

    def forget_other_versions(self, version: int) -> int:
        """Drop the records another version of the method wrote, now and from every later read (their points
        are evaluated again, and the file loses them at the next ``add``); returns how many there were."""
        before = len(self.records)
        self._version = version
        self.records = self._kept(self.records)
        return before - len(self.records)

    def has(self, knob_value: Any, infer_knob_value: Any = None) -> bool:
        """Whether the point (``knob_value``, and the second knob's value if the method has one) is recorded, as
        of the last read (opening the file, or the last ``add``)."""
        return any(self._key(r) == (knob_value, infer_knob_value) for r in self.records)

    def add(self, record: dict[str, Any]) -> None:
        """Add ``record`` to the records on disk now (other processes' among them), replacing any of its point."""
        with exclusive(self.path, "another process is adding a record"):
            self.records = [r for r in self._read() if self._key(r) != self._key(record)] + [_clean(record)]
            atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))
