"""The documentation site builds with --strict: a broken link or anchor, or a page missing from
the navigation, fails here as it fails `make docs`."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_docs_site_builds_strict(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "operations" / "index.html").is_file()


def test_a_broken_link_fails_the_strict_build(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n[gone](missing.md)\n")
    config = (ROOT / "mkdocs.yml").read_text().split("\nnav:")[0]  # the same checks, one page
    (tmp_path / "mkdocs.yml").write_text(config + "\n")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "missing.md" in done.stdout + done.stderr
