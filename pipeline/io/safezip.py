"""Zip archives read with caps. A .docx transcript and a .qdpx project are zips, and a hostile one
can be a bomb (kilobytes that inflate to gigabytes), carry path-traversal member names, or hold
millions of members. Names are checked up front, sizes as declared and again as actually inflated.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
import zlib
from pathlib import Path

from pipeline.errors import InputError


def _safe_member_name(name: str) -> bool:
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return False
    parts = posixpath.normpath(name).split("/")
    return ".." not in parts and "" not in parts[:-1]


class SafeZip:
    """Zip reading with the caps applied. `what` names the expected kind of file in messages;
    `members_key` and `bytes_key` name the settings that hold the caps."""

    def __init__(
        self, path: Path, max_members: int, max_bytes: int, what: str, members_key: str = "", bytes_key: str = ""
    ):
        self.path, self.max_bytes, self.read_bytes, self.bytes_key = path, max_bytes, 0, bytes_key
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise InputError(f"not {what}: {exc}", path) from None
        infos = self.zip.infolist()
        limit = f" ({members_key})" if members_key else ""
        if len(infos) > max_members:
            raise InputError(f"archive holds {len(infos)} members, more than the limit of {max_members}{limit}", path)
        for info in infos:
            if not _safe_member_name(info.filename):
                raise InputError(f"unsafe member name {info.filename!r} in archive (path traversal); refusing it", path)
        declared = sum(i.file_size for i in infos)
        if declared > max_bytes:
            raise InputError(
                f"archive unpacks to {declared} bytes, more than the limit of {max_bytes}{self._bytes_hint()}", path
            )
        self.names = {i.filename: i for i in infos}

    def _bytes_hint(self) -> str:
        return f" ({self.bytes_key})" if self.bytes_key else ""

    def read(self, name: str) -> bytes:
        chunks = []
        try:
            with self.zip.open(self.names[name]) as fh:
                while chunk := fh.read(1 << 20):
                    self.read_bytes += len(chunk)
                    if self.read_bytes > self.max_bytes:  # headers can lie: count what actually inflates
                        raise InputError(
                            f"archive unpacks to more than {self.max_bytes} bytes{self._bytes_hint()}; refusing it",
                            self.path,
                        )
                    chunks.append(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            reason = str(exc).replace(f" for file {name!r}", "") or type(exc).__name__  # the name once, not twice
            raise InputError(f"damaged archive member {name}: {reason}", self.path) from None
        return b"".join(chunks)
