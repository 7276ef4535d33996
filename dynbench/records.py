"""Records: one flat dict per (run, knob value), kept in one JSON-lines file per run, written atomically.

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
from typing import Any


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
    """The records of one run, one per knob point. ``add`` rewrites the file atomically, so a crash loses nothing finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = (
            [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        )

    @staticmethod
    def _key(record: dict[str, Any]) -> tuple[Any, Any]:
        return record["knob_value"], record.get("infer_knob_value")

    def forget_other_versions(self, version: int) -> int:
        """Drop the records another version of the method wrote (their points are evaluated again, and the
        file loses them at the next ``add``); returns how many there were."""
        before = len(self.records)
        self.records = [r for r in self.records if r.get("method_version") == version]
        return before - len(self.records)

    def has(self, knob_value: Any, infer_knob_value: Any = None) -> bool:
        """Whether the point (``knob_value``, and the second knob's value if the method has one) is recorded."""
        return any(self._key(r) == (knob_value, infer_knob_value) for r in self.records)

    def add(self, record: dict[str, Any]) -> None:
        self.records = [r for r in self.records if self._key(r) != self._key(record)] + [_clean(record)]
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))
