"""Bytes to text: UTF-8 (with or without BOM), UTF-16 with BOM, then fallbacks with a warning."""

from __future__ import annotations

import codecs

from pipeline.errors import InputError

_CONTROL = set(range(0, 32)) - {9, 10, 12, 13}


def looks_binary(data: bytes) -> bool:
    """Binary unless control bytes are rare: a stray NUL or bell in a transcript is cleaned with a
    warning (clean_controls), a file of them (an image, UTF-16 without a BOM) is refused."""
    head = data[:8192]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    nul = head.count(b"\x00")
    controls = sum(b in _CONTROL for b in head)
    return nul > max(2, len(head) // 200) or controls > max(2, len(head) // 20)


def _lines_with(text: str, chars: set[str]) -> list[int]:
    return [i for i, line in enumerate(text.split("\n"), 1) if chars & set(line)]


def _listed(lines: list[int]) -> str:
    return ", ".join(map(str, lines[:10])) + (f" and {len(lines) - 10} more" if len(lines) > 10 else "")


def clean_controls(text: str, path: str) -> tuple[str, str | None]:
    """Drop control characters (NUL, bell, escape ...; tab, newline and form feed stay): they are
    never speech, and they break exports (XML cannot hold them)."""
    bad = {chr(c) for c in _CONTROL if c != 12} | {"\x7f"}
    found = bad & set(text)
    if not found:
        return text, None
    lines = _lines_with(text, found)
    cleaned = text.translate({ord(c): None for c in found})
    return (
        cleaned,
        f"{path}:{lines[0]}: {sum(text.count(c) for c in found)} control character(s) removed (lines {_listed(lines)})",
    )


def _decode_lines(data: bytes, path: str, fallbacks: list[str]) -> tuple[str, str, str]:
    """UTF-8 line by line; a line that is not UTF-8 (one pasted from a Windows tool) takes the first
    fallback that decodes it, so the valid UTF-8 lines around it do not turn into mojibake."""
    out, odd, used, utf8 = [], [], [], 0
    for i, raw in enumerate(data.split(b"\n"), 1):
        try:
            out.append(raw.decode("utf-8"))
            utf8 += not raw.isascii()  # ASCII lines read the same in every encoding
            continue
        except UnicodeDecodeError:
            pass
        for enc in fallbacks:
            try:
                out.append(raw.decode(enc))
                break
            except UnicodeDecodeError:
                continue
        else:
            raise InputError("not UTF-8 and no fallback encoding fits", path, i) from None
        odd.append(i)
        used.append(enc)
    encodings = sorted(set(used))
    encoding = "+".join(["utf-8", *encodings] if utf8 else encodings)
    return (
        "\n".join(out),
        encoding,
        (f"{path}:{odd[0]}: not UTF-8 on line(s) {_listed(odd)}; those lines decoded as {', '.join(encodings)}"),
    )


def utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' when the bytes are UTF-16 text without a byte-order mark (the NUL of
    every ASCII character on one side), else None."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or len(data) < 4 or len(data) % 2:
        return None
    sample = data[:4096] if len(data) > 4096 else data
    sample = sample[: len(sample) - len(sample) % 2]
    even, odd = sample[0::2], sample[1::2]
    for enc, zeros, text in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if zeros.count(0) >= 0.9 * len(zeros) and text.count(0) <= 0.05 * len(text):
            try:
                data.decode(enc)
            except UnicodeDecodeError:
                return None
            return enc
    return None


def decode_text(data: bytes, path: str, fallbacks: list[str]) -> tuple[str, str, str | None]:
    """Return (text, encoding, warning). Newlines are normalised to \\n."""
    if not data.strip():
        raise InputError("empty file", path)
    bomless = utf16_without_bom(data)
    if bomless is None and looks_binary(data):
        raise InputError("binary file, not a text transcript", path)
    warning = None
    if bomless is not None:  # Windows tools write UTF-16 without a byte-order mark: every other byte is 0
        text, encoding = data.decode(bomless), bomless
        warning = f"{path}: read as {bomless.upper()} text without a byte-order mark"
    elif data.startswith(codecs.BOM_UTF8):
        text, encoding = data[3:].decode("utf-8", errors="strict"), "utf-8-sig"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text, encoding = data.decode("utf-16"), "utf-16"
    else:
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding, warning = _decode_lines(data, path, fallbacks)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text, cleaned = clean_controls(text, path)
    warning = "; ".join(w for w in (warning, cleaned) if w) or None
    if not text.strip():
        raise InputError("empty file", path)
    return text, encoding, warning
