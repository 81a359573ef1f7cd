"""Every example config in docs/examples loads through the worker's own loader. The examples
reference secrets and known_hosts under /var/run/secrets/imref (a mounted Secret); here that
mount point is a temporary folder holding a file for each reference."""
import re
from pathlib import Path

import pytest

from streams.config import load_settings

EXAMPLES = sorted((Path(__file__).parents[2] / "docs" / "examples").glob("*.yaml"))
MOUNT = "/var/run/secrets/imref/"


def test_there_is_an_example_for_every_method():
    methods = set()
    for path in EXAMPLES:
        methods |= set(re.findall(r"^\s+method: (\w+)", path.read_text(), re.M))
    assert methods == {"ftp", "ftps", "sftp", "email", "fsspec"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads(path, tmp_path, monkeypatch):
    text = path.read_text()
    for name in set(re.findall(re.escape(MOUNT) + r"([\w.-]+)", text)):
        (tmp_path / name).write_text("secret-for-the-test\n")
    for name in re.findall(r"\{env: (\w+)\}", text):
        monkeypatch.setenv(name, "secret-for-the-test")
    config = tmp_path / path.name
    config.write_text(text.replace(MOUNT, f"{tmp_path}/"))
    settings = load_settings(config)
    assert settings.pushes("conversions")
