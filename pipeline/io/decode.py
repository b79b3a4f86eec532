"""Bytes to text: UTF-8 (with or without BOM), UTF-16 with BOM, then fallbacks with a warning."""
from __future__ import annotations

import codecs

from pipeline.errors import InputError

_CONTROL = set(range(0, 32)) - {9, 10, 12, 13}


def looks_binary(data: bytes) -> bool:
    head = data[:8192]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if b"\x00" in head:
        return True
    controls = sum(b in _CONTROL for b in head)
    return controls > max(1, len(head) // 20)


def decode_text(data: bytes, path: str, fallbacks: list[str]) -> tuple[str, str, str | None]:
    """Return (text, encoding, warning). Newlines are normalised to \\n."""
    if not data.strip():
        raise InputError("empty file", path)
    if looks_binary(data):
        raise InputError("binary file, not a text transcript", path)
    warning = None
    if data.startswith(codecs.BOM_UTF8):
        text, encoding = data[3:].decode("utf-8", errors="strict"), "utf-8-sig"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text, encoding = data.decode("utf-16"), "utf-16"
    else:
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            for enc in fallbacks:
                try:
                    text, encoding = data.decode(enc), enc
                    break
                except UnicodeDecodeError:
                    continue
            else:
                raise InputError("not UTF-8 and no fallback encoding fits", path, line) from None
            warning = f"{path}: not UTF-8 (first bad byte on line {line}); decoded as {encoding}"
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise InputError("empty file", path)
    return text, encoding, warning
