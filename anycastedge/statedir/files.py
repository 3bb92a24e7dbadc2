"""Versioned JSON records written atomically, read by other processes at any moment."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from anycastedge.errors import AnycastEdgeError

FORMAT = 1  # bump when a record's meaning changes; readers refuse other formats


class StateFileError(AnycastEdgeError):
    """A state file cannot be used: not JSON, not the expected record, or another format."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


FILE_MODE = 0o644  # state, not secrets: readable by every user that runs a part of the POP


def write_record(path: Path, kind: str, fields: dict[str, Any]) -> None:
    """Replace ``path`` atomically: readers see the old record or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        # mkstemp makes it 0600: a file `pop withdraw` writes as root must stay readable by the
        # hook, which runs as the service user (and the other way round for `pop status`).
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w") as fh:
            json.dump({"kind": kind, "format": FORMAT, **fields}, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_record(path: Path, kind: str) -> dict[str, Any] | None:
    """The record's fields, or None if the file does not exist; StateFileError if unusable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateFileError(path, f"not JSON ({exc}); remove it or fix it by hand") from None
    if not isinstance(data, dict):
        raise StateFileError(path, f"not a {kind} record (a JSON {type(data).__name__})")
    version = data.get("format")
    if version is None:
        raise StateFileError(
            path, f"written by an older anycastedge (no format; this one reads {FORMAT})"
        )
    if version != FORMAT:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT
        who = "a newer" if newer else "another"
        raise StateFileError(
            path, f"written by {who} anycastedge (format {version!r}; this one reads {FORMAT})"
        )
    if data.get("kind") != kind:
        raise StateFileError(path, f"not a {kind} record (kind {data.get('kind')!r})")
    return {k: v for k, v in data.items() if k not in ("kind", "format")}


def field_error(path: Path, exc: Exception) -> StateFileError:
    """The error for a record whose fields do not have the expected types."""
    return StateFileError(path, f"malformed record: {type(exc).__name__}: {exc}")
