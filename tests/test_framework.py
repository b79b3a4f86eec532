"""Framework files: the shipped KT framework, a researcher's own, and every kind of bad file."""
from __future__ import annotations

from pathlib import Path
import json
import re
import sys

import pytest
from typer.testing import CliRunner

from conftest import REPO
from pipeline.cli import app
from pipeline.errors import InputError
from pipeline.framework import DEFAULT_FRAMEWORK_PATH, load_framework

sys.path.insert(0, str(REPO / "examples"))
from build_corpus import CONCEPT_NAMES  # noqa: E402

OWN = """\
name: Team learning
dimensions:
  - name: Psychological safety
    concepts:
      - name: Speaking up
        descriptions: [Raising concerns or mistakes without fear]
        exemplars: ["I told the consultant I thought the dose was wrong, and he thanked me."]
  - name: Learning behaviour
    concepts:
      - id: reflection
        name: Reflecting on practice
        exemplars: ["After every shift we spend five minutes on what went well."]
        keywords: [Debrief, "lessons learned"]
"""


def test_default_framework_has_the_studys_structure():
    fw = load_framework()
    assert fw.name == "KT push / pull / exchange" and fw.path == str(DEFAULT_FRAMEWORK_PATH)
    assert fw.dimension_ids == ["push", "pull", "exchange"]
    assert fw.concept_ids == list(CONCEPT_NAMES)
    assert {c.id: c.name for c in fw.concepts} == CONCEPT_NAMES  # the human codes use these names
    assert [fw.dimension_of(c) for c in CONCEPT_NAMES] == ["push"] * 2 + ["pull"] * 3 + ["exchange"] * 2
    for c in fw.concepts:
        assert len(c.descriptions) >= 3 and 6 <= len(c.exemplars) <= 10 and c.keywords
        assert c.texts[0] == c.name and len(c.texts) == 1 + len(c.descriptions) + len(c.exemplars)
    assert len(fw.sha256) == 64


def test_concepts_are_found_by_id_or_name_ignoring_case_and_punctuation():
    fw = load_framework()
    assert fw.concept("resistance towards top down leadership").id == "resistance"
    assert fw.concept("Re-engineering social relations and governance structures!").id == "reengineering_relations"
    assert fw.concept("AMBIGUITY_ROLES").name == "Using ambiguity to define leadership roles"
    assert fw.concept("nonsense") is None and fw.dimension_of("nonsense") is None
    assert fw.dimension("Mobilizing leadership across boundaries").id == "pull"


def test_exemplars_are_not_taken_from_the_example_corpus():
    """The answer key must stay an independent test of the framework."""
    def norm(text):
        return re.sub(r"[^a-z ]+", "", text.lower())

    corpus = " ".join(norm(t["text"]) for f in (REPO / "examples" / "source").glob("*.json")
                      for t in json.loads(f.read_text(encoding="utf-8"))["turns"])
    fw = load_framework()
    for c in fw.concepts:
        for sentence in c.exemplars + c.descriptions:
            words = norm(sentence).split()
            # no run of 8 consecutive words is shared with any transcript
            shared = [" ".join(words[i:i + 8]) for i in range(len(words) - 7) if " ".join(words[i:i + 8]) in corpus]
            assert not shared, (c.id, shared)


def test_a_researchers_own_framework_loads_with_derived_ids(tmp_path):
    path = tmp_path / "own.yaml"
    path.write_text(OWN, encoding="utf-8")
    fw = load_framework(path)
    assert fw.dimension_ids == ["psychological_safety", "learning_behaviour"]
    assert fw.concept_ids == ["speaking_up", "reflection"]
    assert fw.concept("reflection").keywords == ["debrief", "lessons learned"]
    assert fw.dimension_of("Speaking up") == "psychological_safety"


@pytest.mark.parametrize("text, line, message", [
    ("name: x\ndimensions: [\n  - a\n", 3, "not valid YAML"),
    ("", None, "framework file is empty"),
    ("- just\n- a list\n", None, "must be a mapping"),
    ("name: x\ndimensions:\n  - id: a\n    name: A\n    concepts:\n      - name: C\n        exemplars: [hello]\n",
     3, "only one dimension"),
    (OWN.replace('        descriptions: [Raising concerns or mistakes without fear]\n', "")
        .replace('        exemplars: ["I told the consultant I thought the dose was wrong, and he thanked me."]\n',
                 "        keywords: [voice]\n"), 5, "concept 'speaking_up' has no text"),
    (OWN.replace("  - name: Learning behaviour\n", "  - name: Speaking Up\n"), 8,
     "duplicate dimension 'speaking_up': already used by concept 'speaking_up' in dimension 'psychological_safety'"),
    (OWN.replace("      - id: reflection\n", "      - id: speaking_up\n"), 10, "duplicate concept 'speaking_up'"),
    (OWN.replace("  - name: Psychological safety\n", "  - id: safety\n"), 3, "dimension 'safety' has no name"),
    (OWN.replace("        keywords:", "        keywrods:"), 10, "unknown key 'keywrods'"),
    (OWN.replace("    concepts:\n      - name: Speaking up", "    concepts: []\n    x:\n      - name: Speaking up", 1),
     3, "unknown key 'x'"),
    ("name: x\ndimensions:\n  - name: A\n    concepts: []\n  - name: B\n    concepts: []\n", 3, "has no concepts"),
    ("name: x\n", 1, "no dimensions"),
    ("name: x\ndimensions:\n  - id: 'a b'\n    name: A\n  - id: b\n    name: B\n", 3, "may use only letters"),
])
def test_bad_framework_files_are_one_clear_error(tmp_path, text, line, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_framework(path)
    assert message in info.value.message
    assert info.value.path == str(path) and info.value.line == line


def test_missing_and_binary_framework_files(tmp_path):
    with pytest.raises(InputError, match="framework file not found"):
        load_framework(tmp_path / "nope.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(InputError, match="not UTF-8"):
        load_framework(tmp_path / "bin.yaml")


def test_cli_reports_a_bad_framework_in_one_line_and_exits_2(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text("name: x\ndimensions:\n  - name: A\n    concepts:\n      - name: C\n        exemplars: [hi]\n",
                    encoding="utf-8")
    result = CliRunner().invoke(app, ["map", str(tmp_path), "--framework", str(path)])
    assert result.exit_code == 2
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and f"{path}:3:" in lines[0] and "only one dimension" in lines[0]
    assert "Traceback" not in result.output


def test_the_framework_path_is_recorded_absolute(tmp_path, monkeypatch):
    """A run records where its framework lives; a relative path would break `compare` run from
    another folder."""
    (tmp_path / "fw.yaml").write_text(DEFAULT_FRAMEWORK_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    fw = load_framework("fw.yaml")
    assert fw.path == str(tmp_path / "fw.yaml") and Path(fw.path).is_absolute()
