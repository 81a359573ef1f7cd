"""The README stays short and keeps its two commands; the configuration page's reference is the
one generated from the config declaration."""
from pathlib import Path

from streams.tools.configdoc import render

ROOT = Path(__file__).parents[2]
START, END = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"


def test_configuration_reference_is_generated_from_the_config_declaration():
    text = (ROOT / "docs" / "configuration.md").read_text()
    reference = text[text.index(START) + len(START):text.index(END)]
    assert reference == render(), "run: python -m streams.tools.configdoc, paste between the markers"


def test_readme_is_short_and_has_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert any(line.startswith("make run ") for line in lines)
    assert any(line.startswith("make test ") for line in lines)
