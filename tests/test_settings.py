"""The typed settings mirror configs/default.toml exactly and are built from it, frozen."""

import dataclasses

import pytest

from pipeline.config import load_config
from pipeline.settings import (
    CLASSES,
    SECTIONS,
    CodesSettings,
    LearnSettings,
    own_fields,
    section_values,
    settings_for,
)
from pipeline.stages import STAGES


def test_each_class_mirrors_its_section_key_for_key():
    cfg = load_config()
    for cls, section in SECTIONS.items():
        assert own_fields(cls) == list(cfg[section]), section


def test_every_setting_reaches_some_stage():
    """Every TOML key is a field of some settings class, or the explicit source of one."""
    cfg = load_config()
    used = {f"{section}.{key}" for cls, section in SECTIONS.items() for key in own_fields(cls)}
    for cls in SECTIONS:
        for f in dataclasses.fields(cls):
            source = f.metadata.get("from")
            if source and "." in source:
                used.add(source)
            elif source:
                assert source in CLASSES, f"{cls.__name__}.{f.name} names unknown section {source}"
    assert used == {f"{s}.{k}" for s, keys in cfg.items() for k in keys}


def test_settings_are_built_from_the_file_with_cross_stage_fields_explicit(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('[run]\nseed = 7\n[codes]\nfillers = ["um"]\n[embed]\nmodel = "fast"\n[map]\ncode_threshold = 0.4\n')
    cfg = load_config(path)
    codes = settings_for(CodesSettings, cfg)
    assert (codes.seed, codes.fillers, codes.embed.model) == (7, ("um",), "fast")
    assert codes.backchannel_words == tuple(cfg["segment"]["backchannel_words"])
    learn = settings_for(LearnSettings, cfg)
    assert (learn.seed, learn.map.code_threshold, learn.fillers, learn.compare.seed) == (7, 0.4, ("um",), 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        codes.seed = 8  # type: ignore[misc]


def test_every_run_stage_declares_its_settings():
    assert all(s.settings is not None for s in STAGES)


def test_section_values_give_back_the_section():
    cfg = load_config()
    for cls, section in SECTIONS.items():
        assert section_values(settings_for(cls, cfg)) == cfg[section]
