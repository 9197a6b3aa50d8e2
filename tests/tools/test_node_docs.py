"""tools/node_docs.py: every node has a help page, and the committed pages match the README and the schemas."""

from __future__ import annotations

import shutil
import subprocess

from host import REPO, host_python

DOCS = REPO / "web" / "docs"


def check(docs) -> subprocess.CompletedProcess:
    return subprocess.run([str(host_python()), str(REPO / "tools" / "node_docs.py"), "--check", "--docs", str(docs)],
                          capture_output=True, text=True, timeout=300)


def test_the_help_pages_are_complete_and_current():
    run = check(DOCS)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_check_fails_on_a_stale_or_missing_page(tmp_path):
    shutil.copytree(DOCS, tmp_path / "docs")
    page = tmp_path / "docs" / "PyraStepCache.md"
    page.write_text(page.read_text() + "edited by hand\n")
    (tmp_path / "docs" / "PyraDiffuseHigh.md").unlink()
    run = check(tmp_path / "docs")
    assert run.returncode == 1 and "PyraDiffuseHigh.md, PyraStepCache.md" in run.stdout, run.stdout + run.stderr
