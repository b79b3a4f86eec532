"""The study's pseudonym key: which original text became which pseudonym.

One key per study, reused for every later batch so a person keeps their pseudonym ("Sarah Jones",
"Sarah" and "Ms Jones" all [PERSON-03]). It holds the originals, so it is written apart from the
pseudonymised folder and the run, and is never read by the report or the export. A key made for
another study is refused: mixing keys would give two people one pseudonym.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io.rundir import atomic_write
from pipeline.pii import KINDS, NAME_KINDS

KEY_FORMAT = "themeshift-pseudonym-key"
KEY_VERSION = 1
_TITLES = {"dr", "mr", "mrs", "ms", "miss", "prof", "professor", "sir", "dame", "nurse", "sister"}


def normalise(text: str) -> str:
    """Case, spacing, a possessive 's and a title do not make another entity."""
    text = " ".join(text.replace("\u2019", "'").split()).casefold()
    text = re.sub(r"'s$|(?<=s)'$", "", text).strip(" .,")
    text = re.sub(r"^the ", "", text)
    words = text.split(" ")
    while len(words) > 1 and words[0].rstrip(".") in _TITLES:
        words = words[1:]
    return " ".join(words)


@dataclass
class Entry:
    pseudonym: str  # "PERSON-03" (written as [PERSON-03] in running text)
    kind: str
    names: list[str] = field(default_factory=list)  # original surface forms, first seen first


@dataclass
class PseudonymKey:
    study: str
    entries: list[Entry] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)  # {"kind", "text"} a researcher rejected: never replaced
    path: Path | None = None

    def __post_init__(self) -> None:
        self._by_name: dict[str, Entry] = {}
        self._kept = {normalise(k["text"]) for k in self.kept}
        for e in self.entries:
            for n in e.names:
                self._by_name.setdefault(normalise(n), e)

    # --- lookup and assignment -------------------------------------------------------------------------
    def lookup(self, text: str) -> Entry | None:
        return self._by_name.get(normalise(text))

    def is_kept(self, kind: str, text: str) -> bool:
        """A text a researcher rejected is no name of any kind: rejected as an organisation, it is not
        replaced as a person either, in any casing, with or without a possessive or a plural s."""
        key = normalise(text)
        return key in self._kept or (key.endswith("s") and key[:-1] in self._kept)

    def keep(self, kind: str, text: str) -> None:
        if not self.is_kept(kind, text):
            self.kept.append({"kind": kind, "text": text})
            self._kept.add(normalise(text))

    def _next(self, kind: str) -> str:
        prefix = KINDS[kind][1]
        used = [int(e.pseudonym.rsplit("-", 1)[1]) for e in self.entries if e.pseudonym.rsplit("-", 1)[0] == prefix]
        return f"{prefix}-{max(used, default=0) + 1:02d}"

    def assign(self, kind: str, text: str) -> Entry:
        """The entry for `text`: known (any kind: a place tagged once as an organisation keeps its
        pseudonym), a person's known first or last name, or a new pseudonym."""
        key = normalise(text)
        entry = self._by_name.get(key)
        if entry is None and kind == "person" and " " not in key:
            entry = self._unique_person_with_part(key)
        if entry is None:
            entry = Entry(self._next(kind), kind)
            self.entries.append(entry)
        if key not in {normalise(n) for n in entry.names}:
            entry.names.append(text)
        self._by_name.setdefault(key, entry)
        return entry

    def _unique_person_with_part(self, word: str) -> Entry | None:
        """'Sarah' or 'Jones' is [PERSON-03] when exactly one known person's full name has that word."""
        hits = {
            id(e): e
            for e in self.entries
            if e.kind == "person"
            for n in e.names
            if len(normalise(n).split(" ")) > 1 and word in normalise(n).split(" ")
        }
        return next(iter(hits.values())) if len(hits) == 1 else None

    def names(self, kinds=NAME_KINDS) -> dict[str, list[str]]:
        """Every original name of the given kinds, by kind (for finding them wherever they occur)."""
        out: dict[str, list[str]] = {k: [] for k in kinds}
        for e in self.entries:
            if e.kind in out:
                out[e.kind] += [n for n in e.names if not self.is_kept(e.kind, n)]
        return out

    # --- file ----------------------------------------------------------------------------------------
    def to_json(self) -> str:
        data = {
            "format": KEY_FORMAT,
            "version": KEY_VERSION,
            "study": self.study,
            "warning": "holds the original names: keep it apart from pseudonymised data and never share it",
            "entries": [{"pseudonym": e.pseudonym, "kind": e.kind, "names": e.names} for e in self.entries],
            "kept": self.kept,
        }
        return json.dumps(data, ensure_ascii=False, indent=1) + "\n"

    def save(self, path: Path) -> None:

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(self.to_json(), encoding="utf-8"))


def load_key(path: Path, study: str) -> PseudonymKey:
    """The key at `path` (a new one when the file does not exist); a key of another study is refused."""
    path = Path(path)
    if not path.exists():
        return PseudonymKey(study, path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError("not a pseudonym key (not UTF-8 text)", path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not a pseudonym key (invalid JSON: {exc.msg})", path, exc.lineno) from None
    if not isinstance(data, dict) or data.get("format") != KEY_FORMAT:
        raise InputError(f'not a themeshift pseudonym key (no "format": "{KEY_FORMAT}")', path)
    if data.get("version") != KEY_VERSION:
        raise InputError(
            f"pseudonym key version {data.get('version')!r} is not supported (expected {KEY_VERSION})", path
        )
    if data.get("study") != study:
        raise InputError(
            f"key file belongs to study {data.get('study')!r}, not {study!r}: refused (one key per "
            "study; give this study's key with --key, or a new file name for a new study)",
            path,
        )
    try:
        entries = [Entry(str(e["pseudonym"]), str(e["kind"]), [str(n) for n in e["names"]]) for e in data["entries"]]
        kept = [{"kind": str(k["kind"]), "text": str(k["text"])} for k in data.get("kept", [])]
    except (KeyError, TypeError) as exc:
        raise InputError(f"damaged pseudonym key (entry without {exc})", path) from None
    bad = [e.kind for e in entries if e.kind not in KINDS]
    if bad:
        raise InputError(f"damaged pseudonym key (unknown kind {bad[0]!r})", path)
    return PseudonymKey(study, entries, kept, path)
