"""MatchConfig loading: strict types and ranges, one-line errors naming setting / value / what is
allowed, nothing half-applied, the caller's dict untouched, presets, files."""
from __future__ import annotations

import json

import pytest

from engine.config import MatchConfig, load_config
from engine.errors import InputError


@pytest.mark.parametrize("data, needle", [
    ({"race_in_threads": "false"}, "setting 'race_in_threads' has the invalid value 'false'; use true or false"),
    ({"race_in_threads": 0}, "use true or false"),
    ({"reg_update_every": 0}, "setting 'reg_update_every' has the invalid value 0; it must lie between 1 and"),
    ({"reg_steps": 2.5}, "an integer between 1 and"),
    ({"reg_steps": True}, "an integer"),
    ({"w_chamfer": -1}, "setting 'w_chamfer' has the invalid value -1; it must lie between 0 and inf"),
    ({"w_chamfer": "1"}, "a number between 0 and inf"),
    ({"w_chamfer": float("nan")}, "a number"),
    ({"schedule_probe": 1.5}, "between 0 and 1"),
    ({"guidance_schedule": "sideways"}, "use one of auto, feature-led, position-led"),
    ({"guidance": "telepathy"}, "use one of vertex, flow"),
    ({"semantic": {"viewz": 4}}, "unknown semantic setting(s) viewz"),
    ({"semantic": [1, 2]}, "a mapping of settings"),
    ({"no_such": 1, "other": 2}, "unknown setting(s) no_such, other"),
    ({"keypoint_release_start": 0.9, "keypoint_release_end": 0.5}, "must not exceed"),
])
def test_bad_settings_are_one_line_errors_naming_the_setting(data, needle):
    with pytest.raises(InputError) as err:
        load_config(data)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_values_convert_and_the_callers_dict_is_not_mutated():
    data = {"reg_steps": 200.0, "w_chamfer": 2, "race_in_threads": False, "semantic": {"views": 4}}
    before = json.dumps(data, sort_keys=True)
    cfg = load_config(data, "fast")
    assert json.dumps(data, sort_keys=True) == before
    assert cfg.reg_steps == 200 and isinstance(cfg.reg_steps, int)
    assert cfg.w_chamfer == 2.0 and isinstance(cfg.w_chamfer, float)
    assert cfg.race_in_threads is False and cfg.semantic == {"views": 4} and cfg.semantic is not data["semantic"]
    assert cfg.spectral_k == 60  # the fast preset under the overrides
    assert load_config(None, "best").reg_steps == 300 and load_config(None, "best").working_vertices == 6000
    given = MatchConfig(reg_steps=7)
    assert load_config(given) is given
    with pytest.raises(InputError, match="quality: unknown preset 'ultra'"):
        load_config(None, "ultra")


def test_config_files_json_and_toml(tmp_path):
    j = tmp_path / "c.json"
    j.write_text('{"reg_steps": 50}')
    assert load_config(str(j)).reg_steps == 50
    t = tmp_path / "c.toml"
    t.write_text("reg_steps = 40\nguidance_schedule = 'position-led'\n")
    cfg = load_config(str(t))
    assert cfg.reg_steps == 40 and cfg.guidance_schedule == "position-led"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match="must hold a mapping"):
        load_config(str(bad))
    with pytest.raises(InputError, match="config file not found"):
        load_config(str(tmp_path / "none.json"))


def test_every_field_has_a_range_or_choices():
    import dataclasses

    for f in dataclasses.fields(MatchConfig):
        assert "range" in f.metadata, f.name
