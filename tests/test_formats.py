"""The format registry: every module reads the same three ways, the extensions are known in one place, and an
unknown suffix is one line naming the file."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.io.formats import EXTENSIONS, FORMATS, MODULES, format_for
from pipeline.io.turns import PARAGRAPH_FORMATS, refuse_paragraphs

READS = ("read_turns", "read_paragraphs", "read_for_pseudonymising")


def test_every_format_module_provides_the_three_readers_with_one_signature():
    for name in READS:
        # parameters only: a format that refuses (subtitles as a field note) returns NoReturn
        signatures = {str(inspect.signature(getattr(module, name)).replace(return_annotation=inspect.Signature.empty))
                      for module in MODULES}
        assert len(signatures) == 1, (name, signatures)
    assert all(callable(getattr(module, name)) for module in MODULES for name in READS)


def test_the_registry_holds_the_extensions_and_the_config_defers_to_it():
    assert set(EXTENSIONS) == {".txt", ".md", ".docx", ".vtt", ".srt", ".json", ".pdf"}
    assert len(EXTENSIONS) == len(MODULES)  # one module per extension, none claimed twice
    assert load_config()["input"]["extensions"] == []  # empty: every registered format
    readers = {ext for ext, module in FORMATS.items() if module.read_paragraphs is not refuse_paragraphs}
    assert readers == set(PARAGRAPH_FORMATS)  # the field-note message names exactly the formats that read them


def test_an_unknown_suffix_is_one_line_naming_the_file():
    with pytest.raises(InputError) as caught:
        format_for(Path("/data/study/notes.py"), "study/notes.py")
    assert str(caught.value) == ("study/notes.py: unknown transcript format '.py' "
                                 "(known: .txt, .md, .docx, .vtt, .srt, .json, .pdf)")
    assert "\n" not in str(caught.value)
    assert format_for(Path("A.VTT"), "A.VTT") is FORMATS[".vtt"]  # any case
