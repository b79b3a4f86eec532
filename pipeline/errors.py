"""One exception type for bad input: it always names the file (and line when known); and how the
command line turns any failure into one printable line."""

from __future__ import annotations

import errno
import re
from pathlib import Path

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\n\r\t]")


def printable(text: str) -> str:
    """Control characters (a newline in a file name would forge a second 'error:' line) as escapes;
    undecodable bytes in file names (surrogates) as \\xNN."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


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


class EnvironmentFault(Exception):
    """The machine, not the input: permissions, a full or read-only disk, a path that is a folder."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


_ENVIRONMENT_ERRNOS: dict[int | None, str]  # looked up with OSError.errno, which may be None
_ENVIRONMENT_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
    errno.EDQUOT: "disk quota exceeded",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "already exists",
    errno.EMFILE: "too many open files",
}


def environment_fault(exc: OSError) -> EnvironmentFault:
    """An OSError as one line naming the path; ENOSPC and friends get plain words."""
    what = _ENVIRONMENT_ERRNOS.get(exc.errno) or exc.strerror or type(exc).__name__
    return EnvironmentFault(what, exc.filename)
