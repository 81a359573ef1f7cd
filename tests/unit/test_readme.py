from pathlib import Path

from streams.tools.configdoc import render

README = Path(__file__).parents[2] / "README.md"


def test_readme_config_reference_is_generated_from_the_config_declaration():
    text = README.read_text()
    start = text.index("<!-- config-reference:start -->\n") + len("<!-- config-reference:start -->\n")
    end = text.index("<!-- config-reference:end -->")
    assert text[start:end] == render(), "run: python -m streams.tools.configdoc, paste between the markers"


def test_readme_has_the_two_setup_commands():
    text = README.read_text()
    assert "make run" in text and "make test" in text
