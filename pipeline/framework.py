"""Frameworks: a Gioia data structure (aggregate dimensions -> second-order concepts ->
first-order descriptions) read from YAML and validated on load.

Every problem is an InputError naming the file and, where YAML tells us, the line.
See configs/frameworks/kt_push_pull_exchange.yaml for the format.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np
import yaml

from pipeline.errors import InputError
from pipeline.resources import data_dir

FRAMEWORKS_DIR = data_dir("configs") / "frameworks"
DEFAULT_FRAMEWORK_PATH = FRAMEWORKS_DIR / "kt_push_pull_exchange.yaml"

MAX_FRAMEWORK_BYTES = 5_000_000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_TOP_KEYS = {"name", "description", "dimensions"}
_DIMENSION_KEYS = {"id", "name", "description", "concepts", "roles"}
_CONCEPT_KEYS = {"id", "name", "descriptions", "exemplars", "keywords", "roles"}


@dataclass(frozen=True)
class Dimension:
    id: str
    name: str
    description: str = ""
    roles: tuple[str, ...] = ()  # speaker roles (speakers.csv) its concepts apply to; () = every role


@dataclass(frozen=True)
class Concept:
    id: str
    name: str
    dimension: str  # the Dimension's id
    descriptions: list[str] = field(default_factory=list)
    exemplars: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    roles: tuple[str, ...] = ()  # speaker roles it applies to (its own, else its dimension's); () = every role

    @property
    def texts(self) -> list[str]:
        """Everything that describes the concept in words: its name, descriptions and exemplars."""
        return [self.name, *self.descriptions, *self.exemplars]


def _key(text: str) -> str:
    """Case- and punctuation-insensitive form used to look names up."""
    return re.sub(r"[^a-z0-9]+", "", text.lower())


@dataclass(frozen=True)
class Framework:
    name: str
    dimensions: list[Dimension]
    concepts: list[Concept]
    description: str = ""
    path: str = ""
    sha256: str = ""
    role_lines: dict[str, int | None] = field(default_factory=dict)  # each role in the file -> first line naming it

    def check_roles(self, speaker_roles) -> None:
        """A role the framework restricts concepts to that no speaker has would silently empty those
        concepts (every unit of the role unmapped): one error naming the role, the framework line,
        the roles the corpus has and the nearest of them."""
        import difflib

        have = sorted({str(r) for r in speaker_roles if r is not None and r == r and str(r).strip()})
        keys = {_key(r) for r in have}
        for role, line in self.role_lines.items():
            if _key(role) in keys:
                continue
            near = difflib.get_close_matches(role, have, n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            known = ", ".join(have) if have else "none (give speakers.csv a role column)"
            raise InputError(
                f"framework role {role!r} matches no speaker role (roles in the corpus: {known}){hint}",
                self.path or None,
                line,
            )

    def concept(self, name_or_id: str) -> Concept | None:
        wanted = _key(str(name_or_id))
        for c in self.concepts:
            if wanted in (_key(c.id), _key(c.name)):
                return c
        return None

    def dimension(self, name_or_id: str) -> Dimension | None:
        wanted = _key(str(name_or_id))
        for d in self.dimensions:
            if wanted in (_key(d.id), _key(d.name)):
                return d
        return None

    def dimension_of(self, concept_name_or_id: str) -> str | None:
        c = self.concept(concept_name_or_id)
        return c.dimension if c else None

    @property
    def dimension_ids(self) -> list[str]:
        return [d.id for d in self.dimensions]

    @property
    def concept_ids(self) -> list[str]:
        return [c.id for c in self.concepts]

    @property
    def has_roles(self) -> bool:
        return any(c.roles for c in self.concepts)

    def allowed_concepts(self, roles) -> np.ndarray:
        """(n units, n concepts) bool: which concepts a unit of each speaker role may get. A concept
        without roles applies to everyone; one with roles only to speakers of those roles (matched
        ignoring case and punctuation); a unit without a role gets only the unrestricted concepts."""
        keys = [_key(str(r)) if r is not None and r == r else None for r in roles]  # r == r: not NaN
        by_role: dict[str | None, np.ndarray] = {}
        for k in set(keys):
            by_role[k] = np.array(
                [not c.roles or (k is not None and k in {_key(x) for x in c.roles}) for c in self.concepts], dtype=bool
            )
        if not keys:
            return np.zeros((0, len(self.concepts)), dtype=bool)
        return np.stack([by_role[k] for k in keys])


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings remember the line they start on (for error messages)."""


class _Map(dict):
    line: int | None = None


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    seen: dict = {}
    for key_node, _ in node.value:  # a key given twice would silently take the later value
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise InputError(
                f"key {key!r} is given twice (also on line {seen[key]})", None, key_node.start_mark.line + 1
            )
        seen[key] = key_node.start_mark.line + 1
    out = _Map(loader.construct_mapping(node, deep=True))
    out.line = node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Reader:
    """Validates the parsed YAML, raising InputError(path, line) on the first problem."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, message: str, node: Any = None) -> NoReturn:
        raise InputError(message, self.path, getattr(node, "line", None))

    def mapping(self, node: Any, what: str, allowed: set[str], parent: Any = None) -> _Map:
        if not isinstance(node, dict):
            self.fail(f"{what} must be a mapping of keys to values, got {type(node).__name__}", parent)
        unknown = sorted(set(node) - allowed)
        if unknown:
            self.fail(f"{what}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})", node)
        return cast(_Map, node)  # _LineLoader builds every mapping as a _Map

    def text(self, node: _Map, key: str, what: str, required: bool = True) -> str:
        value = node.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.fail(f"{what} has no {key}", node)
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.fail(f"{what}: {key} must be text, got {type(value).__name__}", node)
        return " ".join(str(value).split())

    def texts(self, node: _Map, key: str, what: str) -> list[str]:
        value = node.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.fail(f"{what}: {key} must be a list of text", node)
        out = []
        for item in value:
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                self.fail(f"{what}: every item of {key} must be text, got {item!r}", node)
            item = " ".join(str(item).split())
            if item:
                out.append(item)
        return out

    def ident(self, node: _Map, what: str) -> str:
        """The id, or one derived from the name when the file gives none."""
        if node.get("id") is None:
            name = self.text(node, "name", what)
            return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or self.fail(
                f"{what}: cannot derive an id", node
            )
        ident = self.text(node, "id", what)
        if not _ID.match(ident):
            self.fail(f"{what}: id {ident!r} may use only letters, digits, '_' and '-'", node)
        return ident


def load_framework(path: str | Path | None = None) -> Framework:
    """Read and validate a framework file; None = the shipped KT push / pull / exchange framework."""
    path = Path(path) if path is not None else DEFAULT_FRAMEWORK_PATH
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("framework file not found", path) from None
    except OSError as exc:
        raise InputError(f"cannot read framework file: {exc.strerror}", path) from None
    if len(raw) > MAX_FRAMEWORK_BYTES:
        raise InputError(
            f"framework file is {len(raw):,} bytes; a codebook is far smaller (limit {MAX_FRAMEWORK_BYTES:,})", path
        )
    try:
        doc = yaml.load(raw.decode("utf-8"), Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except UnicodeDecodeError:
        raise InputError("framework file is not UTF-8 text", path) from None
    except InputError as exc:
        raise InputError(exc.message, path, exc.line) from None
    except RecursionError:
        raise InputError("framework file is nested too deeply", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"not valid YAML: {problem}", path, mark.line + 1 if mark else None) from None
    r = _Reader(path)
    if doc is None:
        r.fail("framework file is empty")
    top = r.mapping(doc, "framework", _TOP_KEYS)
    name = r.text(top, "name", "framework")
    dims_raw = top.get("dimensions")
    if not isinstance(dims_raw, list) or not dims_raw:
        r.fail("framework has no dimensions: give a list of aggregate dimensions under 'dimensions'", top)
    if len(dims_raw) < 2:
        r.fail(
            "framework has only one dimension; mapping needs at least two aggregate dimensions to choose between",
            dims_raw[0] if isinstance(dims_raw[0], dict) else top,
        )

    dimensions: list[Dimension] = []
    concepts: list[Concept] = []
    seen: dict[str, tuple[int, str]] = {}  # normalised id or name -> (entry, what used it first)
    role_lines: dict[str, int | None] = {}

    def roles_of(node: _Map, what: str) -> tuple[str, ...]:
        found = tuple(r.texts(node, "roles", what))
        for role in found:
            role_lines.setdefault(role, node.line)
        return found

    def claim(value: str, what: str, node: _Map, where: str = "") -> None:
        k = _key(value)
        if k in seen and seen[k][0] != id(node):
            r.fail(f"duplicate {what.split(' ')[0]} {value!r}{where}: already used by {seen[k][1]}", node)
        seen[k] = (id(node), what + where)

    for i, d_node in enumerate(dims_raw, 1):
        d = r.mapping(d_node, f"dimension {i}", _DIMENSION_KEYS, top)
        d_id = r.ident(d, f"dimension {i}")
        d_name = r.text(d, "name", f"dimension {d_id!r}")
        claim(d_id, f"dimension {d_id!r}", d)
        if _key(d_name) != _key(d_id):
            claim(d_name, f"dimension {d_id!r}", d)
        d_roles = roles_of(d, f"dimension {d_id!r}")
        dimensions.append(Dimension(d_id, d_name, r.text(d, "description", "", required=False), d_roles))
        c_list = d.get("concepts")
        if not isinstance(c_list, list) or not c_list:
            r.fail(f"dimension {d_id!r} has no concepts: list its second-order concepts under 'concepts'", d)
        for j, c_node in enumerate(c_list, 1):
            c = r.mapping(c_node, f"concept {j} of dimension {d_id!r}", _CONCEPT_KEYS, d)
            c_id = r.ident(c, f"concept {j} of dimension {d_id!r}")
            what = f"concept {c_id!r}"
            c_name = r.text(c, "name", what)
            claim(c_id, what, c, f" in dimension {d_id!r}")
            if _key(c_name) != _key(c_id):
                claim(c_name, what, c, f" in dimension {d_id!r}")
            descriptions = r.texts(c, "descriptions", what)
            exemplars = r.texts(c, "exemplars", what)
            if not descriptions and not exemplars:
                r.fail(f"{what} has no text: give at least one description or exemplar", c)
            keywords = [k.lower() for k in r.texts(c, "keywords", what)]
            c_roles = roles_of(c, what) or d_roles
            concepts.append(Concept(c_id, c_name, d_id, descriptions, exemplars, keywords, c_roles))
    return Framework(
        name=name,
        dimensions=dimensions,
        concepts=concepts,
        description=r.text(top, "description", "", required=False),
        path=str(path.resolve()),
        sha256=hashlib.sha256(raw).hexdigest(),
        role_lines=role_lines,
    )
