"""Persona files: parsing, validation errors that name the fix, variables, rendering, user directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from daehwa.errors import ConfigError, InvalidRequest, NotFound
from daehwa.moderation.base import ModerationPolicy
from daehwa.personas import PersonaCatalog, load_persona_file, parse_persona


def test_builtin_personas_load_and_render():
    catalog = PersonaCatalog.load()
    names = [p.name for p in catalog]
    assert {"assistant", "tutor"} <= set(names)
    assistant = catalog.get("assistant")
    system = assistant.render_system({}, user_name="민수")
    assert "Korean" in system and "{" not in system
    assert assistant.first_message is None and assistant.allow_anonymous


def test_tutor_speaks_first_with_its_variables():
    tutor = PersonaCatalog.load().get("tutor")
    values = tutor.resolve_variables({"language": "French", "level": "intermediate"})
    assert values == {"language": "French", "situation": "ordering coffee at a café", "level": "intermediate"}
    first = tutor.render_first_message(values)
    assert first is not None and "French" in first and "ordering coffee at a café" in first
    assert "intermediate" in tutor.render_system(values)


def test_variable_choices_and_lengths_are_enforced():
    tutor = PersonaCatalog.load().get("tutor")
    with pytest.raises(InvalidRequest, match="level"):
        tutor.resolve_variables({"level": "expert"})
    with pytest.raises(InvalidRequest, match="longer than"):
        tutor.resolve_variables({"situation": "x" * 500})


def test_undeclared_template_variable_is_a_config_error():
    with pytest.raises(ConfigError, match=r"undeclared variable\(s\) \['mood'\]"):
        parse_persona({"name": "x", "system": "You feel {mood}."}, "x.toml")


def test_literal_braces_and_builtin_variables():
    persona = parse_persona({"name": "x", "system": 'JSON like {{"a": 1}} for {user_name} on {today}'}, "x.toml")
    rendered = persona.render_system({}, user_name="Ji-woo")
    assert '{"a": 1}' in rendered and "Ji-woo" in rendered


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"system": "hi"}, "needs name"),
        ({"name": "x"}, "needs system"),
        ({"name": "x", "system": "hi", "colour": "red"}, "unknown keys"),
        ({"name": "x", "system": "hi", "moderation_input": "shout"}, "moderation_input must be one of"),
        ({"name": "x", "system": "broken {"}, "not a valid template"),
    ],
)
def test_bad_persona_files_name_the_problem(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_persona(data, "bad.toml")


def test_user_directory_adds_and_overrides(tmp_path: Path):
    (tmp_path / "pirate.toml").write_text(
        'name = "pirate"\nsystem = "Talk like a pirate."\nmodel = "local/qwen2.5-0.5b"\ntemperature = 1.1\n'
        'moderation_output = "block"\nfallback_models = ["local"]\n',
        encoding="utf-8",
    )
    (tmp_path / "assistant.toml").write_text('\ufeffname = "assistant"\nsystem = "Mine."\n', encoding="utf-8")
    catalog = PersonaCatalog.load(tmp_path)
    pirate = catalog.get("pirate")
    assert pirate.model == "local/qwen2.5-0.5b" and pirate.params().temperature == 1.1
    assert pirate.fallback_models == ("local",)
    assert pirate.policy(ModerationPolicy(input="block", output="mask")) == ModerationPolicy("block", "block")
    assert catalog.get("assistant").system == "Mine."  # a BOM is tolerated
    assert not catalog.get("assistant").allow_anonymous


def test_missing_directory_and_unknown_persona(tmp_path: Path):
    with pytest.raises(ConfigError, match="DAEHWA_PERSONAS_DIR"):
        PersonaCatalog.load(tmp_path / "nope")
    with pytest.raises(NotFound, match="available: assistant, reservation, tutor"):
        PersonaCatalog.load().get("nobody")


def test_invalid_toml_names_the_file(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text("name = ", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml is not valid TOML"):
        load_persona_file(path)
