"""The access log files HTTP listeners write to, shared by listeners naming one file."""

from __future__ import annotations

import sys
from typing import TextIO

from anycastedge.forward.http_stats import AccessLog


class AccessLogs:
    """Open access logs by target: a file path, or "-" for standard output."""

    def __init__(self) -> None:
        self.logs: dict[str, AccessLog] = {}

    def get(self, target: str) -> AccessLog:
        """The log writing to ``target``, opened (append) at first use."""
        current = self.logs.get(target)
        if current is None:
            stream: TextIO = sys.stdout if target == "-" else open(target, "a", encoding="utf-8")  # noqa: SIM115
            current = self.logs[target] = AccessLog(stream)
        return current

    def flush(self) -> None:
        """Write what the logs hold (once a second, and when stopping)."""
        for log in self.logs.values():
            log.flush()

    def close(self) -> None:
        """Flush and close the files; they are opened anew by path at next use (so after a log
        rotation the new file is written)."""
        self.flush()
        for log in self.logs.values():
            if log.stream is not sys.stdout:
                log.stream.close()
        self.logs = {}
