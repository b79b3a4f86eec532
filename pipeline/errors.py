"""One exception type for bad input: it always names the file (and line when known)."""
from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A problem with the user's input, reported as one line: ``file:line: message``."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line

    def __str__(self) -> str:
        where = self.path or ""
        if where and self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}" if where else self.message


class ConfigError(InputError):
    """An invalid configuration file or value."""
