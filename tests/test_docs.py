"""The docs are part of the code: the README's settings table and commands must match what the code has."""

from __future__ import annotations

import re
from pathlib import Path

from daehwa.config import Settings, settings_table_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_has_a_description():
    missing = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert missing == [], f"settings without a description: {missing}"


def test_readme_settings_table_is_generated_from_the_code():
    match = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", README, re.S)
    assert match, "README.md lacks the settings markers"
    assert match.group(1).strip() == settings_table_markdown().strip(), (
        "README settings table is stale: run `daehwa config --markdown` and paste it between the markers"
    )


def test_readme_opens_with_the_two_fresh_machine_commands():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", quick, re.S)
    assert "daehwa serve" in blocks[0] and "pip install" in blocks[0]
    assert blocks[1].strip() == "scripts/test"
    assert (ROOT / "scripts" / "test").stat().st_mode & 0o111
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
